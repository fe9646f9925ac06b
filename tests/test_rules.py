"""The rule engine: http-request / http-response / http-after-response actions on neutral heads, as
configured (each case is parsed from configuration lines), and the frontend's order of evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
from fakes import World, pooled_conn, request, worlds

from proxy.backend import Backend
from proxy.config import ConfigError, load
from proxy.config.errorfile import parse_page
from proxy.config.model import HttpRule, Proxy
from proxy.frontend import Frontend
from proxy.h1 import Limits
from proxy.logformat import SampleCtx, Stage, parse
from proxy.message import Headers, RequestHead
from proxy.pool import ListKind
from proxy.rules import RuleCtx, Stop, after_response_rules, request_ctx, request_rules, response_rules

TIMEOUTS = "    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n"


def proxy(tmp_path: Path, *lines: str, section: str = "frontend fe\n    bind :18080") -> Proxy:
    path = tmp_path / "t.cfg"
    path.write_text("defaults\n" + TIMEOUTS + section + "\n" + "".join(f"    {line}\n" for line in lines))
    cfg = load([str(path)], env={})
    return (cfg.frontends or cfg.backends)[next(iter(cfg.frontends or cfg.backends))]


def head(target: bytes = b"/p?q=1", *headers: tuple[bytes, bytes]) -> RequestHead:
    return RequestHead(b"GET", target, b"1.1", list(headers) or [(b"Host", b"a.example")])


def rule_ctx(h: RequestHead) -> RuleCtx:
    sample = SampleCtx(h, "10.0.0.1", 4000, 1e9, "fe", local_addr=lambda: ("127.0.0.1", 80))
    return RuleCtx(request_ctx(h, "10.0.0.1"), sample)


def run(tmp_path: Path, h: RequestHead, *lines: str) -> Stop | None:
    return request_rules(proxy(tmp_path, *lines).http_request, h, rule_ctx(h))


def names(headers: Headers) -> list[tuple[str, str]]:
    return [(n.decode(), v.decode()) for n, v in headers]


# -- header actions -----------------------------------------------------------------------------------


def test_set_add_del_header(tmp_path: Path) -> None:
    traces = [(b"X-Trace-1", b"t"), (b"X-Trace-2", b"t")]
    h = head(b"/", (b"Host", b"a"), (b"X-A", b"1"), (b"x-a", b"2"), *traces)
    stop = run(
        tmp_path, h,
        "http-request set-header X-A %[src]",
        "http-request add-header X-B first",
        "http-request add-header X-B %[req.hdr(x-a)]",  # sees the header set just above
        "http-request del-header x-trace -m beg",
        "http-request del-header host",
    )  # fmt: skip
    assert stop is None
    assert names(h.headers) == [("X-A", "10.0.0.1"), ("X-B", "first"), ("X-B", "10.0.0.1")]


def test_del_header_methods(tmp_path: Path) -> None:
    fields = [(b"X-One", b"1"), (b"X-Two", b"2"), (b"Other-End", b"3"), (b"Sub-X-Mid", b"4")]
    for line, kept in [
        ("http-request del-header X-ONE", ["X-Two", "Other-End", "Sub-X-Mid"]),
        ("http-request del-header -end -m end", ["X-One", "X-Two", "Sub-X-Mid"]),
        ("http-request del-header x- -m sub", ["Other-End"]),
        ("http-request del-header ^x-(one|two)$ -m reg", ["Other-End", "Sub-X-Mid"]),
    ]:
        h = head(b"/", *fields)
        run(tmp_path, h, line)
        assert [n for n, _ in names(h.headers)] == kept, line


def test_replace_header_and_value(tmp_path: Path) -> None:
    h = head(b"/", (b"Cookie", b"foo=bar; expires=x"), (b"X-Fwd", b"192.168.1.1, 10.0.0.9, 192.168.1.2"))
    run(
        tmp_path, h,
        r"http-request replace-header Cookie foo=([^;]*);(.*) foo=\1;ip=%ci;\2",
        r"http-request replace-value X-Fwd ^192\.168\.(.*)$ 172.16.\1",
        r"http-request replace-header X-Absent (.*) never",
    )  # fmt: skip
    assert names(h.headers) == [("Cookie", "foo=bar;ip=10.0.0.1; expires=x"),
                                ("X-Fwd", "172.16.1.1, 10.0.0.9, 172.16.1.2")]  # fmt: skip


# -- the request target --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "line", "result"),
    [
        (b"/a/b?x=1", "http-request set-path /new%[path]", b"/new/a/b?x=1"),
        (b"/a", "http-request set-path /b", b"/b"),
        (b"http://h.example:81/a?x", "http-request set-path /z", b"http://h.example:81/z?x"),
        (b"/a?x=1", "http-request set-query y=2", b"/a?y=2"),
        (b"/a", "http-request set-query y=2", b"/a?y=2"),
        (b"/a", "http-request set-query %[query]", b"/a"),  # empty, no '?': none added
        (b"/a?x=1", "http-request set-query %[req.hdr(absent)]", b"/a?"),  # a '?' is never removed
        (b"/a?x=1", "http-request set-uri /u%[query]", b"/ux=1"),
    ],
)
def test_target_rewrites(tmp_path: Path, target: bytes, line: str, result: bytes) -> None:
    h = head(target)
    assert run(tmp_path, h, line) is None
    assert h.target == result


def test_conditions_see_the_rewritten_path(tmp_path: Path) -> None:
    h = head(b"/old/x")
    run(tmp_path, h, "http-request set-path /new/x if { path_beg /old }",
        "http-request set-header X-Seen new if { path_beg /new }")  # fmt: skip
    assert (h.target, h.headers[-1]) == (b"/new/x", (b"X-Seen", b"new"))


# -- answers -------------------------------------------------------------------------------------------


def test_redirects(tmp_path: Path) -> None:
    def location(target: bytes, line: str) -> tuple[int, bytes]:
        stop = run(tmp_path, head(target, (b"Host", b"a.example")), line)
        assert stop is not None and stop.reply is not None and stop.keep and stop.term == "PR"
        (loc,) = [v for n, v in stop.reply.headers if n == b"Location"]
        return stop.status, loc

    assert location(b"/x", "http-request redirect location /there") == (302, b"/there")
    assert location(b"/x?q", "http-request redirect location https://%[req.hdr(host)]/y code 301") == (
        301, b"https://a.example/y")  # fmt: skip
    assert location(b"/x?q", "http-request redirect prefix https://b.example") == (302, b"https://b.example/x?q")
    assert location(b"/x?q", "http-request redirect prefix / drop-query append-slash") == (302, b"/x/")
    assert location(b"/x?q", "http-request redirect code 308 scheme https") == (308, b"https://a.example/x?q")


def test_deny_return_allow(tmp_path: Path) -> None:
    stop = run(tmp_path, head(), "http-request deny")
    assert stop == Stop(403, "PR", True)
    stop = run(tmp_path, head(), "http-request deny deny_status 429 if { path_beg /p }")
    assert stop is not None and stop.status == 429
    stop = run(tmp_path, head(), 'http-request return status 200 content-type text/plain lf-string "hi %ci"'
                                 " hdr X-Who %[src]")  # fmt: skip
    assert stop is not None and stop.reply is not None
    assert (stop.reply.body, stop.reply.headers) == (
        b"hi 10.0.0.1", [(b"Content-Type", b"text/plain"), (b"X-Who", b"10.0.0.1")]
    )
    h = head()
    assert run(tmp_path, h, "http-request allow", "http-request deny") is None
    assert run(tmp_path, h, "http-request allow if { path /nope }", "http-request deny") is not None


# -- failed rewrites --------------------------------------------------------------------------------------


def test_cr_lf_in_a_value_fails_the_request_in_strict_mode(tmp_path: Path) -> None:
    h = head(b"/x?a%0d%0aInjected:%201")
    stop = run(tmp_path, h, "http-request set-header X-Q %[query,url_dec]")
    assert stop == Stop(500, "IR", False)
    h = head(b"/x?a%0d%0aInjected:%201")
    stop = run(tmp_path, h, "http-request strict-mode off", "http-request set-header X-Q %[query,url_dec]",
               "http-request set-header X-After ok")  # fmt: skip
    assert stop is None and names(h.headers) == [("Host", "a.example"), ("X-After", "ok")]
    h = head(b"/x?a%20b")
    assert run(tmp_path, h, "http-request set-path /%[query,url_dec]") == Stop(500, "IR", False)  # a blank


def test_response_and_after_response_rules(tmp_path: Path) -> None:
    px = proxy(
        tmp_path,
        "http-response set-header X-Server %[res.hdr(server),upper]",
        "http-response del-header Server",
        "http-response deny if { hdr(x-leak) -m found }",
        "http-after-response set-header X-Status %[status]",
        "http-after-response set-header X-Bad %[str(a%0ab),url_dec]",
    )
    h = head()
    resp: Headers = [(b"Server", b"origin")]
    ctx = rule_ctx(h)
    ctx.sample.resp_status, ctx.sample.resp_headers = 200, resp
    assert response_rules(px.http_response, resp, ctx) is None
    after_response_rules(px.http_after_response, resp, ctx)
    assert names(resp) == [("X-Server", "ORIGIN"), ("X-Status", "200")]  # X-Bad dropped
    leak: Headers = [(b"X-Leak", b"1")]
    ctx = RuleCtx(request_ctx(RequestHead(b"GET", b"/", b"1.1", leak), "10.0.0.1"), ctx.sample)
    assert response_rules(px.http_response, leak, ctx) == Stop(502, "PH", False)


def test_config_errors_are_haproxys(tmp_path: Path) -> None:
    cases = {
        "http-request set-header X-F": "expects exactly 2 arguments.",
        "http-request set-path": "expects exactly 1 argument <format>.",
        "http-request redirect": "redirection type expected ('prefix', 'location', or 'scheme').",
        "http-request redirect location": "missing argument for 'location'.",
        "http-request deny deny_status 999": "Unexpected status code '999'.",
        "http-request redirect scheme https code 399":
            "'code': unsupported HTTP code '399' (must be one of 301, 302, 303, 307 or 308).",
        "http-response set-header X %[req.hdr(host)]": "may not be reliably used here",
        "http-request tarpit": "'http-request tarpit' is not supported yet (supported http-request actions:",
    }  # fmt: skip
    for line, message in cases.items():
        with pytest.raises(ConfigError) as err:
            proxy(tmp_path, line)
        (alert,) = err.value.messages
        assert message in alert, (line, alert)
        keyword = " ".join(line.split()[:2])
        if not line.endswith("tarpit"):
            assert f"error detected in frontend 'fe' while parsing '{keyword}' rule" in alert


# -- the frontend's order ---------------------------------------------------------------------------------


class NamedBackend(Backend):
    """A ``Backend`` with only what routing reads (its name and configuration); no servers."""

    def __init__(self, cfg: Proxy, name: str) -> None:  # no super().__init__: nothing else is used
        self.cfg = cfg
        self.name = name


def test_frontend_rules_then_use_backend_then_backend_rules(tmp_path: Path) -> None:
    path = tmp_path / "t.cfg"
    path.write_text(
        "defaults\n" + TIMEOUTS + "frontend fe\n    bind :18080\n"
        "    http-request set-header X-Route api\n"
        "    use_backend api if { hdr(x-route) api }\n    default_backend web\n"
        "backend api\n    http-request add-header X-Order api\n    http-request deny if { path /deny }\n"
        "    server s 127.0.0.1:1\n"
        "backend web\n    server s 127.0.0.1:1\n"
    )
    cfg = load([str(path)], env={})
    backends = {n: NamedBackend(p, n) for n, p in cfg.backends.items()}
    fe = Frontend(cfg.frontends["fe"], cast(dict[str, Backend], backends), "llhttp", Limits())
    made: list[RuleCtx] = []

    def route(h: RequestHead) -> tuple[Stop | None, Backend | None]:
        def ctx() -> RuleCtx:
            made.append(rule_ctx(h))
            return made[-1]

        return fe.route(h, ctx)

    h = head(b"/x")
    stop, backend = route(h)
    assert stop is None and backend is backends["api"] and len(made) == 1
    assert names(h.headers)[-2:] == [("X-Route", "api"), ("X-Order", "api")]
    assert made[0].sample.backend == "api"
    stop, backend = route(head(b"/deny"))
    assert stop is not None and stop.status == 403 and backend is backends["api"]
    assert fe.response_sets(backend) == ([], [])


# -- in a stream --------------------------------------------------------------------------------------------


@pytest.fixture
def make_world() -> Iterator[Callable[..., World]]:
    yield from worlds()


def test_stream_applies_response_rules_and_sends_the_unique_id(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.fe_cfg.unique_id_format = parse("%ci-%rt")
    w.fe_cfg.unique_id_header = b"X-Req-Id"
    w.fe_cfg.http_request.append(HttpRule("set-header", name=b"X-Fe", fmt=parse("%ID")))
    status = parse("%[status]", Stage.RESPONSE)
    w.be_cfg.http_response.append(HttpRule("set-header", name=b"X-Be", fmt=status))
    w.fe_cfg.http_after_response.append(HttpRule("add-header", name=b"X-After", fmt=parse("%b")))
    conn = pooled_conn(w.srv, w.key(), ListKind.IDLE, w.engine_name)
    stream, side = w.new_stream(request())
    side.session.requests_done = 1
    w.sync(stream.start)
    sent = conn.transport.data
    uid = b"127.0.0.1-%d" % stream.serial
    assert b"X-Fe: " + uid + b"\r\n" in sent and b"X-Req-Id: " + uid + b"\r\n" in sent
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert stream.resp_head is not None
    assert stream.resp_head.headers == [(b"Content-Length", b"0"), (b"X-Be", b"200"), (b"X-After", b"be")]


def test_stream_after_response_edits_errors_and_deny_uses_the_errorfile(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    status = parse("%[status]", Stage.RESPONSE)
    w.fe_cfg.http_after_response.append(HttpRule("set-header", name=b"X-After", fmt=status))
    w.srv.maint = True
    stream, side = w.new_stream(request())
    w.sync(stream.start)
    assert side.calls[0] == ("send_reply", 503, False) and (b"X-After", b"503") in side.replies[0].headers
    w.fe_cfg.http_request.append(HttpRule("deny", status=403))
    w.fe_cfg.errorfiles[403] = parse_page(b"HTTP/1.1 403 Go away\r\n\r\n")
    stream, side = w.new_stream(request())
    w.sync(stream.start)
    (reply,) = side.replies
    assert (reply.reason, side.calls[0], stream.term) == (b"Go away", ("send_reply", 403, True), "PR")
    assert (b"X-After", b"403") in reply.headers
