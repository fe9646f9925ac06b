"""The pure HTTP/2 and TLS pieces: header translation (proxy.h2.translate), the flood counters
(proxy.h2.guard), TLS settings (proxy.tls) and their configuration keywords."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from proxy import tls
from proxy.config import ConfigError, load
from proxy.config.model import BindTls, TlsOptions
from proxy.h2 import Settings, reply_fields, request_head, response_fields, trailer_fields
from proxy.h2.guard import PERIOD, Budget, Guard
from proxy.h2.translate import RequestError
from proxy.message import Framing, ResponseHead
from proxy.replies import Reply

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"h:8"), (b":path", b"/p?q")]


def head_of(fields: list[tuple[bytes, bytes]], end: bool = True, **kw: int) -> object:
    limits = {"max_head": 16384, "max_headers": 101, **kw}
    return request_head(fields, end_stream=end, **limits)[0]


def test_request_head_translation() -> None:
    head, scheme = request_head(
        [*BASE, (b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2"), (b"te", b"trailers")],
        end_stream=False, max_head=16384, max_headers=101,
    )  # fmt: skip
    assert scheme == b"https"
    assert (head.method, head.target, head.version, head.body) == (b"GET", b"/p?q", b"2.0", Framing.CHUNKED)
    assert head.headers == [(b"host", b"h:8"), (b"cookie", b"a=1; b=2"), (b"x", b"y"), (b"te", b"trailers")]
    assert head.upgrade is None and head.keep_alive
    h = head_of([*BASE, (b"host", b"other"), (b"content-length", b"5")], end=False)
    assert h.headers == [(b"host", b"other"), (b"content-length", b"5")]  # type: ignore[attr-defined]
    assert (h.body, h.content_length) == (Framing.LENGTH, 5)  # type: ignore[attr-defined]
    assert head_of([*BASE, (b"expect", b"100-continue")], end=False).expect_continue  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fields", "status", "malformed"),
    [
        ([*BASE, (b"content-length", b"x")], 400, False),
        ([*BASE, (b"content-length", b"1"), (b"content-length", b"2")], 400, False),
        ([*BASE, (b"content-length", b"3")], 400, False),  # END_STREAM with a length
        ([(b":method", b"CONNECT"), (b":authority", b"h:443")], 405, False),
        ([*BASE[:3]], 400, True),
        ([*BASE, (b"Host", b"x")], 400, True),
        ([*BASE, (b"upgrade", b"h2c")], 400, True),
        ([*BASE, (b"x", b"v\x00")], 400, True),
        ([*BASE, (b":status", b"200")], 400, True),
        ([*BASE, (b"x", b"v" * 20000)], 431, False),
        ([*BASE, *[(b"x%d" % i, b"v") for i in range(102)]], 431, False),
    ],
)
def test_request_head_refusals(fields: list[tuple[bytes, bytes]], status: int, malformed: bool) -> None:
    with pytest.raises(RequestError) as err:
        head_of(fields)
    assert (err.value.status, err.value.malformed) == (status, malformed)


def test_response_fields() -> None:
    resp = ResponseHead(
        200, b"OK", b"1.1",
        [(b"Content-Type", b"t"), (b"Connection", b"x-a"), (b"X-A", b"1"), (b"Transfer-Encoding", b"chunked"),
         (b"Content-Length", b"9"), (b"Keep-Alive", b"1"), (b"Upgrade", b"z"), (b"TE", b"trailers")],
        body=Framing.CHUNKED,
    )  # fmt: skip
    assert response_fields(resp, head_only=False) == ([(b":status", b"200"), (b"content-type", b"t")], False)
    fixed = ResponseHead(200, b"", b"1.1", [], body=Framing.LENGTH, content_length=3)
    assert response_fields(fixed, head_only=False) == (
        [(b":status", b"200"), (b"content-length", b"3")],
        False,
    )
    assert response_fields(fixed, head_only=True)[1] is True
    empty = ResponseHead(200, b"", b"1.1", [], body=Framing.LENGTH, content_length=0)
    assert response_fields(empty, head_only=False)[1] is True
    not_modified = ResponseHead(304, b"", b"1.1", [], body=Framing.NONE, content_length=10)
    assert response_fields(not_modified, head_only=False) == (
        [(b":status", b"304"), (b"content-length", b"10")],
        True,
    )
    no_content = ResponseHead(
        204, b"", b"1.1", [(b"content-length", b"0")], body=Framing.NONE, content_length=0
    )
    assert response_fields(no_content, head_only=False) == ([(b":status", b"204")], True)


def test_reply_and_trailer_fields() -> None:
    reply = Reply(302, [(b"Location", b"/x"), (b"Connection", b"close"), (b"Content-Length", b"1")], b"body")
    assert reply_fields(reply, head_only=False) == (
        [(b":status", b"302"), (b"location", b"/x"), (b"content-length", b"4")],
        b"body",
    )
    assert reply_fields(reply, head_only=True)[1] == b""
    assert reply_fields(Reply(204, [], b"x"), head_only=False) == ([(b":status", b"204")], b"")
    assert trailer_fields([(b"X-Sum", b"1"), (b"Host", b"h"), (b"Transfer-Encoding", b"x")]) == [
        (b"x-sum", b"1")
    ]


def test_settings_derived_limits() -> None:
    s = Settings(max_concurrent_streams=10, initial_window_size=1000, max_head=100, max_headers=2)
    assert (s.max_header_list_size, s.decoder_limit, s.connection_window) == (164, 328, 10000)
    assert Settings(initial_window_size=2**31 - 1).connection_window == 2**31 - 1


def test_budget_and_guard() -> None:
    b = Budget(3)
    assert [b.spend(10.0) for _ in range(4)] == [True, True, True, False]
    assert b.spend(10.0 + PERIOD)  # a new period
    g = Guard(max_streams=100)
    assert all(g.cancelled(5.0) is None for _ in range(200))
    assert g.cancelled(5.0) is not None and "rapid reset" in str(g.cancelled(5.0))
    assert g.cancelled(5.0 + PERIOD) is None
    g = Guard(max_streams=1, glitches_threshold=2)
    assert g.glitch() is None and g.glitch() is None and g.glitch() is not None
    g = Guard(max_streams=1)
    assert all(g.control_frame(1.0) is None for _ in range(100)) and g.control_frame(1.0) is not None


# -- TLS ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "k.pem", d / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "2", "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    both = d / "site.pem"
    both.write_bytes(crt.read_bytes() + key.read_bytes())
    return both


def test_version_bounds() -> None:
    assert tls.version_bounds(TlsOptions()) == ("TLSv1.2", "TLSv1.3")
    assert tls.version_bounds(TlsOptions(min_ver="TLSv1.0", disabled=frozenset({"TLSv1.0"}))) == (
        "TLSv1.1",
        "TLSv1.3",
    )
    assert tls.version_bounds(TlsOptions(disabled=frozenset({"TLSv1.3"}))) == ("TLSv1.2", "TLSv1.2")
    with pytest.raises(tls.TlsError, match="hole"):
        tls.version_bounds(TlsOptions(min_ver="TLSv1.1", disabled=frozenset({"TLSv1.2"})))
    with pytest.raises(tls.TlsError, match="every TLS version"):
        tls.version_bounds(TlsOptions(disabled=frozenset({"TLSv1.2", "TLSv1.3"})))


def test_options_alpn_and_suites() -> None:
    opts = TlsOptions()
    words = ["ssl-min-ver", "TLSv1.3", "no-tls-tickets", "no-sslv3", "prefer-client-ciphers"]
    while words:
        words = words[tls.apply_option(opts, words) :]
    assert (opts.min_ver, opts.no_tickets, opts.prefer_client_ciphers) == ("TLSv1.3", True, True)
    assert "SSLv3" in opts.disabled
    with pytest.raises(tls.TlsError, match="unknown TLS option"):
        tls.apply_option(opts, ["allow-0rtt"])
    assert tls.parse_alpn("h2,http/1.1") == ("h2", "http/1.1")
    with pytest.raises(tls.TlsError):
        tls.parse_alpn("h3")
    tls.check_ciphersuites("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")
    with pytest.raises(tls.TlsError, match="cannot set them"):
        tls.check_ciphersuites("TLS_AES_128_GCM_SHA256")


def test_server_context(pem: Path, tmp_path: Path) -> None:
    defaults = TlsOptions(no_tickets=True, ciphers="ECDHE+AESGCM")
    ctx = tls.server_context(BindTls(str(pem), ("h2", "http/1.1"), TlsOptions(max_ver="TLSv1.2")), defaults)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_TICKET and ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert all("ECDHE" in c["name"] or c["protocol"] == "TLSv1.3" for c in ctx.get_ciphers())
    with pytest.raises(tls.TlsError, match="directory"):
        tls.server_context(BindTls(str(tmp_path)), TlsOptions())
    with pytest.raises(tls.TlsError, match="file not found"):
        tls.server_context(BindTls(str(tmp_path / "none.pem")), TlsOptions())
    with pytest.raises(tls.TlsError, match="cipher list"):
        tls.server_context(BindTls(str(pem)), TlsOptions(ciphers="NOPE"))


def _load(tmp_path: Path, text: str) -> object:
    cfg = tmp_path / "p.cfg"
    cfg.write_text(text)
    return load([str(cfg)], env={})


FRONT = "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n    timeout connect 5s\n"


def test_config_binds_and_tune_h2(pem: Path, tmp_path: Path) -> None:
    config = _load(tmp_path, f"""global
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
    tune.h2.max-concurrent-streams 50
    tune.h2.fe.initial-window-size 1048576
    tune.h2.fe.max-total-streams 1000
    tune.h2.max-frame-size 32768
{FRONT}frontend fe
    bind 127.0.0.1:1 ssl crt {pem} alpn h2,http/1.1 ssl-max-ver TLSv1.3 ciphers ECDHE+AESGCM
    bind 127.0.0.1:2 proto h2 name x
    bind 127.0.0.1:3
    default_backend be
backend be
    server s 127.0.0.1:4
""")  # fmt: skip
    g = config.global_  # type: ignore[attr-defined]
    assert (g.h2_max_concurrent_streams, g.h2_fe_initial_window_size, g.h2_fe_max_total_streams) == (
        50,
        1048576,
        1000,
    )
    assert g.h2_max_frame_size == 32768 and g.ssl_bind.no_tickets and g.ssl_bind.min_ver == "TLSv1.2"
    binds = config.frontends["fe"].binds  # type: ignore[attr-defined]
    assert binds[0].tls is not None and binds[0].tls.alpn == ("h2", "http/1.1")
    assert binds[0].tls.options.max_ver == "TLSv1.3" and binds[0].tls.options.ciphers == "ECDHE+AESGCM"
    assert (binds[1].proto, binds[1].tls, binds[2].proto) == ("h2", None, "")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("bind :1 ssl", "'ssl' needs a certificate"),
        ("bind :1 crt {pem}", "needs 'ssl' on the same line"),
        ("bind :1 ssl crt {pem} alpn h3", "poolproxy speaks h2 and http/1.1 only"),
        ("bind :1 ssl crt-list /x", "one PEM file per bind line"),
        ("bind :1 ssl crt {pem} verify required", "client certificates are not verified"),
        ("bind :1 proto h3", "'proto h3' is not supported"),
        ("bind :1 ssl crt {pem} ciphersuites TLS_AES_128_GCM_SHA256", "cannot set them"),
        ("bind :1 ssl crt {pem} ssl-min-ver TLSv9", "expects one of"),
        ("bind :1 tfo", "bind option 'tfo' is not supported"),
    ],
)
def test_config_bind_refusals(pem: Path, tmp_path: Path, line: str, message: str) -> None:
    backend = "    default_backend be\nbackend be\n    server s 127.0.0.1:4\n"
    text = f"{FRONT}frontend fe\n    {line.format(pem=pem)}\n{backend}"
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert message in str(err.value) and "[" in str(err.value)
