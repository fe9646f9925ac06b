"""Carrying out ``http-request``, ``http-response`` and ``http-after-response`` rules on neutral heads.

Pure: the functions here edit a ``RequestHead``'s target and headers, or a header list (a response's
or a ``Reply``'s), in place, and return a ``Stop`` when a rule answers or fails; the stream acts on
it. Each action is a handler in ``ACTIONS`` (the config's ``HttpRule.action`` names it).

Order (HAProxy's): the rules of one proxy's set run in the order written, each only if its
condition holds. ``allow`` ends that proxy's set; ``deny``, ``return`` and ``redirect`` end the
exchange's rule processing with an answer. The stream runs the frontend's request rules, picks the
backend (its ``use_backend`` conditions see the rewritten request), then the backend's; response
rules run the backend's set, then the frontend's (``http-response``, then ``http-after-response``,
which also edit the proxy's own answers: errors, ``return``, redirects).

Conditions are ACLs on ``RuleCtx.acl`` (kept current: a rewritten path is what later ``path`` ACLs
see; headers are the same list). Values are log-format expressions on ``RuleCtx.sample``.

Failed rewrites. A value that would contain CR, LF or NUL (or, for a path or query, a blank) cannot
be written into a message. As with HAProxy's ``strict-mode`` (on by default, reset at the start of
each proxy's set): a request rule's failure answers 500 (termination ``IR``), an ``http-response``
rule's answers 500 in place of the server's response (``IH``); with ``strict-mode off`` the rewrite
is skipped (the header is left as it was). An ``http-after-response`` rewrite that fails is skipped
whatever the mode: the answer is already decided, and the header is dropped from it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from proxy.acl import RequestCtx, cond_holds
from proxy.config.model import HttpRule, Redirect
from proxy.logformat import SampleCtx, render
from proxy.message import Headers, RequestHead, header_value
from proxy.replies import Reply, local_reply

_BAD_VALUE = re.compile(rb"[\r\n\0]")
_BAD_TARGET = re.compile(rb"[\r\n\0 \t]")
_GROUP = re.compile(rb"\\([0-9])")


@dataclass(slots=True)
class RuleCtx:
    """What rules look at: ACL inputs and expression inputs, built once per exchange when needed."""

    acl: RequestCtx
    sample: SampleCtx


@dataclass(slots=True)
class Stop:
    """Rule processing ends here: answer ``reply`` when a rule built one, else the error page for
    ``status``; ``term`` is the log's termination state; ``keep``: the client connection may stay."""

    status: int
    term: str
    keep: bool
    reply: Reply | None = None
    service: str = ""  # ``use-service`` (and the stats page): the worker's service builds the reply


class _Failed(Exception):
    """A rewrite produced a value that cannot be written."""


class _Allow(Exception):
    """``allow``: the rest of this proxy's set is skipped."""


# -- targets ------------------------------------------------------------------------------------------


def split_target(target: bytes) -> tuple[bytes, bytes, bytes | None]:
    """``(prefix, path, query)``: ``prefix`` is ``scheme://authority`` of an absolute-form target."""
    prefix = b""
    if target[:1] != b"/" and b"://" in target:
        scheme, rest = target.split(b"://", 1)
        end = len(rest)
        for sep in (b"/", b"?"):
            i = rest.find(sep)
            if 0 <= i < end:
                end = i
        prefix, target = scheme + b"://" + rest[:end], rest[end:]
    path, sep, query = target.partition(b"?")
    return prefix, path, query if sep else None


def request_ctx(head: RequestHead, client_ip: str, ssl: bool = False) -> RequestCtx:
    """The ACL view of a request: its path is the target's (an absolute-form target's too)."""
    path = split_target(head.target)[1] or b"/"
    return RequestCtx(method=head.method, path=path, headers=head.headers, src=client_ip, ssl=ssl)


def _join(prefix: bytes, path: bytes, query: bytes | None) -> bytes:
    return prefix + (path or b"/") + (b"?" + query if query is not None else b"")


# -- actions ------------------------------------------------------------------------------------------


class Action:
    """What one rule does to a message: ``headers`` (the list to edit), ``head`` (the request, for
    request rules), the rule's context; returns a ``Stop`` or None (go on)."""

    __slots__ = ("ctx", "head", "headers", "response")

    def __init__(self, headers: Headers, head: RequestHead | None, ctx: RuleCtx, response: bool) -> None:
        self.headers = headers
        self.head = head
        self.ctx = ctx
        self.response = response

    def value(self, rule: HttpRule, bad: re.Pattern[bytes] = _BAD_VALUE) -> bytes:
        assert rule.fmt is not None
        value = render(rule.fmt, self.ctx.sample)
        if bad.search(value):
            raise _Failed
        return value


def _set_header(a: Action, rule: HttpRule) -> Stop | None:
    value = a.value(rule)
    name = rule.name.lower()
    a.headers[:] = [h for h in a.headers if h[0].lower() != name]
    a.headers.append((rule.name, value))
    return None


def _add_header(a: Action, rule: HttpRule) -> Stop | None:
    a.headers.append((rule.name, a.value(rule)))
    return None


def _name_matcher(rule: HttpRule) -> Callable[[bytes], bool]:
    pattern = rule.name.lower()
    if rule.match == "reg":
        assert rule.regex is not None
        regex = rule.regex
        return lambda n: regex.search(n) is not None
    if rule.match == "beg":
        return lambda n: n.lower().startswith(pattern)
    if rule.match == "end":
        return lambda n: n.lower().endswith(pattern)
    if rule.match == "sub":
        return lambda n: pattern in n.lower()
    return lambda n: n.lower() == pattern


def _del_header(a: Action, rule: HttpRule) -> Stop | None:
    matches = _name_matcher(rule)
    a.headers[:] = [h for h in a.headers if not matches(h[0])]
    return None


def _replaced(
    rule: HttpRule, a: Action, value: bytes, replacement: bytes | None
) -> tuple[bytes, bytes | None]:
    """``value`` after the rule's regex replacement, and the replacement (rendered once, lazily)."""
    assert rule.regex is not None
    m = rule.regex.search(value)
    if m is None:
        return value, replacement
    if replacement is None:
        replacement = a.value(rule)
    groups = m.groups()

    def group(g: re.Match[bytes]) -> bytes:
        n = int(g.group(1))
        if n == 0:
            return m.group(0)
        return (groups[n - 1] or b"") if n <= len(groups) else b""

    out = _GROUP.sub(group, replacement)
    if _BAD_VALUE.search(out):
        raise _Failed
    return out, replacement


def _replace_header(a: Action, rule: HttpRule) -> Stop | None:
    name = rule.name.lower()
    replacement: bytes | None = None
    each_value = rule.action == "replace-value"
    for i, (n, v) in enumerate(a.headers):
        if n.lower() != name:
            continue
        if each_value:
            parts = []
            for part in v.split(b","):
                new, replacement = _replaced(rule, a, part.strip(b" \t"), replacement)
                parts.append(new)
            a.headers[i] = (n, b", ".join(parts))
        else:
            new, replacement = _replaced(rule, a, v, replacement)
            a.headers[i] = (n, new)
    return None


def _request(a: Action) -> RequestHead:
    assert a.head is not None, "a request action ran on a response"
    return a.head


def _retarget(a: Action, head: RequestHead, target: bytes) -> None:
    head.target = target
    a.ctx.acl.path = split_target(target)[1] or b"/"


def _set_path(a: Action, rule: HttpRule) -> Stop | None:
    head = _request(a)
    prefix, _, query = split_target(head.target)
    _retarget(a, head, _join(prefix, a.value(rule, _BAD_TARGET), query))
    return None


def _set_query(a: Action, rule: HttpRule) -> Stop | None:
    head = _request(a)
    prefix, path, query = split_target(head.target)
    value = a.value(rule, _BAD_TARGET)
    # HAProxy: a '?' is added only for a non-empty value, and never removed
    _retarget(a, head, _join(prefix, path, value if value or query is not None else None))
    return None


def _set_uri(a: Action, rule: HttpRule) -> Stop | None:
    head = _request(a)
    value = a.value(rule, _BAD_TARGET)
    _retarget(a, head, value or b"/")
    return None


def location(redirect: Redirect, head: RequestHead, sample: SampleCtx) -> bytes | None:
    """The ``Location`` of a redirect (None: the rule is skipped, ``ignore-empty``-like)."""
    value = render(redirect.value, sample)
    if redirect.kind == "location":
        return value
    _, path, query = split_target(head.target)
    if not path or path == b"*":
        path = b"/"
    if redirect.append_slash and not path.endswith(b"/"):
        path += b"/"
    uri = path + (b"?" + query if query is not None and not redirect.drop_query else b"")
    if redirect.kind == "prefix":
        return uri if value == b"/" else value + uri
    host = header_value(head.headers, b"host") or b""
    return value + b"://" + host + uri


def _redirect(a: Action, rule: HttpRule) -> Stop | None:
    assert rule.redirect is not None
    loc = location(rule.redirect, _request(a), a.ctx.sample)
    if loc is None:
        return None
    if _BAD_VALUE.search(loc):
        raise _Failed
    reply = Reply(rule.redirect.code, [(b"Location", loc), (b"Cache-Control", b"no-cache")])
    return Stop(rule.redirect.code, "PR", True, reply)


def _deny(a: Action, rule: HttpRule) -> Stop | None:
    return Stop(rule.status, "PH" if a.response else "PR", not a.response)


def _return(a: Action, rule: HttpRule) -> Stop | None:
    ret = rule.ret
    assert ret is not None
    sample = a.ctx.sample
    body = render(ret.body_fmt, sample) if ret.body_fmt is not None else ret.body
    headers: Headers = []
    for name, fmt in ret.headers:
        value = render(fmt, sample)
        if _BAD_VALUE.search(value):
            raise _Failed
        headers.append((name, value))
    return Stop(ret.status, "PR", True, local_reply(ret.status, body, ret.content_type, headers))


def _use_service(a: Action, rule: HttpRule) -> Stop | None:
    return Stop(200, "LR", True, service=rule.name.decode())  # LR: answered locally, as HAProxy logs


def _allow(a: Action, rule: HttpRule) -> Stop | None:
    raise _Allow


ACTIONS: dict[str, Callable[[Action, HttpRule], Stop | None]] = {
    "set-header": _set_header,
    "add-header": _add_header,
    "del-header": _del_header,
    "replace-header": _replace_header,
    "replace-value": _replace_header,
    "set-path": _set_path,
    "set-query": _set_query,
    "set-uri": _set_uri,
    "redirect": _redirect,
    "deny": _deny,
    "return": _return,
    "use-service": _use_service,
    "allow": _allow,
}


# -- running a proxy's set -----------------------------------------------------------------------------


def _run(rules: list[HttpRule], action: Action, failure: Stop | None) -> Stop | None:
    """One proxy's set. ``failure`` is what a failed rewrite becomes in strict mode (None: skipped)."""
    strict = True
    acl = action.ctx.acl
    for rule in rules:
        if rule.cond is not None and not cond_holds(rule.cond, acl):
            continue
        if rule.action == "strict-mode":
            strict = rule.strict
            continue
        try:
            stop = ACTIONS[rule.action](action, rule)
        except _Allow:
            return None
        except _Failed:
            if strict and failure is not None:
                return failure
            continue
        if stop is not None:
            return stop
    return None


def request_rules(rules: list[HttpRule], head: RequestHead, ctx: RuleCtx) -> Stop | None:
    """A proxy's ``http-request`` set on ``head``; a failed rewrite is a 500 (``IR``) in strict mode."""
    return _run(rules, Action(head.headers, head, ctx, False), Stop(500, "IR", False))


def response_rules(rules: list[HttpRule], headers: Headers, ctx: RuleCtx) -> Stop | None:
    """A proxy's ``http-response`` set on a server response's headers (500 ``IH`` on failure)."""
    return _run(rules, Action(headers, None, ctx, True), Stop(500, "IH", False))


def after_response_rules(rules: list[HttpRule], headers: Headers, ctx: RuleCtx) -> None:
    """A proxy's ``http-after-response`` set on any answer's headers; failed rewrites are skipped."""
    _run(rules, Action(headers, None, ctx, True), None)
