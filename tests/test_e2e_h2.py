"""End-to-end: HTTP/2 clients through the proxy to the HTTP/1 origin (tools/origin.py).

Real master and workers on 127.0.0.1; clients are curl (``--http2-prior-knowledge``, ``--http2`` over
TLS with a certificate the test makes with the openssl CLI), h2load, and raw sockets driven by the
``h2`` library (flow control, error cases through ``tools.h2_attacks``). Each test runs on both HTTP/1
engines (the origin side is HTTP/1).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, StreamEnded
from harness import MakeProxy, Origin, Proxy, free_port, proxy_config, rss_kib, wait_for

from tools import h2_attacks

pytestmark = pytest.mark.e2e

MIB = 1 << 20
PATTERN = bytes(range(256)) * (4 * MIB // 256 + 1)


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, timeout=timeout)


def start(
    make_proxy: MakeProxy,
    origin: Origin,
    *,
    bind: str = "",
    glob: str = "",
    nbthread: int = 1,
    more: str = "",
) -> tuple[int, Proxy]:
    """A proxy whose frontend binds a free port with ``bind`` options (``more``: extra lines there)."""
    port = free_port()
    cfg = proxy_config(port, origin.port, nbthread=nbthread, glob=glob + "\n    log stderr local0",
                       defaults="log global\n    option httplog")  # fmt: skip
    cfg = cfg.replace(f"bind 127.0.0.1:{port}", f"bind 127.0.0.1:{port} {bind}\n    {more}")
    ports = [port, *(int(w.split(":")[1]) for w in more.split() if w.startswith("127.0.0.1:"))]
    return port, make_proxy(cfg, ports=ports, workers=nbthread)


def test_curl_prior_knowledge(make_proxy: MakeProxy, origin: Origin) -> None:
    """h2c with prior knowledge on a plain bind: the request reaches the HTTP/1 origin translated
    (Host from :authority, cookies joined), bodies both ways, HEAD and 204 without body, and the log
    line says HTTP/2.0; an HTTP/1 client on the same port still gets HTTP/1.1."""
    port, proxy = start(make_proxy, origin)
    url = f"http://127.0.0.1:{port}"
    r = curl(
        "--http2-prior-knowledge",
        "-H",
        "Cookie: a=1",
        "-H",
        "Cookie: b=2",
        "-w",
        "\n%{http_version}",
        f"{url}/echo",
    )
    body, version = r.stdout.rsplit(b"\n", 1)
    assert version == b"2", r.stderr
    echo = json.loads(body)
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert echo["http_version"] == "1.1" and headers["host"] == f"127.0.0.1:{port}"
    assert headers["cookie"] == "a=1; b=2"
    # a 3 MiB upload without length (chunked to the origin) and one with
    data = PATTERN[: 3 * MIB]
    for extra in ([], ["-H", f"Content-Length: {len(data)}"]):
        r = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "--data-binary", "@-", *extra, f"{url}/upload"],
            input=data, capture_output=True, timeout=60,
        )  # fmt: skip
        assert json.loads(r.stdout) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, (
            r.stderr
        )
    r = curl("--http2-prior-knowledge", f"{url}/size/{3 * MIB}")
    assert r.stdout == PATTERN[: 3 * MIB]
    r = curl("--http2-prior-knowledge", f"{url}/chunked/200000")
    assert r.stdout == PATTERN[:200000]
    r = curl("--http2-prior-knowledge", "-I", f"{url}/size/100")
    assert b"HTTP/2 200" in r.stdout and b"content-length: 100" in r.stdout
    r = curl(
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        f"{url}/status/204",
    )
    assert r.stdout == b"204 0"
    r = curl("-o", "/dev/null", "-w", "%{http_code} %{http_version}", f"{url}/")
    assert r.stdout == b"200 1.1"
    wait_for(lambda: '"HEAD /size/100 HTTP/2.0"' in proxy.logs(), message="an HTTP/2.0 log line")
    assert '"GET / HTTP/1.1"' in proxy.logs()


def test_expect_100_continue(make_proxy: MakeProxy, origin: Origin) -> None:
    """An HTTP/2 client sending ``expect: 100-continue`` gets the origin's 100, then the answer."""
    port, _proxy = start(make_proxy, origin)
    r = subprocess.run(
        ["curl", "-sS", "-v", "--http2-prior-knowledge", "-H", "Expect: 100-continue", "--data-binary", "@-",
         f"http://127.0.0.1:{port}/upload"],
        input=b"x" * 100000, capture_output=True, timeout=60,
    )  # fmt: skip
    assert json.loads(r.stdout)["bytes"] == 100000
    assert b"HTTP/2 100" in r.stderr


def test_proto_h2_bind_and_errors(make_proxy: MakeProxy, origin: Origin) -> None:
    """``bind ... proto h2``: HTTP/2 only. The error cases get their GOAWAY/RST answers and the
    worker's memory stays flat; it still answers afterwards."""
    port, proxy = start(make_proxy, origin, bind="proto h2")
    r = curl(
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        f"http://127.0.0.1:{port}/",
    )
    assert r.stdout == b"200 2"
    expected = {
        "bad-preface": "GOAWAY PROTOCOL_ERROR",
        "stream-id-reuse": "RST_STREAM STREAM_CLOSED",
        "stream-id-lower": "GOAWAY PROTOCOL_ERROR",
        "oversized-headers": "status 431",
        "hpack-bomb": "GOAWAY ENHANCE_YOUR_CALM",
        "window-overflow": "GOAWAY FLOW_CONTROL_ERROR",
        "rapid-reset": "GOAWAY ENHANCE_YOUR_CALM",
        "continuation-flood": "GOAWAY PROTOCOL_ERROR",
        "settings-flood": "GOAWAY ENHANCE_YOUR_CALM",
        "ping-flood": "GOAWAY ENHANCE_YOUR_CALM",
        "too-many-streams": "GOAWAY ENHANCE_YOUR_CALM",
    }
    worker = proxy.worker_pids()[0]
    for name in expected:
        h2_attacks.run_case("127.0.0.1", port, name, timeout=10)  # warm-up: the first run allocates
    before = rss_kib(worker)
    for _ in range(3):
        for name, answer in expected.items():
            assert h2_attacks.run_case("127.0.0.1", port, name, timeout=10).startswith(answer), name
    assert rss_kib(worker) - before < 8 * 1024
    assert h2_attacks.plain_get("127.0.0.1", port) == "200"
    assert proxy.worker_pids() == [worker]


def _make_cert(tmp_path: Path) -> Path:
    key, crt, pem = tmp_path / "k.pem", tmp_path / "c.pem", tmp_path / "site.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "2", "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    return pem


def test_tls_alpn_h2_and_http11(make_proxy: MakeProxy, origin: Origin, tmp_path: Path) -> None:
    """``bind ... ssl crt PEM alpn h2,http/1.1``: curl --http2 negotiates h2, --http1.1 gets HTTP/1.1;
    a TLS bind without alpn is HTTP/1.1; ``ssl-default-bind-options`` apply (TLS 1.1 refused);
    ``ssl_fc`` is true on TLS connections only (as an ACL and as a sample)."""
    pem = _make_cert(tmp_path)
    port2, port3 = free_port(), free_port()
    alpn = f"ssl crt {pem} alpn h2,http/1.1"
    glob = "ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets"
    more = (
        f"bind 127.0.0.1:{port2} ssl crt {pem}\n    bind 127.0.0.1:{port3}\n"
        "    http-request set-header X-Tls %[ssl_fc]\n    http-request set-header X-Acl yes if { ssl_fc }"
    )
    port, proxy = start(make_proxy, origin, bind=alpn, more=more, glob=glob)
    for url, tls in ((f"https://127.0.0.1:{port}/echo", "1"), (f"http://127.0.0.1:{port3}/echo", "0")):
        headers = {k.lower(): v for k, v in json.loads(curl("-k", "--http2", url).stdout)["headers"]}
        assert headers["x-tls"] == tls and ("x-acl" in headers) == (tls == "1")
    fmt = ["-k", "-o", "/dev/null", "-w", "%{http_code} %{http_version}"]
    assert (
        curl("--http2", *fmt, f"https://localhost:{port}/", "--resolve", f"localhost:{port}:127.0.0.1").stdout
        == b"200 2"
    )
    assert curl("--http1.1", *fmt, f"https://127.0.0.1:{port}/").stdout == b"200 1.1"
    assert curl("--http2", *fmt, f"https://127.0.0.1:{port2}/").stdout == b"200 1.1"
    r = curl("-k", "--http2", f"https://127.0.0.1:{port}/size/{2 * MIB}")
    assert r.stdout == PATTERN[: 2 * MIB]
    r = curl("--tlsv1.1", "--tls-max", "1.1", *fmt, f"https://127.0.0.1:{port}/")
    assert r.returncode != 0
    wait_for(lambda: '"GET / HTTP/2.0"' in proxy.logs(), message="an HTTP/2.0 log line")
    assert " fe~ be/s1 " in proxy.logs()  # HAProxy's %ft: the frontend's name, '~' over TLS


def test_bad_pem_is_one_alert(tmp_path: Path, origin: Origin) -> None:
    pem = tmp_path / "bad.pem"
    pem.write_text("not a certificate\n")
    cfg = tmp_path / "p.cfg"
    port = free_port()
    cfg.write_text(
        proxy_config(port, origin.port).replace(
            f"bind 127.0.0.1:{port}", f"bind 127.0.0.1:{port} ssl crt {pem}"
        )
    )
    r = subprocess.run([sys.executable, "-m", "proxy", "-c", "-f", str(cfg)], capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 1 and "Traceback" not in err
    assert f"[{cfg}:14] : 'bind': unable to load SSL certificate and private key from PEM file '{pem}'" in err


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_h2load_many_streams(make_proxy: MakeProxy, origin: Origin) -> None:
    """h2load -c10 -m10: every request succeeds, on two workers."""
    port, _proxy = start(make_proxy, origin, nbthread=2)
    r = subprocess.run(
        ["h2load", "-c10", "-m10", "-n2000", f"http://127.0.0.1:{port}/"], capture_output=True, timeout=120
    )
    out = r.stdout.decode()
    assert "2000 succeeded, 0 failed, 0 errored" in out, out
    assert "2000 2xx" in out, out


def test_slow_client_is_not_buffered(make_proxy: MakeProxy, origin: Origin) -> None:
    """A client that never opens its window beyond the initial 64 KiB: the proxy sends that, then
    holds the server (its connection paused) instead of buffering the 32 MiB response; the worker's
    memory does not grow by the response's size. Opening the window then lets it all through."""
    port, proxy = start(make_proxy, origin)
    worker = proxy.worker_pids()[0]
    before = rss_kib(worker)
    size = 32 * MIB
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"),
                            (b":path", b"/size/%d" % size)], end_stream=True)  # fmt: skip
    got = 0
    ended = False
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(client.data_to_send())
        while got < 65535:
            for ev in client.receive_data(sock.recv(65536)):
                if isinstance(ev, DataReceived):
                    got += len(ev.data or b"")
            sock.sendall(client.data_to_send())
        assert got == 65535
        # The origin keeps writing until its socket buffers and our server connection's fill up.
        wait_for(lambda: origin.stats()["active"] == 1, message="the request at the origin")
        assert rss_kib(worker) - before < 16 * 1024
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(65536)  # nothing beyond the window
        sock.settimeout(30)
        client.acknowledge_received_data(65535, 1)
        client.increment_flow_control_window(8 * MIB)
        client.increment_flow_control_window(8 * MIB, stream_id=1)
        sock.sendall(client.data_to_send())
        while not ended:
            for ev in client.receive_data(sock.recv(1 << 20)):
                if isinstance(ev, DataReceived):
                    got += len(ev.data or b"")
                    client.acknowledge_received_data(ev.flow_controlled_length or 0, 1)
                elif isinstance(ev, StreamEnded):
                    ended = True
            sock.sendall(client.data_to_send())
    assert got == size
    assert rss_kib(worker) - before < 16 * 1024


def test_soft_stop_lets_h2_streams_finish(make_proxy: MakeProxy, origin: Origin) -> None:
    """SIGUSR1 with an HTTP/2 request in flight: GOAWAY, the response still arrives, the worker exits."""
    port, proxy = start(make_proxy, origin)
    with subprocess.Popen(
        ["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/delay/1500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        wait_for(lambda: origin.stats()["active"] == 1, message="the request at the origin")
        proxy.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=30)
    assert out == b"200", err
    assert proxy.proc is not None and proxy.proc.wait(timeout=20) == 0
