"""maxconn slots and the cross-worker FIFO queue (proxy.queue) over a real shared table.

Two workers are simulated in one event loop: two ``Queues`` on slots 0 and 1 of one ``ShmTable``,
whose SLOT datagrams are delivered by a direct call instead of a socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from proxy.config.model import Cap, Config, Proxy, Server
from proxy.queue import Outcome, Queues
from proxy.server import ServerRuntime
from proxy.shm import R_MAXCONN, ShmTable
from proxy.takeover import SLOT, Message


@pytest.fixture
def table() -> Iterator[ShmTable]:
    cfg = Config()
    be = Proxy(name="be", cap=Cap.BACKEND, servers=[Server(name="s1", host="127.0.0.1", port=1)])
    cfg.backends["be"] = be
    t = ShmTable.create(cfg, 2)
    try:
        yield t
    finally:
        t.close()
        t.unlink()


def make_workers(
    table: ShmTable, loop: asyncio.AbstractEventLoop, maxconn: int, maxqueue: int = 0
) -> tuple[list[Queues], list[ServerRuntime]]:
    cfg = Server(name="s1", host="127.0.0.1", port=1, maxconn=maxconn, maxqueue=maxqueue)
    table.row(0).store(R_MAXCONN, maxconn)  # the live limit: the row (create copies the config)
    cells = [table.cell(0, w) for w in range(2)]
    servers = [ServerRuntime("be", 0, cfg, cells, slot) for slot in range(2)]
    queues: list[Queues] = []

    def sender(_from: int):  # type: ignore[no-untyped-def]
        def send(to: int, msg: Message) -> bool:
            assert msg.kind == SLOT
            loop.call_soon(queues[to].granted, servers[to])
            return True

        return send

    queues.extend(Queues(table, slot, loop, sender(slot)) for slot in range(2))
    return queues, servers


def test_fast_path_never_overshoots(table: ShmTable) -> None:
    async def main() -> None:
        (q0, q1), (s0, s1) = make_workers(table, asyncio.get_running_loop(), maxconn=2)
        assert q0.try_take(s0) and q1.try_take(s1)
        assert not q0.try_take(s0) and not q1.try_take(s1)
        assert table.row(0).served == 2
        q0.release(s0)
        q1.release(s1)
        assert table.row(0).served == 0

    asyncio.run(main())


def test_fifo_across_workers(table: ShmTable) -> None:
    """Waiters are served by ticket order whichever worker they wait in, and slots move across."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        (q0, q1), (s0, s1) = make_workers(table, loop, maxconn=1)
        assert q0.try_take(s0)
        order: list[str] = []

        async def wait(q: Queues, s: ServerRuntime, name: str) -> None:
            assert await q.wait(s, 5.0) is Outcome.GRANTED
            order.append(name)
            await asyncio.sleep(0.01)
            q.release(s)

        tasks = []
        for name, q, s in [("w1-a", q1, s1), ("w0-b", q0, s0), ("w1-c", q1, s1), ("w0-d", q0, s0)]:
            tasks.append(asyncio.create_task(wait(q, s, name)))
            await asyncio.sleep(0.005)  # tickets in this order
        assert table.row(0).queue_len == 4
        q0.release(s0)
        await asyncio.gather(*tasks)
        assert order == ["w1-a", "w0-b", "w1-c", "w0-d"]
        row = table.row(0)
        assert (row.served, row.queue_len, row.max_served) == (0, 0, 1)

    asyncio.run(main())


def test_queue_timeout_and_full(table: ShmTable) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        (q0, q1), (s0, s1) = make_workers(table, loop, maxconn=1, maxqueue=1)
        assert q0.try_take(s0)
        waiting = asyncio.create_task(q1.wait(s1, 0.05))
        await asyncio.sleep(0)
        assert await q0.wait(s0, 1.0) is Outcome.FULL  # maxqueue 1 already used by the other worker
        assert await waiting is Outcome.TIMEOUT
        row = table.row(0)
        assert (row.queue_len, row.queue_timeouts, row.queue_full) == (0, 1, 1)
        q0.release(s0)
        assert row.served == 0  # the slot was not leaked to the waiter that left

    asyncio.run(main())


def test_aborted_waiter_leaks_nothing(table: ShmTable) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        (q0, q1), (s0, s1) = make_workers(table, loop, maxconn=1)
        assert q0.try_take(s0)
        waiting = asyncio.create_task(q1.wait(s1, 5.0))
        await asyncio.sleep(0.01)
        waiting.cancel()  # the client went away while queued
        with pytest.raises(asyncio.CancelledError):
            await waiting
        q0.release(s0)
        await asyncio.sleep(0.01)
        row = table.row(0)
        assert (row.served, row.queue_len) == (0, 0)
        assert q1.try_take(s1)

    asyncio.run(main())


def test_offer_never_sends_a_worker_more_slots_than_waiters(table: ShmTable) -> None:
    """Regression guard (review of the shared pool, bug 6): when slots free up without a hand-off
    (a dead worker's, reconciled), offer() used to move every free slot to the one waiting worker."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        (q0, q1), (s0, s1) = make_workers(table, loop, maxconn=3)
        for _ in range(3):
            assert q0.try_take(s0)
        waiter = asyncio.create_task(q1.wait(s1, 5.0))
        await asyncio.sleep(0)
        assert table.row(0).queue_len == 1
        for _ in range(3):
            s0.cell.release_slot()  # freed without a hand-off
        q0.offer(s0)
        # Before worker 1 even reads its datagrams: one slot on the way for its one waiter.
        assert (table.cell(0, 1).incoming, table.row(0).served) == (1, 1)
        assert await waiter is Outcome.GRANTED
        q1.release(s1)
        assert table.row(0).served == 0

    asyncio.run(main())
