"""Access logs end to end: the ``log`` line's facility and level (Debian's two stock lines do not log
each request twice), the bytes field counting the response head, ``option dontlognull``, the ``CR--``
``<BADREQ>`` lines of connections that send nothing or half a request, and a request's line beside
HAProxy's for the same request on the same config."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import MakeProxy, Origin, free_port, http_get, wait_for
from test_e2e_cli import ask

from proxy.log import LogSink
from proxy.shmdump import find_newest, open_table

pytestmark = pytest.mark.e2e

HAPROXY = shutil.which("haproxy")


class Syslog:
    """A Unix datagram socket collecting syslog messages."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.got: list[str] = []

    def read(self) -> list[str]:
        while True:
            try:
                self.got.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return self.got


@pytest.fixture
def logdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pplog", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def config(port: int, port2: int, origin: int, targets: str) -> str:
    return f"""\
global
    nbthread 2
{targets}

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 1s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

frontend quiet
    bind 127.0.0.1:{port2}
    option dontlognull
    default_backend be

backend be
    server s1 127.0.0.1:{origin}
"""


def close_at_once(port: int, data: bytes = b"") -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        if data:
            s.sendall(data)


def test_levels_facilities_and_null_connections(make_proxy: MakeProxy, origin: Origin, logdir: Path) -> None:
    port, port2 = free_port(), free_port()
    local0, local1 = Syslog(logdir / "a.sock"), Syslog(logdir / "b.sock")
    targets = f"    log {logdir}/a.sock local0\n    log {logdir}/b.sock local1 notice"  # Debian's two lines
    make_proxy(config(port, port2, origin.port, targets), ports=[port, port2], workers=2)
    assert http_get(port, "/size/1000").status == 200
    close_at_once(port)  # nothing sent: CR-- <BADREQ>, 400
    close_at_once(port2)  # the same under dontlognull: not logged
    close_at_once(port2, b"GET / HTTP/1.1\r\n")  # half a head: logged even under dontlognull
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # nothing, until 408
        assert s.recv(4096).startswith(b"HTTP/1.1 408")
    lines = wait_for(lambda: len(local0.read()) >= 4 and local0.read(), message="four lines")
    assert local1.read() == []  # a notice target gets no request line (they are info)
    assert all(line.startswith("<134>") for line in lines)  # local0 (16) * 8 + info (6)
    req = next(line for line in lines if '"GET /size/1000 HTTP/1.1"' in line)
    nbytes = int(req.split('"')[0].split()[-6])  # status, then bytes
    assert nbytes > 1000  # the body and the head
    bad = [line for line in lines if "<BADREQ>" in line]
    assert len(bad) == 3
    (timeout,) = [line for line in bad if " 408 " in line]  # Ta: the second it waited, as HAProxy's
    assert re.search(r" fe fe/<NOSRV> -1/-1/-1/-1/(\d+) 408 \d+ - - cR-- ", timeout)
    assert int(re.search(r"-1/-1/-1/-1/(\d+) 408", timeout).group(1)) >= 1000  # type: ignore[union-attr]
    assert any(" fe fe/<NOSRV> -1/-1/-1/-1/0 400 0 - - CR-- " in line for line in bad)
    assert any(" quiet quiet/<NOSRV> -1/-1/-1/-1/0 400 0 - - CR-- " in line for line in bad)
    time.sleep(0.2)
    assert len(local0.read()) == 4  # nothing more: the quiet frontend's empty connection stayed silent


def test_feconn_counts_every_worker(make_proxy: MakeProxy, origin: Origin, logdir: Path) -> None:
    """Two idle client connections held open (whichever workers took them): the next request's
    line says 3 connections on the frontend, counted across workers."""
    port, port2 = free_port(), free_port()
    sink = Syslog(logdir / "a.sock")
    make_proxy(config(port, port2, origin.port, f"    log {logdir}/a.sock local0"), ports=[port, port2],
               workers=2)  # fmt: skip
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        for s in held:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        assert http_get(port, "/").status == 200
        lines = wait_for(lambda: len(sink.read()) >= 3 and sink.read(), message="three lines")
        conns = lines[-1].split('"')[0].split()[-2]  # actconn/feconn/beconn/srv_conn/retries
        assert conns.split("/")[:2] == ["3", "3"], lines[-1]
    finally:
        for s in held:
            s.close()


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_a_line_beside_haproxys(make_proxy: MakeProxy, origin: Origin, logdir: Path) -> None:
    port, port2, hport, hport2 = free_port(), free_port(), free_port(), free_port()
    ours, theirs = Syslog(logdir / "o.sock"), Syslog(logdir / "h.sock")
    targets = f"    log {logdir}/o.sock local0"
    proxy = make_proxy(config(port, port2, origin.port, targets), ports=[port, port2], workers=2)
    name = find_newest(proxy.pid)
    assert name is not None
    table = open_table(name)
    cfg = logdir / "h.cfg"
    hsock = logdir / "hs.sock"
    targets = f"    log {logdir}/h.sock local0\n    stats socket {hsock} level admin"
    cfg.write_text(config(hport, hport2, origin.port, targets))
    hap = subprocess.Popen([str(HAPROXY), "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: hsock.exists())
        received = {}
        for p in (port, hport):
            received[p] = raw_get(p, "/size/1000")
            # the request's connection is gone from the counts first (every worker's, HAProxy's)
            if p == port:
                wait_for(lambda: table.actconn() == 0)
            else:
                wait_for(lambda: "CurrConns: 0\n" in ask(str(hsock), "show info\n"))
            close_at_once(p)

        def pair(sink: Syslog) -> list[str]:  # the request's line, then the empty connection's
            lines = sink.read()
            req = [line for line in lines if "/size/1000" in line]
            bad = [line for line in lines if "<BADREQ>" in line]
            return [req[0], bad[-1]] if req and bad else []

        o_lines = wait_for(lambda: pair(ours))
        h_lines = wait_for(lambda: pair(theirs))
        for o, h in zip(o_lines, h_lines, strict=True):
            o_f, h_f = _fields(o), _fields(h)
            # the header's priority, the frontend/backend/server, status, termination, connection
            # counts and request line are the same
            assert o_f["pri"] == h_f["pri"] == "<134>"
            for k in ("names", "status", "term", "queues", "request"):
                assert o_f[k] == h_f[k], (k, o, h)
            assert o_f["conns"].split("/")[:2] == h_f["conns"].split("/")[:2], (o, h)  # actconn/feconn
        # bytes: poolproxy logs what the client received, head and body; HAProxy counts its internal
        # form of the head (3 bytes more on these responses)
        assert int(_fields(o_lines[0])["bytes"]) == received[port]
        assert abs(int(_fields(h_lines[0])["bytes"]) - received[hport]) <= 4
    finally:
        hap.terminate()
        hap.wait(5)


def raw_get(port: int, path: str) -> int:
    """One keep-alive request; the bytes of its whole response (Content-Length framing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += s.recv(65536)
        return len(head) + 4 + length


_LINE = re.compile(
    r"(?P<pri><\d+>).*?: \S+ \[[^]]+\] (?P<names>\S+ \S+) (?P<timers>\S+) (?P<status>\d+) (?P<bytes>\d+)"
    r" - - (?P<term>\S+) (?P<conns>\S+) (?P<queues>\S+) \"(?P<request>[^\"]*)\""
)


def _fields(line: str) -> dict[str, str]:
    m = _LINE.search(line)
    assert m is not None, line
    return m.groupdict()


def test_log_sink_levels_and_formats(logdir: Path) -> None:
    """Unit level: max level, min level, facility and every format's header."""
    from proxy.config.model import LogTarget

    sock = Syslog(logdir / "u.sock")
    path = str(logdir / "u.sock")
    LogSink([LogTarget(path, facility="local1", level="notice")]).emit("dropped")  # info > notice
    LogSink([LogTarget(path, facility="local1", level="notice")]).emit("kept", "err")
    LogSink([LogTarget(path, facility="daemon", minlevel="notice")]).emit("capped", "emerg")  # -> notice
    for fmt in ("raw", "short", "priority", "rfc5424", "timed", "iso", "local", "rfc3164"):
        LogSink([LogTarget(path, format=fmt)], tag="t", hostname="h").emit(fmt)
    LogSink([LogTarget(path, length=90)]).emit("x" * 200)
    got = sock.read()
    assert got[0].startswith("<139>") and got[0].endswith(": kept")  # local1 (17) * 8 + err (3)
    assert got[1].startswith("<29>") and got[1].endswith(": capped")  # daemon (3) * 8 + notice (5)
    by_fmt = dict(zip(("raw", "short", "priority", "rfc5424", "timed", "iso", "local", "rfc3164"), got[2:10],
                      strict=True))  # fmt: skip
    assert by_fmt["raw"] == "raw" and by_fmt["short"] == "<6>short" and by_fmt["priority"] == "<134>priority"
    assert re.fullmatch(r"<134>1 \d{4}-\d\d-\d\dT\S+ h t \d+ - - rfc5424", by_fmt["rfc5424"])
    assert re.fullmatch(r"<6>\d{4}-\d\d-\d\dT\S+ timed", by_fmt["timed"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\S+ iso", by_fmt["iso"])
    stamp = r"\w{3} (?: [1-9]|[1-3]\d) \d\d:\d\d:\d\d"  # RFC 3164's day: "Dec  1", never "Dec 01"
    assert re.fullmatch(rf"<134>{stamp} t\[\d+\]: local", by_fmt["local"])
    assert re.fullmatch(rf"<134>{stamp} h t\[\d+\]: rfc3164", by_fmt["rfc3164"])
    assert len(got[10]) == 90


def test_log_sink_udp_prefixes_and_ports() -> None:
    """``udp@``/``ipv4@`` targets and a host name reach a UDP listener (the prefix was taken for
    part of the host name, and every line was lost)."""
    from proxy.config.model import LogTarget

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        port = rx.getsockname()[1]
        for target in (f"udp@127.0.0.1:{port}", f"ipv4@127.0.0.1:{port}", f"localhost:{port}"):
            LogSink([LogTarget(target, format="raw")]).emit(target)
            assert rx.recv(4096).decode() == target


def test_log_sink_never_raises_into_the_request() -> None:
    """Whatever the send raises (an OverflowError for a bad port used to escape into the request
    that logged, failing it and leaking its counters), ``emit`` swallows it."""
    from proxy.config.model import LogTarget

    sink = LogSink([LogTarget("127.0.0.1:514", format="raw")])

    class Broken:
        def sendto(self, data: bytes, addr: object) -> int:
            raise OverflowError("sendto(): port must be 0-65535")

    sink.targets[0].sock = Broken()  # type: ignore[assignment]
    sink.emit("a line")  # must not raise
