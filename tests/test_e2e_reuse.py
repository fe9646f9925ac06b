"""End-to-end: which server connection each request rides on, per ``http-reuse`` mode (SEMANTICS.md §1-2).

Real master and workers on 127.0.0.1 in front of the counting origin (tools/origin.py). The origin tells
everything: ``connections`` counts the server connections the proxy opened, and every response carries
``X-Conn-Id`` (which server connection carried it) and ``X-Req-Seq`` (the n-th request on it, so 1 means
a fresh connection, HAProxy's ``http_first_req == 1`` as seen from the server).

Clients run one after another (no sleeps, no timing assertions): with ``nbthread 1`` every decision is
deterministic. The reg-test ports follow ``reference/haproxy-pooling.md`` §7.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import time

import pytest
from harness import KeepAliveClient, MakeProxy, Origin, Response, free_port, http_get, proxy_config, wait_for

pytestmark = pytest.mark.e2e


MODES = ("never", "safe", "aggressive", "always")


def config(
    port: int,
    origin_port: int,
    *,
    reuse: str,
    nbthread: int = 1,
    server: str = "",
    defaults: str = "",
) -> str:
    """One frontend on `port`, one backend with one server (the origin) in `reuse` mode."""
    return proxy_config(port, origin_port, nbthread=nbthread, reuse=reuse, server=server, defaults=defaults)


def start(make_proxy: MakeProxy, origin: Origin, reuse: str, *, nbthread: int = 1, **kw: str) -> int:
    """Start a proxy in front of `origin`; its frontend port."""
    port = free_port()
    make_proxy(
        config(port, origin.port, reuse=reuse, nbthread=nbthread, **kw), ports=[port], workers=nbthread
    )
    return port


def conn_id(response: Response) -> int:
    return int(response.headers["X-Conn-Id"])


def req_seq(response: Response) -> int:
    return int(response.headers["X-Req-Seq"])


def one_shot(port: int, path: str = "/") -> Response:
    response = http_get(port, path)
    assert response.status == 200, response
    return response


# ---- one keep-alive client -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_keepalive_client_rides_one_server_connection(
    make_proxy: MakeProxy, origin: Origin, mode: str
) -> None:
    # Every mode, `never` included (its connection is private to the session and reused by it alone),
    # keeps a keep-alive client on the server connection it opened first.
    port = start(make_proxy, origin, mode)
    with KeepAliveClient(port) as client:
        responses = [client.get("/") for _ in range(50)]
        assert client.connects == 1
    assert [r.status for r in responses] == [200] * 50
    assert {conn_id(r) for r in responses} == {conn_id(responses[0])}
    assert [req_seq(r) for r in responses] == list(range(1, 51))
    assert origin.stats()["connections"] == 1


# ---- never --------------------------------------------------------------------------------------------


def test_never_opens_one_connection_per_client_connection(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin, "never")
    ids = [conn_id(one_shot(port)) for _ in range(50)]
    assert len(set(ids)) == 50, ids
    assert origin.stats()["connections"] == 50
    # A private connection dies with its session: nothing stays open at the origin.
    wait_for(lambda: origin.stats()["open"] == 0, message="private connections closed with their sessions")


def test_never_concurrent_clients_do_not_share(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin, "never")
    with KeepAliveClient(port) as a, KeepAliveClient(port) as b:
        seen_a: list[int] = []
        seen_b: list[int] = []
        for _ in range(10):  # interleaved: while A's connection is idle, B asks, and the other way round
            ra, rb = a.get("/"), b.get("/")
            assert (ra.status, rb.status) == (200, 200)
            seen_a.append(conn_id(ra))
            seen_b.append(conn_id(rb))
        assert (a.connects, b.connects) == (1, 1)
    assert len(set(seen_a)) == 1, seen_a
    assert len(set(seen_b)) == 1, seen_b
    assert seen_a[0] != seen_b[0]
    assert origin.stats()["connections"] == 2


# ---- clients that close after each response --------------------------------------------------------


def test_always_close_mode_reuses_across_clients(make_proxy: MakeProxy, origin: Origin) -> None:
    # The reference lab's "always" row: ~one connection per worker, not one per client.
    port = start(make_proxy, origin, "always", nbthread=4)
    for _ in range(50):
        one_shot(port)
    connections = origin.stats()["connections"]
    assert connections <= 8, f"{connections} server connections for 50 one-shot clients with 4 workers"


def test_safe_close_mode_never_reuses_for_first_requests(make_proxy: MakeProxy, origin: Origin) -> None:
    # Every request is the first of its client connection: `safe` opens a new server connection each time.
    port = start(make_proxy, origin, "safe", nbthread=4)
    ids = [conn_id(one_shot(port)) for _ in range(50)]
    assert len(set(ids)) == 50
    assert origin.stats()["connections"] == 50


def test_aggressive_close_mode_first_requests_only_on_safe_connections(
    make_proxy: MakeProxy, origin: Origin
) -> None:
    # c1 leaves an idle (unsafe) connection; the following one-shot clients are all first requests, which
    # `aggressive` sends only over connections that already served a second request: there is none, so
    # none of them reuses c1's connection (nor any other).
    port = start(make_proxy, origin, "aggressive")
    first = one_shot(port)
    others = [one_shot(port) for _ in range(49)]
    assert all(req_seq(r) == 1 for r in others), [(conn_id(r), req_seq(r)) for r in others]
    assert conn_id(first) not in {conn_id(r) for r in others}
    connections = origin.stats()["connections"]
    assert connections > 25
    assert connections == 50


# ---- HAProxy reg-tests (reference/haproxy-pooling.md §7.2-7.4), nbthread 1 --------------------------


def test_regtest_http_reuse_safe(make_proxy: MakeProxy, origin: Origin) -> None:
    # reg-tests/connection/http_reuse_safe.vtc: pool-max-conn 1 forces the second request of c2 and c3
    # onto c1's old connection.
    port = start(make_proxy, origin, "safe", server="pool-max-conn 1")
    with KeepAliveClient(port) as c1:
        r = [c1.get("/") for _ in range(3)]
    c1_conn = conn_id(r[0])
    assert [(conn_id(x), req_seq(x)) for x in r] == [(c1_conn, 1), (c1_conn, 2), (c1_conn, 3)]
    seq = 3
    for name in ("c2", "c3"):
        with KeepAliveClient(port) as client:
            first, second, third = (client.get("/") for _ in range(3))
        assert req_seq(first) == 1, f"{name}: a first request never reuses in safe mode"
        assert conn_id(first) != c1_conn
        # The new connection is not kept (pool full); the later requests take c1's idle connection.
        assert (conn_id(second), req_seq(second)) == (c1_conn, seq + 1), name
        assert (conn_id(third), req_seq(third)) == (c1_conn, seq + 2), name
        seq += 2
    assert origin.stats()["connections"] == 3


def test_regtest_http_reuse_aggressive(make_proxy: MakeProxy, origin: Origin) -> None:
    # reg-tests/connection/http_reuse_aggressive.vtc.
    port = start(make_proxy, origin, "aggressive")
    with KeepAliveClient(port) as c1:
        r1 = c1.get("/")
    assert req_seq(r1) == 1
    with KeepAliveClient(port) as c2:
        r2a = c2.get("/")
        r2b = c2.get("/")
    # No safe connection yet: c2's first request opens a new one.
    assert req_seq(r2a) == 1 and conn_id(r2a) != conn_id(r1)
    # Its second request reuses an idle connection, which thereby becomes safe.
    assert req_seq(r2b) == 2
    with KeepAliveClient(port) as c3:
        r3 = c3.get("/")
    # A first request goes over the safe connection.
    assert (conn_id(r3), req_seq(r3)) == (conn_id(r2b), 3)


def test_regtest_http_reuse_always(make_proxy: MakeProxy, origin: Origin) -> None:
    # reg-tests/connection/http_reuse_always.vtc.
    port = start(make_proxy, origin, "always")
    with KeepAliveClient(port) as c1:
        r1 = c1.get("/")
    assert req_seq(r1) == 1
    with KeepAliveClient(port) as c2:
        r2a = c2.get("/")
        r2b = c2.get("/")
    # Even a first request reuses an idle, not yet safe, connection.
    assert (conn_id(r2a), req_seq(r2a)) == (conn_id(r1), 2)
    assert (conn_id(r2b), req_seq(r2b)) == (conn_id(r1), 3)
    with KeepAliveClient(port) as c3:
        r3 = c3.get("/")
    assert (conn_id(r3), req_seq(r3)) == (conn_id(r1), 4)
    assert origin.stats()["connections"] == 1


# ---- private connections ------------------------------------------------------------------------------


def test_ntlm_connection_is_pinned_to_its_client(make_proxy: MakeProxy, origin: Origin) -> None:
    # A 401 "WWW-Authenticate: NTLM" makes the connection private: NTLM authenticates the connection, so
    # the client's next request must ride on it, and nobody else's may (even in `always` mode).
    port = start(make_proxy, origin, "always")
    with KeepAliveClient(port) as a, KeepAliveClient(port) as b:
        challenge = a.get("/ntlm")
        assert challenge.status == 401
        assert challenge.headers["WWW-Authenticate"].startswith("NTLM")
        pinned = conn_id(challenge)

        b_ids = []
        for _ in range(5):
            r = b.get("/")
            assert r.status == 200
            b_ids.append(conn_id(r))
        for _ in range(3):  # new clients: first requests, `always` would take any idle connection
            b_ids.append(conn_id(one_shot(port)))

        auth = a.get("/ntlm", headers={"Authorization": "NTLM TlRMTVNTUAADAAAA"})
        assert auth.status == 200, auth
        assert auth.headers["X-Auth-Conn"] == str(pinned)
        assert conn_id(auth) == pinned
        after = a.get("/")
        assert conn_id(after) == pinned  # still pinned to its session

        for _ in range(5):
            r = b.get("/")
            assert r.status == 200
            b_ids.append(conn_id(r))
        assert (a.connects, b.connects) == (1, 1)
    assert pinned not in b_ids, b_ids


WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example key


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read up to the end of a response head; (head, bytes already received after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a complete head: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _recv_exactly(sock: socket.socket, n: int, already: bytes = b"") -> bytes:
    buf = bytearray(already)
    while len(buf) < n:
        chunk = sock.recv(min(65536, n - len(buf)))
        assert chunk, f"closed after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


def test_websocket_tunnel_echoes_and_is_never_reused(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin, "always")
    request = (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        head, rest = _read_head(sock)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), head
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        expected = base64.b64encode(hashlib.sha1(WS_KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        assert headers["sec-websocket-accept"] == expected.decode()
        assert headers["upgrade"].lower() == "websocket"
        tunnel_conn = int(headers["x-conn-id"])

        # Bytes both ways: the origin echoes every byte the client sends through the tunnel.
        assert rest == b"", rest
        sock.sendall(b"hello")
        assert _recv_exactly(sock, 5) == b"hello"
        big = bytes(range(256)) * 1024  # 256 KiB, more than any single buffer
        sock.sendall(big)
        assert _recv_exactly(sock, len(big)) == big

    # Closing the client side ends the tunnel and closes its server connection.
    wait_for(lambda: origin.stats()["open"] == 0, message="tunnel's server connection closed")
    after = one_shot(port)
    assert conn_id(after) != tunnel_conn
    assert req_seq(after) == 1


def _echo_from(port: int, source_ip: str) -> tuple[str, int]:
    """GET /echo from a client bound to `source_ip`; (peer ip the origin saw, X-Conn-Id)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source_ip, 0))
    try:
        conn.request("GET", "/echo", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        peer = json.loads(body)["peer"].rpartition(":")[0]
        return peer, int(response.headers["X-Conn-Id"])
    finally:
        conn.close()


def test_usesrc_clientip_connects_from_the_client_address(make_proxy: MakeProxy, origin: Origin) -> None:
    # `source 0.0.0.0 usesrc clientip`: the source address is part of the connection key, so even in
    # `always` mode a connection opened for one client address never carries another's requests.
    port = start(make_proxy, origin, "always", server="source 0.0.0.0 usesrc clientip")
    ids: dict[str, set[int]] = {"127.0.0.2": set(), "127.0.0.3": set()}
    for _ in range(4):
        for ip, seen in ids.items():
            peer, cid = _echo_from(port, ip)
            assert peer == ip
            seen.add(cid)
    assert not ids["127.0.0.2"] & ids["127.0.0.3"], ids


def test_http_server_close_opens_one_server_connection_per_request(
    make_proxy: MakeProxy, origin: Origin
) -> None:
    port = start(make_proxy, origin, "safe", defaults="option http-server-close")
    with KeepAliveClient(port) as client:
        responses = [client.get("/") for _ in range(10)]
        assert client.connects == 1  # the client side stays alive
    assert [r.status for r in responses] == [200] * 10
    assert len({conn_id(r) for r in responses}) == 10
    assert [req_seq(r) for r in responses] == [1] * 10
    assert origin.stats()["connections"] == 10
    wait_for(lambda: origin.stats()["open"] == 0, message="server connections closed after each response")


def test_websocket_tunnel_ends_after_timeout_tunnel_of_silence(make_proxy: MakeProxy, origin: Origin) -> None:
    """``timeout tunnel``: traffic either way keeps the tunnel; silence both ways ends it (both sides
    closed), while ``timeout client`` (30s here) no longer applies."""
    port = start(make_proxy, origin, "safe", defaults="timeout tunnel 400ms")
    request = (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        head, _ = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        for _ in range(4):  # 4 x 200 ms of echoes: longer than the timeout, never silent that long
            time.sleep(0.2)
            sock.sendall(b"ping")
            assert _recv_exactly(sock, 4) == b"ping"
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(1) == b""  # closed by the proxy
        assert 0.3 < time.monotonic() - started < 3
    wait_for(lambda: origin.stats()["open"] == 0, message="the tunnel's server connection closed")
