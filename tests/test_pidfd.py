"""proxy.pidfd (the syscall wrapper, the probe, the peek) and the owner's side of lending in one
process: ``ServerRuntime.park``/``unpark``/``settle``/``sweep`` with real sockets on a real table,
another worker's steps played by ``proxy.steal.Thief`` in the same process."""

from __future__ import annotations

import errno
import itertools
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

from proxy import pidfd, slots as sl
from proxy.config.model import Cap, Config, Proxy, Server
from proxy.h1 import Limits
from proxy.main import main
from proxy.pool import ListKind, key_hash, server_conn_key
from proxy.server import Acct, ServerRuntime, SlotMove
from proxy.server_conn import ServerConn, adopt_socket
from proxy.shm import ShmTable, WorkerState
from proxy.slots import SlotState
from proxy.steal import Thief

ALLOWED = pidfd.probe(os.getpid(), 0) is None
needs_pidfd = pytest.mark.skipif(not ALLOWED, reason="pidfd_getfd refused here")


# -- the wrapper ----------------------------------------------------------------------------------
@needs_pidfd
def test_getfd_duplicates_the_same_connection() -> None:
    a, b = socket.socketpair()
    pfd = pidfd.pidfd_open(os.getpid())
    try:
        fd = pidfd.getfd(pfd, a.fileno())
        assert fd != a.fileno()
        dup = socket.socket(fileno=fd)
        dup.sendall(b"x")
        assert b.recv(1) == b"x"
        assert not os.get_inheritable(fd)  # close-on-exec, as the kernel makes it
        dup.close()
        with pytest.raises(OSError) as err:
            pidfd.getfd(pfd, 10**6)
        assert err.value.errno == errno.EBADF
    finally:
        os.close(pfd)
        a.close()
        b.close()


def _peek_impls() -> list[Any]:
    impls: list[Any] = [pytest.param(pidfd.peek_code_ctypes, id="ctypes")]
    try:
        from proxy._peek import peek as c_peek
    except ImportError:
        if os.environ.get("POOLPROXY_NO_EXT", "") in ("", "0"):
            raise  # built by the install: its absence is a failure, not a skip
    else:
        impls.append(pytest.param(c_peek, id="c"))
    return impls


@pytest.mark.parametrize("code", _peek_impls())
def test_peek_consumes_nothing(code: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pidfd, "peek_code", code)
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        assert pidfd.peek(a.fileno()) is pidfd.Peek.READY and code(a.fileno()) == 0
        b.sendall(b"hello")
        assert pidfd.peek(a.fileno()) is pidfd.Peek.DATA
        assert pidfd.peek(a.fileno()) is pidfd.Peek.DATA and code(a.fileno()) == 2
        assert a.recv(5) == b"hello"
        b.close()
        assert pidfd.peek(a.fileno()) is pidfd.Peek.EOF and code(a.fileno()) == 1
    finally:
        a.close()
    assert pidfd.peek(10**6) is pidfd.Peek.ERROR and code(10**6) == 3  # not a descriptor


def test_the_hot_path_peeks_in_c_where_built() -> None:
    if os.environ.get("POOLPROXY_NO_EXT", "") not in ("", "0") or os.environ.get("POOLPROXY_PEEK"):
        pytest.skip("the C peek is not built, or not wanted")
    from proxy import _peek

    assert pidfd.peek_code is _peek.peek


def test_probe_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pidfd.ENV_VAR, "channel")
    assert pidfd.probe(os.getpid(), 0) == "POOLPROXY_STEAL=channel"
    monkeypatch.delenv(pidfd.ENV_VAR)
    assert pidfd.probe(2**22 + 12345, 0) is not None  # no such process
    if ALLOWED:
        assert pidfd.probe_from_child() is None


def test_vv_tells_how_workers_steal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pidfd.ENV_VAR, "channel")
    assert main(["-vv"]) == 0
    out = capsys.readouterr().out
    assert "Idle connection stealing: SCM_RIGHTS channel (POOLPROXY_STEAL=channel)" in out
    assert "atomics backend" in out


# -- the owner's side ---------------------------------------------------------------------------------
_gen = itertools.count(9000)


class Lab:
    """Worker 0 owns connections to a listener; worker 1's ``Thief`` and runtime take them."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        self.cfg = Server(name="s1", host="127.0.0.1", port=port)
        config = Config(backends={"be": Proxy(name="be", cap=Cap.BACKEND, servers=[self.cfg])})
        self.table = ShmTable.create(config, 2, generation=next(_gen), nslots=4)
        for w in range(2):
            self.table.register_worker(w, os.getpid(), 1)
            self.table.set_worker_state(w, WorkerState.RUNNING)
        cells = [self.table.cell(0, w) for w in range(2)]
        self.owner = ServerRuntime("be", 0, self.cfg, cells, 0)
        self.owner.lend_from(self.table.slots(0, 0), sl.make_owner(0, 1))
        self.other = ServerRuntime("be", 0, self.cfg, cells, 1)
        self.key = server_conn_key("be", self.cfg)
        self.server_side: list[socket.socket] = []

    def park(self, kind: ListKind = ListKind.IDLE) -> ServerConn:
        async def go() -> ServerConn:
            conn = ServerConn(self.owner, self.key, "llhttp", Limits())
            assert self.owner.move(conn, Acct.COUNTED, 0) and self.owner.move(conn, Acct.USED)
            conn.on_lost = self.owner.lost
            await adopt_socket(self.loop, conn, socket.create_connection(self.listener.getsockname()))
            self.server_side.append(self.listener.accept()[0])
            conn.make_idle()
            assert self.owner.move(conn, self.owner.pooled_state(kind), -1)
            self.owner.park(conn, kind)
            return conn

        return self.loop.run_until_complete(go())

    def gauges(self) -> dict[str, Any]:
        s = self.table.snapshot()["servers"][0]
        return {k: s[k] for k in ("cur_conns", "idle", "safe", "used")}

    def close(self) -> None:
        for s in self.server_side:
            s.close()
        self.listener.close()
        self.loop.close()
        self.table.close()
        self.table.unlink()


@pytest.fixture
def lab() -> Iterator[Lab]:
    made = Lab()
    yield made
    made.close()


def test_park_publishes_with_reading_paused_and_take_unpublishes(lab: Lab) -> None:
    conn = lab.park()
    assert conn.slot == 0 and lab.owner.published == {0: conn}
    assert conn.transport is not None and not conn.transport.is_reading()
    [(k, tag, meta, kh, _)] = lab.table.slots(0, 0).offers()
    assert (k, tag, sl.meta_reqs(meta), kh) == (0, conn.slot_tag, 1, key_hash(lab.key))
    rec = lab.table.slots(0, 0).record(0)
    assert (rec.fd, rec.conn_id) == (conn.fd, conn.id)
    assert (rec.local_port, rec.peer_port) == sl.split_ports(conn.ports)
    assert conn.ports == sl.make_ports(*[lab.server_side[0].getpeername()[1], lab.cfg.port])
    assert lab.owner.take_idle(lab.key, (ListKind.IDLE,)) is conn
    assert conn.slot == -1 and lab.owner.published == {} and conn.acct is Acct.USED
    assert lab.table.slots(0, 0).offers() == []


def test_a_claimed_connection_is_lent_then_finalized(lab: Lab) -> None:
    conn = lab.park(ListKind.SAFE)
    thief = Thief(lab.table, 1)
    claim = thief.steal(0, [0], key_hash(lab.key), (ListKind.IDLE, ListKind.SAFE))
    assert claim is not None and claim.sock is not None and claim.record.safe
    # the owner, wanting it back, finds it claimed: lent, untouched
    assert lab.owner.take_idle(lab.key, (ListKind.SAFE,)) is None
    assert lab.owner.lent == {conn: None} and conn.alive and len(lab.owner.pool) == 0
    assert not lab.owner.drop_idle(conn) and conn.alive  # never closed while claimed
    books = ServerConn(lab.other, lab.key, "llhttp", Limits())
    assert lab.other.move(books, Acct.USED, slot=SlotMove(claim.slots, claim.index, claim.tag, True))
    assert lab.gauges() == {"cur_conns": 1, "idle": 0, "safe": 0, "used": 1}  # the row: exact at once
    assert lab.owner.settle() == 1
    assert conn.acct is Acct.NONE and not conn.alive and lab.owner.lent == {} and lab.owner.published == {}
    assert lab.table.cell(0, 0).takeovers_given == 1 and lab.table.cell(0, 0).conns == 0
    # the connection lives on in the thief's duplicate: bytes still flow
    claim.sock.sendall(b"ping")
    assert lab.server_side[0].recv(4) == b"ping"
    claim.sock.close()
    thief.close()


def test_a_released_claim_goes_back_to_the_pool(lab: Lab) -> None:
    conn = lab.park()
    arr = lab.table.slots(0, 0)
    [(k, tag, *_)] = arr.offers()
    ctag = arr.claim(k, tag, 1)
    assert ctag is not None
    assert lab.owner.take_idle(lab.key, (ListKind.IDLE,)) is None and conn in lab.owner.lent
    assert arr.release(k, ctag)
    arr.ring()
    assert lab.owner.settle_if_rung() == 0
    assert conn in lab.owner.pool and lab.owner.lent == {}
    assert lab.owner.take_idle(lab.key, (ListKind.IDLE,)) is conn


def test_sweep_closes_what_the_server_closed_and_a_discard_is_finalized(lab: Lab) -> None:
    a, b = lab.park(), lab.park()
    lab.server_side[0].close()  # the server closes a's connection while it is parked
    assert lab.owner.sweep() == 1
    assert a.acct is Acct.NONE and b in lab.owner.pool
    assert lab.gauges() == {"cur_conns": 1, "idle": 1, "safe": 0, "used": 0}
    lab.server_side[1].sendall(b"junk")  # out of sync: a thief finds it and discards it
    thief = Thief(lab.table, 1)
    assert thief.steal(0, [0], key_hash(lab.key), (ListKind.IDLE,)) is None and thief.discarded == 1
    assert sl.state_of(lab.table.slots(0, 0).tag(b.slot)) is SlotState.TAKEN
    assert lab.gauges() == {"cur_conns": 0, "idle": 0, "safe": 0, "used": 0}
    assert lab.owner.settle_if_rung() == 1 and b.acct is Acct.NONE
    assert lab.table.cell(0, 0).conns == 0 and lab.table.cell(0, 0).takeovers_given == 0
    thief.close()


def test_no_slot_free_means_not_lent(lab: Lab) -> None:
    conns = [lab.park() for _ in range(5)]  # 4 slots
    assert [c.slot for c in conns] == [0, 1, 2, 3, -1]
    assert lab.owner.take_idle(lab.key, (ListKind.IDLE,)) is conns[-1]  # newest first, unpublished
    lab.owner.take_idle(lab.key, (ListKind.IDLE,))
    lab.park()
    assert sorted(lab.owner.published) == [0, 1, 2, 3]
