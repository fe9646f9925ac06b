"""The idle-connection slot: its state machine (proxy.slots) and its operations on a real shared
table (proxy.shm SlotArray), reconcile included. No descriptors here: tests/test_steal_process.py
drives the same slots with real connections and real processes killed in every state."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from proxy import slots as sl
from proxy.config.model import Cap, Config, Proxy, Server
from proxy.pool_policy import ListKind, steal_candidates
from proxy.shm import ShmTable, WorkerState
from proxy.slot_array import SlotArray
from proxy.slots import Actor, IllegalSlotMove, SlotState

_gen = itertools.count(5000)
E, I, C, T = SlotState.EMPTY, SlotState.IDLE, SlotState.CLAIMED, SlotState.TAKEN  # noqa: E741


@pytest.fixture(params=["c", "fallback"])
def table(request: pytest.FixtureRequest) -> Iterator[ShmTable]:
    from proxy import atomics

    if request.param == "c" and "c" not in atomics.AVAILABLE:
        pytest.skip("C atomics not built")
    be = Proxy(name="be", cap=Cap.BACKEND, servers=[Server(name="s1", host="127.0.0.1", port=1)])
    config = Config(backends={"be": be})
    t = ShmTable.create(config, 3, generation=next(_gen), backend=request.param, nslots=8)
    for w in range(3):
        t.register_worker(w, 1000 + w, 1)
        t.set_worker_state(w, WorkerState.RUNNING)
    yield t
    t.close()
    t.unlink()


def publish(
    arr: SlotArray, k: int, *, fd: int = 7, safe: bool = False, key: int = 42, since: int = 1
) -> int:
    return arr.publish(
        k, owner=sl.make_owner(arr.owner, 1), fd=fd, conn_id=100 + k, ports=sl.make_ports(40000 + k, 80),
        meta=sl.make_meta(safe=safe, reqs=3), key_hash=key, idle_since_ns=since,
    )  # fmt: skip


# -- the table ------------------------------------------------------------------------------------
ALL = [(a, b) for a in SlotState for b in SlotState if a is not b]


@pytest.mark.parametrize(("frm", "to"), ALL, ids=[f"{a.name}-{b.name}" for a, b in ALL])
@pytest.mark.parametrize("actor", list(Actor))
def test_every_move_is_in_the_table_or_raises(frm: SlotState, to: SlotState, actor: Actor) -> None:
    allowed = actor in sl.TRANSITIONS.get((frm, to), frozenset())
    if allowed:
        sl.check_move(frm, to, actor)
    else:
        with pytest.raises(IllegalSlotMove):
            sl.check_move(frm, to, actor)


def test_the_protocol_in_words() -> None:
    """Only the owner publishes; only a thief takes; the owner never moves a slot back to IDLE
    (giving back is the claimer's, or the master's for a dead claimer); every state is reachable
    from EMPTY and leads back to it."""
    assert sl.TRANSITIONS[(E, I)] == {Actor.OWNER}
    assert sl.TRANSITIONS[(C, T)] == {Actor.THIEF}
    assert Actor.OWNER not in sl.TRANSITIONS[(C, I)]
    reach = {E}
    while True:
        more = {t for (f, t) in sl.TRANSITIONS if f in reach} - reach
        if not more:
            break
        reach |= more
    assert reach == set(SlotState)
    back = {E}
    while True:
        more = {f for (f, t) in sl.TRANSITIONS if t in back} - back
        if not more:
            break
        back |= more
    assert back == set(SlotState)


def test_tag_round_trips() -> None:
    tag = sl.make_tag(SlotState.TAKEN, 123456789, 17, discard=True)
    parts = (sl.state_of(tag), sl.version_of(tag), sl.claimer_of(tag), sl.discarded(tag))
    assert parts == (T, 123456789, 17, True)
    assert tag > 0
    idle = sl.published(sl.make_tag(E, 4))
    assert (sl.state_of(idle), sl.version_of(idle)) == (I, 5)
    c = sl.claimed(idle, 2)
    assert (sl.state_of(c), sl.claimer_of(c), sl.version_of(c)) == (C, 2, 5)
    assert sl.released(c) == idle  # the same publish, untouched
    assert sl.state_of(sl.emptied(sl.taken(c))) is E and sl.version_of(sl.emptied(c)) == 5
    assert sl.describe(sl.taken(c, discard=True)) == "TAKEN(w2, discard) v5"
    with pytest.raises(ValueError):
        sl.make_tag(C, 1, sl.MAX_CLAIMER + 1)
    meta = sl.make_meta(safe=True, reqs=9)
    assert (sl.meta_safe(meta), sl.meta_reqs(meta), sl.meta_proto(meta)) == (True, 9, sl.PROTO_H1)
    assert sl.split_ports(sl.make_ports(65535, 1)) == (65535, 1)
    assert sl.split_owner(sl.make_owner(3, 77)) == (3, 77)


# -- the policy ------------------------------------------------------------------------------------
def offer(k: int, *, safe: bool = False, key: int = 1, since: int = 0) -> tuple[int, int, int, int, int]:
    return (k, 0, sl.make_meta(safe=safe, reqs=1), key, since)


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ((ListKind.IDLE, ListKind.SAFE), [2, 0, 3, 1]),
        ((ListKind.SAFE,), [3, 1]),
        ((ListKind.SAFE, ListKind.IDLE), [3, 1, 2, 0]),
        ((), []),
    ],
)
def test_steal_candidates_follow_the_lists_then_the_warmest(
    order: tuple[ListKind, ...], expected: list[int]
) -> None:
    offers = [
        offer(0, since=10),
        offer(1, safe=True, since=10),
        offer(2, since=20),
        offer(3, safe=True, since=30),
        offer(4, since=99, key=2),  # another key: never
    ]
    assert steal_candidates(offers, 1, order) == expected


# -- SlotArray on a real table ----------------------------------------------------------------------
def pooled(table: ShmTable, owner: int, n: int = 1, safe: bool = False) -> None:
    """``n`` idle connections counted in ``owner``'s cell, as parking them does."""
    cell = table.cell(0, owner)
    for _ in range(n):
        assert cell.try_open_conn(0)
        cell.idle_add(1, safe)


GAUGE_NAMES = ("idle", "safe", "conns", "used")


def books(table: ShmTable) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(row, sum of cells, taken pending) for server 0, and the invariant between them checked."""
    snap = table.snapshot()["servers"][0]
    row = {"idle": snap["idle"], "safe": snap["safe"], "conns": snap["cur_conns"], "used": snap["used"]}
    cells = {g: sum(c[g] for c in snap["cells"]) for g in GAUGE_NAMES}
    names = ("served", "conns", "used", "idle", "safe", "queued")
    pending = dict(zip(names, table._taken_pending(0), strict=True))
    assert all(row[g] == cells[g] - pending[g] for g in GAUGE_NAMES), (row, cells, pending)
    return row, cells, pending


def test_publish_claim_take_finalize(table: ShmTable) -> None:
    owner, thief = table.slots(0, 0), table.slots(0, 1)
    pooled(table, 0, safe=True)
    assert owner.offers() == [] and owner.tags() == []
    tag = publish(owner, 0, fd=9, safe=True, key=5, since=123)
    assert sl.state_of(tag) is I and owner.high == 1
    [(k, seen, meta, key, since)] = owner.offers()
    assert (k, seen, sl.meta_safe(meta), key, since) == (0, tag, True, 5, 123)
    bell = owner.bell
    ctag = owner.claim(0, seen, by=1)
    assert ctag is not None and owner.claim(0, seen, by=2) is None  # one claim wins
    rec = owner.record(0)
    assert (rec.owner_slot, rec.owner_incarnation, rec.fd, rec.local_port, rec.peer_port, rec.reqs) == (
        0, 1, 9, 40000, 80, 3,
    )  # fmt: skip
    assert owner.offers() == []
    assert not owner.unpublish(0, tag)  # the owner cannot take back what a thief claimed
    assert books(table)[0] == {"idle": 1, "safe": 1, "conns": 1, "used": 0}
    assert table.cell(0, 1).take_slot(owner, 0, ctag, True) and owner.bell == bell + 1
    assert sl.state_of(owner.tag(0)) is T and sl.claimer_of(owner.tag(0)) == 1
    # the row is exact at once; the owner's cell still counts it until it finalizes
    assert books(table) == (
        {"idle": 0, "safe": 0, "conns": 1, "used": 1},
        {"idle": 1, "safe": 1, "conns": 2, "used": 1},
        {"served": 0, "conns": 1, "used": 0, "idle": 1, "safe": 1, "queued": 0},
    )
    assert table.row(0).max_used == 1 and table.row(0).max_cur_conns == 1
    assert not table.cell(0, 2).take_slot(owner, 0, ctag, True)  # a stale claim changes nothing
    table.cell(0, 0).finalize_slot(owner, 0, True)
    assert sl.state_of(owner.tag(0)) is E
    row, cells, _ = books(table)
    assert row == cells == {"idle": 0, "safe": 0, "conns": 1, "used": 1}
    again = publish(owner, 0)
    assert sl.version_of(again) == sl.version_of(tag) + 1
    assert owner.claim(0, tag, by=1) is None  # a stale tag never matches a republished slot
    assert thief.offers() == []


def test_release_gives_the_same_publish_back(table: ShmTable) -> None:
    arr = table.slots(0, 0)
    tag = publish(arr, 3)
    ctag = arr.claim(3, tag, by=2)
    assert ctag is not None and arr.release(3, ctag)
    assert arr.tag(3) == tag and arr.high == 4
    assert arr.unpublish(3, tag) and sl.state_of(arr.tag(3)) is E


def test_discard_drops_the_connection_from_the_row(table: ShmTable) -> None:
    """A thief that finds the connection dead takes it as a discard: the row drops it at once (idle
    and cur_conns), the owner's cell when it finalizes."""
    pooled(table, 0)
    arr = table.slots(0, 0)
    ctag = arr.claim(0, publish(arr, 0), 2)
    assert ctag is not None and table.cell(0, 2).take_slot(arr, 0, ctag, False, discard=True)
    assert sl.discarded(arr.tag(0))
    assert books(table)[0] == {"idle": 0, "safe": 0, "conns": 0, "used": 0}
    table.cell(0, 0).finalize_slot(arr, 0, False)
    assert books(table)[1] == {"idle": 0, "safe": 0, "conns": 0, "used": 0}


def test_illegal_owner_moves_raise(table: ShmTable) -> None:
    arr = table.slots(0, 0)
    tag = publish(arr, 0)
    with pytest.raises(IllegalSlotMove):
        publish(arr, 0)  # IDLE -> IDLE
    with pytest.raises(IllegalSlotMove):
        table.cell(0, 0).finalize_slot(arr, 0, False)  # IDLE -> EMPTY is the master's only
    assert arr.tag(0) == tag


# -- reconcile: every state of a dead owner's and a dead claimer's slots ----------------------------
def states(arr: SlotArray) -> list[SlotState]:
    return [sl.state_of(arr.tag(k)) for k in range(4)]


def four_states(table: ShmTable, owner: int, thief: int) -> SlotArray:
    """Slots 0..3 of ``owner``: EMPTY (published then emptied), IDLE, CLAIMED(thief), TAKEN(thief)
    (safe), each counted as the real workers count them (3 idle connections, one of them taken)."""
    arr = table.slots(0, owner)
    pooled(table, owner, 2)
    pooled(table, owner, 1, safe=True)
    assert arr.unpublish(0, publish(arr, 0))
    publish(arr, 1)
    c2 = arr.claim(2, publish(arr, 2), thief)
    c3 = arr.claim(3, publish(arr, 3, safe=True), thief)
    assert c2 is not None and c3 is not None and table.cell(0, thief).take_slot(arr, 3, c3, True)
    assert states(arr) == [E, I, C, T]
    books(table)
    return arr


def test_reconcile_dead_owner_empties_all_its_slots(table: ShmTable) -> None:
    arr = four_states(table, owner=0, thief=1)
    c2 = arr.tag(2)
    table.set_worker_state(0, WorkerState.DEAD)
    report = table.reconcile_worker(0)
    assert report.slots_cleared == 3 and states(arr) == [E, E, E, E] and arr.high == 0
    # the thief that held the claim: its take fails, it closes its copy, nothing is counted
    assert not table.cell(0, 1).take_slot(arr, 2, c2, False)
    assert "3 slots emptied" in str(report)
    # what is left: the connection worker 1 took (used, counted in its cell), exactly
    row, cells, _ = books(table)
    assert row == cells == {"idle": 0, "safe": 0, "conns": 1, "used": 1}


def test_reconcile_dead_claimer_returns_claims_and_leaves_takes(table: ShmTable) -> None:
    arr = four_states(table, owner=0, thief=1)
    other = table.slots(0, 2)
    c = other.claim(0, publish(other, 0), 1)  # its claim on a third worker's slot, too
    assert c is not None
    bell = arr.bell
    table.set_worker_state(1, WorkerState.DEAD)
    report = table.reconcile_worker(1)
    assert report.claims_returned == 2
    assert states(arr) == [E, I, I, T]  # TAKEN: the owner finalizes it (its copy is the last)
    assert arr.bell == bell + 1 and sl.state_of(other.tag(0)) is I
    assert books(table)[0] == {"idle": 2, "safe": 0, "conns": 2, "used": 0}
    table.cell(0, 0).finalize_slot(arr, 3, True)
    row, cells, _ = books(table)
    assert row == cells == {"idle": 2, "safe": 0, "conns": 2, "used": 0}


def test_reconcile_both_dead(table: ShmTable) -> None:
    arr = four_states(table, owner=0, thief=1)
    table.set_worker_state(0, WorkerState.DEAD)
    table.set_worker_state(1, WorkerState.DEAD)
    table.reconcile_worker(1)  # the claimer first: the owner is dead, so its claim goes to EMPTY
    assert states(arr) == [E, I, E, T]
    table.reconcile_worker(0)
    assert states(arr) == [E, E, E, E]
    row, cells, _ = books(table)
    assert row == cells == {"idle": 0, "safe": 0, "conns": 0, "used": 0}


def test_snapshot_counts_slots(table: ShmTable) -> None:
    four_states(table, owner=0, thief=1)
    counts = table.snapshot()["servers"][0]["slots"][0]
    assert counts == {"empty": 5, "idle": 1, "claimed": 1, "taken": 1}
    assert repr(table.slots(0, 0)) == "<SlotArray server=0 owner=0 idle=1 claimed=1 taken=1>"
