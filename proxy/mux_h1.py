"""The client side of HTTP/1.1: one ``ClientConn`` (an ``asyncio.Protocol``) per client connection.

It parses requests, runs them one at a time through a ``Stream`` (pipelined requests wait, in order,
with reading paused), writes what the stream produces, and applies the client-side timeouts:

- ``timeout http-request``: the whole request head must arrive within it (408, ``cR``);
- ``timeout http-keep-alive`` (falls back to http-request): the wait for the next request after a
  response; on expiry the connection closes silently;
- ``timeout client``: client inactivity while a stream is running (``cD``).
Timers are lazy: a deadline is re-armed only when it fires early, so the hot path only stores a
timestamp.

A request the parser rejects gets its status (400/413/431/501, ``PR``) once every earlier pipelined
response has been written, and the connection closes. Nothing in here raises out of a callback:
a malformed request never takes the worker down.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

from proxy.h1 import ProtocolError, engine, writer
from proxy.message import Data, EndOfMessage, Event, RequestHead
from proxy.session import Session
from proxy.stream import Stream

if TYPE_CHECKING:
    from proxy.frontend import Frontend
    from proxy.worker import WorkerState

PIPELINE_MAX_EVENTS = 64  # queued events before reading pauses


class ClientConn(asyncio.Protocol):
    __slots__ = (
        "closing",
        "corked",
        "frontend",
        "got_bytes",
        "half_closed",
        "inbox",
        "last_io",
        "loop",
        "parse_error",
        "parser",
        "pause_reasons",
        "paused",
        "processing",
        "queues",
        "req_eom",
        "resp_done",
        "session",
        "state",
        "stream",
        "t_wait_start",
        "timer",
        "transport",
        "tunnel_stream",
        "upgrade_held",
        "write_paused",
    )

    def __init__(self, frontend: Frontend, state: WorkerState) -> None:
        self.frontend = frontend
        self.state = state
        self.parser = engine(frontend.engine_name).request_parser(frontend.limits)
        self.transport: asyncio.Transport | None = None
        self.session = Session("", 0)
        self.stream: Stream | None = None
        self.inbox: deque[Event] = deque()
        self.parse_error: ProtocolError | None = None
        self.pause_reasons = 0  # bit 1: pipeline full, bit 2: server side full
        self.paused = False
        self.closing = False
        self.got_bytes = False
        self.half_closed = False
        self.corked: list[bytes] | None = None
        self.processing = False
        self.req_eom = False
        self.resp_done = False
        self.tunnel_stream: Stream | None = None
        self.upgrade_held = False
        self.write_paused = False
        self.queues = state.queues
        self.last_io = 0.0
        self.t_wait_start = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        s = self.session
        return f"<ClientConn {s.client_ip}:{s.client_port} fe={self.frontend.name} reqs={s.requests_done}>"

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.session = Session(str(peer[0]), int(peer[1]))
        else:
            self.session = Session("unix", 0)
        self.state.client_opened(self)
        self.t_wait_start = self.last_io = time.monotonic()
        self._arm(self._head_timeout())

    def data_received(self, data: bytes) -> None:
        self.last_io = time.monotonic()
        if self.tunnel_stream is not None:
            self.tunnel_stream.tunnel_from_client(data)
            return
        if self.parse_error is not None or self.closing:
            return
        if not self.got_bytes:
            self.got_bytes = True
            if self.stream is None and not self.inbox:
                # The first byte of a request: from now on, the head timeout applies.
                self.t_wait_start = self.last_io
        try:
            events = self.parser.feed(data)
        except ProtocolError as exc:
            self.parse_error = exc
            events = []
        except Exception as exc:  # an engine bug must not take the worker down
            self.parse_error = ProtocolError(f"parser failure: {exc!r}", 400)
            events = []
        if events:
            self.inbox.extend(events)
        self._process()

    def eof_received(self) -> bool | None:
        if self.tunnel_stream is not None:
            self.tunnel_stream.tunnel_client_eof()  # half-close: forwarded, keep relaying the other way
            return True
        try:
            self.inbox.extend(self.parser.feed_eof())
        except ProtocolError:
            return None  # truncated request: the client is gone, nothing to answer
        except Exception:
            return None
        self._process()
        if self.stream is not None or self.inbox:
            # Half-closed with requests in flight: answer them, then close.
            self.half_closed = True
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._disarm()
        stream = self.stream or self.tunnel_stream
        self.stream = None
        self.tunnel_stream = None
        if stream is not None:
            stream.on_client_closed()
        self.session.close()
        self.state.client_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        stream = self.stream or self.tunnel_stream
        if stream is not None:
            stream.on_client_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.last_io = time.monotonic()
        stream = self.stream or self.tunnel_stream
        if stream is not None:
            stream.on_client_resume_writing()

    # -- request sequencing -------------------------------------------------------------------
    # A stream stays current until both its response ended (``stream_done``) and its request's
    # EndOfMessage was consumed here; only then may the next pipelined request start.
    def _process(self) -> None:
        if self.processing:
            return  # re-entered from a stream that ended synchronously: the outer loop goes on
        self.processing = True
        try:
            self._drain_inbox()
        finally:
            self.processing = False
        if self.stream is None and not self.inbox and self.parse_error is None and not self.closing:
            try:
                self.parser.feed(b"")  # an error found after complete requests surfaces now
            except ProtocolError as exc:
                self.parse_error = exc
        if self.parse_error is not None and not self.inbox and not self.closing:
            stream = self.stream
            if stream is None:
                self._reject(self.parse_error)
                return
            if not self.req_eom:  # the body being forwarded is invalid: this request fails
                if stream.resp_head is None:
                    stream.fail(self.parse_error.status, "PR")
                else:
                    stream.abort("PD")
                return
        self._set_pause(
            1, len(self.inbox) >= PIPELINE_MAX_EVENTS or (bool(self.inbox) and self.stream is not None)
        )

    def _drain_inbox(self) -> None:
        inbox = self.inbox
        while inbox and not self.closing:
            stream = self.stream
            if stream is None:
                ev = inbox.popleft()
                if not isinstance(ev, RequestHead):  # cannot happen with a conforming parser
                    self._reject(ProtocolError("event out of order", 400))
                    return
                self._start_stream(ev)
            elif not self.req_eom:
                ev = inbox.popleft()
                if isinstance(ev, Data):
                    stream.on_request_data(ev.data)
                elif isinstance(ev, EndOfMessage):
                    self.req_eom = True
                    if self.upgrade_held:
                        self._set_pause(4, True)
                    stream.on_request_end(ev.trailers)
                    if self.resp_done:
                        self._next_request()
                else:
                    self._reject(ProtocolError("event out of order", 400))
                    return
            else:
                break  # a pipelined request waits for the current response

    def _start_stream(self, head: RequestHead) -> None:
        self._disarm()
        # After an upgrade request's end, the parser holds every later byte until we know whether
        # this becomes a tunnel; reading pauses then (see _drain_inbox).
        self.upgrade_held = head.upgrade is not None
        stream = Stream(self, head, self.t_wait_start)
        self.stream = stream
        self.req_eom = False
        self.resp_done = False
        self.state.requests += 1
        self._arm(self.frontend.cfg.timeouts.client)
        stream.start()

    def stream_done(self, stream: Stream, keep_alive: bool) -> None:
        """Called by the stream when it ended; ``keep_alive`` says if the client may go on."""
        if stream is self.tunnel_stream:
            self.tunnel_stream = None
            self.close()
            return
        if stream is not self.stream or self.closing:
            return
        if not keep_alive or self.state.stopping or (self.half_closed and not self.inbox):
            self.stream = None
            self.close()
            return
        self.resp_done = True
        if self.req_eom:
            self._next_request()
        # else: the request's end is still to be read (an early response); _drain_inbox finishes

    def _next_request(self) -> None:
        self.stream = None
        if self.upgrade_held:  # the upgrade did not happen: parse what the parser held as HTTP
            self.upgrade_held = False
            self._set_pause(4, False)
            try:
                self.inbox.extend(self.parser.resume())
            except ProtocolError as exc:
                self.parse_error = exc
        self.session.requests_done += 1
        self.got_bytes = bool(self.inbox)
        self.t_wait_start = self.last_io = time.monotonic()
        self._disarm()
        self._arm(self._wait_timeout())
        self._process()

    def keep_alive_allowed(self) -> bool:
        return self.frontend.cfg.http_conn_mode != "httpclose" and not self.state.stopping

    def _reject(self, exc: ProtocolError) -> None:
        status = exc.status
        if self.transport is not None and not self.closing:
            body = writer.error_body(status)
            self.write(writer.simple_response(status, body=body, content_type="text/html", keep_alive=False))
            self.state.log_error(self, status, "cR" if status == 408 else "PR", str(exc))
        self.close()

    # -- tunnel -------------------------------------------------------------------------------
    def start_tunnel(self, stream: Stream) -> bytes:
        """The stream became a tunnel: raw bytes from now on. Returns bytes already received."""
        self.tunnel_stream = stream
        self.stream = None
        self._disarm()
        self.inbox.clear()
        self.upgrade_held = False
        self._set_pause(1, False)
        self._set_pause(4, False)
        return self.parser.detach()

    # -- output and flow control --------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not data:
            return
        corked = self.corked
        if corked is not None:
            corked.append(data)
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def cork(self) -> None:
        """Collect writes until ``uncork()``, which sends them as one."""
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        corked = self.corked
        if corked is None:
            return
        self.corked = None
        if corked:
            self.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def pause_reading(self) -> None:
        self._set_pause(2, True)

    def resume_reading(self) -> None:
        self._set_pause(2, False)

    def _set_pause(self, bit: int, on: bool) -> None:
        reasons = (self.pause_reasons | bit) if on else (self.pause_reasons & ~bit)
        self.pause_reasons = reasons
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if reasons and not self.paused:
            self.paused = True
            transport.pause_reading()
        elif not reasons and self.paused:
            self.paused = False
            transport.resume_reading()

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            self.uncork()
            transport.write_eof()

    def close(self) -> None:
        """Close after flushing what was written."""
        if self.closing:
            return
        self.uncork()
        self.closing = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self._disarm()
        if self.transport is not None:
            self.transport.abort()

    def log_stream(self, stream: Stream, status: int) -> None:
        self.state.log_stream(self, stream, status)

    # -- timeouts -----------------------------------------------------------------------------
    def _head_timeout(self) -> float | None:
        t = self.frontend.cfg.timeouts
        return t.http_request or t.client

    def _wait_timeout(self) -> float | None:
        t = self.frontend.cfg.timeouts
        return t.http_keep_alive or t.http_request or t.client

    def _arm(self, timeout: float | None) -> None:
        if timeout:
            self.timer = self.loop.call_later(timeout, self._on_timer, timeout)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self, timeout: float) -> None:
        self.timer = None
        if self.closing:
            return
        now = time.monotonic()
        stream = self.stream
        if stream is None:
            # Waiting for a request head: measured from its first byte (or the previous response).
            if not self.got_bytes and self.session.requests_done > 0:
                self.close()  # keep-alive wait expired: close silently
                return
            head_timeout = self._head_timeout() or timeout
            left = self.t_wait_start + head_timeout - now
            if left > 0:
                self._arm(left)
                return
            self._reject(ProtocolError("timeout waiting for the request head", 408))
            return
        last = self.last_io
        if not self.write_paused:  # the client reads what we send: the server's pace is not its fault
            last = max(last, stream.server_last_io)
        left = last + timeout - now
        if left > 0 or stream.tunnel:
            self._arm(max(left, 0.001) if left > 0 else timeout)
            return
        if stream.req_done and stream.resp_head is None:
            # Waiting for the server: that is the server timeout's business, not the client's.
            self._arm(timeout)
            return
        stream.abort("cD")
