"""The counting origin (tools/origin.py) against real clients: the e2e tests trust what it counts and sends.

Each test gets a fresh origin process (the ``origin`` fixture), so counters and connection ids start at 0/1.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import harness
import pytest
from harness import (
    KeepAliveClient,
    Origin,
    Proxy,
    free_port,
    group_members,
    http_get,
    leaked_processes,
    raw_exchange,
    wait_for,
)

PATTERN = bytes(range(256)) * 256  # byte i of every generated body is i % 256


def expected_body(size: int) -> bytes:
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def head_of(raw: bytes) -> tuple[str, dict[str, str]]:
    """Status line and lowercase-keyed headers of a raw response (first response only)."""
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1")
    status, *lines = head.split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def test_keepalive_requests_share_one_counted_connection(origin: Origin) -> None:
    with KeepAliveClient(origin.port) as client:
        responses = [client.get("/") for _ in range(3)]
        assert client.connects == 1
    assert [r.status for r in responses] == [200, 200, 200]
    assert [r.body for r in responses] == [b"", b"", b""]
    assert [r.headers["Content-Length"] for r in responses] == ["0", "0", "0"]
    assert [r.headers["X-Conn-Id"] for r in responses] == ["1", "1", "1"]
    assert [r.headers["X-Req-Seq"] for r in responses] == ["1", "2", "3"]
    wait_for(lambda: origin.stats()["open"] == 0, message="connection closed")
    stats = origin.stats()
    assert stats == {
        "connections": 1, "open": 0, "max_open": 1, "requests": 3, "active": 0, "max_active": 1,
        "h2_connections": 0, "h2_max_streams": 0,
    }  # fmt: skip


def test_one_shot_requests_count_one_connection_each(origin: Origin) -> None:
    responses = [http_get(origin.port, "/anything?query=ignored") for _ in range(3)]
    assert [r.status for r in responses] == [200, 200, 200]
    assert [r.headers["X-Conn-Id"] for r in responses] == ["1", "2", "3"]
    assert [r.headers["X-Req-Seq"] for r in responses] == ["1", "1", "1"]
    stats = origin.stats()
    assert (stats["connections"], stats["requests"], stats["active"]) == (3, 3, 0)


def test_stats_port_is_not_counted_and_reset_keeps_ids_unique(origin: Origin) -> None:
    for _ in range(3):
        origin.stats()
    assert origin.stats()["connections"] == 0
    http_get(origin.port, "/")
    assert origin.stats()["requests"] == 1
    with KeepAliveClient(origin.port) as client:
        assert client.get("/").headers["X-Conn-Id"] == "2"
        after = origin.reset()
        # The keep-alive connection is still open: totals restart at 0, peaks at what is open now.
        assert after == {
            "connections": 0,
            "open": 1,
            "max_open": 1,
            "requests": 0,
            "active": 0,
            "max_active": 0,
            "h2_connections": 0,
            "h2_max_streams": 0,
        }
    assert http_get(origin.port, "/").headers["X-Conn-Id"] == "3"
    assert origin.stats()["requests"] == 1


def test_echo_reports_the_request_as_received(origin: Origin) -> None:
    status, headers, body = http_get(
        origin.port, "/echo?x=1", method="POST", body=b"hello", headers={"X-Mixed-Case": "v1"}
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    echo = json.loads(body)
    assert echo["method"] == "POST"
    assert echo["target"] == "/echo?x=1"
    assert echo["http_version"] == "1.1"
    assert echo["body_len"] == 5
    assert ["X-Mixed-Case", "v1"] in echo["headers"]
    assert ["Connection", "close"] in echo["headers"]
    host, port = echo["peer"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0


def test_size_streams_50mb_with_bounded_memory(origin: Origin) -> None:
    size = 50 * 1024 * 1024
    rss_before = origin.rss_kib()
    peak = rss_before
    with socket.create_connection(("127.0.0.1", origin.port), timeout=10) as sock:
        # A small receive buffer keeps the client slower than the origin's producer: without backpressure
        # the whole body would pile up in the origin's memory.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /size/%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, body_start = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Length: %d" % size in head
        # Backpressure: while this client reads nothing, the response stays in progress; a producer that
        # ignored it would have finished writing long before another request round trip completes.
        assert http_get(origin.port, "/").status == 200
        assert origin.stats()["active"] == 1
        received = len(body_start)
        assert body_start == PATTERN[: len(body_start)]
        reads = 0
        while received < size:
            chunk = sock.recv(min(65536, size - received))
            assert chunk, f"closed after {received} bytes"
            offset = received % len(PATTERN)
            assert chunk == (PATTERN[offset:] + PATTERN)[: len(chunk)], f"wrong bytes at {received}"
            received += len(chunk)
            reads += 1
            if reads % 16 == 0:
                peak = max(peak, origin.rss_kib())
    growth_mib = (peak - rss_before) / 1024
    assert growth_mib < 20, f"origin RSS grew by {growth_mib:.1f} MiB while streaming 50 MiB"
    assert origin.stats()["requests"] == 2


def test_chunked_and_head(origin: Origin) -> None:
    with KeepAliveClient(origin.port) as client:
        chunked = client.get("/chunked/200000")
        assert chunked.status == 200
        assert chunked.headers["Transfer-Encoding"] == "chunked"
        assert chunked.body == expected_body(200000)
        head = client.request("HEAD", "/size/1000")
        assert (head.status, head.headers["Content-Length"], head.body) == (200, "1000", b"")
        empty = client.get("/chunked/0")
        assert (empty.status, empty.body) == (200, b"")
        assert client.connects == 1
    # HEAD on the wire: the head only, then the next response on the same connection.
    raw = raw_exchange(
        origin.port,
        b"HEAD /size/5 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /size/5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 5" in first
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"\r\n\r\n" + expected_body(5))


def test_pipelined_requests_are_answered_in_order(origin: Origin) -> None:
    request = b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n"
    raw = raw_exchange(origin.port, request * 2 + b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n")
    assert raw.count(b"HTTP/1.1 200 ") == 3
    assert [line for line in raw.split(b"\r\n") if line.startswith(b"X-Req-Seq")] == [
        b"X-Req-Seq: 1",
        b"X-Req-Seq: 2",
        b"X-Req-Seq: 3",
    ]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_upload_honours_expect_100_continue_with_curl(origin: Origin, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000 + b"tail"
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    url = f"http://127.0.0.1:{origin.port}/upload"
    for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
        result = subprocess.run(
            ["curl", "-sS", "-v", "-T", str(upload), "-H", "Expect: 100-continue", *extra, url],
            capture_output=True,
            timeout=10,
            check=True,
        )
        assert b"< HTTP/1.1 100 Continue" in result.stderr
        assert json.loads(result.stdout) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_upload_sends_100_continue_before_the_body_arrives(origin: Origin) -> None:
    with socket.create_connection(("127.0.0.1", origin.port), timeout=5) as sock:
        sock.sendall(b"PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        reply = sock.recv(4096)
    assert json.loads(reply.partition(b"\r\n\r\n")[2]) == {
        "bytes": 5,
        "sha256": hashlib.sha256(b"hello").hexdigest(),
    }


def test_ntlm_authenticates_only_the_challenged_connection(origin: Origin) -> None:
    with KeepAliveClient(origin.port) as client:
        challenge = client.get("/ntlm")
        assert challenge.status == 401
        assert challenge.headers["WWW-Authenticate"] == "NTLM TlRMTVNTUAACAAAA"
        auth = client.get("/ntlm", headers={"Authorization": "NTLM TlRMTVNTUAADAAAA"})
        assert auth.status == 200
        assert auth.headers["X-Auth-Conn"] == auth.headers["X-Conn-Id"] == challenge.headers["X-Conn-Id"]
        assert client.connects == 1
    # The same credentials on a connection that was never challenged: challenged again.
    other = http_get(origin.port, "/ntlm", headers={"Authorization": "NTLM TlRMTVNTUAADAAAA"})
    assert other.status == 401
    assert "X-Auth-Conn" not in other.headers


def test_websocket_upgrade_then_raw_echo(origin: Origin) -> None:
    handshake = (
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", origin.port), timeout=5) as sock:
        sock.sendall(handshake + b"early")  # bytes right behind the request travel with the switch
        buf = b""
        while b"\r\n\r\n" not in buf or not buf.endswith(b"early"):
            buf += sock.recv(4096)
        status, headers = head_of(buf)
        assert status == "HTTP/1.1 101 Switching Protocols"
        assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3's example
        assert headers["upgrade"] == "websocket"
        payload = bytes(range(256)) * 1000
        sock.sendall(payload)
        echoed = b""
        while len(echoed) < len(payload):
            echoed += sock.recv(65536)
        assert echoed == payload
        assert origin.stats()["active"] == 1  # the tunnel is a request in progress
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(10) == b""  # the origin closes once the client has
    wait_for(lambda: origin.stats()["active"] == 0, message="tunnel ended")


def test_websocket_without_a_key_is_refused(origin: Origin) -> None:
    raw = raw_exchange(
        origin.port, b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 400 ")


def test_close_status_and_delay_routes(origin: Origin) -> None:
    close = raw_exchange(
        origin.port, b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n"
    )  # returns on the origin's close
    assert head_of(close) == (
        "HTTP/1.1 200 OK",
        {"x-conn-id": "1", "x-req-seq": "1", "connection": "close", "content-length": "0"},
    )
    with KeepAliveClient(origin.port) as client:
        assert client.get("/status/404").status == 404
        no_content = client.get("/status/204")
        assert no_content.status == 204 and "Content-Length" not in no_content.headers
        assert client.get("/status/99").status == 400
        started = time.monotonic()
        assert client.get("/delay/100").status == 200
        assert time.monotonic() - started >= 0.1


def test_delay_flag_delays_every_response() -> None:
    with Origin(delay_ms=150) as slow:
        started = time.monotonic()
        assert http_get(slow.port, "/").status == 200
        assert time.monotonic() - started >= 0.15


def test_idle_timeout_flag_closes_idle_keepalive_connections() -> None:
    with Origin(idle_timeout_ms=100) as origin, KeepAliveClient(origin.port) as client:
        assert client.get("/").status == 200
        wait_for(lambda: origin.stats()["open"] == 0, message="idle connection closed by the origin")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            client.get("/")


def test_concurrent_requests_reach_max_active(origin: Origin) -> None:
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: http_get(origin.port, "/delay/500").status, range(10)))
    assert statuses == [200] * 10
    stats = origin.stats()
    assert (stats["max_active"], stats["max_open"], stats["active"], stats["requests"]) == (10, 10, 0, 10)


@pytest.fixture
def hanging(origin: Origin) -> Iterator[list[socket.socket]]:
    """Three connections each waiting on /bad/hang."""
    with ExitStack() as stack:
        socks = []
        for _ in range(3):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", origin.port), timeout=5))
            sock.sendall(b"GET /bad/hang HTTP/1.1\r\nHost: t\r\n\r\n")
            socks.append(sock)
        yield socks


def test_hang_keeps_requests_active_until_the_client_leaves(
    origin: Origin, hanging: list[socket.socket]
) -> None:
    wait_for(lambda: origin.stats()["active"] == 3, message="3 hanging requests")
    with pytest.raises(AssertionError, match="no close"):
        raw_exchange(origin.port, b"GET /bad/hang HTTP/1.1\r\nHost: t\r\n\r\n", timeout=0.3)
    for sock in hanging:
        sock.close()
    wait_for(lambda: origin.stats()["open"] == 0, message="all closed")
    stats = origin.stats()
    assert (stats["active"], stats["max_active"], stats["max_open"]) == (0, 4, 4)


def test_faulty_responses(origin: Origin) -> None:
    def get(path: str) -> bytes:
        return raw_exchange(origin.port, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())

    te_cl = get("/bad/te-cl")
    assert b"Transfer-Encoding: chunked\r\n" in te_cl and b"Content-Length: 5\r\n" in te_cl
    assert b"Content-Length: abc\r\n" in get("/bad/cl")
    assert not get("/bad/garbage").startswith(b"HTTP/")
    assert get("/bad/close") == b""
    truncated = get("/bad/truncated")
    assert b"Content-Length: 100\r\n" in truncated
    assert truncated.partition(b"\r\n\r\n")[2] == b"0123456789"
    assert get("/bad/unknown-kind").startswith(b"HTTP/1.1 400 ")

    with socket.create_connection(("127.0.0.1", origin.port), timeout=5) as sock:
        sock.sendall(b"GET /bad/reset HTTP/1.1\r\nHost: t\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)


def test_close_on_reuse_drops_the_second_request(origin: Origin) -> None:
    with KeepAliveClient(origin.port) as client:
        assert client.get("/bad/close-on-reuse").status == 200
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            client.get("/bad/close-on-reuse")


def test_bad_clients_do_not_hurt_the_server(origin: Origin) -> None:
    assert raw_exchange(origin.port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # A head over h11's 16 KiB limit: 431, unless the close with unread bytes (an RST) beats it to us.
    oversized = raw_exchange(origin.port, b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 20_000)
    assert oversized == b"" or oversized.startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(("127.0.0.1", origin.port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nshort")
        sock.shutdown(socket.SHUT_WR)  # the body ends early
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", origin.port)) as sock:
        sock.sendall(b"GET / HT")  # half a request, then gone
    assert http_get(origin.port, "/").status == 200
    wait_for(lambda: origin.stats()["open"] == 0, message="every connection closed")
    assert origin.logs() == ""


def test_sigterm_exits_cleanly(origin: Origin) -> None:
    with KeepAliveClient(origin.port) as client:
        client.get("/")  # an idle keep-alive connection must not hold the exit
        assert origin.stop() == 0
    assert origin.proc is not None and origin.proc.returncode == 0
    assert origin.logs() == ""


# ---- the harness's Proxy, against a stand-in master (the real one has its own e2e tests) ----------------

STAND_IN_MASTER = """
import os, signal, socket, sys, time
cfg = open(sys.argv[sys.argv.index("-f") + 1]).read()
port = int(cfg.split("bind 127.0.0.1:")[1].split()[0])
time.sleep(0.2)  # bind late: start() must wait for the listener, not for the process
listener = socket.create_server(("127.0.0.1", port))
for _ in range(2):
    if os.fork() == 0:
        signal.pause()  # a worker that ignores its master's death: the harness must kill it
        os._exit(0)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
print("master up", flush=True)
while True:
    signal.pause()
"""


def test_proxy_harness_waits_for_listeners_finds_workers_and_kills_the_group(tmp_path: Path) -> None:
    (tmp_path / "stand_in.py").write_text(STAND_IN_MASTER)
    port = free_port()
    proxy = Proxy(
        f"frontend fe\n    bind 127.0.0.1:{port}\n",
        tmp_path / "proxy",
        ports=[port],
        workers=2,
        module="stand_in",
        env={"PYTHONPATH": str(tmp_path)},
    )
    with proxy:
        assert proxy.cfg_path.read_text().startswith("frontend fe")
        workers = proxy.worker_pids()
        assert len(workers) == 2
        assert proxy.stop() == 3  # the master's own exit code...
        assert not group_members(proxy.pid)  # ...and no worker left behind
    wait_for(lambda: "master up" in proxy.logs(), message="captured stdout")
    assert not leaked_processes()


def test_proxy_harness_reports_an_early_exit_with_its_stderr(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import sys\nsys.exit('config error: line 1')\n")
    proxy = Proxy(
        "", tmp_path / "proxy", ports=[free_port()], module="broken", env={"PYTHONPATH": str(tmp_path)}
    )
    with pytest.raises(AssertionError, match=r"exited with 1 during start-up(?s:.*)config error: line 1"):
        proxy.start()


def test_free_port_below_the_ephemeral_range_and_reserved() -> None:
    # The kernel gives ports of its ephemeral range to outgoing connections and to bind-to-0: a port
    # picked there could be taken before the proxy binds it on a loaded machine. free_port() picks
    # below that range, bindable, and reserves each port it gives (other test processes skip it).
    low, _ = harness._ephemeral_range()
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    if low - 10000 >= 1000:
        assert all(10000 <= p < low for p in ports), ports
        assert all((harness.PORT_DIR / str(p)).exists() for p in ports)
        assert not harness._reserve(ports[0])  # given once, not twice
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
