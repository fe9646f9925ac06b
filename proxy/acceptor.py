"""A listener inside one worker, whose accepting can be switched off and on (``maxconn``).

The listening socket is shared by every worker (``proxy.listener``); a worker serves it through an
asyncio server made on its own duplicate of the descriptor. Switching off closes that server (the
duplicate only: the shared socket stays open and the kernel keeps queueing connections in its
backlog, for the other workers or for later); switching on makes a new server on a new duplicate.
Neither drops a connection: a connection is either accepted by a worker or waits in the backlog.

The event loop's servers have no pause: closing and re-creating is the way, and it happens only when
a worker reaches or leaves its connection limit (``proxy.admission``), never per request.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from proxy.listener import BACKLOG, Listener


class Acceptor:
    __slots__ = (
        "closed", "factory", "handshake_timeout", "listener", "loop", "server", "ssl", "starting", "wanted",
    )  # fmt: skip

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: Listener,
        factory: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float | None = None,
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.factory = factory
        self.ssl = ssl_context  # a TLS listener's context (the event loop does the handshake)
        self.handshake_timeout = handshake_timeout
        self.server: asyncio.AbstractServer | None = None
        self.starting = False
        self.wanted = False
        self.closed = False

    def __repr__(self) -> str:
        state = "on" if self.server is not None else ("starting" if self.starting else "off")
        return f"<Acceptor {self.listener.frontend} :{self.listener.port} {state}>"

    @property
    def frontend(self) -> str:
        return self.listener.frontend

    def _dup(self) -> socket.socket:
        sock = self.listener.sock
        return socket.fromfd(sock.fileno(), sock.family, sock.type)

    async def start(self) -> None:
        """Accept from now on (awaited once at start-up; later ``switch`` does it)."""
        self.wanted = True
        await self._serve()

    async def _serve(self) -> None:
        if self.server is not None or self.starting or not self.wanted or self.closed:
            return
        self.starting = True
        try:
            if self.ssl is not None:
                server = await self.loop.create_server(
                    self.factory, sock=self._dup(), backlog=BACKLOG, ssl=self.ssl,
                    ssl_handshake_timeout=self.handshake_timeout,
                )  # fmt: skip
            else:
                server = await self.loop.create_server(self.factory, sock=self._dup(), backlog=BACKLOG)
        finally:
            self.starting = False
        if self.wanted and not self.closed:
            self.server = server
        else:  # switched off (or closed) while the server was being made
            server.close()

    def stop(self) -> None:
        """Accept no more (the backlog keeps what arrives)."""
        self.wanted = False
        server, self.server = self.server, None
        if server is not None:
            server.close()

    def switch(self, on: bool) -> None:
        """Called from callbacks: on (in a task, the first time it is needed) or off (at once)."""
        if self.closed:
            return
        if on and not self.wanted:
            self.wanted = True
            self.loop.create_task(self._serve())
        elif not on and self.wanted:
            self.stop()

    def close(self) -> None:
        """For good (soft stop): this worker's copy of the listening socket is closed too, so that
        once every process closed its copy the kernel refuses new connections at once."""
        self.closed = True
        self.stop()
        self.listener.sock.close()
