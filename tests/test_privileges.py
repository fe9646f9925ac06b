"""chroot, user and group: the workers drop their privileges before serving; the master keeps its own.

End-to-end with real processes (as root: skipped otherwise), once (not per HTTP/1 engine: nothing
here depends on the parser). Unit checks of the configuration and of the master's pre-flight run
everywhere.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO_ROOT, MakeProxy, Origin, free_port, http_get, proxy_config, wait_for

from proxy import privileges
from proxy.config import ConfigError, load
from proxy.config.model import Global

ROOT = os.geteuid() == 0
NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid if "nogroup" in {g.gr_name for g in grp.getgrall()} else None


def _status(pid: int, field: str) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(field)


def test_config_resolves_names_and_warns_on_a_second_user(tmp_path: Path) -> None:
    path = tmp_path / "p.cfg"
    path.write_text("global\n    user nobody\n    uid 0\n    chroot /var/empty\n")
    cfg = load([str(path)], env={})
    assert (cfg.global_.uid, cfg.global_.chroot) == (NOBODY, "/var/empty")
    (warning,) = cfg.warnings
    assert warning == f"[WARNING] config : parsing [{path}:3] : user/uid already specified. Continuing."
    path.write_text("global\n    user no-such-user-here\n    group no-such-group-here\n")
    with pytest.raises(ConfigError) as err:
        load([str(path)], env={})
    assert err.value.messages == [
        f"[ALERT] config : parsing [{path}:2] : cannot find user id for 'no-such-user-here'",
        f"[ALERT] config : parsing [{path}:3] : cannot find group id for 'no-such-group-here'",
    ]


def test_preflight(tmp_path: Path) -> None:
    assert privileges.preflight(Global()) is None
    missing = str(tmp_path / "nope")
    assert privileges.preflight(Global(chroot=missing)) == f"[haproxy.main()] Cannot chroot({missing})."
    if ROOT:
        assert privileges.preflight(Global(chroot=str(tmp_path), uid=NOBODY)) is None
    else:
        assert privileges.preflight(Global(uid=os.getuid())) is None  # nothing to change
        assert privileges.preflight(Global(chroot=str(tmp_path))) is not None


@pytest.mark.e2e
def test_missing_chroot_refuses_the_start(tmp_path: Path) -> None:
    cfg = tmp_path / "p.cfg"
    cfg.write_text(f"global\n    chroot {tmp_path / 'nope'}\n" + proxy_config(free_port(), free_port()))
    run = subprocess.run(
        [sys.executable, "-m", "proxy", "-f", str(cfg), "-d"], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert run.returncode == 1
    assert f"[haproxy.main()] Cannot chroot({tmp_path / 'nope'})." in run.stderr


@pytest.mark.e2e
@pytest.mark.skipif(not ROOT or NOGROUP is None, reason="needs root and a 'nogroup' group")
def test_workers_serve_from_the_jail_as_the_configured_user(
    make_proxy: MakeProxy, origin: Origin, tmp_path: Path
) -> None:
    jail = tmp_path / "jail"
    jail.mkdir()
    port = free_port()
    glob = f"chroot {jail}\n    user nobody\n    group nogroup\n    log stderr local0"
    config = proxy_config(port, origin.port, nbthread=2, glob=glob, defaults="log global")
    config = config.replace(f"127.0.0.1:{origin.port}", f"localhost:{origin.port}")  # resolved before
    proxy = make_proxy(config, ports=[port], workers=2)
    workers = wait_for(lambda: proxy.worker_pids() if len(proxy.worker_pids()) == 2 else None)
    for pid in workers:
        wait_for(lambda pid=pid: _status(pid, "Uid")[0] == NOBODY, message=f"worker {pid} is nobody")
        assert set(_status(pid, "Uid")) == {NOBODY} and set(_status(pid, "Gid")) == {NOGROUP}
        assert _status(pid, "Groups") == [NOGROUP] or _status(pid, "Groups") == []
        assert os.readlink(f"/proc/{pid}/root") == str(jail)
    assert _status(proxy.pid, "Uid")[0] == 0 and os.readlink(f"/proc/{proxy.pid}/root") == "/"
    for _ in range(4):  # keep-alive pool, both workers, a log line each
        response = http_get(port, "/echo")
        assert response.status == 200
    assert http_get(port, "/status/503").status == 503
    wait_for(lambda: proxy.logs().count(" fe be/s1 ") >= 5, message="access log lines from the jail")


@pytest.mark.e2e
@pytest.mark.skipif(not ROOT or NOGROUP is None, reason="needs root and a 'nogroup' group")
def test_workers_serve_as_the_configured_user_without_a_jail(make_proxy: MakeProxy, origin: Origin) -> None:
    """Regression: with `user`/`group` and no `chroot`, a worker's first connect imported the IDNA
    codec lazily from the interpreter's directory, unreadable to the new user (under /root): the
    request hung. The codec is now loaded before the drop, and any such error is answered."""
    port = free_port()
    config = proxy_config(port, origin.port, nbthread=2, glob="user nobody\n    group nogroup")
    proxy = make_proxy(config, ports=[port], workers=2)
    for pid in wait_for(lambda: proxy.worker_pids() if len(proxy.worker_pids()) == 2 else None):
        wait_for(lambda pid=pid: _status(pid, "Uid")[0] == NOBODY, message=f"worker {pid} is nobody")
    for _ in range(6):
        assert http_get(port, "/echo").status == 200
