"""Request bodies: memory and fairness of poolproxy and HAProxy on the same config, in one run.

    python -m tools.bodies [--only a,b,c] [--big-mb 600] [--chunked-mb 10] [--engine llhttp|h11]

Three scenarios; each starts poolproxy (``python -m proxy -f CFG -d`` from this tree) and then
HAProxy (``haproxy -db``) on the same generated configuration (only ``tune.h1-engine`` is
poolproxy's own) in front of the same origin, one proxy at a time, and prints both side by side.

The origin is written here, on raw sockets (``--serve-origin``, its own process, one thread per
connection): ``/delay/<ms>`` sleeps then answers 200; every other path reads the request body and
discards it (Content-Length or chunked, counting bytes and chunks; a run of 1-byte chunks is parsed
by a fast path so that the origin is never the bottleneck) and answers 200 with ``{bytes, chunks}``.
It reports every request head and every body end (bytes, chunks, complete or not) to this process.

Memory is the VmRSS of the proxy's worker processes (``/proc/PID/status``; poolproxy: the master's
children, summed; HAProxy: its one process), sampled every 50 ms.

(a) A big POST queued behind ``maxconn 1``. The only server has ``maxconn 1`` and ``timeout queue
    60s``. A ``GET /delay/<hold>`` takes the slot; once the origin has its head, a ``--big-mb`` MiB
    POST (Content-Length, streamed from a generator in 256 KiB writes) is sent and waits in the queue.
    Reported: worker RSS when idle (slot held, nothing queued), peak while queued, peak overall,
    growth, how much of the body the proxy had taken from the client when the slot was freed (this
    includes the kernel socket buffers, a few MiB on loopback), then the upload's status, the bytes
    the origin received, and RSS one second after the end.
(b) A ``--chunked-mb`` MiB upload in 1-byte chunks (``1\\r\\nX\\r\\n`` each, written 64 Ki chunks at a
    time) to the discarding origin, ``nbthread 1``. Meanwhile a probe on another keep-alive
    connection sends ``GET /__probe`` (an ``http-request return``, the origin is not involved) every
    50 ms; its latency before the upload (baseline) and during it (median, p99, max) says how long
    the one worker's event loop is held. Reported: total time, RSS growth, chunks and bytes the
    origin received (HAProxy merges chunks).
(c) Absolute-form request targets against the Host header, raw requests on fresh connections, with
    ``http-request return status 403 if { hdr(host) -i admin.internal }`` in the frontend: the
    status each proxy answers and the target and Host the origin received.

Every wait is bounded (``--timeout`` per proxy and scenario): a proxy that does not finish is
reported as "timed out after N s" with what it had done by then. Needs ``haproxy`` (Debian package).
Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench import ROOT, free_port, start, stop

MIB = 1024 * 1024
RECV = 1 << 20
READY_REQUEST = b"GET /__ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

# ---- the origin (its own process: python -m tools.bodies --serve-origin) -----------------------------

_ONE = b"1\r\nX\r\n"  # a 1-byte chunk as the client of (b) writes it
_ONE_BLOCK = _ONE * 4096
_ONE_RUN = re.compile(rb"(?:1\r\n.\r\n)+", re.DOTALL)  # any run of 1-byte chunks


class _Incomplete(Exception):
    """The peer closed (or broke the framing) in the middle of a message."""


class _Reader:
    """Buffered reads from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0

    def fill(self) -> None:
        if self.pos == len(self.buf) or self.pos > RECV:
            del self.buf[: self.pos]
            self.pos = 0
        data = self.sock.recv(RECV)
        if not data:
            raise _Incomplete
        self.buf += data

    def line(self, limit: int = 65536) -> bytes:
        """The next line without its CRLF."""
        while True:
            eol = self.buf.find(b"\r\n", self.pos)
            if eol >= 0:
                line = bytes(self.buf[self.pos : eol])
                self.pos = eol + 2
                return line
            if len(self.buf) - self.pos > limit:
                raise _Incomplete
            self.fill()

    def head(self) -> bytes | None:
        """The next message head (up to the empty line, excluded), None on a clean close before one."""
        while True:
            end = self.buf.find(b"\r\n\r\n", self.pos)
            if end >= 0:
                head = bytes(self.buf[self.pos : end])
                self.pos = end + 4
                return head
            if len(self.buf) - self.pos > 65536:
                raise _Incomplete
            try:
                self.fill()
            except _Incomplete:
                if self.pos == len(self.buf):
                    return None
                raise

    def skip(self, n: int, progress: list[int] | None = None) -> None:
        """Discard the next n bytes (counted in progress[0] as they come, if given)."""
        while n > 0:
            have = len(self.buf) - self.pos
            if have == 0:
                self.fill()
                continue
            take = min(have, n)
            self.pos += take
            n -= take
            if progress is not None:
                progress[0] += take

    def chunked(self, progress: list[int]) -> None:
        """Discard a chunked body; progress = [bytes, chunks] is updated as it goes."""
        while True:
            buf, pos = self.buf, self.pos
            start_pos = pos
            while buf.startswith(_ONE_BLOCK, pos):
                pos += len(_ONE_BLOCK)
            match = _ONE_RUN.match(buf, pos)
            if match is not None:
                pos = match.end()
            ones = (pos - start_pos) // len(_ONE)
            progress[0] += ones
            progress[1] += ones
            self.pos = pos
            line = self.line()
            size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                while self.line():  # trailers, up to the empty line
                    pass
                return
            self.skip(size)
            if self.line() != b"":
                raise _Incomplete
            progress[0] += size
            progress[1] += 1


class _Origin:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_id = 0
        self.next_conn = 0

    def emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        with self.lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def serve_conn(self, sock: socket.socket) -> None:
        with self.lock:
            self.next_conn += 1
            conn_id = self.next_conn
        reader = _Reader(sock)
        try:
            while True:
                head = reader.head()
                if head is None:
                    return
                if not self.serve_request(sock, reader, head, conn_id):
                    return
        except (_Incomplete, OSError, ValueError):
            return
        finally:
            sock.close()

    def serve_request(self, sock: socket.socket, reader: _Reader, head: bytes, conn_id: int) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = [*lines[0].split(" ", 2), "", ""][:3]
        headers = [[k.strip(), v.strip()] for k, _, v in (h.partition(":") for h in lines[1:])]
        names = {k.lower(): v for k, v in headers}
        with self.lock:
            self.next_id += 1
            req_id = self.next_id
        self.emit(
            {
                "ev": "head",
                "id": req_id,
                "conn": conn_id,
                "t": time.monotonic(),
                "method": method,
                "target": target,
                "version": version,
                "headers": headers,
            }
        )
        progress = [0, 0]  # bytes, chunks
        complete = False
        try:
            if "chunked" in names.get("transfer-encoding", "").lower():
                reader.chunked(progress)
            elif "content-length" in names:
                reader.skip(int(names["content-length"]), progress)
            complete = True
        finally:
            self.emit(
                {
                    "ev": "end",
                    "id": req_id,
                    "t": time.monotonic(),
                    "bytes": progress[0],
                    "chunks": progress[1],
                    "complete": complete,
                }
            )
        path = target.split("?", 1)[0]
        if path.startswith("http://"):
            path = "/" + path[7:].partition("/")[2]
        if path.startswith("/delay/"):
            time.sleep(int(path[7:] or 0) / 1000)
        body = json.dumps({"bytes": progress[0], "chunks": progress[1]}).encode()
        keep = version == "HTTP/1.1" and "close" not in names.get("connection", "").lower()
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (len(body), b"" if keep else b"Connection: close\r\n", body)
        )
        return keep


def serve_origin() -> int:
    """Listen on a free port, print ``READY <port>``, then one JSON line per request head and body end."""
    origin = _Origin()
    with socket.socket() as lsock:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        print(f"READY {lsock.getsockname()[1]}", flush=True)
        while True:
            sock, _ = lsock.accept()
            threading.Thread(target=origin.serve_conn, args=(sock,), daemon=True).start()


class OriginProc:
    """The origin process and what it reported (records by request id)."""

    def __init__(self, log: Path) -> None:
        cmd = [sys.executable, "-m", "tools.bodies", "--serve-origin"]
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, start_new_session=True
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            stop(self.proc)
            raise RuntimeError(f"origin did not start: {line!r}")
        self.port = int(line.split()[1])
        self.cond = threading.Condition()
        self.records: dict[int, dict[str, Any]] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            rec = json.loads(raw)
            with self.cond:
                if rec["ev"] == "head":
                    self.records[rec["id"]] = rec
                else:
                    self.records[rec["id"]].update(end=rec)
                self.cond.notify_all()

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        """The first record satisfying pred, waiting up to timeout for it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for rec in self.records.values():
                    if pred(rec):
                        return rec
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def stop(self) -> None:
        stop(self.proc)


# ---- proxies -----------------------------------------------------------------------------------------


def proxy_config(port: int, origin: int, *, engine: str | None, server: str = "", rules: str = "") -> str:
    """One frontend, one backend, one server; ``/__ready`` and ``/__probe`` answered by the proxy."""
    engine_line = f"tune.h1-engine {engine}" if engine else ""
    return f"""global
    nbthread 1
    {engine_line}
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout queue 60s
frontend fe
    bind 127.0.0.1:{port}
    {rules}
    acl local path /__ready /__probe
    http-request return status 200 content-type text/plain string ok if local
    default_backend be
backend be
    server s1 127.0.0.1:{origin} {server}
"""


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Target:
    name: str  # "poolproxy" or "haproxy"
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> list[int]:
        return _children(self.proc.pid) if self.name == "poolproxy" else [self.proc.pid]

    def rss(self) -> int:
        """KiB, the worker processes together."""
        return sum(rss_kib(pid) for pid in self.workers())

    def kill(self) -> None:
        """Stop the proxy (its whole process group); idempotent."""
        with contextlib.suppress(ProcessLookupError):
            stop(self.proc)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def running(name: str, cfg: str, tmp: Path, port: int) -> Iterator[Target]:
    """Start one proxy on cfg, wait until it answers ``/__ready``, stop it (its whole group) afterwards."""
    path = tmp / f"{name}.cfg"
    path.write_text(cfg)
    log = tmp / f"{name}.log"
    if name == "poolproxy":
        cmd = [sys.executable, "-m", "proxy", "-f", str(path), "-d"]
    else:
        cmd = ["haproxy", "-db", "-f", str(path)]
    proc = start(cmd, log)
    target = Target(name, port, proc, log)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{target.log_tail()}")
            with contextlib.suppress(OSError):
                if request(port, READY_REQUEST, 1).status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after 15 s:\n{target.log_tail()}")
            time.sleep(0.05)
        while not target.workers():
            time.sleep(0.05)
        yield target
    finally:
        target.kill()


# ---- clients -----------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int  # 0: no status line
    raw: bytes = b""
    error: str = ""

    def describe(self) -> str:
        if self.status:
            return str(self.status)
        return self.error or ("closed without a response" if not self.raw else f"garbage {self.raw[:40]!r}")


def read_reply(sock: socket.socket, deadline: float) -> Reply:
    """Read one response (Content-Length framed, or until close) before deadline."""
    buf = b""
    try:
        while True:
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m is not None and len(body) >= int(m[1]):
                    break
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data = sock.recv(65536)
            if not data:
                break
            buf += data
    except TimeoutError:
        return Reply(_status(buf), buf, f"timed out waiting for the response ({len(buf)} bytes of it)")
    except OSError as exc:
        if not buf:
            return Reply(0, buf, f"{type(exc).__name__}")
    return Reply(_status(buf), buf)


def _status(buf: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return int(m[1]) if m else 0


def request(port: int, data: bytes, timeout: float) -> Reply:
    """Send data on a new connection, return the response."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_reply(sock, deadline)


class Upload(threading.Thread):
    """One request whose body comes from a generator, sent before a deadline; `sent` counts body bytes."""

    def __init__(self, port: int, head: bytes, body: Iterator[bytes], deadline: float) -> None:
        super().__init__(daemon=True)
        self.port, self.head, self.body, self.deadline = port, head, body, deadline
        self.sent = 0
        self.send_error = ""
        self.t_start = self.t_sent = self.t_end = 0.0
        self.reply = Reply(0, b"", "not started")

    def run(self) -> None:
        self.t_start = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                try:
                    sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
                    sock.sendall(self.head)
                    for block in self.body:
                        sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
                        sock.sendall(block)
                        self.sent += len(block)
                    self.t_sent = time.monotonic()
                except TimeoutError:
                    self.send_error = "timed out"
                except OSError as exc:
                    self.send_error = type(exc).__name__
                if self.send_error == "timed out":
                    self.reply = Reply(0, b"", "timed out while sending")
                else:
                    self.reply = read_reply(sock, self.deadline)
        except OSError as exc:
            self.reply = Reply(0, b"", f"connect: {exc}")
        self.t_end = time.monotonic()


class Sampler(threading.Thread):
    """RSS of a target's workers every `interval` seconds: samples of (monotonic time, KiB)."""

    def __init__(self, target: Target, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), self.target.rss()))
            if self.done.wait(self.interval):
                return

    def finish(self) -> None:
        self.done.set()
        self.join()

    def peak(self, since: float = 0.0, until: float = float("inf")) -> int:
        return max((kib for t, kib in self.samples if since <= t <= until), default=0)


def zeros(total: int, block: int) -> Iterator[bytes]:
    """`total` zero bytes in blocks of `block` (one block object reused: nothing is held in memory)."""
    buf = bytes(block)
    while total > 0:
        if total < block:
            buf = buf[:total]
        total -= len(buf)
        yield buf


def one_byte_chunks(total: int, per_write: int = 65536) -> Iterator[bytes]:
    """`total` body bytes as 1-byte chunks, `per_write` chunks per block, then the last chunk."""
    block = _ONE * per_write
    while total > 0:
        n = min(total, per_write)
        total -= n
        yield block if n == per_write else _ONE * n
    yield b"0\r\n\r\n"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(title)
    width = max(len(r[0]) for r in rows) + 2
    col = max(24, *(len(r[1]) + 2 for r in rows))
    print(f"  {'':{width}}{'poolproxy':{col}}haproxy")
    for label, pp, ha in rows:
        print(f"  {label:{width}}{pp:{col}}{ha}")
    print()


def _body_end(t: Target, origin: OriginProc, mark: int) -> dict[str, Any] | None:
    """The body end of the first POST after request `mark`; if the origin is still reading it, the
    proxy is stopped first (the origin then reports what it got)."""
    rec = origin.wait(lambda r: r["id"] > mark and r["method"] == "POST", 1)
    if rec is None:
        return None
    if "end" not in rec:
        t.kill()
        origin.wait(lambda r: r is rec and "end" in r, 5)
    end: dict[str, Any] | None = rec.get("end")
    return end


# ---- (a) a big POST queued behind maxconn 1 ----------------------------------------------------------


def scenario_a(t: Target, origin: OriginProc, size: int, hold_ms: int, timeout: float) -> dict[str, str]:
    res: dict[str, str] = {}
    hold = f"GET /delay/{hold_ms} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    holder = Upload(t.port, hold, iter(()), time.monotonic() + timeout)
    mark = max(origin.records, default=0)
    holder.start()
    got = origin.wait(lambda r: r["id"] > mark and r["target"].startswith("/delay/"), 10)
    if got is None:
        res["error"] = "the slot holder never reached the origin"
        return res
    idle = t.rss()
    sampler = Sampler(t)
    sampler.start()
    head = f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
    up = Upload(t.port, head, zeros(size, 256 * 1024), time.monotonic() + timeout)
    up.start()
    holder.join(hold_ms / 1000 + timeout)
    t_release = got["t"] + hold_ms / 1000  # the origin answers the holder then: the slot frees
    time.sleep(max(0.0, t_release - time.monotonic()))
    sent_at_release = up.sent
    up.join(max(0.0, up.deadline - time.monotonic()) + 5)
    time.sleep(1.0)
    after = t.rss()
    sampler.finish()
    end = _body_end(t, origin, got["id"])
    peak_q = sampler.peak(until=t_release)
    peak = sampler.peak()
    res["idle RSS (slot held, none queued)"] = mib(idle)
    res["peak RSS while queued"] = f"{mib(peak_q)} (+{mib(peak_q - idle)})"
    res["peak RSS"] = mib(peak)
    res["growth (peak - idle)"] = mib(peak - idle)
    res["body taken from client by release"] = f"{sent_at_release / MIB:.1f} of {size / MIB:.0f} MiB"
    if up.reply.status:
        res["upload status"] = f"{up.reply.status} after {up.t_end - up.t_start:.1f} s"
    else:
        res["upload status"] = f"{up.reply.describe()} after {up.t_end - up.t_start:.1f} s"
    if up.send_error:
        res["upload status"] += f" (send: {up.send_error} after {up.sent / MIB:.1f} MiB)"
    if end is None:
        res["origin received"] = "no request"
    else:
        state = "complete" if end["complete"] else "incomplete (proxy stopped)"
        res["origin received"] = f"{end['bytes'] / MIB:.1f} MiB, {state}"
        if end["complete"]:
            res["origin: slot free -> body end"] = f"{end['t'] - t_release:.1f} s"
    res["RSS 1 s after the end"] = mib(after)
    res["holder status"] = holder.reply.describe()
    return res


# ---- (b) 1-byte chunks and a probe -------------------------------------------------------------------


class Probe(threading.Thread):
    """GET /__probe every `interval` on one keep-alive connection: (send time, latency) pairs."""

    def __init__(self, port: int, interval: float, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        self.deadline = deadline
        self.samples: list[tuple[float, float]] = []
        self.failures = 0
        self.done = threading.Event()

    def run(self) -> None:
        req = b"GET /__probe HTTP/1.1\r\nHost: x\r\n\r\n"
        sock: socket.socket | None = None
        next_at = time.monotonic()
        while not self.done.is_set():
            t0 = time.monotonic()
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.sendall(req)
                reply = read_reply(sock, self.deadline)
                if reply.status != 200:
                    raise OSError(reply.describe())
                self.samples.append((t0, time.monotonic() - t0))
            except OSError:
                self.failures += 1
                if sock is not None:
                    sock.close()
                sock = None
            next_at = max(next_at + self.interval, time.monotonic())
            self.done.wait(next_at - time.monotonic())
        if sock is not None:
            sock.close()

    def finish(self) -> None:
        self.done.set()
        self.join(max(0.0, self.deadline - time.monotonic()) + 5)

    def stats(self, since: float, until: float) -> str:
        lat = sorted(d * 1000 for t, d in self.samples if since <= t <= until)
        if not lat:
            return "no probe"
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return f"{statistics.median(lat):.1f} / {p99:.1f} / {lat[-1]:.1f} ms (n={len(lat)})"


def scenario_b(t: Target, origin: OriginProc, size: int, interval: float, timeout: float) -> dict[str, str]:
    res: dict[str, str] = {}
    mark = max(origin.records, default=0)
    idle = t.rss()
    sampler = Sampler(t)
    sampler.start()
    deadline = time.monotonic() + 1.0 + timeout
    probe = Probe(t.port, interval, deadline + 5)
    probe.start()
    time.sleep(1.0)  # baseline
    head = b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    up = Upload(t.port, head, one_byte_chunks(size), deadline)
    up.start()
    up.join(timeout + 5)
    t_end = up.t_end or time.monotonic()
    probe.finish()
    sampler.finish()
    end = _body_end(t, origin, mark)
    if up.reply.status:
        res["upload"] = f"{up.reply.status} in {t_end - up.t_start:.2f} s"
    else:
        res["upload"] = f"{up.reply.describe()} after {t_end - up.t_start:.1f} s"
    if up.send_error:
        res["upload"] += f" (send {up.send_error})"
    res["client sent"] = f"{up.sent / 6 / MIB:.2f} of {size / MIB:.0f} MiB" if up.send_error else "all"
    res["client send time"] = f"{up.t_sent - up.t_start:.2f} s" if up.t_sent else "-"
    res["idle RSS"] = mib(idle)
    res["peak RSS growth"] = mib(sampler.peak() - idle)
    res["probe before: median/p99/max"] = probe.stats(0, up.t_start)
    res["probe during: median/p99/max"] = probe.stats(up.t_start, t_end)
    res["probe failures"] = str(probe.failures)
    if end is None:
        res["origin received"] = "no request"
    else:
        state = "complete" if end["complete"] else "incomplete (proxy stopped)"
        res["origin received"] = f"{end['bytes']} bytes in {end['chunks']} chunks, {state}"
    return res


# ---- (c) absolute-form targets -----------------------------------------------------------------------

CASES: list[tuple[str, str, str | None]] = [  # (description, request line, Host header or None)
    ("same Host", "GET http://example.com/ HTTP/1.1", "example.com"),
    ("same host, other case", "GET http://example.com/ HTTP/1.1", "EXAMPLE.com"),
    ("Host with :80, target without port", "GET http://example.com/ HTTP/1.1", "example.com:80"),
    ("target with :80, Host without port", "GET http://example.com:80/ HTTP/1.1", "example.com"),
    ("other Host", "GET http://example.com/ HTTP/1.1", "other.example"),
    ("no Host", "GET http://example.com/ HTTP/1.1", None),
    ("userinfo in target", "GET http://user@example.com/ HTTP/1.1", "example.com"),
    ("HTTP/1.0, other Host", "GET http://example.com/ HTTP/1.0", "other.example"),
    ("ACL on Host; target admin.internal", "GET http://admin.internal/secret HTTP/1.1", "public.example"),
    ("ACL on Host; Host admin.internal", "GET http://public.example/secret HTTP/1.1", "admin.internal"),
]
C_RULES = "http-request return status 403 if { hdr(host) -i admin.internal }"


def _is_case(mark: int, case: int) -> Callable[[dict[str, Any]], bool]:
    def pred(r: dict[str, Any]) -> bool:
        return r["id"] > mark and any(k.lower() == "x-case" and v == str(case) for k, v in r["headers"])

    return pred


def scenario_c(t: Target, origin: OriginProc) -> list[str]:
    out = []
    for i, (_, line, host) in enumerate(CASES):
        mark = max(origin.records, default=0)
        data = f"{line}\r\n" + (f"Host: {host}\r\n" if host is not None else "")
        data += f"X-Case: {i}\r\nConnection: close\r\n\r\n"
        try:
            reply = request(t.port, data.encode(), 5)
        except OSError as exc:
            reply = Reply(0, b"", str(exc))
        rec = origin.wait(_is_case(mark, i), 0.3)
        if rec is None:
            seen = "origin: nothing"
        else:
            hosts = [v for k, v in rec["headers"] if k.lower() == "host"]
            shown = ", ".join(f"Host: {h}" for h in hosts) if hosts else "no Host"
            seen = f"origin got: {rec['method']} {rec['target']} {rec['version']} | {shown}"
        out.append(f"{reply.describe():>4}  {seen}")
    return out


# ---- main --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="a,b,c", help="scenarios to run, comma-separated (a,b,c)")
    ap.add_argument("--big-mb", type=int, default=600, help="(a) size of the queued POST, MiB")
    ap.add_argument("--hold-ms", type=int, default=5000, help="(a) how long the slot holder keeps the slot")
    ap.add_argument("--chunked-mb", type=float, default=10, help="(b) body size in 1-byte chunks, MiB")
    ap.add_argument("--probe-ms", type=float, default=50, help="(b) probe interval")
    ap.add_argument(
        "--engine", choices=("native", "llhttp", "h11"), help="poolproxy's tune.h1-engine (default: unset)"
    )
    ap.add_argument("--timeout", type=float, default=300, help="per proxy and scenario, seconds")
    ap.add_argument("--serve-origin", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_origin:
        return serve_origin()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if not only <= {"a", "b", "c"}:
        ap.error("--only takes a, b and c")
    if shutil.which("haproxy") is None:
        print("haproxy is required (apt-get install haproxy)", file=sys.stderr)
        return 1
    names = ("poolproxy", "haproxy")
    with tempfile.TemporaryDirectory(prefix="bodies-") as tmp:
        d = Path(tmp)
        origin = OriginProc(d / "origin.log")
        try:
            print(f"poolproxy tune.h1-engine: {args.engine or 'default'}; origin: raw sockets (this tool)\n")
            if "a" in only:
                size = args.big_mb * MIB
                res_a: dict[str, dict[str, str]] = {}
                for name in names:
                    port = free_port()
                    engine = args.engine if name == "poolproxy" else None
                    cfg = proxy_config(port, origin.port, engine=engine, server="maxconn 1")
                    with running(name, cfg, d, port) as t:
                        res_a[name] = scenario_a(t, origin, size, args.hold_ms, args.timeout)
                _print_results(
                    f"(a) {args.big_mb} MiB POST queued behind maxconn 1 (slot held {args.hold_ms} ms)", res_a
                )
            if "b" in only:
                size = int(args.chunked_mb * MIB)
                res_b: dict[str, dict[str, str]] = {}
                for name in names:
                    port = free_port()
                    cfg = proxy_config(port, origin.port, engine=args.engine if name == "poolproxy" else None)
                    with running(name, cfg, d, port) as t:
                        res_b[name] = scenario_b(t, origin, size, args.probe_ms / 1000, args.timeout)
                title = f"(b) {args.chunked_mb:g} MiB in 1-byte chunks, probe every {args.probe_ms:g} ms"
                _print_results(title + ", nbthread 1", res_b)
            if "c" in only:
                res_c: dict[str, list[str]] = {}
                for name in names:
                    port = free_port()
                    cfg = proxy_config(
                        port, origin.port, engine=args.engine if name == "poolproxy" else None, rules=C_RULES
                    )
                    with running(name, cfg, d, port) as t:
                        res_c[name] = scenario_c(t, origin)
                print(f"(c) absolute-form target vs Host; frontend rule: {C_RULES}")
                for i, (desc, line, host) in enumerate(CASES):
                    shown = f"Host: {host}" if host is not None else "(no Host)"
                    print(f"  [{i}] {desc}: {line} | {shown}")
                    for name in names:
                        print(f"        {name:10} {res_c[name][i]}")
        finally:
            origin.stop()
    return 0


def _print_results(title: str, res: dict[str, dict[str, str]]) -> None:
    keys: list[str] = []
    for r in res.values():
        keys += [k for k in r if k not in keys]
    rows = [(k, res["poolproxy"].get(k, "-"), res["haproxy"].get(k, "-")) for k in keys]
    print_table(title, rows)


if __name__ == "__main__":
    sys.exit(main())
