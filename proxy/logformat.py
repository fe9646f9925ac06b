"""HAProxy's log-format expressions, for header values, paths and locations: parsed once, rendered per use.

Syntax (the part of HAProxy's "custom log format" that configurations commonly use):

- text is copied as it is; ``%%`` is one percent sign;
- ``%<alias>`` and ``%{<flags>}<alias>``: a value named by ``ALIASES`` (``%ci`` the client address,
  ``%Ts`` the accept time, ``%ID`` the unique id...); the alias is the whole run of letters and
  digits after ``%`` (``%ci:%cp`` is two of them), as in HAProxy;
- ``%[<fetch>[(<args>)][,<converter>[(<args>)]]...]`` and ``%{<flags>}[...]``: a sample fetch
  (``FETCHES``: ``src``, ``req.hdr(host)``, ``path``, ``unique-id``...) passed through converters
  (``CONVERTERS``: ``lower``, ``upper``, ``url_dec``, ``base64``, ``hex``);
- flags: ``+Q`` puts the value between double quotes, ``+X`` writes addresses, ports and numbers in
  hexadecimal, ``-Q``/``-X`` turn them off; ``%{<flags>}o`` sets them for everything after it
  (``unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid`` is HAProxy's documented example).

A sample that does not exist renders as nothing (a header set from a missing header is set empty),
an alias without a value as ``-``, as HAProxy does. Errors are ``FormatError`` worded as HAProxy's.

Where an expression is used decides what it may read (``Stage``): request rules cannot read the
response, response rules cannot read the request's headers, path or query (HAProxy refuses those
with "may not be reliably used here"); connection values and aliases work everywhere.

``render(fmt, ctx)`` evaluates against a ``SampleCtx``: the request, the client connection, the
names of the frontend and backend, the response when there is one. The unique id is made on first
use from the frontend's ``unique-id-format`` and kept for the rest of the exchange.
"""

from __future__ import annotations

import base64
import enum
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from proxy.message import Headers, RequestHead

Value = bytes | int | None


class FormatError(ValueError):
    """An expression that cannot be parsed; the text is HAProxy's wording."""


class Stage(enum.Flag):
    """What an expression may read: the request (its head), the response (its head)."""

    REQUEST = enum.auto()
    RESPONSE = enum.auto()


_ANY = Stage(0)  # what a fetch of the connection needs: nothing of either message


# -- the context an expression is rendered in --------------------------------------------------------


def _no_address() -> tuple[str, int]:
    return ("", 0)


@dataclass(slots=True)
class SampleCtx:
    """One exchange as expressions see it. ``resp_status``/``resp_headers`` are set for response
    rules; ``local_addr`` is asked only when an expression needs the frontend's address."""

    head: RequestHead
    client_ip: str
    client_port: int
    accept_ts: float  # time.time() of the request's start
    frontend: str
    local_addr: Callable[[], tuple[str, int]] = _no_address
    backend: str = ""
    request_no: int = 0
    unique_id_format: LogFormat | None = None
    resp_status: int = 0
    resp_headers: Headers | None = None
    ssl: bool = False  # the client connection is TLS
    _local: tuple[str, int] | None = field(default=None, repr=False)
    _unique_id: bytes | None = field(default=None, repr=False)

    def local(self) -> tuple[str, int]:
        if self._local is None:
            self._local = self.local_addr()
        return self._local

    def unique_id(self) -> bytes:
        """The request's unique id (``unique-id-format``), made once; b"" without a format."""
        uid = self._unique_id
        if uid is None:
            self._unique_id = b""  # a format that names %ID itself sees it empty, not a loop
            fmt = self.unique_id_format
            uid = self._unique_id = render(fmt, self) if fmt is not None else b""
        return uid

    def path(self) -> bytes:
        target = self.head.target
        q = target.find(b"?")
        return target if q < 0 else target[:q]

    def query(self) -> bytes | None:
        target = self.head.target
        q = target.find(b"?")
        return None if q < 0 else target[q + 1 :]


# -- values -------------------------------------------------------------------------------------------

_HEXA = 1
_QUOTE = 2
_FLAG_BITS = {"X": _HEXA, "Q": _QUOTE}


class _Ip(bytes):
    """An address (hexadecimal under +X: 8 digits per 32 bits)."""


class _Port(int):
    """A port (4 hexadecimal digits under +X)."""


def _ip(text: str) -> _Ip:
    return _Ip(text.encode())


def _hex_ip(text: bytes) -> bytes:
    try:
        packed = socket.inet_pton(socket.AF_INET, text.decode())
    except OSError:
        try:
            packed = socket.inet_pton(socket.AF_INET6, text.decode().split("%", 1)[0])
        except OSError:
            return text
    return packed.hex().upper().encode()


def _to_bytes(value: Value, flags: int) -> bytes:
    if value is None:
        return b""
    if isinstance(value, int):
        if flags & _HEXA:
            return b"%04X" % value
        return b"%d" % value
    if flags & _HEXA and isinstance(value, _Ip):
        return _hex_ip(value)
    return bytes(value)


# -- fetches --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetch:
    """A sample fetch: ``fn(ctx, args)``; ``stage`` is what it reads (empty: the connection)."""

    name: str
    fn: Callable[[SampleCtx, tuple[str, ...]], Value]
    min_args: int = 0
    max_args: int = 0
    stage: Stage = _ANY
    doc: str = ""


def _header_values(headers: Headers, name: bytes, split: bool) -> list[bytes]:
    out: list[bytes] = []
    for n, v in headers:
        if n.lower() == name:
            if split:
                out.extend(part.strip(b" \t") for part in v.split(b","))
            else:
                out.append(v.strip(b" \t"))
    return out


def _occurrence(values: list[bytes], args: tuple[str, ...]) -> bytes | None:
    """HAProxy's ``<occ>``: 1 the first, -1 the last (the default), 0 not allowed here."""
    occ = int(args[1]) if len(args) > 1 else -1
    if not values or occ == 0 or abs(occ) > len(values):
        return None
    return values[occ - 1] if occ > 0 else values[occ]


def _req_hdr(split: bool) -> Callable[[SampleCtx, tuple[str, ...]], Value]:
    def fetch(ctx: SampleCtx, args: tuple[str, ...]) -> Value:
        return _occurrence(_header_values(ctx.head.headers, args[0].lower().encode(), split), args)

    return fetch


def _res_hdr(split: bool) -> Callable[[SampleCtx, tuple[str, ...]], Value]:
    def fetch(ctx: SampleCtx, args: tuple[str, ...]) -> Value:
        headers = ctx.resp_headers or []
        return _occurrence(_header_values(headers, args[0].lower().encode(), split), args)

    return fetch


def split_pathq(target: bytes) -> bytes:
    """The path and query of a target (an absolute-form one without its scheme and authority)."""
    if target[:1] != b"/" and b"://" in target:
        rest = target.split(b"://", 1)[1]
        cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
        rest = rest[cut:]
        return rest if rest[:1] == b"/" else b"/" + rest
    return target


def _url(ctx: SampleCtx, args: tuple[str, ...]) -> Value:
    return ctx.head.target


def _str(ctx: SampleCtx, args: tuple[str, ...]) -> Value:
    return args[0].encode()


FETCHES: dict[str, Fetch] = {f.name: f for f in [
    Fetch("src", lambda c, a: _ip(c.client_ip), doc="the client's IP address"),
    Fetch("src_port", lambda c, a: _Port(c.client_port), doc="the client's port"),
    Fetch("dst", lambda c, a: _ip(c.local()[0]), doc="the address the client connected to"),
    Fetch("dst_port", lambda c, a: _Port(c.local()[1]), doc="the port the client connected to"),
    Fetch("req.hdr", _req_hdr(True), 1, 2, Stage.REQUEST,
          "a request header's value (comma-separated values apart; the last one, or occurrence <occ>)"),
    Fetch("req.fhdr", _req_hdr(False), 1, 2, Stage.REQUEST, "a request header's full value (the last one)"),
    Fetch("res.hdr", _res_hdr(True), 1, 2, Stage.RESPONSE, "a response header's value, as req.hdr"),
    Fetch("res.fhdr", _res_hdr(False), 1, 2, Stage.RESPONSE, "a response header's full value"),
    Fetch("path", lambda c, a: c.path(), stage=Stage.REQUEST, doc="the request's path (before '?')"),
    Fetch("query", lambda c, a: c.query(), stage=Stage.REQUEST, doc="the request's query (after '?')"),
    Fetch("url", _url, stage=Stage.REQUEST, doc="the request target as received"),
    Fetch("pathq", lambda c, a: split_pathq(c.head.target), stage=Stage.REQUEST,
          doc="the path and query (an absolute-form target's too)"),
    Fetch("method", lambda c, a: c.head.method, stage=Stage.REQUEST, doc="the request method"),
    Fetch("req.ver", lambda c, a: c.head.version, stage=Stage.REQUEST, doc="the request's HTTP version"),
    Fetch("status", lambda c, a: c.resp_status or None, stage=Stage.RESPONSE, doc="the response status"),
    Fetch("unique-id", lambda c, a: c.unique_id(), doc="the request's unique id (unique-id-format)"),
    Fetch("fe_name", lambda c, a: c.frontend.encode(), doc="the frontend's name"),
    Fetch("be_name", lambda c, a: c.backend.encode() or None, doc="the backend's name, once chosen"),
    Fetch("str", _str, 1, 1, doc="the text given as argument"),
    Fetch("ssl_fc", lambda c, a: int(c.ssl), doc="1 on a TLS client connection, else 0"),
]}  # fmt: skip
# "hdr" reads the request's headers in request rules and the response's in response rules (HAProxy).
_HDR_ALIASES = {"hdr": ("req.hdr", "res.hdr"), "fhdr": ("req.fhdr", "res.fhdr")}


# -- converters -----------------------------------------------------------------------------------------


CONVERTERS: dict[str, Callable[[bytes], bytes]] = {
    "lower": bytes.lower,
    "upper": bytes.upper,
    "url_dec": unquote_to_bytes,  # %XX sequences decoded (what a header must then refuse: CR, LF...)
    "base64": base64.b64encode,
    "hex": lambda v: v.hex().upper().encode(),
}


# -- aliases ---------------------------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _date(ts: float, local: bool) -> bytes:
    t = time.localtime(ts) if local else time.gmtime(ts)
    ms = int((ts - int(ts)) * 1000)
    day = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}"
    return f"{day}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms:03d}".encode()


def _request_line(ctx: SampleCtx) -> bytes:
    h = ctx.head
    return b"%s %s HTTP/%s" % (h.method, h.target, h.version)


_HOSTNAME = socket.gethostname().encode()

ALIASES: dict[str, tuple[Callable[[SampleCtx], Value], str]] = {
    "ci": (lambda c: _ip(c.client_ip), "client IP address"),
    "cp": (lambda c: _Port(c.client_port), "client port"),
    "fi": (lambda c: _ip(c.local()[0]), "frontend IP address (the address the client connected to)"),
    "fp": (lambda c: _Port(c.local()[1]), "frontend port"),
    "Ts": (lambda c: int(c.accept_ts), "accept date as a UNIX timestamp"),
    "ms": (lambda c: b"%03d" % int((c.accept_ts - int(c.accept_ts)) * 1000), "accept date's milliseconds"),
    "t": (lambda c: _date(c.accept_ts, True), "accept date, local time (dd/Mmm/yyyy:HH:MM:SS.mmm)"),
    "T": (lambda c: _date(c.accept_ts, False), "accept date, UTC"),
    "ID": (lambda c: c.unique_id() or None, "unique id (unique-id-format)"),
    "rt": (lambda c: c.request_no, "request counter (per worker process)"),
    "pid": (lambda c: os.getpid(), "process id (the worker's)"),
    "H": (lambda c: _HOSTNAME, "host name of the system"),
    "f": (lambda c: c.frontend.encode(), "frontend name"),
    "ft": (lambda c: c.frontend.encode() + (b"~" if c.ssl else b""), "frontend name, with '~' over TLS"),
    "b": (lambda c: c.backend.encode() or None, "backend name (once chosen)"),
    "HM": (lambda c: c.head.method, "HTTP method"),
    "HU": (lambda c: c.head.target, "request URI"),
    "HP": (lambda c: c.path(), "request path"),
    "HQ": (lambda c: (b"?" + q) if (q := c.query()) is not None else b"", "query string, with its '?'"),
    "HV": (lambda c: b"HTTP/" + c.head.version, "HTTP version"),
    "r": (_request_line, "request line"),
}


# -- the parsed form ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Alias:
    fn: Callable[[SampleCtx], Value]
    flags: int


@dataclass(frozen=True, slots=True)
class _Sample:
    fetch: Fetch
    args: tuple[str, ...]
    converters: tuple[Callable[[bytes], bytes], ...]
    flags: int


Node = bytes | _Alias | _Sample


@dataclass(frozen=True, slots=True)
class LogFormat:
    """A parsed expression; ``text`` as written. ``constant`` is its value when it has no variable
    part (rendering it costs nothing then)."""

    text: str
    nodes: tuple[Node, ...]

    @property
    def constant(self) -> bytes | None:
        if all(isinstance(n, bytes) for n in self.nodes):
            return b"".join(n for n in self.nodes if isinstance(n, bytes))
        return None

    def __repr__(self) -> str:
        return f"<LogFormat {self.text!r}>"


_ALNUM = re.compile(r"[A-Za-z0-9]*")
_CALL = re.compile(r"^([A-Za-z0-9_.-]+)(?:\((.*)\))?$")


def _flags(text: str, current: int) -> int:
    flags = current
    for item in text.split(","):
        item = item.strip()
        if len(item) != 2 or item[0] not in "+-":
            raise FormatError(f"invalid flag '{item}' (expected +Q, -Q, +X or -X)")
        bit = _FLAG_BITS.get(item[1])
        if bit is None:
            raise FormatError(f"flag '{item}' is not supported (supported: +Q, -Q, +X, -X)")
        flags = flags | bit if item[0] == "+" else flags & ~bit
    return flags


def _split_top(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _sample(expr: str, flags: int, stage: Stage) -> _Sample:
    first, *convs = _split_top(expr)
    m = _CALL.match(first)
    if m is None:
        raise FormatError(f"failed to parse sample expression <{expr}]> : invalid fetch '{first}'.")
    name, arg_text = m.group(1), m.group(2)
    if name in _HDR_ALIASES:
        name = _HDR_ALIASES[name][0 if stage & Stage.REQUEST else 1]
    fetch = FETCHES.get(name)
    if fetch is None:
        raise FormatError(f"failed to parse sample expression <{expr}]> : unknown fetch method '{name}'.")
    args = tuple(a.strip() for a in arg_text.split(",")) if arg_text else ()
    if not fetch.min_args <= len(args) <= fetch.max_args:
        lo, hi = fetch.min_args, fetch.max_args
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise FormatError(
            f"failed to parse sample expression <{expr}]> : fetch method '{name}' expects {want} argument(s)."
        )
    if len(args) > 1 and fetch.max_args == 2:
        try:
            int(args[1])
        except ValueError:
            raise FormatError(
                f"failed to parse sample expression <{expr}]> : invalid occurrence '{args[1]}'."
            ) from None
    if fetch.stage and not fetch.stage & stage:
        need = "HTTP request headers" if fetch.stage is Stage.REQUEST else "HTTP response headers"
        raise FormatError(
            f"sample fetch <{expr}]> may not be reliably used here because it needs '{need}'"
            " which is not available here."
        )
    converters = []
    for conv in convs:
        cm = _CALL.match(conv.strip())
        fn = CONVERTERS.get(cm.group(1)) if cm is not None else None
        if cm is None or fn is None:
            raise FormatError(f"failed to parse sample expression <{expr}]> : unknown converter '{conv}'.")
        if cm.group(2):
            raise FormatError(
                f"failed to parse sample expression <{expr}]> : converter '{cm.group(1)}' takes no argument."
            )
        converters.append(fn)
    return _Sample(fetch, args, tuple(converters), flags)


def parse(text: str, stage: Stage = Stage.REQUEST) -> LogFormat:
    """Parse ``text``; ``stage`` is what the place of use can read. Raises ``FormatError``."""
    nodes: list[Node] = []
    literal: list[str] = []
    global_flags = 0
    i, n = 0, len(text)

    def flush() -> None:
        if literal:
            nodes.append("".join(literal).encode("latin-1", "replace"))
            literal.clear()

    while i < n:
        c = text[i]
        if c != "%":
            literal.append(c)
            i += 1
            continue
        if text[i + 1 : i + 2] == "%":
            literal.append("%")
            i += 2
            continue
        j = i + 1
        flags = global_flags
        if text[j : j + 1] == "{":
            close = text.find("}", j)
            if close < 0:
                raise FormatError(f"missing '}}' after '%{{{text[j + 1 :]}'.")
            flags = _flags(text[j + 1 : close], flags)
            j = close + 1
        if text[j : j + 1] == "[":
            close = text.find("]", j)
            if close < 0:
                raise FormatError(f"missing ']' after '{text[j + 1 :]}'.")
            flush()
            nodes.append(_sample(text[j + 1 : close], flags, stage))
            i = close + 1
            continue
        name = _ALNUM.match(text, j).group()  # type: ignore[union-attr]
        i = j + len(name)
        if name == "o":
            global_flags = flags
            continue
        alias = ALIASES.get(name)
        if alias is None:
            raise FormatError(
                f"no such format variable '{name}'. If you wanted to emit the '%' character verbatim,"
                " you need to use '%%'."
            )
        flush()
        nodes.append(_Alias(alias[0], flags))
    flush()
    return LogFormat(text, tuple(nodes))


def _quoted(value: bytes, flags: int) -> bytes:
    return b'"' + value + b'"' if flags & _QUOTE else value


def render(fmt: LogFormat, ctx: SampleCtx) -> bytes:
    """The expression's value for this exchange."""
    out: list[bytes] = []
    for node in fmt.nodes:
        if isinstance(node, bytes):
            out.append(node)
        elif isinstance(node, _Alias):
            value = node.fn(ctx)
            out.append(_quoted(_to_bytes(value, node.flags), node.flags) if value is not None else b"-")
        else:
            value = node.fetch.fn(ctx, node.args)
            if node.converters and value is not None:
                data = _to_bytes(value, 0)
                for conv in node.converters:
                    data = conv(data)
                value = data
            out.append(_quoted(_to_bytes(value, node.flags), node.flags))
    return b"".join(out)
