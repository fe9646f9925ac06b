"""ACL evaluation over a table: declarations, a condition, a request, the expected answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.acl import RequestCtx, acl_matches, compile_acl, cond_holds, prepare
from proxy.config import load
from proxy.config.acl_syntax import declare_acl, parse_condition
from proxy.config.lexer import split_words
from proxy.config.model import Acl, Condition, HttpReturn, Proxy, Where

HERE = Where("test.cfg", 1)


def condition(acl_lines: list[str], cond: str) -> Condition:
    acls: dict[str, Acl] = {}
    for line in acl_lines:
        declare_acl(acls, split_words(line, {}), HERE)
    return parse_condition(split_words(cond, {}), acls.get, HERE, "test")


def req(
    path: str = "/", method: str = "GET", headers: list[tuple[str, str]] | None = None, src: str = "192.0.2.1"
) -> RequestCtx:
    return RequestCtx(
        method=method.encode(),
        path=path.encode(),
        headers=[(n.encode(), v.encode()) for n, v in (headers or [])],
        src=src,
    )


API = ["api path_beg /api/ /v2/"]
HOST = [("Host", "example.com")]

CASES: list[tuple[list[str], str, RequestCtx, bool]] = [
    # path family
    (["a path /exact"], "if a", req("/exact"), True),
    (["a path /exact"], "if a", req("/exact/"), False),
    (["a path /Exact"], "if a", req("/exact"), False),
    (["a path -i /Exact"], "if a", req("/EXACT"), True),
    (API, "if api", req("/api/users"), True),
    (API, "if api", req("/v2/x"), True),
    (API, "if api", req("/apix"), False),
    (["a path_end .css .js"], "if a", req("/s/app.js"), True),
    (["a path_end .css .js"], "if a", req("/s/app.json"), False),
    (["a path_sub /admin/"], "if a", req("/x/admin/y"), True),
    (["a path_sub -i /ADMIN/"], "if a", req("/x/Admin/y"), True),
    (["a path_reg ^/v[0-9]+/"], "if a", req("/v12/x"), True),
    (["a path_reg ^/v[0-9]+/"], "if a", req("/x/v12/"), False),
    (["a path_reg users"], "if a", req("/api/users/1"), True),  # searched, not anchored
    (["a path_reg -i ^/API"], "if a", req("/api"), True),
    (["a path -m beg /st"], "if a", req("/static"), True),
    (["a path -m end ic"], "if a", req("/static"), True),
    (["a path -m sub ati"], "if a", req("/static"), True),
    (["a path -m reg ^/s.*c$"], "if a", req("/static"), True),
    (["a path -m str /static"], "if a", req("/static"), True),
    (["a path_beg -m end ic"], "if a", req("/static"), True),  # -m wins over the derived method
    (["a path -m found"], "if a", req("/"), True),
    (["a path -- -dash"], "if a", req("-dash"), True),
    # headers
    (["h hdr(host) example.com"], "if h", req(headers=HOST), True),
    (["h hdr(host) example.com"], "if h", req(headers=[("HOST", "example.com")]), True),
    (["h hdr(host) example.com"], "if h", req(headers=[("Host", "Example.com")]), False),
    (["h hdr(host) -i EXAMPLE.com"], "if h", req(headers=[("Host", "Example.COM")]), True),
    (["h hdr(host) -i example.com"], "if h", req(headers=[("Host", "example.com:8080")]), False),  # port kept
    (["h hdr_beg(host) -i example.com"], "if h", req(headers=[("Host", "example.com:8080")]), True),
    (["h hdr_end(host) .example.com"], "if h", req(headers=[("Host", "api.example.com")]), True),
    (["h hdr_sub(user-agent) -i curl"], "if h", req(headers=[("User-Agent", "Mozilla curl/8")]), True),
    (["h hdr_reg(host) ^[a-z]+\\.example\\.com$"], "if h", req(headers=[("host", "api.example.com")]), True),
    (["h hdr(x-a) two"], "if h", req(headers=[("X-A", "one, two ,three")]), True),  # comma-separated values
    (["h hdr(x-a) two"], "if h", req(headers=[("X-A", "one"), ("x-a", "two")]), True),  # every occurrence
    (["h hdr(x-a) one,"], "if h", req(headers=[("X-A", "one, two")]), False),
    (["h hdr(x-a) -m found"], "if h", req(headers=[("X-A", "")]), True),
    (["h hdr(x-a) -m found"], "if h", req(headers=HOST), False),
    (["h hdr(host) example.com"], "if h", req(), False),
    (["h req.hdr(host) example.com"], "if h", req(headers=HOST), True),
    # method
    (["m method POST PUT"], "if m", req(method="PUT"), True),
    (["m method POST PUT"], "if m", req(method="put"), False),
    (["m method -i post"], "if m", req(method="POST"), True),
    # src
    (["s src 10.0.0.0/8 192.168.1.1"], "if s", req(src="10.1.2.3"), True),
    (["s src 10.0.0.0/8 192.168.1.1"], "if s", req(src="192.168.1.1"), True),
    (["s src 10.0.0.0/8 192.168.1.1"], "if s", req(src="192.168.1.2"), False),
    (["s src 10.0.0.0/8"], "if s", req(src="::ffff:10.0.0.1"), True),  # IPv4-mapped
    (["s src 2001:db8::/32"], "if s", req(src="2001:db8::42"), True),
    (["s src 2001:db8::/32"], "if s", req(src="2001:db9::1"), False),
    (["s src 10.0.0.0/8"], "if s", req(src="not an ip"), False),
    (["s src ::1"], "if s", req(src="10.0.0.1"), False),
    # conditions
    ([*API, "post method POST"], "if api post", req("/api/x", "POST"), True),
    ([*API, "post method POST"], "if api post", req("/api/x", "GET"), False),
    ([*API, "post method POST"], "if api || post", req("/x", "POST"), True),
    ([*API, "post method POST"], "if api or post", req("/x", "GET"), False),
    ([*API, "post method POST"], "if !api", req("/x"), True),
    ([*API, "post method POST"], "if ! api", req("/api/x"), False),
    ([*API, "post method POST"], "if !!api", req("/api/x"), True),
    ([*API, "post method POST"], "unless api", req("/api/x"), False),
    ([*API, "post method POST"], "unless api", req("/x"), True),
    ([*API, "post method POST"], "unless api post", req("/api/x", "GET"), True),
    (API, "if api { method DELETE } || { path /health }", req("/api/x", "DELETE"), True),
    (API, "if api { method DELETE } || { path /health }", req("/api/x", "GET"), False),
    (API, "if api { method DELETE } || { path /health }", req("/health"), True),
    (API, "if !{ path_beg /api/ } !api", req("/x"), True),
    # several declarations of one name are ORed
    (["st path_beg /static/", "st path_end .css"], "if st", req("/x.css"), True),
    (["st path_beg /static/", "st path_end .css"], "if st", req("/static/x"), True),
    (["st path_beg /static/", "st path_end .css"], "if st", req("/x.js"), False),
    (["st path_beg /static/", "st path_beg /img/"], "if st", req("/img/a.png"), True),
    # predefined ACLs
    ([], "if TRUE", req(), True),
    ([], "if FALSE", req(), False),
    ([], "if HTTP", req(), True),
    ([], "if METH_GET", req(method="HEAD"), True),
    ([], "if METH_POST", req(method="GET"), False),
    ([], "if LOCALHOST", req(src="127.0.0.5"), True),
    ([], "if LOCALHOST", req(src="::1"), True),
    ([], "if LOCALHOST", req(src="10.0.0.1"), False),
    ([], "if { always_false } || { always_true }", req(), True),
]


@pytest.mark.parametrize(("acl_lines", "cond", "ctx", "expected"), CASES)
def test_condition(acl_lines: list[str], cond: str, ctx: RequestCtx, expected: bool) -> None:
    assert cond_holds(condition(acl_lines, cond), ctx) is expected


def test_no_condition_holds() -> None:
    assert cond_holds(None, req())


def test_matcher_compiled_once_and_cached() -> None:
    acls: dict[str, Acl] = {}
    declare_acl(acls, ["a", "path_beg", "/x"], HERE)
    acl = acls["a"]
    assert acl.matcher is None
    m = compile_acl(acl)
    assert acl.matcher is m and compile_acl(acl) is m
    assert acl_matches(acl, req("/xy")) and not acl_matches(acl, req("/y"))


def test_ignore_case_lowercases_patterns_but_not_regexes() -> None:
    acls: dict[str, Acl] = {}
    declare_acl(acls, ["a", "path", "-i", "/ABC"], HERE)
    declare_acl(acls, ["r", "path_reg", "-i", r"^/\S+$"], HERE)
    assert acls["a"].patterns == ["/abc"]
    assert acls["r"].patterns == [r"^/\S+$"]  # lowering would turn \S into \s
    assert acl_matches(acls["r"], req("/ABC"))


def test_prepare_compiles_every_acl_of_a_config(tmp_path: Path) -> None:
    path = tmp_path / "t.cfg"
    path.write_text(
        "frontend fe\n    bind :1\n    acl api path_beg /api\n"
        "    http-request return status 204 if { path /ping }\n"
        "    use_backend be if api || { hdr(host) -i api.example.com }\n    default_backend be\n"
        "backend be\n    server s 127.0.0.1:1\n"
    )
    cfg = load([str(path)])
    prepare(cfg)
    fe = cfg.frontends["fe"]
    assert fe.acls["api"].matcher is not None
    (rule,) = fe.use_backends
    assert rule.cond is not None
    assert all(t.acl.matcher is not None for group in rule.cond.terms_or for t in group)
    assert returns_of(fe)[0].cond is not None
    ctx = req("/x", headers=[("Host", "API.example.com")])
    assert cond_holds(rule.cond, ctx)
    assert not cond_holds(returns_of(fe)[0].cond, ctx)
    assert cond_holds(returns_of(fe)[0].cond, req("/ping"))


def returns_of(px: Proxy) -> list[HttpReturn]:
    """The ``http-request return`` rules' responses, in order."""
    return [r.ret for r in px.http_request if r.ret is not None]
