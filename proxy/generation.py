"""A generation: one configuration, its listeners, its shared table and its workers.

The master runs one **current** generation; a reload builds the next one (``build``) beside it and
switches once all its workers are READY; the previous one becomes **old**: its workers soft-stop,
and when the last has exited its shared-memory segment is unlinked (``close``). A generation that
fails before it is ready is **aborted** the same way, and the current one keeps serving.

Listeners are the master's, not a generation's: ``build`` reuses every socket still wanted by the
new configuration (``proxy.listener.reconcile``), so the same listening socket serves both
generations during the switch and is never closed. Each generation has its own shared table,
named ``/poolproxy.<master pid>.<number>`` (and so its own takeover channel addresses): workers of
two generations never share counters or idle connections.

Watchdog: ``stale`` lists the READY workers whose heartbeat in the table (written every second by
the worker's loop) is older than a limit: their loop is stuck; the master kills them (SIGKILL) and
reaps them as crashed workers (respawn, counters reconciled).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from proxy.config.model import Config
from proxy.listener import BindError, Listener, reconcile
from proxy.shm import ShmTable
from proxy.slot_array import NSLOTS


@dataclass(slots=True)
class WorkerRecord:
    slot: int
    gen: int = 1  # the generation number it belongs to
    pid: int = 0
    started: float = 0.0  # time.monotonic() of its fork
    started_wall: float = 0.0  # time.time() of its fork (show proc's uptime)
    ready: bool = False
    fast_failures: int = 0
    respawn_at: float = 0.0
    ctl: socket.socket | None = None
    incarnation: int = 0  # how many times this slot was forked in this generation


@dataclass(slots=True)
class Generation:
    number: int
    config: Config
    table: ShmTable
    listeners: list[Listener]
    workers: list[WorkerRecord]
    reloads_at_start: int = 0  # the master's reload count when this generation was built
    ready: bool = False  # every worker said READY once
    stopping: bool = False  # old or aborted: its workers are stopping, none is respawned
    stop_deadline: float = 0.0
    built: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        state = "stopping" if self.stopping else ("ready" if self.ready else "starting")
        return f"<Generation {self.number} {state} workers={[w.pid for w in self.workers]} {self.table.name}>"

    def alive(self) -> list[WorkerRecord]:
        return [w for w in self.workers if w.pid]

    def all_ready(self) -> bool:
        return all(w.ready and w.pid for w in self.workers)

    def find(self, pid: int) -> WorkerRecord | None:
        return next((w for w in self.workers if w.pid == pid), None)

    def stale(self, now_ns: int, limit: float) -> list[tuple[WorkerRecord, float]]:
        """READY workers whose heartbeat is older than ``limit`` seconds (0: watchdog off), with
        the heartbeat's age."""
        if limit <= 0:
            return []
        out = []
        for w in self.workers:
            if w.pid and w.ready:
                info = self.table.worker(w.slot)
                age = (now_ns - info.heartbeat_ns) / 1e9
                if info.pid == w.pid and age > limit:
                    out.append((w, age))
        return out

    def close(self) -> None:
        """The last worker is gone: unmap and unlink the segment (idempotent)."""
        self.table.close()
        self.table.unlink()


class GenerationError(Exception):
    """Why a generation could not be built (one line, for the log, the CLI and systemd)."""


def build(
    config: Config,
    number: int,
    current: list[Listener],
    nworkers: int | None = None,
    inherited: list[socket.socket] | None = None,
    reloads: int = 0,
) -> tuple[Generation, list[Listener]]:
    """The next generation (its workers not forked yet) and the current listeners it no longer
    needs. On failure nothing is left behind (sockets bound here are closed, no segment)."""
    n = nworkers or config.global_.nbthread or len(os.sched_getaffinity(0))
    try:
        listeners, gone = reconcile(current, config, inherited or ())
    except BindError as exc:
        raise GenerationError(str(exc)) from exc
    except OSError as exc:
        raise GenerationError(f"cannot bind the listeners: {exc}") from exc
    try:
        # Slots for lending idle connections only where workers may steal (proxy.slots)
        nslots = NSLOTS if config.global_.idle_pool_shared and n > 1 else 0
        table = ShmTable.create(config, n, generation=number, nslots=nslots)
    except Exception as exc:
        owned = {id(lst.sock) for lst in current}
        for lst in listeners:
            if id(lst.sock) not in owned and lst.sock not in (inherited or ()):
                lst.sock.close()
        raise GenerationError(f"cannot create the shared-memory table: {exc}") from exc
    workers = [WorkerRecord(slot=i, gen=number) for i in range(n)]
    return Generation(number, config, table, listeners, workers, reloads_at_start=reloads), gone
