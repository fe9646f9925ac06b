"""Server-side connection pooling policy: pure decisions over plain numbers (SEMANTICS.md §1-§4).

Every function here decides and returns; none performs I/O, touches a socket, reads a clock or
mutates shared state (STYLE.md habit 1). The worker reads the counters (its own, and the server-wide
ones from shared memory), calls a function, and carries the answer out. The long form with HAProxy's
function names and arithmetic is ``reference/haproxy-pooling.md``; the HAProxy function each decision
mirrors is named in its docstring.

Vocabulary (HAProxy's ``struct server`` counters, SEMANTICS.md §3; all *server-wide*, all workers):

- ``used``     — non-private connections carrying a request or being connected (``curr_used_conns``);
- ``idle``     — connections in the idle *and* safe lists of every worker (``curr_idle_conns``);
- ``max_used`` — the highest ``used`` since the last purge (``max_used_conns``);
- ``est_need`` — the smoothed estimate of the connections needed (``est_need_conns``).

Theory of operation:

1. **Choose** (``reuse_order``): a request looks in its own session first (the caller), then this
   worker's idle lists in the order this module returns, then steals (``may_steal``, ``steal_order``),
   else connects. A connection is only reused by a request with an equal ``ConnKey``.
2. **Release** (``kind_after_release``, ``should_keep``): a connection whose exchange ended cleanly in
   keep-alive goes to the IDLE (unsafe) or SAFE list, if ``should_keep`` says so; otherwise it is
   closed at once (there is no fallback list).
3. **Purge** (``purge_plan``, ``worker_share``): every ``pool-purge-delay``, close half the excess of
   established connections over the need estimate, oldest first, each worker its proportional share + 1.
4. **Queue hand-off** (``oldest_waiter``): a freed maxconn slot goes to the oldest ticket of all workers.
5. **Acquire** (``acquire_plan``): the whole "get a server connection" decision for one request, once
   it holds its maxconn slot — which lists of this worker to search, whether to steal, how many
   connection attempts — that ``proxy.backend.Backend.acquire`` carries out step by step.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from proxy.config.model import ReuseMode, Server

__all__ = [
    "AcquirePlan",
    "ConnKey",
    "ListKind",
    "PurgePlan",
    "acquire_plan",
    "conn_key",
    "key_hash",
    "kind_after_release",
    "may_steal",
    "next_takeover",
    "oldest_waiter",
    "purge_plan",
    "reuse_order",
    "server_conn_key",
    "should_keep",
    "steal_candidates",
    "steal_order",
    "worker_holds_for",
    "worker_share",
]


class ListKind(enum.StrEnum):
    """The two idle lists of a server in a worker (HAProxy's ``idle_conns`` / ``safe_conns`` trees).

    str-based so that hashing it (pool dictionaries, on every request) is done in C."""

    IDLE = "idle"  # "unsafe idle": served exactly one request, the server never proved keep-alive
    SAFE = "safe"  # served two or more requests (HTTP/1), or any HTTP/2 connection


# --------------------------------------------------------------------------------------------------
# 1. Choosing a list: SEMANTICS.md §1, backend.c:be_reuse_connection() / conn_backend_get()
# --------------------------------------------------------------------------------------------------

_IDLE_THEN_SAFE: Final = (ListKind.IDLE, ListKind.SAFE)

_REUSE_ORDER: Final[dict[tuple[ReuseMode, bool], tuple[ListKind, ...]]] = {
    # (mode, first_request): lists to search, in order
    (ReuseMode.NEVER, True): (),
    (ReuseMode.NEVER, False): (),
    (ReuseMode.SAFE, True): (),
    (ReuseMode.SAFE, False): _IDLE_THEN_SAFE,
    (ReuseMode.AGGRESSIVE, True): (ListKind.SAFE,),
    (ReuseMode.AGGRESSIVE, False): _IDLE_THEN_SAFE,
    (ReuseMode.ALWAYS, True): (ListKind.SAFE, ListKind.IDLE),
    (ReuseMode.ALWAYS, False): _IDLE_THEN_SAFE,
}


def reuse_order(mode: ReuseMode, first_request: bool) -> tuple[ListKind, ...]:
    """The idle lists a request may take a connection from, in the order to try them.

    ``first_request``: the first request of an HTTP/1 client connection. Every HTTP/2 client stream
    counts as *not* first; so does every request when ``retry-on`` covers conn-failure,
    empty-response and response-timeout together (HAProxy's ``retry_safe``) — the caller passes False.
    An empty tuple means "open a new connection" (``never``: only the session's own private ones,
    which the caller looks up before calling this).

    ========  =====  ============  ============  ============
    request   never  safe          aggressive    always
    ========  =====  ============  ============  ============
    first     ()     ()            (SAFE,)       (SAFE, IDLE)
    later     ()     (IDLE, SAFE)  (IDLE, SAFE)  (IDLE, SAFE)
    ========  =====  ============  ============  ============

    Later requests take the unsafe connections first: they are the ones a first request may not use.
    """
    return _REUSE_ORDER[(mode, first_request)]


def kind_after_release(requests_served: int, is_h2: bool = False) -> ListKind:
    """The list a connection goes to when its last request ends cleanly in keep-alive.

    HTTP/1 (``mux_h1.c:h1s_finish_detach()``): after its first request the server has not yet shown
    that it keeps connections alive → IDLE; after a second or later one → SAFE. HTTP/2
    (``h2_detach()``): always SAFE. ``requests_served`` counts the request just completed; an HTTP/1
    connection that served none cannot be released idle (ValueError).
    """
    if is_h2:
        return _LK_SAFE
    if requests_served < 1:
        raise ValueError(f"an HTTP/1 connection released after {requests_served} requests")
    return _LK_IDLE if requests_served == 1 else _LK_SAFE


# --------------------------------------------------------------------------------------------------
# 2. The connection key: SEMANTICS.md §2, backend.c:be_calculate_conn_hash()
# --------------------------------------------------------------------------------------------------


class ConnKey(NamedTuple):
    """What a request and a pooled connection must share for the connection to carry the request.

    HAProxy 2.4+ hashes these into a 64-bit key instead of making such connections private; we keep
    the fields themselves (equality is exact, no collision). ``server``: ``backend/server`` name;
    ``source``: the client IP under ``usesrc clientip`` (the port is never part of it), else None;
    ``sni``: the SNI / connection name, None when there is none; ``destination``: host and port.
    Build it with ``conn_key`` (normalises empty strings) or ``server_conn_key`` (from the config).
    A tuple: a key is hashed on every pool operation, and a tuple hashes and compares in C.
    """

    server: str
    source: str | None
    sni: str | None
    destination: tuple[str, int]

    def __str__(self) -> str:
        extra = "".join(
            f" {name}={value}" for name, value in (("src", self.source), ("sni", self.sni)) if value
        )
        host, port = self.destination
        return f"{self.server}@{host}:{port}{extra}"


_HASH_MASK: Final = (1 << 63) - 1


def key_hash(key: ConnKey) -> int:
    """The 63-bit hash a published slot records for ``key`` (``proxy.slots``). Python's hash of the
    key's fields: the same in every worker, since all are forked from one master (one hash seed).
    Equal keys hash equal; a thief still only takes a slot whose hash equals its own key's."""
    return hash(key) & _HASH_MASK


def conn_key(
    *,
    server: str,
    destination: tuple[str, int],
    source: str | None = None,
    sni: str | None = None,
) -> ConnKey:
    """A ``ConnKey`` from its parts; an empty ``source`` or ``sni`` counts as none."""
    return ConnKey(server=server, source=source or None, sni=sni or None, destination=destination)


def server_conn_key(
    backend: str,
    server: Server,
    *,
    client_ip: str | None = None,
    sni: str | None = None,
    destination: tuple[str, int] | None = None,
) -> ConnKey:
    """The key of a connection to ``server`` of ``backend`` for one request, from the configuration.

    ``client_ip`` is only used (and then required) when the server has ``usesrc clientip``; a plain
    ``source <addr>`` is the same for every connection of the server and so is not part of the key,
    as in HAProxy. ``destination`` defaults to the server's configured address. The result depends
    on the request only through ``client_ip``/``sni``/``destination``: a caller without those may
    compute it once per server and reuse it.
    """
    source: str | None = None
    if server.usesrc_clientip:
        if not client_ip:
            raise ValueError(f"server {backend}/{server.name} uses 'usesrc clientip': client_ip required")
        source = client_ip
    return conn_key(
        server=f"{backend}/{server.name}",
        source=source,
        sni=sni,
        destination=destination if destination is not None else (server.host, server.port),
    )


# --------------------------------------------------------------------------------------------------
# 3. Keeping a released connection: SEMANTICS.md §3, server.c:srv_add_to_idle_list()
# --------------------------------------------------------------------------------------------------


def worker_holds_for(kind: ListKind, *, worker_idle: int, worker_safe: int) -> bool:
    """Whether this worker's pool for the server blocks the "each worker may keep one" rule.

    This is what ``should_keep(worker_has_idle_of_kind=...)`` expects. HAProxy's rule 7(A) keeps the
    connection when this worker's **safe** list is empty **and** (the connection is safe **or** the
    worker's **idle** list is empty): a SAFE connection is blocked only by a safe one, an IDLE
    (unsafe) one by either. ``worker_idle``/``worker_safe``: this worker's counts for the server.
    """
    return worker_safe > 0 or (kind is _LK_IDLE and worker_idle > 0)


def should_keep(
    *,
    private: bool,
    purge_delay: float,
    server_usable: bool,
    mode: ReuseMode,
    pool_max_conn: int,
    idle_total: int,
    worker_has_idle_of_kind: bool,
    used: int,
    idle: int,
    est_need: int,
    pool_low_conn: int,
) -> bool:
    """Whether a connection whose last request just ended cleanly goes to an idle list (else: close).

    Mirrors ``server.c:srv_add_to_idle_list()``. Keep iff **all** of:

    1. ``not private`` (private connections go back to their session, never to a server list);
    2. ``purge_delay > 0`` (``pool-purge-delay 0`` means never keep);
    3. ``server_usable`` — the server is not in maintenance (pass False for MAINT; a server going
       DOWN has all its idle connections closed anyway);
    4. ``mode is not ReuseMode.NEVER``;
    5. ``pool_max_conn < 0 or idle_total < pool_max_conn`` — ``pool-max-conn`` (-1 unlimited, 0 none)
       against the **server-wide** idle total, all workers, idle and safe lists together;
    6. **either** ``not worker_has_idle_of_kind`` — *each worker may always keep one* (compute it with
       ``worker_holds_for``; this is what lets connections reach ``maxconn + nbthread - 1``, §4),
       **or** the estimate has room::

           used + idle <= max(used, est_need) + pool_low_conn

       with the server-wide ``used`` (which still counts the connection being released) and
       ``idle`` (normally the same number as ``idle_total``: HAProxy reads ``curr_idle_conns`` for
       both; the two parameters exist so a caller may pass a fresher read for the cap).

    Not modelled: HAProxy's FD-ratio gates (``tune.pool-{low,high}-fd-ratio``), which poolproxy does
    not offer, and the mux checks (no stream attached, a stream available), which the caller
    guarantees by only asking for a connection that ended cleanly in keep-alive.

    This is the optimistic check. The caller must then claim the place atomically (HAProxy:
    ``++curr_idle_conns``, undone with a rejection if it went above ``pool_max_conn``), since other
    workers decide concurrently.
    """
    if private or purge_delay <= 0 or not server_usable or mode is _RM_NEVER:
        return False
    if 0 <= pool_max_conn <= idle_total:
        return False
    if not worker_has_idle_of_kind:
        return True
    return used + idle <= max(used, est_need) + pool_low_conn


# --------------------------------------------------------------------------------------------------
# 4. Purging: SEMANTICS.md §3, server.c:srv_cleanup_idle_conns() (the ≤ 3.4 one-pass model)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurgePlan:
    """The outcome of one purge period for a server: how many idle connections to close in all
    (server-wide, before the per-worker split) and the new ``est_need`` / ``max_used`` to store."""

    to_close: int
    est_need: int
    max_used: int


def purge_plan(*, used: int, idle: int, max_used: int, est_need: int) -> PurgePlan:
    """One purge period for one server, from the server-wide counters read at its start.

    ::

        if idle == 0: nothing changes (HAProxy skips the server; it is not even scheduled)
        excess   = used + idle - max(max_used, est_need)
        to_close = ceil(excess / 2) if excess > 0 else 0      # HAProxy: excess/2 + (excess & 1)
        est_need = max(max_used, (est_need + max_used) // 2)  # integer division, as in C
        max_used = used                                      # a new measurement period starts

    ``excess`` is computed with the old ``est_need``/``max_used``. ``to_close`` is additionally
    capped at ``idle`` (only idle connections are closed; HAProxy bounds each thread's share by what
    it holds, which gives the same result). Run it **once per period per server** (HAProxy ≤ 3.4's
    single global pass; 3.5-dev runs it per thread and so smooths up to N times per period), then
    split ``to_close`` with ``worker_share``. With no load the pool decays about geometrically:
    the excess halves every period.
    """
    if idle <= 0:
        return PurgePlan(to_close=0, est_need=est_need, max_used=max_used)
    excess = used + idle - max(max_used, est_need)
    to_close = min(-(-excess // 2), idle) if excess > 0 else 0
    return PurgePlan(
        to_close=to_close,
        est_need=max(max_used, (est_need + max_used) // 2),
        max_used=used,
    )


def worker_share(to_close: int, worker_idle: int, idle_total: int) -> int:
    """How many of ``to_close`` this worker closes (its oldest ones): its proportional share + 1.

    ``to_close * worker_idle // idle_total + 1``, never more than ``worker_idle`` and 0 when there is
    nothing to close. Because of the "+ 1" a pass may close up to ``to_close + nworkers``, as in
    HAProxy. ``idle_total`` is the server-wide idle count the plan was made with; a stale read below
    ``worker_idle`` is treated as ``worker_idle``.
    """
    if to_close <= 0 or worker_idle <= 0:
        return 0
    return min(worker_idle, to_close * worker_idle // max(idle_total, worker_idle) + 1)


# --------------------------------------------------------------------------------------------------
# 5. Stealing: SEMANTICS.md §3, DESIGN.md §4, backend.c:conn_backend_get()
# --------------------------------------------------------------------------------------------------


def may_steal(idle_total: int, pool_low_conn: int) -> bool:
    """Whether a worker that found nothing usable in its own lists may try other workers.

    False when the server-wide idle count is **strictly** below ``pool-low-conn`` (then it connects);
    with ``pool-low-conn 0`` (the default) stealing is allowed whenever anything is idle at all.
    """
    return idle_total > 0 and idle_total >= pool_low_conn


def steal_order(self_slot: int, nworkers: int, start: int, usable: Sequence[int]) -> list[int]:
    """The workers to ask for an idle connection, in order.

    From ``start % nworkers`` (the server's rotating ``next_takeover``), wrapping once around, skipping
    ``self_slot`` and the workers whose ``usable[slot]`` (their idle count for this server, as
    published in shared memory) is 0. After a successful steal from ``victim`` store
    ``next_takeover(victim, nworkers)`` as the new start. The thief tries each victim's IDLE list then
    its SAFE list (SAFE only when the request needs a safe connection: pass the same order as
    ``reuse_order``), with the thief's ``ConnKey``, and moves on when a victim has nothing or does not
    answer in time.
    """
    if nworkers <= 0:
        return []
    if len(usable) != nworkers:
        raise ValueError(f"usable has {len(usable)} entries for {nworkers} workers")
    first = start % nworkers
    order: list[int] = []
    for step in range(nworkers):
        slot = (first + step) % nworkers
        if slot != self_slot and usable[slot] > 0:
            order.append(slot)
    return order


def steal_candidates(
    offers: Sequence[tuple[int, int, int, int, int]], key_hash: int, order: Sequence[ListKind]
) -> list[int]:
    """Which of a victim's published slots to claim, in the order to try them (DESIGN.md §4).

    ``offers``: its IDLE slots as ``(index, tag, meta, key hash, idle since)`` (``proxy.shm``
    ``SlotArray.offers``; ``meta`` bit 0 = safe). Only slots whose key hash equals ``key_hash`` fit
    (a request never reuses another key). The lists come in ``order`` (the thief's ``reuse_order``:
    IDLE then SAFE, SAFE only for a first request in ``aggressive``, SAFE then IDLE in ``always``),
    and within a list the most recently parked first (the warmest, as ``IdlePool.take`` does).
    Returns positions in ``offers``; a claim that loses a race moves on to the next."""
    picked: list[int] = []
    for kind in order:
        want_safe = kind is ListKind.SAFE
        fit = [
            (since, pos)
            for pos, (_, _, meta, key, since) in enumerate(offers)
            if key == key_hash and bool(meta & 1) is want_safe
        ]
        fit.sort(reverse=True)
        picked.extend(pos for _, pos in fit)
    return picked


def next_takeover(victim: int, nworkers: int) -> int:
    """The rotating start after a steal from ``victim`` (or a local hit: pass the own slot)."""
    return (victim + 1) % nworkers if nworkers > 0 else 0


# --------------------------------------------------------------------------------------------------
# 6. Queue hand-off: SEMANTICS.md §4, DESIGN.md §5
# --------------------------------------------------------------------------------------------------


def oldest_waiter(tickets: Sequence[int | None]) -> int | None:
    """The worker slot whose oldest queued request holds the smallest ticket, or None if none waits.

    ``tickets[slot]`` is the oldest ticket that worker published for the server (None: no waiter).
    Tickets come from one global fetch-add counter and so are unique; were two equal, the lower slot
    wins. Whoever frees a maxconn slot hands it to this worker: dequeue is FIFO across workers.
    """
    best_slot: int | None = None
    best: int | None = None
    for slot, ticket in enumerate(tickets):
        if ticket is not None and (best is None or ticket < best):
            best, best_slot = ticket, slot
    return best_slot


# --------------------------------------------------------------------------------------------------
# 7. Acquiring a connection: the plan a backend carries out (DESIGN.md §6)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AcquirePlan:
    """How one request that holds its maxconn slot gets a server connection, step by step.

    1. the client session's own (private) connection of the same key, always first;
    2. this worker's idle lists, in ``lists`` order (``reuse_order``);
    3. if ``steal``: the other workers' idle connections, victims in ``steal_order``;
    4. a new connection, up to ``connects`` attempts (1 + ``retries``).
    """

    lists: tuple[ListKind, ...]
    steal: bool
    connects: int


def acquire_plan(
    mode: ReuseMode,
    first_request: bool,
    *,
    retries: int,
    fresh: bool = False,
    stealing: bool = True,
    idle_total: int = 0,
    local_idle: int = 0,
    pool_low_conn: int = 0,
) -> AcquirePlan:
    """The plan for one request (see ``AcquirePlan``).

    ``fresh``: only a new connection will do (a replay after a reused connection died: HAProxy
    retries on a new one). ``stealing``: this worker may take other workers' connections at all
    (several workers, ``tune.idle-pool.shared on``). ``idle_total``: the server-wide idle count;
    ``local_idle``: this worker's. Stealing is only planned when others hold something
    (``idle_total > local_idle``) and ``may_steal`` allows it; never for ``http-reuse never`` or a
    request whose mode allows no idle list."""
    connects = max(0, retries) + 1
    if fresh:
        return AcquirePlan((), False, connects)
    lists = reuse_order(mode, first_request)
    steal = (
        stealing
        and bool(lists)
        and idle_total > local_idle
        and may_steal(idle_total, pool_low_conn)
    )
    return AcquirePlan(lists, steal, connects)


# The enum members the per-request functions above use, as module constants: on Python 3.11
# a member lookup (``Phase.IDLE``) costs several times a global's, and a request makes dozens.
_LK_IDLE: Final = ListKind.IDLE
_LK_SAFE: Final = ListKind.SAFE
_RM_NEVER: Final = ReuseMode.NEVER
