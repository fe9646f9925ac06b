"""Throughput of poolproxy and HAProxy on the same configuration, in one run, as ratios.

    python -m tools.bench [--threads N] [--connections C] [--seconds S] [--reuse MODE]

Both proxies get the same generated config (one frontend, one backend, one server, ``http-reuse``
MODE, ``nbthread`` N) and sit in front of the same origin: an HAProxy frontend answering
``http-request return`` (so the origin is never the bottleneck), or ``tools.origin`` when HAProxy is
missing. ``wrk`` drives each proxy in turn for S seconds with C keep-alive connections; the script
prints requests/s, mean latency and the poolproxy/HAProxy ratio. Needs ``wrk`` and ``haproxy``
(Debian packages). Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def proxy_config(port: int, origin: int, threads: int, reuse: str) -> str:
    return f"""global
    nbthread {threads}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse {reuse}
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 127.0.0.1:{origin}
"""


def origin_config(port: int) -> str:
    return f"""global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend origin
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "ok"
"""


def wrk(port: int, connections: int, seconds: int) -> tuple[float, str]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lat = re.search(r"Latency\s+(\S+)", out)
    if rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    return float(rps.group(1)), lat.group(1) if lat else "?"


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="nbthread of both proxies")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--reuse", default="always")
    args = ap.parse_args()
    for tool in ("wrk", "haproxy"):
        if shutil.which(tool) is None:
            print(f"{tool} is required (apt-get install {tool})", file=sys.stderr)
            return 1
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        d = Path(tmp)
        origin_port, pp_port, ha_port = free_port(), free_port(), free_port()
        (d / "origin.cfg").write_text(origin_config(origin_port))
        (d / "pp.cfg").write_text(proxy_config(pp_port, origin_port, args.threads, args.reuse))
        (d / "ha.cfg").write_text(proxy_config(ha_port, origin_port, args.threads, args.reuse))
        try:
            procs.append(start(["haproxy", "-db", "-f", str(d / "origin.cfg")], d / "origin.log"))
            procs.append(start([sys.executable, "-m", "proxy", "-f", str(d / "pp.cfg")], d / "pp.log"))
            procs.append(start(["haproxy", "-db", "-f", str(d / "ha.cfg")], d / "ha.log"))
            for port in (origin_port, pp_port, ha_port):
                wait_listening(port)
            time.sleep(1.0)  # workers forked and accepting
            wrk(pp_port, args.connections, 1)  # warm both pools
            wrk(ha_port, args.connections, 1)
            pp_rps, pp_lat = wrk(pp_port, args.connections, args.seconds)
            ha_rps, ha_lat = wrk(ha_port, args.connections, args.seconds)
        finally:
            for p in procs:
                stop(p)
    print(
        f"nbthread {args.threads}, {args.connections} keep-alive connections, {args.seconds}s each,"
        f" http-reuse {args.reuse}, origin: HAProxy http-request return"
    )
    print(f"  poolproxy  {pp_rps:10.0f} req/s  mean latency {pp_lat}")
    print(f"  haproxy    {ha_rps:10.0f} req/s  mean latency {ha_lat}")
    print(f"  ratio poolproxy/haproxy = {pp_rps / ha_rps:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
