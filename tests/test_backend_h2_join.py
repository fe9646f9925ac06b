"""``H2Pooling._join`` (proxy.backend_h2), unit level: in ``http-reuse always`` the requests of a worker
that waited for its connect in flight take that connection even when, by the time they run, its first
stream has already ended and it went idle (a fast server) — instead of each opening its own.

Found with ``python -m tools.lab --rows keepalive-h2-always --workers 2``: about half the runs opened one
server connection per client (24-31) instead of one per worker, because the waiters only looked at the
available list, which an idle connection has left."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from proxy.backend_h2 import H2Pooling
from proxy.config.model import ReuseMode
from proxy.pool import ListKind

pytestmark = pytest.mark.pure_only  # duck-typed fakes of the server, the connection and the acquisition


class FakeRow:
    def __init__(self) -> None:
        self.adds: list[int] = []

    def add(self, off: int) -> None:
        self.adds.append(off)


class FakeServer:
    def __init__(self) -> None:
        self.row = FakeRow()
        self.idle: list[Any] = []
        self.asked: list[tuple[ListKind, ...]] = []

    def take_idle(self, key: object, order: tuple[ListKind, ...]) -> Any:
        self.asked.append(order)
        return self.idle.pop() if self.idle else None


class FakeH2:
    """What ``_use``/``_offer`` read of an HTTP/2 connection."""

    def __init__(self) -> None:
        self.private = False
        self.available = False
        self.free_streams = 99
        self.session = None
        self.streams = 0

    def open_stream(self) -> str:
        self.streams += 1
        return f"stream {self.streams}"


@dataclass
class FakeAcq:
    server: Any
    key: Any
    session: Any = None
    reused: bool = False
    t_connected: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Pooling(H2Pooling):
    def __init__(self, mode: ReuseMode) -> None:
        self.mode = mode
        self.avail = {}
        self.opening = {}


def test_a_waiter_takes_the_connection_that_went_idle_meanwhile() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        pooling, srv, key = Pooling(ReuseMode.ALWAYS), FakeServer(), ("key",)
        announced: asyncio.Future[None] = loop.create_future()
        pooling.opening[(srv, key)] = announced
        acq = FakeAcq(srv, key)
        waiter = asyncio.ensure_future(pooling._join(acq))
        await asyncio.sleep(0)
        assert not waiter.done()  # it waits for the connect in flight
        # The connect ended, its first stream too: the connection sits idle (safe list), not available.
        conn = FakeH2()
        srv.idle.append(conn)
        del pooling.opening[(srv, key)]
        announced.set_result(None)
        link = await waiter
        assert link == "stream 1" and acq.reused
        assert srv.asked == [(ListKind.SAFE, ListKind.IDLE)]
        assert pooling.avail[srv] == [conn]  # offered again: the next waiters take streams on it

    asyncio.run(scenario())


def test_without_a_connect_in_flight_the_idle_lists_are_not_asked_again() -> None:
    # acquire_now already looked at them; _join then only looks at the available list.
    async def scenario() -> None:
        pooling, srv = Pooling(ReuseMode.ALWAYS), FakeServer()
        srv.idle.append(FakeH2())
        assert await pooling._join(FakeAcq(srv, ("key",))) is None
        assert srv.asked == []

    asyncio.run(scenario())


def test_other_modes_never_wait_nor_take_idle_here() -> None:
    async def scenario() -> None:
        for mode in (ReuseMode.SAFE, ReuseMode.AGGRESSIVE):
            pooling, srv, key = Pooling(mode), FakeServer(), ("key",)
            pooling.opening[(srv, key)] = asyncio.get_running_loop().create_future()
            srv.idle.append(FakeH2())
            assert await pooling._join(FakeAcq(srv, key)) is None
            assert srv.asked == []

    asyncio.run(scenario())
