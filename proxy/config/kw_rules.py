"""Keywords that decide per request: ``acl``, ``use_backend``, ``default_backend``,
``http-request return``.

Rules are kept in the order written. Backend names are checked after every file was read (a rule may
name a backend declared further down); ACL names are resolved at once (see ``acl_syntax``).
``http-request return`` follows HAProxy's rules for the response it builds: ``status`` in 200..599,
a ``content-type`` required with ``string`` and with a non-empty ``file``, and ignored when there is
no body. ``lf-string`` is taken as a plain string: a log-format expression (``%[...]``, ``%ci``...) in
it is refused, ``%%`` is a percent sign. ``file`` is read when the configuration is loaded, relative
to the current directory as in HAProxy.
"""

from __future__ import annotations

from proxy.config.acl_syntax import NAME_RE, declare_acl, parse_condition
from proxy.config.kwtypes import (
    FRONT,
    FRONT_ONLY,
    RULES,
    Directive,
    Keyword,
    Section,
    SectionState,
    unsupported,
)
from proxy.config.model import Condition, HttpReturn, UseBackend
from proxy.config.timeunit import parse_int

DEFAULTS = frozenset({Section.DEFAULTS})


def _acl(st: SectionState, d: Directive) -> None:
    declare_acl(st.px.acls, d.args, d.where)


def _condition(st: SectionState, d: Directive, words: list[str], label: str) -> Condition | None:
    if not words:
        return None
    return parse_condition(words, st.px.acls.get, d.where, label)


def _backend_name(d: Directive, name: str) -> str:
    if "%[" in name:
        raise d.fail(f"dynamic backend names are not supported ('{name}')")
    if not NAME_RE.match(name):
        raise d.fail(f"invalid backend name '{name}'")
    return name


def _use_backend(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail("expects a backend name: use_backend <backend> [if|unless <condition>]")
    name = _backend_name(d, d.args[0])
    rest = d.args[1:]
    if rest and rest[0] not in ("if", "unless"):
        raise d.fail(f"expected 'if' or 'unless' after the backend name, found '{rest[0]}'")
    cond = _condition(st, d, rest, f"use_backend {name}")
    st.px.use_backends.append(UseBackend(backend=name, cond=cond, where=d.where))


def _default_backend(st: SectionState, d: Directive) -> None:
    d.expect(1, "<backend>")
    st.px.default_backend = _backend_name(d, d.args[0])
    st.refs["default_backend"] = d.where


def _lf_string(d: Directive, text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "%":
            if text[i + 1 : i + 2] != "%":
                raise d.fail(
                    f"log-format expressions are not supported yet in 'lf-string' (in '{text}');"
                    " write '%%' for a percent sign"
                )
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def _read_file(d: Directive, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise d.fail(f"cannot read file '{path}': {exc.strerror}") from None


def _http_return(st: SectionState, d: Directive) -> None:
    ret = HttpReturn(where=d.where)
    body_from: str | None = None
    args = list(d.args)
    while args and args[0] not in ("if", "unless"):
        opt = args.pop(0)
        if opt in ("errorfile", "errorfiles", "default-errorfiles", "lf-file", "hdr"):
            raise d.fail(
                f"'{opt}' is not supported yet (supported: status, content-type, string, lf-string, file)"
            )
        if opt not in ("status", "content-type", "string", "lf-string", "file"):
            raise d.fail(
                f"unknown argument '{opt}' (expected status, content-type, string, lf-string,"
                " file, if or unless)"
            )
        if not args:
            raise d.fail(f"'{opt}' expects a value")
        value = args.pop(0)
        if opt == "status":
            try:
                ret.status = parse_int(value, 200, 599)
            except ValueError as exc:
                raise d.fail(f"status: {exc}") from None
        elif opt == "content-type":
            ret.content_type = value
        else:
            if body_from is not None:
                raise d.fail(f"'{opt}' conflicts with '{body_from}': give one body only")
            body_from = opt
            if opt == "string":
                ret.body = value.encode()
            elif opt == "lf-string":
                ret.body = _lf_string(d, value).encode()
            else:
                ret.body = _read_file(d, st.path(value))
    if body_from in ("string", "lf-string") or (body_from == "file" and ret.body):
        if ret.content_type is None:
            raise d.fail(f"'{body_from}' requires a 'content-type'")
    else:
        ret.content_type = None  # HAProxy ignores it without a body
    ret.cond = _condition(st, d, args, "http-request return")
    st.px.http_request_returns.append(ret)


def _not_in_defaults(name: str) -> Keyword:
    return unsupported(name, "not supported in 'defaults' sections yet (declare it in each proxy)", DEFAULTS)


KEYWORDS: list[Keyword] = [
    Keyword("acl", RULES, "<name> <criterion> [flags] <pattern>...",
            "Declare a named ACL (criteria and flags are listed under 'ACLs').", _acl),
    Keyword("use_backend", FRONT_ONLY, "<backend> [if|unless <condition>]",
            "Send matching requests to a backend; the first matching rule wins.", _use_backend),
    Keyword("default_backend", FRONT, "<backend>",
            "Backend for requests that no use_backend rule sent elsewhere.", _default_backend,
            default="none (503)"),
    Keyword("http-request return", RULES,
            "[status <code>] [content-type <type>] [string <str> | lf-string <str> | file <path>]"
            " [if|unless <condition>]",
            "Answer the request directly with this response; the first matching rule wins.", _http_return),
    _not_in_defaults("acl"),
    _not_in_defaults("http-request return"),
]  # fmt: skip

_ACTION = "not supported yet (the only supported http-request action is 'return')"
KEYWORDS += [
    unsupported(f"http-request {action}", _ACTION)
    for action in (
        "allow", "deny", "tarpit", "redirect", "auth", "add-header", "set-header", "del-header",
        "replace-header", "replace-value", "set-path", "set-pathq", "set-uri", "set-query", "set-method",
        "set-var", "unset-var", "set-src", "set-dst", "capture", "set-log-level", "track-sc0",
        "track-sc1", "track-sc2", "lua", "use-service", "wait-for-body", "early-hint", "normalize-uri",
        "cache-use", "silent-drop", "reject", "set-timeout", "disable-l7-retry", "set-map", "del-map",
        "add-acl", "del-acl", "do-resolve", "set-priority-class", "set-priority-offset",
        "set-bandwidth-limit", "sc-inc-gpc0", "sc-inc-gpc1", "sc-set-gpt0", "strict-mode",
    )
]  # fmt: skip
