"""The client side of HTTP/2: one ``H2ClientConn`` (an ``asyncio.Protocol``) per client connection.

The mux owns the HTTP/2 wire; an engine (``proxy.h2.engine``, ``tune.h2-engine``: the compiled
``proxy.h2.conn`` or the ``h2`` library) is its state machine (frames, HPACK, stream states,
flow-control windows), fed the bytes read and asked for the bytes to write. Each request
stream becomes one ``proxy.stream.Stream`` (opened through ``proxy.sides.ClientEnv.open_stream``,
as ``mux_h1`` does) whose ``ClientSide`` is an ``H2Side`` (``proxy.h2_side``): the per-stream
endpoint that frames what the stream sends back. Header blocks are translated by
``proxy.h2.translate`` (pure); the Stream and the rest of the worker never learn that the client
spoke HTTP/2 (the head's version is ``2.0``: ``%HV`` and ``%r`` say ``HTTP/2.0`` as HAProxy's do).

Flow control is tied to consumption, as for HTTP/1 (DESIGN.md §6):
- request DATA is acknowledged (its window given back to the client) only once the stream took it
  and did not ask to pause (``pause_request``): a stream whose server cannot take more leaves its
  bytes unacknowledged, so the client can have at most one stream window in flight on it; the
  connection window is every stream's window at once, so one waiting stream blocks no other;
- response data goes out as the client's windows allow; what waits is kept per stream, and while
  more than ``Settings.max_head`` bytes wait (or the transport's buffer is full) the stream is told
  the client is not writable, which pauses its server connection;
- while the transport's buffer is full, the client is not read either: a client that does not read
  our acknowledgements (PING, SETTINGS) cannot make them pile up.

Endings: an aborted stream is reset (RST_STREAM INTERNAL_ERROR); a response that ended before its
request did is followed by RST_STREAM NO_ERROR (RFC 9113 §8.1); a client reset ends the stream
(``on_client_closed``). A soft stop (``drain``), ``tune.h2.fe.max-total-streams`` or the client's own
GOAWAY lets the streams in flight finish and closes the connection when none is left; our GOAWAY
then is a graceful one (NO_ERROR, the last stream we accept: ``send_goaway``, not the engine's final
``close_connection``). Protocol errors end the connection with GOAWAY and the engine's error code; floods
(``proxy.h2.guard``) with ENHANCE_YOUR_CALM. Nothing raises out of a callback.

Writes: whatever the callbacks of one loop iteration produce (the responses of every stream answered
in it, acknowledgements, resets) leaves in one ``transport.write``, at the end of the iteration
(``write_out`` schedules ``flush``); a connection that ends writes what waits at once.

Timeouts, one timer per connection: before the first stream and between streams, ``timeout
http-keep-alive`` (else ``http-request``, else ``client``) closes an idle connection with GOAWAY;
while streams run, each stream's ``check_timeouts`` (``timeout server``) and ``timeout client``
(no byte from the client, and none we could send it) are checked.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

from proxy.h2 import Settings, conn as h2conn, frames as f, request_head
from proxy.h2.conn import Event, H2Error
from proxy.h2.engine import Engine, make_engine
from proxy.h2.guard import Guard
from proxy.h2.translate import RequestError, check_trailers
from proxy.h2_side import H2Side
from proxy.replies import error_reply
from proxy.session import Session

if TYPE_CHECKING:
    from proxy.message import Headers, RequestHead
    from proxy.sides import ClientEnv

# Body bytes framed since the last write past which the write is made at once rather than at the
# end of the loop iteration: the transport must see them to push back (pause_writing) before the
# server connection reads again (libuv reads a readable socket up to 32 times in one iteration).
FLUSH_AT: Final = 65536


class H2ClientConn(asyncio.Protocol):
    __slots__ = (
        "cfg",
        "client_goaway",
        "closed",
        "conn",
        "corked",
        "dirty",
        "env",
        "error",
        "flush_handle",
        "framed",
        "goaway_sent",
        "guard",
        "last_io",
        "last_sid",
        "loop",
        "read_paused",
        "session",
        "settings",
        "streams",
        "t_idle",
        "timer",
        "timer_at",
        "total_streams",
        "transport",
        "write_paused",
    )

    def __init__(self, env: ClientEnv, settings: Settings) -> None:
        self.env = env
        self.cfg = env.cfg
        self.settings = settings
        self.transport: asyncio.Transport | None = None
        self.session = Session("", 0)
        self.conn: Engine = make_engine(settings)  # tune.h2-engine: proxy.h2.conn's, or the h2 library's
        self.streams: dict[int, H2Side] = {}
        self.guard = Guard(settings.max_concurrent_streams, settings.glitches_threshold)
        self.corked = 0
        self.dirty: list[H2Side] = []  # streams with body or end queued while corked
        self.write_paused = False
        self.read_paused = False
        self.closed = False
        self.goaway_sent = False
        self.client_goaway = False
        self.last_sid = 0  # the highest stream accepted once our GOAWAY went out
        self.total_streams = 0
        self.error = ""  # why the connection was ended, if it was (for tests and repr)
        self.last_io = 0.0
        self.t_idle = 0.0  # since when no stream runs
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.loop = asyncio.get_running_loop()
        self.flush_handle: asyncio.Handle | None = None  # the flush scheduled for this loop iteration
        self.framed = 0  # body bytes framed since the last write

    def __repr__(self) -> str:
        s = self.session
        state = "closed" if self.closed else ("draining" if self.goaway_sent else "open")
        why = f" ({self.error})" if self.error else ""
        return (
            f"<H2ClientConn {s.client_ip}:{s.client_port} fe={self.cfg.name} {state}"
            f" streams={len(self.streams)} total={self.total_streams}{why}>"
        )

    @property
    def idle(self) -> bool:
        """No stream in flight (a soft stop may close it at once)."""
        return not self.streams

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        peer = transport.get_extra_info("peername")
        ssl = transport.get_extra_info("ssl_object") is not None
        if isinstance(peer, tuple):
            self.session = Session(str(peer[0]), int(peer[1]), ssl)
        else:
            self.session = Session("unix", 0, ssl)
        # No HTTP/2 stream is a "first request" (SEMANTICS.md §1): HAProxy's mux_h2 marks every
        # stream SE_FL_NOT_FIRST, so http-reuse safe lets them all use idle connections.
        self.session.requests_done = 1
        self.env.client_opened(self)
        conn = self.conn
        conn.initiate_connection()
        extra = self.settings.connection_window - 65535
        if extra > 0:
            conn.increment_flow_control_window(extra)
        self.write_out()
        self.last_io = self.t_idle = time.monotonic()
        wait = self._idle_timeout()
        if wait:
            self.want(self.t_idle + wait)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_io = time.monotonic()
        try:
            events = self.conn.receive_data(data)
        except H2Error as exc:
            self.fail(exc.code, f"protocol error: {exc}")
            return
        except Exception as exc:  # an engine failure must not take the worker down
            self.fail(f.INTERNAL_ERROR, f"h2 failure: {exc!r}")
            return
        self.corked += 1
        try:
            for ev in events:
                if self.closed:
                    return
                self._event(ev)
        except Exception as exc:  # a bug must cost this connection, not the worker
            self.fail(f.INTERNAL_ERROR, f"internal error: {exc!r}")
            return
        finally:
            self.corked -= 1
        self.write_out()

    def eof_received(self) -> bool | None:
        return None  # HTTP/2 has no half-close: the connection ends (streams see the client closed)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        streams = list(self.streams.values())
        self.streams.clear()
        try:
            for side in streams:
                side.reset = True
                if side.handle is not None and not side.handle_done:
                    side.handle.on_client_closed()
        finally:  # whatever a stream raised, the connection is counted closed (shared counters)
            try:
                self.session.close()
            finally:
                self.env.client_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._set_reading(False)
        for side in list(self.streams.values()):
            self._notify_writable(side)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._set_reading(True)
        self.corked += 1
        try:
            for side in list(self.streams.values()):
                self.flush_stream(side)
        finally:
            self.corked -= 1
        self.write_out()

    # -- events -----------------------------------------------------------------------------------
    def _event(self, ev: Event) -> None:
        kind = ev.kind
        if kind == h2conn.DATA:
            self._on_data(ev)
        elif kind == h2conn.REQUEST:
            self._on_request(ev)
        elif kind == h2conn.ENDED:
            side = self.streams.get(ev.sid)
            if side is not None:
                side.req_ended = True
                if side.handle is not None and not side.handle_done:
                    side.handle.on_request_end(side.trailers)
        elif kind == h2conn.WINDOW:
            if ev.sid:
                side = self.streams.get(ev.sid)
                if side is not None:
                    self.flush_stream(side)
            else:
                self._flush_all()
        elif kind == h2conn.TRAILERS:
            side = self.streams.get(ev.sid)
            if side is not None:
                try:
                    side.trailers = check_trailers(ev.headers)
                except RequestError:
                    self._malformed(side)
        elif kind == h2conn.RESET:
            self._on_reset(ev)
        elif kind == h2conn.SETTINGS:
            if self._calm(self.guard.control_frame(time.monotonic())):
                return
            if ev.window_changed:
                self._flush_all()
        elif kind == h2conn.PING:
            self._calm(self.guard.control_frame(time.monotonic()))
        elif kind == h2conn.GOAWAY:
            self.client_goaway = True
            if not self.streams:
                self.close()
        elif kind == h2conn.UNKNOWN:
            self._calm(self.guard.glitch())

    def _on_request(self, ev: Event) -> None:
        sid = ev.sid
        if self.goaway_sent and sid > self.last_sid:
            self.conn.reset_stream(sid, f.REFUSED_STREAM)  # past our GOAWAY: never processed
            return
        if len(self.streams) >= self.settings.max_concurrent_streams:
            self.conn.reset_stream(sid, f.REFUSED_STREAM)  # over what we announced
            self._calm(self.guard.cancelled(time.monotonic()))
            return
        self.total_streams += 1
        fields: Headers = ev.headers
        ended = ev.ended
        method = next((v for n, v in fields if n == b":method"), b"")
        side = self.streams[sid] = H2Side(self, sid, head_only=method == b"HEAD")
        side.req_ended = ended
        if self.t_idle:
            self.t_idle = 0.0
            client = self.cfg.timeouts.client
            if client:
                self.want(self.last_io + client)
        limit = self.settings.max_total_streams
        if limit and self.total_streams >= limit:
            self.drain()  # this stream is the last one accepted (HAProxy's max-total-streams)
        try:
            head, _scheme = request_head(
                fields,
                end_stream=ended,
                max_head=self.settings.max_head,
                max_headers=self.settings.max_headers,
            )
        except RequestError as exc:
            if exc.malformed:
                side.handle_done = True
                self.env.log_error(side, 400, "PR")
                self._malformed(side)
            else:
                self._reject(side, exc.status)
            return
        self._open(side, head)

    def _malformed(self, side: H2Side) -> None:
        """RFC 9113 §8.1.1: a malformed message is a stream error PROTOCOL_ERROR."""
        if self._calm(self.guard.glitch()):
            return
        self.reset_stream(side, f.PROTOCOL_ERROR)
        if side.handle is not None and not side.handle_done:
            side.handle_done = True  # what follows on this stream (its END_STREAM) is ignored
            side.handle.on_client_closed()
        self.settle(side)

    def _open(self, side: H2Side, head: RequestHead) -> None:
        handle = side.handle = self.env.open_stream(side, head, self.last_io)
        handle.start()  # the request's end, if the block had END_STREAM, follows as StreamEnded

    def _reject(self, side: H2Side, status: int) -> None:
        """A request refused before any stream exists: its error page on this stream only."""
        side.handle_done = True
        self.env.log_error(side, status, "PR")
        self._calm(self.guard.glitch())
        if not self.closed:
            side.send_reply(error_reply(status, self.cfg.errorfiles.get(status)), keep_alive=True)
            self.settle(side)

    def _on_data(self, ev: Event) -> None:
        sid = ev.sid
        size = ev.flow
        side = self.streams.get(sid)
        data = ev.data
        if side is None or side.handle is None or side.handle_done:
            if size:
                self.conn.acknowledge_received_data(size, sid)  # nobody wants it: the window goes back
            return
        side.unacked += size
        if data:
            side.handle.on_request_data(data)
        elif not ev.ended:
            self._calm(self.guard.glitch())  # an empty DATA frame that ends nothing
        if side.unacked and (not side.req_paused or side.handle_done):
            self.acknowledge(side)

    def _on_reset(self, ev: Event) -> None:
        side = self.streams.pop(ev.sid, None)
        if side is None:
            return
        side.reset = True
        side.out = bytearray()
        if side.handle is not None and not side.handle_done:
            side.handle_done = True
            side.handle.on_client_closed()
        if not side.sent_end and self._calm(self.guard.cancelled(time.monotonic())):
            return
        self._after_stream()

    # -- output -----------------------------------------------------------------------------------
    def schedule(self, side: H2Side) -> None:
        """Flush ``side`` now, or when the mux uncorks (so that a body's last bytes and its end
        leave in one DATA frame, and a batch of events in one write)."""
        if not self.corked:
            self.flush_stream(side)
        elif not side.dirty:
            side.dirty = True
            self.dirty.append(side)

    def write_out(self, *, force: bool = False) -> None:
        """Have what the library prepared written, unless corked: at the end of this loop iteration
        (``flush``), so that every stream answered in it shares one write; ``force``: now, corked or
        not (the connection is ending)."""
        if self.corked and not force:
            return
        if self.dirty:
            dirty, self.dirty = self.dirty, []
            self.corked += 1
            try:
                for side in dirty:
                    side.dirty = False
                    self.flush_stream(side)
            finally:
                self.corked -= 1
        if force or self.framed >= FLUSH_AT:
            self.flush()
        elif self.flush_handle is None:
            self.flush_handle = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what the library prepared, now: one ``transport.write`` per loop iteration however
        many responses, acknowledgements and resets its callbacks produced (``write_out`` schedules it)."""
        handle = self.flush_handle
        if handle is not None:
            self.flush_handle = None
            handle.cancel()
        self.framed = 0
        data = self.conn.data_to_send()
        if data:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(data)

    def send_headers(self, side: H2Side, fields: Headers, *, end: bool) -> bool:
        """False when the library refuses the block (nothing was sent)."""
        try:
            self.conn.send_headers(side.sid, fields, end_stream=end)
        except H2Error:
            return False
        if end:
            side.sent_end = True
        self.write_out()
        return True

    def flush_stream(self, side: H2Side) -> None:
        """Send what the window allows of ``side``'s queued body, then its end once nothing waits."""
        if side.reset or side.sent_end or self.closed:
            return
        conn = self.conn
        out = side.out
        sid = side.sid
        if out and not self.write_paused:
            try:
                window = conn.local_flow_control_window(sid)
                frame = conn.max_outbound_frame_size
                while out and window > 0:
                    n = min(window, frame, len(out))
                    last = n == len(out) and side.end_pending == []  # the end rides on the last DATA
                    conn.send_data(sid, bytes(out[:n]), end_stream=last)
                    del out[:n]
                    window -= n
                    self.framed += n
                    if last:
                        side.sent_end = True
                        side.end_pending = None
            except H2Error:
                self.reset_stream(side, f.INTERNAL_ERROR)
                return
        if not out and side.end_pending is not None:
            trailers = side.end_pending
            try:
                if trailers:
                    conn.send_headers(sid, trailers, end_stream=True)
                else:
                    conn.end_stream(sid)
            except H2Error:  # trailers the engine refuses are dropped; the body still ends
                try:
                    conn.end_stream(sid)
                except H2Error:
                    self.reset_stream(side, f.INTERNAL_ERROR)
                    return
            side.sent_end = True
            side.end_pending = None
        self._notify_writable(side)
        self.write_out()
        if side.sent_end:
            self.settle(side)

    def _flush_all(self) -> None:
        self.corked += 1
        try:
            for side in list(self.streams.values()):
                if side.out or side.end_pending is not None:
                    self.flush_stream(side)
        finally:
            self.corked -= 1
        self.write_out()

    def _notify_writable(self, side: H2Side) -> None:
        paused = side.write_paused
        if paused != side.paused_notified:
            side.paused_notified = paused
            if side.handle is not None and not side.handle_done:
                side.handle.on_client_writable(not paused)

    def acknowledge(self, side: H2Side) -> None:
        """Give the client its window back for what ``side``'s stream consumed."""
        n, side.unacked = side.unacked, 0
        if n and not side.reset and not self.closed:
            self.conn.acknowledge_received_data(n, side.sid)
            self.write_out()

    def reset_stream(self, side: H2Side, code: int) -> None:
        if side.reset or self.closed:
            return
        side.reset = True
        side.out = bytearray()
        side.end_pending = None
        if not side.sent_end or not side.req_ended:
            try:
                self.conn.reset_stream(side.sid, code)
            except H2Error:
                pass  # already closed both ways: nothing to reset
        self.write_out()
        self.settle(side)

    def settle(self, side: H2Side) -> None:
        """Forget ``side`` once both its stream ended and its wire did (END_STREAM sent or reset)."""
        if not side.handle_done or not (side.sent_end or side.reset):
            return
        if self.streams.get(side.sid) is not side:
            return
        if not side.reset and not side.req_ended:
            # The response is complete before the request: stop the client's upload (RFC 9113 §8.1).
            side.reset = True
            try:
                self.conn.reset_stream(side.sid, f.NO_ERROR)
            except H2Error:
                pass
            self.write_out()
        elif side.unacked:
            self.acknowledge(side)
        del self.streams[side.sid]
        # The stream and its side refer to each other: dropped here, the pair is freed now, by
        # reference counting, instead of waiting for the cyclic collector (which, with a few hundred
        # streams in flight, cost a tenth of a worker's time).
        side.handle = None
        self._after_stream()

    def _after_stream(self) -> None:
        if self.streams or self.closed:
            return
        if self.goaway_sent or self.client_goaway or self.env.stopping:
            self.close()
            return
        self.t_idle = time.monotonic()
        wait = self._idle_timeout()
        if wait:
            self.want(self.t_idle + wait)

    # -- ending the connection ------------------------------------------------------------------
    def drain(self) -> None:
        """Accept no new stream (a graceful GOAWAY), let those in flight finish, then close."""
        if self.closed:
            return
        if not self.goaway_sent:
            self.goaway_sent = True
            self.last_sid = self.conn.highest_inbound_stream_id
            self.conn.send_goaway(self.last_sid, f.NO_ERROR)
            self.write_out(force=True)
        if not self.streams:
            self.close()

    def close(self) -> None:
        """Close after a graceful GOAWAY (streams in flight are cut: use ``drain`` to let them end)."""
        if self.closed:
            return
        if not self.goaway_sent:
            self.goaway_sent = True
            self.last_sid = self.conn.highest_inbound_stream_id
            self.conn.close_connection(f.NO_ERROR)
        self.write_out(force=True)
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def fail(self, code: int, why: str) -> None:
        """End the connection with GOAWAY ``code`` (a protocol error, a flood)."""
        if self.closed:
            return
        self.error = why
        self.conn.close_connection(code)
        self.goaway_sent = True
        self.write_out(force=True)
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def _calm(self, why: str | None) -> bool:
        if why is None:
            return False
        self.fail(f.ENHANCE_YOUR_CALM, why)
        return True

    # -- helpers ------------------------------------------------------------------------------------
    def local_address(self) -> tuple[str, int]:
        sockname = self.transport.get_extra_info("sockname") if self.transport is not None else None
        if isinstance(sockname, tuple):
            return str(sockname[0]), int(sockname[1])
        return ("", 0)

    def _set_reading(self, on: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.read_paused != on:
            return
        self.read_paused = not on
        if on:
            transport.resume_reading()
        else:
            transport.pause_reading()

    # -- timeouts -----------------------------------------------------------------------------------
    def _idle_timeout(self) -> float | None:
        t = self.cfg.timeouts
        return t.http_keep_alive or t.http_request or t.client

    def want(self, deadline: float) -> None:
        """Make the timer fire no later than ``deadline`` (``time.monotonic()``)."""
        if self.closed:
            return
        timer = self.timer
        if timer is not None:
            if deadline >= self.timer_at - 0.001:
                return
            timer.cancel()
        self.timer_at = deadline
        self.timer = self.loop.call_later(max(deadline - time.monotonic(), 0.0), self._on_timer)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.flush_handle is not None:  # nothing more goes out
            self.flush_handle.cancel()
            self.flush_handle = None

    def _on_timer(self) -> None:
        self.timer = None
        now = time.monotonic()
        self.corked += 1
        try:
            deadline = self._expire(now)
        finally:
            self.corked -= 1
        self.write_out()
        if deadline is not None and not self.closed:
            self.want(max(deadline, now + 0.001))

    def _expire(self, now: float) -> float | None:
        if self.closed:
            return None
        if not self.streams:
            wait = self._idle_timeout()
            if not wait or not self.t_idle:
                return None
            if now >= self.t_idle + wait:
                self.close()  # idle too long (or never sent a request): GOAWAY, close
                return None
            return self.t_idle + wait
        nxt: float | None = None
        client = self.cfg.timeouts.client
        for side in list(self.streams.values()):
            handle = side.handle
            if handle is None or side.handle_done:
                continue
            when = handle.check_timeouts(now)
            if side.handle_done:
                continue
            if client:
                last = self.last_io
                if not side.write_paused:  # the client takes what we send: the server's pace is not its fault
                    last = max(last, handle.server_last_io)
                deadline = last + client
                if now >= deadline:
                    if not handle.waiting_for_server:
                        handle.on_client_timeout()
                        continue
                    deadline = now + client
                when = deadline if when is None else min(when, deadline)
            if when is not None:
                nxt = when if nxt is None else min(nxt, when)
        if not self.streams:
            return self._expire(now)
        return nxt
