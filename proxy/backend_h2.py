"""The HTTP/2 half of ``proxy.backend.Backend`` (a mixin): streams of this worker's HTTP/2
connections, and HAProxy's *available* list.

A request gets one stream of an HTTP/2 connection (``_use``). A connection carrying streams with
room for more is on the available list of its server (``avail``), where ``Backend._local`` looks
before the idle lists (SEMANTICS §1 step 2, unless ``http-reuse never``): in ``safe`` mode only the
client session's own connection is taken there (its head-of-line risk is not imposed on other
clients); ``always`` offers a connection from its first stream on, and a connect that may bring
HTTP/2 is announced (``opening``) so that this worker's other requests wait for it (``_join``);
``aggressive`` offers a new connection once a stream ended on it — HAProxy's ``connect_server``
rules. When its last stream ends (``_finish_stream``) the connection is kept in the safe list by
the same keep-on-release rule as an HTTP/1 one (HTTP/2 counts as safe), or closed (retiring:
GOAWAY, ``max-reuse``; soft stop). ``maxconn`` slots stay per request, so per stream: they are
``Backend``'s business. Accounting moves go through ``ServerRuntime.move`` only.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, Final, Protocol

from mypy_extensions import mypyc_attr

from proxy.config.model import Global, ReuseMode
from proxy.pool import ConnKey, ListKind, should_keep
from proxy.server import Acct, ServerRuntime
from proxy.server_conn import ServerConn
from proxy.server_h2 import H2ServerConn, H2Stream
from proxy.shm import R_REUSES

if TYPE_CHECKING:
    from proxy.donor import WorkerLink
    from proxy.session import Session


_monotonic: Final = time.monotonic  # a C static when compiled (no module attribute lookup)
# What a stream holds as its server connection: an HTTP/1 connection, or one stream of an HTTP/2 one.
ServerLink = ServerConn | H2Stream
AnyConn = ServerConn | H2ServerConn
_ALWAYS_LISTS: Final = (ListKind.SAFE, ListKind.IDLE)  # http-reuse always: the safe list, then the idle one


class _Acq(Protocol):
    """What this half needs of ``proxy.backend.Acquisition``."""

    server: ServerRuntime
    key: ConnKey
    session: Session
    reused: bool
    t_connected: float


@mypyc_attr(allow_interpreted_subclasses=True)  # tests' fakes subclass it
class H2Pooling:
    """Mixin of ``Backend``; its slots are the HTTP/2 bookkeeping (the rest is ``Backend``'s)."""

    __slots__ = ("avail", "opening")
    # this worker's HTTP/2 connections with streams in use and room for more, per server; the
    # connects in flight that may bring HTTP/2 (``always``: others wait for them)
    avail: dict[ServerRuntime, list[H2ServerConn]]
    opening: dict[tuple[ServerRuntime, ConnKey], asyncio.Future[None]]
    # Owned and set by Backend:
    mode: ReuseMode
    glob: Global
    link: WorkerLink
    loop: asyncio.AbstractEventLoop

    def _use(self, acq: _Acq, conn: AnyConn, *, new: bool = False) -> ServerLink:
        """What the request's stream holds: the HTTP/1 connection itself, or a new stream of the
        HTTP/2 connection, which then offers its remaining streams to others — at once, except a
        ``new`` connection in ``aggressive`` mode, offered only once a stream ended on it (as in
        HAProxy, where only ``always`` puts a new connection on the available list)."""
        if isinstance(conn, ServerConn):
            return conn
        link = conn.open_stream()
        if not (new and self.mode is ReuseMode.AGGRESSIVE):
            self._offer(acq.server, conn, acq.session)
        return link

    def _offer(self, srv: ServerRuntime, conn: H2ServerConn, session: Session | None) -> None:
        """Put an HTTP/2 connection carrying streams on the available list while it has room.
        Never for a private one (``http-reuse never``, the session's own); in ``safe`` mode it
        stays with the client session whose streams it carries (HAProxy: its head-of-line risk
        is not imposed on other clients)."""
        if conn.private or self.mode is ReuseMode.NEVER:
            return
        if self.mode is ReuseMode.SAFE and conn.session is None:
            conn.session = session
        if not conn.available and conn.free_streams > 0:
            conn.available = True
            self.avail.setdefault(srv, []).append(conn)

    def _available(self, acq: _Acq) -> H2ServerConn | None:
        """An HTTP/2 connection of this worker, of the request's key, with a free stream."""
        if self.mode is ReuseMode.NEVER:
            return None
        conns = self.avail.get(acq.server)
        if not conns:
            return None
        for conn in list(conns):
            if not conn.alive or conn.free_streams <= 0 or conn.private or not conn.active:
                conns.remove(conn)  # full, retiring, or closed: off the list until a stream ends
                conn.available = False
                continue
            if conn.key != acq.key:
                continue
            if self.mode is ReuseMode.SAFE and conn.session is not acq.session:
                continue
            return conn
        return None

    async def _join(self, acq: _Acq) -> ServerLink | None:
        """Before connecting: an HTTP/2 connection that became available since ``acquire_now``
        looked; and in ``always``, a connect of this worker to the same key in flight, which may
        bring one: wait for it rather than open another (HAProxy puts a new HTTP/2 connection on
        the available list at once in ``always``). None when nothing has a free stream."""
        waited = False
        if self.mode is ReuseMode.ALWAYS:
            pending = self.opening.get((acq.server, acq.key))
            if pending is not None:
                waited = True
                await asyncio.shield(pending)
        conn: AnyConn | None = self._available(acq)
        if conn is None and waited:
            # The connection waited for may already have carried its first stream to the end and
            # gone idle (a fast server answers before the waiters run): it is on this worker's
            # idle lists now (an HTTP/2 one on the safe list), not on the available list.
            conn = acq.server.take_idle(acq.key, _ALWAYS_LISTS)  # type: ignore[assignment]
        if conn is None:
            return None
        acq.server.row.add(R_REUSES)
        acq.reused = True
        acq.t_connected = _monotonic()
        return self._use(acq, conn)

    async def _settled(self, conn: H2ServerConn, sock: socket.socket, deadline: float) -> None:
        """Wait for the server's SETTINGS before any stream counts on its limit (the requests
        waiting in ``_join`` take streams at once). On failure the connection is closed (its
        transport owns the descriptor now: ``sock`` lets go of it)."""
        try:
            await conn.ready(max(0.001, deadline - self.loop.time()))
        except BaseException:
            sock.detach()
            conn.close()
            raise

    def _h2(self, srv: ServerRuntime, key: ConnKey, scheme: bytes) -> H2ServerConn:
        g = self.glob
        return H2ServerConn(
            srv, key, scheme=scheme, max_streams=g.h2_be_max_concurrent_streams,
            window=g.h2_be_initial_window_size, max_reuse=srv.max_reuse,
        )  # fmt: skip

    def _finish_stream(self, acq: _Acq, st: H2Stream) -> None:
        """An HTTP/2 stream ended (reset unless it ended cleanly): the connection goes on carrying
        its other streams, or, with none left, is kept like an HTTP/1 one (counted safe) or closed
        (retiring: GOAWAY, max-reuse; soft stop)."""
        st.detach()
        conn = st.conn
        srv = conn.server
        if not conn.alive:
            return  # closed: its hook accounted for it
        if conn.active:
            if not conn.retiring:
                self._offer(srv, conn, acq.session)
            return
        if conn.available:
            conn.available = False
            self.avail[srv].remove(conn)
        if conn.retiring or self.link.stopping:
            conn.close()
            return
        conn.make_idle()
        if conn.private:
            if not acq.session.attach_conn(conn):
                conn.close()
            return
        row = srv.row
        idle_total = row.idle
        keep = should_keep(
            private=False,
            purge_delay=srv.pool_purge_delay,
            server_usable=srv.usable,
            mode=self.mode,
            pool_max_conn=srv.pool_max_conn,
            idle_total=idle_total,
            worker_has_idle_of_kind=srv.pool.holds_for(ListKind.SAFE),
            used=row.used,
            idle=idle_total,
            est_need=row.est_need,
            pool_low_conn=srv.pool_low_conn,
        )
        if not keep or not srv.move(conn, Acct.SAFE, srv.pool_max_conn):  # HTTP/2 counts as safe
            conn.close()
            return
        srv.park(conn, ListKind.SAFE)
