"""The validated configuration, as plain data: what the parser produces and everything else reads.

Nothing here parses or validates; ``proxy.config.parser`` fills these objects (applying ``defaults``
inheritance) and guarantees the invariants noted on each field. Times are seconds as floats; ``None``
means "not set" (the code that uses a timeout documents its fallback).

A ``listen`` section yields one ``Proxy`` with both ``FRONTEND`` and ``BACKEND`` capabilities, stored in
both ``Config.frontends`` and ``Config.backends`` under the same name (HAProxy's model).
"""

from __future__ import annotations

import enum
import importlib.machinery
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import re

    from proxy.logformat import LogFormat


def _default_h1_engine() -> str:
    """``tune.h1-engine``'s default: ``native`` where its C extension is built, else ``llhttp``.

    ``proxy.h1.DEFAULT`` makes the same choice; this one does not import the engines.
    """
    try:
        import proxy._h1head  # noqa: F401
    except ImportError:  # not built (POOLPROXY_NO_EXT, no compiler)
        return "llhttp"
    return "native"


DEFAULT_H1_ENGINE = _default_h1_engine()


def _default_h2_engine() -> str:
    """``tune.h2-engine``'s default: ``native`` where ``proxy.h2.conn`` is compiled (and this process
    does not run the compiled modules from source, ``POOLPROXY_PURE``), else ``h2`` (the library).

    ``native`` runs as Python too (the tests run it so), slower than the library there.
    """
    if os.environ.get("POOLPROXY_PURE", "") not in ("", "0"):
        return "h2"
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "h2")
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    try:
        built = any(name.startswith("conn.") and name.endswith(suffixes) for name in os.listdir(here))
    except OSError:
        return "h2"
    return "native" if built else "h2"


DEFAULT_H2_ENGINE = _default_h2_engine()
H2_ENGINES = ("native", "h2")


class Cap(enum.Flag):
    FRONTEND = enum.auto()
    BACKEND = enum.auto()


class ReuseMode(enum.StrEnum):  # str-based: hashed in C on the hot path
    NEVER = "never"
    SAFE = "safe"
    AGGRESSIVE = "aggressive"
    ALWAYS = "always"


@dataclass(frozen=True, slots=True)
class Where:
    """Where a directive was written, for error messages: ``file:line``."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Acl:
    """``acl <name> <fetch>[(<arg>)] [-i] [-m <match>] <pattern> ...``.

    ``fetch`` is the sample fetch name (``path``, ``path_beg``, ``path_end``, ``path_sub``, ``hdr``,
    ``hdr_beg``, ``hdr_end``, ``hdr_sub``, ``method``, ``src``, ...); ``arg`` its argument (header name,
    lower-cased) or None. ``ignore_case`` is ``-i``. Patterns are kept as given (lower-cased when
    ``ignore_case``, except regular expressions, which are compiled case-insensitive instead).

    Added by the config parser (all with defaults): ``match`` is the explicit ``-m`` method when one
    was written (it overrides the one implied by ``fetch``); ``more`` holds later declarations of the
    same name with a different fetch or flags (HAProxy ORs every declaration of a name); ``matcher``
    is the compiled predicate that ``proxy.acl`` caches here on first use (or in ``proxy.acl.prepare``).
    """

    name: str
    fetch: str
    arg: str | None
    ignore_case: bool
    patterns: list[str]
    where: Where | None = None
    match: str | None = None
    more: list[Acl] = field(default_factory=list)
    matcher: Callable[[Any], bool] | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class Term:
    """One ACL reference in a condition: a named acl, or an anonymous one (``{ path_beg /x }``)."""

    acl: Acl
    negate: bool = False


@dataclass(slots=True)
class Condition:
    """``if|unless`` followed by ACL terms: a disjunction (``||`` / ``or``) of conjunctions.

    ``terms_or[i]`` is a list of terms that must all match; the condition holds when any list
    matches, inverted when ``unless``.
    """

    terms_or: list[list[Term]]
    unless: bool = False


@dataclass(slots=True)
class UseBackend:
    backend: str
    cond: Condition | None = None
    where: Where | None = None


@dataclass(slots=True)
class HttpReturn:
    """``http-request return [status N] [content-type T] [string S | lf-string S | file F]
    [hdr <name> <fmt>]... [if|unless cond]``: ``body_fmt`` is the ``lf-string`` (rendered per
    request), else ``body`` is the text."""

    status: int = 200
    content_type: str | None = None
    body: bytes = b""
    cond: Condition | None = None
    where: Where | None = None
    body_fmt: LogFormat | None = None
    headers: list[tuple[bytes, LogFormat]] = field(default_factory=list)


@dataclass(slots=True)
class Redirect:
    """``redirect location|prefix|scheme <fmt> [code N] [drop-query] [append-slash]``."""

    kind: str  # "location", "prefix" or "scheme"
    value: LogFormat
    code: int = 302
    drop_query: bool = False
    append_slash: bool = False


@dataclass(slots=True)
class HttpRule:
    """One ``http-request``, ``http-response`` or ``http-after-response`` rule, in the order written.

    ``action`` names the handler in ``proxy.rules``; the other fields are that action's arguments:
    a header ``name`` (as written; compared case-insensitively), a value ``fmt``, a ``regex``
    (``replace-header``, ``replace-value``, ``del-header -m reg``), ``match`` (``del-header -m``),
    ``status`` (``deny_status``), ``ret`` (``return``), ``redirect``, ``strict`` (``strict-mode``).
    """

    action: str
    cond: Condition | None = None
    where: Where | None = None
    name: bytes = b""
    fmt: LogFormat | None = None
    regex: re.Pattern[bytes] | None = None
    match: str = "str"
    status: int = 0
    ret: HttpReturn | None = None
    redirect: Redirect | None = None
    strict: bool = True


@dataclass(frozen=True, slots=True)
class ErrorPage:
    """A response that replaces one of the proxy's own (``errorfile <code> <file>``).

    HAProxy's file format is a whole HTTP/1 response; it is parsed when the configuration is loaded
    (``proxy.config.errorfile``) into these protocol-neutral fields, and sent as the file says
    (its status line's status and reason, its headers, its body; the framing and ``Connection``
    headers are the client mux's). An empty file (``errorfile 408 /dev/null``, a common way to
    silence pre-connects) has ``status`` 0: the connection is closed without an answer.
    """

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    source: str = ""  # the file it came from

    @property
    def silent(self) -> bool:
        return self.status == 0


@dataclass(slots=True)
class ErrorfilesImport:
    """``errorfiles <name> [<code>...]``: import pages from an ``http-errors`` section, resolved once
    every file was read (the section may come later); ``codes`` empty means all of them."""

    section: str
    codes: list[int]
    where: Where | None = None


@dataclass(slots=True)
class Bind:
    host: str  # "" means every address
    port: int
    where: Where | None = None
    proto: str = ""  # ``proto h2``: HTTP/2 only (else HTTP/1, or HTTP/2 by preface or ALPN)
    tls: BindTls | None = None  # ``ssl crt ...``: a TLS listener


@dataclass(slots=True)
class TlsOptions:
    """TLS settings a bind line may give and ``ssl-default-bind-*`` give to every bind line.
    None: not set here (the default's, else the library's)."""

    min_ver: str | None = None  # SSLv3 | TLSv1.0 | TLSv1.1 | TLSv1.2 | TLSv1.3
    max_ver: str | None = None
    disabled: frozenset[str] = frozenset()  # versions turned off by no-sslv3, no-tlsv10, ...
    no_tickets: bool | None = None
    prefer_client_ciphers: bool | None = None
    ciphers: str | None = None  # TLS 1.2 and below (OpenSSL cipher list)
    ciphersuites: str | None = None  # TLS 1.3


@dataclass(slots=True)
class BindTls:
    crt: str  # a PEM file holding the certificate chain and its private key
    alpn: tuple[str, ...] = ()  # protocols offered by ALPN, in our order of preference
    options: TlsOptions = field(default_factory=TlsOptions)


@dataclass(slots=True)
class Server:
    name: str
    host: str
    port: int
    weight: int = 1
    disabled: bool = False
    # ``source <addr>[:port] [usesrc clientip]``: bind the outgoing connection; with usesrc clientip
    # the client address is used (transparent proxy) and connections become keyed by source.
    source: str | None = None
    usesrc_clientip: bool = False
    # Shared-pool knobs (issue 3 acts on them across workers; parsed and stored now).
    maxconn: int = 0  # 0 = unlimited
    maxqueue: int = 0  # 0 = unlimited
    pool_low_conn: int = 0
    pool_max_conn: int = -1  # -1 = unlimited, 0 = no idle connection kept
    pool_purge_delay: float = 5.0
    strict_maxconn: bool = False
    # Health checks (``proxy.health``, ``proxy.checks``): ``check`` turns them on; the intervals are
    # seconds (``fastinter``/``downinter`` None: ``inter``); ``check_port``/``check_addr`` None: the
    # server's own. ``backup``: used only when no other server of the backend is up.
    check: bool = False
    inter: float = 2.0
    fastinter: float | None = None
    downinter: float | None = None
    rise: int = 2
    fall: int = 3
    check_port: int | None = None
    check_addr: str | None = None
    backup: bool = False
    # Protocol and TLS (``proto h2``, ``ssl``...): proxy.server_tls builds the context, with the
    # ``ssl-default-server-*`` and ``ssl-server-verify`` of ``Global`` for what is not set here.
    proto: str = ""  # "h2": HTTP/2 with prior knowledge (h2c, or h2 over TLS without ALPN); "": HTTP/1.1
    ssl: bool = False
    verify: str = ""  # "none" | "required" | "" (ssl-server-verify decides)
    ca_file: str | None = None
    sni: LogFormat | None = None  # ``sni <expr>``, rendered per request; part of the connection key
    alpn: tuple[str, ...] = ()  # offered protocols, in order ("h2", "http/1.1")
    max_reuse: int = -1  # requests per connection before it is retired (-1: no limit)
    where: Where | None = None


@dataclass(slots=True)
class HttpCheck:
    """``option httpchk`` / ``http-check send``: the request a check sends (HTTP/1.x, closed after
    the answer) and ``http-check expect``: what its answer must show. ``expect`` None: a 2xx or 3xx
    status passes (HAProxy's default)."""

    method: str = "OPTIONS"
    uri: str = "/"
    version: str = "HTTP/1.0"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""
    # (kind, negated, pattern): kind is status | rstatus | string | rstring
    expect: tuple[str, bool, str] | None = None


@dataclass(slots=True)
class Timeouts:
    client: float | None = None
    server: float | None = None
    connect: float | None = None
    http_request: float | None = None
    http_keep_alive: float | None = None
    queue: float | None = None
    tunnel: float | None = None  # inactivity both ways once the exchange became a tunnel (101)
    check: float | None = None  # a health check's read timeout once connected (None: ``inter``)


@dataclass(slots=True)
class Proxy:
    """A frontend, a backend, or a listen section (both capabilities)."""

    name: str
    cap: Cap
    mode: str = "http"  # only "http" is supported; "tcp" is a config error for now
    where: Where | None = None
    # frontend side
    binds: list[Bind] = field(default_factory=list)
    maxconn: int = 0  # client connections at once, divided between the workers (0: no limit)
    http_ignore_probes: bool = False  # a connection that sent nothing gets no 408 and no log
    default_backend: str | None = None
    use_backends: list[UseBackend] = field(default_factory=list)
    acls: dict[str, Acl] = field(default_factory=dict)
    # ``unique-id-format`` / ``unique-id-header`` (frontend side)
    unique_id_format: LogFormat | None = None
    unique_id_header: bytes | None = None
    # both sides
    timeouts: Timeouts = field(default_factory=Timeouts)
    # rules, in the order written (a listen section's run once, as its frontend's)
    http_request: list[HttpRule] = field(default_factory=list)
    http_response: list[HttpRule] = field(default_factory=list)
    http_after_response: list[HttpRule] = field(default_factory=list)
    # ``errorfile``/``errorfiles`` in the order written (later ones override earlier ones);
    # ``errorfiles`` is the result per status, filled once every file was read.
    error_sources: list[tuple[int, ErrorPage] | ErrorfilesImport] = field(default_factory=list)
    errorfiles: dict[int, ErrorPage] = field(default_factory=dict)
    forwardfor: bool = False
    forwardfor_header: str = "x-forwarded-for"
    # Client-side connection mode: "keep-alive" (default), "http-server-close" or "httpclose".
    http_conn_mode: str = "keep-alive"
    # ``option httplog`` / ``option dontlognull`` (frontend side; logging reads them).
    httplog: bool = False
    dontlognull: bool = False
    # ``log global``: this proxy logs to the global section's targets (``no log`` clears it). A
    # frontend without it logs nothing, as in HAProxy.
    log_global: bool = False
    # ``stats enable`` and friends: this proxy serves the stats page (None: it does not)
    stats: StatsPage | None = None
    # backend side
    retries: int = 3
    # ``option redispatch [<interval>]``: 0 off; > 0 every Nth retry; < 0 the Nth retry before the
    # last (-1, the default interval: the last retry) goes to another server.
    redispatch: int = 0
    httpchk: HttpCheck | None = None  # None: a check is a TCP connect
    log_health_checks: bool = False  # ``option log-health-checks``: every check result change logged
    allbackups: bool = False  # ``option allbackups``: all backup servers at once, not the first only
    abortonclose: bool = False  # a client that closes while its request waits for a server aborts it
    balance: str = "roundrobin"  # roundrobin | leastconn | first | source
    servers: list[Server] = field(default_factory=list)
    http_reuse: ReuseMode = ReuseMode.SAFE


@dataclass(slots=True)
class StatsPage:
    """``stats enable|uri|refresh|show-modules|realm|auth`` in a proxy: the HTML stats page.

    ``uri`` is a prefix of the request target (HAProxy's default ``/haproxy?stats``); ``refresh``
    seconds (0: none) become a ``Refresh`` header; ``auth`` holds ``user:password`` pairs (empty:
    no authentication); ``realm`` names the Basic authentication realm."""

    uri: str = "/haproxy?stats"
    refresh: float = 0.0
    show_modules: bool = False
    realm: str = "HAProxy Statistics"
    auth: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class LogTarget:
    """``log <target> [len <n>] [format <fmt>] [<facility> [<level> [<minlevel>]]]`` in ``global``."""

    target: str  # as written: "stderr", "stdout", "/dev/log", "127.0.0.1:514", "udp@host:port", ...
    facility: str | None = None  # syslog facility name (kern, user, ..., local0..local7)
    level: str | None = None  # max level sent (emerg .. debug); None = all
    minlevel: str | None = None
    format: str | None = None  # rfc3164 (HAProxy's default), rfc5424, raw, short, ...
    length: int | None = None  # ``len``: max line length
    where: Where | None = None
    # ``target`` parsed and resolved once, at configuration time (``proxy.config.address``):
    # ("fd", 0, 1 or 2), ("unix", AF_UNIX, path) or ("udp", AF_INET or AF_INET6, (ip, port)).
    address: tuple[str, int, Any] | None = None


@dataclass(frozen=True, slots=True)
class StatsSocket:
    """A ``stats socket`` line of ``global``: a Unix socket of the runtime API, served by the master."""

    path: str
    mode: int | None = None  # the socket file's permissions (octal on the line); None: the umask's
    level: str = "user"  # user | operator | admin (HAProxy's default: user)
    uid: int | None = None  # the socket file's owner (``user``/``uid``); None: the master's
    gid: int | None = None  # ``group``/``gid``
    expose_fd: bool = False  # ``expose-fd listeners``: ``_getsocks`` answered there (for ``-x``)


@dataclass(slots=True)
class Global:
    nbthread: int = 0  # 0 = number of CPUs available to the process
    spread_checks: int = 0  # ``spread-checks``: +/- this percentage of random on each check interval
    maxconn: int = 0  # 0 = no global limit
    # raw ``log`` targets ("stderr", "stdout", "/dev/log", host:port)
    logs: list[str] = field(default_factory=list)
    log_targets: list[LogTarget] = field(default_factory=list)  # the ``log`` lines, parsed
    stats_sockets: list[StatsSocket] = field(default_factory=list)  # the ``stats socket`` lines
    h1_engine: str = DEFAULT_H1_ENGINE  # tune.h1-engine native|llhttp|h11
    h2_engine: str = DEFAULT_H2_ENGINE  # tune.h2-engine native|h2 (the client side's HTTP/2 connection)
    idle_pool_shared: bool = True  # tune.idle-pool.shared: workers may steal idle connections
    bufsize: int = 16384  # tune.bufsize: the largest request/response head accepted (431 / 502 beyond)
    maxhdr: int = 101  # tune.http.maxhdr: the most header lines accepted
    daemon: bool = False
    pidfile: str | None = None
    # Diagnostics and start-up switches.
    zero_warning: bool = False  # any warning refuses the configuration
    quiet: bool = False  # no warning, notice or "valid" line at start-up (alerts still print)
    strict_limits: bool = True  # failing to raise the file descriptor limit is fatal (HAProxy 2.6 default)
    ulimit_n: int = 0  # RLIMIT_NOFILE to set at start-up (0: computed from maxconn, or left alone)
    hard_stop_after: float | None = None  # longest soft stop before the workers are killed
    reuseport: bool = True  # listeners bound with SO_REUSEPORT (``noreuseport`` clears it)
    watchdog: float = 10.0  # worker-watchdog-timeout: a heartbeat older than this gets the worker killed
    # ``default-path``: how relative file names are resolved: current | config | parent | origin
    default_path: tuple[str, str] = ("current", "")  # (mode, origin path)
    stats_timeout: float | None = None  # runtime API connections: idle timeout
    # Privileges the workers drop before serving (``proxy.privileges``): names resolved at load time.
    chroot: str | None = None
    uid: int | None = None
    gid: int | None = None
    log_tag: str = "poolproxy"  # the syslog tag (``log-tag``; HAProxy's default is the program name)
    log_send_hostname: str | None = None  # ``log-send-hostname``: the host name put in syslog headers
    # HTTP/2 towards servers, and the TLS defaults of ``ssl`` servers (proxy.server_tls).
    h2_be_max_concurrent_streams: int = 0  # 0: as many as the server's SETTINGS allow
    h2_be_initial_window_size: int = 65535
    ssl_server_verify: str = "required"
    ssl_default_server_ciphers: str | None = None  # TLS <= 1.2 cipher list (OpenSSL syntax)
    ssl_default_server_options: tuple[str, ...] = ()
    crt_base: str = ""  # ``crt-base``: where relative ``crt`` files are
    ca_base: str = ""  # ``ca-base``: where relative ``ca-file`` files are
    ssl_bind: TlsOptions = field(default_factory=TlsOptions)  # ssl-default-bind-options, -ciphers, ...
    # HTTP/2 on the client side (``tune.h2.*`` and ``tune.h2.fe.*``; HAProxy's defaults)
    h2_max_concurrent_streams: int = 100
    h2_header_table_size: int = 4096
    h2_initial_window_size: int = 65535
    h2_max_frame_size: int = 16384
    h2_fe_max_concurrent_streams: int = 0  # 0: tune.h2.max-concurrent-streams
    h2_fe_initial_window_size: int = 0  # 0: tune.h2.initial-window-size
    h2_fe_max_total_streams: int = 0
    h2_fe_glitches_threshold: int = 0


@dataclass(slots=True)
class Config:
    global_: Global = field(default_factory=Global)
    frontends: dict[str, Proxy] = field(default_factory=dict)
    backends: dict[str, Proxy] = field(default_factory=dict)
    # ``http-errors <name>`` sections: status -> page, and where each section was declared
    http_errors: dict[str, dict[int, ErrorPage]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # [WARNING] lines found while loading

    def proxies(self) -> list[Proxy]:
        """Every proxy once (a ``listen`` section is in both dicts), in the order of declaration."""
        unique = {id(p): p for p in (*self.frontends.values(), *self.backends.values())}.values()
        rank = {f: i for i, f in enumerate(self.files)}

        def declared(p: Proxy) -> tuple[int, int]:
            if p.where is None:  # made in code (tests): after the files' proxies
                return len(rank), 0
            return rank.get(p.where.file, len(rank)), p.where.line

        return sorted(unique, key=declared)

    def proxy_ids(self) -> tuple[dict[str, int], dict[str, int]]:
        """HAProxy's proxy ids (``iid`` in ``show stat``, ``be_id``/``bkid`` in ``show servers``),
        frontends' and backends' by name: one id per proxy, in the order of declaration, from 2 (as
        HAProxy numbers them: its own CLI frontend takes 1)."""
        fronts: dict[str, int] = {}
        backs: dict[str, int] = {}
        for uid, p in enumerate(self.proxies(), 2):  # (``stats.stat_rows`` numbers them so too)
            if p.cap & Cap.FRONTEND:
                fronts[p.name] = uid
            if p.cap & Cap.BACKEND:
                backs[p.name] = uid
        return fronts, backs
