"""ACL evaluation: does a request satisfy a rule's condition? Pure, allocation-light, per request.

``cond_holds(cond, ctx)`` answers for one ``model.Condition`` (``None`` holds always): the
disjunction of its AND-groups, inverted by ``unless``. Each ACL is compiled once into a closure
(``compile_acl``), cached on ``Acl.matcher``; ``prepare(config)`` compiles every ACL of a configuration
up front (call it before forking workers, so each worker does not compile its own copy lazily).

Semantics are HAProxy's, for the criteria listed in ``proxy.config.acl_syntax.CRITERIA``:

- ``path`` is the path part of the request target, before ``?``; the caller extracts it (for an
  absolute-form target, without scheme and authority).
- ``hdr(<name>)`` looks at every occurrence of the header (name compared case-insensitively) and, as
  HAProxy's ``hdr`` does, at every comma-separated value of each, blanks around it removed; the ACL
  matches when any value matches. ``hdr(host)`` is the Host header as sent, port included:
  ``hdr(host) -i example.com`` does not match ``Host: example.com:8080`` (use ``hdr_beg`` or a
  regular expression for that).
- ``method`` is compared exactly (case-sensitive unless ``-i``).
- ``src`` matches IPv4 and IPv6 addresses and networks; an IPv4-mapped IPv6 client address
  (``::ffff:10.0.0.1``) matches IPv4 patterns. An unparsable ``src`` matches nothing.
- ``-i`` lower-cases the sample (the patterns were lower-cased when the configuration was read);
  regular expressions are searched (not anchored) and compiled case-insensitive under ``-i``.
- ``-m found`` is true when the sample exists: always for ``path``, ``method`` and ``src``; when at
  least one such header is present for ``hdr``.
- Several declarations of one ACL name are ORed (``Acl.more``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.config.acl_syntax import CRITERIA, effective_match
from proxy.config.model import Acl, Condition, Config

Matcher = Callable[["RequestCtx"], bool]
ValueTest = Callable[[bytes], bool]


@dataclass(slots=True)
class RequestCtx:
    """What ACLs may look at in a request. Build one per request and reuse it for every rule."""

    method: bytes
    path: bytes  # the target's path, before "?"
    headers: list[tuple[bytes, bytes]]  # names as received (any case), in wire order
    src: str  # client IP address, as text
    ssl: bool = False  # the client connection is TLS
    _src_int: tuple[int, int] | None = field(default=None, init=False, repr=False)  # (version, int), cached

    def src_address(self) -> tuple[int, int]:
        """``(4 | 6, integer)`` of ``src`` (IPv4-mapped IPv6 as IPv4); ``(0, 0)`` when unparsable."""
        cached = self._src_int
        if cached is None:
            cached = _ip_key(self.src)
            self._src_int = cached
        return cached


def _ip_key(text: str) -> tuple[int, int]:
    # inet_pton is several times faster than ipaddress for this per-request parse
    try:
        return (4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big"))
    except OSError:
        pass
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0]), "big")
    except OSError:
        return (0, 0)
    if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d, an IPv4 client on a dual-stack socket
        return (4, value & 0xFFFFFFFF)
    return (6, value)


# -- value tests: one pattern method applied to one sample value ----------------------------------


def _value_test(method: str, patterns: list[bytes], ignore_case: bool, raw: list[str]) -> ValueTest:
    if method == "str":
        exact = frozenset(patterns)
        return (lambda v: v.lower() in exact) if ignore_case else exact.__contains__
    if method == "beg":
        prefixes = tuple(patterns)
        return (
            (lambda v: v.lower().startswith(prefixes)) if ignore_case else (lambda v: v.startswith(prefixes))
        )
    if method == "end":
        suffixes = tuple(patterns)
        return (lambda v: v.lower().endswith(suffixes)) if ignore_case else (lambda v: v.endswith(suffixes))
    if method == "sub":
        subs = tuple(patterns)
        if ignore_case:
            return lambda v: any(s in v.lower() for s in subs)
        return lambda v: any(s in v for s in subs)
    if method == "reg":
        flags = re.IGNORECASE if ignore_case else 0
        regexes = tuple(re.compile(p.encode(), flags) for p in raw)
        return lambda v: any(r.search(v) for r in regexes)
    if method == "found":
        return lambda v: True
    raise ValueError(f"matching method {method!r} cannot compare strings")


# -- fetches: how a criterion's sample is taken from the request ---------------------------------


def _compile_one(acl: Acl) -> Matcher:
    crit = CRITERIA[acl.fetch]
    method = effective_match(acl)
    base = crit.base
    if base == "always_true":
        return lambda ctx: True
    if base == "always_false":
        return lambda ctx: False
    if base == "ssl_fc":
        return lambda ctx: ctx.ssl
    if base == "src":
        return _src_matcher(acl.patterns) if method == "ip" else (lambda ctx: True)
    test = _value_test(method, [p.encode() for p in acl.patterns], acl.ignore_case, acl.patterns)
    if base == "path":
        return lambda ctx: test(ctx.path)
    if base == "method":
        return lambda ctx: test(ctx.method)
    if base == "hdr":
        assert acl.arg is not None
        return _hdr_matcher(acl.arg.encode(), test)
    raise ValueError(f"no fetch for criterion {acl.fetch!r}")


def _hdr_matcher(name: bytes, test: ValueTest) -> Matcher:
    size = len(name)

    def match(ctx: RequestCtx) -> bool:
        for hname, value in ctx.headers:
            if len(hname) != size or hname.lower() != name:
                continue
            if b"," not in value:
                if test(value.strip(b" \t")):
                    return True
                continue
            for part in value.split(b","):
                if test(part.strip(b" \t")):
                    return True
        return False

    return match


def _src_matcher(patterns: list[str]) -> Matcher:
    nets: list[tuple[int, int, int]] = []  # (version, network int, mask int)
    for p in patterns:
        net = ipaddress.ip_network(p, strict=False)
        nets.append((net.version, int(net.network_address), int(net.netmask)))
    nets_t = tuple(nets)

    def match(ctx: RequestCtx) -> bool:
        version, addr = ctx.src_address()
        return any(v == version and addr & mask == network for v, network, mask in nets_t)

    return match


def compile_acl(acl: Acl) -> Matcher:
    """The predicate for ``acl`` and the declarations ORed with it; cached on ``acl.matcher``."""
    matcher = acl.matcher
    if matcher is not None:
        return matcher
    parts = [_compile_one(a) for a in (acl, *acl.more)]
    if len(parts) == 1:
        matcher = parts[0]
    else:
        parts_t = tuple(parts)

        def matcher(ctx: RequestCtx) -> bool:
            return any(p(ctx) for p in parts_t)

    acl.matcher = matcher
    return matcher


def acl_matches(acl: Acl, ctx: RequestCtx) -> bool:
    matcher = acl.matcher
    if matcher is None:
        matcher = compile_acl(acl)
    return matcher(ctx)


def cond_holds(cond: Condition | None, ctx: RequestCtx) -> bool:
    """Whether a rule's condition holds for this request (no condition: always)."""
    if cond is None:
        return True
    for group in cond.terms_or:
        for term in group:
            acl = term.acl
            matcher = acl.matcher or compile_acl(acl)
            if matcher(ctx) == term.negate:
                break
        else:
            return not cond.unless
    return cond.unless


def prepare(config: Config) -> None:
    """Compile every ACL of ``config`` (named or anonymous) now rather than on first use."""
    for proxy in {id(p): p for p in (*config.frontends.values(), *config.backends.values())}.values():
        for acl in proxy.acls.values():
            compile_acl(acl)
        rules = proxy.http_request + proxy.http_response + proxy.http_after_response
        conds = [u.cond for u in proxy.use_backends] + [r.cond for r in rules]
        for cond in conds:
            if cond is not None:
                for group in cond.terms_or:
                    for term in group:
                        compile_acl(term.acl)
