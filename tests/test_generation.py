"""Generations and listeners across a reload (proxy.generation, proxy.listener.reconcile): kept sockets
are the same objects (never re-bound), new addresses are bound, dropped ones returned for closing, a
failed bind leaves nothing behind; the watchdog's staleness rule over a real shared table."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from proxy.config import load
from proxy.config.model import Config
from proxy.generation import GenerationError, build
from proxy.listener import BindError, address_key, bind_all, reconcile
from proxy.shm import WorkerState


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp_path: Path, *ports: int, extra: str = "") -> Config:
    binds = "".join(f"    bind 127.0.0.1:{p}\n" for p in ports)
    path = tmp_path / f"c{'-'.join(map(str, ports))}.cfg"
    path.write_text(
        f"global\n    nbthread 2\n{extra}\ndefaults\n    mode http\n"
        f"frontend fe\n{binds}    default_backend be\nbackend be\n    server s1 127.0.0.1:9\n"
    )
    return load([str(path)])


def test_address_key_normalises_wildcards() -> None:
    assert address_key("*", 80) == address_key("", 80) == address_key("0.0.0.0", 80) == ("0.0.0.0", 80)


def test_reconcile_keeps_adds_and_drops(tmp_path: Path) -> None:
    a, b, c = free_port(), free_port(), free_port()
    first = bind_all(config(tmp_path, a, b))
    try:
        second, gone = reconcile(first, config(tmp_path, b, c))
        assert [lst.port for lst in second] == [b, c]
        assert second[0].sock is first[1].sock  # kept: the very same socket
        assert [lst.port for lst in gone] == [a]
        assert first[0].sock.fileno() >= 0  # the caller closes what is gone, when it is unused
        # SO_REUSEPORT by default (for -sf without -x), off with noreuseport
        assert second[1].sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        for lst in second[1:]:
            lst.sock.close()
    finally:
        for lst in first:
            lst.sock.close()
    plain = bind_all(config(tmp_path, free_port(), extra="    noreuseport\n"))
    assert plain[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    plain[0].sock.close()


def test_a_failed_bind_closes_what_the_call_bound(tmp_path: Path) -> None:
    a = free_port()
    with socket.socket() as taken:  # no SO_REUSEPORT: nobody can bind next to it
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(BindError, match=f"cannot bind socket \\[127.0.0.1:{busy}\\]"):
            reconcile([], config(tmp_path, a, busy))
        assert set(os.listdir("/proc/self/fd")) <= before  # the socket bound for port a was closed


def test_inherited_sockets_are_used_instead_of_binding(tmp_path: Path) -> None:
    a = free_port()
    old = socket.create_server(("127.0.0.1", a))  # as -x receives it
    try:
        got = bind_all(config(tmp_path, a, extra="    noreuseport\n"), inherited=[old])
        assert got[0].sock is old
    finally:
        old.close()


def test_build_failure_leaves_no_socket_and_no_segment(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(GenerationError, match="cannot bind"):
            build(config(tmp_path, free_port(), taken.getsockname()[1]), 7, [])
    assert not any(name.startswith(f"poolproxy.{os.getpid()}.7") for name in os.listdir("/dev/shm"))


def test_stale_lists_ready_workers_with_an_old_heartbeat(tmp_path: Path) -> None:
    gen, _ = build(config(tmp_path, free_port()), 9, [], nworkers=2, reloads=3)
    try:
        assert gen.table.name == f"/poolproxy.{os.getpid()}.9" and gen.reloads_at_start == 3
        for w in gen.workers:
            gen.table.register_worker(w.slot, 1000 + w.slot, 1)
            gen.table.set_worker_state(w.slot, WorkerState.RUNNING)
            w.pid, w.ready = 1000 + w.slot, True
        now = time.monotonic_ns()
        assert gen.stale(now, 10.0) == []
        assert gen.stale(now + 11 * 10**9, 0) == []  # 0: watchdog off
        stale = gen.stale(now + 11 * 10**9, 10.0)
        assert [w.slot for w, _ in stale] == [0, 1] and all(age > 10 for _, age in stale)
        gen.table.heartbeat(1)
        gen.workers[0].ready = False  # not yet READY (starting): never judged
        assert [w.slot for w, _ in gen.stale(time.monotonic_ns() + 5 * 10**9, 4.0)] == [1]
    finally:
        for lst in gen.listeners:
            lst.sock.close()
        gen.close()
    assert not os.path.exists(f"/dev/shm/poolproxy.{os.getpid()}.9")
