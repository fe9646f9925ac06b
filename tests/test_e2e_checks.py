"""End-to-end health checks, redispatch and backup servers: the real proxy (4 workers), real origins
(``tools.origin``), a dead port, the runtime API and the shared table read from outside.

Bounded: every wait has a deadline (``wait_for``) and every load a fixed count; nothing asserts on
time: the figures (how long until DOWN / UP) are printed for the report, not asserted.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import MakeProxy, Origin, _read_line, free_port, http_get, wait_for

from proxy import shm
from proxy.health import K_LAST_CHECK

pytestmark = pytest.mark.e2e

REQUESTS = 1000
CLIENTS = 8


def ask(path: str, text: str, timeout: float = 5.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(text.encode())
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode()


def stat(sock: str) -> dict[str, dict[str, str]]:
    """``show stat`` as {svname: {column: value}} for backend ``be``."""
    lines = ask(sock, "show stat\n").splitlines()
    head = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(head, line.split(","), strict=False)) for line in lines[1:] if line]
    return {r["svname"]: r for r in rows if r["pxname"] == "be"}


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ppchk", dir="/tmp"))  # short: sun_path is 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def config(port: int, sock: Path, backend: str, nbthread: int = 4) -> str:
    return f"""global
    nbthread {nbthread}
    stats socket {sock} level admin
    log stderr local0
defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
{backend}
"""


class FixedOrigin(Origin):
    """An origin on a chosen port (the dead server coming back)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.fixed = port

    def start(self) -> FixedOrigin:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        args = ["-m", "tools.origin", "--host", "127.0.0.1", "--port", str(self.fixed), "--stats-port", "0"]
        proc = self._spawn(args, "origin", stdout=subprocess.PIPE, stderr=self._stderr)
        line = _read_line(proc, self.ready_timeout)
        m = re.fullmatch(rb"READY (\d+) (\d+)\n", line)
        assert m is not None, line
        self.port, self.stats_port = int(m[1]), int(m[2])
        return self


def load(port: int, n: int) -> dict[int, int]:
    """``n`` requests, each on a new connection (so they spread over the workers), ``CLIENTS`` at once."""

    def one(_: int) -> int:
        return http_get(port, "/", timeout=10).status

    counts: dict[int, int] = {}
    with ThreadPoolExecutor(CLIENTS) as pool:
        for status in pool.map(one, range(n)):
            counts[status] = counts.get(status, 0) + 1
    return counts


def test_dead_server_goes_down_clients_see_only_200_and_it_comes_back_up(
    make_proxy: MakeProxy, sockdir: Path
) -> None:
    with Origin() as a, Origin() as b:
        dead = free_port()
        port = free_port()
        sock = sockdir / "admin.sock"
        backend = (
            "    option httpchk GET /health HTTP/1.1\n    http-check expect status 200\n"
            "    retries 2\n    option redispatch\n"
            "    default-server check inter 200ms fall 2 rise 3\n"
            f"    server s1 127.0.0.1:{a.port}\n    server s2 127.0.0.1:{b.port}\n"
            f"    server s3 127.0.0.1:{dead}"
        )  # fmt: skip
        proxy = make_proxy(config(port, sock, backend), ports=[port], workers=4)
        t0 = time.monotonic()
        wait_for(lambda: sock.exists())
        wait_for(lambda: stat(str(sock))["s3"]["status"] == "DOWN", 10, message="s3 DOWN")
        print(f"\ns3 DOWN {time.monotonic() - t0:.2f}s after start (inter 200ms x fall 2, + spread)")
        # The same state in every worker: one row and one check record in the shared table
        table = shm.ShmTable.attach(next(n for n in _segments(proxy.pid)))
        try:
            i = table.server_index("be", "s3")
            assert table.row(i).oper_state == shm.OperState.STOPPED
            rec = table.check(i).snapshot()
            started = table.worker(rec["owner"] - 1).started_ns + time.time_ns() - time.monotonic_ns()
            took = (rec["last_change"] - started) / 1e9
            print(f"s3 marked DOWN {took:.3f}s after its checker worker was forked, at its first check")
            assert rec["health"] == 0 and rec["chk_down"] == 1 and 1 <= rec["owner"] <= 4
            dump = subprocess.run([sys.executable, "-m", "tools.shmdump", "--pid", str(proxy.pid)],
                                  capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
            assert re.search(r"^be/s3 DOWN \d 0 L4CON 0 \d+ 1 1 ", dump, re.M), dump
            errors_before = table.row(i).connect_errors
            t2 = time.monotonic()
            counts = load(port, REQUESTS)
            took = time.monotonic() - t2
            print(f"{REQUESTS} requests, {CLIENTS} clients, 4 workers: {counts} in {took:.1f}s")
            assert counts == {200: REQUESTS}
            # no worker sent a request to s3 while it was DOWN: its connect errors did not move
            assert table.row(i).connect_errors == errors_before
            row = stat(str(sock))["s3"]
            want = ("DOWN", "L4CON", "Connection refused")
            assert (row["status"], row["check_status"], row["last_chk"]) == want
            assert stat(str(sock))["BACKEND"]["act"] == "2"
            with FixedOrigin(dead) as back:
                t1 = time.monotonic()
                wait_for(lambda: stat(str(sock))["s3"]["status"] == "UP", 10, message="s3 UP")
                print(f"s3 UP {time.monotonic() - t1:.2f}s after its origin started (inter 200ms x rise 3)")
                assert back.stats()["requests"] >= 3  # rise 3: three checks passed before UP
                assert table.row(i).oper_state == shm.OperState.RUNNING
                row = stat(str(sock))["s3"]
                assert (row["check_status"], row["check_code"], row["chkdown"]) == ("L7OK", "200", "1")
                assert load(port, 60) == {200: 60}
                assert back.stats()["requests"] > 3  # traffic again
        finally:
            table.close()
        logs = proxy.logs()
        assert (
            'Server be/s3 is DOWN, reason: Layer4 connection problem, info: "Connection refused", check'
            " duration: " in logs
        )
        left = "2 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue."
        assert left in logs
        up = r"Server be/s3 is UP, reason: Layer7 check passed, code: 200, check duration: \d+ms\."
        assert re.search(up + r" 3 active and 0 backup servers online\.", logs)


def _segments(master_pid: int) -> list[str]:
    """The master's shared tables (``/poolproxy.<pid>.<generation>``)."""
    names = sorted(p.name for p in Path("/dev/shm").iterdir())
    return ["/" + n for n in names if n.startswith(f"poolproxy.{master_pid}.")]


def test_redispatch_moves_a_failed_connect_to_another_server(make_proxy: MakeProxy, sockdir: Path) -> None:
    """No checks: each request that lands on the dead server is retried on the live one at once
    (roundrobin, two servers: HAProxy redispatches without the turn-around); the log says ``+1``."""
    with Origin() as a:
        port = free_port()
        backend = (f"    retries 1\n    option redispatch\n    server dead 127.0.0.1:{free_port()}\n"
                   f"    server live 127.0.0.1:{a.port}")  # fmt: skip
        proxy = make_proxy(config(port, sockdir / "s.sock", backend, nbthread=1), ports=[port], workers=1)
        assert [http_get(port, "/").status for _ in range(6)] == [200] * 6
        redispatched = [line for line in proxy.logs().splitlines() if " be/live " in line and "/+1 " in line]
        assert len(redispatched) == 3, proxy.logs()
        assert a.stats()["requests"] == 6
        without = (f"    retries 1\n    server dead 127.0.0.1:{free_port()}\n"
                   f"    server live 127.0.0.1:{a.port}")  # fmt: skip
        port2 = free_port()
        make_proxy(config(port2, sockdir / "t.sock", without, nbthread=1), ports=[port2], workers=1)
        statuses = sorted(http_get(port2, "/").status for _ in range(2))
        assert statuses == [200, 503]  # no redispatch: the dead server's request fails after its retry


def test_backup_serves_only_when_no_active_server_is_up(make_proxy: MakeProxy, sockdir: Path) -> None:
    with Origin() as active, Origin() as backup, Origin() as backup2:
        port = free_port()
        sock = sockdir / "admin.sock"
        backend = (f"    server s1 127.0.0.1:{active.port} check inter 100ms fall 1 rise 1\n"
                   f"    server b1 127.0.0.1:{backup.port} backup\n"
                   f"    server b2 127.0.0.1:{backup2.port} backup")  # fmt: skip
        make_proxy(config(port, sock, backend, nbthread=2), ports=[port], workers=2)
        wait_for(lambda: sock.exists())
        assert load(port, 20) == {200: 20}
        assert (active.stats()["requests"], backup.stats()["requests"]) == (20, 0)
        assert ask(str(sock), "set server be/s1 state maint\n") == "\n"
        assert load(port, 20) == {200: 20}
        # only the first backup without 'option allbackups'
        assert (backup.stats()["requests"], backup2.stats()["requests"]) == (20, 0)


def test_idle_connections_close_in_every_worker_when_the_server_leaves(
    make_proxy: MakeProxy, sockdir: Path
) -> None:
    """Maintenance (the same path as DOWN): every worker closes its idle connections to the server."""
    with Origin() as a:
        port = free_port()
        sock = sockdir / "admin.sock"
        cfg = config(port, sock, f"    server s1 127.0.0.1:{a.port}", nbthread=4)
        make_proxy(cfg, ports=[port], workers=4)
        wait_for(lambda: sock.exists())
        assert load(port, 40) == {200: 40}
        wait_for(lambda: a.stats()["open"] > 0)
        ask(str(sock), "set server be/s1 state maint\n")
        wait_for(lambda: a.stats()["open"] == 0, 5, message="the origin sees every connection closed")


def test_a_dead_workers_checks_are_taken_over(make_proxy: MakeProxy, sockdir: Path) -> None:
    """The worker running a server's check is killed: the master frees its record, another worker
    (or its replacement) claims it, and the checks go on."""
    with Origin() as a:
        port = free_port()
        backend = f"    server s1 127.0.0.1:{a.port} check inter 100ms"
        proxy = make_proxy(config(port, sockdir / "s.sock", backend, nbthread=3), ports=[port], workers=3)
        table = shm.ShmTable.attach(_segments(proxy.pid)[0])
        try:
            rec = table.check(0)
            wait_for(lambda: rec.load(K_LAST_CHECK) > 0, 10, message="a first check")
            victim = table.worker(rec.owner).pid
            os.kill(victim, signal.SIGKILL)
            killed_at = time.time_ns()
            wait_for(lambda: rec.owner >= 0 and table.worker(rec.owner).pid not in (0, victim)
                     and rec.load(K_LAST_CHECK) > killed_at, 10, message="the check taken over")  # fmt: skip
            assert a.stats()["connections"] >= 2  # TCP checks: connections, no request
            assert "1 health checks released" in proxy.logs()
        finally:
            table.close()


HAPROXY = shutil.which("haproxy")


def _events(text: str) -> list[str]:
    """The check event lines of a stderr, without prefix, pid and durations."""
    out = []
    for line in text.splitlines():
        if line.startswith("[") and ("Server " in line or "has no server" in line):
            body = re.sub(r"check duration: \d+ms", "check duration: Nms", line.split(" : ", 1)[1])
            out.append(line[:9].rstrip() + " " + body)
    return out


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_check_lines_and_columns_match_haproxy(make_proxy: MakeProxy, sockdir: Path) -> None:
    """The same config under HAProxy and poolproxy: the same DOWN / UP / backup / no-server lines on
    stderr, and the same check columns in ``show stat`` and ``show servers state``."""
    with Origin() as spare:
        dead = free_port()
        port, hport = free_port(), free_port()
        backend = (
            "    option httpchk GET /\n"
            f"    server s1 127.0.0.1:{dead} check inter 200ms fall 2 rise 2\n"
            f"    server b1 127.0.0.1:{spare.port} check inter 200ms backup\n"
            "backend be2\n"
            f"    server b2 127.0.0.1:{free_port()} check inter 200ms backup"
        )  # fmt: skip
        ours_sock, h_sock = sockdir / "ours.sock", sockdir / "h.sock"
        proxy = make_proxy(config(port, ours_sock, backend, nbthread=2), ports=[port], workers=2)
        cfg = sockdir / "h.cfg"
        cfg.write_text(config(hport, h_sock, backend, nbthread=2))
        herr = sockdir / "h.err"
        with open(herr, "wb") as err:
            hap = subprocess.Popen([str(HAPROXY), "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                   stderr=err)  # fmt: skip
        try:
            wait_for(lambda: ours_sock.exists() and h_sock.exists())
            for sock in (ours_sock, h_sock):
                wait_for(lambda sock=sock: stat(str(sock))["s1"]["status"] == "DOWN", 10)  # type: ignore[misc]
            down = ("status", "check_status", "last_chk", "check_desc", "check_rise", "check_fall",
                    "check_health", "act", "bck", "chkdown")  # fmt: skip
            o_row, h_row = stat(str(ours_sock))["s1"], stat(str(h_sock))["s1"]
            assert {k: o_row[k] for k in down} == {k: h_row[k] for k in down}
            o_state = ask(str(ours_sock), "show servers state be\n").splitlines()[2].split()
            h_state = ask(str(h_sock), "show servers state be\n").splitlines()[2].split()
            fields = (5, 6, 10, 11, 12, 13)  # op_state admin_state check status, result, health, state
            assert [o_state[i] for i in fields] == [h_state[i] for i in fields]
            with FixedOrigin(dead):
                for sock in (ours_sock, h_sock):
                    wait_for(lambda sock=sock: stat(str(sock))["s1"]["status"] == "UP", 10)  # type: ignore[misc]
                    # and no check running at the moment of reading: HAProxy then shows "* L7OK",
                    # code 0 (seen once in a full run)
                    wait_for(lambda sock=sock: not stat(str(sock))["s1"]["check_status"].startswith("* "), 10)  # type: ignore[misc]
                o_row, h_row = stat(str(ours_sock))["s1"], stat(str(h_sock))["s1"]
                up = ("status", "check_status", "check_code", "check_health", "chkdown", "chkfail")
                assert {k: o_row[k] for k in up} == {k: h_row[k] for k in up}
        finally:
            hap.terminate()
            hap.wait(5)
        theirs, ours = _events(herr.read_text()), _events(proxy.logs())
        print("\n".join(["HAProxy:", *theirs, "poolproxy:", *ours]))
        assert sorted(ours) == sorted(theirs)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-s"]))
