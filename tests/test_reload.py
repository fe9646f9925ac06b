"""End-to-end: hitless reload, the master CLI, systemd notify, -x/-sf take-over and the watchdog.

Real master and workers on 127.0.0.1, real signals, a real ``NOTIFY_SOCKET`` (a Unix datagram socket
the test reads), the master CLI over its Unix socket. Waits poll with deadlines. Not a ``test_e2e_*``
module on purpose: nothing here depends on the HTTP/1 engine, so it runs once (the default engine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
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

from proxy.shm import GAUGES, ShmTable

pytestmark = pytest.mark.e2e


def cli(path: Path, command: str, timeout: float = 30.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def workers_of(show_proc: str, section: str = "# workers") -> list[int]:
    if section + "\n" not in show_proc:
        return []
    body = show_proc.split(section + "\n", 1)[1].split("# ", 1)[0]
    return [int(line.split()[0]) for line in body.splitlines() if line.strip()]


def listening_inodes(port: int) -> set[int]:
    out = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                out.add(int(fields[9]))
    return out


class NotifyListener:
    """A bound ``NOTIFY_SOCKET``: collects every datagram in order, in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict[str, str]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while data := self.sock.recv(4096):
                self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        except OSError:
            pass

    def states(self) -> list[str]:
        keys = ("READY", "RELOADING", "STOPPING")
        return [k for m in self.messages for k in keys if m.get(k) == "1"]

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def ops_proxy(
    make_proxy: MakeProxy, origin: Origin, tmp_path: Path, *, glob: str = "", nbthread: int = 2,
    extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
) -> tuple[int, Proxy, Path]:  # fmt: skip
    """A proxy with a master CLI socket, its workers listed in ``show proc``: (port, proxy, socket)."""
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    msock = tmp_path / "master.sock"
    text = proxy_config(port, origin.port, nbthread=nbthread, glob=glob)
    proxy = make_proxy(text, ports=[port], workers=nbthread, args=["-S", str(msock), *extra_args], env=env)
    wait_for(lambda: len(workers_of(cli(msock, "show proc"))) == nbthread, message="workers in show proc")
    return port, proxy, msock


def test_notify_sequence_and_broken_reload_status(
    make_proxy: MakeProxy, origin: Origin, tmp_path: Path
) -> None:
    notify = NotifyListener(tmp_path / "notify")
    try:
        port, proxy, msock = ops_proxy(make_proxy, origin, tmp_path, glob="hard-stop-after 5s",
                                       extra_args=("-Ws",), env={"NOTIFY_SOCKET": notify.path})  # fmt: skip
        wait_for(lambda: notify.states() == ["READY"], message="READY=1 once the workers accept")
        first = notify.messages[0]
        assert first["MAINPID"] == str(proxy.pid) and first["STATUS"].startswith("generation 1, 2 workers")
        before = workers_of(cli(msock, "show proc"))
        proxy.send_signal(signal.SIGUSR2)
        wait_for(lambda: notify.states() == ["READY", "RELOADING", "READY"], message="a reload notified")
        reloading = next(m for m in notify.messages if m.get("RELOADING"))
        assert 0 < int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notify.messages[-1]["STATUS"].startswith("generation 2, 2 workers, 1 reloads")
        wait_for(lambda: not (set(before) & set(group_members(proxy.pid))), timeout=10,
                 message="the old workers gone")  # fmt: skip
        assert http_get(port, "/").status == 200
        # A broken configuration: refused, reported to systemd, the old generation keeps serving
        good = proxy.cfg_path.read_text()
        proxy.cfg_path.write_text(good.replace("default_backend be", "default_backend be\n    no-such-kw 1"))
        answer = cli(msock, "reload")
        assert answer.startswith("Success=0\n--\n") and "unknown keyword 'no-such-kw'" in answer
        wait_for(lambda: len(notify.states()) == 5, message="RELOADING then READY for the failed reload")
        assert notify.states()[3:] == ["RELOADING", "READY"]
        assert "last reload failed" in notify.messages[-1]["STATUS"]
        assert "no-such-kw" in notify.messages[-1]["STATUS"]
        shown = cli(msock, "show proc")
        assert "1 [failed: 1]" in shown.splitlines()[1]
        assert "no-such-kw" in shown.split("# last reload failed:")[1]
        assert all(http_get(port, "/").status == 200 for _ in range(5))
        assert proxy.stop(signal.SIGTERM) == 0
        wait_for(lambda: notify.states()[-1:] == ["STOPPING"], message="STOPPING=1 at shutdown")
        assert notify.states() == ["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"]
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"poolproxy.{proxy.pid}.")]
    finally:
        notify.close()


def test_reload_opens_new_listeners_closes_removed_ones_and_routes_cli(
    make_proxy: MakeProxy, origin: Origin, tmp_path: Path
) -> None:
    port, proxy, msock = ops_proxy(make_proxy, origin, tmp_path)
    extra = free_port()
    good = proxy.cfg_path.read_text()
    two = good.replace(f"bind 127.0.0.1:{port}", f"bind 127.0.0.1:{port}\n    bind 127.0.0.1:{extra}")
    proxy.cfg_path.write_text(two)
    inode = listening_inodes(port)
    assert cli(msock, "reload") == "Success=1\n\n"
    assert http_get(extra, "/").status == 200 and listening_inodes(port) == inode
    shown = cli(msock, "show proc")
    old = workers_of(shown, "# old workers")
    current = workers_of(shown)
    assert len(current) == 2 and shown.splitlines()[1].split()[:3] == [str(proxy.pid), "master", "1"]
    # routing: @1 and @!PID answer from that worker's generation; an unknown target is refused
    assert "Name: poolproxy" in cli(msock, f"@1 show info; @!{current[1]} show info")
    assert cli(msock, "@9 show info").startswith("Can't find the target PID matching the prefix '@9'")
    if old:  # still draining: its view is its own (old) generation's
        assert "Nbthread: 2" in cli(msock, f"@!{old[0]} show info") or old[0] not in group_members(proxy.pid)
    proxy.cfg_path.write_text(good)
    proxy.send_signal(signal.SIGHUP)
    wait_for(lambda: not listening_inodes(extra), timeout=10, message=f"port {extra} closed after the reload")
    assert listening_inodes(port) == inode
    assert http_get(port, "/").status == 200
    wait_for(lambda: "# old workers" not in cli(msock, "show proc"), timeout=10, message="old workers gone")
    assert [n for n in os.listdir("/dev/shm") if n.startswith(f"poolproxy.{proxy.pid}.")] == [
        f"poolproxy.{proxy.pid}.3"
    ]


def test_x_and_sf_take_over_the_same_listening_socket(
    make_proxy: MakeProxy, origin: Origin, tmp_path: Path
) -> None:
    port, old, msock = ops_proxy(make_proxy, origin, tmp_path / "old", glob="noreuseport")
    inode = listening_inodes(port)
    text = old.cfg_path.read_text()
    # noreuseport: without -x the new process could not bind the port; with it, it needs not
    new = make_proxy(text, ports=[port], workers=2, args=["-x", str(msock), "-sf", str(old.pid)])
    assert old.proc is not None and old.proc.wait(timeout=15) == 0  # soft-stopped once the new one was ready
    assert listening_inodes(port) == inode  # the very same socket, never closed
    assert http_get(port, "/").status == 200
    assert "sent SIGUSR1 to old process" in new.logs()


def test_x_takes_the_sockets_from_a_stats_socket_with_expose_fd(
    make_proxy: MakeProxy, origin: Origin, tmp_path: Path
) -> None:
    """Debian's way: ``stats socket ... level admin expose-fd listeners`` and ``-x`` that socket."""
    admin = tmp_path / "admin.sock"
    glob = f"noreuseport\n    stats socket {admin} mode 660 level admin expose-fd listeners"
    port, old, _ = ops_proxy(make_proxy, origin, tmp_path / "old", glob=glob)
    inode = listening_inodes(port)
    wait_for(admin.exists, message="the stats socket")
    args = ["-x", str(admin), "-sf", str(old.pid)]
    new = make_proxy(old.cfg_path.read_text(), ports=[port], workers=2, args=args)
    assert old.proc is not None and old.proc.wait(timeout=15) == 0
    assert listening_inodes(port) == inode  # the very same socket, never closed
    assert http_get(port, "/").status == 200
    assert "Failed to get the sockets" not in new.logs()


def test_watchdog_kills_a_stuck_worker_and_counters_stay_exact(
    make_proxy: MakeProxy, origin: Origin, tmp_path: Path
) -> None:
    port, proxy, msock = ops_proxy(make_proxy, origin, tmp_path, glob="worker-watchdog-timeout 2s")
    # The watchdog watches READY workers' heartbeats: stop one only once both are ready (stopped
    # while it still imports, a worker is not yet the watchdog's: the check once caught that race)
    wait_for(lambda: "Loading success" in proxy.logs(), message="the workers ready")
    assert all(http_get(port, "/").status == 200 for _ in range(20))
    victim = workers_of(cli(msock, "show proc"))[0]
    os.kill(victim, signal.SIGSTOP)

    def replaced() -> list[int]:
        now = workers_of(cli(msock, "show proc"))
        return now if len(now) == 2 and victim not in now else []

    wait_for(replaced, timeout=10, message=f"the stopped worker {victim} replaced")
    assert "is stuck: no heartbeat" in proxy.logs()
    assert all(http_get(port, "/").status == 200 for _ in range(20))
    name = next(n for n in os.listdir("/dev/shm") if n.startswith(f"poolproxy.{proxy.pid}."))
    with ShmTable.attach("/" + name) as table:
        row = table.row(0)

        def settled() -> bool:
            return row.served == 0 and row.used == 0 and row.queue_len == 0

        wait_for(settled, message="nothing in flight")
        assert row.requests == 40 == origin.stats()["requests"]  # none lost, none counted twice

        def gauges_match() -> list[tuple[str, int, int]]:
            """Each server-wide gauge against the sum of the live workers' cells (the mismatches)."""
            cells = [table.cell(0, s) for s in range(2)]
            sums = {
                "served": sum(c.served + c.incoming for c in cells), "conns": sum(c.conns for c in cells),
                "used": sum(c.used for c in cells), "idle": sum(c.idle for c in cells),
                "safe": sum(c.safe for c in cells), "queued": sum(c.queued for c in cells),
            }  # fmt: skip
            return [(g, row.load(roff), sums[g]) for g, roff, _ in GAUGES if row.load(roff) != sums[g]]

        wait_for(lambda: not gauges_match(), message="rows equal to the sum of the cells")


def test_reload_lab_short_run(tmp_path: Path) -> None:
    """tools/reload_lab.py, briefly: reloads under load, every check of the full run."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.reload_lab", "--duration", "4", "--reloads", "3", "--closing", "3",
         "--keepalive", "3", "--hard-stop-after", "10", "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and all(result["checks"].values()), result["checks"]
    assert result["closing"]["failed"] == result["keepalive"]["failed"] == 0
    assert result["keepalive"]["connects"] < result["keepalive"]["ok"]  # keep-alive really reused


def test_hard_stop_after_bounds_an_old_generation(
    make_proxy: MakeProxy, origin: Origin, tmp_path: Path
) -> None:
    """An old worker still serving a slow request is killed at hard-stop-after, not when it is done."""
    port, proxy, msock = ops_proxy(make_proxy, origin, tmp_path, glob="hard-stop-after 1s", nbthread=1)
    old = workers_of(cli(msock, "show proc"))
    results: list[object] = []

    def slow() -> None:
        try:
            results.append(http_get(port, "/delay/20000", timeout=30).status)
        except OSError as exc:
            results.append(exc)

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: origin.stats()["active"] == 1, message="the slow request at the origin")
    assert cli(msock, "reload") == "Success=1\n\n"
    assert workers_of(cli(msock, "show proc"), "# old workers") == old  # draining, listed as old
    # the requirement is the bound itself: gone after ~1 s, long before the request's 20 s
    wait_for(lambda: not (set(old) & set(group_members(proxy.pid))), timeout=10, message="old worker killed")
    t.join(30)
    assert results and results[0] != 200  # it was cut, as HAProxy's hard-stop-after does
    assert "hard-stop-after reached" in proxy.logs()
    assert http_get(port, "/").status == 200


def test_reload_whose_new_workers_die_is_aborted(
    make_proxy: MakeProxy, origin: Origin, tmp_path: Path
) -> None:
    """The new generation's worker exits before READY: the reload fails, the running one serves."""
    marker = tmp_path / "fail"
    marker.touch()
    port = free_port()
    msock = tmp_path / "master.sock"
    text = proxy_config(port, origin.port, nbthread=2)
    proxy = make_proxy(text, ports=[port], workers=2, args=["-S", str(msock)],
                       module="tests.ops_failing_worker", env={"FAIL_NEW_WORKERS": str(marker)})  # fmt: skip
    wait_for(lambda: len(workers_of(cli(msock, "show proc"))) == 2, message="workers in show proc")
    before = workers_of(cli(msock, "show proc"))
    answer = cli(msock, "reload")
    assert answer.startswith("Success=0\n--\n") and "before it was ready" in answer, answer
    assert workers_of(cli(msock, "show proc")) == before
    assert all(http_get(port, "/").status == 200 for _ in range(5))
    mine = f"poolproxy.{proxy.pid}."
    wait_for(lambda: [n for n in os.listdir("/dev/shm") if n.startswith(mine)] == [mine + "1"],
             message="the aborted generation's segment unlinked")  # fmt: skip
    marker.unlink()
    assert cli(msock, "reload") == "Success=1\n\n"  # the next one works
    assert http_get(port, "/").status == 200
