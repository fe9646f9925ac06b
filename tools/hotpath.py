"""The Python part of a keep-alive request, in-process: CPU µs and Python calls per request.

    python -m tools.hotpath [--engine native|llhttp|h11] [--close] [--lend] [--requests 20000]
                            [--rounds 7] [--profile N]

No sockets, no event loop turns, no other process: one real ``ClientConn`` (``proxy.mux_h1``) on a
fake transport, in front of the real stream, backend, server runtime and idle pool over a real shared
table (``tests/fakes.py``'s ``World``: one worker slot of two, ``http-reuse always``, one server), and
one pooled real ``ServerConn`` on a fake transport. Each request is ``GET /`` fed to the client side
and a 200 with a 2-byte Content-Length body fed to the server connection the stream attached, as
HAProxy's ``http-request return`` origin answers ``tools.bench``'s wrk. What is left out is what the
event loop and the kernel do (reads, writes, polling): ``tools.bench`` measures the whole.
``--close``: each request on a new client connection (``Connection: close``; the connection made,
the request, the response, the connection lost), as ``tools.bench --mode close``; the event loop
here is asyncio's own, whose timers are Python code (uvloop's are not).
``--lend``: this worker lends, as each worker of several does (``ServerRuntime.lend_from``): the
pooled connection is published in its slot when released and taken back (its slot unpublished, its
descriptor peeked at: a socketpair's end stands in for it) when reused.

Printed: the best of ``--rounds`` rounds of ``--requests`` requests in CPU time
(``time.process_time``: a busy machine slows a round, it hardly adds CPU time to it), and the number
of Python function calls a request makes (``cProfile``'s count over one more round, divided by its
requests; the fakes' own calls are left out). ``--profile N`` also prints the N functions with the
most calls per request. On a machine shared with other work the µs wander by 10-20 %; the calls do
not, and ``valgrind --tool=callgrind`` over two request counts gives an instruction count per request
that does not either (the figures in docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import pstats
import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncache-control: no-cache\r\ncontent-type: text/plain\r\n\r\nok"
)


def measure(
    engine: str, requests: int, rounds: int, top: int, close: bool = False, lend: bool = False
) -> dict[str, float]:
    sys.path.insert(0, ".")
    # The test suite's fakes (loaded by name: the type checker covers them with the tests)
    fakes = importlib.import_module("tests.fakes")
    FakeClients, FakeTransport, World, pooled_conn = (
        fakes.FakeClients, fakes.FakeTransport, fakes.World, fakes.pooled_conn,
    )  # fmt: skip
    from proxy.config.model import ReuseMode, Timeouts
    from proxy.env import StreamEnv
    from proxy.h1 import Limits
    from proxy.log import LogSink
    from proxy.mux_h1 import ClientConn
    from proxy.pool import ListKind
    from proxy.slots import make_owner

    timeouts = Timeouts(client=30, server=30, connect=5)
    # real_connect: the real Backend (a fake subclass would call it through mypyc glue); it never
    # connects here: the pooled connection serves every request.
    world = World(engine_name=engine, reuse=ReuseMode.ALWAYS, timeouts=timeouts, real_connect=True)
    env = StreamEnv(world.frontend, FakeClients(world.table), LogSink([]), engine, Limits(), 16384)
    out: dict[str, float] = {}

    pair = socket.socketpair()  # --lend: the pooled connection's descriptor, for the peeks

    async def main() -> None:
        conn = pooled_conn(world.srv, world.key(), ListKind.IDLE, engine)
        if lend:  # as a worker of two does (proxy.worker.start_stealing): publish, peek, unpublish
            srv = world.srv
            srv.lend_from(world.table.slots(srv.index, 0), make_owner(0, world.table.worker(0).incarnation))
            conn.fd = pair[0].fileno()
        loop = asyncio.get_running_loop()
        client_t = FakeTransport()
        client = ClientConn(env, loop=loop)
        client.connection_made(client_t)
        request = CLOSE_REQUEST if close else REQUEST

        def run(n: int) -> None:
            nonlocal client, client_t
            for i in range(n):
                if close:
                    client_t = FakeTransport()
                    client = ClientConn(env, loop=loop)
                    client.connection_made(client_t)
                elif i % 1000 == 0:  # what the fakes recorded: dropped now and then
                    client_t.writes.clear()
                client.data_received(request)
                stream = client.stream
                conn = stream.conn if stream is not None else None  # type: ignore[attr-defined]
                if conn is None:
                    raise RuntimeError("the request found no pooled connection")
                conn.data_received(RESPONSE)
                if i % 1000 == 0:
                    conn.transport.writes.clear()
                if close:
                    client.connection_lost(None)

        run(200)  # warm-up; the answer must have reached the client
        run(1)
        if not client_t.data.endswith(b"\r\n\r\nok"):
            raise RuntimeError(f"unexpected answer {client_t.data!r}")
        best = float("inf")
        for _ in range(rounds):
            t0 = time.process_time()
            run(requests)
            best = min(best, time.process_time() - t0)
        out["us"] = best / requests * 1e6
        prof = cProfile.Profile()
        prof.enable()
        run(requests)
        prof.disable()
        stats = pstats.Stats(prof)
        rows = [
            (calls, f"{func[2]} ({func[0].rsplit('/', 1)[-1]}:{func[1]})")
            for func, (_, calls, *_) in stats.stats.items()  # type: ignore[attr-defined]
            if "fakes.py" not in func[0] and "hotpath.py" not in func[0] and not func[0].startswith("~")
        ]
        out["calls"] = sum(calls for calls, _ in rows) / requests
        for calls, name in sorted(rows, reverse=True)[:top]:
            print(f"    {calls / requests:5.1f}  {name}")

    try:
        world.loop.run_until_complete(main())
    finally:
        world.close()
        for sock in pair:
            sock.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="native", choices=("native", "llhttp", "h11"))
    ap.add_argument("--close", action="store_true", help="a new client connection per request")
    ap.add_argument("--lend", action="store_true", help="publish the pooled connection, as one of 2 workers")
    ap.add_argument("--requests", type=int, default=20000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=7, help="rounds; the best one is printed")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print the N most called functions")
    args = ap.parse_args()
    if args.profile:
        print(f"most called Python functions, calls per request ({args.engine}):")
    res = measure(args.engine, args.requests, args.rounds, args.profile, args.close, args.lend)
    kind = "Connection: close" if args.close else "keep-alive"
    if args.lend:
        kind += " (lending)"
    print(
        f"{args.engine}: {res['us']:.1f} CPU µs per {kind} request in-process (best of {args.rounds} x"
        f" {args.requests}), {res['calls']:.0f} Python calls per request"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
