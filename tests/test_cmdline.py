"""The command line as HAProxy's (proxy.main): -D, -vv, -c -q with systemd's flags, start-up alerts
(one ``[ALERT]`` line and exit 1, never a traceback), the shipped systemd unit, and other users'
shared-memory segments skipped."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import posix_ipc
import pytest
from harness import REPO_ROOT, free_port, wait_for

from proxy import shm

UNIT = REPO_ROOT / "conf" / "poolproxy.service"


def poolproxy(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def config(tmp_path: Path, port: int, glob: str = "") -> Path:
    path = tmp_path / "p.cfg"
    path.write_text(
        f"global\n    nbthread 1\n{glob}\ndefaults\n    mode http\n    timeout client 5s\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    http-request return status 200\n"
    )
    return path


def one_alert(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    alerts = [line for line in done.stderr.splitlines() if "[ALERT]" in line]
    assert len(alerts) == 1, done.stderr
    return alerts[0]


def test_vv_prints_build_facts() -> None:
    done = poolproxy("-vv")
    assert done.returncode == 0
    for fact in ("Python 3.", "uvloop ", "h2 ", "httptools ", "atomics backend: ", "HTTP/1 engines", "h11"):
        assert fact in done.stdout, fact


def test_check_quiet_accepts_systemds_reload_line(tmp_path: Path) -> None:
    """ExecReload's ``-Ws -f CONFIG -c -q -S PATH``: silent, exit 0, nothing bound."""
    port = free_port()
    done = poolproxy("-Ws", "-f", str(config(tmp_path, port)), "-c", "-q", "-S", str(tmp_path / "m.sock"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not (tmp_path / "m.sock").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["-S", "/tmp/x.sock,mode"], "'mode' expects a value"),
        (["-sf", "1", "-st", "2"], "-sf and -st are exclusive"),
        (["-p", "/nonexistent-dir/poolproxy.pid"], "Cannot create pidfile /nonexistent-dir/poolproxy.pid"),
    ],
)
def test_start_up_failures_are_one_alert_and_exit_1(tmp_path: Path, args: list[str], expected: str) -> None:
    done = poolproxy("-f", str(config(tmp_path, free_port())), "-db", *args)
    assert expected in one_alert(done)


def test_daemon_returns_once_listening_and_detaches(tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    done = poolproxy("-D", "-f", str(config(tmp_path, port)), "-p", str(pidfile))
    assert done.returncode == 0, done.stderr
    pid = int(pidfile.read_text())
    try:
        assert time.monotonic() - started < 30
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # bound before -D returned
            pass
        assert os.getsid(pid) == pid  # its own session: no controlling terminal
        assert os.readlink(f"/proc/{pid}/fd/1") == os.readlink(f"/proc/{pid}/fd/2") == "/dev/null"
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=15, message="the daemon gone")


def test_daemon_whose_bind_fails_exits_1_with_the_alert(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        done = poolproxy("-D", "-f", str(config(tmp_path, taken.getsockname()[1])))
    alert = one_alert(done)
    assert "cannot bind socket" in alert
    assert re.search(r"\(\S+\.cfg:\d+\)", alert), alert  # the bind line, as file:line


def test_other_users_segments_are_skipped_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale-looking segment that this user may not remove (posix_ipc.PermissionsError) is left."""
    name = f"/poolproxy.{2**22 + 12345}.1"  # a pid above pid_max's default: surely dead
    seg = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=4096)
    seg.close_fd()
    real_unlink = posix_ipc.unlink_shared_memory

    def refuse(n: str) -> None:
        if n == name:
            raise posix_ipc.PermissionsError("Permission denied")
        real_unlink(n)

    try:
        monkeypatch.setattr(shm.posix_ipc, "unlink_shared_memory", refuse)
        assert name not in shm.cleanup_stale()
        monkeypatch.undo()
        assert name in shm.cleanup_stale()  # removable: removed
    finally:
        monkeypatch.undo()
        if os.path.exists("/dev/shm" + name):
            real_unlink(name)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_shipped_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify: the unit parses cleanly (it exits 0 on ignored keys, so stderr must be
    empty too). ExecStart's binary is pointed at an existing executable: the check is the unit's."""
    text = UNIT.read_text()
    for needed in ("Type=notify", "KillMode=mixed", "ExecReload=/bin/kill -USR2 $MAINPID", "LimitNOFILE=",
                   "-c -q", "-Ws"):  # fmt: skip
        assert needed in text, needed
    stub = tmp_path / "poolproxy"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "poolproxy.service"
    unit.write_text(text.replace("/usr/local/bin/poolproxy", str(stub)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
