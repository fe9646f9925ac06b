"""Server choice with health states and backups (``Backend.pick_server``), and a failed connect
redispatched to another server (``Backend._retry``), driven with the fakes of ``tests/fakes.py``: a
real shared table, real ``ServerRuntime``s, a ``Backend`` whose connects open nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from fakes import World, request, worlds

from proxy.backend import Acquisition
from proxy.server_conn import ServerConn
from proxy.shm import R_OPER_STATE, OperState

ZERO = {"served": 0, "conns": 0, "used": 0, "idle": 0, "safe": 0, "queued": 0}


@pytest.fixture
def make_world() -> Iterator[Callable[..., World]]:
    yield from worlds()


def down(w: World, name: str) -> None:
    srv = next(s for s in w.servers if s.name == name)
    srv.row.store(R_OPER_STATE, OperState.STOPPED)


def picks(w: World, n: int = 6) -> list[str | None]:
    out = []
    for _ in range(n):
        srv = w.backend.pick_server("10.0.0.1")
        out.append(None if srv is None else srv.name)
    return out


def test_down_servers_are_skipped_and_backups_used_only_when_no_active_is_up(
    make_world: Callable[..., World],
) -> None:
    w = make_world(nservers=4)
    w.be_cfg.servers[2].backup = w.be_cfg.servers[3].backup = True  # s3, s4: backups
    w.backend.has_backup = True
    assert picks(w, 4) == ["s1", "s2", "s1", "s2"]
    down(w, "s1")
    assert picks(w, 2) == ["s2", "s2"]
    down(w, "s2")
    assert picks(w, 3) == ["s3", "s3", "s3"]  # the first backup only
    w.be_cfg.allbackups = True
    assert sorted(picks(w, 4)) == ["s3", "s3", "s4", "s4"]
    down(w, "s3")
    down(w, "s4")
    assert picks(w, 1) == [None]  # the stream answers 503 SC
    assert w.backend.pick_server("10.0.0.1", exclude=None) is None


def test_a_failed_connect_is_redispatched_to_another_server(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """s1 refuses: with ``option redispatch`` the retry goes to s2 at once (roundrobin, two servers
    up), the slot taken on s1 is given back, and the acquisition says ``+1``."""
    w = make_world(nservers=2, retries=2)
    w.be_cfg.redispatch = -1
    fake = w.fake
    real_connect = type(fake)._connect
    tried: list[str] = []

    async def connect(self: object, acq: Acquisition) -> ServerConn:
        tried.append(acq.server.name)
        if acq.server.name == "s1":
            raise ConnectionRefusedError()
        return await real_connect(fake, acq)

    monkeypatch.setattr(fake, "_connect", connect.__get__(fake))
    stream, _ = w.new_stream(request())

    async def main() -> None:
        stream.start()
        for _ in range(20):
            await asyncio.sleep(0)

    w.run(main())
    assert tried == ["s1", "s2"]
    acq = stream.acq
    assert acq is not None and acq.server.name == "s2" and (acq.retries, acq.redispatched) == (1, True)
    assert w.gauges(w.servers[0]) == ZERO  # s1's slot went back
    assert w.servers[0].row.retries == 1 and w.servers[1].row.redispatches == 1
    assert stream.conn is not None and stream.conn.server is w.servers[1]


def test_without_redispatch_the_retries_stay_on_the_server(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("proxy.retry.TURNAROUND_MAX", 0.001)
    w = make_world(nservers=2, retries=2)
    w.fake.fail = ConnectionRefusedError()
    stream, side = w.new_stream(request())

    async def main() -> None:
        stream.start()
        for _ in range(100):
            if side.calls:
                break
            await asyncio.sleep(0.005)

    w.run(main())
    assert w.fake.connects == 3 and stream.acq is not None and stream.acq.server.name == "s1"
    assert side.calls[0] == ("send_reply", 503, False) and w.env.logged == [(503, "SC")]
    assert not stream.acq.redispatched and stream.acq.retries == 2
