"""End-to-end: the master and its workers as processes (nbthread, crash respawn, signals, ``-c``).

Real processes on 127.0.0.1, real signals. ``Proxy.worker_pids()`` lists the live children of the
master. Waits poll with deadlines (``wait_for``); the one deadline that is itself the requirement is the
respawn of a killed worker within 1 s.

The last test starts the shipped ``conf/poolproxy.cfg``, which binds the fixed ports 8080-8082: if they
are busy the test fails and says so (it is not skipped).
"""

from __future__ import annotations

import errno
import http.client
import os
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import (
    REPO_ROOT,
    MakeProxy,
    Origin,
    Proxy,
    free_port,
    group_members,
    http_get,
    proxy_config,
    wait_for,
)

# Runs on both HTTP/1 engines (conftest's h1_engine) although supervision does not depend on the engine:
# twice costs ~6 s, and soft stop and the shipped config serve requests through it.
pytestmark = pytest.mark.e2e


SHIPPED_CONFIG = REPO_ROOT / "conf" / "poolproxy.cfg"
SHIPPED_PORTS = (8080, 8081, 8082)


def config(port: int, origin_port: int, *, nbthread: int) -> str:
    return proxy_config(port, origin_port, nbthread=nbthread)


def start(make_proxy: MakeProxy, origin: Origin, nbthread: int) -> tuple[int, Proxy]:
    port = free_port()
    proxy = make_proxy(config(port, origin.port, nbthread=nbthread), ports=[port], workers=nbthread)
    return port, proxy


def all_ok(port: int, n: int) -> None:
    statuses = [http_get(port, "/").status for _ in range(n)]
    assert statuses == [200] * n


def refused(port: int) -> bool:
    """True once connecting to the port is refused (nothing listens on it any more)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError as exc:
        return exc.errno == errno.ECONNREFUSED


def poolproxy(*args: str) -> subprocess.CompletedProcess[str]:
    """``poolproxy ARGS`` (``python -m proxy`` is the same entry point), from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# ---- workers -------------------------------------------------------------------------------------------


def test_nbthread_4_gives_exactly_4_workers(make_proxy: MakeProxy, origin: Origin) -> None:
    port, proxy = start(make_proxy, origin, 4)
    workers = proxy.worker_pids()
    assert len(workers) == 4, workers
    for pid in workers:  # children of the master, in its process group
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        assert int(fields[1]) == proxy.pid
    all_ok(port, 20)
    assert proxy.worker_pids() == workers


def test_killed_worker_is_respawned_within_a_second(make_proxy: MakeProxy, origin: Origin) -> None:
    port, proxy = start(make_proxy, origin, 4)
    all_ok(port, 10)
    before = proxy.worker_pids()
    victim = before[0]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> list[int]:
        now = proxy.worker_pids()
        return now if len(now) == 4 and victim not in now else []

    after = wait_for(replaced, timeout=1.0, message=f"a new worker replacing {victim}")
    assert set(before) - {victim} < set(after)
    all_ok(port, 100)
    assert proxy.worker_pids() == after


# ---- signals -------------------------------------------------------------------------------------------


def test_sigterm_stops_master_and_workers(make_proxy: MakeProxy, origin: Origin) -> None:
    port, proxy = start(make_proxy, origin, 2)
    all_ok(port, 5)
    assert proxy.proc is not None
    proxy.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=10) == 0
    # The master exits only once its workers are gone: nothing of the group is left.
    wait_for(lambda: not group_members(proxy.pid), timeout=2.0, message="master and workers gone")
    assert refused(port)


def test_sigusr1_soft_stop_finishes_in_flight_requests(make_proxy: MakeProxy, origin: Origin) -> None:
    port, proxy = start(make_proxy, origin, 2)
    all_ok(port, 5)
    assert proxy.proc is not None

    def slow_request() -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("GET", "/delay/1000")
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(slow_request)
        wait_for(lambda: origin.stats()["active"] == 1, message="the slow request reached the origin")
        proxy.send_signal(signal.SIGUSR1)
        wait_for(lambda: refused(port), timeout=5.0, message="new connections refused after SIGUSR1")
        assert in_flight.result(timeout=15) == (200, b"")
    assert proxy.proc.wait(timeout=10) == 0
    wait_for(lambda: not group_members(proxy.pid), timeout=2.0, message="master and workers gone")
    assert origin.stats()["requests"] == 6


# ---- configuration check (-c) ------------------------------------------------------------------------------


def test_check_mode_accepts_the_shipped_config() -> None:
    done = poolproxy("-c", "-f", str(SHIPPED_CONFIG))
    assert done.returncode == 0, done.stderr
    assert "Configuration file is valid" in done.stdout


def test_check_mode_rejects_a_bad_config_naming_file_line_and_keyword(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text(
        "global\n"
        "    nbthread 1\n"
        "\n"
        "defaults\n"
        "    mode http\n"
        "    tiemout client 5s\n"  # line 6: unknown keyword
        "    timeout server 10sx\n"  # line 7: bad time unit
        "\n"
        "frontend fe\n"
        "    bind 127.0.0.1:1\n"
        "    default_backend be\n"
        "\n"
        "backend be\n"
        "    server s1 127.0.0.1:2\n"
    )
    done = poolproxy("-c", "-f", str(bad))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Configuration file is valid" not in done.stdout
    lines = done.stderr.splitlines()
    unknown = [line for line in lines if f"{bad}:6]" in line]
    assert unknown and "'tiemout'" in unknown[0], done.stderr
    unit = [line for line in lines if f"{bad}:7]" in line]
    assert unit and "timeout server" in unit[0], done.stderr  # every error is reported, not just the first


# ---- the shipped configuration ---------------------------------------------------------------------------


def test_shipped_config_answers_hello(make_proxy: MakeProxy) -> None:
    busy = []
    for port in SHIPPED_PORTS:
        with socket.socket() as sock:
            # As the proxy binds: SO_REUSEADDR, so that TIME_WAIT leftovers of an earlier run do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                busy.append(f"{port} ({exc.strerror})")
    assert not busy, f"conf/poolproxy.cfg needs 127.0.0.1 ports 8080-8082; busy: {', '.join(busy)}"

    make_proxy(SHIPPED_CONFIG.read_text(), ports=list(SHIPPED_PORTS), workers=2)
    for path, expected in (("/", "hello from app"), ("/api/x", "hello from app1")):
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", f"http://127.0.0.1:8080{path}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        body, _, code = done.stdout.rpartition("\n")
        assert code == "200", done.stdout
        assert body.startswith(expected), body
