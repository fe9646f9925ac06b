"""A frontend inside one worker: the rules applied to each request before a server is chosen.

``route`` applies them in HAProxy's order: the frontend's ``http-request return`` rules, then ``use_backend``
rules in order (first match wins), else ``default_backend``; then the chosen backend's own
``http-request return`` rules (a ``listen`` section is its own backend). ACLs are evaluated by
``proxy.acl`` on a ``RequestCtx`` built once per request.
"""

from __future__ import annotations

from proxy.acl import RequestCtx, cond_holds
from proxy.backend import Backend
from proxy.config.model import HttpReturn, Proxy
from proxy.h1 import Limits
from proxy.message import RequestHead


def request_ctx(head: RequestHead, client_ip: str) -> RequestCtx:
    target = head.target
    if target[:1] != b"/" and b"://" in target:  # absolute-form: the path part (RFC 3986 §3.2)
        rest = target.split(b"://", 1)[1]
        end = len(rest)  # the authority ends at the first "/" or "?"
        for sep in (b"/", b"?"):
            i = rest.find(sep)
            if 0 <= i < end:
                end = i
        target = rest[end:] if rest[end : end + 1] == b"/" else b"/" + rest[end:]
    q = target.find(b"?")
    path = target if q < 0 else target[:q]
    return RequestCtx(method=head.method, path=path, headers=head.headers, src=client_ip)


class Frontend:
    __slots__ = ("backends", "cfg", "default_backend", "engine_name", "limits", "name", "rules")

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

    def __repr__(self) -> str:
        return f"<Frontend {self.name} binds={len(self.cfg.binds)}>"

    def route(self, head: RequestHead, client_ip: str) -> tuple[HttpReturn | None, Backend | None]:
        """Where a request goes: a local answer (``http-request return``, the frontend's then the
        chosen backend's), or a backend (None for both: no backend matched, answer 503)."""
        if not self.rules and not self.cfg.http_request_returns:
            backend = self.default_backend  # no rule to evaluate here: no request context to build
            if backend is None or backend.cfg is self.cfg or not backend.cfg.http_request_returns:
                return None, backend
        ctx = request_ctx(head, client_ip)
        ret = first_return(self.cfg, ctx)
        if ret is not None:
            return ret, None
        backend = self.choose_backend(ctx)
        if backend is not None and backend.cfg is not self.cfg:
            ret = first_return(backend.cfg, ctx)
            if ret is not None:
                return ret, None
        return None, backend

    def choose_backend(self, ctx: RequestCtx) -> Backend | None:
        for backend, cond in self.rules:
            if cond_holds(cond, ctx):
                return backend
        return self.default_backend


def first_return(cfg: Proxy, ctx: RequestCtx) -> HttpReturn | None:
    for ret in cfg.http_request_returns:
        if cond_holds(ret.cond, ctx):
            return ret
    return None
