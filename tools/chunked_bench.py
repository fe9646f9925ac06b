"""Cost of decoding a chunked request body, per chunk scanner (``proxy.h1.bodies``'s C or Python).

    python -m tools.chunked_bench [--body-mb 10] [--chunk 1] [--piece 262144] [--engine llhttp]

Builds one request whose body is ``--body-mb`` MiB sent as ``--chunk``-byte chunks, then, for each
scanner in a fresh interpreter (``POOLPROXY_CHUNKED``, so that peak RSS is its own), feeds it to a
request parser ``--piece`` bytes at a time, as a worker's reads would, and checks the body that
comes out. Prints, per scanner: the total decode time, the time of the slowest and the median feed
(how long one upload holds the event loop per read), Data events, and the peak RSS while decoding
next to the RSS before it (which holds the wire bytes; the peak is reset once they are built, where
Linux allows). Runs on the CPU only; nothing listens.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wire(body_mb: int, chunk: int) -> tuple[bytes, int]:
    """The request and its body length. Every chunk is ``chunk`` bytes of one repeated pattern."""
    size = body_mb << 20
    count, tail = divmod(size, chunk)
    one = b"%x\r\n%s\r\n" % (chunk, b"x" * chunk)
    parts = [b"POST /upload HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n", one * count]
    if tail:
        parts.append(b"%x\r\n%s\r\n" % (tail, b"x" * tail))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts), size


def rss_mib() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in MiB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def reset_peak_rss() -> None:
    """Make the peak RSS the current one (Linux clear_refs); left as is where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def measure(args: argparse.Namespace) -> None:
    """One scanner (chosen by the environment), in this process: print one result line."""
    from proxy.h1 import engine
    from proxy.message import Data, EndOfMessage

    # The scanners' module: ``proxy.h1.bodies``, or ``proxy.h1.strict`` in a tree from before it.
    scanners = "proxy.h1.bodies" if importlib.util.find_spec("proxy.h1.bodies") else "proxy.h1.strict"
    backend = getattr(importlib.import_module(scanners), "CHUNK_BACKEND", "before")  # "before": no scanners
    data, size = wire(args.body_mb, args.chunk)
    gc.collect()
    reset_peak_rss()
    rss_before, _ = rss_mib()
    parser = engine(args.engine).request_parser()
    got = events = 0
    ended = False
    feeds: list[float] = []
    view = memoryview(data)
    start = time.perf_counter()
    for off in range(0, len(data), args.piece):
        t0 = time.perf_counter()
        out = parser.feed(bytes(view[off : off + args.piece]))
        feeds.append(time.perf_counter() - t0)
        for event in out:
            if isinstance(event, Data):
                got += len(event.data)
                events += 1
            ended |= isinstance(event, EndOfMessage)
    total = time.perf_counter() - start
    if got != size or not ended:
        raise SystemExit(f"{backend}: decoded {got} of {size} body bytes, ended={ended}")
    _, peak = rss_mib()
    print(
        f"{backend:>6}: {total:8.3f} s total, feed max {max(feeds) * 1e3:8.2f} ms, "
        f"median {statistics.median(feeds) * 1e3:8.2f} ms over {len(feeds)} feeds, "
        f"{events} Data, peak RSS {peak} MiB while decoding (RSS before: {rss_before} MiB)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--body-mb", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=1, help="bytes of payload per chunk")
    ap.add_argument("--piece", type=int, default=256 * 1024, help="bytes per feed() call")
    ap.add_argument("--engine", default="llhttp")
    ap.add_argument("--scanners", default="c,python", help="comma-separated: c, python")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the source tree to import proxy from")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        measure(args)
        return
    request, _ = wire(args.body_mb, args.chunk)
    print(
        f"{args.body_mb} MiB body in {args.chunk}-byte chunks: {len(request) / 2**20:.1f} MiB on the "
        f"wire, fed {args.piece} bytes at a time to {args.engine}"
    )
    del request
    argv = [f"--body-mb={args.body_mb}", f"--chunk={args.chunk}", f"--piece={args.piece}"]
    argv.append(f"--engine={args.engine}")
    for name in args.scanners.split(","):
        env = dict(os.environ, POOLPROXY_CHUNKED=name)
        env["PYTHONPATH"] = str(args.tree)  # the child runs as a script: proxy comes from there
        cmd = [sys.executable, __file__, *argv, "--child"]
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, timeout=600)


if __name__ == "__main__":
    main()
