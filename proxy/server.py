"""A server as one worker sees it: its configuration, this worker's idle pool, and the counters.

Counters come in two scopes, like HAProxy's ``struct server``:

- **server-wide** (``ServerCounters``): ``used`` (connections carrying a request), ``idle`` (idle
  connections, all workers), ``safe``, ``max_used``, ``est_need``, ``served`` and cumulative counts.
  With one worker they are this worker's own numbers; the shared-memory table (DESIGN.md §3) replaces
  this class with one whose fields live in shm, behind the same attributes, so the pool policy code
  does not change.
- **per worker**: the ``IdlePool`` itself (this worker's idle and safe lists).

Invariant kept by ``proxy.backend``: every open non-private server connection of this worker is
counted exactly once, in ``used`` while it carries a request or is being connected, in ``idle``
while it sits in the pool, in neither once closed. Private connections (``http-reuse never``,
NTLM, ...) are counted in neither, as in HAProxy (``conn_set_private`` releases the used count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.config.model import Server
from proxy.pool import IdlePool

if TYPE_CHECKING:
    from proxy.pool import ConnKey
    from proxy.server_conn import ServerConn


@dataclass(slots=True)
class ServerCounters:
    used: int = 0
    idle: int = 0
    safe: int = 0
    max_used: int = 0
    est_need: int = 0
    served: int = 0
    # cumulative
    connects: int = 0
    connect_errors: int = 0
    reuses: int = 0
    requests: int = 0
    purged: int = 0

    def conn_used(self) -> None:
        """A connection became used (created, or picked from an idle list): HAProxy's srv_use_conn."""
        used = self.used = self.used + 1
        if used > self.max_used:
            self.max_used = used
        if used > self.est_need:
            self.est_need = used


class ServerRuntime:
    """One configured server inside one worker."""

    __slots__ = ("backend_name", "cfg", "counters", "index", "maint", "pool", "purge_handle", "static_key")

    def __init__(self, backend_name: str, index: int, cfg: Server) -> None:
        self.backend_name = backend_name
        self.index = index
        self.cfg = cfg
        self.counters = ServerCounters()
        self.pool: IdlePool[ServerConn] = IdlePool(f"{backend_name}/{cfg.name}")
        self.maint = cfg.disabled
        self.purge_handle: object | None = None
        self.static_key: ConnKey | None = None  # the key of every connection, without usesrc clientip

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def usable(self) -> bool:
        return not self.maint

    def __repr__(self) -> str:
        c = self.counters
        return (
            f"<Server {self.backend_name}/{self.name} {self.cfg.host}:{self.cfg.port}"
            f" used={c.used} idle={c.idle} served={c.served}>"
        )
