"""errorfile, errorfiles and http-errors: parsing the files, resolving the sections, choosing the page
(backend, then frontend, then the default), and framing it for HTTP/1; and Debian's stock config."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import World, request, worlds

from proxy.config import ConfigError, load
from proxy.config.errorfile import PageError, parse_page
from proxy.h1 import ProtocolError, writer
from proxy.replies import Reply, error_body, error_reply, local_reply

GOOD = Path(__file__).parent / "data" / "config" / "good"
TIMEOUTS = "    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n"
PAGE = (
    b"HTTP/1.0 503 Busy\r\nCache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"\r\nsorry\n"
)


@pytest.fixture
def make_world() -> Iterator[Callable[..., World]]:
    yield from worlds()


def write(directory: Path, name: str, data: bytes | str) -> str:
    path = directory / name
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return str(path)


# -- the file format ---------------------------------------------------------------------------------


def test_parse_page() -> None:
    page = parse_page(PAGE, "x.http")
    assert (page.status, page.reason, page.body, page.source) == (503, b"Busy", b"sorry\n", "x.http")
    assert page.headers[0] == (b"Cache-Control", b"no-cache") and not page.silent
    lf = parse_page(b"HTTP/1.1 404 Not here\nContent-Length: 4\n\nnope")
    assert (lf.status, lf.reason, lf.body) == (404, b"Not here", b"nope")
    assert parse_page(b"").silent
    assert parse_page(b"HTTP/1.1 200\r\n\r\n").reason == b""


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"HTTP/1.1 404 Not\r\nX: y", "unable to parse headers (no empty line after them)"),
        (b"garbage\r\n\r\n", "invalid status line"),
        (b"HTTP/1.1 404 N\r\nbad header\r\n\r\n", "unable to parse headers (invalid line"),
        (b"HTTP/1.1 404 N\r\n folded\r\n\r\n", "unable to parse headers (invalid line"),
        (b"HTTP/1.0 404 N\r\nContent-Length: 3\r\n\r\nabcdef",
         "payload size does not match the announced content-length (6 != 3)"),
        (b"HTTP/1.1 404 N\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "chunked bodies are not supported"),
    ],
)  # fmt: skip
def test_parse_page_refuses(raw: bytes, complaint: str) -> None:
    with pytest.raises(PageError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        parse_page(raw)


# -- the configuration -------------------------------------------------------------------------------


def test_errorfile_errors_have_haproxy_words(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.http", b"HTTP/1.0 404 N\r\nContent-Length: 3\r\n\r\nabcdef")
    ok = write(tmp_path, "ok.http", PAGE)
    path = write(
        tmp_path,
        "t.cfg",
        f"defaults\n    errorfile 999 {ok}\n    errorfile 302 {ok}\n    errorfile 503 {tmp_path}/missing\n"
        f"    errorfile 503\n    errorfile 404 {bad}\nhttp-errors site\n    errorfile 404 {ok}\n"
        f"http-errors site\n",
    )
    with pytest.raises(ConfigError) as err:
        load([path], env={})
    assert [m.split(" : ", 2)[2] for m in err.value.messages] == [
        "errorfile : status code '999' not handled.",
        "errorfile : status code '302' not handled.",
        f"errorfile : error opening file '{tmp_path}/missing'.",
        "errorfile : expects <status_code> and <file> as arguments.",
        f"errorfile : '{bad}': payload size does not match the announced content-length (6 != 3)",
        f"http-errors section 'site' already exists (declared at {path}:7).",
    ]


def test_errorfiles_resolve_in_order_and_inherit(tmp_path: Path) -> None:
    pages = {code: write(tmp_path, f"{code}.http", PAGE.replace(b"503 Busy", b"%d X%d" % (code, n)))
             for n, code in enumerate((400, 403, 404, 503))}  # fmt: skip
    other = write(tmp_path, "other.http", PAGE.replace(b"503 Busy", b"503 Other"))
    text = f"""\
defaults
    {TIMEOUTS.strip()}
    errorfile 503 {other}
    errorfiles site
frontend fe
    bind :18080
    default_backend be
    errorfile 403 {other}
    errorfiles site 404 403 408
backend be
    errorfiles site 503
    errorfile 503 {other}
    server s1 127.0.0.1:18081
http-errors site
    errorfile 400 {pages[400]}
    errorfile 403 {pages[403]}
    errorfile 404 {pages[404]}
    errorfile 503 {pages[503]}
"""
    cfg = load([write(tmp_path, "t.cfg", text)], env={})
    fe, be = cfg.frontends["fe"].errorfiles, cfg.backends["be"].errorfiles
    assert {c: p.reason for c, p in fe.items()} == {400: b"X0", 403: b"X1", 404: b"X2", 503: b"X3"}
    assert be[503].reason == b"Other" and be[400].reason == b"X0"  # errorfile after errorfiles wins
    (warning,) = cfg.warnings
    assert warning == (
        "[WARNING] config : config: proxy 'fe' : status '408' not declared in http-errors section 'site'"
        f" (at {tmp_path}/t.cfg:11)."
    )


def test_unknown_http_errors_section(tmp_path: Path) -> None:
    path = write(tmp_path, "t.cfg", "frontend fe\n    bind :18080\n    errorfiles nosuch\n")
    with pytest.raises(ConfigError) as err:
        load([path], env={})
    assert err.value.messages == [
        f"[ALERT] config : proxy 'fe': unknown http-errors section 'nosuch' (at {path}:3)."
    ]


def test_debian_stock_config_loads_with_tls_warnings_only() -> None:
    cfg = load([str(GOOD / "stock_debian.cfg")], env={"POOLPROXY_T_DIR": str(GOOD)})
    assert [w.split("'")[1] for w in cfg.warnings] == [
        "ca-base", "crt-base", "ssl-default-bind-ciphers", "ssl-default-bind-ciphersuites",
        "ssl-default-bind-options",
    ]  # fmt: skip
    assert all("TLS binds and servers are not supported yet" in w for w in cfg.warnings)
    g = cfg.global_
    assert (g.chroot, g.uid, g.daemon, g.stats_timeout) == ("/var/lib/haproxy", pwd.getpwnam("nobody").pw_uid,
                                                            True, 30.0)  # fmt: skip
    assert sorted(cfg.frontends["fe"].errorfiles) == [400, 403, 408, 500, 502, 503, 504]
    assert cfg.backends["be"].errorfiles[503].body.startswith(b"<html><body><h1>503 from the test")
    fe = cfg.frontends["fe"]
    assert fe.httplog and fe.dontlognull and fe.log_global and fe.timeouts.client == 50.0


STOCK = Path("/etc/haproxy/haproxy.cfg")


@pytest.mark.skipif(
    not STOCK.exists() or "haproxy" not in {p.pw_name for p in pwd.getpwall()},
    reason="needs Debian's haproxy package (its config and its 'haproxy' account)",
)
def test_the_installed_stock_config(tmp_path: Path) -> None:
    tail = "\nfrontend fe\n    bind :18080\n    default_backend be\nbackend be\n    server s1 127.0.0.1:1\n"
    path = write(tmp_path, "stock.cfg", STOCK.read_text() + tail)
    cfg = load([path], env=dict(os.environ))
    assert cfg.global_.chroot == "/var/lib/haproxy" and len(cfg.frontends["fe"].errorfiles) == 7


# -- choosing and framing the page -------------------------------------------------------------------


def test_stream_uses_the_backend_page_then_the_frontend_page(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.srv.maint = True
    w.fe_cfg.errorfiles[503] = parse_page(PAGE.replace(b"Busy", b"Frontend"))
    stream, side = w.new_stream(request())
    w.sync(stream.start)
    assert side.replies[0].reason == b"Frontend" and side.replies[0].body == b"sorry\n"
    assert stream.bytes_out == len(b"sorry\n")
    w.be_cfg.errorfiles[503] = parse_page(PAGE.replace(b"Busy", b"Backend"))
    stream, side = w.new_stream(request())
    w.sync(stream.start)
    assert side.replies[0].reason == b"Backend"
    w.be_cfg.errorfiles[503] = parse_page(b"")
    stream, side = w.new_stream(request())
    w.sync(stream.start)
    assert side.replies[0].silent and stream.bytes_out == 0


def test_writer_frames_a_reply() -> None:
    page = error_reply(503, parse_page(PAGE))
    out = writer.reply(page, keep_alive=False)
    assert out == (
        b"HTTP/1.1 503 Busy\r\nCache-Control: no-cache\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
        b"Connection: close\r\n\r\nsorry\n"
    )  # the file's Connection is the mux's business
    head = writer.reply(local_reply(200, b"ok", "text/plain"), keep_alive=True, head_only=True)
    assert head.endswith(b"Content-Length: 2\r\n\r\n")
    default = writer.reply(error_reply(504), keep_alive=False, version=b"1.0")
    assert default.startswith(b"HTTP/1.1 504 Gateway Timeout\r\nCache-Control: no-cache\r\n")
    assert default.endswith(error_body(504))
    with pytest.raises(ProtocolError) as err:
        writer.reply(Reply(200, [(b"X", b"a\r\nInjected: 1")]), keep_alive=True)
    assert err.value.status == 500


EXAMPLES = Path("/usr/share/doc/haproxy/examples")
# What docs/configuration.md records for each of Debian's examples: substrings of the refusals.
EXAMPLE_RESULTS = {
    "quick-test.cfg": [],
    "basic-config-edge.cfg": ["'option socket-stats'", "bind option 'ssl' is not supported yet",
                              "'compression'",
                              "'http-request cache-use'", "section 'cache'", "'cookie'", "'zero-warning'"],
    "content-sw-sample.cfg": ["'monitor-uri'", "'option prefer-last-server'", "'option redispatch'",
                              "parameter 'check'", "'fullconn'", "parameter 'minconn'"],
    "option-http_proxy.cfg": ["criterion 'url_ip'", "'http-request set-dst'", "missing port",
                              "criterion 'res.hdr(content-type)'"],
    "socks4.cfg": ["mode tcp", "'option tcplog'", "'option tcp-check'", "parameter 'ssl'", "'stats admin'"],
    "transparent_proxy.cfg": ["'usesrc client' is not supported"],
    "wurfl-example.cfg": ["'wurfl-data-file'"],
}  # fmt: skip


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="Debian's haproxy examples are not installed")
@pytest.mark.parametrize("name", sorted(EXAMPLE_RESULTS))
def test_debian_examples_are_judged_as_documented(name: str) -> None:
    from proxy.config import check

    messages = check([str(EXAMPLES / name)], env={})
    for text in EXAMPLE_RESULTS[name]:
        assert any(text in m for m in messages), (text, messages)
    assert bool(messages) == bool(EXAMPLE_RESULTS[name])
