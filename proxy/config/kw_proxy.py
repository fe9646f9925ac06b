"""Keywords of proxy sections (``defaults``, ``frontend``, ``listen``, ``backend``) that set the proxy's
own settings: mode, listeners, timeouts, connection mode, forwarding, load balancing, reuse.

Which section accepts which keyword follows HAProxy's keyword matrix: a frontend-side keyword
(``bind``, ``timeout client``) is refused in a ``backend``, a backend-side one (``balance``,
``timeout server``) in a ``frontend``; ``defaults`` accepts both sides' settings but not the ones
that name things (``bind``, ``server``). The rule keywords (``acl``, ``use_backend``,
``http-request``) are in ``kw_rules``; servers in ``kw_server``.
"""

from __future__ import annotations

from proxy import tls
from proxy.config.address import parse_bind_address
from proxy.config.kwtypes import (
    ALL_PROXIES,
    BACK,
    FRONT,
    FRONT_ONLY,
    Directive,
    Keyword,
    ParseFn,
    SectionState,
    unsupported,
)
from proxy.config.model import Bind, BindTls, ReuseMode, TlsOptions
from proxy.config.timeunit import parse_int, parse_time

BALANCE_ALGORITHMS = ("roundrobin", "leastconn", "first", "source", "random")
BALANCE_UNSUPPORTED = ("static-rr", "uri", "url_param", "hdr", "rdp-cookie", "hash")


def _mode(st: SectionState, d: Directive) -> None:
    d.expect(1, "http")
    if d.args[0] == "tcp":
        raise d.fail("mode tcp is not supported (poolproxy proxies HTTP only; use 'mode http')")
    if d.args[0] != "http":
        raise d.fail(f"unknown mode '{d.args[0]}' (the only supported mode is 'http')")
    st.px.mode = "http"


_TLS_REFUSED = {
    "crt-list": "not supported: one PEM file per bind line ('crt <file>')",
    "ca-file": "not supported: client certificates are not verified",
    "verify": "not supported: client certificates are not verified",
    "npn": "not supported (NPN is obsolete): use 'alpn'",
    "strict-sni": "not supported: one certificate per bind line",
}
_TLS_ONLY = ("crt", "alpn", "ciphers", "ciphersuites", "ssl-min-ver", "ssl-max-ver", "no-tls-tickets",
             "prefer-client-ciphers", "no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13",
             "force-sslv3", "force-tlsv10", "force-tlsv11", "force-tlsv12", "force-tlsv13")  # fmt: skip
_BIND_OPTIONS = (
    "name, proto h2, ssl, crt, alpn, ciphers, ciphersuites, ssl-min-ver, ssl-max-ver, no-tlsv1x,"
    " no-tls-tickets"
)


def _bind(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail("expects an address: bind [<address>]:<port>[,...]")
    rest = d.args[1:]
    proto = ""
    ssl_on = False
    crt: str | None = None
    alpn: tuple[str, ...] = ()
    opts = TlsOptions()
    seen: list[str] = []
    while rest:
        word = rest[0]
        if word in _TLS_REFUSED:
            raise d.fail(f"bind option '{word}' is {_TLS_REFUSED[word]}")
        takes_value = word in ("name", "proto", "crt", "alpn", "ciphers", "ciphersuites")
        if takes_value and len(rest) < 2:
            raise d.fail(f"bind option '{word}' expects a value")
        if word == "name":
            rest = rest[2:]  # a label for HAProxy's stats: nothing else reads it
            continue
        if word == "proto":
            if rest[1] not in ("h2", "h1"):
                raise d.fail(f"bind 'proto {rest[1]}' is not supported (h2 forces HTTP/2; h1 forces HTTP/1)")
            proto = rest[1]
            rest = rest[2:]
            continue
        if word == "ssl":
            ssl_on = True
            rest = rest[1:]
            continue
        seen.append(word)
        try:
            if word == "crt":
                crt = rest[1]
                if st.global_.crt_base and not crt.startswith("/"):
                    crt = st.global_.crt_base.rstrip("/") + "/" + crt
                crt = st.path(crt)
                rest = rest[2:]
            elif word == "alpn":
                alpn = tls.parse_alpn(rest[1])
                rest = rest[2:]
            elif word == "ciphers":
                opts.ciphers = rest[1]
                rest = rest[2:]
            elif word == "ciphersuites":
                tls.check_ciphersuites(rest[1])
                opts.ciphersuites = rest[1]
                rest = rest[2:]
            elif word in _TLS_ONLY:
                rest = rest[tls.apply_option(opts, rest) :]
            else:
                raise d.fail(f"bind option '{word}' is not supported (bind options: {_BIND_OPTIONS})")
        except tls.TlsError as exc:
            raise d.fail(f"bind option '{word}': {exc}") from None
    bind_tls: BindTls | None = None
    if ssl_on:
        if crt is None:
            raise d.fail("'ssl' needs a certificate: 'crt <pem file>' (certificate chain and private key)")
        bind_tls = BindTls(crt, alpn, opts)
        try:
            tls.server_context(bind_tls, st.global_.ssl_bind)  # refuse a bad PEM or cipher list now
        except tls.TlsError as exc:
            raise d.fail(str(exc)) from None
    elif seen:
        raise d.fail(f"bind option '{seen[0]}' needs 'ssl' on the same line")
    for part in d.args[0].split(","):
        try:
            pairs = parse_bind_address(part)
        except ValueError as exc:
            raise d.fail(str(exc)) from None
        st.px.binds.extend(
            Bind(host=host, port=port, where=d.where, proto=proto, tls=bind_tls) for host, port in pairs
        )


def _timeout(attr: str) -> ParseFn:
    def parse(st: SectionState, d: Directive) -> None:
        d.expect(1, "<time>")
        try:
            value = parse_time(d.args[0])
        except ValueError as exc:
            raise d.fail(str(exc)) from None
        # HAProxy treats 0 as "no timeout", the same as not setting one.
        setattr(st.px.timeouts, attr, value or None)

    return parse


def _retries(st: SectionState, d: Directive) -> None:
    d.expect(1, "<number>")
    try:
        st.px.retries = parse_int(d.args[0], 0, 1000)
    except ValueError as exc:
        raise d.fail(str(exc)) from None


def _balance(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail(f"expects an algorithm: {' | '.join(BALANCE_ALGORITHMS)}")
    algo = d.args[0]
    if algo == "random(2)":  # HAProxy's default number of draws, written out
        algo = "random"
    elif algo.startswith("random("):
        raise d.fail(f"'{algo}' is not supported (only random's default of two draws: 'random')")
    if algo in BALANCE_UNSUPPORTED:
        raise d.fail(f"algorithm '{algo}' is not supported (supported: {', '.join(BALANCE_ALGORITHMS)})")
    if algo not in BALANCE_ALGORITHMS:
        raise d.fail(f"unknown algorithm '{algo}' (supported: {', '.join(BALANCE_ALGORITHMS)})")
    if len(d.args) > 1:
        raise d.fail(f"algorithm '{algo}' takes no argument")
    st.px.balance = algo


def _http_reuse(st: SectionState, d: Directive) -> None:
    d.expect(1, "never|safe|aggressive|always")
    try:
        st.px.http_reuse = ReuseMode(d.args[0])
    except ValueError:
        raise d.fail(f"unknown mode '{d.args[0]}' (expected never, safe, aggressive or always)") from None


def _forwardfor(st: SectionState, d: Directive) -> None:
    px = st.px
    if d.negated:
        d.expect(0, "")
        px.forwardfor, px.forwardfor_header = False, "x-forwarded-for"
        return
    header = "x-forwarded-for"
    args = list(d.args)
    while args:
        opt = args.pop(0)
        if opt == "header" and args:
            header = args.pop(0).lower()
        elif opt == "header":
            raise d.fail("'header' expects a header name")
        elif opt in ("except", "if-none"):
            raise d.fail(f"'{opt}' is not supported")
        else:
            raise d.fail(f"unknown argument '{opt}' (expected: header <name>)")
    px.forwardfor, px.forwardfor_header = True, header


def _conn_mode(mode: str) -> ParseFn:
    def parse(st: SectionState, d: Directive) -> None:
        d.expect(0, "")
        if not d.negated:
            st.px.http_conn_mode = mode
        elif st.px.http_conn_mode == mode:
            # HAProxy: "no option X" falls back to keep-alive only when X is the mode in force.
            st.px.http_conn_mode = "keep-alive"

    return parse


def _httplog(st: SectionState, d: Directive) -> None:
    if d.args:
        raise d.fail(f"'{d.args[0]}' is not supported (only the default httplog format is)")
    st.px.httplog = not d.negated


def _dontlognull(st: SectionState, d: Directive) -> None:
    d.expect(0, "")
    st.px.dontlognull = not d.negated


def _maxconn(st: SectionState, d: Directive) -> None:
    d.expect(1, "<conns>")
    try:
        st.px.maxconn = parse_int(d.args[0], 0)
    except ValueError as exc:
        raise d.fail(str(exc)) from None


def _option(attr: str) -> ParseFn:
    def parse(st: SectionState, d: Directive) -> None:
        d.expect(0, "")
        setattr(st.px, attr, not d.negated)

    return parse


def _log(st: SectionState, d: Directive) -> None:
    if d.negated:  # "no log": forget the targets inherited from defaults
        d.expect(0, "")
        st.px.log_global = False
        return
    if d.args != ["global"]:
        raise d.fail("only 'log global' is supported in proxies; declare targets with 'log' in 'global'")
    st.px.log_global = True


KEYWORDS: list[Keyword] = [
    Keyword("mode", ALL_PROXIES, "http", "Proxy mode; only http is supported ('mode tcp' is an error).",
            _mode, default="http"),
    Keyword("bind", FRONT_ONLY,
            "[<address>]:<port>[,...] [name <n>] [proto h2|h1] [ssl crt <pem> [alpn <list>] [ciphers <c>]"
            " [ciphersuites <s>] [ssl-min-ver <v>] [ssl-max-ver <v>] [no-tlsv1x] [no-tls-tickets]]",
            "Listen on an address and port(s); HTTP/1, or HTTP/2 by preface, ALPN or 'proto h2'.",
            _bind),
    Keyword("timeout client", FRONT, "<time>", "Inactivity timeout on the client side.",
            _timeout("client"), default="unset"),
    Keyword("timeout http-request", ALL_PROXIES, "<time>", "Time allowed to receive a complete request head.",
            _timeout("http_request"), default="unset"),
    Keyword("timeout http-keep-alive", ALL_PROXIES, "<time>",
            "Time allowed for the next request on an idle keep-alive client connection.",
            _timeout("http_keep_alive"), default="unset"),
    Keyword("timeout server", BACK, "<time>", "Inactivity timeout on the server side.",
            _timeout("server"), default="unset"),
    Keyword("timeout connect", BACK, "<time>", "Time allowed to establish a server connection.",
            _timeout("connect"), default="unset"),
    Keyword("timeout queue", BACK, "<time>", "Longest wait in a server or backend queue (503 beyond).",
            _timeout("queue"), default="unset"),
    Keyword("timeout tunnel", BACK, "<time>",
            "Inactivity allowed both ways once a connection became a tunnel (WebSocket, 101).",
            _timeout("tunnel"), default="timeout client"),
    Keyword("maxconn", FRONT, "<conns>",
            "Client connections at once; more wait in the backlog (divided between the workers).",
            _maxconn, default="0 (no limit but global maxconn)"),
    Keyword("option http-ignore-probes", FRONT, "",
            "A connection that sent nothing before its timeout is closed without 408 and not logged.",
            _option("http_ignore_probes"), default="off", negatable=True),
    Keyword("option abortonclose", BACK, "",
            "A client that closes while its request waits for a server (queue, connect) aborts it.",
            _option("abortonclose"), default="off", negatable=True),
    Keyword("retries", BACK, "<number>", "Connection retries to a server after a failed connect.",
            _retries, default="3"),
    Keyword("balance", BACK, "roundrobin|leastconn|first|source|random", "Load-balancing algorithm.",
            _balance, default="roundrobin"),
    Keyword("http-reuse", BACK, "never|safe|aggressive|always",
            "Which idle server connections a request may reuse.", _http_reuse, default="safe"),
    Keyword("option forwardfor", ALL_PROXIES, "[header <name>]",
            "Add the client address in X-Forwarded-For (or the named header).",
            _forwardfor, default="off", negatable=True),
    Keyword("option http-keep-alive", ALL_PROXIES, "",
            "Keep client and server connections open between requests (the default mode).",
            _conn_mode("keep-alive"), default="on", negatable=True),
    Keyword("option http-server-close", ALL_PROXIES, "",
            "Close the server connection after each response; keep the client one.",
            _conn_mode("http-server-close"), default="off", negatable=True),
    Keyword("option httpclose", ALL_PROXIES, "", "Close both connections after each response.",
            _conn_mode("httpclose"), default="off", negatable=True),
    Keyword("option httplog", FRONT, "", "Log each request in HAProxy's HTTP log format.",
            _httplog, default="off", negatable=True),
    Keyword("option dontlognull", FRONT, "", "Do not log connections that sent no request.",
            _dontlognull, default="off", negatable=True),
    Keyword("log", ALL_PROXIES, "global",
            "Log to the targets of the global section (the only form); 'no log' stops logging.",
            _log, default="no logging", negatable=True),
]  # fmt: skip

_NO_STATS = "not supported yet (the stats page takes: stats enable, uri, refresh, show-modules, realm, auth)"
_NOT_YET = "not supported yet"
KEYWORDS += [
    unsupported("backlog", _NOT_YET),
    unsupported("fullconn", _NOT_YET),
    unsupported("hash-type", "not supported ('balance' hash algorithms are not supported)"),
    unsupported("cookie", "not supported yet (no cookie persistence)"),
    unsupported("compression", _NOT_YET),
    unsupported("capture request header", _NOT_YET),
    unsupported("capture response header", _NOT_YET),
    unsupported("capture cookie", _NOT_YET),
    unsupported("declare capture", _NOT_YET),
    unsupported("description", _NOT_YET),
    unsupported("id", _NOT_YET),
    unsupported("disabled", _NOT_YET),
    unsupported("enabled", _NOT_YET),
    unsupported("errorloc", _NOT_YET),
    unsupported("errorloc302", _NOT_YET),
    unsupported("errorloc303", _NOT_YET),
    unsupported("log-format", "not supported yet (only the default 'option httplog' format)"),
    unsupported("error-log-format", _NOT_YET),
    unsupported("monitor-uri", _NOT_YET),
    unsupported("monitor fail", _NOT_YET),
    unsupported("redirect", "not supported yet (use 'http-request redirect': the same arguments)"),
    unsupported("retry-on", _NOT_YET),
    unsupported("http-send-name-header", _NOT_YET),
    unsupported("tcp-request", "not supported (poolproxy has no TCP rules)"),
    unsupported("tcp-response", "not supported (poolproxy has no TCP rules)"),
    unsupported("stick-table", _NOT_YET),
    unsupported("stick on", _NOT_YET),
    unsupported("stick match", _NOT_YET),
    unsupported("stick store-request", _NOT_YET),
    unsupported("force-persist", _NOT_YET),
    unsupported("ignore-persist", _NOT_YET),
    unsupported("use-server", _NOT_YET),
    unsupported("server-template", _NOT_YET),
    unsupported("dispatch", "not supported"),
    unsupported("filter", _NOT_YET),
    unsupported("rate-limit sessions", _NOT_YET),
    unsupported("load-server-state-from-file", _NOT_YET),
    unsupported("email-alert", _NOT_YET),
    unsupported("stats", _NO_STATS),  # the words proxy.config.kw_stats does not declare
    unsupported("timeout client-fin", _NOT_YET),
    unsupported("timeout server-fin", _NOT_YET),
    unsupported("timeout tarpit", _NOT_YET),
    unsupported("timeout client-hs", _NOT_YET),
    unsupported("option tcplog", "not supported (poolproxy proxies HTTP only)"),
    unsupported("option tcpka", _NOT_YET),
    unsupported("option clitcpka", _NOT_YET),
    unsupported("option srvtcpka", _NOT_YET),
    unsupported("option http-buffer-request", _NOT_YET),
    unsupported("option http-pretend-keepalive", _NOT_YET),
    unsupported("option http-no-delay", _NOT_YET),
    unsupported("option http-use-proxy-header", _NOT_YET),
    unsupported("option prefer-last-server", _NOT_YET),
    unsupported("option persist", _NOT_YET),
    unsupported("option originalto", _NOT_YET),
    unsupported("option nolinger", _NOT_YET),
    unsupported("option splice-auto", _NOT_YET),
    unsupported("option contstats", _NOT_YET),
    unsupported("option socket-stats", _NOT_YET),
    unsupported("option log-separate-errors", _NOT_YET),
    unsupported("option logasap", _NOT_YET),
    unsupported("option accept-invalid-http-request", "not supported: the HTTP/1 parsers are strict"),
    unsupported("option accept-invalid-http-response", "not supported: the HTTP/1 parsers are strict"),
    unsupported(
        "option accept-unsafe-violations-in-http-request", "not supported: the HTTP/1 parsers are strict"
    ),
    unsupported(
        "option accept-unsafe-violations-in-http-response", "not supported: the HTTP/1 parsers are strict"
    ),
]
