"""The takeover channel: real AF_UNIX datagrams and SCM_RIGHTS between two channels of one loop."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import pytest

from proxy.h2_handover import read_fd, to_memfd
from proxy.takeover import GIVE, KILL, PURGE, SLOT, Channel, Handed, Message, notify


class FakeWorker:
    """A victim holding one connected socket; records what the channel asked of it."""

    def __init__(self) -> None:
        self.idle: list[socket.socket] = []
        self.events: list[tuple[str, int]] = []
        self.late: list[Handed] = []
        self.delay = 0.0
        self.state: bytes | None = None  # given with the connection (an HTTP/2 one's state)

    def give_idle(self, server: int, key: int, order: int) -> tuple[int, int, int, int] | None:
        if not self.idle:
            return None
        sock = self.idle.pop()
        fd = os.dup(sock.fileno())
        sock.close()  # our copy goes; the duplicate travels
        return fd, 7, 1, -1 if self.state is None else to_memfd(self.state)

    def handed_over(self, server: int, thief: int, sent: bool) -> None:
        self.events.append(("handed", thief if sent else -1))

    def slot_granted(self, server: int) -> None:
        self.events.append(("slot", server))

    def kill_idle(self, server: int) -> None:
        self.events.append(("kill", server))

    def purge(self, server: int, to_close: int, idle_total: int) -> None:
        self.events.append(("purge", to_close))

    def adopt_late(self, handed: Handed) -> None:
        self.late.append(handed)


def test_message_roundtrip() -> None:
    msg = Message(GIVE, seq=5, server=3, key=2**62 + 1, order=2, reqs=9, idle=4, n=1)
    assert Message.decode(msg.encode()) == msg


def test_steal_passes_a_working_socket() -> None:
    """The thief gets a descriptor of the same TCP connection: bytes still flow both ways."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        base = f"/test-{uuid.uuid4().hex[:8]}"
        victim, thief = FakeWorker(), FakeWorker()
        a = Channel(loop, base, 0, victim)
        b = Channel(loop, base, 1, thief)
        left, right = socket.socketpair()
        victim.idle.append(left)
        try:
            handed = await b.ask(0, server=3, key=11, order=0, deadline=1.0)
            assert handed is not None and handed.reqs == 7 and handed.kind == 1
            stolen = socket.socket(fileno=handed.fd)
            stolen.sendall(b"ping")
            assert right.recv(4) == b"ping"
            right.sendall(b"pong")
            assert stolen.recv(4) == b"pong"
            stolen.close()
            # Nothing left: the victim answers NONE at once, the thief does not wait out the deadline.
            t0 = loop.time()
            assert await b.ask(0, server=3, key=11, order=0, deadline=2.0) is None
            assert loop.time() - t0 < 1.0
            assert (a.given, b.asked, b.failed) == (1, 2, 1)
            assert victim.events == [("handed", 1)]
        finally:
            a.close()
            b.close()
            right.close()

    asyncio.run(main())


def test_an_http2_state_travels_with_its_socket() -> None:
    """A GIVE carries two descriptors when the victim gives an HTTP/2 connection: the socket and
    the memory file of its state; the sender's copies are closed once sent."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        base = f"/test-{uuid.uuid4().hex[:8]}"
        victim, thief = FakeWorker(), FakeWorker()
        victim.state = b"PPH2-state-bytes" * 100
        a = Channel(loop, base, 0, victim)
        b = Channel(loop, base, 1, thief)
        left, right = socket.socketpair()
        victim.idle.append(left)
        before = len(os.listdir("/proc/self/fd"))
        try:
            handed = await b.ask(0, server=3, key=11, order=0, deadline=1.0)
            assert handed is not None and handed.state_fd >= 0
            assert read_fd(handed.state_fd) == victim.state
            os.close(handed.state_fd)
            stolen = socket.socket(fileno=handed.fd)
            stolen.sendall(b"ping")
            assert right.recv(4) == b"ping"
            stolen.close()
            assert len(os.listdir("/proc/self/fd")) == before - 1  # the victim's socket: gone
        finally:
            a.close()
            b.close()
            right.close()

    asyncio.run(main())


def test_dead_victim_costs_no_more_than_the_deadline() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        base = f"/test-{uuid.uuid4().hex[:8]}"
        b = Channel(loop, base, 1, FakeWorker())
        try:
            assert await b.ask(0, server=0, key=1, order=0, deadline=0.05) is None  # nobody at slot 0
        finally:
            b.close()

    asyncio.run(main())


def test_master_notifications_reach_the_worker() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        base = f"/test-{uuid.uuid4().hex[:8]}"
        worker = FakeWorker()
        ch = Channel(loop, base, 2, worker)
        try:
            assert notify(base, 2, Message(SLOT, server=4))
            assert notify(base, 2, Message(KILL, server=5))
            assert notify(base, 2, Message(PURGE, server=6, n=3, idle=8))
            for _ in range(100):
                if len(worker.events) == 3:
                    break
                await asyncio.sleep(0.01)
            assert worker.events == [("slot", 4), ("kill", 5), ("purge", 3)]
            assert not notify(base, 3, Message(SLOT))  # no worker in slot 3
        finally:
            ch.close()

    asyncio.run(main())


@pytest.mark.parametrize("n", [200])
def test_handover_round_trip_cost(n: int) -> None:
    """Regression guard for the channel itself: n steals in a row all succeed (no timing asserted)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        base = f"/test-{uuid.uuid4().hex[:8]}"
        victim = FakeWorker()
        a = Channel(loop, base, 0, victim)
        b = Channel(loop, base, 1, FakeWorker())
        peers = []
        try:
            for _ in range(n):
                left, right = socket.socketpair()
                victim.idle.append(left)
                peers.append(right)
                handed = await b.ask(0, server=0, key=1, order=0, deadline=1.0)
                assert handed is not None
                os.close(handed.fd)
            assert a.given == n
        finally:
            a.close()
            b.close()
            for p in peers:
                p.close()

    asyncio.run(main())
