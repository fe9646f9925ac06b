"""The pool policy (proxy.pool_policy) and IdlePool, against SEMANTICS.md §1-§4 and the long form
(reference/haproxy-pooling.md §1.3, §3.2-§3.4, §4, and the reg-tests quoted in §7)."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from proxy.config.model import ReuseMode, Server
from proxy.pool import (
    ConnKey,
    IdlePool,
    ListKind,
    PurgePlan,
    conn_key,
    kind_after_release,
    may_steal,
    next_takeover,
    oldest_waiter,
    purge_plan,
    reuse_order,
    server_conn_key,
    should_keep,
    steal_order,
    worker_holds_for,
    worker_share,
)

IDLE, SAFE = ListKind.IDLE, ListKind.SAFE
NEVER, SAFE_MODE, AGGRESSIVE, ALWAYS = ReuseMode.NEVER, ReuseMode.SAFE, ReuseMode.AGGRESSIVE, ReuseMode.ALWAYS


# -- reuse_order: SEMANTICS §1 table --------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "first", "expected"),
    [
        (NEVER, True, ()),
        (NEVER, False, ()),
        (SAFE_MODE, True, ()),
        (SAFE_MODE, False, (IDLE, SAFE)),
        (AGGRESSIVE, True, (SAFE,)),
        (AGGRESSIVE, False, (IDLE, SAFE)),
        (ALWAYS, True, (SAFE, IDLE)),
        (ALWAYS, False, (IDLE, SAFE)),
    ],
)
def test_reuse_order(mode: ReuseMode, first: bool, expected: tuple[ListKind, ...]) -> None:
    assert reuse_order(mode, first) == expected


def test_reuse_order_covers_every_mode() -> None:
    for mode, first in itertools.product(ReuseMode, (True, False)):
        assert isinstance(reuse_order(mode, first), tuple)


# -- kind_after_release: long form §1.3 -----------------------------------------------------------
@pytest.mark.parametrize(
    ("served", "h2", "expected"),
    [
        (1, False, IDLE),
        (2, False, SAFE),
        (3, False, SAFE),
        (100, False, SAFE),
        (1, True, SAFE),
        (5, True, SAFE),
    ],
)
def test_kind_after_release(served: int, h2: bool, expected: ListKind) -> None:
    assert kind_after_release(served, h2) is expected


def test_kind_after_release_h1_without_request_is_an_error() -> None:
    with pytest.raises(ValueError):
        kind_after_release(0)


# -- ConnKey / conn_key / server_conn_key: SEMANTICS §2 ---------------------------------------------
def test_conn_key_normalises_empty_parts() -> None:
    key = conn_key(server="be/s1", destination=("10.0.0.1", 80), source="", sni="")
    assert key == ConnKey(server="be/s1", source=None, sni=None, destination=("10.0.0.1", 80))
    assert key == conn_key(server="be/s1", destination=("10.0.0.1", 80))
    assert str(conn_key(server="be/s1", destination=("h", 1), source="1.2.3.4", sni="x")) == (
        "be/s1@h:1 src=1.2.3.4 sni=x"
    )


def test_server_conn_key_defaults_to_the_server_address() -> None:
    srv = Server(name="s1", host="10.0.0.1", port=8080)
    key = server_conn_key("be", srv)
    assert key == ConnKey(server="be/s1", source=None, sni=None, destination=("10.0.0.1", 8080))
    assert hash(key) == hash(server_conn_key("be", srv, client_ip="1.2.3.4"))  # no usesrc: not keyed
    assert str(key) == "be/s1@10.0.0.1:8080"


def test_server_conn_key_usesrc_clientip_keys_by_source() -> None:
    srv = Server(name="s1", host="10.0.0.1", port=80, source="0.0.0.0", usesrc_clientip=True)
    a, b = server_conn_key("be", srv, client_ip="1.1.1.1"), server_conn_key("be", srv, client_ip="2.2.2.2")
    assert a != b and a.source == "1.1.1.1"
    assert a == server_conn_key("be", srv, client_ip="1.1.1.1")
    with pytest.raises(ValueError):
        server_conn_key("be", srv)


def test_server_conn_key_sni_and_destination_split_the_pool() -> None:
    srv = Server(name="s1", host="h", port=443)
    assert server_conn_key("be", srv, sni="a") != server_conn_key("be", srv, sni="b")
    assert server_conn_key("be", srv, sni="") == server_conn_key("be", srv)  # empty SNI is no SNI
    assert server_conn_key("be", srv, destination=("h", 444)) != server_conn_key("be", srv)
    assert server_conn_key("be1", srv) != server_conn_key("be2", srv)
    with pytest.raises(AttributeError):  # immutable (a tuple)
        server_conn_key("be", srv).sni = "x"  # type: ignore[misc]


# -- worker_holds_for: rule 7(A) of srv_add_to_idle_list ------------------------------------------
@pytest.mark.parametrize(
    ("kind", "worker_idle", "worker_safe", "expected"),
    [
        (SAFE, 0, 0, False),
        (SAFE, 1, 0, False),  # an unsafe idle conn does not stop a safe one from being kept
        (SAFE, 0, 1, True),
        (SAFE, 2, 3, True),
        (IDLE, 0, 0, False),
        (IDLE, 1, 0, True),
        (IDLE, 0, 1, True),  # a safe one does stop an unsafe one
    ],
)
def test_worker_holds_for(kind: ListKind, worker_idle: int, worker_safe: int, expected: bool) -> None:
    assert worker_holds_for(kind, worker_idle=worker_idle, worker_safe=worker_safe) is expected


# -- should_keep: SEMANTICS §3 / long form §3.2 ---------------------------------------------------
BASE: dict[str, Any] = dict(
    private=False,
    purge_delay=5.0,
    server_usable=True,
    mode=SAFE_MODE,
    pool_max_conn=-1,
    idle_total=0,
    worker_has_idle_of_kind=False,
    used=1,
    idle=0,
    est_need=1,
    pool_low_conn=0,
)


def keep(**over: Any) -> bool:
    return should_keep(**{**BASE, **over})


def test_should_keep_base_case_keeps() -> None:
    assert keep()


@pytest.mark.parametrize(
    "over",
    [
        {"private": True},
        {"purge_delay": 0.0},
        {"server_usable": False},
        {"mode": NEVER},
        {"pool_max_conn": 0},
        {"pool_max_conn": 3, "idle_total": 3, "idle": 3},
        {"pool_max_conn": 3, "idle_total": 4, "idle": 4},
    ],
    ids=["private", "purge-0", "maint", "never", "max-conn-0", "max-conn-reached", "max-conn-exceeded"],
)
def test_should_keep_hard_refusals(over: dict[str, Any]) -> None:
    # each refusal holds even though the worker holds nothing (the "keep one" branch)
    assert not keep(**over)


@pytest.mark.parametrize("mode", [SAFE_MODE, AGGRESSIVE, ALWAYS])
def test_should_keep_every_pooling_mode(mode: ReuseMode) -> None:
    assert keep(mode=mode)


def test_should_keep_pool_max_conn_is_server_wide() -> None:
    assert keep(pool_max_conn=3, idle_total=2, idle=2)  # one place left
    assert not keep(pool_max_conn=3, idle_total=3, idle=3)  # full, though this worker holds none
    assert keep(pool_max_conn=-1, idle_total=10_000, idle=10_000)  # unlimited


def test_should_keep_each_worker_may_keep_one() -> None:
    # far above the estimate, but this worker holds nothing of that kind: keep
    assert keep(worker_has_idle_of_kind=False, used=50, idle=40, est_need=1)
    assert not keep(worker_has_idle_of_kind=True, used=50, idle=40, est_need=1)


@pytest.mark.parametrize(
    ("used", "idle", "est_need", "low", "expected"),
    [
        # used + idle <= max(used, est_need) + low
        (3, 2, 5, 0, True),  # 5 <= 5
        (3, 3, 5, 0, False),  # 6 <= 5 : one over
        (3, 1, 5, 0, True),  # one under
        (3, 3, 5, 1, True),  # pool-low-conn is slack
        (3, 4, 5, 1, False),
        (4, 0, 2, 0, True),  # used above the estimate: max() takes used; 4 <= 4
        (4, 1, 2, 0, False),  # 5 <= 4
        (4, 1, 2, 1, True),
        (0, 0, 0, 0, True),
    ],
)
def test_should_keep_formula_boundary(used: int, idle: int, est_need: int, low: int, expected: bool) -> None:
    assert (
        keep(
            worker_has_idle_of_kind=True,
            used=used,
            idle=idle,
            idle_total=idle,
            est_need=est_need,
            pool_low_conn=low,
        )
        is expected
    )


def test_should_keep_reg_test_conn_hash_dst() -> None:
    # http_reuse_conn_hash.vtc: dst1 sits in this thread's safe list; the new dst2 connection is
    # released: 7(A) fails, 7(B) gives 1+1 <= max(1,1)+2 with pool-low-conn 2, and 2 <= 1 without.
    holds = worker_holds_for(IDLE, worker_idle=0, worker_safe=1)
    common = dict(worker_has_idle_of_kind=holds, used=1, idle=1, idle_total=1, est_need=1)
    assert keep(**common, pool_low_conn=2)
    assert not keep(**common, pool_low_conn=0)


def test_should_keep_reg_test_aggressive_same_thread() -> None:
    # http_reuse_aggressive.vtc, nbthread 1: c1's connection is in the idle list; c2's new one is
    # released with used+idle = 2 > est_need = 1: closed.
    holds = worker_holds_for(IDLE, worker_idle=1, worker_safe=0)
    assert not keep(mode=AGGRESSIVE, worker_has_idle_of_kind=holds, used=1, idle=1, idle_total=1, est_need=1)
    # on another thread (that worker holds nothing) it is kept by 7(A)
    assert keep(mode=AGGRESSIVE, worker_has_idle_of_kind=False, used=1, idle=1, idle_total=1, est_need=1)


# -- purge_plan / worker_share: SEMANTICS §3 / long form §3.4 --------------------------------------
def c_half_excess(excess: int) -> int:
    """HAProxy's ``exceed/2 + (exceed & 1)`` with C's truncating division."""
    q = abs(excess) // 2 * (1 if excess >= 0 else -1)
    return q + (excess & 1)


@pytest.mark.parametrize("excess", range(1, 41))
def test_purge_to_close_is_haproxy_half_excess(excess: int) -> None:
    plan = purge_plan(used=0, idle=excess, max_used=0, est_need=0)
    assert plan.to_close == c_half_excess(excess) == -(-excess // 2)


@pytest.mark.parametrize(
    ("counters", "expected"),
    [
        # under load: excess = 10+6 - max(12,8) = 4 -> 2; est = max(12, (8+12)//2=10) = 12; max_used = 10
        (dict(used=10, idle=6, max_used=12, est_need=8), PurgePlan(2, 12, 10)),
        # odd excess rounds up: 10+7-12 = 5 -> 3
        (dict(used=10, idle=7, max_used=12, est_need=8), PurgePlan(3, 12, 10)),
        # negative excess: nothing closed, but the estimate still moves
        (dict(used=10, idle=1, max_used=15, est_need=4), PurgePlan(0, 15, 10)),
        # est_need above max_used decays toward it: (20+6)//2 = 13
        (dict(used=2, idle=30, max_used=6, est_need=20), PurgePlan(6, 13, 2)),
        # integer division as in C: (7+0)//2 = 3
        (dict(used=0, idle=2, max_used=0, est_need=7), PurgePlan(0, 3, 0)),
        # no idle connection: the server is not even visited; nothing changes
        (dict(used=3, idle=0, max_used=5, est_need=7), PurgePlan(0, 7, 5)),
        # a stale read (used above max_used) can never close more than is idle
        (dict(used=10, idle=2, max_used=0, est_need=0), PurgePlan(2, 0, 10)),
    ],
)
def test_purge_plan_cases(counters: dict[str, int], expected: PurgePlan) -> None:
    assert purge_plan(**counters) == expected


def run_purges(used: int, idle: int, max_used: int, est_need: int) -> list[tuple[int, int, int]]:
    """Periods with constant ``used`` and no new idle: (idle before, excess, closed) per period."""
    steps = []
    while idle:
        excess = used + idle - max(max_used, est_need)
        plan = purge_plan(used=used, idle=idle, max_used=max_used, est_need=est_need)
        steps.append((idle, excess, plan.to_close))
        idle -= plan.to_close
        est_need, max_used = plan.est_need, plan.max_used
    return steps


def test_purge_no_load_excess_halves_each_period() -> None:
    # load has stopped and the estimate has decayed to 0: the excess (= idle) halves every period
    assert run_purges(used=0, idle=16, max_used=0, est_need=0) == [
        (16, 16, 8),
        (8, 8, 4),
        (4, 4, 2),
        (2, 2, 1),
        (1, 1, 1),
    ]


def test_purge_after_a_spike_decays_geometrically() -> None:
    # 20 connections were needed; load stops. The estimate first holds the pool (max_used still 20),
    # then halves (20 -> 10 -> 5 -> 2 -> 1 -> 0) while about half the excess is closed each period.
    assert run_purges(used=0, idle=20, max_used=20, est_need=20) == [
        (20, 0, 0),  # est 20, max_used -> 0
        (20, 0, 0),  # est 10
        (20, 10, 5),  # est 5
        (15, 10, 5),  # est 2
        (10, 8, 4),  # est 1
        (6, 5, 3),  # est 0
        (3, 3, 2),
        (1, 1, 1),
    ]


def test_purge_keeps_what_steady_load_needs() -> None:
    # steady load of 4 used, 6 idle, estimate 4: the idle excess goes and the pool settles
    steps = run_purges(used=4, idle=6, max_used=4, est_need=4)
    assert steps[:3] == [(6, 6, 3), (3, 3, 2), (1, 1, 1)]


@pytest.mark.parametrize(
    ("to_close", "worker_idle", "idle_total", "expected"),
    [
        (5, 4, 10, 3),  # 5*4//10 + 1
        (5, 3, 10, 2),
        (5, 2, 10, 2),
        (5, 1, 10, 1),  # 0 + 1
        (0, 4, 10, 0),  # nothing to close
        (5, 0, 10, 0),  # holds nothing
        (10, 10, 10, 10),  # share + 1 capped at what the worker holds
        (3, 5, 2, 4),  # stale idle_total below worker_idle: treated as worker_idle -> 3*5//5 + 1
        (1, 1, 0, 1),  # idle_total 0 (stale): no division by zero
    ],
)
def test_worker_share(to_close: int, worker_idle: int, idle_total: int, expected: int) -> None:
    assert worker_share(to_close, worker_idle, idle_total) == expected


def test_worker_shares_sum_at_most_to_close_plus_nworkers() -> None:
    per_worker = [4, 3, 2, 1]
    shares = [worker_share(5, w, sum(per_worker)) for w in per_worker]
    assert shares == [3, 2, 2, 1]
    assert 5 <= sum(shares) <= 5 + len(per_worker)


# -- stealing: SEMANTICS §3 / long form §3.3, §4 --------------------------------------------------
@pytest.mark.parametrize(
    ("self_slot", "start", "usable", "expected"),
    [
        (1, 0, [1, 1, 1, 1], [0, 2, 3]),
        (1, 1, [1, 1, 1, 1], [2, 3, 0]),
        (1, 2, [1, 1, 1, 1], [2, 3, 0]),
        (1, 3, [1, 1, 1, 1], [3, 0, 2]),
        (1, 6, [1, 1, 1, 1], [2, 3, 0]),  # start wraps modulo nworkers
        (1, 0, [0, 5, 0, 1], [3]),  # skips empty workers and self
        (0, 0, [9, 0, 0, 0], []),  # only self has some
        (2, 3, [2, 0, 7, 1], [3, 0]),
    ],
)
def test_steal_order(self_slot: int, start: int, usable: list[int], expected: list[int]) -> None:
    assert steal_order(self_slot, 4, start, usable) == expected


def test_steal_order_rotation_spreads_victims() -> None:
    usable = [1] * 4
    start, firsts = 0, []
    for _ in range(6):
        victim = steal_order(0, 4, start, usable)[0]
        firsts.append(victim)
        start = next_takeover(victim, 4)
    assert firsts == [1, 2, 3, 1, 2, 3]


def test_steal_order_edges() -> None:
    assert steal_order(0, 1, 0, [3]) == []
    assert steal_order(0, 0, 0, []) == []
    with pytest.raises(ValueError):
        steal_order(0, 4, 0, [1, 1])
    assert next_takeover(3, 4) == 0 and next_takeover(0, 4) == 1


@pytest.mark.parametrize(
    ("idle_total", "low", "expected"),
    [(0, 0, False), (1, 0, True), (3, 4, False), (4, 4, True), (5, 4, True), (0, 4, False), (7, 8, False)],
)
def test_may_steal(idle_total: int, low: int, expected: bool) -> None:
    assert may_steal(idle_total, low) is expected


# -- oldest_waiter: SEMANTICS §4 ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tickets", "expected"),
    [
        ([], None),
        ([None, None, None], None),
        ([None, 7, 3, None], 2),
        ([5], 0),
        ([12, None, 11, 40], 2),
        ([0, 1], 0),
        ([4, 4], 0),  # impossible with unique tickets; the lower slot wins
    ],
)
def test_oldest_waiter(tickets: list[int | None], expected: int | None) -> None:
    assert oldest_waiter(tickets) == expected


# -- IdlePool -------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class FakeConn:
    name: str
    key: ConnKey
    idle_since: float = 0.0

    def __repr__(self) -> str:
        return f"<{self.name}>"


K1 = ConnKey(server="be/s1", source=None, sni=None, destination=("10.0.0.1", 80))
K2 = ConnKey(server="be/s1", source=None, sni="other", destination=("10.0.0.1", 80))


def filled() -> tuple[IdlePool[FakeConn], dict[str, FakeConn]]:
    pool: IdlePool[FakeConn] = IdlePool("s1")
    conns = {}
    for t, (name, key, kind) in enumerate(
        [("i1", K1, IDLE), ("s1", K1, SAFE), ("i2", K1, IDLE), ("x1", K2, IDLE), ("s2", K1, SAFE)]
    ):
        conns[name] = c = FakeConn(name, key, idle_since=float(t))
        pool.add(c, kind)
    return pool, conns


def test_pool_counts_and_repr() -> None:
    pool, _ = filled()
    assert len(pool) == 5
    assert pool.count(IDLE) == 3 and pool.count(SAFE) == 2
    assert repr(pool) == "<IdlePool srv=s1 idle=3 safe=2>"
    assert repr(IdlePool()) == "<IdlePool srv=? idle=0 safe=0>"


def test_pool_take_respects_order_and_is_lifo() -> None:
    pool, c = filled()
    assert pool.take(K1, (IDLE, SAFE)) is c["i2"]  # most recently released idle one
    assert pool.take(K1, (IDLE, SAFE)) is c["i1"]
    assert pool.take(K1, (IDLE, SAFE)) is c["s2"]  # idle list empty for K1: safe, newest first
    assert pool.take(K1, (SAFE, IDLE)) is c["s1"]
    assert pool.take(K1, (IDLE, SAFE)) is None
    assert len(pool) == 1 and c["x1"] in pool


def test_pool_take_respects_key() -> None:
    pool, c = filled()
    other = ConnKey(server="be/s1", source="1.2.3.4", sni=None, destination=("10.0.0.1", 80))
    assert pool.take(other, (IDLE, SAFE)) is None
    assert pool.take(K2, (SAFE,)) is None  # x1 is in the idle list
    assert pool.take(K2, (SAFE, IDLE)) is c["x1"]
    assert pool.take(K2, (IDLE, SAFE)) is None


def test_pool_take_with_empty_order_takes_nothing() -> None:
    pool, _ = filled()
    assert pool.take(K1, reuse_order(SAFE_MODE, True)) is None
    assert len(pool) == 5


def test_pool_take_with_kind() -> None:
    pool, c = filled()
    assert pool.take_with_kind(K1, (SAFE, IDLE)) == (c["s2"], SAFE)
    assert pool.take_with_kind(K2, (SAFE, IDLE)) == (c["x1"], IDLE)
    assert pool.count(SAFE) == 1 and pool.count(IDLE) == 2


def test_pool_remove() -> None:
    pool, c = filled()
    assert pool.kind_of(c["s1"]) is SAFE
    assert pool.remove(c["s1"]) is True
    assert pool.remove(c["s1"]) is False  # already gone
    assert pool.kind_of(c["s1"]) is None
    assert pool.count(SAFE) == 1 and len(pool) == 4
    assert pool.remove(FakeConn("stranger", K1)) is False
    assert pool.take(K1, (SAFE,)) is c["s2"]
    assert pool.take(K1, (SAFE,)) is None


def test_pool_oldest_is_release_order_across_lists() -> None:
    pool, c = filled()
    assert pool.oldest(3) == [c["i1"], c["s1"], c["i2"]]
    assert pool.oldest(99) == [c["i1"], c["s1"], c["i2"], c["x1"], c["s2"]]
    assert pool.oldest(0) == [] and pool.oldest(-1) == []
    assert pool.oldest_idle_since() == 0.0
    pool.remove(c["i1"])
    assert pool.oldest(1) == [c["s1"]] and pool.oldest_idle_since() == 1.0
    assert len(pool) == 4  # oldest() does not remove
    # a connection taken and released again goes to the young end
    conn = pool.take(K1, (SAFE,))
    assert conn is c["s2"]
    pool.add(conn, SAFE)
    assert pool.oldest(99)[-1] is conn
    assert list(pool) == pool.oldest(99)


def test_pool_purge_flow() -> None:
    pool, c = filled()
    share = worker_share(purge_plan(used=0, idle=5, max_used=0, est_need=0).to_close, len(pool), len(pool))
    assert share == 4  # ceil(5/2)=3 -> 3*5//5 + 1
    victims = pool.oldest(share)
    assert all(pool.remove(v) for v in victims)
    assert list(pool) == [c["s2"]]
    assert IdlePool[FakeConn]().oldest_idle_since() is None


def test_pool_pop_any() -> None:
    pool, c = filled()
    assert pool.pop_any((SAFE, IDLE)) is c["s2"]  # newest of the first non-empty list, any key
    assert pool.pop_any_with_kind((IDLE,)) == (c["x1"], IDLE)
    assert pool.pop_any((IDLE, SAFE), key=K2) is None  # keyed: like take
    assert pool.pop_any((IDLE, SAFE), key=K1) is c["i2"]
    assert pool.pop_any(()) is None
    assert [pool.pop_any((IDLE, SAFE)) for _ in range(3)] == [c["i1"], c["s1"], None]
    assert len(pool) == 0 and pool.count(IDLE) == pool.count(SAFE) == 0


def test_pool_holds_for_matches_worker_holds_for() -> None:
    pool: IdlePool[FakeConn] = IdlePool()
    assert not pool.holds_for(IDLE) and not pool.holds_for(SAFE)
    pool.add(FakeConn("a", K1), IDLE)
    assert pool.holds_for(IDLE) and not pool.holds_for(SAFE)
    pool.add(FakeConn("b", K2), SAFE)
    assert pool.holds_for(IDLE) and pool.holds_for(SAFE)
    for kind in (IDLE, SAFE):
        assert pool.holds_for(kind) is worker_holds_for(
            kind, worker_idle=pool.count(IDLE), worker_safe=pool.count(SAFE)
        )


def test_pool_add_twice_is_an_error() -> None:
    pool, c = filled()
    with pytest.raises(ValueError):
        pool.add(c["i1"], SAFE)
    assert pool.kind_of(c["i1"]) is IDLE


def test_pool_clear() -> None:
    pool, c = filled()
    assert pool.clear() == [c["i1"], c["s1"], c["i2"], c["x1"], c["s2"]]
    assert len(pool) == 0 and pool.take(K1, (IDLE, SAFE)) is None
    assert repr(pool) == "<IdlePool srv=s1 idle=0 safe=0>"


def test_pool_release_choose_round_trip() -> None:
    # a connection served once lands in IDLE; a first request in aggressive mode cannot use it,
    # a later one can; after its second request it is SAFE and a first request may take it.
    pool: IdlePool[FakeConn] = IdlePool("s1")
    conn = FakeConn("c", K1)
    pool.add(conn, kind_after_release(1))
    assert pool.take(K1, reuse_order(AGGRESSIVE, True)) is None
    assert pool.take(K1, reuse_order(AGGRESSIVE, False)) is conn
    pool.add(conn, kind_after_release(2))
    assert pool.take(K1, reuse_order(AGGRESSIVE, True)) is conn
