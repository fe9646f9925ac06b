"""poolproxy next to HAProxy and next to the floor, measured in one run: throughput, latency, CPU per request.

    python -m tools.bench [--mode keepalive|close] [--engine llhttp|h11] [--threads N] [--rounds 3]
                          [--seconds 5] [--connections 50] [--reuse always]
    python -m tools.bench --scaling 1,2,4       # the same, per thread count, relative to 1 thread
    python -m tools.bench --profile             # where a poolproxy worker spends its µs per request
    python -m tools.bench --idle-conns [10000]  # memory per idle client connection
    python -m tools.bench --h2 [--streams 10] [--h2-engine native|h2]  # HTTP/2 clients: h2load -c50 -m10

The contenders, all behind the same origin (an HAProxy frontend answering ``http-request return``,
``--origin-threads`` threads, so that the origin is cheap and never the one saturated):

- **poolproxy**, ``python -m proxy -f CFG`` from this tree, and **HAProxy** (``haproxy -db``) on the same
  generated configuration: one frontend, one backend, one server, ``http-reuse`` ``--reuse``,
  ``nbthread`` ``--threads``; ``tune.h1-engine`` ``--engine`` is given to poolproxy only.
- **the floor**, ``tools/floor.py``: a minimal uvloop + httptools relay (one upstream connection per
  client connection, bytes relayed both ways, httptools only to find where messages end; no features),
  with ``--threads`` worker processes. It is what a Python proxy can approach; poolproxy's cost above it
  is what its features and its structure cost.

Comparison (the default mode). ``wrk -t<--wrk-threads> -c<--connections> -d<--seconds>`` drives each
contender in turn, ``--rounds`` times, interleaved (poolproxy, haproxy, floor, poolproxy, ...) after a
1 s warm-up of each, so that a machine busy with something else does not favour one of them. For each
window: requests/s and mean latency (wrk's), and **CPU µs per request**: the utime + stime
(``/proc/PID/stat``, all threads) the contender's worker processes used over the window (poolproxy: every
worker, not the master; HAProxy: its one process; the floor: its workers) divided by the requests wrk
completed in it. CPU per request hardly depends on how much of the machine the contender got, so it is
the figure to watch on a shared machine. Printed: the median of the rounds with the spread [min-max],
the ratios to HAProxy and to the floor (the median of the per-round ratios: the figures of one round
are seconds apart), the origin's CPU per request while serving each contender, how much of the time
the contender's workers were runnable they spent waiting for a CPU (``schedstat``: a high share means a
crowded machine and req/s to be read with care), and every round.
``--mode close`` adds ``Connection: close`` to every request (one connection per request; the floor then
also opens one upstream connection per request, while the proxies reuse pooled ones).

``--h2`` drives poolproxy and HAProxy (the floor speaks no HTTP/2) with ``h2load -c<--connections>
-m<--streams> -D<--seconds>`` (h2c with prior knowledge: the frontend is ``bind ... proto h2`` in
the same generated configuration for both; the origin side stays HTTP/1), interleaved rounds as in
the comparison, and prints req/s, mean time per request, CPU µs/request and the ratio to HAProxy
(``--h2-engine``: poolproxy's ``tune.h2-engine``).

``--scaling 1,2,4`` runs the comparison for each thread count (``nbthread`` of both proxies, the floor's
workers; all restarted) and prints each contender's req/s relative to its own 1-thread (first listed)
figure. The machine's CPU count (``os.cpu_count()``) is printed: wrk, the origin and the contenders
all share those CPUs, so a machine with few cores stops scaling early for everyone.

``--rate R`` replaces wrk with ``hey -c<--connections>`` offering R requests/s in all (each connection
paced at R/connections; a connection waits for its answer, so never more than the contender can do):
with R below every contender's capacity, each one serves the same requests/s and CPU µs per request
compares them at equal load, without the saturation of a 2-core machine shared with the load
generator and the origin. ``--scaling 1,2 --rate 5000`` is how the cost of a second worker is
measured there (the last table: CPU per request relative to one thread). hey costs more CPU per
request than wrk: keep R well under the machine's capacity.

``--profile`` runs poolproxy alone (``nbthread`` 1, ``--mode`` and ``--engine`` as given; py-spy sees
no frame of the mypyc-compiled modules, so for a per-module breakdown run it under ``POOLPROXY_PURE=1``,
and use ``perf record -g -p WORKER`` for the compiled functions): one window
without the profiler (reference), then one while ``py-spy record -p WORKER_PID -f raw -r 1000
--full-filenames -d S`` samples the worker. Each non-idle sample's leaf frame is its self time. Printed:
µs per request per module (a file under ``proxy/``, ``uvloop``, ``asyncio``, ``stdlib``, ``other``;
third-party packages such as h11 are named) = (samples in that module / all samples) * (the worker's
CPU µs per request measured in the profiled window), sorted, and the top 15 functions the same way.
The time uvloop spends in its compiled code (polling, reading sockets, dispatching callbacks) shows no
Python frame of its own: it is found as samples whose leaf is the line calling ``run_forever`` and
counted as ``uvloop``; C functions called from Python (a transport's ``write``, httptools' parser)
count in the Python function that called them. Two distortions, both printed: a runnable worker
waiting for a CPU is not idle to py-spy, so that sample counts where the worker was preempted (often a
write that has just woken its peer; the share of that wait comes from ``schedstat``); and py-spy stops
the worker for each sample, so the profiled window is slower than the reference (``--profile-rate``
lowers the rate; ``--nonblocking`` samples without stopping the worker, at the price of samples py-spy
fails to read, which it drops). The raw
profile is kept (``--profile-out``, or a new file under the temporary directory; its path is printed
last).

``--idle-conns [N]`` (default 10000): poolproxy (``nbthread`` 1) and HAProxy (``nbthread`` 1), one after
the other, each with ``maxconn`` N+16 and ``timeout client 300s``. For each: warm up with 100
connections (one request each, then closed), read the worker's VmRSS (``/proc/PID/status``), open N
keep-alive connections, each making one ``GET /`` and reading the whole response (at most 100 in their
first request at a time), wait 1 s, read VmRSS again: (after - before) / N is the memory per idle
client connection (user space only: kernel socket buffers are not in RSS). Also printed: how many were
still open when measured, the time to open them, and RSS once they are all closed again. The tool
raises its RLIMIT_NOFILE (inherited by the proxies) up to the hard limit, and lowers N with a message
when that is not enough (HAProxy reserves two descriptors per ``maxconn``: a hard limit of 20000 allows
about 9960 connections). Every step is bounded by ``--idle-timeout`` seconds.

Needs ``wrk`` and ``haproxy`` (Debian packages), and ``py-spy`` for ``--profile`` (pip). Everything
listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tools.benchlib import (
    NAMES,
    ROOT,
    Contender,
    Sample,
    Stat,
    close_all,
    free_port,
    h2load,
    hey,
    measure,
    open_idle,
    origin_config,
    parse_raw_profile,
    proxy_config,
    rss_kib,
    show_latency,
    start,
    start_contender,
    stats,
    still_open,
    stop,
    wait_listening,
    wait_ready,
    wrk,
)

__all__ = ["ROOT", "free_port", "main", "origin_config", "proxy_config", "start", "stop", "wait_listening"]

IDLE_CONCURRENCY = 100
IDLE_SLACK = 16  # maxconn = N + this
FD_MARGIN = 80  # descriptors beyond 2 x maxconn: HAProxy's own; ours (proxy.limits: listeners + 64)
X = "\u00d7"  # the multiplication sign of the ratios


@contextlib.contextmanager
def lab(
    args: argparse.Namespace, names: tuple[str, ...], threads: int, maxconn: int = 0, h2: bool = False
) -> Iterator[tuple[list[Contender], list[int]]]:
    """The origin and the named contenders, running and ready; all stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        d = Path(tmp)
        origin_port = free_port()
        (d / "origin.cfg").write_text(origin_config(origin_port, args.origin_threads))
        procs = [start(["haproxy", "-db", "-f", str(d / "origin.cfg")], d / "origin.log")]
        try:
            wait_listening(origin_port)
            contenders = []
            for name in names:
                c = start_contender(
                    name, d, origin_port, threads, args.reuse, args.engine, maxconn, h2, args.h2_engine
                )
                contenders.append(c)
                procs.append(c.proc)
            for c in contenders:
                wait_ready(c, threads)
            yield contenders, [procs[0].pid]
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    stop(p)


def run_rounds(
    args: argparse.Namespace, contenders: list[Contender], origin_pids: list[int]
) -> dict[str, list[Sample]]:
    close = args.mode == "close"
    streams = args.streams if getattr(args, "h2", False) else 0
    rate = getattr(args, "rate", 0) or 0
    for c in contenders:  # warm-up: connections, pools, caches
        if rate:
            hey(c.port, args.connections, 1, rate, close)
        elif streams:
            h2load(c.port, args.connections, 1, streams)
        else:
            wrk(c.port, args.connections, 1, args.wrk_threads, close)
    samples: dict[str, list[Sample]] = {c.name: [] for c in contenders}
    for _ in range(args.rounds):
        for c in contenders:
            s = measure(
                c, origin_pids, args.seconds, args.connections, args.wrk_threads, close, streams, rate
            )
            if s.errors:
                print(f"  [{c.name}: the load generator reports {s.errors}]", file=sys.stderr)
            samples[c.name].append(s)
    return samples


def per_round_ratio(a: list[Sample], b: list[Sample], attr: str) -> float:
    return float(statistics.median(getattr(x, attr) / getattr(y, attr) for x, y in zip(a, b, strict=True)))


def engine_name(args: argparse.Namespace) -> str:
    from proxy import h1  # the default depends on which extensions are built

    return args.engine or f"{h1.DEFAULT} (default)"


def describe(args: argparse.Namespace, threads: int | str, rounds: int | None = None) -> str:
    mode = "keep-alive" if args.mode == "keepalive" else "Connection: close on every request"
    driver = f"wrk -t{args.wrk_threads} -c{args.connections}"
    if args.rate:
        driver = f"hey -c{args.connections} at {args.rate} req/s offered"
    return (
        f"{mode}; {driver},"
        f" {args.rounds if rounds is None else rounds} round(s) of {args.seconds:g} s;"
        f" nbthread {threads}; http-reuse {args.reuse}; poolproxy engine {engine_name(args)}"
    )


def machine_line(load_before: tuple[float, float, float]) -> str:
    after = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} CPUs (os.cpu_count()), shared by wrk, the origin and the proxy under"
        " test;"
        f" load average {load_before[0]:.2f} before, {after[0]:.2f} after"
    )


# ---- modes ----------------------------------------------------------------------------------------------


def compare(args: argparse.Namespace) -> int:
    load = os.getloadavg()
    with lab(args, NAMES, args.threads) as (contenders, origin_pids):
        samples = run_rounds(args, contenders, origin_pids)
    st = {name: stats(s) for name, s in samples.items()}
    print("poolproxy, HAProxy and the floor (tools.floor) behind one origin (HAProxy http-request return)")
    print(describe(args, args.threads) + f"; rounds interleave {', '.join(NAMES)}")
    print(machine_line(load))
    print()
    print(f"  median [min-max] of {args.rounds}   {'req/s':>22}  {'mean latency':>30}  {'CPU µs/req':>20}")
    for name in NAMES:
        s = st[name]
        lat = s["latency_us"]
        lat_text = show_latency(lat.median)
        if len(lat.values) > 1:
            lat_text += f" [{show_latency(min(lat.values))}-{show_latency(max(lat.values))}]"
        print(f"  {name:22}{s['rps'].show():>24}  {lat_text:>30}  {s['cpu_us'].show('{:.1f}'):>20}")
    print()
    head = f"req/s {X}HAProxy  {X}floor   CPU/req {X}HAProxy  {X}floor"
    print(f"  ratios (median of the per-round ratios)  {head}")
    for name in NAMES:
        row = [
            per_round_ratio(samples[name], samples[other], attr)
            for attr in ("rps", "cpu_us")
            for other in ("haproxy", "floor")
        ]
        print(f"  {name:40}{row[0]:14.3f}{row[1]:8.3f}{row[2]:18.3f}{row[3]:8.3f}")
    print()
    origin = ", ".join(f"{n} {st[n]['origin_cpu_us'].median:.1f}" for n in NAMES)
    print(f"  origin CPU µs/req while serving: {origin}")
    waits = ", ".join(f"{n} {st[n]['wait_share'].show('{:.0%}')}" for n in NAMES)
    print(f"  waiting for a CPU (schedstat), share of the time runnable: {waits}")
    print("  per round (req/s, CPU µs/req):")
    for i in range(args.rounds):
        cells = "   ".join(f"{n} {samples[n][i].rps:.0f} / {samples[n][i].cpu_us:.1f}" for n in NAMES)
        print(f"    {i + 1}: {cells}")
    print()
    ratio = per_round_ratio(samples["poolproxy"], samples["haproxy"], "rps")
    print(f"  poolproxy  {st['poolproxy']['rps'].median:10.0f} req/s  mean latency {lat_of(st, 'poolproxy')}")
    print(f"  haproxy    {st['haproxy']['rps'].median:10.0f} req/s  mean latency {lat_of(st, 'haproxy')}")
    print(f"  ratio poolproxy/haproxy = {ratio:.3f}")
    return 0


def compare_h2(args: argparse.Namespace) -> int:
    """poolproxy and HAProxy with HTTP/2 clients (h2load), interleaved rounds."""
    names = ("poolproxy", "haproxy")
    load = os.getloadavg()
    with lab(args, names, args.threads, h2=True) as (contenders, origin_pids):
        samples = run_rounds(args, contenders, origin_pids)
    st = {name: stats(s) for name, s in samples.items()}
    print("poolproxy and HAProxy with HTTP/2 clients (bind ... proto h2), behind one HTTP/1 origin")
    print(
        f"h2load -c{args.connections} -m{args.streams}, {args.rounds} round(s) of {args.seconds:g} s;"
        f" nbthread {args.threads}; http-reuse {args.reuse}; poolproxy engine {engine_name(args)},"
        f" h2 engine {args.h2_engine or 'default'}"
    )
    print(machine_line(load))
    print()
    heads = f"{'req/s':>22}  {'mean time/request':>30}  {'CPU µs/req':>20}"
    print(f"  median [min-max] of {args.rounds}   {heads}")
    for name in names:
        s = st[name]
        print(
            f"  {name:22}{s['rps'].show():>24}  {show_latency(s['latency_us'].median):>30}"
            f"  {s['cpu_us'].show('{:.1f}'):>20}"
        )
    print("  per round (req/s, CPU µs/req):")
    for i in range(args.rounds):
        cells = "   ".join(f"{n} {samples[n][i].rps:.0f} / {samples[n][i].cpu_us:.1f}" for n in names)
        print(f"    {i + 1}: {cells}")
    rps = per_round_ratio(samples["poolproxy"], samples["haproxy"], "rps")
    cpu = per_round_ratio(samples["poolproxy"], samples["haproxy"], "cpu_us")
    print()
    print(f"  ratio poolproxy/haproxy = {rps:.3f} (req/s), {cpu:.2f} (CPU µs/request)")
    return 0


def lat_of(st: dict[str, dict[str, Stat]], name: str) -> str:
    return show_latency(st[name]["latency_us"].median)


def scaling(args: argparse.Namespace, counts: list[int]) -> int:
    load = os.getloadavg()
    results: dict[int, dict[str, list[Sample]]] = {}
    for threads in counts:
        with lab(args, NAMES, threads) as (contenders, origin_pids):
            results[threads] = run_rounds(args, contenders, origin_pids)
    base = counts[0]
    print("scaling with the thread count: poolproxy, HAProxy and the floor behind one origin")
    print(describe(args, ",".join(map(str, counts))) + "; medians per thread count")
    print(machine_line(load))
    print(f"  {X}{base}: req/s relative to the same contender's {base}-thread median; µs/req: CPU/request")
    print()
    head = "".join(f"{n + ' req/s':>17}{X + str(base):>7}" for n in NAMES)
    print(f"  {'nbthread':>8}{head}{'pp/ha':>8}" + "".join(f"{n + ' µs/req':>17}" for n in NAMES))
    for threads in counts:
        med = {n: stats(results[threads][n]) for n in NAMES}
        cells = ""
        for n in NAMES:
            rps = med[n]["rps"].median
            cells += f"{rps:17.0f}{rps / stats(results[base][n])['rps'].median:7.2f}"
        ratio = med["poolproxy"]["rps"].median / med["haproxy"]["rps"].median
        cpu = "".join(f"{med[n]['cpu_us'].median:17.1f}" for n in NAMES)
        print(f"  {threads:8}{cells}{ratio:8.3f}{cpu}")
    print()
    print(f"  CPU µs/request relative to the same contender's {base}-thread median (1.00: none added):")
    for threads in counts:
        cpu_of = {n: stats(results[threads][n])["cpu_us"].median for n in NAMES}
        row = "   ".join(f"{n} {cpu_of[n] / stats(results[base][n])['cpu_us'].median:.2f}" for n in NAMES)
        print(f"    {threads}: {row}")
    print("  spread [min-max] of req/s per thread count:")
    for threads in counts:
        row = "   ".join(f"{n} {stats(results[threads][n])['rps'].show()}" for n in NAMES)
        print(f"    {threads}: {row}")
    return 0


def profile(args: argparse.Namespace) -> int:
    if shutil.which("py-spy") is None:
        print("py-spy is required for --profile (python3 -m pip install py-spy)", file=sys.stderr)
        return 1
    if args.profile_out is not None:
        out = args.profile_out
    else:
        fd, name = tempfile.mkstemp(prefix="poolproxy-pyspy-", suffix=".raw.txt")
        os.close(fd)
        out = Path(name)
    close = args.mode == "close"
    duration = math.ceil(args.seconds) + 1
    load = os.getloadavg()
    with lab(args, ("poolproxy",), 1) as (contenders, origin_pids):
        c = contenders[0]
        worker = c.workers()[0]
        wrk(c.port, args.connections, 1, args.wrk_threads, close)
        plain = measure(c, origin_pids, args.seconds, args.connections, args.wrk_threads, close)
        rate = str(args.profile_rate)
        cmd = ["py-spy", "record", "-p", str(worker), "-f", "raw", "-r", rate, "--full-filenames"]
        if args.nonblocking:
            cmd.append("--nonblocking")
        spy = subprocess.Popen(
            [*cmd, "-d", str(duration), "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            started = wait_output(spy, b"Sampling process", 10.0)
            if not started:
                print(f"py-spy did not start sampling: {spy_output(spy)}", file=sys.stderr)
                return 1
            prof = measure(c, origin_pids, args.seconds, args.connections, args.wrk_threads, close)
            spy.wait(duration + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        spy_text = spy_output(spy)
    data = parse_raw_profile(out.read_text())
    if data.samples == 0:
        print(f"py-spy recorded no sample: {spy_text}", file=sys.stderr)
        return 1
    us = prof.cpu_us
    print(f"py-spy profile of one poolproxy worker (pid {worker}), {describe(args, 1, rounds=1)}")
    print(machine_line(load))
    print(
        f"  without the profiler: {plain.rps:.0f} req/s, mean latency {show_latency(plain.latency_us)},"
        f" {plain.cpu_us:.1f} CPU µs/req"
    )
    print(
        f"  profiled ({args.profile_rate} Hz):   {prof.rps:.0f} req/s,"
        f" mean latency {show_latency(prof.latency_us)},"
        f" {us:.1f} CPU µs/req; {data.samples} non-idle samples ({spy_summary(spy_text)})"
    )
    print(
        f"  waiting for a CPU (schedstat): {prof.wait_share:.0%} of the worker's runnable time in the"
        f" profiled window, {plain.wait_share:.0%} without the profiler;\n  py-spy counts such a sample"
        " where the worker was preempted (often a write that woke its peer): a busy machine inflates those"
        " lines"
    )
    print()
    print(f"  self time per module, µs/request (share of samples {X} {us:.1f} µs)")
    for module, n in data.modules.most_common():
        print(f"    {module:44}{n / data.samples * us:8.2f} µs{100 * n / data.samples:7.1f} %")
    print(f"    {'total':44}{us:8.2f} µs  100.0 %")
    print()
    print("  top 15 functions (self), µs/request")
    for (func, module), n in data.functions.most_common(15):
        label = f"{func} ({module})"
        print(f"    {label:70}{n / data.samples * us:8.2f} µs{100 * n / data.samples:7.1f} %")
    print()
    print(f"raw profile (py-spy -f raw, collapsed stacks with full file names): {out}")
    return 0


def wait_output(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bool:
    """Read proc's output until marker shows up (True), it exits or timeout passes (False)."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            return False
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            return False
        seen += chunk
    return True


def spy_output(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    with contextlib.suppress(OSError, ValueError):
        return proc.stdout.read().decode(errors="replace").strip()
    return ""


def spy_summary(text: str) -> str:
    for line in text.splitlines():
        if "Samples:" in line:
            return "py-spy: " + line.split("Samples:", 1)[1].strip().replace(" Errors", ", errors")
    return "py-spy said nothing"


def raise_nofile(n: int) -> tuple[int, str]:
    """Raise RLIMIT_NOFILE (the proxies inherit it) for n idle connections; the n that fits.

    HAProxy reserves two descriptors per connection of its ``maxconn`` (a client side and a server
    side) plus a few of its own, and refuses to start when the limit is lower: that is the bound."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 2 * (n + IDLE_SLACK) + FD_MARGIN
    fit = (limit - FD_MARGIN) // 2 - IDLE_SLACK
    note = ""
    if fit < n:
        note = (
            f"  RLIMIT_NOFILE hard limit {hard}: HAProxy's maxconn needs 2 descriptors per connection,"
            f" so {fit} connections instead of {n}"
        )
        n = fit
    want = min(limit, 2 * (n + IDLE_SLACK) + FD_MARGIN)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return n, note


async def idle_one(c: Contender, n: int, timeout: float) -> dict[str, str]:
    worker = c.workers()[0]
    warm = await asyncio.wait_for(open_idle(c.port, IDLE_CONCURRENCY, IDLE_CONCURRENCY, 10), timeout)
    await close_all(warm)
    await asyncio.sleep(0.5)
    before = rss_kib(worker)
    t0 = time.monotonic()
    conns = await asyncio.wait_for(open_idle(c.port, n, IDLE_CONCURRENCY, 10), timeout)
    took = time.monotonic() - t0
    try:
        await asyncio.sleep(1.0)
        during = rss_kib(worker)
        alive = still_open(conns)
    finally:
        await close_all(conns)
    await asyncio.sleep(1.0)
    after = rss_kib(worker)
    return {
        "before": f"{before / 1024:.1f} MiB",
        f"with {n} idle": f"{during / 1024:.1f} MiB",
        "per connection": f"{(during - before) / max(n, 1):.2f} KiB",
        "still open": f"{alive}/{n}",
        "time to open": f"{took:.1f} s",
        "after closing": f"{after / 1024:.1f} MiB",
    }


def idle_conns(args: argparse.Namespace) -> int:
    n, note = raise_nofile(args.idle_conns)
    if n <= 0:
        print(note, file=sys.stderr)
        return 1
    results: dict[str, dict[str, str]] = {}
    with lab(args, ("poolproxy", "haproxy"), 1, maxconn=n + IDLE_SLACK) as (contenders, _):
        for c in contenders:
            try:
                results[c.name] = asyncio.run(idle_one(c, n, args.idle_timeout))
            except (TimeoutError, OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
                results[c.name] = {"error": f"{type(exc).__name__}: {exc}"[:60]}
    print(
        f"memory per idle client connection: {n} keep-alive connections per proxy, each past one"
        f" GET / (200) and idle; nbthread 1, poolproxy engine {engine_name(args)}"
    )
    if note:
        print(note)
    print("  VmRSS of the worker (HAProxy: its process); kernel socket buffers are not in it")
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print(f"  {'':12}" + "".join(f"{k:>18}" for k in keys))
    for name, r in results.items():
        print(f"  {name:12}" + "".join(f"{r.get(k, '-'):>18}" for k in keys))
    return 0 if all("error" not in r for r in results.values()) else 1


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and every option's default."""


def main() -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    ap.add_argument("--mode", choices=("keepalive", "close"), default="keepalive", help="wrk's requests")
    ap.add_argument(
        "--engine", choices=("native", "llhttp", "h11"), help="poolproxy's tune.h1-engine (None: unset)"
    )
    ap.add_argument(
        "--h2-engine", choices=("native", "h2"), help="poolproxy's tune.h2-engine with --h2 (None: unset)"
    )
    ap.add_argument("--threads", type=int, default=1, help="nbthread of both proxies, the floor's workers")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    ap.add_argument("--seconds", type=float, default=5, help="length of each measured window")
    ap.add_argument("--connections", type=int, default=50, help="wrk -c")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk -t")
    ap.add_argument(
        "--rate", type=int, default=0, metavar="REQ_S", help="hey at this offered load, not wrk (0: wrk)"
    )
    ap.add_argument("--reuse", default="always", help="http-reuse of both proxies")
    ap.add_argument("--origin-threads", type=int, default=1, help="nbthread of the HAProxy origin")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--scaling", metavar="1,2,4", help="the comparison for each of these thread counts")
    which.add_argument("--profile", action="store_true", help="py-spy breakdown of a worker's µs/request")
    which.add_argument(
        "--idle-conns", type=int, nargs="?", const=10000, metavar="N", help="memory per idle connection"
    )
    ap.add_argument("--profile-out", type=Path, help="where --profile keeps the raw profile")
    ap.add_argument("--profile-rate", type=int, default=1000, help="py-spy -r: samples per second")
    ap.add_argument(
        "--nonblocking", action="store_true", help="py-spy --nonblocking: sample without stopping the worker"
    )
    ap.add_argument("--idle-timeout", type=float, default=120, help="bound of each --idle-conns step, s")
    which.add_argument("--h2", action="store_true", help="HTTP/2 clients (h2load), poolproxy vs HAProxy")
    ap.add_argument("--streams", type=int, default=10, help="h2load -m: concurrent streams per connection")
    args = ap.parse_args()
    if args.rounds < 1 or args.seconds <= 0 or args.connections < args.wrk_threads:
        ap.error("need --rounds >= 1, --seconds > 0 and --connections >= --wrk-threads")
    if (args.profile or args.idle_conns is not None) and args.threads != 1:
        ap.error("--profile and --idle-conns run nbthread 1")
    if args.rate and (args.h2 or args.profile or args.idle_conns is not None or args.rate < 0):
        ap.error("--rate is for the comparison and --scaling (a positive req/s)")
    driver = ("h2load", "nghttp2-client") if args.h2 else ("hey", "hey") if args.rate else ("wrk", "wrk")
    for tool, package in (driver, ("haproxy", "haproxy")):
        if shutil.which(tool) is None:
            print(f"{tool} is required (apt-get install {package})", file=sys.stderr)
            return 1
    if args.h2:
        return compare_h2(args)
    if args.scaling:
        try:
            counts = [int(x) for x in args.scaling.split(",")]
        except ValueError:
            ap.error("--scaling takes thread counts: 1,2,4")
        return scaling(args, counts)
    if args.profile:
        return profile(args)
    if args.idle_conns is not None:
        return idle_conns(args)
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
