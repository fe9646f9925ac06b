"""The master's purge planning: once per ``pool-purge-delay`` per server, halve the excess idle
connections (SEMANTICS.md §3), from the server-wide numbers of the current generation's table.

The decision is ``proxy.pool_policy.purge_plan`` (pure); this module keeps each server's next due
time, stores the new estimates in the row and sends each worker holding idle connections of that
server a PURGE datagram over the takeover channel: every worker closes its own share.
"""

from __future__ import annotations

from proxy.config.model import Config
from proxy.pool_policy import purge_plan
from proxy.shm import R_EST_NEED, R_MAX_USED, ShmTable
from proxy.takeover import PURGE, Message, notify


class PurgePlanner:
    def __init__(self) -> None:
        self.next_purge: dict[int, float] = {}  # server index -> monotonic time of its next purge

    def reset(self) -> None:
        """A new generation: its servers are numbered anew."""
        self.next_purge.clear()

    def tick(self, now: float, table: ShmTable, config: Config) -> None:
        for info in table.servers:
            i = info.index
            delay = purge_delay(config, info.backend, info.name)
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


def purge_delay(config: Config, backend: str, server: str) -> float:
    be = config.backends.get(backend)
    if be is None:
        return 0.0
    for s in be.servers:
        if s.name == server:
            return s.pool_purge_delay
    return 0.0
