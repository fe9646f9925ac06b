"""What a steal costs, and what stealing does to the server's connection count, next to HAProxy.

    python -m tools.steal_bench cost [--samples 2000]
    python -m tools.steal_bench lab [--workers 4] [--users 50] [--seconds 3] [--reuse always]
                                    [--steal pidfd|channel] [--rounds 1]

``cost``: one owner process holds idle loopback connections published in its slots of a real shared
table; this process steals them one by one through the code a worker runs (``proxy.steal.Thief``:
claim, ``pidfd_getfd``, verify, peek; then ``ServerRuntime.move`` through the slot and
``adopt_socket`` on uvloop), and times *claim → usable transport*. The same loop opens fresh
loopback connections the way ``Backend._connect`` does (non-blocking connect on the loop, then the
same wrap) and times *connect → usable transport*. Printed: median, p90 and p99 of each, raw
(descriptor in hand) and wrapped (transport ready), and their ratio.

``lab``: the reference article's row "clients close after each response" for one ``http-reuse``
mode: ``tools.origin`` counts the server connections; poolproxy (``--workers`` workers) and then
Debian's HAProxy (as many threads) run the same generated configuration in one run, each in front
of the same origin, driven by ``hey -disable-keepalive -c USERS -z SECONDS``. Printed per proxy:
requests answered, server connections opened (the origin's accepts), the maximum of concurrent
server connections, and for poolproxy its takeover counters from the shared table (asked, given,
failed) and how its workers steal. ``--steal channel`` runs poolproxy with the SCM_RIGHTS channel
instead of ``pidfd_getfd`` (the mechanism before), for comparison.

Everything listens on 127.0.0.1 and stops by itself; ``lab`` needs ``hey`` and ``haproxy``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tools.benchlib import wait_listening

ROOT = Path(__file__).resolve().parent.parent


# -- cost ---------------------------------------------------------------------------------------------
def _accept_forever(server: socket.socket, held: list[socket.socket]) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        held.append(conn)


def _percentiles(ns: list[int]) -> str:
    q = statistics.quantiles(ns, n=100)
    med = statistics.median(ns) / 1000
    return f"median {med:6.1f} µs   p90 {q[89] / 1000:6.1f}   p99 {q[98] / 1000:6.1f}"


def _listener_process(server: socket.socket) -> int:
    """Accept (and hold) connections in a child process, so that no thread of ours competes for
    the GIL with what is timed. Returns its pid."""
    pid = os.fork()
    if pid == 0:
        held: list[socket.socket] = []
        try:
            _accept_forever(server, held)
        finally:
            os._exit(0)
    return pid


def cost(samples: int, batch: int) -> int:
    import uvloop

    from proxy import pidfd
    from proxy import slots as sl
    from proxy.config.model import Cap, Config, Proxy, Server
    from proxy.h1 import Limits
    from proxy.pool import ListKind, key_hash, server_conn_key
    from proxy.server import Acct, ServerRuntime, SlotMove
    from proxy.server_conn import ServerConn, adopt_socket
    from proxy.shm import ShmTable, WorkerState
    from proxy.steal import Thief

    why = pidfd.probe(os.getpid(), 0)
    if why is not None:
        print(f"pidfd_getfd is refused here: {why}", file=sys.stderr)
        return 1
    server = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = server.getsockname()[1]
    acceptor = _listener_process(server)
    server.close()
    cfg = Server(name="s1", host="127.0.0.1", port=port)
    config = Config(backends={"be": Proxy(name="be", cap=Cap.BACKEND, servers=[cfg])})
    table = ShmTable.create(config, 2, generation=os.getpid() % 100000 + 1, nslots=batch)
    key = server_conn_key("be", cfg)
    kh = key_hash(key)
    ctl_parent, ctl_child = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the owner: publishes `batch` connections, finalizes them once taken, again
        code = 0
        try:
            ctl_parent.close()
            table.register_worker(0, os.getpid(), 1)
            table.set_worker_state(0, WorkerState.RUNNING)
            arr, cell = table.slots(0, 0), table.cell(0, 0)
            socks: dict[int, socket.socket] = {}
            while ctl_child.recv(1):
                for k, tag in enumerate(arr.tags()):
                    if sl.state_of(tag) is sl.SlotState.TAKEN:
                        cell.finalize_slot(arr, k, False)
                        socks.pop(k).close()
                for k in range(batch):
                    s = socket.create_connection(("127.0.0.1", port))
                    assert cell.try_open_conn(0)
                    cell.idle_add(1)
                    socks[k] = s
                    arr.publish(
                        k, owner=sl.make_owner(0, 1), fd=s.fileno(), conn_id=k,
                        ports=sl.make_ports(s.getsockname()[1], s.getpeername()[1]),
                        meta=sl.make_meta(safe=False, reqs=1), key_hash=kh, idle_since_ns=time.monotonic_ns(),
                    )  # fmt: skip
                ctl_child.send(b"r")
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    ctl_child.close()
    table.register_worker(1, os.getpid(), 1)
    table.set_worker_state(1, WorkerState.RUNNING)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    srv = ServerRuntime("be", 0, cfg, [table.cell(0, w) for w in range(2)], 1)
    thief = Thief(table, 1)
    steal_raw: list[int] = []
    steal_all: list[int] = []
    conn_raw: list[int] = []
    conn_all: list[int] = []
    blocking: list[int] = []
    order = (ListKind.IDLE, ListKind.SAFE)
    keep: list[ServerConn] = []

    async def one_steal() -> bool:
        t0 = time.perf_counter_ns()
        claim = thief.steal(0, [0], kh, order)
        if claim is None or claim.sock is None:
            return False
        conn = ServerConn(srv, key, "llhttp", Limits())
        through = SlotMove(claim.slots, claim.index, claim.tag, claim.record.safe)
        assert srv.move(conn, Acct.USED, slot=through)
        t1 = time.perf_counter_ns()
        await adopt_socket(loop, conn, claim.sock)
        t2 = time.perf_counter_ns()
        steal_raw.append(t1 - t0)
        steal_all.append(t2 - t0)
        keep.append(conn)
        return True

    async def one_connect() -> None:
        t0 = time.perf_counter_ns()
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        t1 = time.perf_counter_ns()
        conn = ServerConn(srv, key, "llhttp", Limits())
        await adopt_socket(loop, conn, sock)
        t2 = time.perf_counter_ns()
        conn_raw.append(t1 - t0)
        conn_all.append(t2 - t0)
        keep.append(conn)
        t0 = time.perf_counter_ns()
        plain = socket.create_connection(("127.0.0.1", port))
        blocking.append(time.perf_counter_ns() - t0)
        plain.close()

    async def main() -> None:
        while len(steal_all) < samples:
            ctl_parent.send(b"g")
            assert ctl_parent.recv(1) == b"r"
            for _ in range(batch):
                if len(steal_all) >= samples or not await one_steal():
                    break
                await one_connect()  # interleaved: both see the same machine
            for c in keep:
                c.close()
            keep.clear()
            await asyncio.sleep(0)

    try:
        loop.run_until_complete(main())
    finally:
        ctl_parent.close()
        os.waitpid(pid, 0)
        os.kill(acceptor, signal.SIGKILL)
        os.waitpid(acceptor, 0)
        thief.close()
        table.close()
        table.unlink()
    print(
        f"{len(steal_all)} steals (pidfd_getfd, the owner publishing {batch} at a time) and"
        f" {len(conn_all)} fresh loopback connects, interleaved"
    )
    print(f"  steal    claim → descriptor verified   {_percentiles(steal_raw)}")
    print(f"  steal    claim → usable transport      {_percentiles(steal_all)}")
    print(f"  connect  connect() → connected         {_percentiles(conn_raw)}")
    print(f"  connect  connect() → usable transport  {_percentiles(conn_all)}")
    print(f"  connect  blocking create_connection()  {_percentiles(blocking)}")
    ratio = statistics.median(steal_all) / statistics.median(conn_all)
    print(f"  median steal / median connect (usable transport) = {ratio:.2f}")
    return 0


# -- lab ----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(port: int, origin: int, workers: int, reuse: str, engine: str | None) -> str:
    tune = f"    tune.h1-engine {engine}\n" if engine else ""
    return (
        f"global\n    nbthread {workers}\n{tune}defaults\n    mode http\n    timeout connect 5s\n"
        f"    timeout client 30s\n    timeout server 30s\n    http-reuse {reuse}\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
        f"backend be\n    server s1 127.0.0.1:{origin}\n"
    )


def _stats(stats_port: int, path: str = "/__stats") -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}{path}", timeout=5) as r:
        data: dict[str, int] = json.loads(r.read())
    return data




def _start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True, env=env
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def _hey(port: int, users: int, seconds: int) -> tuple[int, float, str]:
    out = subprocess.run(
        ["hey", "-disable-keepalive", "-c", str(users), "-z", f"{seconds}s", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    ok = re.search(r"\[200\]\s+(\d+) responses", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = out.split("Error distribution:")[1].strip() if "Error distribution:" in out else ""
    return int(ok.group(1)) if ok else 0, float(rps.group(1)) if rps else 0.0, errors


def _shm_counters(master_pid: int) -> dict[str, Any]:
    from proxy.shm import ShmTable, backend_name, read_header
    from tools.shmdump import find_newest

    name = find_newest(master_pid)
    if name is None:
        return {}
    table = ShmTable.attach(name, backend=backend_name(read_header(name)))
    try:
        row = table.snapshot()["servers"][0]
        return {k: row[k] for k in ("connects", "takeovers_asked", "takeovers_given", "takeovers_failed",
                                      "max_cur_conns", "reuses")}  # fmt: skip
    finally:
        table.close()


def _wait_workers_running(master_pid: int, n: int, timeout: float = 20.0) -> None:
    from proxy.shm import ShmTable, WorkerState, backend_name, read_header
    from tools.shmdump import find_newest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name = find_newest(master_pid)
        if name is not None:
            table = ShmTable.attach(name, backend=backend_name(read_header(name)))
            try:
                if all(table.worker(w).state is WorkerState.RUNNING for w in range(n)):
                    return
            finally:
                table.close()
        time.sleep(0.05)
    raise RuntimeError("poolproxy's workers did not all start")


def lab(
    workers: int, users: int, seconds: int, reuse: str, steal: str, rounds: int, engine: str | None
) -> int:
    for tool in ("hey", "haproxy"):
        if shutil.which(tool) is None:
            print(f"{tool} is required (apt-get install {tool})", file=sys.stderr)
            return 1
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="steal-lab-") as tmp:
        d = Path(tmp)
        origin_port, stats_port = _free_port(), _free_port()
        cmd = [sys.executable, "-m", "tools.origin", "--port", str(origin_port), "--stats-port"]
        origin = _start([*cmd, str(stats_port)], d / "origin.log")
        procs = [origin]
        try:
            wait_listening(origin_port, timeout=15.0)
            wait_listening(stats_port, timeout=15.0)
            for rnd, name in itertools.product(range(rounds), ("poolproxy", "haproxy")):
                port = _free_port()
                cfg = d / f"{name}-{rnd}.cfg"
                mine = name == "poolproxy"
                cfg.write_text(_config(port, origin_port, workers, reuse, engine if mine else None))
                log = d / f"{name}-{rnd}.log"
                if name == "poolproxy":
                    env = dict(os.environ, POOLPROXY_STEAL=steal)
                    proc = _start([sys.executable, "-m", "proxy", "-f", str(cfg)], log, env)
                else:
                    proc = _start(["haproxy", "-db", "-f", str(cfg)], log)
                procs.append(proc)
                wait_listening(port, timeout=15.0)
                if name == "poolproxy":
                    _wait_workers_running(proc.pid, workers)
                else:
                    time.sleep(0.5)
                _stats(stats_port, "/__reset")
                ok, rps, errors = _hey(port, users, seconds)
                st = _stats(stats_port)
                row: dict[str, Any] = {"ok": ok, "rps": rps, "errors": errors, "conns": st["connections"],
                                       "max_open": st["max_open"]}  # fmt: skip
                if name == "poolproxy":
                    row |= _shm_counters(proc.pid)
                    via = sorted(set(re.findall(r"stealing idle connections with (.*)", log.read_text())))
                    row["via"] = "; ".join(via)
                _stop(proc)
                procs.remove(proc)
                rows.append((name, row))
        finally:
            for p in procs:
                _stop(p)
    print(
        f"clients close after each response, http-reuse {reuse}, {workers} workers/threads, {users} users"
        f" (hey -disable-keepalive), {seconds}s per proxy, origin tools.origin (its accepts are counted)"
    )
    for name, row in rows:
        line = (
            f"  {name:9}  {row['ok']:6} answers ({row['rps']:7.0f} req/s)  server connections opened"
            f" {row['conns']:4}  max concurrent {row['max_open']:3}"
        )
        if name == "poolproxy":
            line += (
                f"  takeovers asked {row.get('takeovers_asked')} given {row.get('takeovers_given')}"
                f" failed {row.get('takeovers_failed')}  [{row.get('via')}]"
            )
        if row["errors"]:
            line += f"  errors: {row['errors']}"
        print(line)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cost", help="steal vs connect, claim → usable transport")
    c.add_argument("--samples", type=int, default=2000)
    c.add_argument("--batch", type=int, default=16, help="connections the owner publishes at a time")
    lb = sub.add_parser("lab", help="the article's close-mode row, poolproxy and HAProxy")
    lb.add_argument("--workers", type=int, default=4)
    lb.add_argument("--users", type=int, default=50)
    lb.add_argument("--seconds", type=int, default=3)
    lb.add_argument("--reuse", default="always")
    lb.add_argument("--steal", default="auto", choices=("auto", "pidfd", "channel"))
    lb.add_argument("--rounds", type=int, default=1)
    lb.add_argument("--engine", default=None, help="tune.h1-engine of poolproxy (default: its default)")
    args = ap.parse_args()
    if args.mode == "cost":
        return cost(args.samples, args.batch)
    return lab(args.workers, args.users, args.seconds, args.reuse, args.steal, args.rounds, args.engine)


if __name__ == "__main__":
    sys.exit(main())
