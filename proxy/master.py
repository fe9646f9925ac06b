"""The master process: binds the listeners, forks the workers, supervises them.

No event loop runs here (DESIGN.md §2): a ``selectors`` loop waits on the signal wake-up pipe and the
workers' control sockets. Signal handlers only enqueue the signal number; ``run()`` dispatches each to
a ``handle_<name>`` method (gunicorn's arbiter shape):

- SIGCHLD → reap; a worker that died while we are not stopping is respawned in the same slot
  (immediately, or after a short back-off when that slot keeps dying right after its start);
- SIGTERM / SIGINT → hard stop: SIGTERM to every worker, SIGKILL to those still alive after
  ``HARD_STOP_GRACE``, exit;
- SIGUSR1 → soft stop: SIGUSR1 to every worker (they finish in-flight requests), exit when all are
  gone (SIGKILL after ``hard-stop-after``, ``SOFT_STOP_LIMIT`` when it is not set).

Before binding, the master raises the file descriptor limit to what ``maxconn``/``ulimit-n`` need
(``proxy.limits``); under ``strict-limits`` (the default) failing to is fatal. It keeps its own
privileges; the workers drop theirs (``chroot``, ``user``, ``group``: ``proxy.privileges``), which
the master checks they will be able to do before it binds.

The master owns the shared-memory table (``proxy.shm``): it removes the segments of dead earlier
runs, creates this generation's before forking, and unlinks it on exit. When it reaps a worker it
marks the slot DEAD and reconciles its cells (idle, used, maxconn slots, queue) *before* the
respawn, so the server-wide numbers equal the sum of the live workers' cells again. It also plans
the purge of idle connections (SEMANTICS.md §3), once per ``pool-purge-delay`` per server, from the
server-wide numbers, and sends each worker holding idle connections a PURGE datagram; every worker
closes its own share.

The master imports no HTTP code: the worker entry point is named as ``"module:function"`` and
imported in the child after the fork.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from proxy import privileges
from proxy.cli import CliServer, Session, SocketSpec
from proxy.config.model import Config
from proxy.limits import needed_fds, raise_fd_limit
from proxy.listener import Listener, bind_all
from proxy.log import alert, notice, warning
from proxy.pool_policy import purge_plan
from proxy.shm import (
    R_EST_NEED,
    R_MAX_CUR_CONNS,
    R_MAX_QUEUE,
    R_MAX_SERVED,
    R_MAX_USED,
    ShmTable,
    WorkerState,
    cleanup_stale,
)
from proxy.slot_array import NSLOTS
from proxy.takeover import PURGE, Message, notify

HARD_STOP_GRACE = 5.0
SOFT_STOP_LIMIT = 60.0
RESPAWN_FAST_FAIL = 1.0  # a worker dying sooner than this after its start counts as a fast failure
RESPAWN_BACKOFF = 2.0  # delay before respawning a slot after 3 fast failures in a row


@dataclass(slots=True)
class WorkerRecord:
    slot: int
    pid: int = 0
    started: float = 0.0
    ready: bool = False
    fast_failures: int = 0
    respawn_at: float = 0.0
    ctl: socket.socket | None = None
    generation: int = 0


@dataclass(slots=True)
class MasterState:
    stopping: str = ""  # "", "soft" or "hard"
    stop_deadline: float = 0.0
    signals: list[int] = field(default_factory=list)


class Master:
    def __init__(
        self,
        config: Config,
        worker_entry: str = "proxy.worker:run",
        nworkers: int | None = None,
        pidfile: str | None = None,
    ) -> None:
        self.config = config
        self.worker_entry = worker_entry
        n = nworkers or config.global_.nbthread or len(os.sched_getaffinity(0))
        self.workers = [WorkerRecord(slot=i) for i in range(n)]
        self.pidfile = pidfile or config.global_.pidfile
        self.listeners: list[Listener] = []
        self.state = MasterState()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        self.table: ShmTable | None = None
        self.cli: CliServer | None = None
        self.next_purge: dict[int, float] = {}  # server index -> monotonic time of its next purge
        self.soft_stop_limit = config.global_.hard_stop_after or SOFT_STOP_LIMIT

    # -- signals --------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

        def enqueue(signum: int, _frame: object) -> None:
            self.state.signals.append(signum)

        for sig in (
            signal.SIGCHLD,
            signal.SIGTERM,
            signal.SIGINT,
            signal.SIGUSR1,
            signal.SIGHUP,
            signal.SIGUSR2,
        ):
            signal.signal(sig, enqueue)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)

    def _dispatch_signals(self) -> None:
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGCHLD: self.handle_chld,
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_term,
            signal.SIGUSR1: self.handle_usr1,
            signal.SIGHUP: self.handle_hup,
            signal.SIGUSR2: self.handle_hup,
        }
        while self.state.signals:
            handlers[self.state.signals.pop(0)]()

    def handle_chld(self) -> None:
        self.reap()

    def handle_term(self) -> None:
        if self.state.stopping != "hard":
            notice("hard-stopping workers")
            self.state.stopping = "hard"
            self.state.stop_deadline = time.monotonic() + HARD_STOP_GRACE
            self._signal_workers(signal.SIGTERM)

    def handle_usr1(self) -> None:
        if not self.state.stopping:
            notice("soft-stopping workers (finishing in-flight requests)")
            self.state.stopping = "soft"
            self.state.stop_deadline = time.monotonic() + self.soft_stop_limit
            self._signal_workers(signal.SIGUSR1)
            for lst in self.listeners:
                lst.sock.close()

    def handle_hup(self) -> None:
        notice("reload is not implemented yet; ignoring the signal")

    def _signal_workers(self, sig: int) -> None:
        for w in self.workers:
            if w.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, sig)

    # -- workers ------------------------------------------------------------------------------
    def spawn(self, w: WorkerRecord) -> None:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ppid = os.getpid()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP, signal.SIGUSR2):
                    signal.signal(sig, signal.SIG_DFL)
                parent_sock.close()
                for other in self.workers:
                    if other.ctl is not None:
                        other.ctl.close()
                os.close(self.wake_r)
                os.close(self.wake_w)
                module, _, func = self.worker_entry.partition(":")
                entry = getattr(importlib.import_module(module), func)
                entry(w.slot, self.config, self.listeners, child_sock, ppid, self.table)
                code = 0
            except BaseException as exc:
                alert(f"worker {w.slot} failed to start: {exc!r}")
            finally:
                os._exit(code)
        child_sock.close()
        if self.table is not None:
            self.table.register_worker(w.slot, pid, w.generation + 1)
            self.table.set_worker_state(w.slot, WorkerState.STARTING)
        if w.ctl is not None:
            self._unregister(w.ctl)
            w.ctl.close()
        parent_sock.setblocking(False)
        w.ctl = parent_sock
        w.pid = pid
        w.started = time.monotonic()
        w.ready = False
        w.generation += 1
        self.selector.register(parent_sock, selectors.EVENT_READ, w)
        notice(f"New worker ({pid}) forked in slot {w.slot}")

    def _unregister(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for w in self.workers:
                if w.pid == pid:
                    self._worker_exited(w, status)
                    break

    def _worker_exited(self, w: WorkerRecord, status: int) -> None:
        how = (
            f"exit code {os.waitstatus_to_exitcode(status)}"
            if os.WIFEXITED(status)
            else f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        )
        w.pid = 0
        if self.table is not None:
            self.table.set_worker_state(w.slot, WorkerState.DEAD)
            report = self.table.reconcile_worker(w.slot)
            repaired = (any(report.reclaimed.values()) or report.slots_cleared or report.claims_returned
                        or report.checks_released)  # fmt: skip
            if repaired and not self.state.stopping:
                notice(f"reconciled the shared table after worker {w.slot}: {report}")
        if w.ctl is not None:
            self._unregister(w.ctl)
            w.ctl.close()
            w.ctl = None
        if self.state.stopping:
            notice(f"Worker in slot {w.slot} exited ({how})")
            return
        alert(f"Current worker (slot {w.slot}) exited with {how}: respawning")
        now = time.monotonic()
        w.fast_failures = w.fast_failures + 1 if now - w.started < RESPAWN_FAST_FAIL else 0
        w.respawn_at = now + (RESPAWN_BACKOFF if w.fast_failures >= 3 else 0.0)
        if w.respawn_at <= now:
            self.spawn(w)

    def _read_ctl(self, w: WorkerRecord) -> None:
        assert w.ctl is not None
        try:
            msg = w.ctl.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            msg = b""
        if not msg:
            self._unregister(w.ctl)
            return
        if msg.startswith(b"READY"):
            w.ready = True
            if self.table is not None:
                self.table.set_worker_state(w.slot, WorkerState.RUNNING)
            if all(x.ready for x in self.workers):
                notice(f"Loading success: {len(self.workers)} workers ready.")

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> int:
        g = self.config.global_
        problem = raise_fd_limit(needed_fds(g, sum(len(fe.binds) for fe in self.config.frontends.values())))
        if problem is not None:
            if g.strict_limits:
                alert(problem)
                return 1
            warning(problem)
        if privileges.wanted(g):  # the workers drop them; check now that they will be able to
            problem = privileges.preflight(g)
            if problem is None and g.chroot:
                problem = privileges.resolve_servers(self.config)
            if problem is not None:
                alert(problem)
                return 1
        try:
            self.listeners = bind_all(self.config)
        except Exception as exc:
            alert(str(exc))
            return 1
        for stale in cleanup_stale():
            notice(f"removed stale shared memory {stale}")
        try:
            # Slots for lending idle connections only where workers may steal (proxy.slots)
            lending = self.config.global_.idle_pool_shared and len(self.workers) > 1
            nslots = NSLOTS if lending else 0
            self.table = ShmTable.create(self.config, len(self.workers), nslots=nslots)
        except Exception as exc:
            alert(f"cannot create the shared-memory table: {exc}")
            return 1
        if self.pidfile:
            with open(self.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        self._install_signals()
        self.cli = CliServer(self.config, self.table.snapshot, self._clear_max, lambda: self.table)
        try:
            self.cli.bind()
        except (OSError, ValueError) as exc:
            alert(f"cannot bind the stats socket: {exc}")
            self.cli.close()
            return 1
        for lsock, spec in self.cli.listeners:
            self.selector.register(lsock, selectors.EVENT_READ, (lsock, spec))
        notice(
            f"poolproxy master started, {len(self.workers)} workers, {len(self.listeners)} listeners, "
            f"HTTP/1 engine {self.config.global_.h1_engine}"
        )
        for w in self.workers:
            self.spawn(w)
        try:
            return self._loop()
        finally:
            self.cli.close()
            self.table.close()
            self.table.unlink()
            if self.pidfile:
                with contextlib.suppress(OSError):
                    os.unlink(self.pidfile)

    def _loop(self) -> int:
        while True:
            try:
                events = self.selector.select(timeout=0.5)
            except InterruptedError:
                events = []
            for key, _ in events:
                if key.data is None:
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except OSError as exc:
                        if exc.errno != errno.EAGAIN:
                            raise
                elif isinstance(key.data, WorkerRecord):
                    self._read_ctl(key.data)
                else:
                    self._cli_event(key.data)
            self._dispatch_signals()
            now = time.monotonic()
            self._cli_expire(now)
            if self.state.stopping:
                alive = [w for w in self.workers if w.pid]
                if not alive:
                    notice("all workers exited; master exiting")
                    return 0
                if now > self.state.stop_deadline:
                    for w in alive:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(w.pid, signal.SIGKILL)
                    self.state.stop_deadline = now + HARD_STOP_GRACE
                continue
            for w in self.workers:
                if not w.pid and w.respawn_at and now >= w.respawn_at:
                    self.spawn(w)
            self._purge(now)

    # -- runtime API ----------------------------------------------------------------------------
    def _cli_event(self, data: object) -> None:
        cli = self.cli
        if cli is None:
            return
        if isinstance(data, Session):
            if not cli.readable(data):
                self.selector.unregister(data.sock)
                cli.close_session(data)
            return
        lsock, spec = cast("tuple[socket.socket, SocketSpec]", data)
        sess = cli.accept(lsock, spec)
        if sess is not None:
            self.selector.register(sess.sock, selectors.EVENT_READ, sess)

    def _clear_max(self) -> None:
        """``clear counters``: each row's peaks (smax, qmax...) back to the current values."""
        table = self.table
        if table is None:
            return
        for info in table.servers:
            row = table.row(info.index)
            row.store(R_MAX_SERVED, row.served)
            row.store(R_MAX_CUR_CONNS, row.cur_conns)
            row.store(R_MAX_QUEUE, row.queue_len)

    def _cli_expire(self, now: float) -> None:
        if self.cli is None:
            return
        for sess in self.cli.expired(now):
            self.selector.unregister(sess.sock)
            self.cli.close_session(sess)

    # -- purge planning -------------------------------------------------------------------------
    def _purge(self, now: float) -> None:
        """Every pool-purge-delay per server: halve the excess idle connections (SEMANTICS §3)."""
        table = self.table
        if table is None:
            return
        for info in table.servers:
            i = info.index
            delay = self._purge_delay(info.backend, info.name)
            if delay <= 0:
                continue
            due = self.next_purge.setdefault(i, now + delay)
            if now < due:
                continue
            self.next_purge[i] = now + delay
            row = table.row(i)
            idle = row.idle
            if idle <= 0:
                continue  # HAProxy leaves the estimates alone when nothing is idle
            plan = purge_plan(used=row.used, idle=idle, max_used=row.max_used, est_need=row.est_need)
            row.store(R_EST_NEED, plan.est_need)
            row.store(R_MAX_USED, plan.max_used)
            if plan.to_close <= 0:
                continue
            for slot in range(table.nworkers):
                if table.cell(i, slot).idle > 0:
                    notify(table.name, slot, Message(PURGE, server=i, n=plan.to_close, idle=idle))

    def _purge_delay(self, backend: str, server: str) -> float:
        be = self.config.backends.get(backend)
        if be is None:
            return 0.0
        for s in be.servers:
            if s.name == server:
                return s.pool_purge_delay
        return 0.0
