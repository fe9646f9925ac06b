"""Connection limits (``maxconn`` in ``global``, ``defaults`` and frontends): when a worker stops accepting.

HAProxy's rule: beyond a frontend's ``maxconn`` (or the process's), new client connections are not
accepted; they wait in the listening socket's backlog until a connection closes. poolproxy's workers
are separate processes accepting on shared listening sockets, so each limit is **divided** between
them: worker ``slot`` of ``n`` may hold ``share(maxconn, n, slot)`` connections, the shares adding up
to ``maxconn`` exactly (a worker whose share is 0 never accepts for that frontend). A worker at its
share stops accepting; the kernel's backlog keeps the waiting connections, and any other worker
below its share accepts them. Dividing needs no shared counter (the alternative, a counter in
shared memory, would let one busy worker take every slot, and costs an atomic operation per
connection); its cost is that a worker may refuse while another still has room, when the load is
uneven between workers.

``Gate`` counts one limit's connections in this worker and says when to stop and resume accepting;
the worker carries that out on its listeners (``proxy.worker``).
"""

from __future__ import annotations


def share(maxconn: int, nworkers: int, slot: int) -> int:
    """Worker ``slot``'s part of ``maxconn`` (0 = no limit stays 0: unlimited for everyone)."""
    if maxconn <= 0:
        return 0
    base, extra = divmod(maxconn, nworkers)
    return base + (1 if slot < extra else 0)


class Gate:
    """One limit's connections in this worker. ``limit`` None: unlimited; 0: accept nothing."""

    __slots__ = ("count", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0

    def __repr__(self) -> str:
        return f"<Gate {self.count}/{self.limit if self.limit is not None else '-'}>"

    @property
    def full(self) -> bool:
        return self.limit is not None and self.count >= self.limit

    def opened(self) -> bool:
        """A connection was accepted; True when this one made the gate full (stop accepting)."""
        self.count += 1
        return self.limit is not None and self.count == self.limit

    def closed(self) -> bool:
        """A connection closed; True when the gate was full and is not any more (accept again)."""
        self.count -= 1
        return self.limit is not None and self.count == self.limit - 1


def gate_for(maxconn: int, nworkers: int, slot: int) -> Gate:
    """The gate of a configured ``maxconn`` (0: not configured) for worker ``slot``."""
    return Gate(share(maxconn, nworkers, slot) if maxconn > 0 else None)
