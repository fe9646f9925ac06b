"""What a steal costs, next to a connect.

    python -m tools.steal_bench cost [--samples 2000]

``cost``: one owner process holds idle loopback connections published in its slots of a real shared
table; this process steals them one by one through the code a worker runs (``proxy.steal.Thief``:
claim, ``pidfd_getfd``, verify, peek; then ``ServerRuntime.move`` through the slot and
``adopt_socket`` on uvloop), and times *claim → usable transport*. The same loop opens fresh
loopback connections the way ``Backend._connect`` does (non-blocking connect on the loop, then the
same wrap) and times *connect → usable transport*. Printed: median, p90 and p99 of each, raw
(descriptor in hand) and wrapped (transport ready), and their ratio.

What stealing does to the server's connection count, next to HAProxy, is the reference lab's
question: ``python -m tools.lab`` (``--steal channel`` there runs poolproxy with the SCM_RIGHTS channel).

Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import sys
import time
from pathlib import Path

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

    from proxy import pidfd, slots as sl
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cost", help="steal vs connect, claim → usable transport")
    c.add_argument("--samples", type=int, default=2000)
    c.add_argument("--batch", type=int, default=16, help="connections the owner publishes at a time")
    args = ap.parse_args()
    return cost(args.samples, args.batch)


if __name__ == "__main__":
    sys.exit(main())
