"""A connection to a server speaking HTTP/2 (the ``h2`` library as the client-side protocol core),
multiplexing the requests of several streams.

Two objects. ``H2ServerConn`` is the ``asyncio.Protocol`` and the unit of accounting and pooling: it
satisfies ``proxy.server.Conn`` (``acct`` written by ``ServerRuntime.move`` only, ``on_lost`` fired
exactly once when it closes) and sits in the pools like an HTTP/1 connection while it carries no
stream. ``H2Stream`` is one request on it, and is what a ``proxy.stream.Stream`` holds as its
server connection: the same calls as ``proxy.server_conn.ServerConn`` (``attach``, ``send_head``,
``send_data``, ``send_end``, ``pause_reading``...), and the same ``proxy.sides.ServerPeer`` events
back, so the stream stays protocol-neutral (the translation is ``proxy.server_h2_msg``).

Streams. At most ``capacity`` at once: the server's SETTINGS_MAX_CONCURRENT_STREAMS (100 until its
SETTINGS arrive), capped by ``tune.h2.be.max-concurrent-streams``, and ``max-reuse`` streams in the
connection's life. ``free_streams`` is what ``proxy.backend`` reads to put the connection on (or
take it off) its worker's *available* list.

Flow control, tied to consumption both ways:

- request bodies are sent as the stream's and the connection's send windows allow; what does not
  fit waits in the stream (``write_paused`` is then True and the stream's peer is told, so the
  client is no longer read), and goes out on the server's WINDOW_UPDATE;
- response DATA is handed to the stream at once but acknowledged (WINDOW_UPDATE) only while the
  stream's client takes it: a stream whose client is slow (``pause_reading``) keeps its bytes
  unacknowledged, so the server stops after one window (``tune.h2.be.initial-window-size``).

GOAWAY drains the connection: no new stream; streams above its last-stream-id were not processed
and are failed as ``refused`` (the stream may replay them on another connection); the connection
closes after its last stream. A stream reset by the server with REFUSED_STREAM is refused the same
way. A connection that dies fails its streams (``on_server_closed``: 502 ``SH`` before a response
head, a cut ``SD`` after); a protocol error fails them with ``on_server_error`` (502 ``PH``).

Sharing across workers. An idle plain-TCP HTTP/2 connection (h2c: ``shareable`` is set by the
backend for ``proto h2`` without TLS) is lent like an HTTP/1 one: once it has stayed idle
``LEND_AFTER`` (5 ms) in a lending worker's pool (most are used again at once, and lending costs a
few system calls and a serialization), ``lend_state`` writes its ``h2`` state
(``proxy.h2_handover``: HPACK tables, settings, windows, stream ids, ``max-reuse`` count) into a
memory file published with its slot, and reading is paused; a thief duplicates both descriptors, and
``restore`` continues the connection from that state (no preface, no SETTINGS: the server sees one
connection go on); where workers steal over the channel instead, ``detach_socket`` gives the socket
and the state file together (one GIVE datagram, ``proxy.takeover``). A connection with a stream, a
partial frame, unsent bytes, or draining after GOAWAY is not lent (``lend_state`` is None); a TLS
one never is (its TLS state cannot leave the process with Python's ``ssl``): ``shareable`` stays
False. Connections with active streams stay with their worker, as HAProxy's stay with their thread.
While parked and lent, a server frame (a PING, a GOAWAY) is not read: the next peek (a thief's, or
the owner's sweep) sees bytes and the connection is closed like an HTTP/1 one that spoke out of
turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from proxy import pidfd
from proxy.h1 import ProtocolError
from proxy.h2.hpack_codec import install as install_hpack
from proxy.h2_handover import BadState, Extra, NotIdle, check_idle, dump, load, read_fd, to_memfd
from proxy.message import Data, EndOfMessage, Event, Framing, Headers, RequestHead
from proxy.server import Acct
from proxy.server_h2_msg import MessageError, request_fields, response_head, trailer_fields, trailers_in
from proxy.slots import socket_ports

if TYPE_CHECKING:
    from proxy.pool import ConnKey
    from proxy.server import ServerRuntime
    from proxy.sides import ServerPeer

DEFAULT_STREAMS = 100  # assumed until the server's SETTINGS say (RFC 9113 §6.5.2 recommends >= 100)
_GOAWAY = 0x7  # the frame type
CONN_WINDOW = 1 << 24  # our connection-level receive window: the per-stream windows bound memory
LEND_AFTER = 0.005  # seconds an h2c connection stays idle in its pool before it is lent to others


class H2State(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"  # streams may be opened
    DRAINING = "draining"  # GOAWAY received: no new stream (max-reuse is ``retiring`` too)
    CLOSED = "closed"


_next_id = 0


class H2ServerConn(asyncio.Protocol):
    """One HTTP/2 connection to a server (see the module doc)."""

    def __init__(
        self,
        server: ServerRuntime,
        key: ConnKey,
        *,
        scheme: bytes = b"http",
        max_streams: int = 0,
        window: int = 65535,
        max_reuse: int = -1,
    ) -> None:
        global _next_id
        _next_id += 1
        self.id = _next_id
        self.server = server
        self.key = key
        self.scheme = scheme
        self.max_streams_cfg = max_streams  # tune.h2.be.max-concurrent-streams (0: the server's)
        self.max_reuse = max_reuse
        self.window = window
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None, validate_inbound_headers=True)
        )
        install_hpack(self.h2)  # the compiled HPACK codec in place of the hpack library's
        self.transport: asyncio.Transport | None = None
        self.inbuf = b""  # the start of a frame not wholly received yet
        self.state = H2State.CONNECTING
        self.streams: dict[int, H2Stream] = {}  # by id: the streams whose head was sent
        self.active = 0  # streams opened and not yet done (their heads sent or about to be)
        self.got_settings = False
        self.opened = 0  # streams opened in this connection's life (max-reuse)
        self.requests = 0  # streams completed (the pools read it like an HTTP/1 connection's)
        self.idle_since = 0.0
        self.write_paused = False
        self.session: object | None = None  # http-reuse safe: the client session its streams are of
        self.owner: object | None = None  # the client session a private connection belongs to
        self.acct = Acct.NONE  # written by ServerRuntime.move only
        self.fd = -1
        self.ports = 0
        self.slot = -1
        self.slot_tag = 0
        self.on_lost: Callable[[H2ServerConn], None] | None = None
        self.available = False  # on the backend's available list (the backend keeps this)
        self.settings_waiter: asyncio.Future[None] | None = None  # ``ready``
        # May another worker take it while idle: plain TCP only (the backend sets it for h2c)
        self.shareable = False
        self.restored = False  # continued from another worker's state: no preface to send
        self.reading_paused = False  # parked and lent: nothing is read until it is used again
        self.state_fd = -1  # the memory file of the state published with its slot (``lend_state``)
        self.loop: asyncio.AbstractEventLoop | None = None  # (for the lending timer)
        self.lend_timer: asyncio.TimerHandle | None = None  # armed when parked: ``_lend_later``
        self.lend_due = False  # idle for LEND_AFTER: ``lend_state`` may publish it now

    def __repr__(self) -> str:
        return (
            f"<H2ServerConn #{self.id} {self.server.backend_name}/{self.server.name} {self.state.value}"
            f" streams={len(self.streams)}/{self.capacity} reqs={self.requests} acct={self.acct.name}>"
        )

    # -- capacity -------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Streams allowed at once now."""
        limit = self.h2.remote_settings.max_concurrent_streams if self.got_settings else DEFAULT_STREAMS
        if self.max_streams_cfg > 0:
            limit = min(limit, self.max_streams_cfg)
        return limit

    @property
    def free_streams(self) -> int:
        """How many more streams may be opened now (0 while connecting, draining or closed)."""
        if self.state is not H2State.OPEN and self.state is not H2State.CONNECTING:
            return 0
        free = self.capacity - self.active
        if self.max_reuse >= 0:  # the first use and max-reuse reuses (HAProxy's meaning)
            free = min(free, self.max_reuse + 1 - self.opened)
        return max(free, 0)

    @property
    def retiring(self) -> bool:
        """No stream will ever be opened on it again (GOAWAY, max-reuse, closed)."""
        if self.state is H2State.DRAINING or self.state is H2State.CLOSED:
            return True
        return self.max_reuse >= 0 and self.opened > self.max_reuse

    @property
    def alive(self) -> bool:
        return (
            self.state is not H2State.CLOSED
            and self.transport is not None
            and not self.transport.is_closing()
        )

    @property
    def private(self) -> bool:
        return self.acct is Acct.PRIVATE

    async def ready(self, timeout: float) -> None:
        """Wait for the server's first SETTINGS (its stream limit), or the connection's end:
        streams opened before would count on a limit the server may not have. TimeoutError after
        ``timeout`` seconds."""
        if self.got_settings or self.state is H2State.CLOSED:
            return
        waiter = self.settings_waiter = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(waiter, timeout)

    def _wake(self) -> None:
        waiter, self.settings_waiter = self.settings_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def open_stream(self) -> H2Stream:
        """A new stream (its id is allocated when its head is sent). The caller checked
        ``free_streams``."""
        if self.reading_paused:
            self.resume_reading()
        if self.lend_timer is not None:
            self.lend_timer.cancel()
            self.lend_timer = None
        self.lend_due = False
        self.opened += 1
        self.active += 1
        return H2Stream(self)

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def note_socket(self, sock: socket.socket) -> None:
        """Record the descriptor and ports of the socket about to be wrapped (a slot records them)."""
        self.fd = sock.fileno()
        ports = socket_ports(sock)
        if ports is not None:
            self.ports = ports

    def restore_from_fd(self, state_fd: int) -> bool:
        """``restore_from`` the memory file ``state_fd`` (closed here, whatever happens)."""
        try:
            data = read_fd(state_fd)
        except (OSError, BadState):
            return False
        finally:
            os.close(state_fd)
        return self.restore_from(data)

    def restore_from(self, data: bytes) -> bool:
        """``restore`` from a published state's bytes; False (nothing changed) if they are not one."""
        try:
            conn, extra = load(data, self.h2.config)
        except BadState:
            return False
        self.restore(conn, extra)
        return True

    def restore(self, conn: h2.connection.H2Connection, extra: Extra) -> None:
        """Continue from another worker's state (``proxy.h2_handover.load``), before wrapping."""
        self.h2 = conn
        self.opened = extra.opened
        self.requests = extra.requests
        self.got_settings = extra.got_settings
        self.restored = True
        self.shareable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        with contextlib.suppress(RuntimeError):  # (a test may make it outside a running loop)
            self.loop = asyncio.get_running_loop()
        if self.state is H2State.CONNECTING:
            self.state = H2State.OPEN
        if self.restored:  # the preface and SETTINGS were exchanged by the worker we took it from
            return
        h = self.h2
        h.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.window,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            },
        )
        h.initiate_connection()
        h.increment_flow_control_window(CONN_WINDOW - 65535)
        self.flush()

    def data_received(self, data: bytes) -> None:
        """Complete frames go to ``h2``, except GOAWAY, which is handled here: the ``h2`` library
        closes its connection state on a GOAWAY and refuses every later frame, while a drained
        connection must still receive the responses of the streams the server goes on with."""
        buf = self.inbuf + data if self.inbuf else data
        n = len(buf)
        pos = start = 0
        while pos + 9 <= n:
            end = pos + 9 + int.from_bytes(buf[pos : pos + 3], "big")
            if end > n:
                break
            if buf[pos + 3] == _GOAWAY and end - pos >= 17:
                if not self._feed(buf[start:pos]):
                    return
                self._goaway(int.from_bytes(buf[pos + 9 : pos + 13], "big") & 0x7FFFFFFF)
                if self.state is H2State.CLOSED:
                    return
                start = end
            pos = end
        self.inbuf = buf[pos:]
        self._feed(buf[start:pos])

    def _feed(self, data: bytes) -> bool:
        """Frames to ``h2`` and their events dispatched; False once the connection is closed."""
        if not data:
            return self.state is not H2State.CLOSED
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail(ProtocolError(f"HTTP/2 protocol error from the server: {exc}", 502))
            return False
        for ev in events:
            self._dispatch(ev)
            if self.state is H2State.CLOSED:
                return False
        self.flush()
        return True

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost fails what is left

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        for st in list(self.streams.values()):
            st.flow_changed()

    def resume_writing(self) -> None:
        self.write_paused = False
        for st in list(self.streams.values()):
            st.push()
        self.flush()

    # -- events from the server -----------------------------------------------------------------------
    def _dispatch(self, ev: h2.events.Event) -> None:
        sid = getattr(ev, "stream_id", 0)
        st = self.streams.get(sid) if sid else None
        if isinstance(ev, h2.events.ResponseReceived | h2.events.InformationalResponseReceived):
            if st is not None:
                st.on_head(list(ev.headers or ()), isinstance(ev, h2.events.InformationalResponseReceived))
        elif isinstance(ev, h2.events.DataReceived):
            if st is not None:
                st.on_data(ev.data or b"", ev.flow_controlled_length or 0)
            else:  # a stream we reset: its bytes still count against the connection's window
                self.h2.acknowledge_received_data(ev.flow_controlled_length or 0, sid)
        elif isinstance(ev, h2.events.TrailersReceived):
            if st is not None:
                st.trailers = trailers_in(list(ev.headers or ()))
        elif isinstance(ev, h2.events.StreamEnded):
            if st is not None:
                st.on_end()
        elif isinstance(ev, h2.events.StreamReset):
            if st is not None:
                st.on_reset(ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM)
        elif isinstance(ev, h2.events.WindowUpdated):
            targets = list(self.streams.values()) if not sid else ([st] if st is not None else [])
            for s in targets:
                s.push()
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.got_settings = True
            self._wake()
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
                for s in list(self.streams.values()):
                    s.push()

    def _goaway(self, last: int) -> None:
        """The server will take no new stream: drain. Streams above ``last`` (its last-stream-id)
        were not processed (refused: safe to replay elsewhere)."""
        if self.state is H2State.CLOSED:
            return
        self.state = H2State.DRAINING
        for sid, st in list(self.streams.items()):
            if sid > last:
                st.on_reset(refused=True)
        if not self.active:
            self.close()

    # -- writing ------------------------------------------------------------------------------------
    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def stream_done(self, st: H2Stream) -> None:
        """``st`` leaves the connection (ended, reset, or its exchange gave up)."""
        if st.stream_id is not None:
            self.streams.pop(st.stream_id, None)
        self.active -= 1
        self.requests += 1

    # -- closing -------------------------------------------------------------------------------------
    def make_idle(self) -> None:
        """No stream left and the connection is kept: it waits in a pool, reading (to see GOAWAY,
        PING, or the server closing)."""
        self.idle_since = time.monotonic()
        self.session = None

    def _fail(self, exc: ProtocolError) -> None:
        self._closed(exc)
        if self.transport is not None:
            self.transport.abort()

    def _closed(self, exc: ProtocolError | None) -> None:
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:  # (set after a close during the handshake too: it runs then)
            on_lost(self)
        self.unlend()
        if self.lend_timer is not None:
            self.lend_timer.cancel()
            self.lend_timer = None
        self._wake()
        if self.state is H2State.CLOSED:
            return
        self.state = H2State.CLOSED
        streams = list(self.streams.values())
        self.streams.clear()
        for st in streams:
            st.on_conn_lost(exc)

    def close(self) -> None:
        """Close now: GOAWAY (best effort), the hook at once, every stream still here failed."""
        if (
            self.transport is not None
            and not self.transport.is_closing()
            and self.state is not H2State.CLOSED
        ):
            try:
                self.h2.close_connection()
                self.flush()
            except h2.exceptions.ProtocolError:
                pass
        self._closed(None)
        if self.transport is not None:
            self.transport.close()

    def release_copy(self) -> None:
        """Close our descriptor only (another worker took the connection and goes on with it): no
        GOAWAY, no ``shutdown``, no hook (the caller accounts)."""
        self.on_lost = None
        self.unlend()
        if self.lend_timer is not None:
            self.lend_timer.cancel()
            self.lend_timer = None
        self.state = H2State.CLOSED
        if self.transport is not None:
            self.transport.abort()

    # -- lending (proxy.server's park / unpark) ---------------------------------------------------------
    def lend_state(self) -> int | None:
        """The descriptor of a memory file holding this idle connection's state, for its slot
        (kept in ``state_fd`` until ``unlend``); None when it cannot be lent now (TLS, a stream or a
        partial frame, bytes not yet written, draining)."""
        self.unlend()
        if self.lend_timer is not None:
            return None  # parked a moment ago: the timer lends it
        if not self.lendable:
            return None
        if not self.lend_due and self.loop is not None:
            # Just parked: most connections are used again at once, here. Lent only if it stays
            # idle LEND_AFTER: the cost of its state (and of pausing, publishing, peeking) is then
            # paid by the few that wait, not by every stream that ends.
            self.lend_timer = self.loop.call_later(LEND_AFTER, self._lend_later)
            return None
        try:
            self.state_fd = self._state_file()
        except (NotIdle, OSError):
            return None
        return self.state_fd

    @property
    def lendable(self) -> bool:
        """Idle and fit to travel: h2c, open, no stream, no partial frame, nothing left to write
        (neither in the transport nor in ``h2``: ``proxy.h2_handover.check_idle``)."""
        transport = self.transport
        if (
            not self.shareable
            or self.state is not H2State.OPEN
            or self.active
            or self.inbuf
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            return False
        try:
            check_idle(self.h2)
        except NotIdle:
            return False
        return True

    def _state_file(self) -> int:
        return to_memfd(dump(self.h2, Extra(self.opened, self.requests, self.got_settings)))

    def detach_socket(self) -> tuple[int, int]:
        """The channel's hand-over (``proxy.donor``): ``(duplicate of the socket, memory file of
        the state)``, both for the caller to send and close; our copy is closed without GOAWAY and
        no hook runs (the caller accounts). Raises ``NotIdle`` or ``OSError`` (nothing changed)."""
        transport = self.transport
        if not self.lendable or transport is None:
            raise NotIdle("not an idle h2c connection")
        state_fd = self._state_file()
        try:
            fd = socket.dup(transport.get_extra_info("socket").fileno())
        except BaseException:
            os.close(state_fd)
            raise
        transport.pause_reading()
        self.release_copy()
        return fd, state_fd

    def _lend_later(self) -> None:
        self.lend_timer = None
        if self.alive and not self.active:
            self.lend_due = True
            self.server.lend(self)

    def unlend(self) -> None:
        """Its slot is gone (taken back, or finalized): the published state goes."""
        fd, self.state_fd = self.state_fd, -1
        if fd >= 0:
            os.close(fd)

    def pause_reading(self) -> None:
        """Parked and lent: nothing is read (what arrives is another worker's if it takes it)."""
        if self.transport is not None and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def peek_ready(self) -> bool:
        """Fit for a stream: alive and, while reading is paused, nothing waiting to be read."""
        if not self.alive:
            return False
        return not self.reading_paused or self.fd < 0 or pidfd.peek(self.fd) is pidfd.Peek.READY


class H2Stream:
    """One request on an ``H2ServerConn``, as a ``proxy.stream.Stream`` sees its server connection."""

    __slots__ = (
        "conn", "detached", "ended_local", "ended_remote", "got_response_bytes", "method", "paused", "peer",
        "pending", "pending_end", "refused", "reset", "stream_id", "trailers", "unacked", "write_paused",
    )  # fmt: skip

    may_refuse = True  # the server may refuse it unprocessed (GOAWAY, REFUSED_STREAM): replayable

    def __init__(self, conn: H2ServerConn) -> None:
        self.conn = conn
        self.peer: ServerPeer | None = None
        self.method = b"GET"
        self.stream_id: int | None = None
        self.pending: list[bytes] = []  # request body bytes waiting for window
        self.pending_end: Headers | None = None  # the end (trailers), once known, until sent
        self.ended_local = False
        self.ended_remote = False
        self.reset = False
        self.refused = False
        self.got_response_bytes = False
        self.write_paused = False
        self.paused = False  # the client does not take the response now: no acknowledgement
        self.unacked = 0
        self.trailers: Headers = []
        self.detached = False

    def __repr__(self) -> str:
        return (
            f"<H2Stream {self.stream_id} on #{self.conn.id} local_end={self.ended_local}"
            f" remote_end={self.ended_remote}>"
        )

    @property
    def server(self) -> ServerRuntime:
        return self.conn.server

    @property
    def alive(self) -> bool:
        return self.conn.alive and not self.reset

    @property
    def reusable(self) -> bool:
        """The exchange ended cleanly both ways (the connection itself goes on regardless)."""
        return self.ended_local and self.ended_remote and not self.reset and self.conn.alive

    # -- from the stream (what ServerConn offers) ------------------------------------------------------
    def attach(self, peer: ServerPeer, method: bytes) -> None:
        self.peer = peer
        self.method = method

    def send_head(self, head: RequestHead, *, keep_alive: bool, add: Headers) -> None:
        conn = self.conn
        if conn.state is not H2State.OPEN or not conn.alive:
            # GOAWAY came between the choice of this connection and now: not sent, so replayable.
            self.on_reset(refused=True)
            return
        fields = request_fields(head, scheme=conn.scheme, add=add)
        end = head.body is Framing.NONE
        h = conn.h2
        try:
            sid = h.get_next_available_stream_id()
            h.send_headers(sid, fields, end_stream=end)
        except h2.exceptions.TooManyStreamsError:
            self.on_reset(refused=True)  # the server lowered its limit meanwhile: not sent, replayable
            return
        except (h2.exceptions.ProtocolError, ValueError) as exc:
            # The head cannot be sent (an invalid field, or no stream id left): the exchange fails.
            self.reset = True
            peer = self.peer
            self.peer = None
            if peer is not None:
                peer.on_server_error(ProtocolError(f"request head not sendable over HTTP/2: {exc}", 502))
            return
        self.stream_id = sid
        conn.streams[sid] = self
        self.ended_local = end
        conn.flush()

    def send_data(self, data: bytes) -> None:
        if data and not self.reset:
            self.pending.append(data)
            self.push()

    def send_end(self, trailers: Headers) -> None:
        if self.ended_local or self.reset:
            return
        self.pending_end = trailers
        self.push()

    def push(self) -> None:
        """Send what the windows allow of the pending body (and the end once it is all out)."""
        conn = self.conn
        sid = self.stream_id
        if sid is None or self.reset or conn.state is H2State.CLOSED:
            return
        h = conn.h2
        try:
            while self.pending:
                room = min(h.local_flow_control_window(sid), h.max_outbound_frame_size)
                if room <= 0:
                    break
                chunk = self.pending[0]
                if len(chunk) > room:
                    self.pending[0] = chunk[room:]
                    chunk = chunk[:room]
                else:
                    self.pending.pop(0)
                h.send_data(sid, chunk)
            if not self.pending and self.pending_end is not None and not self.ended_local:
                trailers = trailer_fields(self.pending_end)
                self.pending_end = None
                self.ended_local = True
                if trailers:
                    h.send_headers(sid, trailers, end_stream=True)
                else:
                    h.end_stream(sid)
        except h2.exceptions.StreamClosedError:
            self.pending = []  # the server closed its side (answered early): nothing more to send
        conn.flush()
        self.flow_changed()

    def flow_changed(self) -> None:
        paused = bool(self.pending) or self.conn.write_paused
        if paused != self.write_paused:
            self.write_paused = paused
            if self.peer is not None:
                self.peer.on_server_writable(not paused)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        if self.unacked:
            self._ack(self.unacked)

    def _ack(self, n: int) -> None:
        self.unacked = 0
        sid = self.stream_id
        if sid is None or self.conn.state is H2State.CLOSED:
            return
        try:
            self.conn.h2.acknowledge_received_data(n, sid)
        except h2.exceptions.StreamClosedError:
            pass
        self.conn.flush()

    # -- from the connection ------------------------------------------------------------------------
    def _events(self, events: list[Event]) -> None:
        if self.peer is not None:
            self.peer.on_server_events(events)

    def on_head(self, fields: Headers, interim: bool) -> None:
        self.got_response_bytes = True
        try:
            resp = response_head(fields, method=self.method, ended=False)
        except MessageError as exc:
            self._error(ProtocolError(str(exc), 502))
            return
        if interim:
            self._events([resp, EndOfMessage()])  # a 1xx is a message of its own for the stream
        else:
            self._events([resp])

    def on_data(self, data: bytes, flow: int) -> None:
        if self.paused:
            self.unacked += flow
        else:
            self.conn.h2.acknowledge_received_data(flow, self.stream_id or 0)
        if data:
            self._events([Data(data)])

    def on_end(self) -> None:
        self.ended_remote = True
        if not self.ended_local:
            # The server answered before the request body was all sent (an early response): the
            # rest is not wanted; the stream is closed our way too so the connection stays usable.
            self.pending = []
            self.pending_end = None
            self.reset = True
            self._cancel(h2.errors.ErrorCodes.NO_ERROR)
        self._events([EndOfMessage(self.trailers)])

    def on_reset(self, refused: bool) -> None:
        """The server reset the stream (or GOAWAY left it unprocessed: ``refused``)."""
        if self.reset:
            return
        self.reset = True
        self.refused = refused and not self.got_response_bytes
        peer = self.peer
        self.peer = None
        if peer is not None:
            peer.on_server_closed()

    def on_conn_lost(self, exc: ProtocolError | None) -> None:
        if self.reset:
            return
        self.reset = True
        peer = self.peer
        self.peer = None
        if peer is None:
            return
        if exc is not None:
            peer.on_server_error(exc)
        else:
            peer.on_server_closed()

    def _error(self, exc: ProtocolError) -> None:
        self._cancel(h2.errors.ErrorCodes.PROTOCOL_ERROR)
        peer = self.peer
        self.peer = None
        if peer is not None:
            peer.on_server_error(exc)

    def _cancel(self, code: int) -> None:
        sid = self.stream_id
        if sid is None or self.conn.state is H2State.CLOSED:
            return
        try:
            self.conn.h2.reset_stream(sid, code)
        except h2.exceptions.ProtocolError:
            pass  # already closed both ways
        self.conn.flush()

    # -- the end of the exchange (from the backend) -------------------------------------------------------
    def detach(self) -> None:
        """The exchange is over: a stream that did not end cleanly is reset (CANCEL), what the
        client did not take is acknowledged (the connection's window must not shrink), and the
        stream leaves its connection."""
        if self.detached:
            return
        self.detached = True
        self.peer = None
        if not (self.ended_local and self.ended_remote) and not self.reset:
            self.reset = True
            self._cancel(h2.errors.ErrorCodes.CANCEL)
        elif self.unacked:
            self._ack(self.unacked)
        self.pending = []
        self.conn.stream_done(self)

    # -- what an HTTP/1 connection also offers, meaningless here ---------------------------------------
    def make_tunnel(self) -> bytes:
        raise ProtocolError("101 Switching Protocols is not allowed in HTTP/2", 502)

    def tunnel_send(self, data: bytes) -> None:
        pass

    def write_eof(self) -> None:
        pass

    def close_soon(self) -> None:
        self.close()

    def close(self) -> None:
        """Give up the exchange (reset the stream); the connection goes on."""
        self.detach()
