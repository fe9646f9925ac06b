"""A server as one worker sees it: configuration, this worker's idle pool and local queue, and its
row and cell in the shared-memory table.

The numbers that decisions read are **server-wide** and live in shm (``ServerRow``: ``used``,
``idle``, ``safe``, ``served``, ``cur_conns``, ``est_need``, ...); this worker moves them only through
its own ``ServerCell`` (paired row+cell operations, see ``proxy.shm``), so the master can repair the
table when a worker dies. What stays private to the worker is the pool itself (``IdlePool``) and the
local list of requests waiting for a ``maxconn`` slot (``waiters``).

Accounting of one connection (``ServerConn.acct``), the invariant ``proxy.backend`` keeps:

====================  =========================================================
``ACCT_USED``         counted in ``used`` (connecting, or carrying a request)
``ACCT_IDLE``         counted in ``idle`` (and ``safe`` when in the safe list)
``ACCT_PRIVATE``      counted in neither (HAProxy: ``conn_set_private``)
``ACCT_NONE``         closed, or never opened
====================  =========================================================

Every opened connection is also counted once in ``cur_conns`` (``opened``), until it closes or is
handed to another worker.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from proxy.config.model import Server
from proxy.pool import IdlePool
from proxy.shm import R_EST_NEED, ServerCell, ServerRow

if TYPE_CHECKING:
    from proxy.pool import ConnKey
    from proxy.server_conn import ServerConn

ACCT_NONE, ACCT_USED, ACCT_IDLE, ACCT_PRIVATE = range(4)


@dataclass(slots=True)
class Waiter:
    """A request of this worker waiting for a maxconn slot of one server."""

    ticket: int
    future: asyncio.Future[bool] = field(repr=False)


class ServerRuntime:
    """One configured server inside one worker."""

    __slots__ = (
        "backend_name",
        "cell",
        "cfg",
        "index",
        "maint",
        "peers",
        "pool",
        "row",
        "static_key",
        "waiters",
    )

    def __init__(
        self, backend_name: str, index: int, cfg: Server, cells: list[ServerCell], slot: int
    ) -> None:
        self.backend_name = backend_name
        self.index = index  # the server's index in the shared table
        self.cfg = cfg
        self.peers = cells  # every worker's cell for this server (others' are only read)
        cell = self.cell = cells[slot]
        self.row: ServerRow = cell.row
        self.pool: IdlePool[ServerConn] = IdlePool(f"{backend_name}/{cfg.name}")
        self.maint = cfg.disabled
        self.static_key: ConnKey | None = None  # the key of every connection, without usesrc clientip
        self.waiters: deque[Waiter] = deque()

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def usable(self) -> bool:
        return not self.maint

    # -- connection accounting (HAProxy's srv_use_conn / srv_release_conn) ----------------------
    def conn_used(self) -> None:
        """A new connection is about to be used: ``used`` +1, and ``est_need`` follows it."""
        cell = self.cell
        cell.used_add(1)
        self.row.raise_to(R_EST_NEED, self.row.used)

    def idle_reused(self, safe: bool) -> None:
        cell = self.cell
        cell.idle_to_used(safe)
        self.row.raise_to(R_EST_NEED, self.row.used)

    def __repr__(self) -> str:
        r = self.row
        return (
            f"<Server {self.backend_name}/{self.name} {self.cfg.host}:{self.cfg.port}"
            f" used={r.used} idle={r.idle} served={r.served} local_idle={len(self.pool)}>"
        )
