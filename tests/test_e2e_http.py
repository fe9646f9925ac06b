"""End-to-end: HTTP/1.1 through the proxy, byte for byte (pipelining, HTTP/1.0, bodies, hop-by-hop, rules).

Real master and workers on 127.0.0.1 in front of the counting origin (tools/origin.py); clients are
http.client, raw sockets and curl. Raw responses are parsed here (``parse_responses``), independently of
the proxy's code, so that a framing mistake (a body on a 204, a HEAD with bytes, a lost pipelined
response) shows up as a wrong parse.

The 1 GiB transfers are generated and checked on the fly on both ends; the proxy's workers must move
them with bounded memory (VmRSS growth under 64 MiB).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

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
    rss_kib,
)

pytestmark = pytest.mark.e2e


GIB = 1 << 30
MIB = 1 << 20
RSS_GROWTH_LIMIT_KIB = 64 * 1024
# Byte i of every generated body is i % 256 (tools/origin.py); any 1 MiB window of it is a slice of this.
PATTERN = bytes(range(256)) * (MIB // 256 + 1)


def config(port: int, origin_port: int, *, nbthread: int = 1, defaults: str = "") -> str:
    return proxy_config(port, origin_port, nbthread=nbthread, defaults=defaults)


def start(make_proxy: MakeProxy, origin: Origin, *, defaults: str = "") -> int:
    return start_proxy(make_proxy, origin, defaults=defaults)[0]


def start_proxy(make_proxy: MakeProxy, origin: Origin, *, defaults: str = "") -> tuple[int, Proxy]:
    port = free_port()
    proxy = make_proxy(config(port, origin.port, defaults=defaults), ports=[port], workers=1)
    return port, proxy


# ---- a small independent HTTP/1.1 response parser ------------------------------------------------------


class Raw(NamedTuple):
    status: int
    version: str
    headers: list[tuple[str, str]]  # names lowercased, in order
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return ", ".join(values) if values else None


def _parse_one(buf: bytes, method: str) -> tuple[Raw, bytes]:
    head, sep, rest = buf.partition(b"\r\n\r\n")
    assert sep, f"incomplete head: {buf[:300]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        assert colon and name == name.strip(), f"bad header line {line!r}"
        headers.append((name.lower(), value.strip()))
    response = Raw(int(status), version, headers, b"")
    code = int(status)
    te = response.header("transfer-encoding")
    cl = response.header("content-length")
    if method == "HEAD" or code < 200 or code in (204, 304):
        return response, rest
    if te is not None:
        assert te.lower() == "chunked", te
        body = bytearray()
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            assert sep, "incomplete chunk line"
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                trailer_end = rest.index(b"\r\n") if rest.startswith(b"\r\n") else rest.index(b"\r\n\r\n") + 2
                return response._replace(body=bytes(body)), rest[trailer_end + 2 :]
            body += rest[:size]
            assert rest[size : size + 2] == b"\r\n", "chunk data not followed by CRLF"
            rest = rest[size + 2 :]
    if cl is not None:
        n = int(cl)
        assert len(rest) >= n, f"body cut at {len(rest)} of {n}"
        return response._replace(body=rest[:n]), rest[n:]
    return response._replace(body=rest), b""  # delimited by the close


def parse_responses(buf: bytes, methods: list[str]) -> list[Raw]:
    """Exactly len(methods) responses, back to back, nothing after them."""
    responses = []
    for method in methods:
        response, buf = _parse_one(buf, method)
        responses.append(response)
    assert buf == b"", f"unexpected bytes after the responses: {buf[:200]!r}"
    return responses


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def echoed(response: Raw | bytes) -> dict[str, object]:
    body = response.body if isinstance(response, Raw) else response
    result: dict[str, object] = json.loads(body)
    return result


def echoed_headers(response: Raw | bytes) -> list[tuple[str, str]]:
    headers = echoed(response)["headers"]
    assert isinstance(headers, list)
    return [(str(k).lower(), str(v)) for k, v in headers]


def read_response(sock: socket.socket, method: str = "GET") -> Raw:
    """One complete response with a Content-Length (or none) from a keep-alive socket."""
    buf = b""
    while True:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if method == "HEAD" or len(rest) >= length:
                response, left = _parse_one(buf, method)
                assert left == b"", left
                return response
        chunk = sock.recv(65536)
        assert chunk, f"closed before a complete response: {buf!r}"
        buf += chunk


# ---- pipelining and HTTP/1.0 ---------------------------------------------------------------------------


def test_pipelined_requests_answered_in_order(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin)
    # The first one is the slowest: its answer must still come first.
    data = (
        request("GET", "/delay/100")
        + request("GET", "/echo?n=2")
        + request("GET", "/echo?n=3", "Connection: close")
    )
    responses = parse_responses(raw_exchange(port, data), ["GET", "GET", "GET"])
    assert [r.status for r in responses] == [200, 200, 200]
    assert responses[0].body == b""
    assert echoed(responses[1])["target"] == "/echo?n=2"
    assert echoed(responses[2])["target"] == "/echo?n=3"


def test_http10_without_keepalive_closes(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin)
    # raw_exchange fails unless the proxy closes the connection after the response.
    raw = raw_exchange(port, b"GET /echo HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    (response,) = parse_responses(raw, ["GET"])
    assert response.status == 200
    assert echoed(response)["target"] == "/echo"
    assert "keep-alive" not in (response.header("connection") or "").lower()


def test_http10_keepalive_stays_open(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin)
    ask = b"GET /echo HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(ask)
            response = read_response(sock)
            assert response.status == 200
            assert (response.header("connection") or "").lower() == "keep-alive"
            assert echoed(response)["target"] == "/echo"
        # Without keep-alive, the last one closes the connection.
        sock.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        buf = b""
        while chunk := sock.recv(65536):
            buf += chunk
    (last,) = parse_responses(buf, ["GET"])
    assert last.status == 200


# ---- bodies --------------------------------------------------------------------------------------------


def _upload(port: int, body: bytes | Iterator[bytes], headers: dict[str, str]) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        chunked = headers.get("Transfer-Encoding") == "chunked"
        if chunked:
            headers = {k: v for k, v in headers.items() if k != "Transfer-Encoding"}
        conn.request("POST", "/upload", body=body, headers=headers, encode_chunked=chunked)
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, data
        result: dict[str, object] = json.loads(data)
        return result
    finally:
        conn.close()


def test_content_length_upload(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin)
    body = os.urandom(3 * MIB + 17)
    result = _upload(port, body, {"Content-Length": str(len(body))})
    assert result == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_chunked_upload(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin)
    parts = [os.urandom(n) for n in (1, 100, 65536, 200_000, 7)]
    result = _upload(port, iter(parts), {"Transfer-Encoding": "chunked"})
    whole = b"".join(parts)
    assert result == {"bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


def _expected(offset: int, n: int) -> bytes:
    start = offset % 256
    return PATTERN[start : start + n]


def test_downloads_content_length_and_chunked(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin)
    size = 5 * MIB + 7
    expected = (PATTERN * 6)[:size]
    with KeepAliveClient(port, timeout=30) as client:
        fixed = client.get(f"/size/{size}")
        assert fixed.status == 200
        assert fixed.headers["Content-Length"] == str(size)
        assert fixed.body == expected
        chunked = client.get(f"/chunked/{size}")
        assert chunked.status == 200
        assert chunked.headers["Transfer-Encoding"] == "chunked"
        assert chunked.body == expected
        assert client.get("/").status == 200
        assert client.connects == 1  # keep-alive survived both bodies


class RssWatch:
    """The largest VmRSS growth of the proxy's workers since the watch started (sampled on demand)."""

    def __init__(self, proxy: Proxy) -> None:
        self.pids = proxy.worker_pids()
        self.base = {pid: rss_kib(pid) for pid in self.pids}
        self.growth = 0

    def sample(self) -> None:
        assert self.pids, "no worker"
        for pid in self.pids:
            self.growth = max(self.growth, rss_kib(pid) - self.base[pid])


def test_one_gib_download_and_upload_with_bounded_worker_memory(
    make_proxy: MakeProxy, origin: Origin
) -> None:
    port, proxy = start_proxy(make_proxy, origin)
    with KeepAliveClient(port) as warm:  # the first request's imports and buffers are not growth
        assert warm.get("/size/1000000").status == 200
        assert warm.request("POST", "/upload", body=b"x" * 1000000).status == 200
    watch = RssWatch(proxy)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        # Download: 1 GiB with a Content-Length, checked slice by slice against the pattern.
        conn.request("GET", f"/size/{GIB}")
        response = conn.getresponse()
        assert response.status == 200
        received = 0
        next_sample = 0
        while chunk := response.read(MIB):
            assert chunk == _expected(received, len(chunk)), f"wrong bytes at offset {received}"
            received += len(chunk)
            if received >= next_sample:
                watch.sample()
                next_sample += 64 * MIB
        assert received == GIB
        watch.sample()

        # Upload: 1 GiB generated on the fly, never held in memory, hashed as it is sent.
        digest = hashlib.sha256()
        block = PATTERN[:MIB]

        def generate() -> Iterator[bytes]:
            for i in range(GIB // MIB):
                digest.update(block)
                if i % 64 == 0:
                    watch.sample()
                yield block

        conn.request("POST", "/upload", body=generate(), headers={"Content-Length": str(GIB)})
        response = conn.getresponse()
        result = json.loads(response.read())
        assert response.status == 200
        assert result == {"bytes": GIB, "sha256": digest.hexdigest()}
        watch.sample()
    finally:
        conn.close()
    assert watch.growth < RSS_GROWTH_LIMIT_KIB, f"worker RSS grew by {watch.growth} KiB"
    assert proxy.worker_pids() == watch.pids


def test_expect_100_continue_upload_with_curl(make_proxy: MakeProxy, origin: Origin, tmp_path: Path) -> None:
    port = start(make_proxy, origin)
    payload = os.urandom(300_000)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    # --expect100-timeout: curl must not give up waiting and send the body anyway; the 100 must come.
    done = subprocess.run(
        [
            "curl", "-sS", "-v", "--max-time", "20", "--expect100-timeout", "15",
            "-H", "Expect: 100-continue", "-H", "Content-Type: application/octet-stream",
            "--data-binary", f"@{path}", f"http://127.0.0.1:{port}/upload",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    trace = done.stderr.decode(errors="replace")
    assert done.returncode == 0, trace
    assert "< HTTP/1.1 100 Continue" in trace, trace
    assert "< HTTP/1.1 200" in trace, trace
    assert json.loads(done.stdout) == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


# ---- bodiless responses --------------------------------------------------------------------------------


def test_head_gets_no_body(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin)
    data = request("HEAD", "/size/1000") + request("GET", "/echo?after-head", "Connection: close")
    head, after = parse_responses(raw_exchange(port, data), ["HEAD", "GET"])
    assert head.status == 200
    assert head.header("content-length") == "1000"
    assert echoed(after)["target"] == "/echo?after-head"


def test_204_and_304_have_no_body(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin)
    data = (
        request("GET", "/status/204")
        + request("GET", "/status/304")
        + request("GET", "/echo?after", "Connection: close")
    )
    r204, r304, after = parse_responses(raw_exchange(port, data), ["GET", "GET", "GET"])
    assert (r204.status, r304.status) == (204, 304)
    for response in (r204, r304):
        assert response.header("transfer-encoding") is None, response
        assert response.header("content-length") in (None, "0"), response
    assert echoed(after)["target"] == "/echo?after"


# ---- headers -------------------------------------------------------------------------------------------


def test_hop_by_hop_headers_are_not_forwarded(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin)
    data = request(
        "GET",
        "/echo",
        "Connection: keep-alive, X-Foo",
        "X-Foo: nominated",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "TE: deflate",
        "X-End-To-End: kept",
    ) + request("GET", "/", "Connection: close")
    echo, _ = parse_responses(raw_exchange(port, data), ["GET", "GET"])
    names = [k for k, _ in echoed_headers(echo)]
    for hop in ("x-foo", "keep-alive", "proxy-connection", "te"):
        assert hop not in names, f"{hop} forwarded: {echoed_headers(echo)}"
    assert ("x-end-to-end", "kept") in echoed_headers(echo)
    for k, v in echoed_headers(echo):
        if k == "connection":
            assert "x-foo" not in v.lower()


def test_forwardfor_adds_the_client_address(make_proxy: MakeProxy, origin: Origin) -> None:
    port = start(make_proxy, origin, defaults="option forwardfor")
    plain = http_get(port, "/echo")
    assert [v for k, v in echoed_headers(plain.body) if k == "x-forwarded-for"] == ["127.0.0.1"]
    # A client-supplied value stays; the proxy's own comes last.
    chained = http_get(port, "/echo", headers={"X-Forwarded-For": "10.1.2.3"})
    values = [v for k, v in echoed_headers(chained.body) if k == "x-forwarded-for"]
    assert ", ".join(values).replace(" ", "").split(",") == ["10.1.2.3", "127.0.0.1"]


# ---- rules ---------------------------------------------------------------------------------------------


def test_http_request_return_and_use_backend_with_acls(make_proxy: MakeProxy, origin: Origin) -> None:
    with Origin() as api:
        port = free_port()
        make_proxy(
            f"""\
global
    nbthread 1

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.1:{port}
    acl is_health path_beg /health
    acl is_api path_beg /api/
    http-request return status 200 content-type text/plain string "ok" if is_health
    http-request return status 403 content-type text/plain string "no admin" if {{ path_beg /admin }}
    use_backend api if is_api || {{ hdr(host) -i api.example.com }}
    default_backend web

backend web
    server w1 127.0.0.1:{origin.port}

backend api
    server a1 127.0.0.1:{api.port}
""",
            ports=[port],
            workers=1,
        )

        def where(path: str, host: str = "www.example.com") -> str:
            before = (origin.stats()["requests"], api.stats()["requests"])
            response = http_get(port, path, headers={"Host": host})
            assert response.status == 200, response
            after = (origin.stats()["requests"], api.stats()["requests"])
            delta = (after[0] - before[0], after[1] - before[1])
            return {(1, 0): "web", (0, 1): "api"}[delta]

        health = http_get(port, "/health/live")
        assert (health.status, health.body) == (200, b"ok")
        assert health.headers["Content-Type"] == "text/plain"
        denied = http_get(port, "/admin/x")
        assert (denied.status, denied.body) == (403, b"no admin")
        assert origin.stats()["requests"] == api.stats()["requests"] == 0  # answered by the proxy

        assert where("/") == "web"
        assert where("/api/users") == "api"
        assert where("/apix") == "web"
        assert where("/", host="api.example.com") == "api"
        assert where("/", host="API.Example.COM") == "api"  # -i
        assert where("/", host="api.example.com:8080") == "web"  # hdr(host) includes the port
        assert where("/", host="www.api.example.com") == "web"


def test_header_and_request_rules_end_to_end(make_proxy: MakeProxy, origin: Origin) -> None:
    """One configuration exercising each rule kind; the origin's /echo shows what it received."""
    port = free_port()
    make_proxy(
        f"""\
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.1:{port}
    unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    unique-id-header X-Unique-ID
    http-request redirect location /elsewhere code 301 if {{ path /old }}
    http-request redirect scheme https if {{ path /secure }}
    http-request deny deny_status 429 if {{ path_beg /denied }}
    http-request set-header X-Bad %[query,url_dec] if {{ path_beg /inject }}
    http-request set-header X-Client %[src]
    http-request set-header X-Host %[req.hdr(host),lower]
    http-request add-header X-Added "from %ci"
    http-request del-header X-Remove
    http-request replace-header X-Repl ^foo=(.*)$ bar=\\1
    http-request set-path /echo if {{ path_beg /rewrite }}
    http-request set-query %[query]&added=1 if {{ path /echo }}
    http-response add-header X-Order fe
    http-response set-header X-Type %[res.hdr(content-type)]
    http-response del-header X-Conn-Id
    http-after-response set-header X-After %[status]
    default_backend be

backend be
    http-request set-header X-Backend %[be_name]
    http-response add-header X-Order be
    server s1 127.0.0.1:{origin.port}
""",
        ports=[port],
        workers=1,
    )
    sent = {"Host": "Example.COM", "X-Remove": "x", "X-Repl": "foo=1"}
    response = http_get(port, "/rewrite/x?q=1", headers=sent)
    assert response.status == 200
    got = echoed(response.body)
    assert got["target"] == "/echo?q=1&added=1"
    headers = dict(echoed_headers(response.body))
    assert "x-remove" not in headers
    assert (headers["x-client"], headers["x-host"]) == ("127.0.0.1", "example.com")
    assert headers["x-added"] == "from 127.0.0.1"
    assert (headers["x-repl"], headers["x-backend"]) == ("bar=1", "be")
    # the format's leading blank is not there: the origin strips a value's leading whitespace
    unique = r"7F000001:[0-9A-F]{4}_7F000001:[0-9A-F]{4}_[0-9A-F]{8}_[0-9A-F]{4,}:[0-9A-F]{4,}"
    assert re.fullmatch(unique, headers["x-unique-id"]), headers["x-unique-id"]
    assert response.headers.get_all("X-Order") == ["be", "fe"]  # the backend's rules first
    assert response.headers["X-Type"] == "application/json" and "X-Conn-Id" not in response.headers
    assert response.headers["X-After"] == "200"

    moved = http_get(port, "/old")
    assert (moved.status, moved.headers["Location"], moved.headers["X-After"]) == (301, "/elsewhere", "301")
    secure = http_get(port, "/secure?x=1", headers={"Host": "a.example"})
    assert (secure.status, secure.headers["Location"]) == (302, "https://a.example/secure?x=1")
    denied = http_get(port, "/denied")
    assert (denied.status, denied.headers["X-After"]) == (429, "429")
    assert http_get(port, "/inject?a%0d%0aInjected:%201").status == 500  # CR LF in a value: refused
    assert origin.stats()["requests"] == 1  # only the first one reached the server
