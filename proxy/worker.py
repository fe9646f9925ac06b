"""A worker process: one uvloop event loop serving the shared listeners.

``run()`` is entered right after the fork (the master never runs an event loop, DESIGN.md §2). It
builds this worker's runtime objects from the configuration (frontends, backends, each server with
its own idle pool), accepts on every inherited listener, tells the master ``READY`` over the control
socket, and serves until a signal:

- SIGTERM: hard stop, exit at once (connections are cut);
- SIGUSR1: soft stop (also how the master retires a generation at a reload): stop accepting, close
  idle server connections, let in-flight requests finish (their connections close after the
  response, which says ``Connection: close``), exit when none is left. An idle keep-alive client
  connection is closed after ``SOFT_STOP_IDLE_GRACE`` if no request came meanwhile: closing it at
  once would race with the request its client is sending right now (it would be cut), while one
  more request answered with ``Connection: close`` moves the client cleanly to the new generation;
- SIGINT is ignored: in the foreground a Ctrl-C reaches the whole process group and the master
  decides. The worker also exits if the master dies (parent-death signal, and a periodic check).

Stealing (``tune.idle-pool.shared on``, several workers): the worker publishes its pooled
connections in its slots of the shared table (``ServerRuntime.lend_from``) and decides once, at
start, how it takes other workers' connections: with ``pidfd_getfd`` (``proxy.steal``) when a probe
on the master's descriptor works, else over the SCM_RIGHTS channel; the start-up line says which
and why. A sweep every ``SWEEP_TICK`` finalizes the slots other workers took, and every
``LIVENESS_EVERY`` ticks peeks at every parked connection (reading is paused while parked).

Each listener is served through an ``Acceptor`` that the worker switches off while it holds its
share of a ``maxconn`` (global or the frontend's; ``proxy.admission``): connections beyond it wait
in the shared backlog. Once its listeners and channel are set up, and before it tells the master
READY, the worker drops its privileges as configured (``chroot``, ``user``, ``group``:
``proxy.privileges``).

Health checks (``proxy.checks``): every worker runs the checks whose records it owns in the shared
table, and closes its idle connections to a server once that server stops being usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import socket
import time
from typing import Final, NoReturn

from proxy import pidfd, privileges
from proxy.acceptor import Acceptor
from proxy.admission import gate_for
from proxy.backend import Backend
from proxy.checks import HealthChecks
from proxy.client_mux import ClientMux, MuxFactory
from proxy.config.model import Config, Proxy
from proxy.donor import Donor, WorkerLink
from proxy.env import StreamEnv
from proxy.front_counter import FrontCounter, for_worker
from proxy.frontend import Frontend
from proxy.h1 import Limits
from proxy.h2 import Settings as H2Settings
from proxy.listener import Listener
from proxy.log import LogSink, notice
from proxy.queue import Queues
from proxy.server import ServerRuntime
from proxy.services import Services
from proxy.shm import F_BAD_REQ, ShmTable
from proxy.slots import make_owner
from proxy.steal import Thief
from proxy.takeover import Channel, Message
from proxy.tls import server_context

PR_SET_PDEATHSIG = 1
HEARTBEAT_INTERVAL = 1.0
SWEEP_TICK = 0.1  # seconds between two looks at this worker's slots (what other workers took)
LIVENESS_EVERY = 10  # ticks between two peeks at every parked connection
ACCEPT_SETTLE = 0.05  # soft stop: how long a connection just accepted has to reach its protocol
SOFT_STOP_IDLE_GRACE = 1.0  # seconds an idle keep-alive client may still send a request in a soft stop


class WorkerState:
    """Everything one worker owns: backends with their servers, one stream environment per
    frontend, the takeover channel and its donor, the client registry, stopping."""

    def __init__(self, slot: int, config: Config, loop: asyncio.AbstractEventLoop, table: ShmTable) -> None:
        self.slot = slot
        self.config = config
        self.loop = loop
        self.table = table
        g = config.global_
        # HAProxy's tune.http.maxhdr counts one slot more than the header lines it lets in
        limits = Limits(max_head=g.bufsize, max_headers=g.maxhdr - 1)
        self.link = WorkerLink(slot, table.nworkers, loop)
        self.link.shared = g.idle_pool_shared
        self.channel: Channel | None = None
        self.queues = self.link.queues = Queues(table, slot, loop, self._send)
        self.by_index: dict[int, ServerRuntime] = {}
        self.backends: dict[str, Backend] = {}
        for name, cfg in config.backends.items():
            servers = []
            for s in cfg.servers:
                i = table.server_index(name, s.name)
                cells = [table.cell(i, w) for w in range(table.nworkers)]
                servers.append(ServerRuntime(name, i, s, cells, slot))
            self.backends[name] = Backend(cfg, servers, g.h1_engine, limits, self.link, g)
            for srv in servers:
                self.by_index[srv.index] = srv
        self.donor = Donor(self.link, self.by_index, g.h1_engine, limits, self.queues.granted)
        self.link.late = self.donor.adopt_late
        self.clients: set[ClientMux] = set()
        self.h2 = h2_settings(config)
        self.stopping = False
        self.log = LogSink(list(g.log_targets), g.log_tag, g.log_send_hostname)
        self.envs = {
            name: StreamEnv(Frontend(cfg, self.backends, g.h1_engine, limits), self, self.log, g.h1_engine,
                            limits, g.bufsize)
            for name, cfg in config.frontends.items()
        }  # fmt: skip
        # maxconn: this worker's share of the global limit and of each frontend's (proxy.admission)
        n = table.nworkers
        self.gate = gate_for(g.maxconn, n, slot)
        self.fe_gates = {name: gate_for(cfg.maxconn, n, slot) for name, cfg in config.frontends.items()}
        self.acceptors: list[Acceptor] = []
        self.front_ids = {name: table.front_index(name) for name in config.frontends}
        self.counters = {name: for_worker(table, f, slot) for name, f in self.front_ids.items()}
        services = Services(table, config)
        for env in self.envs.values():
            env.services = services
        # Health checks: the ones this worker owns, and closing idle connections to servers that
        # stop being usable (proxy.checks)
        self.checks = HealthChecks(
            loop,
            table,
            slot,
            [(be.cfg, be.servers) for be in self.backends.values()],
            g.spread_checks,
            self._log_check,
        )

    def _log_check(self, backend: Proxy, line: str) -> None:
        """A health check's event line goes to the backend's log targets (``log global``)."""
        if backend.log_global and self.log.enabled:
            self.log.emit(line)

    @property
    def requests(self) -> int:
        return sum(env.requests for env in self.envs.values())

    # -- the client registry (proxy.env.Clients) ------------------------------------------------
    def client_opened(self, client: object) -> None:
        assert isinstance(client, ClientMux)
        self.clients.add(client)
        self.counters[client.cfg.name].opened()
        full = self.fe_gates[client.cfg.name].opened()
        if self.gate.opened() or full:
            self.update_accepting()

    def client_closed(self, client: object) -> None:
        assert isinstance(client, ClientMux)
        if client not in self.clients:
            return
        self.clients.discard(client)
        self.counters[client.cfg.name].closed()
        freed = self.fe_gates[client.cfg.name].closed()
        if self.gate.closed() or freed:
            self.update_accepting()
        if self.stopping and not self.clients:
            self.loop.stop()

    def accepting(self, frontend: str) -> bool:
        return not self.stopping and not self.gate.full and not self.fe_gates[frontend].full

    def update_accepting(self) -> None:
        """Accept on the listeners whose limits (global, frontend) leave room; the others wait."""
        for acceptor in self.acceptors:
            acceptor.switch(self.accepting(acceptor.frontend))

    def client_count(self) -> int:
        return len(self.clients)

    def feconn(self, frontend: str) -> int:
        return self.table.feconn(self.front_ids[frontend])

    def actconn(self) -> int:
        return self.table.actconn()

    def front_counter(self, frontend: str) -> FrontCounter:
        return self.counters[frontend]

    def count_bad_request(self, frontend: str) -> None:
        self.counters[frontend].count(F_BAD_REQ)

    def _send(self, slot: int, msg: Message) -> bool:
        return self.channel.send(slot, msg) if self.channel is not None else False

    # -- lending and stealing -------------------------------------------------------------------
    def start_stealing(self, ppid: int, probe_fd: int) -> None:
        """Publish our pooled connections in our slots, and choose how we steal (logged)."""
        link = self.link
        if not link.shared or self.table.nworkers < 2:
            link.steal_via = "off" if not link.shared else "none (one worker)"
            return
        me = self.table.worker(self.slot)
        for srv in self.by_index.values():
            srv.lend_from(self.table.slots(srv.index, self.slot), make_owner(self.slot, me.incarnation))
        reason = pidfd.probe(ppid, probe_fd)
        if reason is None:
            link.thief = Thief(self.table, self.slot)
            link.steal_via = "pidfd_getfd"
        else:
            link.steal_via = f"channel ({reason})"
        notice(f"worker {self.slot}: stealing idle connections with {link.steal_via}")
        self.loop.call_later(SWEEP_TICK, self.sweep, 1)

    def sweep(self, tick: int) -> None:
        """Finalize what other workers took from our slots; now and then, peek at every parked
        connection and close those their server closed."""
        if self.stopping:
            return
        for srv in self.by_index.values():
            srv.close_idle_if_maint()  # the runtime API's ``maint`` reaches every worker here
            if tick % LIVENESS_EVERY == 0:
                srv.sweep()
            elif srv.published:
                srv.settle_if_rung()
        self.loop.call_later(SWEEP_TICK, self.sweep, tick + 1)

    def heartbeat(self) -> None:
        """Every second: tell the master we live, and claim any maxconn slot handed to this slot
        whose SLOT datagram never arrived (sent while the slot was being respawned): passed on to
        a waiter, or given back, so a slot is never stranded."""
        self.table.heartbeat(self.slot)
        for srv in self.by_index.values():
            if srv.cell.incoming > 0:
                self.queues.granted(srv)
        if not self.stopping:
            self.loop.call_later(HEARTBEAT_INTERVAL, self.heartbeat)

    # -- stopping -----------------------------------------------------------------------------
    def soft_stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.link.stopping = True
        self.checks.stop()
        for acceptor in self.acceptors:
            acceptor.close()
        self.donor.close_idle()
        self.loop.call_later(SOFT_STOP_IDLE_GRACE, self._close_idle_clients)
        if not self.clients:
            # Not at once: a connection accepted in this very iteration is handed to its protocol
            # (connection_made) on a later one; stopping now would exit with it unread, and the
            # kernel would reset it. Once registered, its end stops the loop (client_closed).
            self.loop.call_later(ACCEPT_SETTLE, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        if not self.clients:
            self.loop.stop()

    def _close_idle_clients(self) -> None:
        """Soft stop, after the grace: the keep-alive clients that sent nothing are closed."""
        for client in list(self.clients):
            if client.idle:
                client.close()
            else:
                client.drain()  # HTTP/2: GOAWAY, the streams in flight finish

    def hard_stop(self) -> None:
        self.stopping = True
        self.loop.stop()


def h2_settings(config: Config) -> H2Settings:
    """The client side's HTTP/2 limits, from ``tune.h2.*`` and the HTTP/1 head limits."""
    g = config.global_
    return H2Settings(
        max_concurrent_streams=g.h2_fe_max_concurrent_streams or g.h2_max_concurrent_streams,
        header_table_size=g.h2_header_table_size,
        initial_window_size=g.h2_fe_initial_window_size or g.h2_initial_window_size,
        max_frame_size=g.h2_max_frame_size,
        max_total_streams=g.h2_fe_max_total_streams,
        glitches_threshold=g.h2_fe_glitches_threshold,
        max_head=g.bufsize,
        max_headers=g.maxhdr - 1,  # as HTTP/1's (HAProxy's count)
        engine=g.h2_engine,
    )


def _set_pdeathsig() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _await_registration(table: ShmTable, slot: int, timeout: float = 2.0) -> None:
    """The master writes our pid and incarnation right after the fork: wait for them (the
    incarnation goes into every slot we publish)."""
    deadline = time.monotonic() + timeout
    while table.worker(slot).pid != os.getpid() and time.monotonic() < deadline:
        time.sleep(0.0005)


def _watch_parent(loop: asyncio.AbstractEventLoop, ppid: int, state: WorkerState) -> None:
    if os.getppid() != ppid:
        state.hard_stop()
        return
    loop.call_later(1.0, _watch_parent, loop, ppid, state)


STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGUSR1})  # blocked until the loop runs


def unblock_stop_signals() -> None:
    """Let SIGTERM and SIGUSR1 in (from the running loop: a pending one is handled at once)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


GC_GEN0: Final = 10_000  # container allocations between young collections (Python's default: 700)


def tune_gc(mode: str | None = None) -> None:
    """The cyclic collector of a worker about to serve (``mode``: ``POOLPROXY_GC``, for benchmarks).

    Everything built so far (modules, configuration, the shared table's views) lives as long as the
    worker: ``gc.freeze()`` moves it out of the collector's sight, so that the collections that
    follow traverse only what requests allocate. A request's objects die with it (reference
    counting: nothing on the request paths is left in a cycle, tests/test_mux_h2.py checks the
    HTTP/2 one), but with 500 HTTP/2 streams in flight the default threshold (700) collected every
    few requests, traversing and promoting the streams in flight: 4 % of an h2load run's CPU
    (perf), not measurable with this (docs/performance.md). ``POOLPROXY_GC=default`` keeps
    Python's settings, ``freeze`` only freezes, a number sets the young generation's threshold
    instead of GC_GEN0."""
    mode = os.environ.get("POOLPROXY_GC", "") if mode is None else mode
    if mode == "default":
        return
    gc.collect()
    gc.freeze()
    if mode != "freeze":
        gc.set_threshold(int(mode) if mode else GC_GEN0, 10, 10)


def run(
    slot: int, config: Config, listeners: list[Listener], ctl: socket.socket, ppid: int, table: ShmTable
) -> NoReturn:
    """The worker's main: never returns (the process exits)."""
    import uvloop  # imported after the fork, only in workers

    # The stop signals stay blocked (pending, not lost) until the loop runs for good: the master
    # blocks them across the fork. uvloop handles a signal only while its loop runs (the wake-up
    # descriptor is set then): one that arrived in between — a SIGUSR1 sent right after READY,
    # while the collector below ran — was dropped, and the worker never stopped.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _set_pdeathsig()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    state = WorkerState(slot, config, loop, table)
    loop.add_signal_handler(signal.SIGTERM, state.hard_stop)
    loop.add_signal_handler(signal.SIGUSR1, state.soft_stop)
    code = 0
    try:
        state.channel = state.link.channel = Channel(loop, table.name, slot, state.donor)
        _await_registration(table, slot)
        state.start_stealing(ppid, listeners[0].sock.fileno() if listeners else ctl.fileno())
        state.heartbeat()
        state.checks.start()
        for lst in listeners:
            env = state.envs[lst.frontend]
            bind = lst.bind
            tls = bind.tls if bind is not None else None
            proto = bind.proto if bind is not None else ""
            factory = MuxFactory(env, state.h2, proto=proto, tls=tls is not None)
            ctx = server_context(tls, config.global_.ssl_bind) if tls is not None else None
            acceptor = Acceptor(loop, lst, factory, ctx, env.cfg.timeouts.client)
            state.acceptors.append(acceptor)
            if state.accepting(lst.frontend):  # a share of 0: this worker leaves it to the others
                loop.run_until_complete(acceptor.start())
        if privileges.wanted(config.global_):
            privileges.drop(config.global_)  # everything is set up: nothing more is read from files
            _set_pdeathsig()  # a change of credentials cleared it
        with contextlib.suppress(OSError):
            ctl.send(f"READY {slot} {os.getpid()}".encode())
        _watch_parent(loop, ppid, state)
        tune_gc()
        if not state.stopping:
            loop.call_soon(unblock_stop_signals)  # a pending one is delivered now, and handled
            loop.run_forever()
    except Exception as exc:  # a worker that cannot start says why; the master respawns it
        notice(f"worker {slot} failed: {exc!r}")
        code = 1
    finally:
        if state.stopping:
            notice(f"worker {slot} (pid {os.getpid()}) exiting after {state.requests} requests")
    os._exit(code)
