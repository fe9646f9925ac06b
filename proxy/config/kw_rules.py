"""Keywords that decide where a request goes: ``acl``, ``use_backend``, ``default_backend``.

Rules are kept in the order written. Backend names are checked after every file was read (a rule may
name a backend declared further down); ACL names are resolved at once (see ``acl_syntax``). The
``http-request``/``http-response``/``http-after-response`` rules are in ``kw_http``.
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
from proxy.config.model import Condition, UseBackend

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
    _not_in_defaults("acl"),
]  # fmt: skip
