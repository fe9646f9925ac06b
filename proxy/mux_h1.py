"""The client side of HTTP/1.1: one ``ClientConn`` (an ``asyncio.Protocol``) per client connection.

The mux owns the HTTP/1 wire. It parses requests and runs them one at a time through a stream (opened
by its environment, ``proxy.sides.ClientEnv``; pipelined requests wait, in order, with reading
paused), and it is the stream's ``proxy.sides.ClientSide``: it serialises what the stream sends back
with HTTP/1's framing rules — a body delimited by close is re-framed as chunked for an HTTP/1.1 client
(so the connection can stay alive), a chunked one is delimited by close for an HTTP/1.0 client, 1xx
interim responses go to HTTP/1.1 clients only, HEAD responses carry no body.

The proxy's own answers (``proxy.replies.Reply``: error pages, errorfiles, ``http-request return``,
redirects) are framed by ``writer.reply``: a Content-Length, no body for HEAD, ``Connection: close``
unless the exchange keeps the connection. A request the parser rejects before any stream exists gets
the frontend's errorfile for its status, if one is configured.

Client-side timeouts:
- ``timeout http-request``: the whole request head must arrive within it (408, ``cR``);
- ``timeout http-keep-alive`` (falls back to http-request): the wait for the next request after a
  response; on expiry the connection closes silently;
- ``timeout client``: client inactivity while a stream is running (``cD``);
- ``timeout tunnel`` (the backend's; falls back to ``timeout client``): once the exchange became a
  tunnel, inactivity in both directions ends it (``cD``).
With ``option http-ignore-probes``, a connection that sent no byte before its head timeout is closed
without the 408 (and without a log line).
One timer per connection, lazily re-armed: it fires at the earliest deadline that may matter,
re-reads the timestamps and either acts or re-arms; a request only stores timestamps (a sooner
deadline than the armed one re-arms it at once). The stream's ``timeout server`` is checked by the
same timer (``StreamHandle.check_timeouts``, announced with ``deadline_hint``).

HTTP/2 with prior knowledge: on a listener that allows it (``sniff`` set, see ``proxy.client_mux``)
the first bytes of a connection are compared with the HTTP/2 preface; a connection that starts with
it is handed over, with the bytes read so far, and this object lets go of it (no log, no close).

``Phase`` is the connection's state machine (``_PHASES`` lists the legal moves). A request the parser
rejects gets its status (400/413/431/501, ``PR``) once every earlier pipelined response has been
written, and the connection closes. Nothing in here raises out of a callback: a malformed request
never takes the worker down.

Flow control. Reading pauses for any of four reasons (``PAUSE_*``): too many parsed events waiting
(pipelining), the current stream cannot forward the request body now (``pause_request``), an
upgrade request whose outcome is not known yet, or a large read just handled (``FAIR_SHARE``: until
the loop's next turn, so that one upload never starves the other connections). The transport is
paused while any reason holds.
"""

from __future__ import annotations

import asyncio
import enum
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from proxy.h1 import ProtocolError, engine, writer
from proxy.h1.strict import RequestReader
from proxy.h2 import PREFACE
from proxy.message import Data, EndOfMessage, Event, Framing, RequestHead, ResponseHead
from proxy.replies import error_reply
from proxy.session import Session

if TYPE_CHECKING:
    from proxy.message import Headers
    from proxy.replies import Reply
    from proxy.sides import ClientEnv, StreamHandle


_monotonic: Final = time.monotonic  # a C static when compiled (no module attribute lookup)
# What takes a connection whose first bytes are the HTTP/2 preface: (transport, bytes read so far).
Handoff = Callable[[asyncio.Transport, bytes], None]

PIPELINE_MAX_EVENTS: Final = 64  # queued events before reading pauses
# The framings under which a bare response head (``ResponseHead.wire``) is relayed unchanged: the
# head states them itself (a HEAD/304/204 answer or a 1xx goes through the writer).
_RELAYED: Final = (Framing.LENGTH, Framing.CHUNKED)
_NO_EVENTS: Final[tuple[()]] = ()


class Phase(enum.StrEnum):  # str-based: hashed in C (``_to`` on every request)
    IDLE = "idle"  # between requests: no byte of the next one yet (keep-alive wait)
    HEAD = "head"  # bytes of a request head arrived, no complete head yet (http-request timeout)
    STREAM = "stream"  # a stream runs the current request
    TUNNEL = "tunnel"  # after a 101: raw bytes both ways
    CLOSED = "closed"  # closing or closed: nothing more is read or started


_PHASES: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.IDLE: frozenset({Phase.HEAD, Phase.STREAM, Phase.CLOSED}),
    Phase.HEAD: frozenset({Phase.STREAM, Phase.CLOSED}),
    Phase.STREAM: frozenset({Phase.IDLE, Phase.HEAD, Phase.TUNNEL, Phase.CLOSED}),
    Phase.TUNNEL: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}


# Reasons to pause reading, bits of ``pause_reasons`` (plain ints: IntFlag arithmetic is slow).
PAUSE_PIPELINE: Final = 1  # parsed events wait for the current stream
PAUSE_BODY: Final = 2  # the stream cannot forward the request body now
PAUSE_UPGRADE: Final = 4  # bytes after an upgrade request may be the tunnel's
PAUSE_FAIR: Final = 8  # a large read was just handled: let the other connections have their turn

# A read this large makes the connection stand aside until the loop's next turn: libuv reads a
# ready socket up to 32 times in a row, so an upload could otherwise hold the loop for many reads
# while other clients wait (its fair share is one read per turn).
FAIR_SHARE: Final = 65536


class ClientConn(asyncio.Protocol):
    __slots__ = (
        "bytes_sent",
        "cfg",
        "client_timeout",
        "corked",
        "env",
        "half_closed",
        "httpclose",
        "inbox",
        "inbox_at",
        "last_io",
        "loop",
        "parse_error",
        "parser",
        "pause_reasons",
        "paused",
        "phase",
        "processing",
        "req_eom",
        "resp_done",
        "resp_framing",
        "session",
        "sniff",
        "sniffed",
        "stream",
        "stream_head",
        "t_wait_start",
        "timer",
        "timer_at",
        "transport",
        "tunnel_timeout",
        "upgrade_held",
        "wait_timeout",
        "write_paused",
    )

    def __init__(
        self, env: ClientEnv, sniff: Handoff | None = None, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.env = env
        # Set on a plain listener that accepts HTTP/2 with prior knowledge: what takes the
        # connection when its first bytes are the HTTP/2 preface (None once decided).
        self.sniff = sniff
        self.sniffed = b""
        self.cfg = env.cfg  # the frontend's settings, fixed for the life of the worker
        # What every request reads of them, read once:
        t = self.cfg.timeouts
        self.client_timeout = t.client
        self.wait_timeout = t.http_keep_alive or t.http_request or t.client  # between requests
        self.httpclose = self.cfg.http_conn_mode == "httpclose"
        self.bytes_sent = 0
        # Every engine's parser is a ``strict.RequestReader``: typed so, its calls are native ones.
        self.parser = cast(RequestReader, engine(env.engine_name).request_parser(env.limits))
        self.transport: asyncio.Transport | None = None
        self.session = Session("", 0)
        self.phase = Phase.IDLE
        self.stream: StreamHandle | None = None  # the current request's, or the tunnel's
        self.stream_head: RequestHead | None = None
        # Parsed events not consumed yet: a list read from ``inbox_at``; the shared empty tuple while
        # there are none (an empty deque costs 760 bytes per connection, an empty list 56).
        self.inbox: list[Event] | tuple[()] = _NO_EVENTS
        self.inbox_at = 0
        self.parse_error: ProtocolError | None = None
        self.pause_reasons = 0
        self.paused = False
        self.half_closed = False  # the client sent its FIN: answer what is in flight, then close
        self.corked: list[bytes] | None = None
        self.processing = False
        self.req_eom = False  # the current request's end was read
        self.resp_done = False  # the current response ended (the stream is done)
        self.resp_framing = Framing.NONE  # how the current response body is framed to the client
        self.upgrade_held = False
        self.write_paused = False
        self.last_io = 0.0
        self.t_wait_start = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0  # when ``timer`` fires (_monotonic())
        self.tunnel_timeout: float | None = None  # inactivity both ways allowed in a tunnel
        # The running loop, given by the listener's factory: asking for it costs a getpid() on 3.11
        self.loop = loop if loop is not None else asyncio.get_running_loop()

    def __repr__(self) -> str:
        s = self.session
        return (
            f"<ClientConn {s.client_ip}:{s.client_port} fe={self.cfg.name} {self.phase.name}"
            f" reqs={s.requests_done}>"
        )

    def _to(self, phase: Phase) -> None:
        if phase is not self.phase:
            if phase not in _PHASES[self.phase]:
                raise RuntimeError(f"{self!r}: {self.phase.name} -> {phase.name}")
            self.phase = phase

    @property
    def closing(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def idle(self) -> bool:
        """Nothing in flight: no stream, no parsed request waiting (soft stop may close it)."""
        return self.stream is None and not self.inbox

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        peer = transport.get_extra_info("peername")
        ssl = transport.get_extra_info("ssl_object") is not None
        if isinstance(peer, tuple):
            # interned: the connections of one client address share one string (memory per connection)
            self.session = Session(sys.intern(str(peer[0])), int(peer[1]), ssl)
        else:
            self.session = Session("unix", 0, ssl)
        self.env.client_opened(self)
        now = self.t_wait_start = self.last_io = _monotonic()
        head = self._head_timeout()
        if head:
            self._want(now + head)

    def data_received(self, data: bytes) -> None:
        self.last_io = _monotonic()
        phase = self.phase
        if phase is _PH_TUNNEL:
            if self.stream is not None:
                self.stream.tunnel_from_client(data)
            return
        if self.parse_error is not None or phase is _PH_CLOSED:
            return
        if phase is _PH_IDLE:
            if self.sniff is not None:
                data = self._sniff(data)
                if not data:
                    return
            # The first byte of a request: from now on, the head timeout applies.
            self.phase = _PH_HEAD  # (IDLE -> HEAD: legal, see _PHASES; no check needed)
            self.t_wait_start = self.last_io
        try:
            events = self.parser.feed(data)
        except ProtocolError as exc:
            self.parse_error = exc
            events = []
        except Exception as err:  # an engine bug must not take the worker down
            self.parse_error = ProtocolError(f"parser failure: {err!r}", 400)
            events = []
        if events:
            self._queue(events)
        self._process()
        if self.phase is _PH_HEAD:  # a head still incomplete: http-request runs from its first byte
            head = self._head_timeout()
            if head:
                self._want(self.t_wait_start + head)
        if len(data) >= FAIR_SHARE and not self.pause_reasons & PAUSE_FAIR:
            self._set_pause(PAUSE_FAIR, True)
            self.loop.call_soon(self._set_pause, PAUSE_FAIR, False)

    def eof_received(self) -> bool | None:
        if self.phase is Phase.TUNNEL:
            if self.stream is not None:
                self.stream.tunnel_client_eof()  # half-close: forwarded, keep relaying the other way
            return True
        phase = self.phase
        try:
            self._queue(self.parser.feed_eof())
        except Exception:
            self._log_closed_early(phase)
            return None  # truncated request (or an engine failure): the client is gone
        self._process()
        if self.stream is not None or self.inbox:
            # Half-closed with requests in flight: answer them, then close (option abortonclose:
            # the stream may give up first, if it still waits for a server).
            self.half_closed = True
            if self.stream is not None and self.req_eom:
                self.stream.on_client_shutdown()
            return True
        self._log_closed_early(phase)
        return None

    def _log_closed_early(self, phase: Phase) -> None:
        """The client closed before a whole request head: HAProxy's ``CR--`` ``<BADREQ>`` line
        (400), for a partial head, or for a connection that sent nothing at all unless
        ``option dontlognull`` (or ``http-ignore-probes``) says not to log it. A keep-alive
        connection closing between requests is not logged."""
        if self.stream is not None or self.inbox or self.parse_error is not None:
            return
        if phase is Phase.HEAD or (
            phase is Phase.IDLE and self.session.requests_done == 0
            and not self.cfg.dontlognull and not self.cfg.http_ignore_probes
        ):  # fmt: skip
            self.env.log_error(self, 400, "CR")

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = Phase.CLOSED
        self._disarm()
        stream = self.stream
        self.stream = None
        try:
            if stream is not None:
                stream.on_client_closed()
        finally:  # whatever the stream raised, the connection is counted closed (shared counters)
            try:
                self.session.close()
            finally:
                self.env.client_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.stream is not None:
            self.stream.on_client_writable(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.last_io = _monotonic()
        if self.stream is not None:
            self.stream.on_client_writable(True)

    # -- HTTP/2 with prior knowledge ----------------------------------------------------------
    def _sniff(self, data: bytes) -> bytes:
        """The first bytes of the connection: the HTTP/2 preface hands the connection over to
        ``sniff`` (which makes the HTTP/2 mux); anything else is HTTP/1 from now on. Returns the
        bytes to parse as HTTP/1 (b"": nothing, yet or ever)."""
        buf = self.sniffed + data if self.sniffed else data
        if len(buf) < len(PREFACE) and PREFACE.startswith(buf):
            self.sniffed = buf  # a prefix of the preface: wait for the rest
            return b""
        handoff, self.sniff, self.sniffed = self.sniff, None, b""
        if handoff is None or not buf.startswith(PREFACE):
            return buf
        transport = self.transport
        self.transport = None  # from now on, nothing of this object touches the connection
        self._to(Phase.CLOSED)
        self._disarm()
        self.env.client_closed(self)
        if transport is not None:
            handoff(transport, buf)
        return b""

    def drain(self) -> None:
        """Soft stop with a request in flight: nothing to announce in HTTP/1 (the connection closes
        after the current response, ``stream_done`` sees ``env.stopping``)."""

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
        closing = self.phase is _PH_CLOSED
        if self.stream is None and not self.inbox and self.parse_error is None and not closing:
            try:
                self.parser.feed(b"")  # an error found after complete requests surfaces now
            except ProtocolError as exc:
                self.parse_error = exc
        if self.parse_error is not None and not self.inbox and not closing:
            stream = self.stream
            if stream is None:
                self._reject(self.parse_error)
                return
            if not self.req_eom:  # the body being forwarded is invalid: this request fails
                stream.on_request_error(self.parse_error.status)
                return
        waiting = len(self.inbox) - self.inbox_at
        pause = waiting >= PIPELINE_MAX_EVENTS or (waiting > 0 and self.stream is not None)
        if pause is not bool(self.pause_reasons & PAUSE_PIPELINE):  # a call only for a change
            self._set_pause(PAUSE_PIPELINE, pause)

    def _queue(self, events: list[Event]) -> None:
        if not events:
            return
        if self.inbox_at >= len(self.inbox):  # empty: take the parser's list as it is
            self.inbox = events
            self.inbox_at = 0
        else:
            inbox = self.inbox
            assert isinstance(inbox, list)  # not empty: the parser's list
            inbox.extend(events)

    def _drain_inbox(self) -> None:
        inbox = self.inbox
        while inbox and self.phase is not _PH_CLOSED:
            stream = self.stream
            if stream is None:
                ev = inbox[self.inbox_at]  # _pop, inline (twice a request)
                self.inbox_at += 1
                if self.inbox_at == len(inbox):
                    inbox = self.inbox = _NO_EVENTS
                    self.inbox_at = 0
                if not isinstance(ev, RequestHead):  # cannot happen with a conforming parser
                    self._reject(ProtocolError("event out of order", 400))
                    return
                self._start_stream(ev)
                inbox = self.inbox
            elif not self.req_eom:
                ev = inbox[self.inbox_at]
                self.inbox_at += 1
                if self.inbox_at == len(inbox):
                    inbox = self.inbox = _NO_EVENTS
                    self.inbox_at = 0
                if isinstance(ev, Data):
                    stream.on_request_data(ev.data)
                    inbox = self.inbox
                elif isinstance(ev, EndOfMessage):
                    self.req_eom = True
                    if self.upgrade_held:
                        self._set_pause(PAUSE_UPGRADE, True)
                    stream.on_request_end(ev.trailers)
                    if self.resp_done:
                        self._next_request()
                    inbox = self.inbox
                else:
                    self._reject(ProtocolError("event out of order", 400))
                    return
            else:
                break  # a pipelined request waits for the current response

    def _start_stream(self, head: RequestHead) -> None:
        self.phase = _PH_STREAM  # from IDLE or HEAD (the only callers' phases): legal, see _PHASES
        # After an upgrade request's end, the parser holds every later byte until we know whether
        # this becomes a tunnel; reading pauses then (see _drain_inbox).
        self.upgrade_held = head.upgrade is not None
        self.req_eom = False
        self.resp_done = False
        self.resp_framing = _FR_NONE
        self.stream_head = head
        stream = self.stream = self.env.open_stream(self, head, self.t_wait_start)
        client = self.client_timeout
        if client:
            deadline = self.last_io + client
            if self.timer is None or deadline < self.timer_at - 0.001:  # _want's test: a call only if due
                self._want(deadline)
        stream.start()

    def stream_done(self, stream: StreamHandle, keep_alive: bool) -> None:
        """Called by the stream when it ended; ``keep_alive`` says if the client may go on."""
        if stream is not self.stream or self.phase is _PH_CLOSED:
            return
        if self.phase is _PH_TUNNEL:
            self.stream = None
            self.close()
            return
        if not keep_alive or self.env.stopping or (self.half_closed and not self.inbox):
            self.stream = None
            self.close()
            return
        self.resp_done = True
        if self.req_eom:
            self._next_request()
        # else: the request's end is still to be read (an early response); _drain_inbox finishes

    def _next_request(self) -> None:
        self.stream = None
        self.stream_head = None
        if self.upgrade_held:  # the upgrade did not happen: parse what the parser held as HTTP
            self.upgrade_held = False
            self._set_pause(PAUSE_UPGRADE, False)
            try:
                self._queue(self.parser.resume())
            except ProtocolError as exc:
                self.parse_error = exc
        self.session.requests_done += 1
        self.phase = _PH_HEAD if self.inbox else _PH_IDLE  # from STREAM: legal, see _PHASES
        now = self.t_wait_start = self.last_io = _monotonic()
        wait = self.wait_timeout
        if wait:
            deadline = now + wait
            if self.timer is None or deadline < self.timer_at - 0.001:  # _want's test
                self._want(deadline)
        self._process()

    def keep_alive_allowed(self) -> bool:
        return not self.httpclose and not self.env.stopping

    def local_address(self) -> tuple[str, int]:
        sockname = self.transport.get_extra_info("sockname") if self.transport is not None else None
        if isinstance(sockname, tuple):
            return str(sockname[0]), int(sockname[1])
        return ("", 0)

    def _reject(self, exc: ProtocolError, *, log: bool = True) -> None:
        status = exc.status
        if self.transport is not None and self.phase is not Phase.CLOSED:
            self.send_reply(error_reply(status, self.cfg.errorfiles.get(status)), keep_alive=False)
            if log:  # a 408's Ta: how long the head was waited for (HAProxy's)
                ta = int((_monotonic() - self.t_wait_start) * 1000) if status == 408 else 0
                self.env.log_error(self, status, "cR" if status == 408 else "PR", ta)
        self.close()

    # -- ClientSide: what the current stream sends back -----------------------------------------
    def send_interim(self, resp: ResponseHead) -> None:
        head = self.stream_head
        if head is not None and head.version == b"1.1":  # an HTTP/1.0 client knows no 1xx
            self.write(writer.response_head(resp, body=Framing.NONE, content_length=None, keep_alive=True))

    def send_response_head(self, resp: ResponseHead, *, keep_alive: bool, request_done: bool) -> bool:
        head = self.stream_head
        assert head is not None
        version = head.version
        # keep_alive_allowed, inline
        keep = (
            keep_alive
            and request_done
            and not self.httpclose
            and not self.env.stopping
        )
        framing = resp.body
        if framing is _FR_CLOSE:
            if version == b"1.1" and head.method != b"HEAD":
                framing = _FR_CHUNKED  # re-frame so the client connection can stay alive
            else:
                keep = False
        elif framing is _FR_CHUNKED and version == b"1.0":
            framing = _FR_CLOSE  # an HTTP/1.0 client cannot read chunks: delimit by close
            keep = False
        wire = resp.wire
        if wire is not None and framing is resp.body and version == b"1.1" and framing in _RELAYED:
            # The server's head relayed as it came (the parser vouched for it: ``ResponseHead.wire``)
            # instead of serialised again; only our Connection header may have to be added.
            self.write(wire if keep else wire[:-2] + b"Connection: close\r\n\r\n")
            self.resp_framing = framing
            return keep
        try:
            data = writer.response_head(
                resp, body=framing, content_length=resp.content_length, keep_alive=keep, version=version
            )
        except ProtocolError:  # the server's head cannot be written safely: answer 502 instead
            self.send_reply(error_reply(502, self.cfg.errorfiles.get(502)), keep_alive=False)
            self.resp_framing = _FR_NONE
            return False
        self.write(data)
        self.resp_framing = _FR_NONE if head.method == b"HEAD" else framing
        return keep

    def send_data(self, data: bytes) -> None:
        framing = self.resp_framing
        if framing is _FR_LENGTH:  # the bytes as they are (writer.data's answer), corked if so
            corked = self.corked
            if corked is not None and data:
                corked.append(data)
                self.bytes_sent += len(data)  # as ``write`` counts it: the log's bytes field
            else:
                self.write(data)
        elif framing is not _FR_NONE:
            self.write(writer.data(framing, data))

    def send_end(self, trailers: Headers) -> None:
        framing = self.resp_framing
        if framing is not _FR_NONE and framing is not _FR_LENGTH:  # a Content-Length body ends by itself
            try:
                self.write(writer.end(framing, trailers))
            except ProtocolError:
                self.write(writer.end(framing))  # unsafe trailers are dropped, the body still ends

    def send_reply(self, reply: Reply, *, keep_alive: bool) -> bool:
        if reply.silent:
            return False  # an empty errorfile: the connection closes without an answer
        keep = keep_alive and self.keep_alive_allowed()
        head = self.stream_head
        version = head.version if head is not None else b"1.1"
        head_only = head is not None and head.method == b"HEAD"
        try:
            data = writer.reply(reply, keep_alive=keep, version=version, head_only=head_only)
        except ProtocolError:  # a header value that could split the head (a rule's doing): 500
            fallback = error_reply(500, self.cfg.errorfiles.get(500))
            keep = False
            data = writer.reply(fallback, keep_alive=False, version=version, head_only=head_only)
        self.write(data)
        return keep

    def pause_request(self) -> None:
        self._set_pause(PAUSE_BODY, True)

    def resume_request(self) -> None:
        self._set_pause(PAUSE_BODY, False)

    # -- tunnel ---------------------------------------------------------------------------------
    def start_tunnel(self, stream: StreamHandle, resp: ResponseHead) -> bytes:
        self.write(writer.response_head(resp, body=Framing.NONE, content_length=None, keep_alive=True))
        self._to(Phase.TUNNEL)
        self._disarm()
        self.tunnel_timeout = stream.tunnel_timeout or self.cfg.timeouts.client
        if self.tunnel_timeout:
            self._want(_monotonic() + self.tunnel_timeout)
        self.inbox = _NO_EVENTS
        self.inbox_at = 0
        self.upgrade_held = False
        self._set_pause(PAUSE_PIPELINE | PAUSE_UPGRADE | PAUSE_BODY, False)
        return self.parser.detach()

    def tunnel_send(self, data: bytes) -> None:
        self.write(data)

    def tunnel_send_eof(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            self.uncork()
            transport.write_eof()

    # -- output and flow control ----------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not data:
            return
        self.bytes_sent += len(data)  # what the log's bytes field counts: heads and bodies
        corked = self.corked
        if corked is not None:
            corked.append(data)
            return
        self._transmit(data)

    def _transmit(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def cork(self) -> None:
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        corked = self.corked
        if corked is None:
            return
        self.corked = None
        if corked:
            self._transmit(corked[0] if len(corked) == 1 else b"".join(corked))  # counted when corked

    def _set_pause(self, reason: int, on: bool) -> None:
        reasons = (self.pause_reasons | reason) if on else (self.pause_reasons & ~reason)
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

    def close(self) -> None:
        """Close after flushing what was written."""
        if self.phase is Phase.CLOSED:
            return
        self.uncork()
        self._to(Phase.CLOSED)
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.phase = Phase.CLOSED
        self._disarm()
        if self.transport is not None:
            self.transport.abort()

    # -- timeouts -------------------------------------------------------------------------------
    def _head_timeout(self) -> float | None:
        t = self.cfg.timeouts
        return t.http_request or t.client

    # One timer per connection, armed for the earliest deadline that may matter and re-armed only
    # when it fires (it re-reads the timestamps then) or when a sooner deadline appears: a
    # keep-alive request changes timestamps, not timers.
    def _want(self, deadline: float) -> None:
        """Make the timer fire no later than ``deadline`` (``_monotonic()``)."""
        timer = self.timer
        if timer is not None:
            if deadline >= self.timer_at - 0.001:
                return
            timer.cancel()
        self.timer_at = deadline
        self.timer = self.loop.call_later(max(deadline - _monotonic(), 0.0), self._on_timer)

    def deadline_hint(self, when: float) -> None:
        if self.phase is _PH_STREAM and (self.timer is None or when < self.timer_at - 0.001):  # _want's test
            self._want(when)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        now = _monotonic()
        deadline = self._expire(now)
        if deadline is not None and self.phase is not Phase.CLOSED:
            self._want(max(deadline, now + 0.001))

    def _expire(self, now: float) -> float | None:
        """Act on whatever timeout expired by ``now``; return the next deadline (None: none)."""
        phase = self.phase
        if phase is Phase.CLOSED:
            return None
        stream = self.stream
        if phase is Phase.TUNNEL:
            timeout = self.tunnel_timeout
            if not timeout or stream is None:
                return None
            deadline = max(self.last_io, stream.server_last_io) + timeout
            if now >= deadline:
                stream.on_client_timeout()  # inactive both ways: the tunnel ends (cD)
                return None
            return deadline
        if stream is None:
            # Waiting for a request head: measured from its first byte (or the previous response).
            if phase is Phase.IDLE and self.session.requests_done > 0:
                wait = self.wait_timeout
                if not wait:
                    return None
                if now >= self.t_wait_start + wait:
                    self.close()  # keep-alive wait expired: close silently
                    return None
                return self.t_wait_start + wait
            head = self._head_timeout()
            if not head:
                return None
            if now >= self.t_wait_start + head:
                if phase is Phase.IDLE and self.cfg.http_ignore_probes:
                    self.close()  # not a byte came (a browser's pre-connect): no 408, no log
                    return None
                # a connection that sent nothing is not logged under ``option dontlognull``
                log = not (phase is Phase.IDLE and self.cfg.dontlognull)
                self._reject(ProtocolError("timeout waiting for the request head", 408), log=log)
                return None
            return self.t_wait_start + head
        nxt = stream.check_timeouts(now)  # timeout server: the stream's own
        if self.stream is not stream:  # it ended the stream: look again at what follows
            return self._expire(now)
        client = self.client_timeout
        if client:
            last = self.last_io
            if not self.write_paused:  # the client reads what we send: the server's pace is not its fault
                last = max(last, stream.server_last_io)
            deadline = last + client
            if now >= deadline:
                if not stream.waiting_for_server:
                    stream.on_client_timeout()
                    return self._expire(now) if self.stream is not stream else None
                # Waiting for the server: that is the server timeout's business, not the client's.
                deadline = now + client
            nxt = deadline if nxt is None else min(nxt, deadline)
        return nxt


# The enum members the per-request functions above use, as module constants: on Python 3.11
# a member lookup (``Phase.IDLE``) costs several times a global's, and a request makes dozens.
_FR_CHUNKED: Final = Framing.CHUNKED
_FR_CLOSE: Final = Framing.CLOSE
_FR_LENGTH: Final = Framing.LENGTH
_FR_NONE: Final = Framing.NONE
_PH_CLOSED: Final = Phase.CLOSED
_PH_HEAD: Final = Phase.HEAD
_PH_IDLE: Final = Phase.IDLE
_PH_STREAM: Final = Phase.STREAM
_PH_TUNNEL: Final = Phase.TUNNEL
