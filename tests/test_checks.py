"""proxy.checks: the probes against real sockets on 127.0.0.1 (TCP connect, HTTP answers, refusals,
timeouts), and ``HealthChecks`` driving a record and a row of a real shared table."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Iterator

import pytest
from harness import free_port

from proxy.checks import HealthChecks, probe
from proxy.config.model import Cap, Config, HttpCheck, Proxy, Server
from proxy.health import K_LAST_CHECK, CheckResult, CheckStatus
from proxy.server import ServerRuntime
from proxy.shm import OperState, ShmTable


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


async def serve(answer: bytes | None) -> tuple[asyncio.AbstractServer, int]:
    """A server that reads a request head and writes ``answer`` then closes (None: never answers)."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        if answer is None:
            await r.read()  # until the check gives up and closes
        else:
            w.write(answer)
            await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def run_probe(loop: asyncio.AbstractEventLoop, answer: bytes | None, chk: HttpCheck | None,
              timeout: float = 2.0) -> CheckResult:  # fmt: skip
    async def main() -> CheckResult:
        server, port = await serve(answer)
        try:
            return await probe(loop, "127.0.0.1", port, chk, timeout, None)
        finally:
            server.close()

    return loop.run_until_complete(main())


def test_probes(loop: asyncio.AbstractEventLoop) -> None:
    assert run_probe(loop, b"", None).status is CheckStatus.L4OK
    ok = run_probe(loop, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", HttpCheck())
    assert (ok.status, ok.code) == (CheckStatus.L7OK, 200)
    bad = run_probe(loop, b"HTTP/1.1 503 Service Unavailable\r\n\r\n", HttpCheck())
    assert (bad.status, bad.code, bad.info) == (CheckStatus.L7STS, 503, "Service Unavailable")
    assert run_probe(loop, b"SSH-2.0\r\n\r\n", HttpCheck()).status is CheckStatus.L7RSP
    assert run_probe(loop, None, HttpCheck(), timeout=0.2).status is CheckStatus.L7TOUT
    refused = loop.run_until_complete(probe(loop, "127.0.0.1", free_port(), None, 1.0, None))
    assert (refused.status, refused.info_errno, refused.info) == (
        CheckStatus.L4CON, errno.ECONNREFUSED, "Connection refused"
    )  # fmt: skip


def test_health_checks_move_the_shared_state_and_close_idle_connections(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """One worker's ``HealthChecks`` over a real table: a refused server goes DOWN (row oper_state),
    a listening one stays UP; the record is claimed by this worker (the first owner was slot 0)."""
    listener = socket.create_server(("127.0.0.1", 0))
    live = listener.getsockname()[1]
    servers = [Server("up", "127.0.0.1", live, check=True, inter=0.05, rise=1, fall=1),
               Server("dead", "127.0.0.1", free_port(), check=True, inter=0.05, rise=1, fall=1)]  # fmt: skip
    be = Proxy("be", Cap.BACKEND, servers=servers)
    table = ShmTable.create(Config(backends={"be": be}), 1, generation=7777, nslots=0)
    try:
        rts = [ServerRuntime("be", i, s, [table.cell(i, 0)], 0) for i, s in enumerate(servers)]
        lines: list[str] = []
        checks = HealthChecks(loop, table, 0, [(be, rts)], 0, lambda px, line: lines.append(line))

        async def main() -> None:
            checks.start()
            for _ in range(200):
                if not checks.was_usable[1] and table.check(0).load(K_LAST_CHECK):
                    break
                await asyncio.sleep(0.01)
            checks.stop()
            await asyncio.sleep(0.01)  # the cancelled checks finish

        loop.run_until_complete(main())
        assert table.row(0).oper_state == OperState.RUNNING and rts[0].usable
        assert table.row(1).oper_state == OperState.STOPPED and not rts[1].usable
        assert table.check(1).owner == 0 and table.check(1).snapshot()["chk_down"] == 1
        assert checks.was_usable == {0: True, 1: False}  # the tick saw it leave (its pool was closed)
        assert [line.split(",")[0] for line in lines] == ["Server be/dead is DOWN"]  # to the worker's log
    finally:
        listener.close()
        table.close()
        table.unlink()
