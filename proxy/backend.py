"""A backend inside one worker: server choice, getting a server connection, and giving it back.

This is the thin I/O layer that carries out the pure decisions of ``proxy.pool`` (which list to take
from, keep or close on release, how many to purge) and ``proxy.balance`` (which server):

- ``reuse()`` looks for a connection in the order of SEMANTICS.md §1: the client session's own
  (private) connections, then this worker's idle lists in ``reuse_order(mode, first)``. (Issue 3 adds
  stealing from other workers between the idle lists and a new connect.)
- ``connect()`` opens a new connection (``timeout connect``, ``source``/``usesrc clientip``).
- ``release()`` applies the keep-on-release rule (``should_keep``) once a response ended cleanly.
- Accounting: a connection counts in ``used`` from the connect attempt until it enters the pool
  or closes, and in ``idle`` while pooled. ``ServerConn.on_lost`` (fired once, from
  ``connection_lost``) is the single place where a closed connection is uncounted.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from proxy.balance import make_balancer
from proxy.config.model import Proxy, ReuseMode
from proxy.h1 import Limits
from proxy.pool import (
    ConnKey,
    ListKind,
    conn_key,
    kind_after_release,
    purge_plan,
    reuse_order,
    should_keep,
    worker_share,
)
from proxy.server import ServerRuntime
from proxy.server_conn import ServerConn, State

if TYPE_CHECKING:
    from proxy.session import Session

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)


class Backend:
    __slots__ = ("balancer", "cfg", "engine_name", "limits", "loop", "mode", "name", "servers")

    def __init__(self, cfg: Proxy, engine_name: str, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.mode = cfg.http_reuse
        self.engine_name = engine_name
        self.limits = limits
        self.loop = loop
        self.servers = [ServerRuntime(cfg.name, i, s) for i, s in enumerate(cfg.servers)]
        self.balancer = make_balancer(cfg.balance, cfg.servers)

    def __repr__(self) -> str:
        return f"<Backend {self.name} servers={len(self.servers)} reuse={self.mode.value}>"

    # -- server choice ----------------------------------------------------------------------
    def pick_server(self, client_ip: str) -> ServerRuntime | None:
        servers = self.servers
        idx = self.balancer.pick(
            client_ip=client_ip,
            usable=lambda i: servers[i].usable,
            load=lambda i: servers[i].counters.used,
        )
        return None if idx is None else servers[idx]

    def key_for(self, srv: ServerRuntime, client_ip: str) -> ConnKey:
        """The connection key: server and destination, plus the source with usesrc clientip."""
        cfg = srv.cfg
        if not cfg.usesrc_clientip:
            key = srv.static_key
            if key is None:
                key = srv.static_key = conn_key(
                    server=f"{self.name}/{srv.name}", source=None, sni=None, destination=(cfg.host, cfg.port)
                )
            return key
        return conn_key(
            server=f"{self.name}/{srv.name}",
            source=client_ip if cfg.usesrc_clientip else None,
            sni=None,
            destination=(cfg.host, cfg.port),
        )

    # -- getting a connection ---------------------------------------------------------------
    def reuse(self, srv: ServerRuntime, key: ConnKey, first: bool, session: Session) -> ServerConn | None:
        """An idle connection this request may use, per SEMANTICS.md §1, or None (connect)."""
        conn = session.take_conn(srv, key)
        if conn is not None:
            srv.counters.reuses += 1  # private: not counted in used (HAProxy: no srv_use_conn)
            return conn
        if self.mode is ReuseMode.NEVER:
            return None
        order = reuse_order(self.mode, first)
        if not order:
            return None
        conn = srv.pool.take(key, order)
        while conn is not None and not conn.alive:
            # Died while idle but its connection_lost has not run yet: forget it and look again.
            self._unpool(conn)
            conn = srv.pool.take(key, order)
        if conn is None:
            return None
        self._unpool(conn)
        srv.counters.conn_used()
        srv.counters.reuses += 1
        return conn

    def _unpool(self, conn: ServerConn) -> None:
        c = conn.server.counters
        if conn.pooled is ListKind.SAFE:
            c.safe -= 1
        if conn.pooled is not None:
            c.idle -= 1
        conn.pooled = None

    async def connect(self, srv: ServerRuntime, key: ConnKey, client_ip: str) -> ServerConn:
        """Open a new connection; raises OSError or TimeoutError (the caller answers 503)."""
        cfg = srv.cfg
        conn = ServerConn(srv, key, self.engine_name, self.limits)
        private = conn.private = self.mode is ReuseMode.NEVER
        counters = srv.counters
        if not private:
            counters.conn_used()
        counters.connects += 1
        conn.on_lost = self._on_lost
        sock = None
        try:
            source = client_ip if cfg.usesrc_clientip else cfg.source
            family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            if source:
                if cfg.usesrc_clientip:
                    try:
                        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                    except OSError:
                        pass  # not root or no TPROXY: works for local client addresses only
                host, _, port = source.rpartition(":") if source.count(":") == 1 else (source, "", "0")
                sock.bind((host, int(port or 0)))
            timeout = self.cfg.timeouts.connect or 5.0
            await asyncio.wait_for(self.loop.sock_connect(sock, (cfg.host, cfg.port)), timeout)
            await self.loop.create_connection(lambda: conn, sock=sock)
        except BaseException:
            if not private:
                counters.used -= 1
            counters.connect_errors += 1
            conn.on_lost = None
            if conn.transport is not None:
                conn.transport.abort()
            elif sock is not None:
                sock.close()
            raise
        conn.state = State.IDLE  # connected, not yet attached
        return conn

    # -- giving it back -----------------------------------------------------------------------
    def release(self, conn: ServerConn, session: Session) -> None:
        """The response ended cleanly in keep-alive: keep the connection or close it."""
        conn.make_idle()
        srv = conn.server
        if conn.private:
            if not session.attach_conn(conn):
                conn.close()
            return
        c = srv.counters
        kind = kind_after_release(conn.requests)
        pool = srv.pool
        keep = should_keep(
            private=False,
            purge_delay=srv.cfg.pool_purge_delay,
            server_usable=srv.usable,
            mode=self.mode,
            pool_max_conn=srv.cfg.pool_max_conn,
            idle_total=c.idle,
            worker_has_idle_of_kind=pool.holds_for(kind),
            used=c.used,
            idle=c.idle,
            est_need=c.est_need,
            pool_low_conn=srv.cfg.pool_low_conn,
        )
        if not keep:
            conn.close()
            return
        c.used -= 1
        c.idle += 1
        if kind is ListKind.SAFE:
            c.safe += 1
        conn.pooled = kind
        pool.add(conn, kind)
        self._schedule_purge(srv)

    def make_private(self, conn: ServerConn) -> None:
        """The connection now belongs to its client session (NTLM/Negotiate): uncount it."""
        if not conn.private:
            conn.private = True
            conn.server.counters.used -= 1

    def discard(self, conn: ServerConn) -> None:
        """Close a connection that must not be reused (error, close framing, tunnel end)."""
        conn.close()

    def _on_lost(self, conn: ServerConn) -> None:
        srv = conn.server
        if conn.pooled is not None:
            srv.pool.remove(conn)
            self._unpool(conn)
        elif not conn.private:
            srv.counters.used -= 1
        owner = conn.owner
        if owner is not None:
            owner.forget_conn(conn)  # type: ignore[attr-defined]

    # -- purge --------------------------------------------------------------------------------
    def _schedule_purge(self, srv: ServerRuntime) -> None:
        if srv.purge_handle is None and srv.cfg.pool_purge_delay > 0:
            srv.purge_handle = self.loop.call_later(srv.cfg.pool_purge_delay, self._purge, srv)

    def _purge(self, srv: ServerRuntime) -> None:
        """Every pool-purge-delay: close half the excess idle connections, oldest first (§3)."""
        srv.purge_handle = None
        c = srv.counters
        plan = purge_plan(used=c.used, idle=c.idle, max_used=c.max_used, est_need=c.est_need)
        c.est_need = plan.est_need
        c.max_used = plan.max_used
        if plan.to_close > 0:
            share = worker_share(plan.to_close, len(srv.pool), c.idle)
            for conn in srv.pool.oldest(share):
                c.purged += 1
                self._drop_idle(conn)
        if c.idle > 0 or c.used > 0:
            self._schedule_purge(srv)

    def _drop_idle(self, conn: ServerConn) -> None:
        """Take a pooled connection out of the pool and the counts now, then close it."""
        conn.server.pool.remove(conn)
        self._unpool(conn)
        conn.on_lost = None
        conn.close()

    def close_idle(self) -> None:
        """Soft stop: close every idle connection of this worker."""
        for srv in self.servers:
            for conn in srv.pool.oldest(len(srv.pool)):
                self._drop_idle(conn)
