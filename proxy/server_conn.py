"""A connection to a server (HTTP/1.1), as an ``asyncio.Protocol``.

Life cycle (``State``): CONNECTING → ACTIVE (a stream is attached: request out, response in) →
IDLE (in this worker's pool, or attached to a client session when private) → ACTIVE … → CLOSED.
TUNNEL is terminal: after a 101 the bytes are relayed raw both ways and the connection is never
pooled. A connection is only ever reused after a response that ended cleanly in keep-alive with
nothing left over (the parser saw the exact end of the message).

While IDLE, any byte or EOF from the server means the connection is unusable: it is closed and
removed from wherever it sits (``on_idle_close`` callback), never handed to a request.

The attached stream receives parser events and transport conditions through the ``ServerPeer``
protocol; this class knows nothing of routing or pools.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from proxy.h1 import Limits, ProtocolError, engine
from proxy.message import Event

if TYPE_CHECKING:
    from proxy.pool import ConnKey, ListKind
    from proxy.server import ServerRuntime


class State(enum.Enum):
    CONNECTING = "connecting"
    ACTIVE = "active"
    IDLE = "idle"
    TUNNEL = "tunnel"
    CLOSED = "closed"


class ServerPeer(Protocol):
    """What a ``ServerConn`` tells the stream attached to it."""

    def on_server_events(self, events: list[Event]) -> None: ...
    def on_server_error(self, exc: ProtocolError) -> None: ...
    def on_server_closed(self) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def on_tunnel_eof(self) -> None: ...
    def on_server_pause_writing(self) -> None: ...
    def on_server_resume_writing(self) -> None: ...


_next_id = 0


class ServerConn(asyncio.Protocol):
    __slots__ = (
        "acct",
        "got_response_bytes",
        "id",
        "idle_since",
        "key",
        "on_lost",
        "opened",
        "owner",
        "parser",
        "peer",
        "pooled",
        "private",
        "requests",
        "server",
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
        self.parser = engine(engine_name).response_parser(limits)
        self.transport: asyncio.Transport | None = None
        self.state = State.CONNECTING
        self.peer: ServerPeer | None = None
        self.requests = 0  # requests completed on this connection
        self.idle_since = 0.0
        self.private = False
        self.owner: object | None = None  # the client session a private connection belongs to
        self.got_response_bytes = False
        self.write_paused = False
        self.pooled: ListKind | None = None  # the list it sits in, while in this worker's pool
        self.acct = 0  # proxy.server.ACCT_*: what the shared counters count it as
        self.opened = False  # counted in the server's cur_conns
        # Called once from connection_lost, whatever the state: the owner's accounting hook.
        self.on_lost: Callable[[ServerConn], None] | None = None

    def __repr__(self) -> str:
        return (
            f"<ServerConn #{self.id} {self.server.backend_name}/{self.server.name}"
            f" {self.state.value} reqs={self.requests}{' private' if self.private else ''}>"
        )

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is State.ACTIVE:
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
        elif state is State.TUNNEL:
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
            self.peer.on_server_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.peer is not None:
            self.peer.on_server_resume_writing()

    # -- used by the stream and the pool ----------------------------------------------------
    def attach(self, peer: ServerPeer, method: bytes) -> None:
        """Start a request on this connection; its response will be parsed for ``method``."""
        self.peer = peer
        self.state = State.ACTIVE
        self.got_response_bytes = False
        self.parser.expect(method)
        if self.transport is not None:
            self.transport.resume_reading()

    def make_idle(self) -> None:
        """The response ended cleanly; park the connection (caller puts it in a pool/session)."""
        self.peer = None
        self.state = State.IDLE
        self.requests += 1
        self.idle_since = time.monotonic()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()  # an idle connection must notice the server closing it

    def make_tunnel(self) -> bytes:
        """Switch to a raw relay after a 101; returns the bytes that followed the 101 head."""
        self.state = State.TUNNEL
        return self.parser.detach()

    def write(self, data: bytes) -> None:
        if self.transport is not None and data:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
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

        The owner's accounting hook runs here, synchronously: the descriptor is closed by
        ``abort()`` at once, so the shared counters must not go on counting the connection until
        the loop gets round to ``connection_lost``."""
        self.peer = None
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost(self)
        if self.transport is not None:
            self.transport.abort()
        elif self.state is not State.CLOSED:
            self.state = State.CLOSED

    @property
    def alive(self) -> bool:
        return (
            self.state is not State.CLOSED and self.transport is not None and not self.transport.is_closing()
        )
