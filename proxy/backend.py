"""A backend inside one worker: server choice, getting a server connection, and giving it back.

This is the thin I/O layer that carries out the pure decisions of ``proxy.pool`` (which list to take
from, keep or close on release, whom to steal from, this worker's share of a purge) and
``proxy.balance`` (which server), over the server-wide numbers of the shared table:

- ``reuse()``: the client session's own (private) connections, then this worker's idle lists in
  ``reuse_order(mode, first)`` (SEMANTICS.md §1);
- ``steal()``: if nothing fits here and ``may_steal(idle_total, pool-low-conn)``, ask another worker
  for an idle connection of the same key (``proxy.takeover``), victims in rotating order;
- ``connect()``: open a new connection (``timeout connect``, ``source``/``usesrc clientip``); with
  ``strict-maxconn`` only when the server-wide connection count stays within ``maxconn``, else an
  idle connection somewhere is stolen or closed first;
- ``release()``: the keep-on-release rule (``should_keep``) once a response ended cleanly.

Accounting: see ``proxy.server`` (``ServerConn.acct``, ``opened``). ``ServerConn.on_lost`` — fired
once, from ``connection_lost`` — is the single place where a closed connection is uncounted.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.balance import make_balancer
from proxy.config.model import Proxy, ReuseMode
from proxy.h1 import Limits
from proxy.pool import (
    ConnKey,
    ListKind,
    conn_key,
    kind_after_release,
    may_steal,
    reuse_order,
    should_keep,
    steal_order,
    worker_share,
)
from proxy.server import ACCT_IDLE, ACCT_NONE, ACCT_PRIVATE, ACCT_USED, ServerRuntime
from proxy.server_conn import ServerConn, State
from proxy.shm import R_CONNECT_ERRORS, R_CONNECTS, R_PURGED, R_REUSES, R_TAKEOVERS_ASKED, R_TAKEOVERS_FAILED

if TYPE_CHECKING:
    from proxy.session import Session
    from proxy.takeover import Channel, Handed

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
TAKEOVER_DEADLINE = 0.005  # seconds a thief waits for a victim before connecting itself
STRICT_WAIT = 0.002  # strict-maxconn: pause between two tries to find room for a connection

# The order of lists a thief asks for travels as one byte.
ORDERS: tuple[tuple[ListKind, ...], ...] = (
    (ListKind.IDLE, ListKind.SAFE),
    (ListKind.SAFE,),
    (ListKind.SAFE, ListKind.IDLE),
)


def key_id(key: ConnKey) -> int:
    """A stable 63-bit identity of a connection key, the same in every worker."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class WorkerLink:
    """What a backend needs from its worker: identity, the channel and the key registry."""

    def __init__(self, slot: int, nworkers: int, loop: asyncio.AbstractEventLoop) -> None:
        self.slot = slot
        self.nworkers = nworkers
        self.loop = loop
        self.channel: Channel | None = None
        self.keys: dict[int, ConnKey] = {}  # key_id -> key, for the keys of this worker's connections
        self.shared = True  # tune.idle-pool.shared: may this worker steal from the others
        self.late: Callable[[Handed], None] | None = None  # where a connection for another server goes
        self.stopping = False  # soft stop: nothing is pooled any more
        self.tasks: set[asyncio.Task[None]] = set()  # background adoptions, referenced until done


class Backend:
    __slots__ = (
        "balancer",
        "cfg",
        "engine_name",
        "limits",
        "link",
        "loop",
        "mode",
        "name",
        "next_victim",
        "servers",
    )

    def __init__(
        self,
        cfg: Proxy,
        servers: list[ServerRuntime],
        engine_name: str,
        limits: Limits,
        link: WorkerLink,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.mode = cfg.http_reuse
        self.engine_name = engine_name
        self.limits = limits
        self.link = link
        self.loop = link.loop
        self.servers = servers
        self.balancer = make_balancer(cfg.balance, cfg.servers)
        self.next_victim = 0

    def __repr__(self) -> str:
        return f"<Backend {self.name} servers={len(self.servers)} reuse={self.mode.value}>"

    # -- server choice ----------------------------------------------------------------------
    def pick_server(self, client_ip: str) -> ServerRuntime | None:
        servers = self.servers
        idx = self.balancer.pick(
            client_ip=client_ip,
            usable=lambda i: servers[i].usable,
            load=lambda i: servers[i].row.served,
        )
        return None if idx is None else servers[idx]

    def key_for(self, srv: ServerRuntime, client_ip: str) -> ConnKey:
        """The connection key: server and destination, plus the source with usesrc clientip."""
        cfg = srv.cfg
        if not cfg.usesrc_clientip:
            key = srv.static_key
            if key is None:
                key = srv.static_key = self._register(
                    conn_key(server=f"{self.name}/{srv.name}", destination=(cfg.host, cfg.port))
                )
            return key
        return self._register(
            conn_key(server=f"{self.name}/{srv.name}", source=client_ip, destination=(cfg.host, cfg.port))
        )

    def _register(self, key: ConnKey) -> ConnKey:
        keys = self.link.keys
        kid = key_id(key)
        if kid not in keys:
            keys[kid] = key
        return key

    # -- getting a connection ---------------------------------------------------------------
    def reuse(self, srv: ServerRuntime, key: ConnKey, first: bool, session: Session) -> ServerConn | None:
        """An idle connection of this worker this request may use (SEMANTICS.md §1), or None."""
        conn = session.take_conn(srv, key)
        if conn is not None:
            srv.row.add(R_REUSES)
            return conn
        if self.mode is ReuseMode.NEVER:
            return None
        order = reuse_order(self.mode, first)
        if not order:
            return None
        while True:
            got = srv.pool.take_with_kind(key, order)
            if got is None:
                return None
            conn, kind = got
            conn.pooled = None
            srv.idle_reused(kind is ListKind.SAFE)
            conn.acct = ACCT_USED
            if conn.alive:
                srv.row.add(R_REUSES)
                return conn
            conn.close()  # died while idle, its connection_lost not run yet: uncounted as used there

    def may_steal(self, srv: ServerRuntime, first: bool) -> bool:
        if self.mode is ReuseMode.NEVER or not self.link.shared or self.link.nworkers < 2:
            return False
        if not reuse_order(self.mode, first):
            return False
        idle_total = srv.row.idle
        return idle_total > len(srv.pool) and may_steal(idle_total, srv.cfg.pool_low_conn)

    async def steal(self, srv: ServerRuntime, key: ConnKey, first: bool) -> ServerConn | None:
        """Ask one other worker for an idle connection of this key; None if it has none in time."""
        channel = self.link.channel
        assert channel is not None
        order = reuse_order(self.mode, first)
        safe_only = order == (ListKind.SAFE,)
        usable = [self._peer_usable(srv, slot, safe_only) for slot in range(self.link.nworkers)]
        victims = steal_order(self.link.slot, self.link.nworkers, self.next_victim, usable)
        if not victims:
            return None
        self.next_victim = (victims[0] + 1) % self.link.nworkers
        # Victims in turn (SEMANTICS §3: one with nothing to give or too slow is skipped), all within
        # one deadline: stealing must not cost more than a connect would.
        deadline = self.loop.time() + TAKEOVER_DEADLINE
        kid, order_code = key_id(key), ORDERS.index(order)
        handed = None
        for victim in victims:
            left = deadline - self.loop.time()
            if left <= 0:
                break
            srv.row.add(R_TAKEOVERS_ASKED)
            handed = await channel.ask(victim, srv.index, kid, order_code, left)
            if handed is not None:
                break
            srv.row.add(R_TAKEOVERS_FAILED)
        if handed is None:
            return None
        if handed.server != srv.index:  # a late answer to an older ask: the worker pools it
            if self.link.late is not None:
                self.link.late(handed)
            return None
        conn = await self._adopt(srv, key, handed)
        if conn is None:
            return None
        srv.cell.takeover_taken()
        srv.conn_used()
        conn.acct = ACCT_USED
        srv.row.add(R_REUSES)
        return conn

    def _peer_usable(self, srv: ServerRuntime, slot: int, safe_only: bool) -> int:
        if slot == self.link.slot:
            return 0
        peer = srv.peers[slot]
        return peer.safe if safe_only else peer.idle

    async def _adopt(self, srv: ServerRuntime, key: ConnKey, handed: Handed) -> ServerConn | None:
        """Wrap a descriptor received from another worker into a connection of ours."""
        try:
            sock = socket.socket(fileno=handed.fd)
        except OSError:
            os.close(handed.fd)
            return None
        conn = ServerConn(srv, key, self.engine_name, self.limits)
        conn.requests = handed.reqs
        conn.on_lost = self._on_lost
        conn.opened = True  # the victim moved its share of cur_conns to our cell (give_conn)
        try:
            sock.setblocking(False)
            await self.loop.create_connection(lambda: conn, sock=sock)
        except BaseException as exc:  # OSError, or the stream gave up (cancelled) meanwhile
            conn.on_lost = None
            if conn.transport is not None:
                conn.transport.abort()
            sock.close()
            conn.opened = False
            srv.cell.conn_closed()
            if isinstance(exc, OSError):
                return None
            raise
        if not conn.alive:  # the server spoke or closed before we resumed: close() uncounted it
            conn.close()
            return None
        conn.state = State.IDLE
        return conn

    def adopt_late(self, srv: ServerRuntime, handed: Handed) -> None:
        """A connection handed over after the thief gave up waiting: pool it as our own idle one."""
        key = srv.static_key
        if key is None or srv.cfg.usesrc_clientip or self.link.stopping:
            os.close(handed.fd)  # we cannot tell its key here: do not guess
            srv.cell.conn_closed()  # the victim moved its count to us
            return

        async def adopt() -> None:
            conn = await self._adopt(srv, key, handed)
            if conn is None:
                return
            kind = ListKind.SAFE if handed.kind else ListKind.IDLE
            srv.cell.idle_add(1, kind is ListKind.SAFE)
            conn.acct = ACCT_IDLE
            conn.pooled = kind
            conn.idle_since = self.loop.time()
            srv.pool.add(conn, kind)

        task = self.loop.create_task(adopt())
        self.link.tasks.add(task)
        task.add_done_callback(self.link.tasks.discard)

    async def connect(self, srv: ServerRuntime, key: ConnKey, client_ip: str) -> ServerConn:
        """Open a new connection; raises OSError or TimeoutError (the caller answers 503)."""
        cfg = srv.cfg
        timeout = self.cfg.timeouts.connect or 5.0
        deadline = self.loop.time() + timeout
        if cfg.maxconn > 0 and (cfg.strict_maxconn or self.mode is not ReuseMode.NEVER):
            # strict-maxconn: never above maxconn. Otherwise never above HAProxy's documented worst
            # case, maxconn + nbthread - 1 (SEMANTICS §4): without this cap a worker carrying
            # requests could also keep its one idle connection, one more than that bound.
            limit = cfg.maxconn if cfg.strict_maxconn else cfg.maxconn + self.link.nworkers - 1
            await self._room_for_one(srv, deadline, limit)
        else:
            srv.cell.try_open_conn(0)
        conn = ServerConn(srv, key, self.engine_name, self.limits)
        conn.opened = True
        private = conn.private = self.mode is ReuseMode.NEVER
        if private:
            conn.acct = ACCT_PRIVATE
        else:
            srv.conn_used()
            conn.acct = ACCT_USED
        srv.row.add(R_CONNECTS)
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
                sock.bind(_source_addr(source))
            left = max(0.001, deadline - self.loop.time())
            await asyncio.wait_for(self.loop.sock_connect(sock, (cfg.host, cfg.port)), left)
            await self.loop.create_connection(lambda: conn, sock=sock)
        except BaseException:
            srv.row.add(R_CONNECT_ERRORS)
            conn.on_lost = None
            if conn.transport is not None:
                conn.transport.abort()
            elif sock is not None:
                sock.close()
            self._uncount(conn)
            raise
        conn.state = State.IDLE  # connected, not yet attached
        return conn

    async def _room_for_one(self, srv: ServerRuntime, deadline: float, limit: int) -> None:
        """Count one more connection only within ``limit``, making room first.

        Room is made by closing an idle connection: one of ours at once, else by asking the worker
        that holds one (KILL). Raises TimeoutError when no room appears before ``deadline``."""
        from proxy.takeover import KILL, Message

        cell = srv.cell
        killed: set[int] = set()  # one KILL per victim and request: never a flood of closes
        while not cell.try_open_conn(limit):
            if srv.pool:
                self._drop_idle(srv.pool.oldest(1)[0])
                continue  # the room is ours to take at once
            if srv.row.idle > 0 and self.link.channel is not None:
                for slot in range(self.link.nworkers):
                    if slot != self.link.slot and slot not in killed and srv.peers[slot].idle > 0:
                        self.link.channel.send(slot, Message(KILL, server=srv.index))
                        killed.add(slot)
                        break
            if self.loop.time() >= deadline:
                raise TimeoutError(f"no room for a new connection within {limit}")
            await asyncio.sleep(STRICT_WAIT)

    # -- giving it back -----------------------------------------------------------------------
    def release(self, conn: ServerConn, session: Session) -> None:
        """The response ended cleanly in keep-alive: keep the connection or close it."""
        conn.make_idle()
        srv = conn.server
        if self.link.stopping:
            conn.close()
            return
        if conn.private:
            if not session.attach_conn(conn):
                conn.close()
            return
        kind = kind_after_release(conn.requests)
        pool = srv.pool
        row = srv.row
        idle_total = row.idle
        keep = should_keep(
            private=False,
            purge_delay=srv.cfg.pool_purge_delay,
            server_usable=srv.usable,
            mode=self.mode,
            pool_max_conn=srv.cfg.pool_max_conn,
            idle_total=idle_total,
            worker_has_idle_of_kind=pool.holds_for(kind),
            used=row.used,
            idle=idle_total,
            est_need=row.est_need,
            pool_low_conn=srv.cfg.pool_low_conn,
        )
        if not keep:
            conn.close()
            return
        if not srv.cell.try_used_to_idle(kind is ListKind.SAFE, srv.cfg.pool_max_conn):
            conn.close()  # another worker took the last place under pool-max-conn meanwhile
            return
        conn.acct = ACCT_IDLE
        conn.pooled = kind
        pool.add(conn, kind)

    def make_private(self, conn: ServerConn) -> None:
        """The connection now belongs to its client session (NTLM/Negotiate): uncount it."""
        if not conn.private:
            conn.private = True
            if conn.acct == ACCT_USED:
                conn.server.cell.used_add(-1)
                conn.acct = ACCT_PRIVATE

    def discard(self, conn: ServerConn) -> None:
        """Close a connection that must not be reused (error, close framing, tunnel end)."""
        conn.close()

    def _uncount(self, conn: ServerConn) -> None:
        srv = conn.server
        acct = conn.acct
        conn.acct = ACCT_NONE
        if acct == ACCT_USED:
            srv.cell.used_add(-1)
        elif acct == ACCT_IDLE:
            srv.cell.idle_add(-1, conn.pooled is ListKind.SAFE)
        conn.pooled = None
        if conn.opened:
            conn.opened = False
            srv.cell.conn_closed()

    def _on_lost(self, conn: ServerConn) -> None:
        if conn.pooled is not None:
            conn.server.pool.remove(conn)
        self._uncount(conn)
        owner = conn.owner
        if owner is not None:
            owner.forget_conn(conn)  # type: ignore[attr-defined]

    def _drop_idle(self, conn: ServerConn) -> None:
        """Take a pooled connection out of the pool and the counts now, then close it."""
        conn.server.pool.remove(conn)
        conn.on_lost = None
        self._uncount(conn)
        conn.close()

    # -- the other side of a takeover, purge and kill (driven by the worker's channel) ---------
    def give_idle(
        self, srv: ServerRuntime, key: ConnKey, order: tuple[ListKind, ...]
    ) -> tuple[int, int, int] | None:
        """Detach one idle connection of ``key`` for another worker: (dup'd fd, requests, kind).

        The connection leaves our pool, our loop and our counts *before* the descriptor is sent;
        our copy is closed without shutdown(), so the thief's copy stays connected."""
        got = srv.pool.pop_any_with_kind(order, key)
        while got is not None and not got[0].alive:
            conn = got[0]
            conn.pooled = got[1]
            conn.close()  # its connection_lost uncounts it (pooled set, pool already left)
            got = srv.pool.pop_any_with_kind(order, key)
        if got is None:
            return None
        conn, kind = got
        transport = conn.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        try:
            transport.pause_reading()
            fd = os.dup(sock.fileno())
        except (OSError, AttributeError):
            conn.pooled = kind
            conn.close()
            return None
        conn.pooled = kind
        conn.on_lost = None
        conn.opened = False  # its share of cur_conns stays until handed_over() moves or drops it
        self._uncount(conn)
        conn.state = State.CLOSED
        conn.peer = None
        transport.abort()  # closes our descriptor only: the duplicate keeps the socket open
        srv.cell.takeover_given()
        return fd, conn.requests, 1 if kind is ListKind.SAFE else 0

    def handed_over(self, srv: ServerRuntime, thief: int, sent: bool) -> None:
        """After ``give_idle``: the connection's share of cur_conns goes to the thief, or, if the
        datagram could not be sent (the descriptor is then closed), the connection is gone."""
        if sent:
            srv.cell.give_conn(thief)
        else:
            srv.cell.conn_closed()

    def purge(self, srv: ServerRuntime, to_close: int, idle_total: int) -> None:
        """This worker's share of a purge the master decided (oldest connections first)."""
        share = worker_share(to_close, len(srv.pool), idle_total)
        for conn in srv.pool.oldest(share):
            srv.row.add(R_PURGED)
            self._drop_idle(conn)

    def kill_idle(self, srv: ServerRuntime) -> None:
        if srv.pool:
            self._drop_idle(srv.pool.oldest(1)[0])

    def close_idle(self) -> None:
        """Soft stop: close every idle connection of this worker."""
        for srv in self.servers:
            for conn in srv.pool.oldest(len(srv.pool)):
                self._drop_idle(conn)


def _source_addr(source: str) -> tuple[str, int]:
    """``addr``, ``addr:port`` or ``[v6]:port`` → a bind address."""
    if source.startswith("["):
        host, _, port = source[1:].partition("]")
        return host, int(port.lstrip(":") or 0)
    if source.count(":") == 1:
        host, _, port = source.partition(":")
        return host, int(port or 0)
    return source, 0
