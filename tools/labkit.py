"""The pieces of ``tools.lab``: the lab's server (HAProxy) and its runtime API, hey, starting the proxies,
poolproxy's own counters.

The server answers empty 200s (``http-request return status 200``) on two frontends, one HTTP/1.1 and
one ``bind ... proto h2``; ``LabServer`` counts per frontend through its stats socket: ``clear counters
all`` before a run, then ``show stat``'s ``conn_tot`` (connects), ``smax`` (at least what was open at
the reset: HAProxy raises ``smax`` only when it accepts) and ``req_tot``. Everything listens on
127.0.0.1 only.
"""

from __future__ import annotations

import csv
import io
import os
import random
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.benchlib import Contender, HeyResult, parse_hey, start, stop, wait_listening, wait_ready

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port to give a process started next, picked at random *below* the kernel's ephemeral range.

    The lab opens thousands of connections a second; each takes a source port from the ephemeral
    range, and a port picked there with bind-to-0 may be taken by one of them before the proxy binds
    it. Below that range only listeners live; the pick is checked by a bind (without SO_REUSEADDR,
    which fails while any socket holds the port). Bind-to-0 where that range is too small."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(200 if low - 10000 >= 1000 else 0):
        port = random.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_config(h1_port: int, h2_port: int, sock: Path) -> str:
    """The lab's server: HAProxy answering empty 200s, HTTP/1.1 on one port, HTTP/2 on the other."""
    return f"""global
    nbthread 1
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend h1
    bind 127.0.0.1:{h1_port}
    http-request return status 200
frontend h2
    bind 127.0.0.1:{h2_port} proto h2
    http-request return status 200
"""


# ---- the server and its runtime API -----------------------------------------------------------------------


def runtime_api(sock: Path, command: str, timeout: float = 5.0) -> str:
    """One command on HAProxy's stats socket (non-interactive: it answers, then closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def parse_show_stat(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """``show stat`` CSV -> {(pxname, svname): {column: value}}."""
    body = text.lstrip()
    if body.startswith("# "):
        body = body[2:]
    return {(r["pxname"], r["svname"]): r for r in csv.DictReader(io.StringIO(body)) if r.get("pxname")}


@dataclass
class ServerCounts:
    connects: int
    max_conns: int
    requests: int
    open_now: int


class LabServer:
    """The HAProxy process that plays the server; counts per frontend through its stats socket."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.sock = d / "server.sock"
        self.ports = {"h1": free_port(), "h2": free_port()}
        cfg = d / "server.cfg"
        cfg.write_text(server_config(self.ports["h1"], self.ports["h2"], self.sock))
        self.proc = start(["haproxy", "-db", "-f", str(cfg)], d / "server.log")
        self._before: dict[str, int] = {}
        try:
            for port in self.ports.values():
                wait_listening(port, timeout=15.0)
            deadline = time.monotonic() + 15.0
            while not self.sock.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("the lab server's stats socket did not appear")
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def _frontend(self, proto: str) -> dict[str, str]:
        return parse_show_stat(runtime_api(self.sock, "show stat"))[(proto, "FRONTEND")]

    def open_now(self, proto: str) -> int:
        return int(self._frontend(proto)["scur"] or 0)

    def reset(self, proto: str, settle: float = 5.0) -> None:
        """Wait (up to `settle` s) for the previous proxy's connections to be gone, then zero the
        counters; remember what is open at that instant (it counts in the peak)."""
        deadline = time.monotonic() + settle
        while self.open_now(proto) and time.monotonic() < deadline:
            time.sleep(0.02)
        runtime_api(self.sock, "clear counters all")
        self._before[proto] = self.open_now(proto)

    def counts(self, proto: str) -> ServerCounts:
        fe = self._frontend(proto)
        scur = int(fe["scur"] or 0)
        peak = max(int(fe["smax"] or 0), self._before.get(proto, 0), scur)
        return ServerCounts(int(fe["conn_tot"] or 0), peak, int(fe["req_tot"] or 0), scur)

    def stop(self) -> None:
        stop(self.proc)


# ---- the clients ------------------------------------------------------------------------------------------


def hey(port: int, users: int, seconds: float, keepalive: bool) -> HeyResult:
    cmd = ["hey", "-c", str(users), "-z", f"{seconds:g}s"]
    if not keepalive:
        cmd.append("-disable-keepalive")
    cmd.append(f"http://127.0.0.1:{port}/")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2 * seconds + 30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"hey exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return parse_hey(proc.stdout)


# ---- the proxies ------------------------------------------------------------------------------------------


def poolproxy_refusal(cfg: Path) -> str | None:
    """Why poolproxy refuses this configuration (its first alert), or None if it accepts it."""
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60,
        cwd=ROOT, check=False,
    )  # fmt: skip
    if out.returncode == 0:
        return None
    text = out.stdout + out.stderr
    alerts = [line for line in text.splitlines() if "ALERT" in line and "Fatal errors" not in line]
    line = alerts[0] if alerts else text.strip().splitlines()[-1] if text.strip() else "exit 1"
    return re.sub(r"^\[ALERT\]\s*config\s*:\s*", "", line).strip()


def start_proxy(name: str, cfg: Path, port: int, workers: int, d: Path, env: dict[str, str]) -> Contender:
    log = d / f"{cfg.stem}.{name}.log"
    if name == "poolproxy":
        cmd = [sys.executable, "-m", "proxy", "-f", str(cfg)]
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                start_new_session=True, env={**os.environ, **env},
            )  # fmt: skip
    else:
        proc = start(["haproxy", "-db", "-f", str(cfg)], log)
    c = Contender(name, port, proc, log)
    try:
        wait_ready(c, workers)
    except BaseException:
        stop(proc)
        raise
    return c


SHM_KEYS = ("connects", "reuses", "takeovers_asked", "takeovers_given", "takeovers_failed", "max_cur_conns")


def shm_counters(master_pid: int) -> dict[str, int]:
    """poolproxy's own figures for be/s1 from its shared table ({} if it cannot be read)."""
    from proxy.shm import ShmTable, backend_name, read_header
    from tools.shmdump import find_newest

    name = find_newest(master_pid)
    if name is None:
        return {}
    table = ShmTable.attach(name, backend=backend_name(read_header(name)))
    try:
        row = table.snapshot()["servers"][table.server_index("be", "s1")]
        return {k: int(row[k]) for k in SHM_KEYS}
    finally:
        table.close()
