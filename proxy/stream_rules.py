"""What a stream does with the configured rules, and the proxy's own answers it builds.

A part of ``proxy.stream.Stream`` split off by concept (the class is a mixin of ``Stream``, which
owns every attribute used here): the rules' context of one exchange (``rule_ctx``: ACL inputs and
log-format inputs, made on first use, so an exchange without rules builds none), the request
headers the proxy adds after every rule (``option forwardfor``, ``unique-id-header``), the response
rule sets run on a server's response head (``http-response`` then ``http-after-response``, the
backend's before the frontend's), ``http-after-response`` on the proxy's own answers, and the
choice of an error page (the backend's ``errorfile``, else the frontend's, else the default one).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from proxy.acl import RequestCtx
from proxy.logformat import SampleCtx
from proxy.replies import Reply, error_reply
from proxy.rules import RuleCtx, Stop, after_response_rules, request_ctx, response_rules

if TYPE_CHECKING:
    from proxy.backend import Backend
    from proxy.frontend import Frontend
    from proxy.message import Headers, RequestHead, ResponseHead
    from proxy.sides import ClientSide


class StreamRules:
    """Mixin of ``Stream``; its one slot is the rules' context (the rest is ``Stream``'s)."""

    __slots__ = ("rctx",)
    rctx: RuleCtx | None  # the rules' context, made on first use (``Stream.__init__`` sets None)
    # Owned and set by Stream:
    side: ClientSide
    head: RequestHead
    backend: Backend | None
    t_start: float
    serial: int

    def frontend(self) -> Frontend:
        """The frontend the request came in on (``Stream``'s environment knows it)."""
        raise NotImplementedError

    def rule_ctx(self) -> RuleCtx:
        """What rules and expressions look at, made on first use (never, without rules)."""
        c = self.rctx
        if c is None:
            head, session, fe = self.head, self.side.session, self.frontend()
            head.wire = None  # rules may rewrite the head: its received bytes no longer describe it
            sample = SampleCtx(
                head, session.client_ip, session.client_port,
                accept_ts=time.time() - (time.monotonic() - self.t_start), frontend=fe.name,
                local_addr=self.side.local_address, request_no=self.serial,
                unique_id_format=fe.cfg.unique_id_format,
                backend=self.backend.name if self.backend is not None else "", ssl=session.ssl,
            )  # fmt: skip
            c = self.rctx = RuleCtx(request_ctx(head, session.client_ip, session.ssl), sample)
        return c

    def _added_headers(self) -> Headers:
        """``option forwardfor`` and ``unique-id-header``: added after every request rule ran."""
        fe, backend = self.frontend(), self.backend
        added: Headers = []
        xff = fe.xff_header if fe.xff_header is not None or backend is None else backend.xff_header
        if xff is not None:
            added.append((xff, self.side.session.client_ip.encode()))
        if fe.unique_id_header is not None:
            added.append((fe.unique_id_header, self.rule_ctx().sample.unique_id()))
        return added

    def _response_ctx(self, status: int, headers: Headers) -> RuleCtx:
        """The rules' context for an answer: ACLs and ``hdr()`` see the response's headers."""
        c = self.rule_ctx()
        c.sample.resp_status, c.sample.resp_headers = status, headers
        acl = c.acl
        return RuleCtx(RequestCtx(acl.method, acl.path, headers, acl.src), c.sample)

    def _response_rules(self, resp: ResponseHead) -> Stop | None:
        """``http-response`` then ``http-after-response`` on a server's response head (edited in
        place); a ``Stop`` when a rule denies it or a rewrite fails."""
        response_sets, after_sets = self.frontend().response_sets(self.backend)
        if not response_sets and not after_sets:
            return None
        resp.wire = None  # the rules may rewrite the head: its received bytes no longer describe it
        ctx = self._response_ctx(resp.status, resp.headers)
        for rules in response_sets:
            stop = response_rules(rules, resp.headers, ctx)
            if stop is not None:
                return stop
        for rules in after_sets:
            after_response_rules(rules, resp.headers, ctx)
        return None

    def _after_response(self, status: int, headers: Headers) -> None:
        """``http-after-response``: the backend's set, then the frontend's, on the proxy's answers."""
        sets = self.frontend().response_sets(self.backend)[1]
        if sets:
            ctx = self._response_ctx(status, headers)
            for rules in sets:
                after_response_rules(rules, headers, ctx)

    def error_reply(self, status: int) -> Reply:
        """The answer for an error: the backend's errorfile, else the frontend's, else the default
        page (HAProxy's order)."""
        page = None
        if self.backend is not None:
            page = self.backend.cfg.errorfiles.get(status)
        if page is None:
            page = self.frontend().cfg.errorfiles.get(status)
        return error_reply(status, page)
