"""The keyword registry: every configuration keyword poolproxy knows, declared once.

``REGISTRY`` drives parsing (the parser asks it which keyword a line starts with and calls that
keyword's parse function), validation (sections allowed, ``no`` prefix, unsupported keywords) and the
reference page ``docs/configuration.md`` (``tools/gen_config_doc.py`` renders it from here, and a test
checks that the committed page is current). The declarations live by section in ``kw_global``,
``kw_proxy``, ``kw_server``, ``kw_rules``, ``kw_http`` and ``errorfile``; server parameters in
``kw_server.PARAMS`` and ACL criteria in ``acl_syntax.CRITERIA``, which the reference renders too.

To add a keyword: declare a ``Keyword`` in the module of its section with its parse function, run
``python tools/gen_config_doc.py`` and commit the page with the code.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config import errorfile, kw_check, kw_global, kw_http, kw_proxy, kw_rules, kw_server, kw_stats
from proxy.config.acl_syntax import CRITERIA, PREDEFINED, Criterion
from proxy.config.kw_server import PARAMS as SERVER_PARAMS, ServerParam
from proxy.config.kwtypes import Keyword, Registry, Section

_ALL = [
    *kw_global.KEYWORDS, *kw_proxy.KEYWORDS, *kw_check.KEYWORDS, *kw_server.KEYWORDS, *kw_rules.KEYWORDS,
    *kw_http.KEYWORDS, *kw_stats.KEYWORDS,
]
REGISTRY = Registry([*_ALL, *errorfile.KEYWORDS])

# Section names HAProxy has that poolproxy does not read: their whole body is skipped with one error.
UNSUPPORTED_SECTIONS: dict[str, str] = {
    name: "not supported"
    for name in (
        "userlist", "peers", "resolvers", "mailers", "ring", "cache", "program",
        "crt-store", "traces", "log-forward", "fcgi-app", "dynamic-update", "ssl-f-use", "acme",
    )
}  # fmt: skip



@dataclass(frozen=True, slots=True)
class Family:
    """A family of HAProxy keywords for the compatibility table: its members are the registry's
    keywords named in ``names`` or starting with one of ``prefixes``, the server parameters in
    ``params`` and the sections in ``sections``; ``note`` says what poolproxy does about it."""

    label: str
    note: str
    names: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()

    def has(self, name: str) -> bool:
        return name in self.names or name.startswith(self.prefixes)


_CHECK_PARAMS = ("check", "no-check", "inter", "fastinter", "downinter", "rise", "fall", "port", "addr",
                 "agent-check", "agent-port", "agent-inter", "observe", "error-limit", "on-error",
                 "on-marked-down", "on-marked-up", "track", "check-ssl", "check-send-proxy", "check-sni")
_TLS_PARAMS = ("ssl", "no-ssl", "verify", "sni", "ca-file", "crt", "alpn")
FAMILIES: list[Family] = [
    Family("Process management", "The master runs the workers; privileges are dropped by each worker.",
           names=("daemon", "nbthread", "nbproc", "pidfile", "master-worker", "chroot", "user", "group",
                  "uid", "gid", "hard-stop-after", "worker-watchdog-timeout", "noreuseport", "cpu-map",
                  "setenv", "presetenv", "unsetenv", "resetenv",
                  "insecure-fork-wanted", "insecure-setuid-wanted", "expose-experimental-directives")),
    Family("Start-up checks and limits", "HAProxy's warnings, zero-warning, quiet, file descriptor limits.",
           names=("zero-warning", "quiet", "strict-limits", "ulimit-n", "default-path")),
    Family("Pollers, splicing, node identity", "HAProxy's own machinery: accepted, ignored with a warning.",
           names=("noepoll", "nopoll", "nokqueue", "noevports", "busy-polling", "nosplice",
                  "node", "tune.maxpollevents", "tune.maxaccept")),
    Family("Tuning", "The HTTP/1 engine, buffer and header limits, pool sharing, HTTP/2 to servers.",
           prefixes=("tune.",)),
    Family("TLS", "TLS to servers (verify, ca-file, sni, alpn, ssl-default-server-*); no TLS listener yet.",
           names=("ca-base", "crt-base"), prefixes=("ssl-",), params=_TLS_PARAMS),
    Family("Logging", "HAProxy's httplog line to the global targets; custom log formats not yet.",
           names=("log", "log-tag", "log-send-hostname", "option httplog", "option dontlognull", "log-format",
                  "error-log-format", "option log-separate-errors", "option logasap"),
           prefixes=("capture ", "declare capture")),
    Family("Runtime API and stats page", "The runtime API socket; the stats page (enable, uri, refresh...).",
           names=("stats socket", "stats timeout", "stats maxconn", "stats", "option contstats",
                  "option socket-stats"), prefixes=("stats ",)),
    Family("Proxies and listeners", "HTTP only; bind without TLS; maxconn divided between workers.",
           names=("mode", "bind", "maxconn", "backlog", "fullconn", "disabled", "enabled", "id",
                  "description", "rate-limit sessions", "monitor-uri", "monitor fail")),
    Family("Timeouts", "All but the TCP half-close and tarpit ones.",
           prefixes=("timeout ",)),
    Family("Routing", "ACLs (path, hdr, method, src, ssl_fc...), use_backend, default_backend.",
           names=("acl", "use_backend", "default_backend", "use-server", "redirect", "dispatch")),
    Family("http-request rules", "Header, target, redirect, deny, return, allow rules; no variables yet.",
           prefixes=("http-request ",)),
    Family("http-response rules", "Header rules and deny.", prefixes=("http-response ",)),
    Family("http-after-response rules", "Header rules, on every answer.", prefixes=("http-after-response ",)),
    Family("Error pages", "errorfile, errorfiles and http-errors; errorloc redirects not yet.",
           names=("errorfile", "errorfiles"), prefixes=("errorloc",)),
    Family("Unique request id", "unique-id-format (log-format expressions) and unique-id-header.",
           prefixes=("unique-id-",)),
    Family("HTTP connection options", "Connection modes, forwardfor, probes, abortonclose; strict parsing.",
           names=("option http-keep-alive", "option http-server-close", "option httpclose",
                  "option forwardfor", "option http-ignore-probes", "option abortonclose",
                  "option http-buffer-request",
                  "option http-pretend-keepalive", "option http-no-delay", "option http-use-proxy-header",
                  "option originalto", "option nolinger", "option splice-auto", "retry-on",
                  "http-send-name-header"),
           prefixes=("option accept-",)),
    Family("Load balancing", "roundrobin, leastconn, first, source, random; backup servers; hash-based"
           " ones not yet.",
           names=("balance", "hash-type", "option allbackups")),
    Family("Servers", "server, default-server, source (usesrc clientip), weights, maxconn and queues.",
           names=("server", "default-server", "source", "server-template", "retries", "server-state-file",
                  "load-server-state-from-file"),
           params=("weight", "disabled", "enabled", "maxconn", "maxqueue", "source", "usesrc", "backup", "id",
                   "no-backup", "minconn", "slowstart", "redir", "proto", "send-proxy", "send-proxy-v2",
                   "resolvers", "init-addr", "resolve-prefer", "tfo", "namespace", "interface")),
    Family("Connection pooling", "HAProxy's http-reuse and pool settings, shared across workers.",
           names=("http-reuse",),
           params=("pool-low-conn", "pool-max-conn", "pool-purge-delay", "strict-maxconn", "max-reuse")),
    Family("Health checks", "TCP connect and HTTP checks run by one worker per server, state shared by all;"
           " retries with redispatch. No agent, passive (observe) or protocol-specific checks.",
           names=("http-check", "external-check", "option httpchk", "option log-health-checks",
                  "option redispatch", "email-alert", "option tcp-check", "tcp-check", "spread-checks",
                  "option external-check"),
           prefixes=("option ldap-", "option mysql-", "option pgsql-", "option redis-", "option smtp",
                     "option ssl-hello"),
           params=_CHECK_PARAMS),
    Family("Persistence and stick tables", "Not yet.",
           names=("cookie", "force-persist", "ignore-persist", "option persist", "option prefer-last-server",
                  "stick-table"),
           prefixes=("stick ",), params=("cookie",)),
    Family("TCP mode", "HTTP only.", names=("tcp-request", "tcp-response", "option tcplog", "option tcpka",
                                             "option clitcpka", "option srvtcpka")),
    Family("Compression, cache, filters, Lua", "Not supported.",
           names=("compression", "filter", "lua-load"), sections=("cache", "program", "fcgi-app")),
    Family("Other sections", "Read as an error naming the section; its lines are skipped.",
           sections=tuple(sorted(set(UNSUPPORTED_SECTIONS) - {"cache", "program", "fcgi-app"}))),
]  # fmt: skip


def family_of(name: str) -> Family | None:
    """The family a registry keyword belongs to (None: none claims it, which a test forbids)."""
    for family in FAMILIES:
        if family.has(name):
            return family
    return None


__all__ = [
    "CRITERIA",
    "FAMILIES",
    "PREDEFINED",
    "REGISTRY",
    "SERVER_PARAMS",
    "UNSUPPORTED_SECTIONS",
    "Criterion",
    "Family",
    "Keyword",
    "Registry",
    "Section",
    "ServerParam",
    "family_of",
]
