"""Backend.acquire_now / acquire / finish and the connection accounting over a real shared table.

A ``World`` is worker slot 0 of a 2-slot ``ShmTable``; worker 1 appears only through its cells
(``World.other``). Pooled connections are real ``ServerConn`` objects on fake transports, moved to
their accounting state through ``ServerRuntime.move``. ``World.gauges()`` checks that every
server-wide row gauge equals the sum of the workers' cells before returning the row.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable, Iterator

import pytest
from fakes import PEER, World, open_conn, pooled_conn, private_conn, worlds

from proxy.backend import AcquireError, Acquisition
from proxy.config.model import ReuseMode, Timeouts
from proxy.h1 import Limits
from proxy.pool import ListKind
from proxy.server import TRANSITIONS, Acct, IllegalTransition
from proxy.server_conn import ServerConn
from proxy.session import Session
from proxy.takeover import KILL, Message

ZERO = {"served": 0, "conns": 0, "used": 0, "idle": 0, "safe": 0, "queued": 0}
IDLE, SAFE = ListKind.IDLE, ListKind.SAFE


@pytest.fixture
def make_world() -> Iterator[Callable[..., World]]:
    yield from worlds()


def acquisition(w: World, *, first: bool, session: Session | None = None) -> Acquisition:
    session = session if session is not None else Session(*PEER)
    session.requests_done = 0 if first else 1
    return w.backend.acquisition(w.srv, session)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- acquire_now: the plan's synchronous prefix ------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "first", "pooled", "taken"),
    [
        pytest.param(ReuseMode.SAFE, True, (IDLE, SAFE), None, id="safe-first-never-reuses"),
        pytest.param(ReuseMode.SAFE, False, (SAFE, IDLE), IDLE, id="safe-later-idle-first"),
        pytest.param(ReuseMode.SAFE, False, (SAFE,), SAFE, id="safe-later-then-safe"),
        pytest.param(ReuseMode.AGGRESSIVE, True, (IDLE, SAFE), SAFE, id="aggressive-first-safe"),
        pytest.param(ReuseMode.AGGRESSIVE, True, (IDLE,), None, id="aggressive-first-not-idle"),
        pytest.param(ReuseMode.ALWAYS, True, (IDLE, SAFE), SAFE, id="always-first-safe-first"),
        pytest.param(ReuseMode.ALWAYS, True, (IDLE,), IDLE, id="always-first-then-idle"),
        pytest.param(ReuseMode.ALWAYS, False, (SAFE, IDLE), IDLE, id="always-later-idle-first"),
        pytest.param(ReuseMode.NEVER, False, (IDLE, SAFE), None, id="never"),
    ],
)
def test_acquire_now_searches_the_lists_in_reuse_order(
    make_world: Callable[..., World], mode: ReuseMode, first: bool, pooled: tuple[ListKind, ...], taken
) -> None:
    """A free slot is taken, then this worker's lists are searched in ``reuse_order``: a first
    request never reuses in ``safe`` mode, takes SAFE only in ``aggressive``, SAFE then IDLE in
    ``always``; later requests take IDLE first. A hit is counted USED and as a reuse."""
    w = make_world(reuse=mode)
    conns = {kind: pooled_conn(w.srv, w.key(), kind) for kind in pooled}
    acq = acquisition(w, first=first)
    got = w.backend.acquire_now(acq)
    assert acq.has_slot and acq.t_queued > 0
    if taken is None:
        assert got is None and not acq.reused and len(w.srv.pool) == len(pooled)
        assert w.srv.row.reuses == 0
        return
    assert got is conns[taken] and got.acct is Acct.USED and got not in w.srv.pool
    assert acq.reused and acq.t_connected > 0 and w.srv.row.reuses == 1
    idle = len(pooled) - 1
    safe = sum(1 for kind in pooled if kind is SAFE and kind is not taken)
    assert w.gauges() == dict(ZERO, served=1, conns=len(pooled), used=1, idle=idle, safe=safe)


@pytest.mark.parametrize("mode", [ReuseMode.NEVER, ReuseMode.SAFE])
def test_session_private_connection_comes_first(make_world: Callable[..., World], mode: ReuseMode) -> None:
    """The client session's own (private) connection is taken before any pooled one, and stays
    outside the shared used/idle counts."""
    w = make_world(reuse=mode)
    session = Session(*PEER)
    own = private_conn(w.srv, w.key(), session)
    pooled_conn(w.srv, w.key(), IDLE)
    pooled_conn(w.srv, w.key(), SAFE)
    acq = acquisition(w, first=False, session=session)
    assert w.backend.acquire_now(acq) is own
    assert own.acct is Acct.PRIVATE and not session.conns and len(w.srv.pool) == 2 and acq.reused
    assert w.gauges() == dict(ZERO, served=1, conns=3, idle=2, safe=1)


def test_acquire_now_without_a_slot_takes_nothing(make_world: Callable[..., World]) -> None:
    """The server is full: no slot, and no pooled connection is touched (the queue comes first)."""
    w = make_world(maxconn=1)
    assert w.other[0].cell.try_take_slot(1)
    conn = pooled_conn(w.srv, w.key(), IDLE)
    acq = acquisition(w, first=False)
    assert w.backend.acquire_now(acq) is None
    assert not acq.has_slot and conn in w.srv.pool
    assert w.gauges() == dict(ZERO, served=1, conns=1, idle=1)


def test_acquire_now_does_not_overtake_waiters(make_world: Callable[..., World]) -> None:
    """A free slot is not taken while anybody waits in the queue (FIFO across workers)."""
    w = make_world(maxconn=2)
    assert w.other[0].cell.try_queue(0)  # a waiter of worker 1
    acq = acquisition(w, first=False)
    assert w.backend.acquire_now(acq) is None and not acq.has_slot


def test_dead_pooled_connection_is_skipped_and_uncounted(make_world: Callable[..., World]) -> None:
    """A pooled connection that died while idle is closed and uncounted on the way, and the next
    one is taken."""
    w = make_world()
    live = pooled_conn(w.srv, w.key(), IDLE)
    dead = pooled_conn(w.srv, w.key(), IDLE)  # released last: tried first
    dead.transport.close()  # the server closed it; connection_lost has not run yet
    acq = acquisition(w, first=False)
    assert w.backend.acquire_now(acq) is live
    assert dead.acct is Acct.NONE and dead not in w.srv.pool and dead.transport.aborted
    assert w.gauges() == dict(ZERO, served=1, conns=1, used=1)


def test_bytes_on_an_idle_connection_take_it_out_of_the_pool(make_world: Callable[..., World]) -> None:
    """Any byte from the server on an idle pooled connection: closed, out of the pool, uncounted."""
    w = make_world()
    conn = pooled_conn(w.srv, w.key(), SAFE)
    conn.data_received(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert conn not in w.srv.pool and conn.acct is Acct.NONE and conn.transport.aborted
    assert w.gauges() == ZERO
    assert w.backend.acquire_now(acquisition(w, first=False)) is None


# -- finish: keeping or closing, releasing the slot ------------------------------------------------
def test_finish_pools_idle_then_safe_and_releases_the_slot(make_world: Callable[..., World]) -> None:
    """``finish(reusable=True)``: after its first request the connection goes USED → IDLE, after its
    second USED → SAFE; the slot is released both times."""
    w = make_world()
    acq = acquisition(w, first=True)
    assert w.backend.acquire_now(acq) is None and acq.has_slot
    conn = open_conn(w.srv, acq.key)  # what the connect step would return
    w.backend.finish(acq, conn, True)
    assert not acq.has_slot and w.srv.pool.kind_of(conn) is IDLE and conn.requests == 1
    assert w.gauges() == dict(ZERO, conns=1, idle=1)
    acq2 = acquisition(w, first=False)
    assert w.backend.acquire_now(acq2) is conn
    w.backend.finish(acq2, conn, True)
    assert w.srv.pool.kind_of(conn) is SAFE and conn.requests == 2
    assert w.gauges() == dict(ZERO, conns=1, idle=1, safe=1)


def test_finish_not_reusable_closes(make_world: Callable[..., World]) -> None:
    """``finish(reusable=False)``: the connection is closed and uncounted, the slot released."""
    w = make_world()
    acq = acquisition(w, first=False)
    conn = pooled_conn(w.srv, w.key(), SAFE)
    assert w.backend.acquire_now(acq) is conn
    w.backend.finish(acq, conn, False)
    assert conn.transport.aborted and conn.acct is Acct.NONE and conn not in w.srv.pool
    assert w.gauges() == ZERO


def test_finish_follows_the_keep_rule(make_world: Callable[..., World]) -> None:
    """A second idle connection of the same list is kept only if the need estimate has room:
    here it has not (``used + idle > max(used, est_need)``), so it is closed."""
    w = make_world()
    pooled_conn(w.srv, w.key(), IDLE)  # this worker already keeps one of its kind
    acq = acquisition(w, first=True)
    w.backend.acquire_now(acq)
    conn = open_conn(w.srv, acq.key)
    assert w.srv.row.est_need == 1
    w.backend.finish(acq, conn, True)
    assert conn.transport.aborted and w.gauges() == dict(ZERO, conns=1, idle=1)


@pytest.mark.parametrize(
    ("pool_max_conn", "others_idle", "kept"),
    [
        pytest.param(0, 0, False, id="pool-max-conn-0"),
        pytest.param(1, 1, False, id="pool-max-conn-reached-by-another-worker"),
        pytest.param(1, 0, True, id="pool-max-conn-room"),
        pytest.param(-1, 3, True, id="unlimited"),
    ],
)
def test_finish_respects_pool_max_conn_server_wide(
    make_world: Callable[..., World], pool_max_conn: int, others_idle: int, kept: bool
) -> None:
    """``pool-max-conn`` bounds the idle connections of all workers together: a connection is
    closed rather than pooled past it (0: never pooled)."""
    w = make_world(pool_max_conn=pool_max_conn)
    for _ in range(others_idle):  # worker 1's idle connections
        assert w.other[0].cell.try_open_conn(0)
        w.other[0].cell.idle_add(1)
    acq = acquisition(w, first=True)
    w.backend.acquire_now(acq)
    conn = open_conn(w.srv, acq.key)
    w.backend.finish(acq, conn, True)
    assert (conn in w.srv.pool) is kept and conn.transport.aborted is not kept
    assert w.gauges() == dict(ZERO, conns=others_idle + kept, idle=others_idle + kept)


def test_http_reuse_never_gives_the_connection_back_to_its_session(make_world: Callable[..., World]) -> None:
    """``http-reuse never``: a connection is born private and goes back to its client session,
    never to the pool; a shared (USED) one would be closed."""
    w = make_world(reuse=ReuseMode.NEVER)
    session = Session(*PEER)
    acq = acquisition(w, first=True, session=session)
    w.backend.acquire_now(acq)
    own = open_conn(w.srv, acq.key, private=True)
    w.backend.finish(acq, own, True)
    assert session.conns == [own] and own.acct is Acct.PRIVATE and len(w.srv.pool) == 0
    shared = open_conn(w.srv, acq.key)
    w.backend.finish(acquisition(w, first=False), shared, True)
    assert shared.transport.aborted and shared.acct is Acct.NONE
    assert w.gauges() == dict(ZERO, conns=1)


def test_finish_while_stopping_closes(make_world: Callable[..., World]) -> None:
    """Soft stop: nothing is pooled any more."""
    w = make_world()
    w.link.stopping = True
    acq = acquisition(w, first=True)
    w.backend.acquire_now(acq)
    conn = open_conn(w.srv, acq.key)
    w.backend.finish(acq, conn, True)
    assert conn.transport.aborted and w.gauges() == ZERO


# -- acquire: queue, connect ------------------------------------------------------------------------
def test_acquire_with_the_queue_full_is_503_sq(make_world: Callable[..., World]) -> None:
    """Server full and queue full (``maxqueue``): ``AcquireError(503, 'SQ')``, nothing held."""
    w = make_world(maxconn=1, maxqueue=1)
    assert w.other[0].cell.try_take_slot(1) and w.other[0].cell.try_queue(1)
    acq = acquisition(w, first=False)
    with pytest.raises(AcquireError) as err:
        w.run(w.backend.acquire(acq))
    assert (err.value.status, err.value.term) == (503, "SQ") and not acq.has_slot
    assert w.srv.row.queue_full == 1 and w.gauges() == dict(ZERO, served=1, queued=1)


def test_acquire_queue_timeout_is_503_lower_sq(make_world: Callable[..., World]) -> None:
    """No slot within ``timeout queue``: ``AcquireError(503, 'sQ')``, the queue place given back."""
    w = make_world(maxconn=1, timeouts=Timeouts(queue=0.02))
    assert w.other[0].cell.try_take_slot(1)
    acq = acquisition(w, first=False)
    with pytest.raises(AcquireError) as err:
        w.run(w.backend.acquire(acq))
    assert (err.value.status, err.value.term) == (503, "sQ") and not acq.has_slot
    assert w.srv.row.queue_timeouts == 1 and w.gauges() == dict(ZERO, served=1)


def test_acquire_after_the_queue_searches_the_pool(make_world: Callable[..., World]) -> None:
    """A request granted a slot after waiting looks in this worker's lists before connecting."""
    w = make_world(maxconn=1)
    assert w.other[0].cell.try_take_slot(1)
    conn = pooled_conn(w.srv, w.key(), IDLE)
    acq = acquisition(w, first=False)

    async def main() -> object:
        task = asyncio.create_task(w.backend.acquire(acq))
        await asyncio.sleep(0.01)
        assert not task.done() and w.gauges()["queued"] == 1
        w.other[0].cell.release_slot()  # freed without a hand-off: our sweep finds it
        return await asyncio.wait_for(task, 1.0)

    assert w.run(main()) is conn
    assert acq.has_slot and acq.reused and w.fake.connects == 0
    assert w.gauges() == dict(ZERO, served=1, conns=1, used=1)


def test_fresh_acquire_never_reuses(make_world: Callable[..., World]) -> None:
    """``fresh`` (a replay): a new connection even with a pooled one available."""
    w = make_world()
    pooled = pooled_conn(w.srv, w.key(), IDLE)
    acq = acquisition(w, first=False)
    acq.has_slot = w.srv.cell.try_take_slot(0)  # the replaying request keeps its slot
    conn = w.run(w.backend.acquire(acq, fresh=True))
    assert conn is not pooled and w.fake.opened == [conn] and pooled in w.srv.pool and not acq.reused
    w.backend.finish(acq, conn, False)
    assert w.gauges() == dict(ZERO, conns=1, idle=1)


def test_acquire_connect_refused_after_retries_is_503_sc(make_world: Callable[..., World]) -> None:
    """Every real connect refused (1 + ``retries`` attempts): ``AcquireError(503, 'SC')``; each
    attempt counted as a connect and an error, nothing left counted but the slot."""
    w = make_world(real_connect=True, server_port=closed_port(), retries=1)
    acq = acquisition(w, first=True)
    assert w.backend.acquire_now(acq) is None
    with pytest.raises(AcquireError) as err:
        w.run(w.backend.acquire(acq))
    assert (err.value.status, err.value.term) == (503, "SC")
    assert (w.srv.row.connects, w.srv.row.connect_errors) == (2, 2)
    assert acq.has_slot and w.gauges() == dict(ZERO, served=1)
    w.backend.finish(acq, None, False)
    assert w.gauges() == ZERO


def test_real_connect_is_counted_like_the_fake_one(make_world: Callable[..., World]) -> None:
    """A real loopback connect: a live connection counted USED (``open_conn`` counts the same)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        w = make_world(real_connect=True, server_port=listener.getsockname()[1])
        acq = acquisition(w, first=True)
        w.backend.acquire_now(acq)
        conn = w.run(w.backend.acquire(acq))
        assert conn.alive and conn.acct is Acct.USED and not acq.reused and conn.on_lost is not None
        assert w.srv.row.connects == 1 and w.gauges() == dict(ZERO, served=1, conns=1, used=1)
        w.backend.finish(acq, conn, False)
        w.run(asyncio.sleep(0))
        assert w.gauges() == ZERO


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[tuple[int, Message]] = []

    def send(self, slot: int, msg: Message) -> bool:
        self.sent.append((slot, msg))
        return True


def test_room_for_a_connection_is_made_by_closing_an_idle_one(make_world: Callable[..., World]) -> None:
    """At the connection limit, one of this worker's idle connections is closed to make room."""
    w = make_world(maxconn=1)
    idle = pooled_conn(w.srv, w.key(), IDLE)
    conn = ServerConn(w.srv, w.key(), w.engine_name, Limits())  # not counted yet
    deadline = w.loop.time() + 1.0
    w.run(w.backend._room_for_one(w.srv, conn, deadline, 1))
    assert conn.acct is Acct.COUNTED and idle.transport.aborted and idle.acct is Acct.NONE
    assert w.gauges() == dict(ZERO, conns=1)


def test_room_held_by_another_worker_sends_one_kill_then_times_out(make_world: Callable[..., World]) -> None:
    """At the limit with the idle connection in another worker: one KILL to that worker, then
    TimeoutError at the deadline if no room appeared; nothing counted."""
    w = make_world(maxconn=1)
    channel = FakeChannel()
    w.link.channel = channel  # type: ignore[assignment]
    assert w.other[0].cell.try_open_conn(0)
    w.other[0].cell.idle_add(1)
    conn = ServerConn(w.srv, w.key(), w.engine_name, Limits())
    with pytest.raises(TimeoutError):
        w.run(w.backend._room_for_one(w.srv, conn, w.loop.time() + 0.02, 1))
    assert [(slot, msg.kind, msg.server) for slot, msg in channel.sent] == [(1, KILL, w.srv.index)]
    assert conn.acct is Acct.NONE and w.gauges() == dict(ZERO, conns=1, idle=1)


# -- the accounting table ---------------------------------------------------------------------------
class Books:
    """Anything ``ServerRuntime.move`` can account (``proxy.server.Accounted``)."""

    def __init__(self) -> None:
        self.acct = Acct.NONE


# What the shared counters count a connection in each state as (proxy.server's table).
COUNTED_IN: dict[Acct, dict[str, int]] = {
    Acct.NONE: {},
    Acct.COUNTED: {"conns": 1},
    Acct.PRIVATE: {"conns": 1},
    Acct.USED: {"conns": 1, "used": 1},
    Acct.IDLE: {"conns": 1, "idle": 1},
    Acct.SAFE: {"conns": 1, "idle": 1, "safe": 1},
    Acct.TAKEN: {},
}
# The moves across workers go through a slot (tests/test_slots.py, tests/test_steal_process.py).
CROSS = {(Acct.NONE, Acct.USED), (Acct.IDLE, Acct.TAKEN), (Acct.SAFE, Acct.TAKEN), (Acct.TAKEN, Acct.NONE)}
LOCAL = [edge for edge in TRANSITIONS if edge not in CROSS]
UNLIMITED = {(Acct.USED, Acct.IDLE): -1, (Acct.USED, Acct.SAFE): -1}  # pool-max-conn -1; else 0


def path_to(state: Acct) -> list[Acct]:
    """The shortest chain of legal moves from NONE to ``state`` (breadth-first over TRANSITIONS)."""
    paths: dict[Acct, list[Acct]] = {Acct.NONE: []}
    todo = deque([Acct.NONE])
    while todo:
        frm = todo.popleft()
        for a, b in LOCAL:
            if a is frm and b not in paths:
                paths[b] = [*paths[a], b]
                todo.append(b)
    return paths[state]


def reach(w: World, state: Acct) -> Books:
    books = Books()
    for step in path_to(state):
        assert w.srv.move(books, step, UNLIMITED.get((books.acct, step), 0))
    return books


def test_every_state_is_reachable() -> None:
    """Every accounting state can be reached from NONE by legal moves (the table is connected)."""
    for state in Acct:
        if state is Acct.TAKEN:
            continue  # through a slot only
        path = path_to(state)
        assert path[-1:] == [state] or state is Acct.NONE


@pytest.mark.parametrize(("frm", "to"), LOCAL, ids=[f"{a.name}-{b.name}" for a, b in LOCAL])
def test_every_transition_keeps_the_books(make_world: Callable[..., World], frm: Acct, to: Acct) -> None:
    """Each legal move leaves every row gauge equal to the sum of the cells, and the counters
    counting the connection exactly as its new state says."""
    w = make_world()
    books = reach(w, frm)
    assert w.gauges() == dict(ZERO, **COUNTED_IN[frm])
    assert w.srv.move(books, to, UNLIMITED.get((frm, to), 0))
    assert books.acct is to
    assert w.gauges() == dict(ZERO, **COUNTED_IN[to])


ILLEGAL = [
    (a, b)
    for a in Acct
    for b in Acct
    if a is not b and (a, b) not in TRANSITIONS and Acct.TAKEN not in (a, b)
]


@pytest.mark.parametrize(("frm", "to"), ILLEGAL, ids=[f"{a.name}-{b.name}" for a, b in ILLEGAL])
def test_illegal_transition_raises_and_changes_nothing(
    make_world: Callable[..., World], frm: Acct, to: Acct
) -> None:
    """A move the table does not have raises ``IllegalTransition``; state and counters unchanged."""
    w = make_world()
    books = reach(w, frm)
    with pytest.raises(IllegalTransition):
        w.srv.move(books, to)
    assert books.acct is frm and w.gauges() == dict(ZERO, **COUNTED_IN[frm])


def test_bounded_moves_are_refused_at_their_limit(make_world: Callable[..., World]) -> None:
    """``NONE → COUNTED`` past a connection limit and ``USED → IDLE`` past ``pool-max-conn`` (0
    included: no idle connection at all) return False and change nothing."""
    w = make_world()
    assert w.other[0].cell.try_open_conn(0)  # worker 1 holds one connection
    books = Books()
    assert not w.srv.move(books, Acct.COUNTED, 1) and books.acct is Acct.NONE
    assert w.srv.move(books, Acct.COUNTED, 2) and w.srv.move(books, Acct.USED)
    assert not w.srv.move(books, Acct.IDLE, 0) and books.acct is Acct.USED
    w.other[0].cell.idle_add(1)
    assert not w.srv.move(books, Acct.SAFE, 1) and books.acct is Acct.USED
    assert w.gauges() == dict(ZERO, conns=2, used=1, idle=1)


def test_hand_over_and_adopt_move_the_count_between_workers(make_world: Callable[..., World]) -> None:
    """A hand-over moves the connection's share of ``cur_conns`` to the thief's cell (the row never
    dips); the thief adopts it without counting it twice."""
    w = make_world()
    books = reach(w, Acct.COUNTED)
    w.srv.hand_over(books, 1)
    assert books.acct is Acct.NONE and w.gauges() == dict(ZERO, conns=1)
    assert (w.srv.cell.conns, w.other[0].cell.conns) == (0, 1)
    w.other[0].adopt(books)
    assert books.acct is Acct.COUNTED and w.gauges() == dict(ZERO, conns=1)
    w.other[0].move(books, Acct.NONE)
    assert w.gauges() == ZERO
    with pytest.raises(IllegalTransition):
        w.srv.hand_over(books, 1)  # only a COUNTED connection can be handed over
