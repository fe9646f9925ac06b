"""One worker's idle connections to one server (SEMANTICS.md §1-§3, DESIGN.md §4), and the pool policy.

``IdlePool`` is pure bookkeeping, like HAProxy's ``srv->per_thr[tid]``: the IDLE (unsafe) and SAFE
lists, each indexed by ``ConnKey``, plus one list of every idle connection in release order (HAProxy's
``idle_conn_list``) that the purge takes its victims from. It opens, closes and counts nothing
server-wide: the worker decides with ``proxy.pool_policy`` (re-exported here), moves connections in
and out of the pool, closes what it takes out to discard, and keeps the shared counters in step
(``*_with_kind`` and ``kind_of`` say which list a connection was in).

Ordering contract:

- ``take`` returns the **most recently released** connection with the key (the warmest one: its
  server side is least likely to have timed it out). HAProxy takes the first-inserted duplicate;
  newest-first here keeps traffic on few connections and lets the purge retire the cold ones.
- ``oldest`` lists connections **least recently released first**, across both lists: the purge's
  victims (HAProxy ≥ 2.9).

Complexity: ``add``, ``take``, ``remove``, ``pop_any``, ``count`` and ``len`` are O(1) (dicts, which
keep insertion order, stand in for HAProxy's trees and list); ``oldest(n)`` is O(n).

A connection must not change its ``key`` while pooled, and must be hashable (identity hashing, the
default for objects, is what is meant).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Final, Generic, Protocol, TypeVar

from proxy import pool_policy
from proxy.pool_policy import (  # the policy's public face, re-exported by name (mypyc has no star import)
    AcquirePlan as AcquirePlan,
    ConnKey as ConnKey,
    ListKind as ListKind,
    PurgePlan as PurgePlan,
    acquire_plan as acquire_plan,
    conn_key as conn_key,
    key_hash as key_hash,
    kind_after_release as kind_after_release,
    may_steal as may_steal,
    next_takeover as next_takeover,
    oldest_waiter as oldest_waiter,
    purge_plan as purge_plan,
    reuse_order as reuse_order,
    server_conn_key as server_conn_key,
    should_keep as should_keep,
    steal_candidates as steal_candidates,
    steal_order as steal_order,
    worker_holds_for as worker_holds_for,
    worker_share as worker_share,
)

__all__ = [*pool_policy.__all__, "IdlePool", "PooledConn"]


class PooledConn(Protocol):
    """What ``IdlePool`` needs of a connection.

    ``key``: the ``ConnKey`` it was opened with (fixed while pooled). ``idle_since``: when it was last
    released (a monotonic clock reading the caller sets before ``add``); the pool only reports it
    (``oldest_idle_since``), ordering is by ``add`` order.
    """

    @property
    def key(self) -> ConnKey: ...

    @property
    def idle_since(self) -> float: ...


C = TypeVar("C", bound=PooledConn)

_KINDS: Final = (ListKind.IDLE, ListKind.SAFE)


class IdlePool(Generic[C]):
    """This worker's idle connections for one server: an IDLE (unsafe) and a SAFE list."""

    __slots__ = ("_by_key", "_by_kind", "_order", "server")

    def __init__(self, server: str = "") -> None:
        self.server = server  # for repr only
        # kind -> key -> conns of that key, in release order (a dict used as an ordered set)
        self._by_key: dict[ListKind, dict[ConnKey, dict[C, None]]] = {k: {} for k in _KINDS}
        # kind -> conns of that kind, in release order (for counts and keyless pops)
        self._by_kind: dict[ListKind, dict[C, None]] = {k: {} for k in _KINDS}
        # every pooled conn -> its list, in release order: oldest first
        self._order: dict[C, ListKind] = {}

    # -- filling and emptying ----------------------------------------------------------------
    def add(self, conn: C, kind: ListKind) -> None:
        """Park a released connection in list ``kind``. Adding a pooled connection is an error."""
        if conn in self._order:
            raise ValueError(f"{conn!r} is already in {self!r}")
        self._by_key[kind].setdefault(conn.key, {})[conn] = None
        self._by_kind[kind][conn] = None
        self._order[conn] = kind

    def take(self, key: ConnKey, order: Sequence[ListKind]) -> C | None:
        """Remove and return the most recently released connection with ``key``, trying the lists
        in ``order`` (``reuse_order``'s answer); None when none fits."""
        by_key = self._by_key
        for kind in order:  # take_with_kind and _discard, inline: once a request
            per_key = by_key[kind]
            bucket = per_key.get(key)
            if bucket:
                conn = bucket.popitem()[0]  # the last one parked (dicts pop in LIFO order)
                if not bucket:
                    del per_key[key]
                del self._by_kind[kind][conn]
                del self._order[conn]
                return conn
        return None

    def take_with_kind(self, key: ConnKey, order: Sequence[ListKind]) -> tuple[C, ListKind] | None:
        """``take``, also saying which list the connection came from (for the shared counters)."""
        for kind in order:
            bucket = self._by_key[kind].get(key)
            if bucket:
                conn = next(reversed(bucket))
                self._discard(conn, kind)
                return conn, kind
        return None

    def pop_any(self, order: Sequence[ListKind], key: ConnKey | None = None) -> C | None:
        """Remove and return the most recently released connection of the first non-empty list in
        ``order`` — with ``key`` when given (handing one to a thief: pass the thief's key, a
        request never reuses another key), of any key otherwise (closing one to make room, as
        ``strict-maxconn`` does)."""
        hit = self.pop_any_with_kind(order, key)
        return hit[0] if hit is not None else None

    def pop_any_with_kind(
        self, order: Sequence[ListKind], key: ConnKey | None = None
    ) -> tuple[C, ListKind] | None:
        """``pop_any``, also saying which list the connection came from."""
        if key is not None:
            return self.take_with_kind(key, order)
        for kind in order:
            conns = self._by_kind[kind]
            if conns:
                conn = next(reversed(conns))
                self._discard(conn, kind)
                return conn, kind
        return None

    def remove(self, conn: C) -> bool:
        """Take ``conn`` out (the server closed it while idle, or the purge chose it). False if it
        was not pooled here (already taken: nothing to do)."""
        kind = self._order.get(conn)
        if kind is None:
            return False
        self._discard(conn, kind)
        return True

    def clear(self) -> list[C]:
        """Empty the pool (server down or in maintenance, soft stop); returns all, oldest first."""
        conns = list(self._order)
        for kind in _KINDS:
            self._by_key[kind].clear()
            self._by_kind[kind].clear()
        self._order.clear()
        return conns

    def _discard(self, conn: C, kind: ListKind) -> None:
        # precondition: conn is pooled in list ``kind``
        per_key = self._by_key[kind]
        bucket = per_key[conn.key]
        del bucket[conn]
        if not bucket:
            del per_key[conn.key]
        del self._by_kind[kind][conn]
        del self._order[conn]

    # -- reading ------------------------------------------------------------------------------
    def count(self, kind: ListKind) -> int:
        return len(self._by_kind[kind])

    def kind_of(self, conn: C) -> ListKind | None:
        """The list ``conn`` sits in, None when it is not pooled here."""
        return self._order.get(conn)

    def holds_for(self, kind: ListKind) -> bool:
        """``worker_holds_for`` on this pool: pass it as ``should_keep(worker_has_idle_of_kind=...)``
        when releasing a connection of ``kind``."""
        return pool_policy.worker_holds_for(
            kind, worker_idle=len(self._by_kind[_LK_IDLE]), worker_safe=len(self._by_kind[_LK_SAFE])
        )

    def oldest(self, n: int) -> list[C]:
        """Up to ``n`` connections, least recently released first, both lists together. Does not
        remove them: the purge calls ``remove`` on each, then closes it."""
        return list(islice(self._order, max(n, 0)))

    def oldest_idle_since(self) -> float | None:
        """``idle_since`` of the least recently released connection, None when empty."""
        for conn in self._order:
            return conn.idle_since
        return None

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, conn: object) -> bool:
        return conn in self._order

    def __iter__(self) -> Iterator[C]:
        """Every pooled connection, least recently released first."""
        return iter(list(self._order))

    def __repr__(self) -> str:
        return (
            f"<IdlePool srv={self.server or '?'} idle={self.count(ListKind.IDLE)}"
            f" safe={self.count(ListKind.SAFE)}>"
        )


# The enum members the per-request functions above use, as module constants: on Python 3.11
# a member lookup (``Phase.IDLE``) costs several times a global's, and a request makes dozens.
_LK_IDLE: Final = ListKind.IDLE
_LK_SAFE: Final = ListKind.SAFE
