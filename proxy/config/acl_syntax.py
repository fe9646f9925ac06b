"""ACL declarations and conditions: the criteria poolproxy knows, and how lines about them parse.

An ACL line is ``acl <name> <criterion>[(<arg>)] [flags] <pattern> ...``. The criterion is a sample
fetch (``path``, ``hdr(<name>)``, ``method``, ``src``) possibly suffixed with a matching method as
HAProxy's "ACL derivatives" are (``path_beg`` is ``path`` matched with ``beg``). Flags: ``-i``
(ignore case), ``-m <method>`` (explicit matching method, which wins over the derived one, as in
HAProxy), ``--`` (end of flags, so a pattern may start with ``-``). ``CRITERIA`` is the registry of
criteria: the evaluator (``proxy.acl``) and the reference docs read it; adding a criterion means a row
here and a fetch there.

A condition is ``if|unless`` followed by terms: an ACL name, ``!name`` (negation), or an anonymous
ACL between braces written as separate words (``{ path_beg /api }``). Adjacent terms are ANDed,
``||`` or ``or`` separates alternatives. ACLs must be declared before the rule that uses them
(HAProxy resolves them when it reads the rule); HAProxy's predefined upper-case ACLs that make sense
here (``TRUE``, ``FALSE``, ``HTTP``, ``LOCALHOST``, ``METH_*``) are available without declaration.

Several ``acl`` lines with the same name are ORed, as in HAProxy: identical criterion and flags add
patterns to the first declaration; a different criterion is chained in ``Acl.more``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from proxy.config.errors import DirectiveError
from proxy.config.model import Acl, Condition, Term, Where

NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_CRITERION_RE = re.compile(r"^([A-Za-z0-9_.]+)(?:\((.*)\))?$")


@dataclass(frozen=True, slots=True)
class Criterion:
    """``base``: the sample fetch evaluated; ``match``: its default matching method;
    ``kind``: the sample type (``str``, ``ip``, ``bool``), which decides the methods allowed."""

    name: str
    base: str
    match: str
    kind: str
    needs_arg: bool
    doc: str


CRITERIA: dict[str, Criterion] = {c.name: c for c in [
    Criterion("path", "path", "str", "str", False, "Request path (before '?'), exact match."),
    Criterion("path_beg", "path", "beg", "str", False, "Path starts with a pattern."),
    Criterion("path_end", "path", "end", "str", False, "Path ends with a pattern."),
    Criterion("path_sub", "path", "sub", "str", False, "Path contains a pattern."),
    Criterion("path_reg", "path", "reg", "str", False, "Path matches a regular expression (searched)."),
    Criterion("hdr", "hdr", "str", "str", True,
              "A header's values (comma-separated values apart), exact match; hdr(host) includes the port."),
    Criterion("req.hdr", "hdr", "str", "str", True, "Same as hdr."),
    Criterion("hdr_beg", "hdr", "beg", "str", True, "A header value starts with a pattern."),
    Criterion("hdr_end", "hdr", "end", "str", True, "A header value ends with a pattern."),
    Criterion("hdr_sub", "hdr", "sub", "str", True, "A header value contains a pattern."),
    Criterion("hdr_reg", "hdr", "reg", "str", True, "A header value matches a regular expression."),
    Criterion("method", "method", "str", "str", False, "Request method, exact (case-sensitive unless -i)."),
    Criterion("src", "src", "ip", "ip", False, "Client IP address against addresses or CIDR networks."),
    Criterion("always_true", "always_true", "bool", "bool", False, "Always matches."),
    Criterion("always_false", "always_false", "bool", "bool", False, "Never matches."),
    Criterion("ssl_fc", "ssl_fc", "bool", "bool", False, "The client connection uses TLS."),
]}  # fmt: skip

# Matching methods per sample kind ("found" = the sample exists, no pattern).
MATCH_METHODS: dict[str, frozenset[str]] = {
    "str": frozenset({"str", "beg", "end", "sub", "reg", "found"}),
    "ip": frozenset({"ip", "found"}),
    "bool": frozenset({"bool", "found"}),
}
_KNOWN_METHODS = frozenset(
    {"found", "bool", "int", "ip", "bin", "len", "str", "sub", "reg", "beg", "end", "dir", "dom"}
)

# HAProxy's predefined ACLs that have a meaning here: name -> (criterion, patterns).
PREDEFINED: dict[str, tuple[str, tuple[str, ...]]] = {
    "TRUE": ("always_true", ()),
    "FALSE": ("always_false", ()),
    "HTTP": ("always_true", ()),  # every request poolproxy sees is valid HTTP
    "LOCALHOST": ("src", ("127.0.0.1/8", "::1")),
    "METH_CONNECT": ("method", ("CONNECT",)),
    "METH_DELETE": ("method", ("DELETE",)),
    "METH_GET": ("method", ("GET", "HEAD")),
    "METH_HEAD": ("method", ("HEAD",)),
    "METH_OPTIONS": ("method", ("OPTIONS",)),
    "METH_POST": ("method", ("POST",)),
    "METH_PUT": ("method", ("PUT",)),
    "METH_TRACE": ("method", ("TRACE",)),
}
PREDEFINED_UNSUPPORTED = frozenset({
    "HTTP_1.0", "HTTP_1.1", "HTTP_2.0", "HTTP_3.0", "HTTP_CONTENT", "HTTP_URL_ABS", "HTTP_URL_SLASH",
    "HTTP_URL_STAR", "RDP_COOKIE", "REQ_CONTENT", "WAIT_END",
})  # fmt: skip


def effective_match(acl: Acl) -> str:
    """The matching method an ACL uses: its ``-m`` if given, else its criterion's default."""
    return acl.match or CRITERIA[acl.fetch].match


def _criterion(text: str, label: str) -> tuple[Criterion, str | None]:
    if "," in text.split(")")[-1] or ("," in text and "(" not in text):
        raise DirectiveError(f"'{label}': converters are not supported in '{text}'")
    m = _CRITERION_RE.match(text)
    crit = CRITERIA.get(m.group(1)) if m else None
    if m is None or crit is None:
        near = difflib.get_close_matches(m.group(1) if m else text, list(CRITERIA), n=1, cutoff=0.6)
        hint = f" (did you mean '{near[0]}'?)" if near else f" (supported: {', '.join(CRITERIA)})"
        raise DirectiveError(f"'{label}': unknown or unsupported criterion '{text}'{hint}")
    arg = m.group(2)
    if crit.needs_arg:
        if not arg:
            raise DirectiveError(f"'{label}': '{crit.name}' needs a header name: {crit.name}(<name>)")
        if "," in arg:
            raise DirectiveError(f"'{label}': header occurrence arguments are not supported in '{text}'")
        return crit, arg.lower()
    if arg is not None:
        raise DirectiveError(f"'{label}': '{crit.name}' takes no argument")
    return crit, None


def _check_pattern(crit: Criterion, method: str, pattern: str, label: str) -> None:
    if method == "reg":
        try:
            re.compile(pattern)
        except re.error as exc:
            raise DirectiveError(f"'{label}': invalid regular expression '{pattern}': {exc}") from None
    elif method == "ip":
        try:
            ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            raise DirectiveError(f"'{label}': invalid address or network '{pattern}'") from None


def parse_acl(name: str, words: list[str], where: Where, label: str) -> Acl:
    """``<criterion> [flags] <patterns...>`` into an ``Acl``; errors are prefixed with ``label``."""
    if not words:
        raise DirectiveError(
            f"'{label}': missing criterion (expected: acl <name> <criterion> [flags] <pattern>...)"
        )
    crit, arg = _criterion(words[0], label)
    ignore_case, match = False, None
    i = 1
    while i < len(words) and words[i].startswith("-"):
        flag = words[i]
        i += 1
        if flag == "--":
            break
        if flag == "-i":
            ignore_case = True
        elif flag == "-m":
            if i >= len(words):
                raise DirectiveError(f"'{label}': '-m' expects a matching method")
            match = words[i]
            i += 1
            if match not in MATCH_METHODS[crit.kind]:
                allowed = ", ".join(sorted(MATCH_METHODS[crit.kind]))
                what = "is not supported" if match in _KNOWN_METHODS else "is unknown"
                raise DirectiveError(
                    f"'{label}': matching method '{match}' {what} for '{crit.name}' (allowed: {allowed})"
                )
        elif flag in ("-f", "-M", "-n", "-u"):
            raise DirectiveError(f"'{label}': flag '{flag}' is not supported")
        else:
            raise DirectiveError(
                f"'{label}': unknown flag '{flag}' (write '--' before a pattern starting with '-')"
            )
    patterns = words[i:]
    method = match or crit.match
    if method in ("found", "bool"):
        if patterns:
            raise DirectiveError(f"'{label}': '{crit.name}' with matching method '{method}' takes no pattern")
    elif not patterns:
        raise DirectiveError(f"'{label}': missing pattern to match '{words[0]}' against")
    for pattern in patterns:
        _check_pattern(crit, method, pattern, label)
    if ignore_case and method != "reg":
        patterns = [p.lower() for p in patterns]
    return Acl(
        name=name,
        fetch=crit.name,
        arg=arg,
        ignore_case=ignore_case,
        patterns=list(patterns),
        where=where,
        match=match,
    )


def declare_acl(acls: dict[str, Acl], words: list[str], where: Where) -> None:
    """``acl <name> ...``: add the declaration to ``acls``, ORed with earlier ones of that name."""
    if not words:
        raise DirectiveError("'acl': expects a name: acl <name> <criterion> [flags] <pattern>...")
    name = words[0]
    label = f"acl {name}"
    if not NAME_RE.match(name):
        raise DirectiveError(f"'{label}': invalid ACL name (allowed: letters, digits, '-', '_', '.', ':')")
    acl = parse_acl(name, words[1:], where, label)
    first = acls.get(name)
    if first is None:
        acls[name] = acl
        return
    for known in (first, *first.more):
        if (known.fetch, known.arg, known.ignore_case, known.match) == (
            acl.fetch,
            acl.arg,
            acl.ignore_case,
            acl.match,
        ):
            known.patterns.extend(acl.patterns)
            return
    first.more.append(acl)


def _predefined(name: str, where: Where) -> Acl | None:
    spec = PREDEFINED.get(name)
    if spec is None:
        return None
    fetch, patterns = spec
    return Acl(name=name, fetch=fetch, arg=None, ignore_case=False, patterns=list(patterns), where=where)


def parse_condition(
    words: list[str], lookup: Callable[[str], Acl | None], where: Where, label: str
) -> Condition:
    """``if|unless <terms>`` into a ``Condition``; ``lookup`` finds the proxy's declared ACLs."""
    if not words or words[0] not in ("if", "unless"):
        raise DirectiveError(f"'{label}': expected 'if' or 'unless', found '{words[0] if words else ''}'")
    if len(words) == 1:
        raise DirectiveError(f"'{label}': missing condition after '{words[0]}'")
    groups: list[list[Term]] = [[]]
    negate = False
    i = 1
    while i < len(words):
        word = words[i]
        i += 1
        if word in ("||", "or"):
            if negate or not groups[-1]:
                raise DirectiveError(f"'{label}': '{word}' without a term before it")
            groups.append([])
            continue
        while word.startswith("!"):
            negate = not negate
            word = word[1:]
        if not word:  # "!" written alone applies to the next word
            continue
        if word == "{":
            try:
                close = words.index("}", i)
            except ValueError:
                raise DirectiveError(
                    f"'{label}': missing '}}' after '{{' (braces must be separate words)"
                ) from None
            acl = parse_acl("anonymous", words[i:close], where, label)
            i = close + 1
        elif word.startswith("{") or word.endswith("}"):
            raise DirectiveError(f"'{label}': braces of an anonymous ACL must be separate words, in '{word}'")
        else:
            found = lookup(word) or _predefined(word, where)
            if found is None:
                if word in PREDEFINED_UNSUPPORTED:
                    raise DirectiveError(f"'{label}': predefined ACL '{word}' is not supported")
                raise DirectiveError(
                    f"'{label}': unknown ACL '{word}' (an ACL must be declared before the rule that uses it)"
                )
            acl = found
        groups[-1].append(Term(acl=acl, negate=negate))
        negate = False
    if negate or not groups[-1]:
        raise DirectiveError(f"'{label}': condition ends without a term")
    return Condition(terms_or=groups, unless=words[0] == "unless")
