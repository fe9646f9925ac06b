"""``server``, ``default-server`` and ``source``, and the table of server parameters they share.

``server <name> <host>:<port> [param...]`` starts from the section's ``default-server`` template
(itself copied from the ``defaults`` section the proxy inherits from), then applies its own
parameters in order, so the last one written wins (``disabled`` ... ``enabled``). ``default-server``
applies the same parameters to the template, for the servers declared after it.

The proxy-wide ``source`` keyword gives the outgoing address to every server of the section that has
none of its own (from its line or from ``default-server``), wherever the ``source`` line stands in the
section; the parser applies it when the section ends. ``usesrc clientip`` makes the connection leave
from the client's address (transparent proxying); only that ``usesrc`` form is supported.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

from proxy.config.address import check_host, parse_server_address, parse_source_address, resolve_server_host
from proxy.config.errors import DirectiveError
from proxy.config.kwtypes import BACK, BACK_ONLY, Directive, Keyword, SectionState
from proxy.config.model import Server
from proxy.config.timeunit import parse_int, parse_time

NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")


@dataclass(frozen=True, slots=True)
class ServerParam:
    """One ``server`` / ``default-server`` parameter: ``nargs`` words follow its name."""

    name: str
    nargs: int
    synopsis: str
    doc: str
    default: str = ""
    apply: Callable[[Server, list[str]], None] | None = None
    unsupported: str | None = None
    ignored: str | None = None  # accepted with a warning saying why (its value is not used)


def _int_field(attr: str, lo: int, hi: int | None = None) -> Callable[[Server, list[str]], None]:
    def apply(srv: Server, args: list[str]) -> None:
        setattr(srv, attr, parse_int(args[0], lo, hi))

    return apply


def _flag(attr: str, value: bool) -> Callable[[Server, list[str]], None]:
    def apply(srv: Server, args: list[str]) -> None:
        setattr(srv, attr, value)

    return apply


def _proto(srv: Server, args: list[str]) -> None:
    if args[0] not in ("h2", "h1"):
        raise ValueError(f"unsupported protocol '{args[0]}' (supported: h2, h1)")
    srv.proto = "h2" if args[0] == "h2" else ""


def _verify(srv: Server, args: list[str]) -> None:
    if args[0] not in ("none", "required"):
        raise ValueError(f"expects 'none' or 'required', not '{args[0]}'")
    srv.verify = args[0]


def _ca_file(srv: Server, args: list[str]) -> None:
    srv.ca_file = args[0]


def _sni(srv: Server, args: list[str]) -> None:
    from proxy.logformat import FormatError, parse  # pure; imported here to keep config import-light

    try:
        srv.sni = parse(f"%[{args[0]}]")
    except FormatError as exc:
        raise ValueError(str(exc)) from None


ALPN_PROTOCOLS = ("h2", "http/1.1")


def _alpn(srv: Server, args: list[str]) -> None:
    names = tuple(p for p in args[0].split(",") if p)
    for name in names:
        if name not in ALPN_PROTOCOLS:
            raise ValueError(f"unsupported protocol '{name}' (supported: {', '.join(ALPN_PROTOCOLS)})")
    if not names:
        raise ValueError("expects a comma-separated list of protocols (h2,http/1.1)")
    srv.alpn = names


def _max_reuse(srv: Server, args: list[str]) -> None:
    srv.max_reuse = parse_int(args[0], -1)


def _purge_delay(srv: Server, args: list[str]) -> None:
    srv.pool_purge_delay = parse_time(args[0])


def _source(srv: Server, args: list[str]) -> None:
    srv.source = parse_source_address(args[0])


def _usesrc(srv: Server, args: list[str]) -> None:
    if args[0] != "clientip":
        raise ValueError(f"'usesrc {args[0]}' is not supported (only 'usesrc clientip' is)")
    srv.usesrc_clientip = True


def _interval(attr: str) -> Callable[[Server, list[str]], None]:
    def apply(srv: Server, args: list[str]) -> None:
        value = parse_time(args[0])
        if value <= 0:
            raise ValueError(f"'{args[0]}' must be greater than zero")
        setattr(srv, attr, value)

    return apply


def _check_port(srv: Server, args: list[str]) -> None:
    srv.check_port = parse_int(args[0], 1, 65535)


def _check_addr(srv: Server, args: list[str]) -> None:
    srv.check_addr = check_host(args[0], args[0])


_NO_AGENT = "not supported: poolproxy's health checks are TCP connects and HTTP requests (no agent)"
_NO_OBSERVE = (
    "not supported: passive health monitoring of live traffic is not built (active checks are: 'check')"
)
_NO_TLS = "not supported yet: poolproxy's TLS to servers has no client certificates"
_NOT_YET = "not supported yet"

PARAMS: dict[str, ServerParam] = {p.name: p for p in [
    ServerParam("weight", 1, "<0..256>", "Share of the load relative to the other servers; 0 takes none.",
                "1", _int_field("weight", 0, 256)),
    ServerParam("disabled", 0, "", "Start the server in maintenance (no traffic).", "off",
                _flag("disabled", True)),
    ServerParam("enabled", 0, "", "Cancel 'disabled' (for example one set by default-server).", "on",
                _flag("disabled", False)),
    ServerParam("maxconn", 1, "<number>", "Most requests sent to the server at once; more wait in its queue.",
                "0 (no limit)", _int_field("maxconn", 0)),
    ServerParam("maxqueue", 1, "<number>", "Most requests waiting in the server's queue (503 beyond).",
                "0 (no limit)", _int_field("maxqueue", 0)),
    ServerParam("pool-low-conn", 1, "<number>",
                "Do not take an idle connection from another worker while fewer than this many are idle.",
                "0", _int_field("pool_low_conn", 0)),
    ServerParam("pool-max-conn", 1, "<number>",
                "Most idle connections kept to the server, all workers together (-1 no limit, 0 none).",
                "-1", _int_field("pool_max_conn", -1)),
    ServerParam("pool-purge-delay", 1, "<time>",
                "How often surplus idle connections are closed (0: keep none idle).", "5s", _purge_delay),
    ServerParam("strict-maxconn", 0, "",
                "Count idle connections against maxconn too: never more connections than maxconn.",
                "off", _flag("strict_maxconn", True)),
    ServerParam("source", 1, "<addr>[:<port>]", "Local address (and port) of connections to the server.",
                "none", _source),
    ServerParam("usesrc", 1, "clientip",
                "With 'source': connect from the client's address (transparent proxying).", "off", _usesrc),
    ServerParam("proto", 1, "h2|h1",
                "Protocol spoken to the server without ALPN: h2 (HTTP/2 with prior knowledge) or h1.",
                "h1", _proto),
    ServerParam("ssl", 0, "", "Connect with TLS (verify, ca-file, sni, alpn; ssl-default-server-*).",
                "off", _flag("ssl", True)),
    ServerParam("no-ssl", 0, "", "Cancel 'ssl' (for example one set by default-server).", "off",
                _flag("ssl", False)),
    ServerParam("verify", 1, "none|required",
                "Check the server's certificate (against ca-file, and its name against the SNI).",
                "ssl-server-verify", _verify),
    ServerParam("ca-file", 1, "<file>", "CA certificates (PEM) that verify the server's certificate.",
                "none", _ca_file),
    ServerParam("sni", 1, "<expr>",
                "TLS server name, a sample expression (str(x), req.hdr(host)); part of the connection key.",
                "none", _sni),
    ServerParam("alpn", 1, "<proto>[,<proto>]",
                "Protocols offered with TLS (h2, http/1.1); the server's choice sets the connection's.",
                "none", _alpn),
    ServerParam("max-reuse", 1, "<number>",
                "Requests (HTTP/2 streams) a connection carries before it is retired (-1: no limit).",
                "-1", _max_reuse),
    ServerParam("check", 0, "", "Run health checks: a server failing 'fall' in a row is DOWN (no traffic)"
                " until 'rise' pass (TCP connect, or 'option httpchk').", "off", _flag("check", True)),
    ServerParam("no-check", 0, "", "Cancel 'check' (for example one set by default-server).", "off",
                _flag("check", False)),
    ServerParam("inter", 1, "<time>", "Interval between two checks.", "2s", _interval("inter")),
    ServerParam("fastinter", 1, "<time>", "Interval while going up or down (some checks passed or failed).",
                "inter", _interval("fastinter")),
    ServerParam("downinter", 1, "<time>", "Interval while the server is fully DOWN.", "inter",
                _interval("downinter")),
    ServerParam("rise", 1, "<count>", "Checks in a row that must pass to mark a DOWN server UP.", "2",
                _int_field("rise", 1, 1000)),
    ServerParam("fall", 1, "<count>", "Checks in a row that must fail to mark an UP server DOWN.", "3",
                _int_field("fall", 1, 1000)),
    ServerParam("port", 1, "<port>", "Port the checks connect to.", "the server's", _check_port),
    ServerParam("addr", 1, "<address>", "Address the checks connect to.", "the server's", _check_addr),
    ServerParam("backup", 0, "", "Take traffic only when no non-backup server of the backend is up"
                " (the first backup only, unless 'option allbackups').", "off", _flag("backup", True)),
    ServerParam("no-backup", 0, "", "Cancel 'backup'.", "off", _flag("backup", False)),
    *(ServerParam(name, nargs, "", "", unsupported=why) for name, nargs, why in [
        ("agent-check", 0, _NO_AGENT), ("agent-port", 1, _NO_AGENT), ("agent-inter", 1, _NO_AGENT),
        ("observe", 1, _NO_OBSERVE), ("error-limit", 1, _NO_OBSERVE), ("on-error", 1, _NO_OBSERVE),
        ("check-ssl", 0, _NO_TLS), ("check-send-proxy", 0, _NOT_YET), ("check-sni", 1, _NO_TLS),
        ("cookie", 1, _NOT_YET), ("id", 1, _NOT_YET), ("minconn", 1, _NOT_YET),
        ("slowstart", 1, _NOT_YET),
        ("track", 1, "not supported yet: a server runs its own checks (no tracking of another's)"),
        ("redir", 1, _NOT_YET), ("crt", 1, _NO_TLS),
        ("send-proxy", 0, _NOT_YET), ("send-proxy-v2", 0, _NOT_YET), ("resolvers", 1, _NOT_YET),
        ("init-addr", 1, _NOT_YET), ("resolve-prefer", 1, _NOT_YET), ("tfo", 0, _NOT_YET),
        ("namespace", 1, _NOT_YET), ("interface", 1, _NOT_YET), ("on-marked-down", 1, _NOT_YET),
        ("on-marked-up", 1, _NOT_YET),
    ])
]}  # fmt: skip


def apply_params(srv: Server, args: list[str], label: str, warn: Callable[[str], None] | None = None) -> None:
    """Apply ``server``/``default-server`` parameters to ``srv``; errors name ``label`` (``server s1``),
    ``warn`` receives the warnings (ignored parameters)."""
    i = 0
    while i < len(args):
        name = args[i]
        param = PARAMS.get(name)
        if param is None:
            raise DirectiveError(f"'{label}': unknown parameter '{name}'")
        if param.unsupported is not None:
            raise DirectiveError(f"'{label}': parameter '{name}' is {param.unsupported}")
        values = args[i + 1 : i + 1 + param.nargs]
        if len(values) < param.nargs:
            raise DirectiveError(f"'{label}': '{name}' expects a value: {name} {param.synopsis}")
        if param.ignored is not None:
            if warn is not None:
                warn(f"'{label}': parameter '{name}' is ignored: {param.ignored}")
            i += 1 + param.nargs
            continue
        assert param.apply is not None
        try:
            param.apply(srv, values)
        except ValueError as exc:
            raise DirectiveError(f"'{label}': '{name}': {exc}") from None
        i += 1 + param.nargs
    if srv.usesrc_clientip and srv.source is None:
        raise DirectiveError(
            f"'{label}': 'usesrc' requires 'source' (for example: source 0.0.0.0 usesrc clientip)"
        )


def _check_resolvable(label: str, host: str, port: int) -> None:
    """A host name must resolve when the configuration is read, as HAProxy (without a
    ``resolvers`` section) requires to start; connections look it up again when they are made."""
    try:
        resolve_server_host(host, port)
    except (OSError, UnicodeError) as exc:
        raise DirectiveError(f"'{label}': could not resolve address '{host}' ({exc})") from None


def _server(st: SectionState, d: Directive) -> None:
    if len(d.args) < 2:
        name = d.args[0] if d.args else ""
        if name:
            raise DirectiveError(f"'server {name}': missing address (expected: server <name> <host>:<port>)")
        raise d.fail("expects a name and an address: server <name> <host>:<port> [params...]")
    name, address = d.args[0], d.args[1]
    label = f"server {name}"
    if not NAME_RE.match(name):
        raise DirectiveError(f"'{label}': invalid server name (allowed: letters, digits, '-', '_', '.', ':')")
    try:
        host, port = parse_server_address(address)
    except ValueError as exc:
        raise DirectiveError(f"'{label}': {exc}") from None
    _check_resolvable(label, host, port)
    srv = dataclasses.replace(st.server_template, name=name, host=host, port=port, where=d.where)
    apply_params(srv, d.args[2:], label, st.warn)
    for other in st.px.servers:
        if other.name == name:
            raise DirectiveError(
                f"'{label}': duplicate server name in {st.section.value} '{st.px.name}'"
                f" (first declared at {other.where})"
            )
    st.px.servers.append(srv)


def _default_server(st: SectionState, d: Directive) -> None:
    template = dataclasses.replace(st.server_template)
    apply_params(template, d.args, "default-server", st.warn)
    st.server_template = template


def _proxy_source(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail("expects an address: source <addr>[:<port>] [usesrc clientip]")
    probe = Server(name="", host="", port=0)
    args = list(d.args)
    try:
        _source(probe, args[:1])
    except ValueError as exc:
        raise d.fail(str(exc)) from None
    rest = args[1:]
    if rest[:1] == ["usesrc"]:
        if len(rest) < 2:
            raise d.fail("'usesrc' expects a value: usesrc clientip")
        try:
            _usesrc(probe, rest[1:2])
        except ValueError as exc:
            raise d.fail(str(exc)) from None
        rest = rest[2:]
    if rest:
        raise d.fail(f"unsupported argument '{rest[0]}' (expected: source <addr>[:<port>] [usesrc clientip])")
    assert probe.source is not None
    st.source = (probe.source, probe.usesrc_clientip)


def apply_proxy_source(st: SectionState) -> None:
    """End of a section: servers without a ``source`` of their own take the proxy-wide one."""
    if st.source is None or st.proxy is None:
        return
    address, clientip = st.source
    for srv in st.proxy.servers:
        if srv.source is None:
            srv.source, srv.usesrc_clientip = address, clientip


KEYWORDS: list[Keyword] = [
    Keyword("server", BACK_ONLY, "<name> <host>:<port> [params...]",
            "Declare a server; parameters are listed under 'Server parameters'.", _server,
            other_cap_fatal=True),
    Keyword("default-server", BACK, "[params...]",
            "Parameters applied to the servers declared after it (inherited from defaults).",
            _default_server, other_cap_fatal=True),
    Keyword("source", BACK, "<addr>[:<port>] [usesrc clientip]",
            "Outgoing address for the servers that have no 'source' of their own.", _proxy_source,
            default="none"),
]  # fmt: skip
