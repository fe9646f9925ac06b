"""Keywords of the ``global`` section: process-wide settings, stored in ``model.Global``."""

from __future__ import annotations

from proxy.config.kwtypes import GLOBAL, Directive, Keyword, SectionState, unsupported
from proxy.config.model import DEFAULT_H1_ENGINE, LogTarget
from proxy.config.timeunit import parse_int, parse_size

SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
    "ftp", "ntp", "audit", "alert", "cron2",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip
SYSLOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
LOG_FORMATS = ("local", "rfc3164", "rfc5424", "priority", "short", "timed", "iso", "raw")
H1_ENGINES = ("native", "llhttp", "h11")


def _int(d: Directive, text: str, lo: int | None = None, hi: int | None = None) -> int:
    try:
        return parse_int(text, lo, hi)
    except ValueError as exc:
        raise d.fail(str(exc)) from None


def _nbthread(st: SectionState, d: Directive) -> None:
    d.expect(1, "<number>")
    st.global_.nbthread = _int(d, d.args[0], 1, 4096)


def _maxconn(st: SectionState, d: Directive) -> None:
    d.expect(1, "<number>")
    st.global_.maxconn = _int(d, d.args[0], 0)


def _log(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail(
            "expects a target: log <target> [len <n>] [format <fmt>] [<facility> [<level> [<minlevel>]]]"
        )
    if d.args == ["global"]:
        raise d.fail("'log global' belongs in a proxy section; in 'global' give a target")
    target, rest = d.args[0], d.args[1:]
    spec = LogTarget(target=target, where=d.where)
    while rest and rest[0] in ("len", "format", "sample"):
        opt = rest[0]
        if len(rest) < 2:
            raise d.fail(f"'{opt}' expects a value")
        value, rest = rest[1], rest[2:]
        if opt == "len":
            spec.length = _int(d, value, 80, 65535)
        elif opt == "format":
            if value not in LOG_FORMATS:
                raise d.fail(f"unknown log format '{value}' (expected one of {', '.join(LOG_FORMATS)})")
            spec.format = value
        else:
            raise d.fail("'sample' (log sampling) is not supported")
    if len(rest) > 3:
        raise d.fail(f"too many arguments after the facility: {' '.join(rest[3:])!r}")
    if rest:
        if rest[0] not in SYSLOG_FACILITIES:
            raise d.fail(f"unknown syslog facility '{rest[0]}'")
        spec.facility = rest[0]
    for attr, value in zip(("level", "minlevel"), rest[1:], strict=False):
        if value not in SYSLOG_LEVELS:
            raise d.fail(f"unknown log level '{value}' (expected one of {', '.join(SYSLOG_LEVELS)})")
        setattr(spec, attr, value)
    st.global_.logs.append(target)
    st.global_.log_targets.append(spec)


def _stats_socket(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail("expects a path: stats socket <path> [params...]")
    st.global_.stats_sockets.append(" ".join(d.args))


def _daemon(st: SectionState, d: Directive) -> None:
    d.expect(0, "")
    st.global_.daemon = not d.negated


def _pidfile(st: SectionState, d: Directive) -> None:
    d.expect(1, "<path>")
    st.global_.pidfile = d.args[0]


def _master_worker(st: SectionState, d: Directive) -> None:
    if d.args:
        raise d.fail(f"option '{d.args[0]}' is not supported (poolproxy always runs a master and workers)")


def _inert_tls(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail("expects a value")


def _h1_engine(st: SectionState, d: Directive) -> None:
    d.expect(1, "native|llhttp|h11")
    if d.args[0] not in H1_ENGINES:
        raise d.fail(f"unknown HTTP/1 engine '{d.args[0]}' (expected native, llhttp or h11)")
    if d.args[0] == "native" and DEFAULT_H1_ENGINE != "native":
        raise d.fail("the native HTTP/1 engine is not built (its C extension proxy._h1head is missing)")
    st.global_.h1_engine = d.args[0]


def _idle_pool_shared(st: SectionState, d: Directive) -> None:
    d.expect(1, "on|off")
    if d.args[0] not in ("on", "off"):
        raise d.fail(f"expects 'on' or 'off', not '{d.args[0]}'")
    st.global_.idle_pool_shared = d.args[0] == "on"


def _bufsize(st: SectionState, d: Directive) -> None:
    d.expect(1, "<size>")
    try:
        size = parse_size(d.args[0])
    except ValueError as exc:
        raise d.fail(str(exc)) from None
    if not 1024 <= size <= 256 * 1024 * 1024:
        raise d.fail(f"{size} is out of range 1024..268435456")
    st.global_.bufsize = size


def _maxhdr(st: SectionState, d: Directive) -> None:
    d.expect(1, "<number>")
    st.global_.maxhdr = _int(d, d.args[0], 1, 32767)


KEYWORDS: list[Keyword] = [
    Keyword("nbthread", GLOBAL, "<number>", "Number of worker processes (HAProxy's threads).",
            _nbthread, default="CPUs available"),
    Keyword("maxconn", GLOBAL, "<number>", "Most client connections open at once, all workers together.",
            _maxconn, default="0 (no limit)"),
    Keyword("log", GLOBAL,
            "<target> [len <n>] [format <fmt>] [<facility> [<level> [<minlevel>]]]",
            "Send logs to a target (stdout, stderr, a Unix socket path, host:port); repeatable.",
            _log, default="none"),
    Keyword("stats socket", GLOBAL, "<path> [params...]",
            "Runtime API socket; the line is kept as written and served by the master.",
            _stats_socket, default="none"),
    Keyword("daemon", GLOBAL, "", "Detach from the terminal and run in the background.",
            _daemon, default="foreground", negatable=True),
    Keyword("pidfile", GLOBAL, "<path>", "Write the master's pid to this file.", _pidfile, default="none"),
    Keyword("master-worker", GLOBAL, "",
            "Accepted for HAProxy compatibility: poolproxy always runs a master and workers.",
            _master_worker, default="always"),
    Keyword("tune.h1-engine", GLOBAL, "native|llhttp|h11",
            "HTTP/1 parser: native (fastest, C), llhttp (via httptools) or h11 (reference); same answers.",
            _h1_engine, default="native (llhttp if its C extension is not built)"),
    Keyword("tune.idle-pool.shared", GLOBAL, "on|off",
            "Whether a worker may take idle server connections from other workers (stealing).",
            _idle_pool_shared, default="on"),
    Keyword("tune.bufsize", GLOBAL, "<size>",
            "Largest request or response head accepted (431 / 502 beyond); k, m suffixes allowed.",
            _bufsize, default="16384"),
    Keyword("tune.http.maxhdr", GLOBAL, "<number>", "Most header lines accepted in a message (1..32767).",
            _maxhdr, default="101"),
] + [
    # Inert: these only set defaults for TLS, and every keyword that would use TLS (``ssl`` on a
    # bind or server line, ``crt``...) is refused, so accepting them changes nothing. They are
    # accepted so that stock configurations (Debian's haproxy.cfg has them) need no edit for them.
    Keyword(name, GLOBAL, "<value>...", "Accepted, no effect: TLS defaults (TLS is not supported).",
            _inert_tls, default="none")
    for name in (
        "ca-base", "crt-base", "ssl-default-bind-ciphers", "ssl-default-bind-ciphersuites",
        "ssl-default-bind-options", "ssl-default-server-ciphers", "ssl-default-server-ciphersuites",
        "ssl-default-server-options",
    )
]  # fmt: skip

_PRIVS = "not supported: start poolproxy as the user it should run as (systemd User=)"
_TLS = "not supported yet: poolproxy has no TLS"
KEYWORDS += [
    unsupported("user", _PRIVS, GLOBAL),
    unsupported("group", _PRIVS, GLOBAL),
    unsupported("uid", _PRIVS, GLOBAL),
    unsupported("gid", _PRIVS, GLOBAL),
    unsupported("chroot", "not supported", GLOBAL),
    unsupported(
        "nbproc", "not supported (removed from HAProxy 2.5): use 'nbthread' for the worker count", GLOBAL
    ),
    unsupported("cpu-map", "not supported", GLOBAL),
    unsupported("hard-stop-after", "not supported yet", GLOBAL),
    unsupported("stats timeout", "not supported yet", GLOBAL),
    unsupported("stats maxconn", "not supported yet", GLOBAL),
    unsupported("log-send-hostname", "not supported yet", GLOBAL),
    unsupported("log-tag", "not supported yet", GLOBAL),
    unsupported("node", "not supported yet", GLOBAL),
    unsupported("description", "not supported yet", GLOBAL),
    unsupported("setenv", "not supported: set environment variables before starting poolproxy", GLOBAL),
    unsupported("presetenv", "not supported: set environment variables before starting poolproxy", GLOBAL),
    unsupported("unsetenv", "not supported", GLOBAL),
    unsupported("resetenv", "not supported", GLOBAL),
    unsupported("ulimit-n", "not supported: raise the limit before starting poolproxy", GLOBAL),
    unsupported("server-state-file", "not supported", GLOBAL),
    unsupported("lua-load", "not supported", GLOBAL),
    unsupported("tune.ssl.default-dh-param", _TLS, GLOBAL),
    unsupported("tune.maxrewrite", "not supported", GLOBAL),
]
