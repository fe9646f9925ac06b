"""A frontend inside one worker: the rules applied to each request before a server is chosen.

``route`` applies them in HAProxy's order: the frontend's ``http-request`` rules (which may rewrite
the request or answer it), then ``use_backend`` rules in order (first match wins; their conditions
see the rewritten request), else ``default_backend``; then the chosen backend's own ``http-request``
rules (a ``listen`` section is its own backend: its rules run once). ACLs are evaluated by
``proxy.acl`` and rules carried out by ``proxy.rules``, on a ``RuleCtx`` the stream builds at most
once per request, and only when there is a rule to evaluate.

``response_sets`` gives, per backend, the ``http-response`` and ``http-after-response`` sets to run
on answers: the backend's, then the frontend's (HAProxy's order), computed once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from proxy.acl import RequestCtx, cond_holds
from proxy.backend import Backend
from proxy.config.model import HttpRule, Proxy
from proxy.h1 import Limits
from proxy.message import RequestHead
from proxy.rules import RuleCtx, Stop, request_ctx, request_rules

RuleSets = list[list[HttpRule]]
_NO_SETS: Final[tuple[RuleSets, RuleSets]] = ([], [])
__all__ = ["Frontend", "RuleSets", "request_ctx"]


def stats_stop(cfg: Proxy, head: RequestHead) -> Stop | None:
    """The stats page answers when the proxy has one and the target starts with its ``stats uri``
    (the service ``stats@<proxy>``: the worker renders it; logged ``LR``, a local answer)."""
    page = cfg.stats
    if page is None or not head.target.startswith(page.uri.encode()):
        return None
    return Stop(200, "LR", True, service="stats@" + cfg.name)


class Frontend:
    __slots__ = (
        "_answer_rules", "_sets", "backends", "cfg", "default_backend", "direct", "engine_name",
        "keep_alive_mode", "limits", "name", "rules", "unique_id_header", "xff_header",
    )  # fmt: skip

    # What every request reads of the configuration (``reconfigure``):
    keep_alive_mode: bool
    xff_header: bytes | None
    unique_id_header: bytes | None
    direct: Backend | None

    def __init__(self, cfg: Proxy, backends: dict[str, Backend], engine_name: str, limits: Limits) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.engine_name = engine_name
        self.limits = limits
        self.backends = backends
        self.default_backend = backends.get(cfg.default_backend) if cfg.default_backend else None
        if self.default_backend is None and cfg.name in backends:  # listen section
            self.default_backend = backends[cfg.name]
        self.rules = [(backends[u.backend], u.cond) for u in cfg.use_backends]
        self._sets: dict[int, tuple[RuleSets, RuleSets]] = {}
        self._answer_rules: bool | None = None  # known on the first answer (rules are set by then)
        self.reconfigure()

    def reconfigure(self) -> None:
        """Read what every request reads of the configuration (once: it never changes in a worker;
        the unit tests that edit it in place call this again)."""
        cfg = self.cfg
        self.keep_alive_mode = cfg.http_conn_mode == "keep-alive"
        self.xff_header = cfg.forwardfor_header.encode() if cfg.forwardfor else None
        self.unique_id_header = cfg.unique_id_header
        # No rule anywhere on the way to the default backend: ``route`` returns it at once.
        d = self.default_backend
        plain = not self.rules and not cfg.http_request and cfg.stats is None
        self.direct = None
        if plain and d is not None and (d.cfg is cfg or not (d.cfg.http_request or d.cfg.stats)):
            self.direct = d

    def __repr__(self) -> str:
        return f"<Frontend {self.name} binds={len(self.cfg.binds)}>"

    def route(self, head: RequestHead, ctx: Callable[[], RuleCtx]) -> tuple[Stop | None, Backend | None]:
        """Where a request goes: a rule's answer (``Stop``, with the backend whose rules gave it,
        if any), or a backend (None: no backend matched, answer 503). ``ctx`` makes the rules'
        context; it is called only if a rule or condition has to be evaluated."""
        if self.direct is not None:
            return None, self.direct
        cfg = self.cfg
        if not self.rules and not cfg.http_request and cfg.stats is None:
            backend = self.default_backend  # no rule to evaluate here: no request context to build
            if backend is None or backend.cfg is cfg or not (backend.cfg.http_request or backend.cfg.stats):
                return None, backend
        c = ctx()
        if cfg.http_request:
            stop = request_rules(cfg.http_request, head, c)
            if stop is not None:
                return stop, None
        stop = stats_stop(cfg, head)  # after the proxy's http-request rules, as HAProxy
        if stop is not None:
            return stop, None
        backend = self.choose_backend(c.acl)
        if backend is not None and backend.cfg is not cfg:
            c.sample.backend = backend.name
            if backend.cfg.http_request:
                stop = request_rules(backend.cfg.http_request, head, c)
                if stop is not None:
                    return stop, backend
            stop = stats_stop(backend.cfg, head)
            if stop is not None:
                return stop, backend
        return None, backend

    def choose_backend(self, ctx: RequestCtx) -> Backend | None:
        for backend, cond in self.rules:
            if cond_holds(cond, ctx):
                return backend
        return self.default_backend

    def response_sets(self, backend: Backend | None) -> tuple[RuleSets, RuleSets]:
        """``(http-response sets, http-after-response sets)`` for answers to requests sent to
        ``backend`` (None: answered before a backend was chosen); empty lists when there is none."""
        if not self._answer_rules:
            if self._answer_rules is not None:
                return _NO_SETS  # none anywhere (the usual case): answers skip the lookup
            every = (self.cfg, *(b.cfg for b in self.backends.values()))
            self._answer_rules = any(p.http_response or p.http_after_response for p in every)
            if not self._answer_rules:
                return _NO_SETS
        key = id(backend)
        sets = self._sets.get(key)
        if sets is None:
            proxies = [self.cfg] if backend is None or backend.cfg is self.cfg else [backend.cfg, self.cfg]
            sets = (
                [p.http_response for p in proxies if p.http_response],
                [p.http_after_response for p in proxies if p.http_after_response],
            )
            self._sets[key] = sets
        return sets
