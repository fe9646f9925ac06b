"""The pieces of ``tools.bench``: processes, configurations, wrk, /proc readings, py-spy profiles.

Everything here listens on and connects to 127.0.0.1 only. ``tools.bench`` re-exports the helpers that
other tools import from it (``ROOT``, ``free_port``, ``wait_listening``, ``origin_config``, ``start``,
``stop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import linecache
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = str(ROOT / "proxy") + os.sep
STDLIB = sysconfig.get_paths()["stdlib"] + os.sep
CLK_TCK = os.sysconf("SC_CLK_TCK")
NAMES = ("poolproxy", "haproxy", "floor")
REQUEST = b"GET / HTTP/1.1\r\nHost: origin\r\n\r\n"

# ---- processes ----------------------------------------------------------------------------------------


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


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cpu_ticks(pids: Sequence[int]) -> int:
    """utime + stime of these processes (all their threads), in clock ticks."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total


def sched_ns(pids: Sequence[int]) -> tuple[int, int]:
    """Time on a CPU and time waiting for one (runnable, not running), summed over every thread of these
    processes, in ns (``/proc/PID/task/TID/schedstat``)."""
    run = wait = 0
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):  # a thread that just ended
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    fields = f.read().split()
                run += int(fields[0])
                wait += int(fields[1])
    return run, wait


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---- configurations -----------------------------------------------------------------------------------


def proxy_config(
    port: int,
    origin: int,
    threads: int,
    reuse: str,
    *,
    engine: str | None = None,
    maxconn: int = 0,
    timeout_client: str = "30s",
    h2: bool = False,
    h2_engine: str | None = None,
) -> str:
    """The configuration both proxies run (``engine`` and ``h2_engine``, poolproxy's own keywords, are
    for poolproxy only; ``h2``: the frontend speaks HTTP/2 only, ``bind ... proto h2``)."""
    extra = f"\n    tune.h1-engine {engine}" if engine else ""
    extra += f"\n    tune.h2-engine {h2_engine}" if h2_engine else ""
    extra += f"\n    maxconn {maxconn}" if maxconn else ""
    return f"""global
    nbthread {threads}{extra}
defaults
    mode http
    timeout connect 5s
    timeout client {timeout_client}
    timeout server 30s
    http-reuse {reuse}
frontend fe
    bind 127.0.0.1:{port}{" proto h2" if h2 else ""}
    default_backend be
backend be
    server s1 127.0.0.1:{origin}
"""


def origin_config(port: int, threads: int = 1) -> str:
    return f"""global
    nbthread {threads}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend origin
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "ok"
"""


@dataclass
class Contender:
    """One proxy under test: its process, its port, and which processes do its work."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> list[int]:
        # poolproxy and the floor: the master's (parent's) children; HAProxy -db: its one process
        return [self.proc.pid] if self.name == "haproxy" else children(self.proc.pid)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def start_contender(
    name: str,
    d: Path,
    origin: int,
    threads: int,
    reuse: str,
    engine: str | None,
    maxconn: int = 0,
    h2: bool = False,
    h2_engine: str | None = None,
) -> Contender:
    port = free_port()
    log = d / f"{name}.log"
    if name == "floor":
        cmd = [sys.executable, "-m", "tools.floor", "--listen", str(port), "--upstream", str(origin)]
        return Contender(name, port, start([*cmd, "--workers", str(threads)], log), log)
    cfg = d / f"{name}.cfg"
    timeout_client = "300s" if maxconn else "30s"  # the idle-connection mode keeps them open a while
    cfg.write_text(
        proxy_config(
            port,
            origin,
            threads,
            reuse,
            engine=engine if name == "poolproxy" else None,
            maxconn=maxconn,
            timeout_client=timeout_client,
            h2=h2,
            h2_engine=h2_engine if name == "poolproxy" else None,
        )
    )
    if name == "poolproxy":
        return Contender(name, port, start([sys.executable, "-m", "proxy", "-f", str(cfg)], log), log)
    return Contender(name, port, start(["haproxy", "-db", "-f", str(cfg)], log), log)


def wait_ready(c: Contender, threads: int, timeout: float = 20.0) -> None:
    """Listening, with all its workers forked (and, for poolproxy, reported ready)."""
    deadline = time.monotonic() + timeout
    expected = 1 if c.name == "haproxy" else threads
    while time.monotonic() < deadline and c.proc.poll() is None:
        with socket.socket() as s:
            listening = s.connect_ex(("127.0.0.1", c.port)) == 0
        ready = c.name != "poolproxy" or "workers ready" in c.log_tail(100000)
        if listening and ready and len(c.workers()) == expected:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{c.name} did not get ready ({len(c.workers())} workers):\n{c.log_tail()}")


# ---- wrk ----------------------------------------------------------------------------------------------

_UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


@dataclass
class WrkResult:
    rps: float
    latency_us: float
    requests: int
    errors: str  # wrk's "Socket errors" / "Non-2xx" lines, "" when none


def parse_wrk(out: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s|m|h)\b", out)
    reqs = re.search(r"(\d+) requests in", out)
    if rps is None or reqs is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    latency = float(lat.group(1)) * _UNIT_US[lat.group(2)] if lat else float("nan")
    errors = "; ".join(m.strip() for m in re.findall(r"^\s*(?:Socket errors|Non-2xx)[^\n]*", out, re.M))
    return WrkResult(float(rps.group(1)), latency, int(reqs.group(1)), errors)


def wrk(port: int, connections: int, seconds: float, threads: int = 1, close: bool = False) -> WrkResult:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s"]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return parse_wrk(out)


def parse_h2load(out: str) -> WrkResult:
    """h2load's summary as wrk's: req/s, mean time for request, requests done, failures."""
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out
    )
    lat = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b", out)
    if rps is None or done is None:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    latency = float(lat.group(1)) * _UNIT_US[lat.group(2)] if lat else float("nan")
    failed, errored = int(done.group(3)), int(done.group(4))
    errors = f"{failed} failed, {errored} errored" if failed or errored else ""
    return WrkResult(float(rps.group(1)), latency, int(done.group(2)), errors)


def h2load(port: int, connections: int, seconds: float, streams: int = 10) -> WrkResult:
    """``h2load -c<connections> -m<streams> -D<seconds>`` (h2c with prior knowledge)."""
    cmd = ["h2load", f"-c{connections}", f"-m{streams}", "-D", f"{seconds:g}", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    return parse_h2load(out)


@dataclass
class HeyResult:
    """hey's summary (tools.lab's clients, tools.bench --rate)."""

    ok: int  # 200 answers
    other: dict[int, int]  # status -> count, for any other status
    errors: int  # requests that got no answer (hey's error distribution)
    error_text: str  # its first lines
    rps: float
    latency_us: float = float("nan")  # the mean ("Average")


def parse_hey(out: str) -> HeyResult:
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors_part = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    error_lines = [line.strip() for line in errors_part.strip().splitlines() if line.strip()]
    errors = sum(int(m[1]) for line in error_lines if (m := re.match(r"\[(\d+)\]", line)))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    avg = re.search(r"Average:\s+([\d.]+) secs", out)
    return HeyResult(
        ok=codes.pop(200, 0),
        other=codes,
        errors=errors,
        error_text="; ".join(error_lines[:3]),
        rps=float(rps[1]) if rps else 0.0,
        latency_us=float(avg[1]) * 1e6 if avg else float("nan"),
    )


def hey_summary(out: str) -> WrkResult:
    """hey's summary as wrk's: req/s, mean latency, responses 200, the other answers and errors."""
    if "Requests/sec:" not in out:
        raise RuntimeError(f"unexpected hey output:\n{out}")
    res = parse_hey(out)
    other = sum(res.other.values())
    text = "; ".join(filter(None, (f"{other} non-200" if other else "", " ".join(res.error_text.split()))))
    return WrkResult(res.rps, res.latency_us, res.ok, text)


def hey(port: int, connections: int, seconds: float, rate: int, close: bool = False) -> WrkResult:
    """``hey -c<connections> -q<rate/connections> -z<seconds>``: an offered load of ``rate``
    requests/s in all (each connection waits for its answer: at most what the proxy can do)."""
    per_conn = max(rate / connections, 0.001)
    cmd = ["hey", "-c", str(connections), "-q", f"{per_conn:g}", "-z", f"{seconds:g}s"]
    if close:
        cmd.append("-disable-keepalive")
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return hey_summary(out)


# ---- one measurement ----------------------------------------------------------------------------------


@dataclass
class Sample:
    """One wrk window against one contender, with the CPU its workers (and the origin) used."""

    rps: float
    latency_us: float
    requests: int
    cpu_us: float  # the contender's worker processes, per completed request
    origin_cpu_us: float  # the origin, per completed request
    wait_share: float  # of the time the contender's workers were runnable, the share spent waiting for a CPU
    errors: str = ""


def measure(
    c: Contender,
    origin_pids: list[int],
    seconds: float,
    connections: int,
    wrk_threads: int,
    close: bool,
    h2_streams: int = 0,
    rate: int = 0,
) -> Sample:
    """One window of wrk (or of h2load with ``h2_streams`` streams per connection, or of hey at
    ``rate`` requests/s)."""
    pids = c.workers()
    before, origin_before, sched_before = cpu_ticks(pids), cpu_ticks(origin_pids), sched_ns(pids)
    if rate:
        res = hey(c.port, connections, seconds, rate, close)
    elif h2_streams:
        res = h2load(c.port, connections, seconds, h2_streams)
    else:
        res = wrk(c.port, connections, seconds, wrk_threads, close)
    after, origin_after, sched_after = cpu_ticks(pids), cpu_ticks(origin_pids), sched_ns(pids)
    run, wait = (a - b for a, b in zip(sched_after, sched_before, strict=True))
    if c.workers() != pids:
        changed = f"{pids} -> {c.workers()}"
        raise RuntimeError(f"{c.name}'s workers changed during the run ({changed}):\n{c.log_tail()}")
    n = max(res.requests, 1)
    return Sample(
        res.rps,
        res.latency_us,
        res.requests,
        (after - before) * 1e6 / CLK_TCK / n,
        (origin_after - origin_before) * 1e6 / CLK_TCK / n,
        wait / max(run + wait, 1),
        res.errors,
    )


@dataclass
class Stat:
    """Median and spread (min, max) of one figure over the rounds."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def show(self, fmt: str = "{:.0f}") -> str:
        if len(self.values) == 1:
            return fmt.format(self.median)
        lo, hi = min(self.values), max(self.values)
        return f"{fmt.format(self.median)} [{fmt.format(lo)}-{fmt.format(hi)}]"


def stats(samples: list[Sample]) -> dict[str, Stat]:
    return {
        "rps": Stat([s.rps for s in samples]),
        "latency_us": Stat([s.latency_us for s in samples]),
        "cpu_us": Stat([s.cpu_us for s in samples]),
        "origin_cpu_us": Stat([s.origin_cpu_us for s in samples]),
        "wait_share": Stat([s.wait_share for s in samples]),
    }


def show_latency(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us"


# ---- py-spy profiles ----------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def in_loop(path: str, line: int) -> bool:
    """Whether this leaf frame is the line that runs the event loop: the sample was taken in the loop's
    own compiled code (polling, reading sockets, dispatching callbacks), which has no Python frame."""
    source = linecache.getline(path, line)
    return "run_forever(" in source or "run_until_complete(" in source


def module_of(path: str, line: int) -> str:
    """The bucket a leaf frame's self time goes to."""
    if in_loop(path, line):
        return "uvloop"
    if path.startswith(PACKAGE):
        return "proxy/" + path[len(PACKAGE) :]
    if f"{os.sep}uvloop{os.sep}" in path:
        return "uvloop"
    if path.startswith(STDLIB + "asyncio" + os.sep):
        return "asyncio"
    if path.startswith(STDLIB) or path.startswith("<frozen"):
        return "stdlib"
    for marker in ("site-packages", "dist-packages"):
        if f"{os.sep}{marker}{os.sep}" in path:
            package = path.split(f"{os.sep}{marker}{os.sep}", 1)[1].split(os.sep, 1)[0]
            return f"other ({package})"
    return "other"


@dataclass
class Profile:
    samples: int
    modules: Counter[str]
    functions: Counter[tuple[str, str]]  # (function, module) -> samples


def parse_raw_profile(text: str) -> Profile:
    """Self samples per module and per function from py-spy's ``-f raw`` (collapsed stacks) output,
    recorded with ``--full-filenames``."""
    modules: Counter[str] = Counter()
    functions: Counter[tuple[str, str]] = Counter()
    total = 0
    for row in text.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = _FRAME.match(stack.rsplit(";", 1)[-1])
        if leaf is None:
            module, func = "other", stack.rsplit(";", 1)[-1]
        else:
            path, line = leaf["file"], int(leaf["line"])
            module, func = module_of(path, line), leaf["func"]
            if in_loop(path, line):
                func = "the event loop's compiled code"
        n = int(count)
        total += n
        modules[module] += n
        functions[func, module] += n
    return Profile(total, modules, functions)


# ---- idle client connections --------------------------------------------------------------------------


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _one_request(port: int, sem: asyncio.Semaphore, timeout: float) -> Conn:
    async with sem:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(REQUEST)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response {head[:60]!r}")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        await asyncio.wait_for(reader.readexactly(int(length[1]) if length else 0), timeout)
        return reader, writer


async def open_idle(port: int, n: int, concurrency: int, timeout: float) -> list[Conn]:
    """n keep-alive connections, each past one complete request and now idle (at most `concurrency`
    in their first request at a time). On any failure, those opened are closed and the error raised."""
    sem = asyncio.Semaphore(concurrency)
    tasks = [asyncio.ensure_future(_one_request(port, sem, timeout)) for _ in range(n)]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        for got in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(got, tuple):
                got[1].transport.abort()
        raise


def still_open(conns: list[Conn]) -> int:
    """How many the proxy has not closed (no EOF seen)."""
    return sum(1 for reader, writer in conns if not reader.at_eof() and not writer.transport.is_closing())


async def close_all(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.transport.abort()
    await asyncio.sleep(0.1)
