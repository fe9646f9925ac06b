"""Health checks inside a worker: probing the servers this worker owns the checks of, and reacting in
every worker when a server stops being usable.

Theory of operation. Each checked server has one record in the shared table (``proxy.health``);
its ``owner`` word names the one worker that runs the server's check. ``HealthChecks.tick`` runs
every ``TICK`` seconds in every worker and:

1. for each checked server, claims its record if it is free (the master frees a dead worker's
   records, ``ShmTable.reconcile_worker``; exactly one live worker wins each compare-exchange) and,
   for the records this worker owns, starts the check that is due (one at a time per server:
   ``probe`` is bounded by its timeouts, so a check never outlives its interval by much);
2. for every server, compares ``usable`` (admin and operational state, read from the shared row)
   with what it saw last: a server that stopped being usable (DOWN, maintenance) has this worker's
   idle connections to it closed, so that every worker drops them within one tick.

A check's result goes through ``CheckRecord.apply`` (the counter, the statuses, the counters of
``show stat``); on a transition the owner moves the row's ``oper_state`` (which every worker's
``ServerRuntime.usable`` reads at once) and logs HAProxy's line (``proxy.health.transition_line``).

Probes (``probe``): a TCP connect (``L4OK`` / ``L4CON`` with the errno / ``L4TOUT``), then with
``option httpchk`` one HTTP/1.x request with ``Connection: close`` and the answer read to its end or
``MAX_RESPONSE`` bytes (``L7OK`` / ``L7STS`` / ``L7RSP`` / ``L7TOUT``). Timeouts as HAProxy's: with
``timeout check``, the connect takes at most min(``timeout connect``, ``inter``) and the answer
``timeout check``; without it the whole check takes at most ``inter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.config.model import HttpCheck, Proxy, Server
from proxy.health import (
    K_HEALTH,
    K_LAST_CHECK,
    K_STATUS,
    OPER_RUNNING,
    OPER_STOPPED,
    CheckRecord,
    CheckResult,
    CheckStatus,
    Transition,
    check_line,
    connect_errno,
    first_delay,
    http_request,
    interval,
    judge_http,
    no_server_line,
    spread,
    transition_line,
)
from proxy.log import alert, warning
from proxy.server import ServerRuntime
from proxy.shm import R_OPER_STATE, ShmTable

TICK = 0.1  # seconds between two looks at the records and at the servers' states
MAX_RESPONSE = 16384  # bytes of a check's answer read at most (the status line and enough body)


async def probe(
    loop: asyncio.AbstractEventLoop, host: str, port: int, httpchk: HttpCheck | None,
    connect_timeout: float, read_timeout: float | None,
) -> CheckResult:  # fmt: skip
    """One check of ``host:port``; never raises (every failure is a ``CheckResult``).
    ``read_timeout`` None: the answer must come within what is left of ``connect_timeout``."""
    start = loop.time()

    def done(status: CheckStatus, code: int = 0, err: int = 0) -> CheckResult:
        return CheckResult(status, round((loop.time() - start) * 1000), code, err)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return done(CheckStatus.SOCKERR, err=connect_errno(exc))
    with sock:
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), connect_timeout)
        except TimeoutError:
            return done(CheckStatus.L4TOUT)
        except OSError as exc:
            return done(CheckStatus.L4CON, err=connect_errno(exc))
        if httpchk is None:
            return done(CheckStatus.L4OK)
        if read_timeout is None:
            read_timeout = max(0.001, connect_timeout - (loop.time() - start))
        exchange = _exchange(loop, sock, http_request(httpchk, host))
        try:
            response = await asyncio.wait_for(exchange, read_timeout)
        except TimeoutError:
            return done(CheckStatus.L7TOUT)
        except OSError as exc:
            return done(CheckStatus.L7RSP, err=connect_errno(exc))
        status, code = judge_http(httpchk, response)
        return done(status, code)


async def _exchange(loop: asyncio.AbstractEventLoop, sock: socket.socket, request: bytes) -> bytes:
    await loop.sock_sendall(sock, request)
    got = bytearray()
    while len(got) < MAX_RESPONSE:
        chunk = await loop.sock_recv(sock, MAX_RESPONSE - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)


@dataclass(slots=True)
class Checked:
    """A checked server as this worker sees it: its record, and when its next check is due here."""

    srv: ServerRuntime
    group: Group
    record: CheckRecord
    position: int  # among the ``count`` checked servers of its backend (spreads the first checks)
    count: int
    due: float = -1.0  # loop time of the next check; -1: not owned here yet
    running: asyncio.Task[None] | None = None


@dataclass(slots=True)
class Group:
    """A backend's servers, for the counts in the log lines."""

    cfg: Proxy
    servers: list[ServerRuntime] = field(default_factory=list)

    def counts(self) -> tuple[int, int]:
        """(usable non-backup servers, usable backup servers)."""
        active = sum(1 for s in self.servers if s.usable and not s.cfg.backup)
        backup = sum(1 for s in self.servers if s.usable and s.cfg.backup)
        return active, backup


class HealthChecks:
    """This worker's share of the health checks, and the closing of idle connections to servers
    that stop being usable (see the module doc)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, table: ShmTable, slot: int,
        backends: list[tuple[Proxy, list[ServerRuntime]]], spread_pct: int,
        emit: Callable[[Proxy, str], None] | None = None,
    ) -> None:  # fmt: skip
        self.loop = loop
        self.table = table
        self.slot = slot
        self.spread_pct = spread_pct
        self.emit = emit
        self.checked: list[Checked] = []
        self.servers: list[ServerRuntime] = []
        for cfg, servers in backends:
            group = Group(cfg, list(servers))
            self.servers += servers
            with_check = [s for s in servers if s.cfg.check]
            for pos, srv in enumerate(with_check):
                self.checked.append(Checked(srv, group, table.check(srv.index), pos, len(with_check)))
        self.was_usable = {srv.index: srv.usable for srv in self.servers}
        self.stopped = False
        self._rng = random.Random()

    def __repr__(self) -> str:
        mine = sum(1 for c in self.checked if c.due >= 0)
        return f"<HealthChecks worker={self.slot} checked={len(self.checked)} mine={mine}>"

    def start(self) -> None:
        self.loop.call_soon(self.tick)

    def stop(self) -> None:
        self.stopped = True
        for c in self.checked:
            if c.running is not None:
                c.running.cancel()

    def tick(self) -> None:
        if self.stopped:
            return
        now = self.loop.time()
        for c in self.checked:
            if c.due < 0:
                if c.record.claim(self.slot):
                    # the first owner spreads its first checks; a takeover checks at once
                    taken_over = c.record.load(K_LAST_CHECK) != 0  # checked before
                    first = first_delay(c.srv.cfg, c.position, c.count)
                    c.due = now if taken_over else now + first
            elif c.record.owner != self.slot:
                c.due = -1.0  # no longer ours (never expected: only a dead owner loses a record)
            if c.due >= 0 and c.running is None and now >= c.due:
                c.running = self.loop.create_task(self._check(c))
        for srv in self.servers:
            usable = srv.usable
            if usable != self.was_usable[srv.index]:
                self.was_usable[srv.index] = usable
                if not usable:
                    self.close_idle(srv)
        self.loop.call_later(TICK, self.tick)

    @staticmethod
    def close_idle(srv: ServerRuntime) -> int:
        """Close this worker's idle connections to ``srv`` (it went DOWN or into maintenance)."""
        closed = 0
        for conn in srv.pool.oldest(len(srv.pool)):
            closed += srv.drop_idle(conn)
        return closed

    def timeouts(self, c: Checked) -> tuple[float, float | None]:
        """(connect timeout, read timeout) of a check of ``c`` (see the module doc); a read
        timeout None: the whole check within ``inter``."""
        cfg = c.srv.cfg
        px = c.group.cfg.timeouts
        if px.check:
            return min(px.connect or cfg.inter, cfg.inter), px.check
        return cfg.inter, None

    async def _check(self, c: Checked) -> None:
        cfg: Server = c.srv.cfg
        try:
            connect_t, read_t = self.timeouts(c)
            host = cfg.check_addr or cfg.host
            result = await probe(self.loop, host, cfg.check_port or cfg.port, c.group.cfg.httpchk,
                                 connect_t, read_t)  # fmt: skip
            if self.stopped:
                return
            self.record(c, result)
        finally:
            c.running = None
        health = c.record.load(K_HEALTH)
        c.due = self.loop.time() + spread(interval(cfg, health), self.spread_pct, self._rng.random())

    def record(self, c: Checked, result: CheckResult) -> Transition | None:
        """Apply one result: the shared record, the row's oper_state on a transition, the logs."""
        cfg = c.srv.cfg
        before = CheckStatus(c.record.load(K_STATUS))
        change = c.record.apply(cfg, result, time.time_ns())
        be = c.group.cfg
        if change is not None:
            c.srv.row.store(R_OPER_STATE, OPER_RUNNING if change is Transition.UP else OPER_STOPPED)
            active, backup = c.group.counts()
            row = c.srv.row
            line = transition_line(be.name, cfg.name, change, result, active, backup, is_backup=cfg.backup,
                                   queued=row.queue_len, sessions=row.served)  # fmt: skip
            warning(line)
            self._emit(be, line)
            if change is Transition.DOWN and active + backup == 0:
                alert(no_server_line(be.name, quoted=True))
                self._emit(be, no_server_line(be.name))
        elif be.log_health_checks and result.status is not before:
            health = c.record.load(K_HEALTH)
            self._emit(be, check_line(be.name, cfg.name, result, health, cfg.rise, cfg.fall))
        return change

    def _emit(self, be: Proxy, line: str) -> None:
        if self.emit is not None:
            with contextlib.suppress(Exception):
                self.emit(be, line)
