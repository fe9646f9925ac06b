"""The Prometheus exporter (``http-request use-service prometheus-exporter``): metrics from the shared
table, in the Prometheus text format written by the ``prometheus_client`` library.

Names and labels are HAProxy's exporter's (``haproxy_process_*``, ``haproxy_frontend_*{proxy}``,
``haproxy_backend_*{proxy}``, ``haproxy_server_*{proxy,server}``; ``*_status`` with a ``state``
label per possible state, 1 for the current one), limited to what poolproxy measures; a metric
HAProxy has and poolproxy does not is left out rather than reported as 0. poolproxy's own metrics
show the shared pool per worker (``poolproxy_server_idle_connections{proxy,server,worker}``,
safe and used connections, queued requests) and the takeovers between workers.

Pure: ``render(snapshot, config, ...)`` returns the body; the worker's service glue (``proxy.services``)
serves it. No I/O, no HTTP code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy import __version__
from proxy.config.model import Config
from proxy.stats import HRSP, SERVER_HRSP, server_status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format generate_latest writes
SERVER_STATES = ("DOWN", "UP", "MAINT", "DRAIN", "NOLB")

Labels = tuple[str, ...]


class _Families:
    """Metric families by name, created on first use, in the order first used."""

    def __init__(self) -> None:
        self.by_name: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def add(self, kind: str, name: str, doc: str, labels: Labels, values: Labels, value: float) -> None:
        fam = self.by_name.get(name)
        if fam is None:
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            # CounterMetricFamily takes the name without its _total suffix
            base = name[: -len("_total")] if kind == "counter" else name
            fam = self.by_name[name] = cls(base, doc, labels=list(labels))
        fam.add_metric(list(values), value)


def _process(m: _Families, snap: dict[str, Any], config: Config, started: float) -> None:
    fronts = snap.get("frontends", [])
    g = config.global_
    none: Labels = ()
    m.add("gauge", "haproxy_process_nbthread", "Number of started threads (poolproxy: worker processes)",
          none, none, snap["header"]["nworkers"])  # fmt: skip
    m.add("gauge", "haproxy_process_nbproc", "Number of started worker processes (historical, always 1)",
          none, none, 1)  # fmt: skip
    m.add("gauge", "haproxy_process_uptime_seconds", "How long ago this process was started (seconds)",
          none, none, int(time.time() - started))  # fmt: skip
    m.add("gauge", "haproxy_process_start_time_seconds", "Start time in seconds", none, none, int(started))
    m.add("gauge", "haproxy_process_max_connections", "Maximum number of concurrent connections", none,
          none, g.maxconn)  # fmt: skip
    m.add("gauge", "haproxy_process_current_connections", "Number of active sessions", none, none,
          sum(f["cur_conns"] for f in fronts))  # fmt: skip
    m.add("counter", "haproxy_process_connections_total", "Total number of created sessions", none, none,
          sum(f["conns_total"] for f in fronts))  # fmt: skip
    m.add("counter", "haproxy_process_requests_total", "Total number of requests (TCP or HTTP)", none,
          none, sum(f["requests_total"] for f in fronts))  # fmt: skip
    m.add("gauge", "haproxy_process_build_info", "Build info", ("version",), (__version__,), 1)


def _frontends(m: _Families, snap: dict[str, Any], config: Config) -> None:
    px = ("proxy",)
    for f in snap.get("frontends", []):
        name = f["name"]
        cfg = config.frontends.get(name)
        v = (name,)
        m.add("gauge", "haproxy_frontend_current_sessions", "Number of current sessions", px, v,
              f["cur_conns"])  # fmt: skip
        m.add("gauge", "haproxy_frontend_max_sessions", "Maximum observed number of sessions", px, v,
              f["max_conns"])  # fmt: skip
        m.add("gauge", "haproxy_frontend_limit_sessions", "Configured session limit", px, v,
              cfg.maxconn if cfg is not None else 0)  # fmt: skip
        m.add("counter", "haproxy_frontend_sessions_total", "Total number of sessions", px, v,
              f["conns_total"])  # fmt: skip
        m.add("counter", "haproxy_frontend_bytes_out_total", "Current total of outgoing bytes", px, v,
              f["bytes_out"])  # fmt: skip
        m.add("counter", "haproxy_frontend_requests_denied_total", "Total number of denied requests", px, v,
              f["denied_req"])  # fmt: skip
        m.add("counter", "haproxy_frontend_request_errors_total", "Total number of request errors", px, v,
              f["bad_req"])  # fmt: skip
        for state in ("DOWN", "UP"):
            m.add("gauge", "haproxy_frontend_status", "Current status of the service", ("proxy", "state"),
                  (name, state), int(state == "UP"))  # fmt: skip
        for key in HRSP:
            code = key[len("hrsp_"):]
            m.add("counter", "haproxy_frontend_http_responses_total", "Total number of HTTP responses",
                  ("proxy", "code"), (name, code), f[key])  # fmt: skip
        m.add("counter", "haproxy_frontend_http_requests_total", "Total number of HTTP requests received",
              px, v, f["requests_total"])  # fmt: skip
        m.add("counter", "haproxy_frontend_connections_total", "Total number of connections", px, v,
              f["conns_total"])  # fmt: skip


def _backends(m: _Families, snap: dict[str, Any], config: Config) -> None:
    px = ("proxy",)
    for be in config.backends:
        rows = [s for s in snap["servers"] if s["backend"] == be]
        up = [s for s in rows if server_status(s) != "MAINT"]
        v = (be,)
        m.add("gauge", "haproxy_backend_current_queue", "Number of current queued connections", px, v,
              sum(s["queue_len"] for s in rows))  # fmt: skip
        m.add("gauge", "haproxy_backend_current_sessions", "Number of current sessions", px, v,
              sum(s["served"] for s in rows))  # fmt: skip
        m.add("counter", "haproxy_backend_sessions_total", "Total number of sessions", px, v,
              sum(s["requests"] for s in rows))  # fmt: skip
        for state in ("DOWN", "UP"):
            m.add("gauge", "haproxy_backend_status", "Current status of the service", ("proxy", "state"),
                  (be, state), int((state == "UP") == bool(up)))  # fmt: skip
        weight = sum(s["weight"] for s in up if server_status(s) == "no check")
        m.add("gauge", "haproxy_backend_weight", "Service weight", px, v, weight)
        m.add("gauge", "haproxy_backend_active_servers", "Current number of active servers", px, v, len(up))
        m.add("gauge", "haproxy_backend_backup_servers", "Current number of backup servers", px, v, 0)
        m.add("counter", "haproxy_backend_http_requests_total", "Total number of HTTP requests received",
              px, v, sum(s["requests"] for s in rows))  # fmt: skip
        m.add("counter", "haproxy_backend_connection_attempts_total", "Total number of connection attempts",
              px, v, sum(s["connects"] for s in rows))  # fmt: skip
        m.add("counter", "haproxy_backend_connection_reuses_total", "Total number of connection reuses",
              px, v, sum(s["reuses"] for s in rows))  # fmt: skip
        m.add("gauge", "haproxy_backend_uweight", "Sum of the active servers' user weights", px, v, weight)
        for key in SERVER_HRSP:
            m.add("counter", "haproxy_backend_http_responses_total", "Total number of HTTP responses",
                  ("proxy", "code"), (be, key[len("hrsp_"):]), sum(s[key] for s in rows))  # fmt: skip


_SERVER_GAUGES = (
    ("haproxy_server_current_queue", "Number of current queued connections", "queue_len"),
    ("haproxy_server_max_queue", "Maximum observed number of queued connections", "max_queue"),
    ("haproxy_server_current_sessions", "Number of current sessions", "served"),
    ("haproxy_server_max_sessions", "Maximum observed number of sessions", "max_served"),
    ("haproxy_server_limit_sessions", "Configured session limit", "maxconn"),
    ("haproxy_server_weight", "Service weight", "weight"),
    ("haproxy_server_queue_limit", "Configured maxqueue for the server (0 meaning no limit)", "maxqueue"),
    ("haproxy_server_idle_connections_current", "Current number of idle connections available for reuse",
     "idle"),
    ("haproxy_server_safe_idle_connections_current", "Current number of safe idle connections", "safe"),
    ("haproxy_server_used_connections_current", "Current number of connections in use", "used"),
    ("haproxy_server_need_connections_current", "Estimated needed number of connections", "est_need"),
    ("haproxy_server_uweight", "Server's user weight", "weight"),
)  # fmt: skip
_SERVER_COUNTERS = (
    ("haproxy_server_sessions_total", "Total number of sessions", "requests"),
    ("haproxy_server_connection_attempts_total", "Total number of connection attempts", "connects"),
    ("haproxy_server_connection_errors_total", "Total number of connection errors", "connect_errors"),
    ("haproxy_server_connection_reuses_total", "Total number of connection reuses", "reuses"),
    ("poolproxy_server_takeovers_asked_total", "Idle connections of another worker claimed",
     "takeovers_asked"),
    ("poolproxy_server_takeovers_given_total", "Idle connections taken over by another worker",
     "takeovers_given"),
    ("poolproxy_server_takeovers_failed_total", "Claims given back (the connection could not be taken)",
     "takeovers_failed"),
    ("poolproxy_server_purged_connections_total", "Idle connections closed by the purge", "purged"),
    ("poolproxy_server_queue_timeouts_total", "Requests that left the queue on timeout", "queue_timeouts"),
)  # fmt: skip
_WORKER_GAUGES = (
    ("poolproxy_server_idle_connections", "Idle connections held by one worker", "idle"),
    ("poolproxy_server_safe_idle_connections", "Safe idle connections held by one worker", "safe"),
    ("poolproxy_server_used_connections", "Connections carrying a request in one worker", "used"),
    ("poolproxy_server_queued_requests", "Requests of one worker waiting in the server's queue", "queued"),
)  # fmt: skip


def _servers(m: _Families, snap: dict[str, Any], config: Config) -> None:
    ps = ("proxy", "server")
    limits = {(be, s.name): s.pool_max_conn for be, px in config.backends.items() for s in px.servers}
    for s in snap["servers"]:
        v = (s["backend"], s["server"])
        for name, doc, key in _SERVER_GAUGES:
            m.add("gauge", name, doc, ps, v, s[key])
        m.add("gauge", "haproxy_server_idle_connections_limit", "Limit on the number of available idle "
              "connections", ps, v, limits.get(v, -1))  # fmt: skip
        m.add("gauge", "haproxy_server_unsafe_idle_connections_current",
              "Current number of unsafe idle connections", ps, v, max(0, s["idle"] - s["safe"]))  # fmt: skip
        status = server_status(s)
        current = "UP" if status == "no check" else status
        for state in SERVER_STATES:
            m.add("gauge", "haproxy_server_status", "Current status of the service", (*ps, "state"),
                  (*v, state), int(state == current))  # fmt: skip
        for name, doc, key in _SERVER_COUNTERS:
            m.add("counter", name, doc, ps, v, s[key])
        for key in SERVER_HRSP:  # the classes the table counts per server
            m.add("counter", "haproxy_server_http_responses_total", "Total number of HTTP responses",
                  (*ps, "code"), (*v, key[len("hrsp_"):]), s[key])  # fmt: skip
        for slot, cell in enumerate(s["cells"]):
            wv = (*v, str(slot))
            for name, doc, key in _WORKER_GAUGES:
                m.add("gauge", name, doc, (*ps, "worker"), wv, cell[key])
            m.add("counter", "poolproxy_server_takeovers_taken_total",
                  "Idle connections this worker took over from another", (*ps, "worker"), wv,
                  cell["takeovers_taken"])  # fmt: skip


class _Collector:
    def __init__(self, families: _Families) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families.by_name.values()


def render(snap: dict[str, Any], config: Config, started: float) -> bytes:
    """The exposition of one scrape (``CONTENT_TYPE``)."""
    fams = _Families()
    _process(fams, snap, config, started)
    _frontends(fams, snap, config)
    _backends(fams, snap, config)
    _servers(fams, snap, config)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(fams))
    return generate_latest(registry)
