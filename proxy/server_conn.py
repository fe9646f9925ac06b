"""A connection to a server speaking HTTP/1.1, as an ``asyncio.Protocol`` (the server-side mux).

It owns the wire in both directions: it serialises the request a stream hands it (``send_head``,
``send_data``, ``send_end``, framed as the request head says) and parses the response into neutral
events for the attached stream (``proxy.sides.ServerPeer``). It knows nothing of routing, pools or
counters: ``acct`` is written only by ``proxy.server.ServerRuntime.move``, and ``on_lost`` is the
owner's hook, fired exactly once when the connection closes (synchronously from ``close()``, or from
``connection_lost`` when the peer closed it).

Life cycle (``State``): CONNECTING → IDLE (connected, not attached) → ACTIVE (a stream is attached:
request out, response in) → IDLE (in a pool, or attached to a client session when private) → ACTIVE
… → CLOSED. TUNNEL is terminal: after a 101 the bytes are relayed raw both ways and the connection is
never pooled. A connection is only ever reused after a response that ended cleanly in keep-alive with
nothing left over (the parser saw the exact end of the message).

While IDLE, any byte or EOF from the server means the connection is unusable: it is closed (and its
owner's hook takes it out of wherever it sits), never handed to a request. A pooled connection has
reading paused (another worker may take it: nothing of its must be read here), so for it the same
is learnt with ``peek_ready`` (a non-blocking ``MSG_PEEK``, which consumes nothing).

Closing: ``close`` is an intentional close (``shutdown`` then close: another process may briefly
hold a copy, and the server must see the close now); ``release_copy`` and ``detach_socket`` drop
only our descriptor, for a connection another worker now holds.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol, cast

from proxy import pidfd
from proxy.h1 import Limits, ProtocolError, engine, writer
from proxy.h1.strict import ResponseReader
from proxy.message import Framing, Headers, RequestHead
from proxy.server import Acct
from proxy.slots import socket_ports

if TYPE_CHECKING:
    from proxy.pool import ConnKey
    from proxy.server import ServerRuntime
    from proxy.sides import ServerPeer

_peek_code = pidfd.peek_code  # C where built: a worker of several peeks on every reuse
_monotonic: Final = time.monotonic  # a C static when compiled (no module attribute lookup)
class State(enum.Enum):
    CONNECTING = "connecting"
    ACTIVE = "active"
    IDLE = "idle"
    TUNNEL = "tunnel"
    CLOSED = "closed"


_next_id = 0


class ServerConn(asyncio.Protocol):
    __slots__ = (
        "acct",
        "fd",
        "got_response_bytes",
        "id",
        "idle_since",
        "key",
        "on_lost",
        "owner",
        "parser",
        "peer",
        "ports",
        "reading_paused",
        "req_framing",
        "requests",
        "server",
        "shareable",
        "slot",
        "slot_tag",
        "state",
        "transport",
        "write_paused",
    )

    def __init__(self, server: ServerRuntime, key: ConnKey, engine_name: str, limits: Limits) -> None:
        global _next_id
        _next_id += 1
        self.id = _next_id
        self.server = server
        self.key = key
        # Every engine's parser is a ``strict.ResponseReader``: typed so, its calls are native ones.
        self.parser = cast(ResponseReader, engine(engine_name).response_parser(limits))
        self.transport: asyncio.Transport | None = None
        self.state = _ST_CONNECTING
        self.peer: ServerPeer | None = None
        self.requests = 0  # requests completed on this connection
        self.idle_since = 0.0
        self.owner: object | None = None  # the client session a private connection belongs to
        self.got_response_bytes = False
        self.write_paused = False
        # Whether we paused the transport's reading (backpressure, lending): resuming a transport
        # that reads anyway is a method call through the loop's transport, twice a request.
        self.reading_paused = False
        self.req_framing = _FR_NONE  # how the body of the request being sent is framed
        self.acct = _AC_NONE  # written by ServerRuntime.move only
        self.fd = -1  # our descriptor's number once connected (-1: unknown, e.g. a fake transport)
        self.ports = 0  # slots.make_ports(local, peer), for a thief to verify its duplicate
        self.slot = -1  # the slot this connection is published in (ServerRuntime.park), -1: none
        self.slot_tag = 0
        self.shareable = True  # another worker may take it while idle (False over TLS)
        # Called once when the connection closes, whatever the state: the owner's accounting hook.
        self.on_lost: Callable[[ServerConn], None] | None = None

    # A request on HTTP/1 is never refused unprocessed in a way the server says (HTTP/2's GOAWAY
    # and REFUSED_STREAM are): a replay after a close depends on reuse only (proxy.stream).
    may_refuse = False
    refused = False

    def __repr__(self) -> str:
        return (
            f"<ServerConn #{self.id} {self.server.backend_name}/{self.server.name}"
            f" {self.state.value} reqs={self.requests} acct={self.acct.name}>"
        )

    @property
    def private(self) -> bool:
        return self.acct is _AC_PRIVATE

    # -- asyncio.Protocol -------------------------------------------------------------------
    def note_socket(self, sock: socket.socket) -> None:
        """Record the descriptor (the transport keeps it: a thief records it) and, unless known
        already, the ports (a socket reset already has none: the connection fails anyway)."""
        self.fd = sock.fileno()
        if not self.ports:
            ports = socket_ports(sock)
            if ports is not None:
                self.ports = ports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is _ST_ACTIVE:
            self.got_response_bytes = True
            try:
                events = self.parser.feed(data)
            except ProtocolError as exc:
                peer = self.peer
                self.close()
                if peer is not None:
                    peer.on_server_error(exc)
                return
            if events and self.peer is not None:
                self.peer.on_server_events(events)
        elif state is _ST_TUNNEL:
            if self.peer is not None:
                self.peer.on_tunnel_data(data)
        else:
            # Bytes on an idle connection: the server is out of sync or closing. Never reuse it.
            self.close()

    def eof_received(self) -> bool | None:
        if self.state is State.ACTIVE:
            try:
                events = self.parser.feed_eof()
            except ProtocolError as exc:
                peer = self.peer
                self.close()
                if peer is not None:
                    if self.got_response_bytes:
                        peer.on_server_error(exc)
                    else:
                        peer.on_server_closed()
                return None
            if events and self.peer is not None:
                self.peer.on_server_events(events)
                return None
        if self.state is State.TUNNEL and self.peer is not None:
            self.peer.on_tunnel_eof()  # half-close: forwarded, the other direction goes on
            return True
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        prev = self.state
        self.state = State.CLOSED
        peer = self.peer
        self.peer = None
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(self)
        if peer is not None and prev in (State.ACTIVE, State.TUNNEL):
            peer.on_server_closed()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.peer is not None:
            self.peer.on_server_writable(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.peer is not None:
            self.peer.on_server_writable(True)

    # -- the request, from the attached stream ------------------------------------------------
    def attach(self, peer: ServerPeer, method: bytes) -> None:
        """Start a request on this connection; its response will be parsed for ``method``."""
        self.peer = peer
        self.state = _ST_ACTIVE
        self.got_response_bytes = False
        self.parser.expect(method)
        if self.reading_paused:
            self.resume_reading()

    def send_head(self, head: RequestHead, *, keep_alive: bool, add: Headers) -> None:
        """Serialise the request head (its body keeps the framing the client used)."""
        self.req_framing = head.body
        wire = head.wire
        if wire is not None and not add:
            # The client's head relayed as it came (the parser vouched for it: ``RequestHead.wire``)
            # instead of serialised again; only our Connection header may have to be added.
            self._write(wire if keep_alive else wire[:-2] + b"Connection: close\r\n\r\n")
            return
        self._write(
            writer.request_head(
                head, body=head.body, content_length=head.content_length, keep_alive=keep_alive, add=add
            )
        )

    def send_data(self, data: bytes) -> None:
        self._write(writer.data(self.req_framing, data))

    def send_end(self, trailers: Headers) -> None:
        if self.req_framing is _FR_CHUNKED:  # only chunks have an end to write (writer.end: b"" else)
            self._write(writer.end(_FR_CHUNKED, trailers))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and data:
            self.transport.write(data)

    # -- after the response -------------------------------------------------------------------
    def make_idle(self) -> None:
        """The response ended cleanly; park the connection (the caller puts it in a pool/session)."""
        self.peer = None
        self.state = _ST_IDLE
        self.requests += 1
        self.idle_since = _monotonic()
        if self.reading_paused:
            self.resume_reading()  # an idle connection must notice the server closing it

    @property
    def reusable(self) -> bool:
        """Whether the exchange that just ended left the connection fit for another request."""
        transport = self.transport  # ``alive``, inline: once a request
        return (
            self.state is not _ST_CLOSED
            and transport is not None
            and not transport.is_closing()
            and not self.write_paused
            and not self.parser.poisoned
        )

    def make_tunnel(self) -> bytes:
        """Switch to a raw relay after a 101; returns the bytes that followed the 101 head."""
        self.state = State.TUNNEL
        return self.parser.detach()

    def tunnel_send(self, data: bytes) -> None:
        self._write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def close_soon(self) -> None:
        """Close after flushing what is already written (end of a tunnel)."""
        self.peer = None
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """Close now (abort: nothing of ours is pending that the server should still get).

        ``shutdown`` first: another process may briefly hold a copy of the descriptor (a thief that
        gave up, a datagram in flight), and the server must see the close now. The owner's hook runs
        here, synchronously: the descriptor is closed by ``abort()`` at once, so the shared counters
        must not go on counting the connection until the loop gets round to ``connection_lost``."""
        self.peer = None
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(self)
        transport = self.transport
        if transport is not None:
            if self.fd >= 0 and not transport.is_closing():
                pidfd.shutdown(self.fd)
            transport.abort()
        elif self.state is not State.CLOSED:
            self.state = State.CLOSED

    def release_copy(self) -> None:
        """Close our descriptor only: no ``shutdown`` (another worker holds the connection and goes
        on using it), no hook (the caller accounts)."""
        self.on_lost = None
        self.peer = None
        self.state = State.CLOSED
        if self.transport is not None:
            self.transport.abort()

    def peek_ready(self) -> bool:
        """Nothing to read and not closed by the server (``MSG_PEEK``: nothing is consumed)."""
        return self.fd < 0 or _peek_code(self.fd) == 0  # (pidfd.peek, without the enum)

    def lend_state(self) -> int | None:
        """Lending: an HTTP/1 connection is its socket alone (``proxy.server.Conn``)."""
        return -1

    def unlend(self) -> None:
        """Lending: nothing was made beside the socket."""

    def detach_socket(self) -> int:
        """Stop using the connection without closing the socket: returns a duplicate of its
        descriptor (for another worker) and drops ours. No hook runs; the caller accounts."""
        transport = self.transport
        if transport is None:
            raise OSError("not connected")
        sock = transport.get_extra_info("socket")
        self.reading_paused = True
        transport.pause_reading()
        fd = socket.dup(sock.fileno())
        self.on_lost = None
        self.peer = None
        self.state = State.CLOSED
        transport.abort()  # closes our descriptor only: the duplicate keeps the socket open
        return fd

    @property
    def alive(self) -> bool:
        return (
            self.state is not _ST_CLOSED and self.transport is not None and not self.transport.is_closing()
        )


class Adoptable(Protocol):
    """What ``wrap_socket`` needs of a server connection (``ServerConn``, ``H2ServerConn``)."""

    transport: asyncio.Transport | None

    def note_socket(self, sock: socket.socket) -> None:
        """Record the socket's descriptor and ports before it is wrapped (a slot records them)."""


async def wrap_socket(loop: asyncio.AbstractEventLoop, conn: Adoptable, sock: socket.socket) -> None:
    """Wrap a connected socket (a new connection, or one received from another worker) into
    ``conn``'s transport. On failure the socket is closed and the exception propagates."""
    try:
        sock.setblocking(False)
        conn.note_socket(sock)
        await loop.create_connection(lambda: cast(asyncio.Protocol, conn), sock=sock)
    except BaseException:
        if conn.transport is not None:
            conn.transport.abort()
        else:
            sock.close()
        raise


async def adopt_socket(loop: asyncio.AbstractEventLoop, conn: ServerConn, sock: socket.socket) -> None:
    """``wrap_socket`` for an HTTP/1 connection, then idle (connected, not yet attached)."""
    await wrap_socket(loop, conn, sock)
    conn.state = State.IDLE


# The enum members the per-request functions above use, as module constants: on Python 3.11
# a member lookup (``Phase.IDLE``) costs several times a global's, and a request makes dozens.
_AC_NONE: Final = Acct.NONE
_AC_PRIVATE: Final = Acct.PRIVATE
_FR_NONE: Final = Framing.NONE
_ST_ACTIVE: Final = State.ACTIVE
_ST_CLOSED: Final = State.CLOSED
_ST_CONNECTING: Final = State.CONNECTING
_ST_IDLE: Final = State.IDLE
_ST_TUNNEL: Final = State.TUNNEL
_FR_CHUNKED: Final = Framing.CHUNKED
