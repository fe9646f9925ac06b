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

In ``-Ws`` mode it speaks systemd's notify protocol (``proxy.sdnotify``); the master CLI (``-S``,
``proxy.master_cli``) and the runtime API (``stats socket``, ``proxy.cli``, answered from the
current generation's table) are wired into its loop by ``proxy.control``; the purge planning is
``proxy.purge``.

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

from proxy import cli as runtime_api, privileges
from proxy.config import ConfigError, load
from proxy.config.model import Config
from proxy.control import Control, context
from proxy.generation import Generation, GenerationError, WorkerRecord, build
from proxy.limits import needed_fds, raise_fd_limit
from proxy.listener import Listener
from proxy.log import alert, notice, warning
from proxy.master_cli import MasterSocketSpec, ProcLine
from proxy.purge import PurgePlanner
from proxy.reloads import Done, Reloads
from proxy.sdnotify import Notifier, unset_in_children
from proxy.shm import ShmTable, WorkerState, cleanup_stale

WORKER_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # proxy.worker.STOP_SIGNALS

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
        self.control = Control(self.selector, self, lambda: self.table, self.opts.master_sockets)
        self.notifier = Notifier() if self.opts.systemd else Notifier({})
        self.purger = PurgePlanner()
        self.started_wall = time.time()
        self.reloads = Reloads()
        self.generations = 0
        self._pending_gone: list[Listener] = []  # current listeners the pending generation drops
        self.took_over = False  # -sf/-st done (once a generation first serves)

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
        # The child starts with the stop signals blocked: proxy.worker.run lets them in once its
        # loop runs (one sent before would kill it, with the default action, or be lost).
        held = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_STOP_SIGNALS)
        try:
            pid = os.fork()
        finally:
            if os.getpid() == ppid:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
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
        self.control.close_in_child()
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
        repaired = (any(report.reclaimed.values()) or report.slots_cleared or report.claims_returned
                    or report.checks_released)  # fmt: skip
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
        if gen.stopping:  # replaced (or aborted) before it was ever ready
            return
        notice(f"Loading success: {len(gen.workers)} workers ready (generation {gen.number}).")
        if gen is self.pending:
            self._switch(gen)  # (notifies READY)
        else:
            self.notifier.ready(self._status())
        if self.took_over:
            return
        self.took_over = True  # the first generation serving: the -sf/-st process may stop now
        for pid in self.opts.takeover_pids:
            try:
                os.kill(pid, self.opts.takeover_signal)
                notice(f"sent {signal.Signals(self.opts.takeover_signal).name} to old process {pid}")
            except OSError as exc:
                warning(f"cannot signal old process {pid}: {exc.strerror}")

    # -- reload ---------------------------------------------------------------------------------
    def reload(self, done: Done | None = None) -> None:
        """Check the configuration again and start the next generation (see the module docstring).
        ``done(ok, why)`` is called once the outcome is known."""
        if not self.reloads.ask(done, in_progress=self.pending is not None):
            notice("a reload is already in progress: another one follows it")
            return
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
                              reloads=self.reloads.done + 1)  # fmt: skip
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
        self.reloads.succeeded()
        self.purger.reset()
        if old is not None:
            self._stop_generation(old, f"replaced by generation {gen.number}")
        self.control.switch(self.config, old.config if old is not None else None)
        notice(f"Reload {self.reloads.done} done: generation {gen.number} serves")
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
            self.reloads.failed_with(why)
            for line in why.splitlines():
                # the configuration's own alert lines keep their text; the others say what failed
                own = line.startswith("[ALERT] ")
                alert(line.removeprefix("[ALERT] ") if own else f"Reload failed: {line}")
            notice("the running generation keeps serving")
            self.notifier.ready(self._status())
        self._answer_reload(False, why)

    def _answer_reload(self, ok: bool, why: str) -> None:
        """The outcome of a reload: answer who asked, then start the one asked for meanwhile."""
        if self.reloads.answer(ok, why):
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
            f"generation {gen.number}, {len(gen.alive())} workers, {self.reloads.done} reloads"
            if gen is not None
            else "starting"
        )
        if self.old:
            text += f", {sum(len(g.alive()) for g in self.old)} old workers draining"
        if self.reloads.last_error:
            text += f"; last reload failed: {self.reloads.last_error.splitlines()[0]}"
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
        if not (self.control.bind_runtime_api(self.config) and self.control.bind_master_cli()):
            return 1
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
        self.control.close()
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
                    self.control.event(key.data)
            self._dispatch_signals()
            now = time.monotonic()
            self.control.expire(now)
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
        self.purger.tick(now, gen.table, gen.config)

    # Host (proxy.master_cli) --------------------------------------------------------------------
    def processes(self) -> list[ProcLine]:
        book = self.reloads
        out = [ProcLine(os.getpid(), "master", book.done, self.started_wall, failed=book.failed)]
        for gen in [*([self.current] if self.current else []), *reversed(self.old)]:
            for w in gen.workers:
                if w.pid:
                    out.append(ProcLine(w.pid, "worker", book.done - gen.reloads_at_start,
                                        w.started_wall, old=gen.stopping))  # fmt: skip
        return out

    def reload_error(self) -> str:
        return self.reloads.last_error

    def request_reload(self, done: Done) -> None:
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
        return runtime_api.execute(context(gen.config, gen.table, self.started_wall, level), words)

    def listening_sockets(self) -> list[socket.socket]:
        return [lst.sock for lst in self.listeners]
