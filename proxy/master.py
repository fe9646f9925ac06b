"""The master process: binds the listeners, forks generations of workers, supervises them, reloads.

No event loop runs here (DESIGN.md §2): a ``selectors`` loop waits on the signal wake-up pipe, the
workers' control sockets and the CLI sockets. Signal handlers only enqueue the signal number;
``run()`` dispatches each to a ``handle_<name>`` method (gunicorn's arbiter shape):

- SIGCHLD → reap; a worker of the current generation that died while we are not stopping is
  respawned in the same slot (immediately, or after a short back-off when that slot keeps dying
  right after its start);
- SIGTERM / SIGINT → hard stop: SIGTERM to every worker, SIGKILL to those still alive after
  ``HARD_STOP_GRACE``, exit;
- SIGUSR1 → soft stop: SIGUSR1 to every worker (they finish in-flight requests), exit when all are
  gone (SIGKILL after ``hard-stop-after``, ``SOFT_STOP_LIMIT`` when it is not set);
- SIGUSR2 / SIGHUP (and the master CLI's ``reload``) → hitless reload, below.

Reload (``proxy.generation``). The configuration files are read and checked again; an invalid one
changes nothing (the error goes to the log, to ``show proc`` and the CLI's answer, and to systemd's
STATUS). A valid one gets the next generation: the listening sockets it still names are kept as they
are (never closed, so no connection is refused), new addresses are bound, and the generation gets
its own shared table; its workers are forked. Once all of them are READY it becomes current and
the previous one is soft-stopped: its workers stop accepting, finish their in-flight requests
(keep-alive responses say ``Connection: close``), close their idle server connections and exit;
``hard-stop-after`` bounds the wait, then they are killed. When its last worker is gone its
segment is unlinked and the listeners only it used are closed. A new worker that dies before its
generation is ready, or a generation not ready within ``RELOAD_READY_LIMIT``, aborts the reload the
same way. A reload asked for while one is in progress follows it (the files are read again then:
an edit made meanwhile is not lost).

Watchdog: a READY worker of the current generation whose heartbeat in the shared table is older than
``worker-watchdog-timeout`` (its loop is stuck) is killed with SIGKILL and then reaped and respawned
like any crashed worker, its cells reconciled.

Before binding, the master raises the file descriptor limit to what ``maxconn``/``ulimit-n`` need
(``proxy.limits``); under ``strict-limits`` (the default) failing to is fatal. It keeps its own
privileges; the workers drop theirs (``chroot``, ``user``, ``group``: ``proxy.privileges``), which
the master checks they will be able to do before it binds. Every start-up failure is one
``[ALERT]`` line and exit code 1.

The master owns the shared-memory tables (``proxy.shm``): it removes the segments of dead earlier
runs, creates each generation's before forking, and unlinks it when that generation is gone. When
it reaps a worker it marks the slot DEAD and reconciles its cells (idle, used, maxconn slots,
queue) *before* the respawn, so the server-wide numbers equal the sum of the live workers' cells
again. It also plans the purge of idle connections (SEMANTICS.md §3) for the current generation,
once per ``pool-purge-delay`` per server, and sends each worker holding idle connections a PURGE
datagram; every worker closes its own share.

In ``-Ws`` mode it speaks systemd's notify protocol (``proxy.sdnotify``); the master CLI (``-S``)
is ``proxy.master_cli``; the runtime API (``stats socket``) is ``proxy.cli``, answered from the
current generation's table.

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

from proxy import cli as runtime_api
from proxy import privileges
from proxy.cli import CliServer, Session, SocketSpec
from proxy.config import ConfigError, load
from proxy.config.model import Config
from proxy.generation import Generation, GenerationError, WorkerRecord, build
from proxy.limits import needed_fds, raise_fd_limit
from proxy.listener import Listener
from proxy.log import alert, notice, warning
from proxy.master_cli import MasterCli, MasterSession, MasterSocketSpec, ProcLine
from proxy.pool_policy import purge_plan
from proxy.sdnotify import Notifier, unset_in_children
from proxy.shm import (
    R_ADMIN_STATE,
    R_EST_NEED,
    R_MAX_CUR_CONNS,
    R_MAX_QUEUE,
    R_MAX_SERVED,
    R_MAX_USED,
    AdminState,
    ShmTable,
    WorkerState,
    cleanup_stale,
)
from proxy.takeover import PURGE, Message, notify

HARD_STOP_GRACE = 5.0
SOFT_STOP_LIMIT = 60.0
RESPAWN_FAST_FAIL = 1.0  # a worker dying sooner than this after its start counts as a fast failure
RESPAWN_BACKOFF = 2.0  # delay before respawning a slot after 3 fast failures in a row
RELOAD_READY_LIMIT = 30.0  # a new generation not ready by then is aborted

__all__ = ["Master", "Options", "WorkerRecord"]


@dataclass(slots=True)
class Options:
    """What the command line gives the master beyond the configuration."""

    files: list[str] = field(default_factory=list)  # re-read at each reload
    zero_warning: bool = False
    pidfile: str | None = None
    nworkers: int | None = None
    master_sockets: list[MasterSocketSpec] = field(default_factory=list)  # -S
    systemd: bool = False  # -Ws
    takeover_pids: list[int] = field(default_factory=list)  # -sf / -st
    takeover_signal: int = signal.SIGUSR1
    inherited: list[socket.socket] = field(default_factory=list)  # -x
    started: Callable[[], None] | None = None  # called once listening (-D detaches there)


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
        options: Options | None = None,
    ) -> None:
        self.opts = options or Options()
        self.opts.nworkers = nworkers or self.opts.nworkers
        self.config = config
        self.worker_entry = worker_entry
        self.pidfile = pidfile or self.opts.pidfile or config.global_.pidfile
        self.listeners: list[Listener] = []
        self.state = MasterState()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        self.current: Generation | None = None
        self.pending: Generation | None = None  # a reload's generation, not ready yet
        self.old: list[Generation] = []
        self.retired: list[Listener] = []  # listeners gone from the config, closed once unused
        self.cli: CliServer | None = None
        self.mcli: MasterCli | None = None
        self.notifier = Notifier() if self.opts.systemd else Notifier({})
        self.next_purge: dict[int, float] = {}  # server index -> monotonic time of its next purge
        self.started_wall = time.time()
        self.reloads = 0
        self.failed_reloads = 0
        self.last_reload_error = ""
        self.reload_waiters: list[Callable[[bool, str], None]] = []  # answered by the next outcome
        self.reload_queued = False  # asked for during a reload: starts when that one is over
        self.queued_waiters: list[Callable[[bool, str], None]] = []  # answered by the queued one
        self.generations = 0
        self._pending_gone: list[Listener] = []  # current listeners the pending generation drops

    @property
    def table(self) -> ShmTable | None:
        return self.current.table if self.current is not None else None

    @property
    def workers(self) -> list[WorkerRecord]:
        return self.current.workers if self.current is not None else []

    @property
    def soft_stop_limit(self) -> float:
        return self.config.global_.hard_stop_after or SOFT_STOP_LIMIT

    def generations_alive(self) -> list[Generation]:
        return [*self.old, *(g for g in (self.current, self.pending) if g is not None)]

    def all_workers(self) -> list[WorkerRecord]:
        return [w for g in self.generations_alive() for w in g.workers]

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
            self.notifier.stopping()
            self.state.stopping = "hard"
            self.state.stop_deadline = time.monotonic() + HARD_STOP_GRACE
            self._signal_workers(signal.SIGTERM)

    def handle_usr1(self) -> None:
        if not self.state.stopping:
            notice("soft-stopping workers (finishing in-flight requests)")
            self.notifier.stopping()
            self.state.stopping = "soft"
            self.state.stop_deadline = time.monotonic() + self.soft_stop_limit
            self._signal_workers(signal.SIGUSR1)
            for lst in [*self.listeners, *self.retired]:
                lst.sock.close()

    def handle_hup(self) -> None:
        self.reload()

    def _signal_workers(self, sig: int, workers: list[WorkerRecord] | None = None) -> None:
        for w in self.all_workers() if workers is None else workers:
            if w.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, sig)

    # -- workers ------------------------------------------------------------------------------
    def spawn(self, w: WorkerRecord, gen: Generation | None = None) -> None:
        gen = gen or self._gen_of(w)
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
                self._close_in_child(gen)
                unset_in_children()
                module, _, func = self.worker_entry.partition(":")
                entry = getattr(importlib.import_module(module), func)
                entry(w.slot, gen.config, gen.listeners, child_sock, ppid, gen.table)
                code = 0
            except BaseException as exc:
                alert(f"worker {w.slot} failed to start: {exc!r}")
            finally:
                os._exit(code)
        child_sock.close()
        gen.table.register_worker(w.slot, pid, w.incarnation + 1)
        gen.table.set_worker_state(w.slot, WorkerState.STARTING)
        if w.ctl is not None:
            self._unregister(w.ctl)
            w.ctl.close()
        parent_sock.setblocking(False)
        w.ctl = parent_sock
        w.pid = pid
        w.started = time.monotonic()
        w.started_wall = time.time()
        w.ready = False
        w.incarnation += 1
        self.selector.register(parent_sock, selectors.EVENT_READ, w)
        notice(f"New worker ({pid}) forked in slot {w.slot} (generation {gen.number})")

    def _close_in_child(self, gen: Generation) -> None:
        """What a worker must not keep: other workers' control sockets, the master's own sockets,
        and every listening socket its generation does not use (a removed address must stop
        listening when the master closes it, not when this worker exits)."""
        for other in self.all_workers():
            if other.ctl is not None:
                other.ctl.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        if self.cli is not None:
            for lsock, _ in self.cli.listeners:
                lsock.close()
            for sess in self.cli.sessions.values():
                sess.sock.close()
        if self.mcli is not None:
            for lsock in self.mcli.listeners:
                lsock.close()
            for msess in self.mcli.sessions.values():
                msess.sock.close()
        mine = {id(lst.sock) for lst in gen.listeners}
        for g in self.generations_alive():
            for lst in [*g.listeners, *self.retired, *self.listeners]:
                if id(lst.sock) not in mine and lst.sock.fileno() >= 0:
                    lst.sock.close()

    def _gen_of(self, w: WorkerRecord) -> Generation:
        return next(g for g in self.generations_alive() if w in g.workers)

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
            for gen in self.generations_alive():
                w = gen.find(pid)
                if w is not None:
                    self._worker_exited(gen, w, status)
                    break

    def _worker_exited(self, gen: Generation, w: WorkerRecord, status: int) -> None:
        how = (
            f"exit code {os.waitstatus_to_exitcode(status)}"
            if os.WIFEXITED(status)
            else f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        )
        w.pid = 0
        w.ready = False
        gen.table.set_worker_state(w.slot, WorkerState.DEAD)
        report = gen.table.reconcile_worker(w.slot)
        repaired = any(report.reclaimed.values()) or report.slots_cleared or report.claims_returned
        if repaired and not self.state.stopping and not gen.stopping:
            notice(f"reconciled the shared table after worker {w.slot}: {report}")
        if w.ctl is not None:
            self._unregister(w.ctl)
            w.ctl.close()
            w.ctl = None
        if self.state.stopping or gen.stopping:
            notice(f"Worker {w.slot} of generation {gen.number} exited ({how})")
            return
        if gen is self.pending:
            self._abort_reload(f"worker {w.slot} of the new generation exited with {how} before it was ready")
            return
        alert(f"Current worker (slot {w.slot}) exited with {how}: respawning")
        now = time.monotonic()
        w.fast_failures = w.fast_failures + 1 if now - w.started < RESPAWN_FAST_FAIL else 0
        w.respawn_at = now + (RESPAWN_BACKOFF if w.fast_failures >= 3 else 0.0)
        if w.respawn_at <= now:
            self.spawn(w, gen)

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
            gen = self._gen_of(w)
            gen.table.set_worker_state(w.slot, WorkerState.RUNNING)
            if not gen.ready and gen.all_ready():
                gen.ready = True
                self._generation_ready(gen)

    def _generation_ready(self, gen: Generation) -> None:
        notice(f"Loading success: {len(gen.workers)} workers ready (generation {gen.number}).")
        if gen is self.pending:
            self._switch(gen)
            return
        self.notifier.ready(self._status())
        for pid in self.opts.takeover_pids:  # -sf / -st: the old process may stop now
            try:
                os.kill(pid, self.opts.takeover_signal)
                notice(f"sent {signal.Signals(self.opts.takeover_signal).name} to old process {pid}")
            except OSError as exc:
                warning(f"cannot signal old process {pid}: {exc.strerror}")

    # -- reload ---------------------------------------------------------------------------------
    def reload(self, done: Callable[[bool, str], None] | None = None) -> None:
        """Check the configuration again and start the next generation (see the module docstring).
        ``done(ok, why)`` is called once the outcome is known."""
        if self.pending is not None:  # the files may have changed since it began: read them again after it
            notice("a reload is already in progress: another one follows it")
            self.reload_queued = True
            if done is not None:
                self.queued_waiters.append(done)
            return
        if done is not None:
            self.reload_waiters.append(done)
        if self.state.stopping:
            self._reload_failed("the master is stopping", quiet=True)
            return
        notice("Reloading: checking the new configuration")
        self.notifier.reloading()
        try:
            config = load(self.opts.files, zero_warning=self.opts.zero_warning)
        except ConfigError as exc:
            self._reload_failed("\n".join([*exc.lines, "Fatal errors found in configuration."]))
            return
        except OSError as exc:
            self._reload_failed(f"cannot open configuration: {exc}")
            return
        for msg in config.warnings:
            warning(msg)
        g = config.global_
        problem = raise_fd_limit(needed_fds(g, sum(len(fe.binds) for fe in config.frontends.values())))
        if problem is not None and not g.strict_limits:
            warning(problem)
            problem = None
        if problem is None and privileges.wanted(g):
            problem = privileges.preflight(g)
        if problem is None and config.global_.chroot:
            problem = privileges.resolve_servers(config)
        if problem is not None:
            self._reload_failed(problem)
            return
        try:
            gen, gone = build(config, self.generations + 1, self.listeners, self.opts.nworkers,
                              reloads=self.reloads + 1)  # fmt: skip
        except GenerationError as exc:
            self._reload_failed(str(exc))
            return
        self.generations = gen.number
        self.pending = gen
        self._pending_gone = gone
        for w in gen.workers:
            self.spawn(w, gen)

    def _switch(self, gen: Generation) -> None:
        """The new generation accepts: make it current, soft-stop the previous one."""
        old = self.current
        self.pending = None
        self.current = gen
        self.config = gen.config
        self.retired += self._pending_gone
        self.listeners = gen.listeners
        self.reloads += 1
        self.last_reload_error = ""
        self.next_purge.clear()
        if old is not None:
            self._stop_generation(old, f"replaced by generation {gen.number}")
        self._rebind_runtime_api(old.config if old is not None else None)
        notice(f"Reload {self.reloads} done: generation {gen.number} serves")
        self.notifier.ready(self._status())
        self._answer_reload(True, "")

    def _stop_generation(self, gen: Generation, why: str) -> None:
        gen.stopping = True
        gen.stop_deadline = time.monotonic() + self.soft_stop_limit
        self.old.append(gen)
        notice(f"soft-stopping generation {gen.number} ({len(gen.alive())} workers): {why}")
        self._signal_workers(signal.SIGUSR1, gen.workers)
        self._retire_generations()

    def _abort_reload(self, why: str) -> None:
        gen = self.pending
        assert gen is not None
        self.pending = None
        keep = {id(lst.sock) for lst in self.listeners}
        fresh = [lst for lst in gen.listeners if id(lst.sock) not in keep]
        gen.listeners = []
        self.retired += fresh
        self._stop_generation(gen, "reload aborted")
        self._signal_workers(signal.SIGTERM, gen.workers)
        self._reload_failed(why)

    def _reload_failed(self, why: str, *, quiet: bool = False) -> None:
        if not quiet:
            self.failed_reloads += 1
            self.last_reload_error = why
            for line in why.splitlines():
                # the configuration's own alert lines keep their text; the others say what failed
                own = line.startswith("[ALERT] ")
                alert(line.removeprefix("[ALERT] ") if own else f"Reload failed: {line}")
            notice("the running generation keeps serving")
            self.notifier.ready(self._status())
        self._answer_reload(False, why)

    def _answer_reload(self, ok: bool, why: str) -> None:
        """The outcome of a reload: answer who asked, then start the one asked for meanwhile
        (it answers those who asked after this one began)."""
        waiters, self.reload_waiters = self.reload_waiters, []
        for done in waiters:
            done(ok, why)
        if self.reload_queued and self.pending is None:
            self.reload_queued = False
            self.reload_waiters, self.queued_waiters = self.queued_waiters, []
            self.reload()

    def _retire_generations(self) -> None:
        """Close what stopped generations leave: their segment once their workers are gone, and
        the retired listeners no live generation uses."""
        for gen in list(self.old):
            if not gen.alive():
                self.old.remove(gen)
                gen.close()
                notice(f"generation {gen.number} is gone; {gen.table.name} unlinked")
        # Old workers closed their copies when told to stop (proxy.acceptor): a listener neither
        # the current nor the pending generation uses is closed now, so its port stops listening.
        used = {id(lst.sock) for g in (self.current, self.pending) if g is not None for lst in g.listeners}
        for lst in list(self.retired):
            if id(lst.sock) not in used:
                self.retired.remove(lst)
                notice(f"closing listener {lst.host}:{lst.port} (gone from the configuration)")
                lst.sock.close()

    def _status(self) -> str:
        gen = self.current
        text = (
            f"generation {gen.number}, {len(gen.alive())} workers, {self.reloads} reloads"
            if gen is not None
            else "starting"
        )
        if self.old:
            text += f", {sum(len(g.alive()) for g in self.old)} old workers draining"
        if self.last_reload_error:
            text += f"; last reload failed: {self.last_reload_error.splitlines()[0]}"
        return text

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> int:
        try:
            code = self._start()
        except Exception as exc:  # a start-up failure is one alert line, never a traceback
            alert(f"cannot start: {exc}")
            code = 1
        if code:
            self._cleanup()
            return code
        try:
            return self._loop()
        finally:
            self._cleanup()

    def _start(self) -> int:
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
        if self.pidfile:
            try:
                with open(self.pidfile, "w") as f:
                    f.write(f"{os.getpid()}\n")
            except OSError as exc:
                alert(f"[haproxy.main()] Cannot create pidfile {self.pidfile}: {exc.strerror}")
                self.pidfile = None
                return 1
        for stale in cleanup_stale():
            notice(f"removed stale shared memory {stale}")
        try:
            gen, _ = build(self.config, 1, [], self.opts.nworkers, self.opts.inherited)
        except GenerationError as exc:
            alert(str(exc))
            return 1
        for sock in self.opts.inherited:  # -x: those our configuration does not use
            if all(sock is not lst.sock for lst in gen.listeners):
                sock.close()
        self.generations = 1
        self.current = gen
        self.listeners = gen.listeners
        self._install_signals()
        if not self._bind_runtime_api():
            return 1
        if self.opts.master_sockets:
            self.mcli = MasterCli(self.opts.master_sockets, self)
            self.mcli.closer = self._close_mcli_session
            try:
                self.mcli.bind()
            except OSError as exc:
                alert(f"cannot bind the master CLI socket: {exc}")  # OSError names the path
                return 1
            for lsock in self.mcli.listeners:
                self.selector.register(lsock, selectors.EVENT_READ, ("mcli", lsock))
        notice(
            f"poolproxy master started, {len(gen.workers)} workers, {len(self.listeners)} listeners, "
            f"HTTP/1 engine {self.config.global_.h1_engine}"
        )
        if self.opts.started is not None:
            self.opts.started()
        for w in gen.workers:
            self.spawn(w, gen)
        return 0

    def _cleanup(self) -> None:
        if self.cli is not None:
            self.cli.close()
        if self.mcli is not None:
            self.mcli.close()
        for gen in self.generations_alive():
            gen.close()
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
                alive = [w for w in self.all_workers() if w.pid]
                if not alive:
                    notice("all workers exited; master exiting")
                    return 0
                if now > self.state.stop_deadline:
                    self._signal_workers(signal.SIGKILL, alive)
                    self.state.stop_deadline = now + HARD_STOP_GRACE
                continue
            self._supervise(now)

    def _supervise(self, now: float) -> None:
        gen = self.current
        assert gen is not None
        for w in gen.workers:
            if not w.pid and w.respawn_at and now >= w.respawn_at:
                self.spawn(w, gen)
        for stale, age in gen.stale(time.monotonic_ns(), self.config.global_.watchdog):
            alert(f"worker {stale.slot} (pid {stale.pid}) is stuck: no heartbeat for {age:.1f}s"
                  f" (worker-watchdog-timeout); killing it")  # fmt: skip
            stale.ready = False  # killed once; reaped (and respawned) through SIGCHLD
            with contextlib.suppress(ProcessLookupError):
                os.kill(stale.pid, signal.SIGKILL)
        for old in self.old:
            if old.alive() and now > old.stop_deadline:
                alert(f"generation {old.number}: hard-stop-after reached, killing"
                      f" {len(old.alive())} remaining workers")  # fmt: skip
                self._signal_workers(signal.SIGKILL, old.alive())
                old.stop_deadline = now + HARD_STOP_GRACE
        pending = self.pending
        if pending is not None and now - pending.built > RELOAD_READY_LIMIT:
            self._abort_reload(f"the new generation was not ready within {RELOAD_READY_LIMIT:.0f}s")
        self._retire_generations()
        self._purge(now)

    # -- runtime API and master CLI ------------------------------------------------------------
    def _bind_runtime_api(self) -> bool:
        table = self.table
        assert table is not None
        self.cli = CliServer(self.config, self._snapshot, self._clear_max, self._set_maint)
        try:
            self.cli.bind()
        except (OSError, ValueError) as exc:
            alert(f"cannot bind the stats socket: {exc}")
            return False
        for lsock, spec in self.cli.listeners:
            self.selector.register(lsock, selectors.EVENT_READ, (lsock, spec))
        return True

    def _rebind_runtime_api(self, old: Config | None) -> None:
        """After a switch: the runtime API answers for the new configuration; its sockets are
        re-bound when the ``stats socket`` lines changed."""
        cli = self.cli
        if cli is None:
            return
        cli.ctx.config = self.config
        if old is not None and old.global_.stats_sockets == self.config.global_.stats_sockets:
            return
        for lsock, _ in cli.listeners:
            self._unregister(lsock)
        for sess in list(cli.sessions.values()):
            self._unregister(sess.sock)
        cli.close()
        if not self._bind_runtime_api():
            alert("the runtime API is unavailable until the next reload")

    def _snapshot(self) -> dict[str, object]:
        table = self.table
        assert table is not None
        return table.snapshot()

    def _cli_event(self, data: object) -> None:
        if isinstance(data, MasterSession):
            if self.mcli is not None and not self.mcli.readable(data):
                self._close_mcli_session(data)
            return
        if isinstance(data, tuple) and data[0] == "mcli":
            if self.mcli is not None:
                sess = self.mcli.accept(cast("socket.socket", data[1]))
                if sess is not None:
                    self.selector.register(sess.sock, selectors.EVENT_READ, sess)
            return
        cli = self.cli
        if cli is None:
            return
        if isinstance(data, Session):
            if not cli.readable(data):
                self.selector.unregister(data.sock)
                cli.close_session(data)
            return
        lsock, spec = cast("tuple[socket.socket, SocketSpec]", data)
        sess2 = cli.accept(lsock, spec)
        if sess2 is not None:
            self.selector.register(sess2.sock, selectors.EVENT_READ, sess2)

    def _close_mcli_session(self, sess: MasterSession) -> None:
        if sess.sock.fileno() >= 0:
            self._unregister(sess.sock)
        if self.mcli is not None:
            self.mcli.close_session(sess)

    def _cli_expire(self, now: float) -> None:
        if self.cli is not None:
            for sess in self.cli.expired(now):
                self.selector.unregister(sess.sock)
                self.cli.close_session(sess)
        if self.mcli is not None:
            for msess in self.mcli.expired(now):
                self._close_mcli_session(msess)

    # Host (proxy.master_cli) --------------------------------------------------------------------
    def processes(self) -> list[ProcLine]:
        out = [ProcLine(os.getpid(), "master", self.reloads, self.started_wall, failed=self.failed_reloads)]
        for gen in [*([self.current] if self.current else []), *reversed(self.old)]:
            for w in gen.workers:
                if w.pid:
                    out.append(ProcLine(w.pid, "worker", self.reloads - gen.reloads_at_start,
                                        w.started_wall, old=gen.stopping))  # fmt: skip
        return out

    def reload_error(self) -> str:
        return self.last_reload_error

    def request_reload(self, done: Callable[[bool, str], None]) -> None:
        self.reload(done)

    def route(self, target: str, words: list[str], level: str = "admin") -> str:
        gen: Generation | None = None
        if target.startswith("!") and target[1:].isdigit():
            pid = int(target[1:])
            gen = next((g for g in self.generations_alive() if pid and g.find(pid)), None)
        elif target.isdigit() and self.current is not None:
            n = int(target)
            if 1 <= n <= len(self.current.workers) and self.current.workers[n - 1].pid:
                gen = self.current
        if gen is None:
            raise LookupError(target)
        table = gen.table
        ctx = runtime_api.Context(
            gen.config, table.snapshot, self.started_wall, level=runtime_api.LEVELS[level],
            clear_max=lambda: _clear_max(table),
            set_maint=lambda b, s, m: _set_maint(table, b, s, m),
        )  # fmt: skip
        return runtime_api.execute(ctx, words)

    def listening_sockets(self) -> list[socket.socket]:
        return [lst.sock for lst in self.listeners]

    def _clear_max(self) -> None:
        if self.table is not None:
            _clear_max(self.table)

    def _set_maint(self, backend: str, server: str, maint: bool) -> bool:
        return self.table is not None and _set_maint(self.table, backend, server, maint)

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


def _clear_max(table: ShmTable) -> None:
    """``clear counters``: each row's peaks (smax, qmax...) back to the current values."""
    for info in table.servers:
        row = table.row(info.index)
        row.store(R_MAX_SERVED, row.served)
        row.store(R_MAX_CUR_CONNS, row.cur_conns)
        row.store(R_MAX_QUEUE, row.queue_len)


def _set_maint(table: ShmTable, backend: str, server: str, maint: bool) -> bool:
    """``set server BE/SRV state maint|ready``: the FMAINT bit the workers' ``usable`` reads."""
    try:
        i = table.server_index(backend, server)
    except (KeyError, LookupError):
        return False
    row = table.row(i)
    state = AdminState(row.admin_state)
    row.store(R_ADMIN_STATE, state | AdminState.FMAINT if maint else state & ~AdminState.FMAINT)
    return True
