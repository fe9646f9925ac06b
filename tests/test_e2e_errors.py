"""End-to-end: the proxy's answers when a client, a server or the network misbehaves (HAProxy's statuses).

Real master and workers on 127.0.0.1 in front of the counting origin (tools/origin.py), whose ``/bad/*``
routes misbehave on purpose. Every case also checks what must survive the failure: the connection is
closed after an error, the workers are the same processes, and the next request (on the pool, where
there is one) gets a correct answer.

Statuses for malformed requests follow the parser's tables (tests/data/h1/requests.json), which pin
the choices HAProxy and the RFCs leave open (bare LF, obs-fold and TE with CL are rejected with 400).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from harness import (
    KeepAliveClient,
    MakeProxy,
    Origin,
    Proxy,
    free_port,
    http_get,
    proxy_config,
    raw_exchange,
    wait_for,
)

pytestmark = pytest.mark.e2e


def config(
    port: int,
    origin_port: int,
    *,
    nbthread: int = 1,
    reuse: str = "safe",
    defaults: str = "",
    servers: str = "",
) -> str:
    return proxy_config(port, origin_port, nbthread=nbthread, reuse=reuse, defaults=defaults, servers=servers)


def start(make_proxy: MakeProxy, origin: Origin, *, nbthread: int = 1, **kw: str) -> tuple[int, Proxy]:
    port = free_port()
    proxy = make_proxy(config(port, origin.port, nbthread=nbthread, **kw), ports=[port], workers=nbthread)
    return port, proxy


def status_of(raw: bytes) -> int:
    line = raw.partition(b"\r\n")[0]
    assert line.startswith(b"HTTP/1."), f"not a response: {raw[:200]!r}"
    return int(line.split(b" ")[1])


def headers_of(raw: bytes) -> dict[str, str]:
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1")
    fields = (line.partition(":") for line in head.split("\r\n")[1:])
    return {name.strip().lower(): value.strip() for name, _, value in fields}


def count_responses(raw: bytes) -> int:
    return raw.count(b"HTTP/1.1 ") + raw.count(b"HTTP/1.0 ")


def assert_serving(port: int) -> None:
    response = http_get(port, "/echo")
    assert response.status == 200
    assert json.loads(response.body)["target"] == "/echo"


# ---- malformed requests --------------------------------------------------------------------------------

SMUGGLED = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
MALFORMED = {
    "te-and-cl": (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
        400,
    ),
    "bad-content-length": (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\nhello", 400),
    "bare-lf": (b"GET /echo HTTP/1.1\nHost: a\n\n", 400),
    "obs-fold": (b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", 400),
    "two-hosts": (b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "missing-host": (b"GET /echo HTTP/1.1\r\nX-Other: a\r\n\r\n", 400),
    "nul-in-header": (b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n", 400),
    "oversized-headers": (b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_is_rejected_and_the_worker_survives(
    make_proxy: MakeProxy, origin: Origin, case: str
) -> None:
    data, status = MALFORMED[case]
    port, proxy = start(make_proxy, origin, nbthread=2)
    workers = proxy.worker_pids()
    raw = raw_exchange(port, data)  # fails unless the proxy closes the connection
    assert status_of(raw) == status, raw[:300]
    assert headers_of(raw).get("connection", "").lower() == "close", raw[:300]
    assert count_responses(raw) == 1, raw  # nothing after the error (no smuggled request answered)
    assert origin.stats()["requests"] == 0  # never forwarded
    assert proxy.worker_pids() == workers
    for _ in range(4):
        assert_serving(port)
    assert proxy.worker_pids() == workers


# ---- 503: no server to send the request to ------------------------------------------------------------


def test_503_when_every_server_is_disabled(make_proxy: MakeProxy, origin: Origin) -> None:
    servers = f"server s1 127.0.0.1:{origin.port} disabled\n    server s2 127.0.0.1:{origin.port} disabled"
    port, _ = start(make_proxy, origin, servers=servers)
    for _ in range(2):
        assert http_get(port, "/").status == 503
    assert origin.stats()["connections"] == 0


@pytest.mark.parametrize("line", [b"GET /\r\n", b"HELLO WORLD\r\n", b"GET / HTTP/1.1 extra\r\nHost: a\r\n"])
def test_bad_request_line_answered_without_waiting_for_the_head(
    make_proxy: MakeProxy, origin: Origin, line: bytes
) -> None:
    """400 as soon as the line is complete, the connection left open by the client: it was a 408
    once ``timeout http-request`` (30 s here) ran out. HAProxy answers 400 at once too."""
    port, _ = start(make_proxy, origin, defaults="timeout http-request 30s")
    raw = raw_exchange(port, line, timeout=10)
    assert status_of(raw) == 400, raw
    assert_serving(port)


def test_maxhdr_counts_as_haproxys(make_proxy: MakeProxy, origin: Origin) -> None:
    """tune.http.maxhdr 101 (the default) lets 100 header lines in, as HAProxy 2.6 does (its list
    spends a slot on the end of the headers); one more is refused (431 here, 400 in HAProxy)."""
    port, _ = start(make_proxy, origin)

    def with_lines(n: int) -> bytes:
        fields = b"".join(b"X-%d: v\r\n" % i for i in range(n - 1))
        return b"GET /echo HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"

    assert status_of(raw_exchange(port, with_lines(100), read_until_close=False)) == 200
    assert status_of(raw_exchange(port, with_lines(101))) == 431


def test_http10_request_without_host_reaches_a_strict_server(make_proxy: MakeProxy, origin: Origin) -> None:
    """HTTP/1.0 allows no Host; forwarded as HTTP/1.1 it needed one (the origin's h11 refused it:
    400), so such a request is forwarded as HTTP/1.0, as HAProxy does."""
    port, _ = start(make_proxy, origin)
    for request in (b"GET /echo HTTP/1.0\r\n\r\n", b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"):
        raw = raw_exchange(port, request)
        assert status_of(raw) == 200, raw


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source"])
def test_503_from_a_backend_without_servers(make_proxy: MakeProxy, origin: Origin, balance: str) -> None:
    """A backend with no server line is valid (HAProxy too) and answers 503, on a connection that
    stays usable; it used to fail every request with an IndexError in the balancer."""
    port, proxy = start(make_proxy, origin, servers=f"balance {balance}")
    workers = proxy.worker_pids()
    raw = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert raw.count(b"HTTP/1.1 503 ") == 1, raw  # we close after an error reply (HAProxy 2.6 keeps a 503's)
    assert http_get(port, "/").status == 503
    assert proxy.worker_pids() == workers
    assert "Traceback" not in proxy.logs()


def test_503_when_the_server_refuses_connections(make_proxy: MakeProxy, origin: Origin) -> None:
    closed = free_port()  # nothing listens there: connect() is refused
    port, proxy = start(make_proxy, origin, defaults="retries 1", servers=f"server s1 127.0.0.1:{closed}")
    workers = proxy.worker_pids()
    for _ in range(2):
        raw = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status_of(raw) == 503, raw
    assert proxy.worker_pids() == workers


# ---- errorfile: the configured pages replace the proxy's own ----------------------------------------------


def test_errorfile_pages_replace_the_proxys_own(
    make_proxy: MakeProxy, origin: Origin, tmp_path: Path
) -> None:
    """The backend's page for a 503, the frontend's for a 400 the parser rejects (before any stream),
    and an empty file for 408: the connection closes without an answer."""
    page503 = tmp_path / "503.http"
    head = b"HTTP/1.0 503 Come back later\r\nX-Page: be\r\nContent-Type: text/plain\r\n\r\n"
    page503.write_bytes(head + b"later\n")
    page400 = tmp_path / "400.http"
    page400.write_bytes(b"HTTP/1.1 400 Bad\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nbad\n")
    empty = tmp_path / "408.http"
    empty.write_bytes(b"")
    closed = free_port()
    port = free_port()
    config = proxy_config(
        port, origin.port, defaults=f"errorfile 400 {page400}\n    errorfile 408 {empty}\n"
        "    timeout http-request 300ms\n    retries 0",
        backend=f"errorfile 503 {page503}", servers=f"server s1 127.0.0.1:{closed}",
    )  # fmt: skip
    make_proxy(config, ports=[port], workers=1)
    raw = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert raw == (
        b"HTTP/1.1 503 Come back later\r\nX-Page: be\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
        b"Connection: close\r\n\r\nlater\n"
    )
    raw = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 Bad\r\n") and raw.endswith(b"\r\n\r\nbad\n"), raw
    assert raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n") == b""  # 408 -> /dev/null


# ---- 502: the server's answer is unusable ---------------------------------------------------------------


@pytest.mark.parametrize("fault", ["te-cl", "cl", "garbage", "close", "truncated"])
def test_502_for_a_broken_response_and_the_pool_stays_clean(
    make_proxy: MakeProxy, origin: Origin, fault: str
) -> None:
    port, proxy = start(make_proxy, origin)
    workers = proxy.worker_pids()
    with KeepAliveClient(port) as keeper:
        # A healthy pooled connection (safe: it served two requests), then a broken exchange on a new one.
        good = [keeper.get("/") for _ in range(2)]
        pooled = good[0].headers["X-Conn-Id"]
        assert [r.headers["X-Conn-Id"] for r in good] == [pooled, pooled]

        # A one-shot client's request is a first request: in `safe` mode it gets a fresh connection.
        raw = raw_exchange(port, f"GET /bad/{fault} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        if fault == "truncated" and status_of(raw) == 200:
            # The head (Content-Length: 100) may already be on its way when the server stops after 10
            # bytes; then the client must see a cut body and a closed connection, never a full 200.
            body = raw.partition(b"\r\n\r\n")[2]
            assert len(body) < int(headers_of(raw)["content-length"]), raw
        else:
            assert status_of(raw) == 502, raw
            assert count_responses(raw) == 1, raw

        # No poisoning: the pooled connection still answers correctly, and so do fresh ones.
        after = keeper.get("/echo")
        assert after.status == 200
        assert json.loads(after.body)["target"] == "/echo"
        assert after.headers["X-Conn-Id"] == pooled
        assert after.headers["X-Req-Seq"] == "3"
        assert keeper.connects == 1
    for _ in range(3):
        assert_serving(port)
    assert proxy.worker_pids() == workers


# ---- timeouts --------------------------------------------------------------------------------------------


def test_504_when_the_server_does_not_answer_within_timeout_server(
    make_proxy: MakeProxy, origin: Origin
) -> None:
    port, _ = start(make_proxy, origin, defaults="timeout server 500ms")
    raw = raw_exchange(port, b"GET /bad/hang HTTP/1.1\r\nHost: a\r\n\r\n", timeout=10)
    assert status_of(raw) == 504, raw
    assert count_responses(raw) == 1
    wait_for(lambda: origin.stats()["active"] == 0, message="the hung server connection closed")
    assert_serving(port)


def test_408_when_the_request_head_is_incomplete_within_timeout_http_request(
    make_proxy: MakeProxy, origin: Origin
) -> None:
    port, proxy = start(make_proxy, origin, defaults="timeout http-request 500ms")
    workers = proxy.worker_pids()
    raw = raw_exchange(port, b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Half: ", timeout=10)
    assert status_of(raw) == 408, raw
    assert headers_of(raw).get("connection", "").lower() == "close"
    assert origin.stats()["requests"] == 0
    assert proxy.worker_pids() == workers
    assert_serving(port)


# ---- a reused connection the server closed ---------------------------------------------------------------


def test_get_on_a_reused_connection_the_server_drops_is_retried(
    make_proxy: MakeProxy, origin: Origin
) -> None:
    # /bad/close-on-reuse answers a connection's first request and silently drops it on the next one:
    # the keep-alive race, made deterministic. The GET is replayed on a new connection.
    port, _ = start(make_proxy, origin)
    with KeepAliveClient(port) as client:
        first = client.get("/bad/close-on-reuse")
        assert (first.status, first.headers["X-Req-Seq"]) == (200, "1")
        second = client.get("/bad/close-on-reuse")
        assert second.status == 200
        assert second.headers["X-Conn-Id"] != first.headers["X-Conn-Id"]
        assert second.headers["X-Req-Seq"] == "1"
        third = client.get("/echo")
        assert third.status == 200
        assert client.connects == 1  # transparent: the client connection was never dropped


def test_request_after_the_server_closed_an_idle_pooled_connection(make_proxy: MakeProxy) -> None:
    with Origin(idle_timeout_ms=200) as origin:
        port, _ = start(make_proxy, origin)
        with KeepAliveClient(port) as client:
            for round_ in range(3):
                first = client.get("/")
                assert first.status == 200
                # The origin drops the idle pooled connection; the next request must not notice.
                wait_for(lambda: origin.stats()["open"] == 0, message=f"origin closed idle conn ({round_})")
                second = client.get("/echo")
                assert second.status == 200
                assert second.headers["X-Conn-Id"] != first.headers["X-Conn-Id"]
            assert client.connects == 1


def test_client_disconnect_mid_response_leaves_the_worker_serving(
    make_proxy: MakeProxy, origin: Origin
) -> None:
    port, proxy = start(make_proxy, origin)
    workers = proxy.worker_pids()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /size/104857600 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    # The server connection carrying the unfinished body is closed, not pooled.
    wait_for(lambda: origin.stats()["open"] == 0, message="server connection of the aborted download closed")
    assert_serving(port)
    assert proxy.worker_pids() == workers
