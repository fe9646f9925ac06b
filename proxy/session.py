"""A client session: what one client connection carries from one request to the next.

HAProxy's ``struct session`` holds the connections attached to it: private ones (``http-reuse
never``, NTLM/Negotiate, ...) that no other client may use. A session keeps at most
``MAX_SESSION_SRV_CONNS`` of them idle (HAProxy's ``max-session-srv-conns``, default 5); they are
closed with the session. "First request" (SEMANTICS.md §1) is per client connection: it is true until
one request on it has completed in keep-alive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from proxy.pool import ConnKey
    from proxy.server import Conn, ServerRuntime

MAX_SESSION_SRV_CONNS: Final = 5


class Session:
    __slots__ = ("client_ip", "client_port", "conns", "requests_done", "ssl")

    def __init__(self, client_ip: str, client_port: int, ssl: bool = False) -> None:
        self.client_ip = client_ip
        self.client_port = client_port
        self.ssl = ssl  # the client connection is TLS (``ssl_fc``)
        self.requests_done = 0
        # Private idle connections attached to this session. Most sessions never hold one: an
        # empty tuple until the first, so an idle client connection carries no list.
        self.conns: list[Conn] | tuple[()] = ()

    @property
    def first_request(self) -> bool:
        return self.requests_done == 0

    def take_conn(self, srv: ServerRuntime, key: ConnKey) -> Conn | None:
        conns = self.conns
        if not conns:
            return None
        assert isinstance(conns, list)
        for i, conn in enumerate(conns):
            if conn.server is srv and conn.key == key and conn.alive:
                del conns[i]
                return conn
        return None

    def attach_conn(self, conn: Conn) -> bool:
        """Keep a private idle connection; False when the session already holds its maximum."""
        conns = self.conns
        if len(conns) >= MAX_SESSION_SRV_CONNS:
            return False
        if not isinstance(conns, list):
            conns = self.conns = []
        conn.owner = self
        conns.append(conn)
        return True

    def forget_conn(self, conn: Conn) -> None:
        """Called when an attached connection closes."""
        conns = self.conns
        if isinstance(conns, list) and conn in conns:
            conns.remove(conn)

    def close(self) -> None:
        conns, self.conns = self.conns, ()  # close() calls forget_conn: never iterate the list itself
        for conn in conns:
            conn.close()
