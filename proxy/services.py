"""The worker's own services: the answers a stream gets from the worker instead of a server.

``http-request use-service prometheus-exporter`` and the stats page (``stats uri``) end their rule
processing with a ``Stop`` naming a service (``proxy.rules``, ``proxy.frontend.stats_stop``); the
stream asks its environment to ``serve`` it, which lands here. Each service reads the shared table
(so any worker answers for all of them) and renders with a pure module: ``proxy.prometheus``,
``proxy.stats_page``, ``proxy.stats`` (the CSV). This module is the HTTP glue: target options,
Basic authentication, headers.
"""

from __future__ import annotations

import base64
import binascii
import json

from proxy import prometheus, stats, stats_page
from proxy.config.model import Config, Proxy, StatsPage
from proxy.message import RequestHead, header_value
from proxy.replies import Reply, error_reply
from proxy.shm import ShmTable

_NO_CACHE = (b"Cache-Control", b"no-cache")


class Services:
    def __init__(self, table: ShmTable, config: Config) -> None:
        self.table = table
        self.config = config
        self.started = table.header["created_ns"] / 1e9  # the master made the table at start

    def serve(self, name: str, head: RequestHead) -> Reply:
        if name == "prometheus-exporter":
            body = prometheus.render(self.table.snapshot(), self.config, self.started)
            return Reply(200, [_NO_CACHE, (b"Content-Type", prometheus.CONTENT_TYPE.encode())], body)
        if name.startswith("stats@"):
            px = self._proxy(name[len("stats@"):])
            if px is not None and px.stats is not None:
                return self._stats(px.stats, head)
        return error_reply(503)

    def _proxy(self, name: str) -> Proxy | None:
        return self.config.frontends.get(name) or self.config.backends.get(name)

    def _stats(self, page: StatsPage, head: RequestHead) -> Reply:
        if page.auth and not _authorized(page, head):
            realm = page.realm.replace('"', "'")
            reply = error_reply(401)
            reply.headers.append((b"WWW-Authenticate", f'Basic realm="{realm}"'.encode()))
            return reply
        options = head.target[len(page.uri):].decode("latin-1").split(";")[1:]
        snap = self.table.snapshot()
        headers = [_NO_CACHE]
        if page.refresh > 0 and "norefresh" not in options and "pools" not in options:
            headers.append((b"Refresh", str(max(1, round(page.refresh))).encode()))
        if "csv" in options:
            headers.append((b"Content-Type", b"text/plain"))
            return Reply(200, headers, stats.show_stat(snap, self.config).encode())
        if "pools" in options:
            headers.append((b"Content-Type", b"application/json"))
            return Reply(200, headers, json.dumps(stats_page.pools_json(snap)).encode())
        headers.append((b"Content-Type", b"text/html"))
        return Reply(200, headers, stats_page.render_html(snap, self.config, page, self.started).encode())


def _authorized(page: StatsPage, head: RequestHead) -> bool:
    value = header_value(head.headers, b"authorization") or b""
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"basic":
        return False
    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return (user, password) in page.auth

