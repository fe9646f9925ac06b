"""Keywords of health checks and of what hangs on them: ``option httpchk``, ``http-check``,
``timeout check``, ``option tcp-check``, ``spread-checks``, ``option redispatch``,
``option allbackups``, ``option log-health-checks``.

A check is a TCP connect unless the backend has ``option httpchk`` (or any ``http-check`` line,
which implies it, as in HAProxy 2.2+): then it sends one HTTP/1.x request and judges the answer by
``http-check expect`` (default: any 2xx or 3xx status passes). The forms accepted:

- ``option httpchk``, ``option httpchk <uri>``, ``option httpchk <method> <uri> [<version>]`` (a
  version written with ``\\r\\n`` and header lines after it, the pre-2.2 trick, sends those headers);
- ``http-check send [meth <m>] [uri <u>] [ver <v>] [hdr <name> <value>]... [body <string>]``;
- ``http-check expect [!] status|rstatus|string|rstring <pattern>`` (one expect rule);
- ``http-check connect`` without options (what every check does first).

HAProxy's rule lists (several ``send``/``expect``, ``tcp-check`` rules, variables) are refused with
the reason. Server-side parameters (``check``, ``inter``, ``rise``...) are in ``kw_server``.
"""

from __future__ import annotations

import re

from proxy.config.kwtypes import BACK, GLOBAL, Directive, Keyword, ParseFn, SectionState, unsupported
from proxy.config.model import HttpCheck
from proxy.config.timeunit import parse_int, parse_time

EXPECT_KINDS = ("status", "rstatus", "string", "rstring")
_RULE_LISTS = "not supported: poolproxy runs one send and one expect per check (no rule lists)"


def _httpchk(st: SectionState, d: Directive) -> None:
    if d.negated:
        d.expect(0, "")
        st.px.httpchk = None
        return
    if len(d.args) > 3:
        raise d.fail("expects at most 3 arguments: option httpchk [<method>] [<uri>] [<version>]")
    chk = st.px.httpchk or HttpCheck()
    args = list(d.args)
    if len(args) == 1:
        chk.uri = args[0]
    elif len(args) >= 2:
        chk.method, chk.uri = args[0], args[1]
    if len(args) == 3:
        version, *lines = args[2].replace("\\r\\n", "\r\n").split("\r\n")
        chk.version = version
        for line in lines:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise d.fail(f"invalid header line '{line}' after the version (expected 'Name: value')")
            chk.headers.append((name.strip(), value.strip()))
    _check_request(d, chk)
    st.px.httpchk = chk


def _check_request(d: Directive, chk: HttpCheck) -> None:
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", chk.method):
        raise d.fail(f"invalid method '{chk.method}'")
    if not chk.uri or any(c in chk.uri for c in " \r\n"):
        raise d.fail(f"invalid uri '{chk.uri}'")
    if chk.version not in ("HTTP/1.0", "HTTP/1.1"):
        raise d.fail(f"version '{chk.version}' is not supported (checks speak HTTP/1.0 or HTTP/1.1)")


def _http_check(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail("expects a rule: http-check send|expect|connect ...")
    verb, rest = d.args[0], d.args[1:]
    chk = st.px.httpchk or HttpCheck()
    if verb == "send":
        _send(d, chk, rest)
    elif verb == "expect":
        _expect(d, chk, rest)
    elif verb == "connect":
        if rest:
            raise d.fail(f"'http-check connect {rest[0]}' is not supported (only the plain connect)")
    elif verb in ("disable-on-404", "send-state", "comment", "set-var", "unset-var", "set-var-fmt"):
        raise d.fail(f"'http-check {verb}' is not supported yet")
    else:
        raise d.fail(f"unknown rule '{verb}' (expected send, expect or connect)")
    st.px.httpchk = chk


def _send(d: Directive, chk: HttpCheck, rest: list[str]) -> None:
    fields = {"meth": "method", "uri": "uri", "ver": "version", "body": "body"}
    while rest:
        opt = rest.pop(0)
        if opt == "hdr":
            if len(rest) < 2:
                raise d.fail("'hdr' expects a name and a value")
            chk.headers.append((rest.pop(0), rest.pop(0)))
        elif opt in fields:
            if not rest:
                raise d.fail(f"'{opt}' expects a value")
            setattr(chk, fields[opt], rest.pop(0))
        elif opt in ("uri-lf", "body-lf", "comment"):
            raise d.fail(f"'http-check send {opt}' is not supported yet")
        else:
            raise d.fail(f"unknown option '{opt}' (expected meth, uri, ver, hdr or body)")
    _check_request(d, chk)


def _expect(d: Directive, chk: HttpCheck, rest: list[str]) -> None:
    if chk.expect is not None:
        raise d.fail(f"a second 'http-check expect' is {_RULE_LISTS}")
    negated = rest[:1] == ["!"]
    if negated:
        rest = rest[1:]
    if len(rest) != 2 or rest[0] not in EXPECT_KINDS:
        if rest and rest[0] not in EXPECT_KINDS:
            kinds = ", ".join(EXPECT_KINDS)
            raise d.fail(f"'http-check expect {rest[0]}' is not supported (expected one of {kinds})")
        raise d.fail("expects: http-check expect [!] status|rstatus|string|rstring <pattern>")
    kind, pattern = rest
    if kind == "status":
        for part in pattern.split(","):
            lo, _, hi = part.partition("-")
            if not (lo.isdigit() and (not hi or hi.isdigit())):
                raise d.fail(f"invalid status '{pattern}' (expected codes or ranges: 200,300-399)")
    elif kind in ("rstatus", "rstring"):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise d.fail(f"invalid regex '{pattern}': {exc}") from None
    chk.expect = (kind, negated, pattern)


def _timeout_check(st: SectionState, d: Directive) -> None:
    d.expect(1, "<time>")
    try:
        st.px.timeouts.check = parse_time(d.args[0]) or None
    except ValueError as exc:
        raise d.fail(str(exc)) from None


def _tcp_check(st: SectionState, d: Directive) -> None:
    d.expect(0, "")
    if not d.negated:
        st.px.httpchk = None  # a plain TCP connect: what 'check' does without httpchk


def _redispatch(st: SectionState, d: Directive) -> None:
    if d.negated:
        d.expect(0, "")
        st.px.redispatch = 0
        return
    if len(d.args) > 1:
        raise d.fail("expects at most one argument: option redispatch [<interval>]")
    interval = -1
    if d.args:
        try:
            interval = parse_int(d.args[0])
        except ValueError as exc:
            raise d.fail(str(exc)) from None
    st.px.redispatch = interval  # 0 written: redispatch disabled, as in HAProxy


def _flag(attr: str) -> ParseFn:
    def parse(st: SectionState, d: Directive) -> None:
        d.expect(0, "")
        setattr(st.px, attr, not d.negated)

    return parse


def _spread_checks(st: SectionState, d: Directive) -> None:
    d.expect(1, "<0..50, in percent>")
    try:
        st.global_.spread_checks = parse_int(d.args[0], 0, 50)
    except ValueError as exc:
        raise d.fail(str(exc)) from None


KEYWORDS: list[Keyword] = [
    Keyword("option httpchk", BACK, "[<method>] [<uri>] [<version>]",
            "Health checks send this HTTP request (default OPTIONS / HTTP/1.0) instead of a TCP connect.",
            _httpchk, default="off (TCP connect)", negatable=True),
    Keyword("http-check", BACK, "send [meth M] [uri U] [ver V] [hdr N V]... [body S] | "
            "expect [!] status|rstatus|string|rstring <pattern> | connect",
            "The HTTP check's request and the answer it expects (implies 'option httpchk').", _http_check),
    Keyword("timeout check", BACK, "<time>",
            "A check's read timeout once connected; its connect then takes min(timeout connect, inter).",
            _timeout_check, default="inter"),
    Keyword("option tcp-check", BACK, "", "Checks are plain TCP connects (the default without httpchk).",
            _tcp_check, default="on", negatable=True),
    Keyword("option redispatch", BACK, "[<interval>]",
            "A connection retry may go to another server: the last one (default), or every <interval>th.",
            _redispatch, default="off", negatable=True),
    Keyword("option allbackups", BACK, "", "Use every backup server at once, not only the first.",
            _flag("allbackups"), default="off", negatable=True),
    Keyword("option log-health-checks", BACK, "",
            "Log every change of a check's result, not only servers going UP or DOWN.",
            _flag("log_health_checks"), default="off", negatable=True),
    Keyword("spread-checks", GLOBAL, "<0..50>",
            "Add up to this percentage of random to each check interval (avoids synchronized checks).",
            _spread_checks, default="0"),
    unsupported("tcp-check", "not supported: tcp-check rule lists (a check without httpchk is a TCP connect)",
                BACK),
    unsupported("external-check", "not supported: poolproxy runs no external programs", BACK),
    unsupported("option external-check", "not supported: poolproxy runs no external programs", BACK),
    unsupported("option ldap-check", "not supported: checks are TCP connects or HTTP requests", BACK),
    unsupported("option mysql-check", "not supported: checks are TCP connects or HTTP requests", BACK),
    unsupported("option pgsql-check", "not supported: checks are TCP connects or HTTP requests", BACK),
    unsupported("option redis-check", "not supported: checks are TCP connects or HTTP requests", BACK),
    unsupported("option smtpchk", "not supported: checks are TCP connects or HTTP requests", BACK),
    unsupported("option ssl-hello-chk", "not supported: checks are TCP connects or HTTP requests", BACK),
]  # fmt: skip
