"""A backend inside one worker: server choice, and the one place that gets a server connection.

``Backend.acquire`` carries out, step by step, the plan that the pure policy returns
(``proxy.pool_policy.acquire_plan``): take a ``maxconn`` slot (or wait in the queue shared by all
workers, ``proxy.queue``), then the client session's own connection, then this worker's idle lists in
the reuse mode's order, then other workers' idle connections (victims in ``steal_order``: taken from
their published slots with ``pidfd_getfd``, ``proxy.steal``, or where the kernel refuses that, asked
over ``proxy.takeover``), then a new connection (``retries`` + 1 attempts; after a failure
``proxy.retry`` decides whether the next attempt waits and whether it goes to another server:
``option redispatch`` gives the failed server's slot back and takes one on the new server).
``acquire_now`` is the same plan's synchronous prefix — the hot path of a keep-alive request creates no task.

HTTP/2 (``proxy.server_h2``; this half is the mixin ``proxy.backend_h2.H2Pooling``): what a
request gets is then one stream of a connection. Before the
idle lists, ``_local`` looks at this worker's *available* list (HTTP/2 connections with free
streams, HAProxy's ``avail_conns``; in ``safe`` mode only the client session's own). In
``always`` a connect that may bring HTTP/2 is announced in ``opening``, and this worker's other
requests for the same key wait for it (``_join``) instead of opening their own; ``aggressive``
offers a new connection only once a stream ended on it (HAProxy's rule: only ``always`` shares a
connection from its first stream on). ``maxconn`` slots are per request, so per stream. TLS
(``proxy.server_tls``): the handshake's ALPN answer chooses the protocol object.

When the exchange ends, ``finish`` gives everything back: the connection is kept (``should_keep``,
the keep-on-release rule over the server-wide numbers) or closed, and the slot is released (to the
oldest waiter across workers). Accounting moves go through ``ServerRuntime.move`` only.

Failures to acquire raise ``AcquireError`` carrying what to answer (HAProxy's statuses and
termination states): queue full 503 ``SQ``, queue timeout 503 ``sQ``, no connection 503 ``SC``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Final, cast

from mypy_extensions import mypyc_attr

from proxy.backend_h2 import AnyConn, H2Pooling, ServerLink
from proxy.balance import make_balancer
from proxy.config.model import Global, Proxy, ReuseMode
from proxy.donor import ORDERS, WorkerLink, adopt, key_id
from proxy.h1 import Limits
from proxy.pool import (
    AcquirePlan,
    ConnKey,
    ListKind,
    acquire_plan,
    key_hash,
    kind_after_release,
    reuse_order,
    server_conn_key,
    should_keep,
    steal_order,
)
from proxy.queue import Outcome
from proxy.retry import next_retry
from proxy.server import Accounted, Acct, ServerRuntime, SlotMove
from proxy.server_conn import ServerConn, State, adopt_socket, wrap_socket
from proxy.server_h2 import H2ServerConn, H2Stream
from proxy.server_tls import client_context, open_tls
from proxy.shm import (
    R_CONNECT_ERRORS,
    R_CONNECTS,
    R_REDISPATCHES,
    R_RETRIES,
    R_REUSES,
    R_TAKEOVERS_ASKED,
    R_TAKEOVERS_FAILED,
    R_TAKEOVERS_GIVEN,
)
from proxy.slots import make_ports
from proxy.takeover import KILL, Message

if TYPE_CHECKING:
    from proxy.session import Session
    from proxy.takeover import Handed


_monotonic: Final = time.monotonic  # a C static when compiled (no module attribute lookup)
IP_TRANSPARENT: Final = getattr(socket, "IP_TRANSPARENT", 19)
TAKEOVER_DEADLINE: Final = 0.005  # seconds a thief waits for a victim before connecting itself
STRICT_WAIT: Final = 0.002  # connection cap: pause between two tries to find room for a connection


class AcquireError(Exception):
    """No connection for this request: answer ``status`` with termination state ``term``."""

    def __init__(self, status: int, term: str) -> None:
        super().__init__(f"{status} {term}")
        self.status = status
        self.term = term


class Acquisition:
    """One request's dealings with a backend: its server, key, slot, and how it got a connection."""

    __slots__ = (
        "first", "has_slot", "key", "redispatched", "retries", "reused", "server", "session", "t_connected",
        "t_queued",
    )  # fmt: skip

    def __init__(self, server: ServerRuntime, key: ConnKey, session: Session) -> None:
        self.server = server
        self.key = key
        self.session = session
        self.first = session.requests_done == 0  # session.first_request, inline
        self.has_slot = False
        self.reused = False  # the connection had served a request before (a replay may be needed)
        self.t_queued = 0.0  # when the slot was obtained
        self.t_connected = 0.0  # when the connection was obtained
        self.retries = 0  # connection retries made (the log's %rc)
        self.redispatched = False  # a retry went to another server (%rc shows "+")

    def __repr__(self) -> str:
        return f"<Acquisition {self.server.backend_name}/{self.server.name} slot={self.has_slot}>"


class _Opening:
    """A connection being opened, counted before its protocol object exists (the TLS handshake's
    ALPN answer decides whether it is HTTP/1 or HTTP/2): ``ServerRuntime.rebind`` passes the count on."""

    __slots__ = ("acct",)

    def __init__(self) -> None:
        self.acct = Acct.NONE

    def __repr__(self) -> str:
        return f"<connection being opened acct={self.acct.name}>"


@mypyc_attr(allow_interpreted_subclasses=True)  # tests' fakes subclass it
class Backend(H2Pooling):
    __slots__ = (
        "balancer",
        "cfg",
        "engine_name",
        "glob",
        "has_backup",
        "httpclose",
        "keep_alive_mode",
        "lb_params",
        "lb_version",
        "limits",
        "link",
        "loop",
        "mode",
        "name",
        "next_victim",
        "orders",
        "retries",
        "servers",
        "timeout_server",
        "tls",
        "xff_header",
    )

    # What every request reads of the configuration (``reconfigure``):
    keep_alive_mode: bool
    httpclose: bool
    retries: int
    timeout_server: float | None
    xff_header: bytes | None

    def __init__(
        self,
        cfg: Proxy,
        servers: list[ServerRuntime],
        engine_name: str,
        limits: Limits,
        link: WorkerLink,
        glob: Global | None = None,
    ) -> None:
        self.cfg = cfg
        self.glob = glob if glob is not None else Global()  # HTTP/2 tunings, TLS defaults
        self.name = cfg.name
        self.mode = cfg.http_reuse
        self.engine_name = engine_name
        self.limits = limits
        self.link = link
        self.loop = link.loop
        self.servers = servers
        self.balancer = make_balancer(cfg.balance, cfg.servers)
        self.lb_params = tuple((s.weight, s.maxconn) for s in cfg.servers)
        self.has_backup = any(s.backup for s in cfg.servers)
        self.lb_version = 0  # the table's runtime version the balancer follows
        self.next_victim = 0
        # HTTP/2: this worker's connections with streams in use and room for more (HAProxy's
        # "available" list), per server; the connects in flight that may turn out HTTP/2 (others
        # wait for them rather than open their own); the TLS contexts, per server.
        self.avail: dict[ServerRuntime, list[H2ServerConn]] = {}
        self.opening: dict[tuple[ServerRuntime, ConnKey], asyncio.Future[None]] = {}
        self.tls: dict[ServerRuntime, ssl.SSLContext] = {}
        # reuse_order(mode, first) for first False and True, asked once (the mode is fixed)
        self.orders = (reuse_order(self.mode, False), reuse_order(self.mode, True))
        self.reconfigure()

    def reconfigure(self) -> None:
        """Read what every request reads of the configuration (once: it never changes in a worker;
        the unit tests that edit it in place call this again)."""
        cfg = self.cfg
        self.keep_alive_mode = cfg.http_conn_mode == "keep-alive"
        self.httpclose = cfg.http_conn_mode == "httpclose"
        self.retries = cfg.retries
        self.timeout_server = cfg.timeouts.server
        self.xff_header = cfg.forwardfor_header.encode() if cfg.forwardfor else None
        for srv in self.servers:
            srv.reconfigure()

    def __repr__(self) -> str:
        return f"<Backend {self.name} servers={len(self.servers)} reuse={self.mode.value}>"

    # -- server choice ----------------------------------------------------------------------
    def pick_server(self, client_ip: str, exclude: ServerRuntime | None = None) -> ServerRuntime | None:
        """The server for a new request: among the usable non-backup servers; when none is up, the
        first usable backup (every usable one with ``option allbackups``), as in HAProxy.
        ``exclude``: a server not to choose (a redispatch leaves the one that failed)."""
        servers = self.servers
        n = len(servers)
        if n == 1:  # nothing to balance (weight 0 takes no traffic, as in every algorithm)
            only = servers[0]
            return only if only.pickable and only is not exclude else None
        if not n:  # a backend without a server line: 503, as in HAProxy
            return None
        self._follow_runtime()
        load = self._load
        if not self.has_backup and exclude is None:  # the common case: the cheapest test
            idx = self.balancer.pick(client_ip=client_ip, usable=self._pickable, load=load)
            return None if idx is None else servers[idx]

        def usable(i: int, backup: bool = False) -> bool:
            s = servers[i]
            return s.cfg.backup is backup and s is not exclude and s.pickable

        idx = self.balancer.pick(client_ip=client_ip, usable=usable, load=load)
        if idx is None and self.has_backup:
            if self.cfg.allbackups:
                idx = self.balancer.pick(client_ip=client_ip, usable=lambda i: usable(i, True), load=load)
            else:
                first = (i for i in range(len(servers)) if usable(i, True))
                idx = next(first, None)
        return None if idx is None else servers[idx]

    def _pickable(self, i: int) -> bool:
        return self.servers[i].pickable

    def _load(self, i: int) -> int:
        return self.servers[i].row.served

    def _follow_runtime(self) -> None:
        """Weights and maxconn live in the shared rows (the runtime API changes them, then moves the
        table's runtime version: one load per request tells): when they differ from what the
        balancer was built with, rebuild it (its rotation starts afresh, as HAProxy's does on a
        weight change)."""
        version = self.servers[0].runtime_version_now()
        if version == self.lb_version:
            return
        self.lb_version = version
        live = tuple((s.row.weight, s.row.maxconn) for s in self.servers)
        if live != self.lb_params:
            self.lb_params = live
            cfgs = [replace(s.cfg, weight=w, maxconn=m) for s, (w, m) in zip(self.servers, live, strict=True)]
            self.balancer = make_balancer(self.cfg.balance, cfgs)

    def key_for(self, srv: ServerRuntime, client_ip: str, sni: str | None = None) -> ConnKey:
        """The connection key (``server_conn_key``); computed once per server unless it depends on
        the client (``usesrc clientip``) or the request (``sni <expr>``: the value rendered for this
        request, which ``sni_for`` gives)."""
        if srv.usesrc_clientip or sni is not None:
            return self.link.register(server_conn_key(self.name, srv.cfg, client_ip=client_ip, sni=sni))
        key = srv.static_key
        if key is None:
            key = srv.static_key = self.link.register(server_conn_key(self.name, srv.cfg))
        return key

    def acquisition(self, srv: ServerRuntime, session: Session, sni: str | None = None) -> Acquisition:
        key = srv.static_key  # key_for's common case, inline (once a request)
        if key is None or srv.usesrc_clientip or sni is not None:
            key = self.key_for(srv, session.client_ip, sni)
        return Acquisition(srv, key, session)

    # -- acquiring ----------------------------------------------------------------------------
    def acquire_now(self, acq: Acquisition) -> ServerLink | None:
        """The plan's synchronous prefix: a free slot, then the session's or this worker's own
        connection. None when the rest needs waiting (``acquire``)."""
        if not acq.has_slot:
            if not self.link.queues.try_take(acq.server):
                return None
            acq.has_slot = True
            acq.t_queued = _monotonic()
        # The plan's lists are ``reuse_order(mode, first)``: asked directly, the hot path skips
        # the numbers only the rest of the plan needs.
        return self._local(acq, self.orders[acq.first])

    async def acquire(self, acq: Acquisition, *, fresh: bool = False) -> ServerLink:
        """The whole plan (after ``acquire_now`` found nothing, or ``fresh`` for a replay).

        Raises ``AcquireError``. On return or on an exception, ``acq.has_slot`` says whether a slot
        is held, which ``finish`` (or ``abandon``) gives back."""
        srv = acq.server
        if not acq.has_slot:
            timeout = self.cfg.timeouts.queue or self.cfg.timeouts.connect or 5.0
            outcome = await self.link.queues.wait(srv, timeout)
            if outcome is not Outcome.GRANTED:
                raise AcquireError(503, "sQ" if outcome is Outcome.TIMEOUT else "SQ")
            acq.has_slot = True
            acq.t_queued = _monotonic()
            if not fresh:
                local = self._local(acq, self._plan(acq).lists)
                if local is not None:
                    return local
        plan = self._plan(acq, fresh)
        if plan.steal:
            stolen = await self._steal(acq, plan.lists)
            if stolen is not None:
                return self._use(acq, stolen)  # HTTP/2 (h2c): a stream of it
        while True:
            if not fresh:
                shared = await self._join(acq)
                if shared is not None:
                    return shared
            timed_out = False
            try:
                opened = await self._connect(acq)
            except TimeoutError:
                opened, timed_out = None, True
            except OSError:
                opened = None
            if opened is not None and opened.alive:  # the server may have closed it before we could use it
                acq.reused = False
                acq.t_connected = _monotonic()
                return self._use(acq, opened, new=True)
            link = await self._retry(acq, plan.connects - 1, timed_out)
            if link is not None:
                return link

    async def _retry(self, acq: Acquisition, retries: int, timed_out: bool = False) -> ServerLink | None:
        """A connection attempt failed: wait and retry on the same server, or redispatch to
        another (``proxy.retry``); a connection found idle on the new server is returned. Raises
        503 ``SC`` once the retries are spent."""
        srv = acq.server
        step = next_retry(
            done=acq.retries, retries=retries, redispatch=self.cfg.redispatch, server_up=srv.usable,
            balance=self.cfg.balance, servers_up=sum(1 for s in self.servers if s.usable),
            connect_timeout=self.cfg.timeouts.connect, timed_out=timed_out,
        )  # fmt: skip
        if step is None:
            raise AcquireError(503, "SC")
        acq.retries += 1
        srv.row.add(R_RETRIES)
        other = self.pick_server(acq.session.client_ip, exclude=srv) if step.redispatch else None
        if step.delay > 0 or (step.redispatch and other is None and not timed_out):
            await asyncio.sleep(step.delay or min(self.cfg.timeouts.connect or 1.0, 1.0))
        if other is None:
            return None
        # Redispatch: the slot of the failed server goes back, the request takes one on the other
        # (queueing there if it is full), then that server's idle connections may serve it.
        acq.redispatched = True
        other.row.add(R_REDISPATCHES)
        if acq.has_slot:
            acq.has_slot = False
            self.link.queues.release(srv)
        acq.server = other
        acq.key = self.key_for(other, acq.session.client_ip)
        if not self.link.queues.try_take(other):
            timeout = self.cfg.timeouts.queue or self.cfg.timeouts.connect or 5.0
            outcome = await self.link.queues.wait(other, timeout)
            if outcome is not Outcome.GRANTED:
                raise AcquireError(503, "sQ" if outcome is Outcome.TIMEOUT else "SQ")
        acq.has_slot = True
        acq.t_queued = _monotonic()
        return self._local(acq, reuse_order(self.mode, acq.first))

    def _plan(self, acq: Acquisition, fresh: bool = False) -> AcquirePlan:
        srv = acq.server
        link = self.link
        return acquire_plan(
            self.mode,
            acq.first,
            retries=self.cfg.retries,
            fresh=fresh,
            stealing=link.shared and link.nworkers > 1,
            idle_total=srv.row.idle,
            local_idle=len(srv.pool),
            pool_low_conn=srv.pool_low_conn,
        )

    def _local(self, acq: Acquisition, lists: tuple[ListKind, ...]) -> ServerLink | None:
        """The client session's own connection, then this worker's HTTP/2 connections with free
        streams (SEMANTICS §1 step 2), then this worker's lists in ``lists`` order."""
        srv = acq.server
        session = acq.session
        conn = session.take_conn(srv, acq.key) if session.conns else None
        if conn is None and self.avail:
            conn = self._available(acq)
        if conn is None and lists:
            conn = srv.take_idle(acq.key, lists)
        if conn is None:
            return None
        srv.count_reuse()  # the row's R_REUSES
        acq.reused = True
        acq.t_connected = _monotonic()
        return self._use(acq, conn)  # type: ignore[arg-type]  # a worker's pools hold its own connections only

    # -- stealing (the thief's side; the victim's is proxy.donor.Donor) --------------------
    async def _steal(self, acq: Acquisition, lists: tuple[ListKind, ...]) -> AnyConn | None:
        """Another worker's idle connection of our key: taken from its slots (``proxy.steal``), or
        where ``pidfd_getfd`` is refused, asked for over the channel within one deadline."""
        srv = acq.server
        link = self.link
        channel = link.channel
        if channel is None and link.thief is None:
            return None
        safe_only = lists == (ListKind.SAFE,)
        usable = [
            0 if slot == link.slot else (peer.safe if safe_only else peer.idle)
            for slot, peer in enumerate(srv.peers)
        ]
        victims = steal_order(link.slot, link.nworkers, self.next_victim, usable)
        if not victims:
            return None
        self.next_victim = (victims[0] + 1) % link.nworkers
        if link.thief is not None:
            return await self._take(acq, victims, lists)
        assert channel is not None
        # Victims in turn (SEMANTICS §3: one with nothing to give or too slow is skipped), all within
        # one deadline: stealing must not cost more than a connect would.
        deadline = self.loop.time() + TAKEOVER_DEADLINE
        kid, order_code = key_id(acq.key), ORDERS.index(lists)
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
            if link.late is not None:
                link.late(handed)
            return None
        conn = await self._adopt(srv, acq.key, handed)
        if conn is None:
            return None
        srv.cell.takeover_taken()
        srv.move(conn, Acct.USED)
        srv.row.add(R_REUSES)
        acq.reused = True
        acq.t_connected = _monotonic()
        return conn

    async def _take(
        self, acq: Acquisition, victims: list[int], lists: tuple[ListKind, ...]
    ) -> AnyConn | None:
        """Claim, duplicate, verify, take (``Thief.steal``), then count and wrap: no message to
        the victim, no deadline. An HTTP/2 (h2c) connection continues from the state its owner
        published (``proxy.h2_handover``)."""
        srv = acq.server
        thief = self.link.thief
        assert thief is not None
        family = socket.AF_INET6 if ":" in srv.cfg.host else socket.AF_INET
        claim = thief.steal(srv.index, victims, key_hash(acq.key), lists, family)
        if thief.refused is not None:
            self.link.steal_refused(thief.refused)
        if claim is None:
            return None
        sock = claim.sock
        assert sock is not None
        conn: AnyConn
        if claim.state is None:
            conn = ServerConn(srv, acq.key, self.engine_name, self.limits)
        else:
            conn = self._h2(srv, acq.key, b"http")
            if not conn.restore_from(claim.state):  # not a state we can continue: the owner's still
                sock.close()
                claim.slots.release(claim.index, claim.tag)
                srv.row.add(R_TAKEOVERS_FAILED)
                return None
        # NONE → USED through the slot: CLAIMED → TAKEN and the counts move in one bracket
        through = SlotMove(claim.slots, claim.index, claim.tag, claim.record.safe)
        if not srv.move(conn, Acct.USED, slot=through):
            sock.close()  # the owner died and its slots were emptied: nothing was counted
            return None
        srv.row.add(R_TAKEOVERS_GIVEN)
        srv.cell.takeover_taken()
        conn.requests = claim.record.reqs
        conn.ports = make_ports(claim.record.local_port, claim.record.peer_port)
        conn.on_lost = srv.lost
        try:
            if isinstance(conn, ServerConn):
                await adopt_socket(self.loop, conn, sock)
            else:
                await wrap_socket(self.loop, conn, sock)
        except OSError:
            conn.close()  # uncounted by its hook
            return None
        except BaseException:  # cancelled (the client left): nothing leaks
            conn.close()
            raise
        if not conn.alive:
            conn.close()
            return None
        srv.row.add(R_REUSES)
        acq.reused = True
        acq.t_connected = _monotonic()
        return conn

    async def _adopt(self, srv: ServerRuntime, key: ConnKey, handed: Handed) -> AnyConn | None:
        """The connection a victim handed over the channel, wrapped (HTTP/2: continued from the
        state that came with it)."""
        if handed.state_fd >= 0:
            return await adopt(self.loop, self._h2(srv, key, b"http"), handed)
        return await adopt(self.loop, ServerConn(srv, key, self.engine_name, self.limits), handed)

    # -- connecting ---------------------------------------------------------------------------
    async def _connect(self, acq: Acquisition) -> AnyConn:
        """Open a new connection (TLS and ALPN included); raises OSError or TimeoutError."""
        srv = acq.server
        cfg = srv.cfg
        timeout = self.cfg.timeouts.connect or 5.0
        deadline = self.loop.time() + timeout
        token = _Opening()  # counted now; the connection object exists once its protocol is known
        maxconn = srv.row.maxconn  # live: ``set maxconn server``
        if maxconn > 0 and (cfg.strict_maxconn or self.mode is not ReuseMode.NEVER):
            # strict-maxconn: never above maxconn. Otherwise never above HAProxy's documented worst
            # case, maxconn + nbthread - 1 (SEMANTICS §4): without this cap a worker carrying
            # requests could also keep its one idle connection, one more than that bound.
            limit = maxconn if cfg.strict_maxconn else maxconn + self.link.nworkers - 1
            await self._room_for_one(srv, token, deadline, limit)
        else:
            srv.move(token, Acct.COUNTED, 0)
        srv.move(token, Acct.PRIVATE if self.mode is ReuseMode.NEVER else Acct.USED)
        srv.row.add(R_CONNECTS)
        # Others of this worker wanting the same key may wait for an HTTP/2 connection (``_join``).
        slot = (srv, acq.key)
        announce: asyncio.Future[None] | None = None
        if (
            self.mode is ReuseMode.ALWAYS
            and (cfg.proto == "h2" or "h2" in cfg.alpn)
            and slot not in self.opening
        ):
            announce = self.opening[slot] = self.loop.create_future()
        sock = None
        conn: AnyConn | None = None
        try:
            source = acq.session.client_ip if cfg.usesrc_clientip else cfg.source
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
            conn = await self._wrap(acq, sock, deadline)
        except BaseException:
            srv.row.add(R_CONNECT_ERRORS)
            if conn is None and sock is not None and sock.fileno() >= 0:
                sock.close()
            srv.uncount(token)
            raise
        finally:
            if announce is not None:
                del self.opening[slot]
                announce.set_result(None)  # waiters run after our caller offered the connection
        srv.rebind(token, conn)
        conn.on_lost = srv.lost
        if not conn.alive:
            conn.close()  # closed during the handshake: the hook uncounts it now
        return conn

    async def _wrap(self, acq: Acquisition, sock: socket.socket, deadline: float) -> AnyConn:
        """The protocol object on a connected socket: TLS first for ``ssl`` (ALPN picks HTTP/2 or
        HTTP/1; without an answer, ``proto`` does), else HTTP/2 with prior knowledge for ``proto
        h2``, else HTTP/1. Only a plain-TCP connection (HTTP/1, or h2c while idle) may later move
        to another worker; a TLS one never does."""
        srv = acq.server
        cfg = srv.cfg
        if cfg.ssl:
            ctx = self.tls.get(srv)
            if ctx is None:
                ctx = self.tls[srv] = client_context(cfg, self.glob)

            def choose(alpn: str | None) -> asyncio.Protocol:
                if alpn == "h2" or (alpn is None and cfg.proto == "h2"):
                    return self._h2(srv, acq.key, b"https")
                h1 = ServerConn(srv, acq.key, self.engine_name, self.limits)
                h1.shareable = False  # its TLS state lives in this process
                h1.state = State.IDLE
                return h1

            proto = await open_tls(self.loop, sock, ctx, acq.key.sni, choose, deadline - self.loop.time())
            if isinstance(proto, H2ServerConn):
                await self._settled(proto, sock, deadline)
            return cast(AnyConn, proto)
        if cfg.proto == "h2":
            h2c = self._h2(srv, acq.key, b"http")
            h2c.shareable = True  # plain TCP: lent to other workers while idle, with its state
            h2c.note_socket(sock)
            await self.loop.create_connection(lambda: h2c, sock=sock)
            await self._settled(h2c, sock, deadline)
            return h2c
        conn = ServerConn(srv, acq.key, self.engine_name, self.limits)
        await adopt_socket(self.loop, conn, sock)
        return conn

    async def _room_for_one(self, srv: ServerRuntime, conn: Accounted, deadline: float, limit: int) -> None:
        """Count ``conn`` as opened only within ``limit``, making room first.

        Room is made by closing an idle connection: one of ours at once, else by asking the worker
        that holds one (KILL). Raises TimeoutError when no room appears before ``deadline``."""
        killed: set[int] = set()  # one KILL per victim and request: never a flood of closes
        link = self.link
        while not srv.move(conn, Acct.COUNTED, limit):
            srv.settle_if_rung()  # what others took from us leaves our pool first
            if srv.pool:
                srv.drop_idle(srv.pool.oldest(1)[0])
                continue  # the room is ours to take at once (or the pool shrank: lent)
            if srv.row.idle > 0 and link.channel is not None:
                for slot in range(link.nworkers):
                    if slot != link.slot and slot not in killed and srv.peers[slot].idle > 0:
                        link.channel.send(slot, Message(KILL, server=srv.index))
                        killed.add(slot)
                        break
            if self.loop.time() >= deadline:
                raise TimeoutError(f"no room for a new connection within {limit}")
            await asyncio.sleep(STRICT_WAIT)

    # -- giving back ----------------------------------------------------------------------------
    def finish(self, acq: Acquisition, conn: ServerLink | None, reusable: bool) -> None:
        """The exchange ended: keep or close its connection, and release its slot."""
        if conn is not None:
            if isinstance(conn, H2Stream):
                self._finish_stream(acq, conn)
            elif reusable:
                self._release(conn, acq.session)
            else:
                conn.close()
        if acq.has_slot:
            acq.has_slot = False
            self.link.queues.release(acq.server)

    def _release(self, conn: ServerConn, session: Session) -> None:
        """The response ended cleanly in keep-alive: keep the connection or close it."""
        conn.make_idle()
        srv = conn.server
        if self.link.stopping:
            conn.close()
            return
        if conn.acct is _AC_PRIVATE:  # (conn.private)
            if not session.attach_conn(conn):
                conn.close()
            return
        if srv.max_reuse >= 0 and conn.requests > srv.max_reuse:
            conn.close()  # max-reuse: it was used once and reused max-reuse times
            return
        kind = kind_after_release(conn.requests)
        pool = srv.pool
        idle_total = srv.idle_now()
        keep = should_keep(
            private=False,
            purge_delay=srv.pool_purge_delay,
            server_usable=srv.usable,
            mode=self.mode,
            pool_max_conn=srv.pool_max_conn,
            idle_total=idle_total,
            worker_has_idle_of_kind=pool.holds_for(kind),
            used=srv.used_now(),
            idle=idle_total,
            est_need=srv.est_need_now(),
            pool_low_conn=srv.pool_low_conn,
        )
        # The move is bounded by pool-max-conn: another worker may have taken the last place.
        to = _AC_SAFE if kind is _LK_SAFE else _AC_IDLE  # srv.pooled_state(kind)
        if not keep or not srv.move(conn, to, srv.pool_max_conn):
            conn.close()
            return
        srv.park(conn, kind)

    def make_private(self, conn: ServerLink) -> None:
        """The connection now belongs to its client session (NTLM/Negotiate): uncount it. Not for
        an HTTP/2 stream: HTTP/2 has no connection-bound authentication (RFC 9113 §8.2.3)."""
        if isinstance(conn, H2Stream):
            return
        if conn.acct is Acct.USED:
            conn.server.move(conn, Acct.PRIVATE)


def _source_addr(source: str) -> tuple[str, int]:
    """``addr``, ``addr:port`` or ``[v6]:port`` → a bind address."""
    if source.startswith("["):
        host, _, port = source[1:].partition("]")
        return host, int(port.lstrip(":") or 0)
    if source.count(":") == 1:
        host, _, port = source.partition(":")
        return host, int(port or 0)
    return source, 0


# The enum members the per-request functions above use, as module constants: on Python 3.11
# a member lookup (``Phase.IDLE``) costs several times a global's, and a request makes dozens.
_AC_IDLE: Final = Acct.IDLE
_AC_PRIVATE: Final = Acct.PRIVATE
_AC_SAFE: Final = Acct.SAFE
_LK_SAFE: Final = ListKind.SAFE
