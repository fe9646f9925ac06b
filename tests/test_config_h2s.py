"""The server-side HTTP/2 and TLS keywords: ``proto``, ``ssl``, ``verify``, ``ca-file``, ``sni``,
``alpn``, ``max-reuse`` on servers; ``tune.h2.be.*``, ``ssl-server-verify`` and
``ssl-default-server-*`` in ``global``; and the TLS context built from them."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from proxy.config import ConfigError, check, load
from proxy.config.model import Global, Server
from proxy.logformat import SampleCtx, render
from proxy.message import RequestHead
from proxy.server_tls import client_context


def cfg(tmp_path: Path, server: str, glob: str = "") -> str:
    path = tmp_path / "t.cfg"
    path.write_text(
        f"global\n{glob}\ndefaults\n    timeout connect 1s\n    timeout server 1s\n"
        f"backend be\n    server s1 127.0.0.1:8443 {server}\n"
    )
    return str(path)


def test_server_keywords(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    server = f"proto h2 ssl verify required ca-file {ca} sni req.hdr(host) alpn h2,http/1.1 max-reuse 3"
    s = load([cfg(tmp_path, server)]).backends["be"].servers[0]
    assert (s.proto, s.ssl, s.verify, s.ca_file, s.alpn, s.max_reuse) == ("h2", True, "required", str(ca),
                                                                         ("h2", "http/1.1"), 3)  # fmt: skip
    assert s.sni is not None
    ctx = SampleCtx(RequestHead(b"GET", b"/", b"1.1", [(b"Host", b"a.example")]), "10.0.0.1", 1, 0.0, "fe")
    assert render(s.sni, ctx) == b"a.example"
    plain = load([cfg(tmp_path, "")]).backends["be"].servers[0]
    assert (plain.proto, plain.ssl, plain.max_reuse, plain.sni) == ("", False, -1, None)


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("proto h3", "unsupported protocol 'h3'"),
        ("ssl alpn h3", "unsupported protocol 'h3'"),
        ("ssl verify maybe", "expects 'none' or 'required'"),
        ("ssl", "verify is enabled by default but no CA file specified"),
        ("ssl verify none ca-file /nonexistent/ca.pem", "unable to load CA file"),
        ("sni nosuchfetch(x)", "'sni'"),
        ("max-reuse -2", "'max-reuse'"),
        ("ssl verify none crt /x.pem", "parameter 'crt' is not supported yet"),
    ],
)
def test_server_keyword_errors(tmp_path: Path, server: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load([cfg(tmp_path, server)])
    assert message in str(err.value), str(err.value)


def test_ssl_server_verify_none_is_the_default_verify(tmp_path: Path) -> None:
    assert check([cfg(tmp_path, "ssl", "    ssl-server-verify none")]) == []
    with pytest.raises(ConfigError):
        load([cfg(tmp_path, "ssl verify required", "    ssl-server-verify none")])  # its own verify wins


def test_global_keywords(tmp_path: Path) -> None:
    glob = (
        "    tune.h2.be.max-concurrent-streams 10\n    tune.h2.be.initial-window-size 1048576\n"
        "    ssl-default-server-ciphers ECDHE+AESGCM\n"
        "    ssl-default-server-options no-tlsv10 ssl-min-ver TLSv1.2 no-tls-tickets\n"
    )
    g = load([cfg(tmp_path, "", glob)]).global_
    assert (g.h2_be_max_concurrent_streams, g.h2_be_initial_window_size) == (10, 1048576)
    assert g.ssl_default_server_ciphers == "ECDHE+AESGCM"
    assert g.ssl_default_server_options == ("no-tlsv10", "ssl-min-ver", "TLSv1.2", "no-tls-tickets")
    for bad, message in [
        ("tune.h2.be.initial-window-size 0", "out of range"),
        ("ssl-default-server-ciphers NOPE-NOTHING", "unable to set the cipher list"),
        ("ssl-default-server-options no-sslv2", "unsupported option 'no-sslv2'"),
        ("ssl-default-server-options ssl-min-ver TLSv9", "'ssl-min-ver' expects one of"),
        ("ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256", "cannot choose TLS 1.3 cipher suites"),
    ]:
        with pytest.raises(ConfigError) as err:
            load([cfg(tmp_path, "", f"    {bad}")])
        assert message in str(err.value), (bad, str(err.value))


def test_client_context() -> None:
    srv = Server("s1", "127.0.0.1", 443, ssl=True, verify="none", alpn=("h2", "http/1.1"))
    ctx = client_context(srv, Global(ssl_default_server_options=("ssl-min-ver", "TLSv1.2", "no-tls-tickets")))
    assert ctx.verify_mode is ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2 and ctx.options & ssl.OP_NO_TICKET
    strict = client_context(Server("s1", "127.0.0.1", 443, ssl=True), Global())
    assert strict.verify_mode is ssl.CERT_REQUIRED and not strict.check_hostname  # no SNI: chain only
