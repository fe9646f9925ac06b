"""Keywords of the ``global`` section: process-wide settings, stored in ``model.Global``.

Start-up switches follow HAProxy: ``zero-warning`` makes any warning fatal, ``quiet`` silences the
start-up output (warnings, notices, "Configuration file is valid"; poolproxy still prints the alerts
that explain an exit status of 1), ``strict-limits`` (on by default, as in HAProxy 2.6) makes a file
descriptor limit that cannot be raised fatal, ``default-path`` says where relative file names are
read from. Permission switches for things poolproxy never forbids (``insecure-fork-wanted``...) are
accepted: what they allow is always allowed. Tunings of HAProxy's own machinery that poolproxy does not
have (its pollers, splicing) are accepted with a warning that they are ignored.
"""

from __future__ import annotations

import grp
import os.path
import pwd
import socket
import ssl
from collections.abc import Callable

from proxy import tls
from proxy.config.address import SUN_PATH_MAX, parse_log_address
from proxy.config.errors import DirectiveError
from proxy.config.kwtypes import GLOBAL, Directive, Keyword, ParseFn, SectionState, ignored, unsupported
from proxy.config.model import DEFAULT_H1_ENGINE, H2_ENGINES, LogTarget, StatsSocket
from proxy.config.timeunit import parse_int, parse_size, parse_time

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
    try:
        address = parse_log_address(target)
    except ValueError as exc:
        raise d.fail(str(exc)) from None
    spec = LogTarget(target=target, where=d.where, address=address)
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


_SOCKET_LEVELS = ("user", "operator", "admin")
_MAX_ID = 2**32 - 2  # the largest uid/gid (-1 means "unchanged" to chown)


def _stats_socket(st: SectionState, d: Directive) -> None:
    """``stats socket <path> [mode <octal>] [level <level>] [user|uid <id>] [group|gid <id>]
    [expose-fd listeners]``: the runtime API on a Unix socket (HAProxy's TCP forms are refused)."""
    if not d.args:
        raise d.fail("expects a path: stats socket <path> [params...]")
    path, rest = d.args[0], d.args[1:]
    if path.startswith("unix@"):
        path = path[5:]
    if not path.startswith("/"):
        raise d.fail(f"'{d.args[0]}': the runtime API listens on a Unix socket given by an absolute path"
                     " (TCP addresses and relative paths are not supported)")  # fmt: skip
    if "\0" in path or len(os.fsencode(path)) > SUN_PATH_MAX:
        shown = d.args[0].encode("unicode_escape").decode("ascii")
        raise d.fail(f"'{shown}': not a usable Unix socket path (a NUL byte, or over {SUN_PATH_MAX} bytes)")
    mode = uid = gid = None
    level, expose_fd = "user", False
    while rest:
        option = rest[0]
        if option not in ("mode", "level", "user", "uid", "group", "gid", "expose-fd"):
            supported = "mode, level, user, uid, group, gid, expose-fd listeners"
            raise d.fail(f"unknown or unsupported option '{option}' (supported: {supported})")
        if len(rest) < 2:
            raise d.fail(f"'{option}' expects a value")
        value, rest = rest[1], rest[2:]
        if option == "mode":
            if not value or any(c not in "01234567" for c in value) or len(value) > 4:
                raise d.fail(f"'mode' expects an octal mode like 600, not '{value}'")
            mode = int(value, 8)
        elif option == "level":
            if value not in _SOCKET_LEVELS:
                raise d.fail(f"'level' only supports 'user', 'operator', and 'admin' (not '{value}')")
            level = value
        elif option == "expose-fd":
            if value != "listeners":
                raise d.fail(f"'expose-fd' only supports 'listeners' (not '{value}')")
            expose_fd = True
        elif option in ("user", "group"):
            try:
                if option == "user":
                    uid = _uid_of(value)
                else:
                    gid = _gid_of(value)
            except KeyError:
                raise d.fail(f"unknown {option} '{value}'") from None
        elif option == "uid":
            uid = _int(d, value, 0, _MAX_ID)
        else:
            gid = _int(d, value, 0, _MAX_ID)
    socket_ = StatsSocket(path, mode, level, uid, gid, expose_fd)
    if any(s.path == path for s in st.global_.stats_sockets):
        raise d.fail(f"'{path}' is already a stats socket")
    st.global_.stats_sockets.append(socket_)


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


def _ssl_bind_options(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail("expects options")
    words = list(d.args)
    try:
        while words:
            words = words[tls.apply_option(st.global_.ssl_bind, words) :]
    except tls.TlsError as exc:
        raise d.fail(str(exc)) from None


def _ssl_bind_ciphers(st: SectionState, d: Directive) -> None:
    d.expect(1, "<cipher list>")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(d.args[0])
    except ssl.SSLError:
        raise d.fail(f"unable to set the cipher list '{d.args[0]}'") from None
    st.global_.ssl_bind.ciphers = d.args[0]


def _ssl_bind_ciphersuites(st: SectionState, d: Directive) -> None:
    d.expect(1, "<cipher suites>")
    try:
        tls.check_ciphersuites(d.args[0])
    except tls.TlsError as exc:
        raise d.fail(str(exc)) from None
    st.global_.ssl_bind.ciphersuites = d.args[0]


def _crt_base(st: SectionState, d: Directive) -> None:
    d.expect(1, "<directory>")
    st.global_.crt_base = d.args[0]


def _ca_base(st: SectionState, d: Directive) -> None:
    d.expect(1, "<directory>")
    st.global_.ca_base = d.args[0]


def _h2_int(attr: str, lo: int, hi: int) -> ParseFn:
    def parse(st: SectionState, d: Directive) -> None:
        d.expect(1, "<number>")
        setattr(st.global_, attr, _int(d, d.args[0], lo, hi))

    return parse


def _flag(attr: str) -> ParseFn:
    def parse(st: SectionState, d: Directive) -> None:
        d.expect(0, "")
        setattr(st.global_, attr, not d.negated)

    return parse


def _no_args(st: SectionState, d: Directive) -> None:
    d.expect(0, "")


def _any_args(st: SectionState, d: Directive) -> None:
    pass


def _time(d: Directive) -> float:
    d.expect(1, "<time>")
    try:
        return parse_time(d.args[0])
    except ValueError as exc:
        raise d.fail(str(exc)) from None


def _hard_stop_after(st: SectionState, d: Directive) -> None:
    st.global_.hard_stop_after = _time(d) or None


def _noreuseport(st: SectionState, d: Directive) -> None:
    d.expect(0, "")
    st.global_.reuseport = False


def _worker_watchdog(st: SectionState, d: Directive) -> None:
    st.global_.watchdog = _time(d)


def _stats_timeout(st: SectionState, d: Directive) -> None:
    st.global_.stats_timeout = _time(d) or None


def _ulimit_n(st: SectionState, d: Directive) -> None:
    d.expect(1, "<number>")
    st.global_.ulimit_n = _int(d, d.args[0], 1)


DEFAULT_PATH_MODES = ("current", "config", "parent", "origin")


def _default_path(st: SectionState, d: Directive) -> None:
    if not d.args or d.args[0] not in DEFAULT_PATH_MODES:
        raise d.fail("expects 'current', 'config', 'parent' or 'origin <path>'")
    mode = d.args[0]
    if mode == "origin":
        d.expect(2, "origin <path>")
        origin = d.args[1]
    else:
        d.expect(1, "current|config|parent|origin <path>")
        origin = ""
    st.global_.default_path = (mode, origin)
    st.base_dir = base_dir(st.global_.default_path, d.where.file)


def base_dir(default_path: tuple[str, str], config_file: str) -> str:
    """The directory relative file names are read from, for ``default-path`` and the file being read
    ("" for the current directory)."""
    mode, origin = default_path
    if mode == "config":
        return os.path.dirname(config_file)
    if mode == "parent":
        return os.path.dirname(os.path.dirname(os.path.abspath(config_file)))
    if mode == "origin":
        return origin
    return ""


def _log_tag(st: SectionState, d: Directive) -> None:
    d.expect(1, "<string>")
    st.global_.log_tag = d.args[0]


def _log_send_hostname(st: SectionState, d: Directive) -> None:
    if len(d.args) > 1:
        raise d.fail("expects at most one argument: log-send-hostname [<string>]")
    st.global_.log_send_hostname = d.args[0] if d.args else socket.gethostname()


def _chroot(st: SectionState, d: Directive) -> None:
    d.expect(1, "<directory>")
    st.global_.chroot = d.args[0]


def _account(attr: str, lookup: Callable[[str], int], kind: str, again: str, by_name: bool) -> ParseFn:
    """``user``/``uid`` (attr ``uid``) or ``group``/``gid`` (attr ``gid``): by name through ``lookup``
    or by number; the second of a pair is ignored with HAProxy's warning ``again``."""

    def parse(st: SectionState, d: Directive) -> None:
        d.expect(1, "<name>" if by_name else "<number>")
        if getattr(st.global_, attr) is not None:
            st.warn(again)
            return
        if by_name:
            try:
                value = lookup(d.args[0])
            except KeyError:
                raise DirectiveError(f"cannot find {kind} id for '{d.args[0]}'") from None
        else:
            value = _int(d, d.args[0], 0)
        setattr(st.global_, attr, value)

    return parse


def _uid_of(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def _gid_of(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def _user(by_name: bool) -> ParseFn:
    again = "user/uid already specified. Continuing."
    return _account("uid", _uid_of, "user", again, by_name)


def _group(by_name: bool) -> ParseFn:
    again = "gid/group was already specified. Continuing."
    return _account("gid", _gid_of, "group", again, by_name)


def _h1_engine(st: SectionState, d: Directive) -> None:
    d.expect(1, "native|llhttp|h11")
    if d.args[0] not in H1_ENGINES:
        raise d.fail(f"unknown HTTP/1 engine '{d.args[0]}' (expected native, llhttp or h11)")
    if d.args[0] == "native" and DEFAULT_H1_ENGINE != "native":
        raise d.fail("the native HTTP/1 engine is not built (its C extension proxy._h1head is missing)")
    st.global_.h1_engine = d.args[0]


def _h2_engine(st: SectionState, d: Directive) -> None:
    d.expect(1, "native|h2")
    if d.args[0] not in H2_ENGINES:
        raise d.fail(f"unknown HTTP/2 engine '{d.args[0]}' (expected native or h2)")
    st.global_.h2_engine = d.args[0]


def _idle_pool_shared(st: SectionState, d: Directive) -> None:
    d.expect(1, "on|off")
    if d.args[0] not in ("on", "off"):
        raise d.fail(f"expects 'on' or 'off', not '{d.args[0]}'")
    st.global_.idle_pool_shared = d.args[0] == "on"


def _h2_be_streams(st: SectionState, d: Directive) -> None:
    d.expect(1, "<number>")
    st.global_.h2_be_max_concurrent_streams = _int(d, d.args[0], 0, 2**31 - 1)


def _h2_be_window(st: SectionState, d: Directive) -> None:
    d.expect(1, "<number>")
    st.global_.h2_be_initial_window_size = _int(d, d.args[0], 1, 2**31 - 1)


def _ssl_server_verify(st: SectionState, d: Directive) -> None:
    d.expect(1, "none|required")
    if d.args[0] not in ("none", "required"):
        raise d.fail(f"expects 'none' or 'required', not '{d.args[0]}'")
    st.global_.ssl_server_verify = d.args[0]


def _ssl_server_ciphers(st: SectionState, d: Directive) -> None:
    d.expect(1, "<ciphers>")
    import ssl  # the cipher list is checked now, as HAProxy does at start-up

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(d.args[0])
    except ssl.SSLError:
        raise d.fail(f"unable to set the cipher list '{d.args[0]}'") from None
    st.global_.ssl_default_server_ciphers = d.args[0]


# ``ssl-default-server-options`` words poolproxy applies (proxy.server_tls); others are refused.
SSL_SERVER_OPTIONS = ("no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13", "no-tls-tickets",
                      "ssl-min-ver", "ssl-max-ver")  # fmt: skip
SSL_VERSIONS = ("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def _ssl_server_options(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail("expects options (no-tlsv10, ssl-min-ver TLSv1.2, ...)")
    args = list(d.args)
    i = 0
    while i < len(args):
        word = args[i]
        if word not in SSL_SERVER_OPTIONS:
            raise d.fail(f"unsupported option '{word}' (supported: {', '.join(SSL_SERVER_OPTIONS)})")
        if word in ("ssl-min-ver", "ssl-max-ver"):
            if i + 1 >= len(args) or args[i + 1] not in SSL_VERSIONS:
                raise d.fail(f"'{word}' expects one of {', '.join(SSL_VERSIONS)}")
            i += 1
        i += 1
    st.global_.ssl_default_server_options = tuple(args)


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
            "Send logs to stdout, stderr, a Unix socket (/path) or UDP (host[:port], port 514); repeatable.",
            _log, default="none"),
    Keyword("stats socket", GLOBAL, "<path> [params...]",
            "The runtime API's Unix socket: [mode M] [level L] [user|uid U] [group|gid G] "
            "[expose-fd listeners].",
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
    Keyword("tune.h2-engine", GLOBAL, "native|h2",
            "Client-side HTTP/2 connection: native (proxy.h2.conn, compiled) or h2 (the h2 library); "
            "same answers.",
            _h2_engine, default="native (h2 if the compiled modules are not built)"),
    Keyword("tune.idle-pool.shared", GLOBAL, "on|off",
            "Whether a worker may take idle server connections from other workers (stealing).",
            _idle_pool_shared, default="on"),
    Keyword("tune.bufsize", GLOBAL, "<size>",
            "Largest request or response head accepted (431 / 502 beyond); k, m suffixes allowed.",
            _bufsize, default="16384"),
    Keyword("tune.http.maxhdr", GLOBAL, "<number>",
            "Header lines accepted in a message, plus one (HAProxy's count; 1..32767).",
            _maxhdr, default="101"),
    Keyword("tune.h2.be.max-concurrent-streams", GLOBAL, "<number>",
            "Most streams at once on one HTTP/2 server connection (below the server's own limit).",
            _h2_be_streams, default="0 (the server's limit)"),
    Keyword("tune.h2.be.initial-window-size", GLOBAL, "<number>",
            "HTTP/2 receive window of each stream on server connections (flow control).",
            _h2_be_window, default="65535"),
    Keyword("ssl-server-verify", GLOBAL, "none|required",
            "Default certificate check of 'ssl' servers without a 'verify' of their own.",
            _ssl_server_verify, default="required"),
    Keyword("ssl-default-server-ciphers", GLOBAL, "<ciphers>",
            "OpenSSL cipher list (TLS 1.2 and below) of 'ssl' servers.", _ssl_server_ciphers,
            default="OpenSSL's"),
    Keyword("ssl-default-server-options", GLOBAL, "<option>...",
            "TLS options of 'ssl' servers: no-tlsv1x, no-tls-tickets, ssl-min-ver/ssl-max-ver <version>.",
            _ssl_server_options, default="none"),
    Keyword("zero-warning", GLOBAL, "", "Refuse the configuration if it causes any warning (as -dW does).",
            _flag("zero_warning"), default="off"),
    Keyword("quiet", GLOBAL, "",
            "No warning, notice or 'valid' line at start-up (as -q does); alerts are still printed.",
            _flag("quiet"), default="off"),
    Keyword("strict-limits", GLOBAL, "",
            "Refuse to start if the file descriptor limit cannot be raised to what maxconn needs.",
            _flag("strict_limits"), default="on", negatable=True),
    Keyword("ulimit-n", GLOBAL, "<number>", "File descriptor limit (RLIMIT_NOFILE) set at start-up.",
            _ulimit_n, default="from maxconn, else unchanged"),
    Keyword("default-path", GLOBAL, "current|config|parent|origin <path>",
            "Where relative file names (errorfile, http-request return file) are read from.",
            _default_path, default="current"),
    Keyword("hard-stop-after", GLOBAL, "<time>",
            "Longest a soft stop may last; workers still running then are killed.",
            _hard_stop_after, default="60s"),
    Keyword("noreuseport", GLOBAL, "",
            "Bind listeners without SO_REUSEPORT (then -sf/-st need -x to take an old process's sockets).",
            _noreuseport, default="SO_REUSEPORT set"),
    Keyword("worker-watchdog-timeout", GLOBAL, "<time>",
            "poolproxy: the master kills and respawns a ready worker whose heartbeat is older (0: off).",
            _worker_watchdog, default="10s"),
    Keyword("stats timeout", GLOBAL, "<time>", "Idle timeout of runtime API connections.",
            _stats_timeout, default="10s"),
    Keyword("chroot", GLOBAL, "<directory>",
            "Workers chroot here before serving (files and host names are read before).",
            _chroot, default="none"),
    Keyword("user", GLOBAL, "<name>", "Workers switch to this user before serving (the master stays).",
            _user(True), default="unchanged"),
    Keyword("uid", GLOBAL, "<number>", "Same as user, by number.", _user(False), default="unchanged"),
    Keyword("group", GLOBAL, "<name>", "Workers switch to this group (and no other) before serving.",
            _group(True), default="unchanged"),
    Keyword("gid", GLOBAL, "<number>", "Same as group, by number.", _group(False), default="unchanged"),
    Keyword("log-tag", GLOBAL, "<string>", "The tag (program name) in syslog headers.",
            _log_tag, default="poolproxy"),
    Keyword("log-send-hostname", GLOBAL, "[<string>]",
            "Put this host name (default: the system's) in syslog headers.",
            _log_send_hostname, default="none"),
] + [
    # What these allow is never forbidden in poolproxy: accepted, and true without doing anything.
    Keyword(name, GLOBAL, "", f"Accepted: poolproxy never forbids what it allows ({what}).", _no_args,
            default="always allowed")
    for name, what in (
        ("insecure-fork-wanted", "forking"),
        ("insecure-setuid-wanted", "setuid programs"),
        ("expose-experimental-directives", "no experimental directive exists"),
    )
]  # fmt: skip

_TLS = "not supported yet: poolproxy has no TLS"
# TLS defaults: every keyword that would use them (``ssl`` on a bind or server line, ``crt``...) is
# refused, so they have no effect until TLS is supported; accepted with a warning so that stock
# configurations (Debian's haproxy.cfg has them) need no edit.
_TLS_LIB = "Python's ssl cannot set it on a listener: OpenSSL's defaults apply."
KEYWORDS += [
    Keyword("ssl-default-bind-options", GLOBAL, "<option>...",
            "TLS options of every ssl bind: ssl-min-ver/-max-ver, no-tlsv1x, no-tls-tickets...",
            _ssl_bind_options, default="ssl-min-ver TLSv1.2"),
    Keyword("ssl-default-bind-ciphers", GLOBAL, "<cipher list>",
            "OpenSSL cipher list (TLS 1.2 and below) of every 'bind ... ssl' line.",
            _ssl_bind_ciphers, default="OpenSSL's"),
    Keyword("ssl-default-bind-ciphersuites", GLOBAL, "<suites>",
            "TLS 1.3 suites: only OpenSSL's default list is accepted (Python's ssl cannot set others).",
            _ssl_bind_ciphersuites, default="OpenSSL's"),
    Keyword("crt-base", GLOBAL, "<directory>", "Where relative 'crt' files of bind lines are read from.",
            _crt_base, default="none"),
    Keyword("ca-base", GLOBAL, "<directory>", "Where relative 'ca-file' files of server lines are read from.",
            _ca_base, default="none"),
    Keyword("tune.h2.max-concurrent-streams", GLOBAL, "<number>",
            "Streams an HTTP/2 client may run at once on one connection (tune.h2.fe.* overrides it).",
            _h2_int("h2_max_concurrent_streams", 1, 2**31 - 1), default="100"),
    Keyword("tune.h2.fe.max-concurrent-streams", GLOBAL, "<number>",
            "Streams an HTTP/2 client may run at once on one connection (client side only).",
            _h2_int("h2_fe_max_concurrent_streams", 1, 2**31 - 1), default="tune.h2.max-concurrent-streams"),
    Keyword("tune.h2.header-table-size", GLOBAL, "<number>",
            "HPACK dynamic table size announced to HTTP/2 clients (bytes, at most 65536).",
            _h2_int("h2_header_table_size", 0, 65536), default="4096"),
    Keyword("tune.h2.initial-window-size", GLOBAL, "<number>",
            "HTTP/2 stream window announced to clients: request body bytes in flight per stream.",
            _h2_int("h2_initial_window_size", 0, 2**31 - 1), default="65535"),
    Keyword("tune.h2.fe.initial-window-size", GLOBAL, "<number>",
            "Same as tune.h2.initial-window-size, for the client side only.",
            _h2_int("h2_fe_initial_window_size", 1, 2**31 - 1), default="tune.h2.initial-window-size"),
    Keyword("tune.h2.max-frame-size", GLOBAL, "<number>",
            "Largest HTTP/2 frame accepted from clients (16384..16777215).",
            _h2_int("h2_max_frame_size", 16384, 16777215), default="16384"),
    Keyword("tune.h2.fe.max-total-streams", GLOBAL, "<number>",
            "Streams an HTTP/2 client connection may carry in all; then a graceful GOAWAY (0: no limit).",
            _h2_int("h2_fe_max_total_streams", 0, 2**31 - 1), default="0"),
    Keyword("tune.h2.fe.glitches-threshold", GLOBAL, "<number>",
            "Protocol glitches (cancelled streams, empty frames...) before an HTTP/2 client is cut.",
            _h2_int("h2_fe_glitches_threshold", 0, 2**31 - 1), default="0"),
]
KEYWORDS += [
    unsupported(
        "nbproc", "not supported (removed from HAProxy 2.5): use 'nbthread' for the worker count", GLOBAL
    ),
    unsupported("cpu-map", "not supported", GLOBAL),
    unsupported("stats maxconn", "not supported yet", GLOBAL),
    unsupported("setenv", "not supported: set environment variables before starting poolproxy", GLOBAL),
    unsupported("presetenv", "not supported: set environment variables before starting poolproxy", GLOBAL),
    unsupported("unsetenv", "not supported", GLOBAL),
    unsupported("resetenv", "not supported", GLOBAL),
    unsupported("server-state-file", "not supported", GLOBAL),
    unsupported("lua-load", "not supported", GLOBAL),
    *(ignored(name, _TLS_LIB, GLOBAL, "<value>...", parse=_inert_tls) for name in (
        "ssl-default-bind-curves", "ssl-default-bind-sigalgs", "ssl-default-bind-client-sigalgs",
        "ssl-dh-param-file", "tune.ssl.default-dh-param",
    )),
    unsupported("tune.maxrewrite", "not supported", GLOBAL),
    unsupported("ssl-default-server-ciphersuites",
                "not supported: Python's ssl module cannot choose TLS 1.3 cipher suites", GLOBAL),
]

_POLLER = "poolproxy's event loop is uvloop (libuv), not HAProxy's pollers."
KEYWORDS += [
    ignored("noepoll", _POLLER, GLOBAL, parse=_no_args),
    ignored("nopoll", _POLLER, GLOBAL, parse=_no_args),
    ignored("nokqueue", _POLLER, GLOBAL, parse=_no_args),
    ignored("noevports", _POLLER, GLOBAL, parse=_no_args),
    ignored("busy-polling", _POLLER, GLOBAL, parse=_no_args),
    ignored("tune.maxpollevents", _POLLER, GLOBAL, "<number>", parse=_any_args),
    ignored("tune.maxaccept", _POLLER, GLOBAL, "<number>", parse=_any_args),
    ignored("nosplice", "poolproxy never splices: bodies are copied in user space.", GLOBAL, parse=_no_args),
    ignored("node", "the node name is shown by HAProxy's stats page, which poolproxy does not have.",
            GLOBAL, "<name>", parse=_any_args),
    ignored("description", "it is shown by HAProxy's stats page, which poolproxy does not have.",
            GLOBAL, "<text>", parse=_any_args),
]  # fmt: skip
