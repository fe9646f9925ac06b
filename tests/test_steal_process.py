"""Stealing by ``pidfd_getfd`` between real processes, killed with SIGKILL in every slot state.

An owner process (the real ``ServerRuntime``/``ServerConn`` on a uvloop loop) holds idle connections
to a listener in this process and publishes them in its slots; a thief process (the real ``Thief``
and ``ServerRuntime.move``) takes one step by step and stops in a given state; then the owner, the
thief or both are killed with SIGKILL, this process plays the master (``reconcile_worker``), and
the survivors are told to go on. Checked every time, against the listener's own view of which
connections are open (the server side):

- counters: every gauge of the row equals the sum of the live cells, less what TAKEN slots still
  count (``row == cells - taken pending``), and once the owner settled, exactly; ``cur_conns`` is
  the number of connections the server sees open;
- descriptors: the owner's and the thief's descriptor tables hold no copy of a connection they no
  longer own (a copy kept would keep the server's side open: counted by the listener);
- memory: the owner's bookkeeping (published, lent, pool) is empty of what it gave away;
- slots: EMPTY or IDLE, never left CLAIMED or TAKEN.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from proxy import pidfd, slots as sl
from proxy.config.model import Cap, Config, Proxy, Server
from proxy.pool import ListKind, server_conn_key
from proxy.server import Acct, ServerRuntime, SlotMove
from proxy.shm import GAUGES, ShmTable, WorkerState
from proxy.slots import SlotState
from proxy.steal import Claim, Thief

pytestmark = pytest.mark.skipif(pidfd.probe(os.getpid(), 0) is not None, reason="pidfd_getfd refused here")

_gen = itertools.count(7000)
OWNER, THIEF = 0, 1
NCONNS = 3


class Listener:
    """The server side: accepts, and says which accepted connections are still open (no EOF)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []

    def accept(self, n: int) -> None:
        for _ in range(n):
            conn, _ = self.sock.accept()
            conn.setblocking(False)
            self.conns.append(conn)

    def open_count(self) -> int:
        alive = 0
        for c in self.conns:
            if c.fileno() < 0:
                continue
            try:
                data = c.recv(1)
            except BlockingIOError:
                alive += 1
                continue
            except OSError:
                data = b""
            if data:
                raise AssertionError(f"the server got bytes it should not: {data!r}")
            c.close()
        return alive

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


class Child:
    """A forked process driven line by line over a socketpair: ``ask(cmd)`` returns its JSON answer."""

    def __init__(self, body: Callable[[socket.socket], None]) -> None:
        mine, theirs = socket.socketpair()
        self.pid = os.fork()
        if self.pid == 0:  # the child
            code = 0
            try:
                mine.close()
                body(theirs)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.sock = mine
        self.file = mine.makefile("rwb", buffering=0)
        self.alive = True

    def ask(self, cmd: str, timeout: float = 10.0) -> Any:
        self.file.write(cmd.encode() + b"\n")
        ready, _, _ = select.select([self.sock], [], [], timeout)
        assert ready, f"child {self.pid} did not answer {cmd!r}"
        line = self.file.readline()
        assert line, f"child {self.pid} died on {cmd!r}"
        return json.loads(line)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.alive = False
        self.sock.close()

    def stop(self) -> None:
        if self.alive:
            self.kill()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def server_cfg(port: int) -> tuple[Config, Server]:
    srv = Server(name="s1", host="127.0.0.1", port=port)
    be = Proxy(name="be", cap=Cap.BACKEND, servers=[srv])
    return Config(backends={"be": be}), srv


def runtime(table: ShmTable, cfg: Server, slot: int) -> ServerRuntime:
    return ServerRuntime("be", 0, cfg, [table.cell(0, w) for w in range(table.nworkers)], slot)


def owner_main(table: ShmTable, cfg: Server, port: int, ctl: socket.socket) -> None:
    """The owner: NCONNS connections parked and published, then commands."""
    import uvloop

    from proxy.h1 import Limits
    from proxy.server_conn import ServerConn, adopt_socket

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    table.register_worker(OWNER, os.getpid(), 1)
    table.set_worker_state(OWNER, WorkerState.RUNNING)
    srv = runtime(table, cfg, OWNER)
    srv.lend_from(table.slots(0, OWNER), sl.make_owner(OWNER, 1))
    key = server_conn_key("be", cfg)

    async def park_one() -> None:
        conn = ServerConn(srv, key, "llhttp", Limits())
        assert srv.move(conn, Acct.COUNTED, 0) and srv.move(conn, Acct.USED)
        conn.on_lost = srv.lost
        sock = socket.create_connection(("127.0.0.1", port))
        await adopt_socket(loop, conn, sock)
        conn.make_idle()
        assert srv.move(conn, Acct.IDLE, -1)
        srv.park(conn, ListKind.IDLE)

    for _ in range(NCONNS):
        loop.run_until_complete(park_one())
    base = fd_count() - NCONNS
    f = ctl.makefile("rwb", buffering=0)
    while True:
        cmd = f.readline().decode().strip()
        if not cmd:
            return
        if cmd == "settle":
            srv.sweep()
        elif cmd == "reuse":  # take every connection back for a request, then park them again
            taken = []
            while (c := srv.take_idle(key, (ListKind.IDLE, ListKind.SAFE))) is not None:
                taken.append(c)
            for c in taken:
                c.make_idle()
                assert srv.move(c, Acct.SAFE, -1)
                srv.park(c, ListKind.SAFE)
        loop.run_until_complete(asyncio.sleep(0))
        f.write(json.dumps({
            "pool": len(srv.pool), "lent": len(srv.lent), "published": len(srv.published),
            "conn_fds": fd_count() - base,
        }).encode() + b"\n")  # fmt: skip


STAGES = ("claimed", "fetched", "taken", "half-taken")


def thief_main(table: ShmTable, cfg: Server, stage: str, ctl: socket.socket) -> None:
    """The thief: claims the owner's newest slot and goes as far as ``stage``, then waits; on
    "go" finishes what it started (take and count, or find its claim repaired), on "close" closes
    the connection it holds."""
    table.register_worker(THIEF, os.getpid(), 1)
    table.set_worker_state(THIEF, WorkerState.RUNNING)
    srv = runtime(table, cfg, THIEF)
    thief = Thief(table, THIEF)
    arr = table.slots(0, OWNER)
    base = fd_count()
    k, tag = max(arr.offers(), key=lambda o: o[0])[:2]
    claim = thief.claim(arr, k, tag)
    assert claim is not None

    class Books:
        acct = Acct.NONE

    books = Books()

    def take(c: Claim) -> bool:
        return srv.move(books, Acct.USED, slot=SlotMove(c.slots, c.index, c.tag, c.record.safe))

    if stage != "claimed":
        assert thief.fetch(claim)
    if stage == "taken":
        assert take(claim)
    elif stage == "half-taken":  # killed inside take_slot's bracket: seq odd, CAS done, one add done
        a, cell = table.atomics, srv.cell._base
        a.fetch_add(cell, 1)
        assert a.compare_exchange(arr.tag_off(k), claim.tag, sl.taken(claim.tag))
        a.fetch_add(srv.row._base + 3 * 8, -1)  # R_IDLE
    f = ctl.makefile("rwb", buffering=0)
    while True:
        cmd = f.readline().decode().strip()
        if not cmd:
            return
        if cmd == "go" and books.acct is Acct.NONE:
            if claim.sock is None and stage == "claimed" and arr.tag(k) == claim.tag:
                thief.fetch(claim)
            if claim.sock is not None and not take(claim):
                claim.sock.close()
                claim.sock = None
        elif cmd == "close" and claim.sock is not None:
            claim.sock.close()
            claim.sock = None
            if books.acct is Acct.USED:
                srv.move(books, Acct.NONE)
        fds = fd_count() - base - len(thief.pidfds)  # its pidfd of the owner is no connection
        f.write(json.dumps({"acct": books.acct.name, "conn_fds": fds}).encode() + b"\n")


# -- the cases -----------------------------------------------------------------------------------------
@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    listener = Listener()
    config, cfg = server_cfg(listener.port)
    table = ShmTable.create(config, 2, generation=next(_gen), nslots=8)
    children: list[Child] = []
    yield {"listener": listener, "table": table, "cfg": cfg, "children": children}
    for c in children:
        c.stop()
    listener.close()
    table.close()
    table.unlink()


def gauges(table: ShmTable) -> tuple[dict[str, int], dict[str, int]]:
    """(row, sum of the cells less taken pending) of server 0."""
    a = table.atomics
    row = {g: table.row(0).load(roff) for g, roff, _ in GAUGES}
    pending = table._taken_pending(0)
    cells = {
        g: sum(a.load(table.cell(0, w)._base + c) for w in range(2) for c in coffs) - p
        for (g, _, coffs), p in zip(GAUGES, pending, strict=True)
    }
    return row, cells


def slot_states(table: ShmTable) -> list[SlotState]:
    return [sl.state_of(tag) for tag in table.slots(0, OWNER).tags()]


def reap(table: ShmTable, dead: list[int]) -> None:
    """What the master does: mark every reaped slot DEAD, then reconcile each."""
    for w in dead:
        table.set_worker_state(w, WorkerState.DEAD)
    for w in dead:
        report = table.reconcile_worker(w)
        assert report.exact


def eventually(pred: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, what
        time.sleep(0.01)
    return value


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("killed", ["owner", "thief", "both", "none"])
def test_kill_in_every_slot_state(world: dict[str, Any], stage: str, killed: str) -> None:
    if stage == "half-taken" and killed in ("owner", "none"):
        pytest.skip("a live thief always closes its bracket: half-taken only exists for a dead thief")
    listener: Listener = world["listener"]
    table: ShmTable = world["table"]
    cfg: Server = world["cfg"]
    owner = Child(lambda s: owner_main(table, cfg, listener.port, s))
    world["children"].append(owner)
    listener.accept(NCONNS)
    assert owner.ask("state") == {"pool": NCONNS, "lent": 0, "published": NCONNS, "conn_fds": NCONNS}
    thief = Child(lambda s: thief_main(table, cfg, stage, s))
    world["children"].append(thief)
    held = thief.ask("state")
    assert held["conn_fds"] == (0 if stage == "claimed" else 1)
    want_state = {"claimed": SlotState.CLAIMED, "fetched": SlotState.CLAIMED}.get(stage, SlotState.TAKEN)
    assert slot_states(table).count(want_state) == 1
    row, cells = gauges(table)
    if stage != "half-taken":
        assert row == cells, (row, cells)

    if killed in ("owner", "both"):
        owner.kill()
    if killed in ("thief", "both"):
        thief.kill()
    reap(table, [w for w, who in ((OWNER, "owner"), (THIEF, "thief")) if killed in (who, "both")])

    if thief.alive:
        got = thief.ask("go")  # finish the steal, or find the claim repaired (owner dead)
    if owner.alive:
        mem = owner.ask("settle")
        assert mem["lent"] == 0 and mem["published"] == mem["pool"] == mem["conn_fds"]
    # The thief holds the connection exactly when it took it and lives; the owner all the others.
    thief_has = thief.alive and got["acct"] == "USED"
    if thief.alive:
        assert got["conn_fds"] == int(thief_has)
    owner_has = mem["pool"] if owner.alive else 0
    gone = thief_has or stage in ("taken", "half-taken")  # taken: the owner lost it, whoever died
    assert owner_has == (NCONNS - 1 if gone else NCONNS) * owner.alive
    open_now = eventually(
        lambda: (n := listener.open_count()) == owner_has + thief_has and n + 1,
        f"server side open == {owner_has} + {int(thief_has)}",
    ) - 1
    row, cells = gauges(table)
    assert row == cells, (row, cells)
    assert row["conns"] == open_now
    assert row["idle"] == owner_has and row["used"] == int(thief_has)
    assert table.row(0).served == 0
    assert all(s in (SlotState.EMPTY, SlotState.IDLE) for s in slot_states(table)), slot_states(table)
    assert slot_states(table).count(SlotState.IDLE) == owner_has

    if thief.alive and thief_has:
        assert thief.ask("close")["acct"] == "NONE"
        eventually(lambda: listener.open_count() == owner_has, "the thief's close reaches the server")
    if owner.alive:  # the owner's connections still work for itself
        mem = owner.ask("reuse")
        assert mem["pool"] == owner_has == mem["published"]
    row, cells = gauges(table)
    assert row == cells and row["conns"] == listener.open_count()
