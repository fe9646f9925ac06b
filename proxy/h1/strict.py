"""The proxy's HTTP/1 rules, shared by both engines: head grammar, framing, bodies, message loop.

Theory of operation. Bytes go into a ``RequestReader`` or ``ResponseReader``. The reader finds a
complete head block (start line through the empty line, CRLF only) within ``limits.max_head``,
counts its lines, and runs the *grammar scan* over the raw bytes (one regular expression). Only a
block that passes goes to the engine, whose sole job is to turn it into fields (method, target,
version, headers). ``request_head``/``response_head`` then apply the *semantic* rules (Host,
Content-Length, Transfer-Encoding, Connection) and decide the framing; bodies are decoded here too
(``_Length``, ``_Chunked``, ``_UntilClose``). The engines never see a body, and everything that
could make two engines, or two ways of splitting the same bytes, disagree is decided here.

Bodies: each decoder appends at most one ``Data`` per ``feed`` (everything it decoded, joined), so
the cost of a body is per read, not per chunk. ``_Chunked`` leaves the chunks that need no decision
(size line with or without extensions, data, CRLF) to ``scan_chunks``: the C extension
``proxy._chunked`` (``ext/chunked.c``, a few ns per chunk) or its pure-Python twin
``scan_chunks_python``, which return the same for every input. The scanner stops at anything else
(the last chunk, a line cut by the end of the input, any invalid byte) and ``_Chunked`` decides it
in Python, so errors and waiting are the same whichever scanner runs. ``POOLPROXY_CHUNKED`` picks
it: ``auto`` (default: C if built), ``c`` (ImportError if not built) or ``python``.

Statuses: 400 for a request, 502 for a response, except (all decided before the engine runs) a
head over ``max_head`` (431; 414 when not even the request line fits), more than ``max_headers``
header or trailer lines (431), an unknown method (501: a valid token that llhttp does not know)
and a well-formed ``CONNECT host:port`` (405: the proxy does not tunnel CONNECT). A bare LF, seen
as soon as it arrives, wins over every other verdict, so splitting never changes the answer.

Choices where HAProxy or the RFCs leave room (``tests/data/h1`` pins each one):

- bare LF anywhere in a head, chunk line or trailer section, and obs-fold: rejected, never repaired;
- a value may hold SP, HT, VCHAR and obs-text; OWS around it is not part of it, so
  ``Transfer-Encoding:<HT>chunked<SP>`` is ``chunked`` (the proxy re-serializes it anyway);
- Content-Length is 1*15DIGIT; a list or repeated headers collapse when every element is the same
  string (``5, 5``) and are rejected otherwise (``5, 05`` too, as h11 does);
- Transfer-Encoding: one header, value ``chunked`` (any case); never with Content-Length, never in
  an HTTP/1.0 message;
- targets: origin-form; ``*`` for OPTIONS only; absolute-form for ``http``/``https`` without
  userinfo; authority-form for CONNECT only. ``#``, ``<``, ``>``, ``\\``, ``^``, backtick, ``{``,
  ``}``, ``|`` and bytes outside VCHAR are rejected;
- Host: required in HTTP/1.1 unless the target is in absolute-form; with an absolute-form target
  (HTTP/1.0 too) Host must name the target's authority (400 otherwise, as HAProxy) and is added
  when absent; the target is forwarded in absolute-form, as HAProxy does, less an explicit
  default port (``_absolute_form`` has the details);
- chunk sizes: 1-15 hex digits, no prefix, optional BWS before CRLF; extensions must be well formed
  (token or quoted-string values) and are dropped;
- empty lines before a request line are skipped (RFC 9112 §2.2), at most ``max_head`` bytes.
"""

from __future__ import annotations

import enum
import os
import re
from collections import deque
from collections.abc import Callable
from typing import Final

from proxy.h1.base import Limits, ProtocolError
from proxy.message import Data, EndOfMessage, Event, Framing, Headers, RequestHead, ResponseHead

# --- Grammar -------------------------------------------------------------------------------------

_TCHAR = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"
# VCHAR minus the characters HAProxy refuses in a request target (fragment, and issue #2906's list).
_TARGET_CHAR = rb"[!\"$-;=?-\[\]_a-z~]"
_REQUEST_LINE = rb"(" + _TCHAR + rb"+) (" + _TARGET_CHAR + rb"+) HTTP/1\.[01]\r\n"
_STATUS_LINE = rb"HTTP/1\.[01] [1-9][0-9][0-9](?: [\t \x21-\x7e\x80-\xff]*)?\r\n"
# Header lines then the empty line. A value excludes CTLs other than HT, so CR, LF and NUL too.
_FIELDS = rb"(?:" + _TCHAR + rb"+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*\r\n"
_REQUEST_HEAD = re.compile(_REQUEST_LINE + _FIELDS)
_RESPONSE_HEAD = re.compile(_STATUS_LINE + _FIELDS)
_REQUEST_LINE_RE = re.compile(_REQUEST_LINE)
_STATUS_LINE_RE = re.compile(_STATUS_LINE)
_FIELDS_RE = re.compile(_FIELDS)
_FIELD = re.compile(rb"(" + _TCHAR + rb"+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*\r\n")
_IP_LITERAL = rb"\[[0-9A-Fa-f:.]+\]"
_HOST = re.compile(rb"(?:" + _IP_LITERAL + rb"|[-A-Za-z0-9._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_AUTHORITY = rb"(?:" + _IP_LITERAL + rb"|[-A-Za-z0-9._~!$&'()*+,;=%]+)"
# Groups: scheme, host, port (None without a colon; b"" for an empty one).
_ABSOLUTE_FORM = re.compile(
    rb"([hH][tT][tT][pP][sS]?)://(" + _AUTHORITY + rb")(?::([0-9]*))?(?:[/?].*)?", re.S
)
_DEFAULT_PORT = {b"http": b"80", b"https": b"443"}
_AUTHORITY_FORM = re.compile(_AUTHORITY + rb":[0-9]+")
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,15}")
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[ \t]*" + _TCHAR + rb"+(?:[ \t]*=[ \t]*(?:" + _TCHAR + rb"+|"
    + _QUOTED + rb"))?)*[ \t]*"
)  # fmt: skip

# The methods llhttp knows (it refuses any other token), so both engines accept the same set.
KNOWN_METHODS = frozenset(
    b"GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH PURGE QUERY ACL BIND CHECKOUT COPY LINK "
    b"LOCK MERGE MKACTIVITY MKCALENDAR MKCOL MOVE PROPFIND PROPPATCH REBIND REPORT SEARCH UNBIND "
    b"UNLINK UNLOCK".split()
)
_TCHAR_BYTES = frozenset(b"-!#$%&'*+.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

# An engine: head block -> (method or status, target or reason, version, headers). ValueError if
# the engine refuses the block.
RequestTokenizer = Callable[[bytes], tuple[bytes, bytes, bytes, Headers]]
ResponseTokenizer = Callable[[bytes, bytes], tuple[int, bytes, bytes, Headers]]


def check_target(method: bytes, target: bytes) -> None:
    """The request-target form must suit the method (RFC 9112 §3.2, HAProxy's table)."""
    if target[0] == 0x2F:  # origin-form
        if method == b"CONNECT":
            raise ProtocolError("CONNECT needs an authority-form target")
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise ProtocolError("asterisk-form is for OPTIONS only")
        return
    if method == b"CONNECT":
        if _AUTHORITY_FORM.fullmatch(target):
            raise ProtocolError("CONNECT is not supported", 405)
        raise ProtocolError("CONNECT needs an authority-form target host:port")
    if _ABSOLUTE_FORM.fullmatch(target) is None:
        raise ProtocolError(f"invalid request target {target[:64]!r}")


def _bare_lf(buf: bytes, start: int, stop: int) -> bool:
    return buf.count(b"\n", start, stop) != buf.count(b"\r\n", start, stop)


def _explain(block: bytes, start: int, status: int) -> ProtocolError:
    """Error path only: what is wrong with the header (or trailer) lines of ``block[start:]``."""
    if _bare_lf(block, 0, len(block)):
        return ProtocolError("bare LF", status)
    for line in block[start:].split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            return ProtocolError("obs-fold (a line starting with whitespace)", status)
        if line and _FIELDS_RE.fullmatch(line + b"\r\n\r\n") is None:
            return ProtocolError(f"invalid header line {line[:64]!r}", status)
    return ProtocolError("invalid header section", status)


def canonical_head(block: bytes, status: int) -> bytes | None:
    """``block`` with trailing OWS dropped from values and identical Content-Lengths merged.

    Both are legal and mean the same, but llhttp refuses ``5, 5``, repeated Content-Length headers
    and ``Transfer-Encoding: chunked<HT>``, where h11 accepts them (merging Content-Length the same
    way). So when an engine refuses a block, the reader retries once with this form (None: it is
    the same block). Conflicting or invalid Content-Length values raise ProtocolError.
    """
    lines = block.split(b"\r\n")
    seen: bytes | None = None
    changed = False
    out = [lines[0]]
    for line in lines[1:-2]:
        name, _, value = line.partition(b":")
        if name.lower() != b"content-length":
            stripped = value.rstrip(b" \t")
            changed |= stripped != value
            out.append(name + b":" + stripped)
            continue
        digits = _content_length_value([value], status)
        if seen is None:
            seen = digits
            changed |= value.strip(b" \t") != digits
            out.append(name + b": " + digits)
        elif seen != digits:
            raise ProtocolError("conflicting Content-Length", status)
        else:
            changed = True
    return b"\r\n".join([*out, b"", b""]) if changed else None


# --- Semantics -----------------------------------------------------------------------------------

_FRAMING_NAMES = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect"}
)


def request_head(method: bytes, target: bytes, version: bytes, headers: Headers) -> RequestHead:
    """Apply the request rules to tokenized fields and decide the framing. Raises ProtocolError(400)."""
    found = _framing_fields(headers)
    hosts = found.get(b"host")
    if hosts is not None:
        if len(hosts) > 1:
            raise ProtocolError("more than one Host header")
        if _HOST.fullmatch(hosts[0]) is None:
            raise ProtocolError(f"invalid Host {hosts[0][:64]!r}")
    if target[0] != 0x2F and target != b"*":  # absolute-form: its authority rules
        target, headers = _absolute_form(target, hosts[0] if hosts else None, headers)
    elif hosts is None and version == b"1.1":
        raise ProtocolError("missing Host header")
    body, length = Framing.NONE, None
    te = found.get(b"transfer-encoding")
    if te is not None:
        body = Framing.CHUNKED
        if _chunked(te, found, version, 400):
            headers = _canonical(headers, b"transfer-encoding", b"chunked")
    elif b"content-length" in found:
        body = Framing.LENGTH
        length, headers = _length(found[b"content-length"], headers, 400)
    connection = found.get(b"connection")
    upgrade = None
    if connection and b"upgrade" in found and version == b"1.1" and b"upgrade" in _tokens(connection):
        upgrade = found[b"upgrade"][0].split(b",")[0].strip(b" \t").lower() or None
    expect = b"expect" in found and version == b"1.1"
    if expect:
        expect = any(v.lower() == b"100-continue" for v in found[b"expect"])
    keep_alive = _keep_alive(connection, version)
    return RequestHead(method, target, version, headers, body, length, keep_alive, upgrade, expect)


def _absolute_form(target: bytes, host: bytes | None, headers: Headers) -> tuple[bytes, Headers]:
    """The authority of an absolute-form target is the request's (RFC 9112 §3.2.2), as HAProxy 2.6
    applies it, HTTP/1.0 and HTTP/1.1 alike. Returns the target and headers to forward.

    - Host present: it must name the same authority, or the request is refused (400), so that no
      rule can match on one name while the server acts on another. The same means: equal ignoring
      case, or hosts equal ignoring case with the port missing on one side and explicit (``80`` for
      http, ``443`` for https, or empty) on the other.
    - Host absent (even in HTTP/1.1, where it is otherwise required): ``Host: <authority>`` is
      added in front, so rules and the server see the authority. (HAProxy adds nothing.)
    - The target stays in absolute-form, as HAProxy forwards it; an explicit default or empty port
      is removed from it, and then Host is set to the bare host (RFC 3986 §6.2.3 scheme-based
      normalization, HAProxy's ``http_scheme_based_normalize``).
    - Userinfo (``user@``) never reaches here: ``check_target`` refuses it (HAProxy drops it).
    """
    m = _ABSOLUTE_FORM.fullmatch(target)
    if m is None:
        raise ProtocolError(f"invalid request target {target[:64]!r}")
    scheme, uri_host, uri_port = m.group(1, 2, 3)
    default = _DEFAULT_PORT[scheme.lower()]
    authority = uri_host if uri_port is None else uri_host + b":" + uri_port
    if host is not None and not _same_authority(authority, uri_host, uri_port, host, default):
        raise ProtocolError(f"Host {host[:64]!r} is not the target's authority {authority[:64]!r}")
    if uri_port is not None and uri_port in (b"", default):
        target = target[: m.end(2)] + target[m.end(3) :]
        authority = uri_host
        if host is not None:
            headers = _canonical(headers, b"host", uri_host)
    if host is None:
        headers = [(b"Host", authority), *headers]
    return target, headers


def _same_authority(
    authority: bytes, uri_host: bytes, uri_port: bytes | None, host: bytes, default: bytes
) -> bool:
    """Whether the Host value ``host`` names ``authority`` (HAProxy's h1_validate_mismatch_authority:
    a port compares as text, so ``080`` is not the default port)."""
    if host.lower() == authority.lower():
        return True
    name, port = host, None
    if not host.endswith(b"]") and b":" in host:  # an IP literal's colons are inside its brackets
        name, _, port = host.rpartition(b":")
    if uri_port is None and port is None:
        return False
    if uri_port not in (None, b"", default) or port not in (None, b"", default):
        return False
    return name.lower() == uri_host.lower()


def response_head(
    status: int, reason: bytes, version: bytes, headers: Headers, method: bytes
) -> ResponseHead:
    """Apply the response rules (for a request with ``method``) and decide the framing. Raises 502."""
    found = _framing_fields(headers)
    te = found.get(b"transfer-encoding")
    if te is not None and _chunked(te, found, version, 502):
        headers = _canonical(headers, b"transfer-encoding", b"chunked")
    length = None
    if b"content-length" in found:
        length, headers = _length(found[b"content-length"], headers, 502)
    keep_alive = _keep_alive(found.get(b"connection"), version)
    if status < 200 or status == 204:
        body, length = Framing.NONE, None
    elif method == b"HEAD" or status == 304:
        body = Framing.NONE  # ``length``, if any, is the representation's: the writer passes it on
    elif te is not None:
        body = Framing.CHUNKED
    elif length is not None:
        body = Framing.LENGTH
    else:
        body, keep_alive = Framing.CLOSE, False
    reason = reason.rstrip(b" \t")  # h11 keeps trailing whitespace, llhttp drops some
    return ResponseHead(status, reason, version, headers, body, length, keep_alive)


def _framing_fields(headers: Headers) -> dict[bytes, list[bytes]]:
    """The values of the headers the rules look at, by lower-case name, in one pass."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in _FRAMING_NAMES:
            if lname in found:
                found[lname].append(value)
            else:
                found[lname] = [value]
    return found


def _chunked(te: list[bytes], found: dict[bytes, list[bytes]], version: bytes, status: int) -> bool:
    """Check Transfer-Encoding (exactly one ``chunked``); True if its value needs canonical case."""
    if version != b"1.1":
        raise ProtocolError("Transfer-Encoding in an HTTP/1.0 message", status)
    if len(te) > 1 or te[0].lower() != b"chunked":
        raise ProtocolError(f"unsupported Transfer-Encoding {b', '.join(te)[:64]!r}", status)
    if b"content-length" in found:
        raise ProtocolError("Transfer-Encoding with Content-Length", status)
    return te[0] != b"chunked"


def _length(values: list[bytes], headers: Headers, status: int) -> tuple[int, Headers]:
    digits = _content_length_value(values, status)
    if len(values) > 1 or values[0] != digits:
        headers = _canonical(headers, b"content-length", digits)
    return int(digits), headers


def _content_length_value(values: list[bytes], status: int) -> bytes:
    elements = {e.strip(b" \t") for v in values for e in v.split(b",")}
    if len(elements) != 1:
        raise ProtocolError("conflicting Content-Length", status)
    digits = elements.pop()
    if _CONTENT_LENGTH.fullmatch(digits) is None:
        raise ProtocolError(f"invalid Content-Length {digits[:32]!r}", status)
    return digits


def _canonical(headers: Headers, name: bytes, value: bytes) -> Headers:
    """``headers`` with a single ``name`` header (the first, its case kept) set to ``value``."""
    out: Headers = []
    done = False
    for n, v in headers:
        if n.lower() != name:
            out.append((n, v))
        elif not done:
            out.append((n, value))
            done = True
    return out


def _tokens(values: list[bytes]) -> set[bytes] | tuple[bytes]:
    if len(values) == 1 and b"," not in values[0]:
        return (values[0].strip(b" \t").lower(),)
    return {t.strip(b" \t").lower() for v in values for t in v.split(b",")}


def _keep_alive(connection: list[bytes] | None, version: bytes) -> bool:
    if connection is None:
        return version == b"1.1"
    tokens = _tokens(connection)
    if b"close" in tokens:
        return False
    return version == b"1.1" or b"keep-alive" in tokens


# --- Bodies --------------------------------------------------------------------------------------
# A decoder consumes ``buf[pos:]``, appends Data (never empty) and at the end EndOfMessage to
# ``events``, and returns the new position; ``done`` turns True with the EndOfMessage. ``wait`` is
# the terminator whose absence stopped it, if any (the reader skips re-scanning until it comes).


class _Length:
    __slots__ = ("done", "remaining", "wait")

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = False
        self.wait = b""

    def feed(self, buf: bytes, pos: int, events: list[Event]) -> int:
        n = min(self.remaining, len(buf) - pos)
        if n:
            events.append(Data(buf[pos : pos + n]))
            self.remaining -= n
        if not self.remaining:
            events.append(EndOfMessage())
            self.done = True
        return pos + n


class _UntilClose:
    """A response body that the server ends by closing the connection (``Framing.CLOSE``)."""

    __slots__ = ("done", "wait")

    def __init__(self) -> None:
        self.done = False
        self.wait = b""

    def feed(self, buf: bytes, pos: int, events: list[Event]) -> int:
        if pos < len(buf):
            events.append(Data(buf[pos:]))
        return len(buf)


# Chunked bodies. ``_Chunked`` hands the bulk of the work to ``scan_chunks``, which decodes every
# chunk that needs no decision (size line, data, CRLF) and returns their payloads joined; what it
# stops at is decided by ``_Chunked`` itself, one step at a time. The states, as ints because the
# scanner (C or Python) takes and returns them:
_SIZE = 0  # expecting a chunk-size line
_DATA = 1  # inside chunk data, ``remaining`` bytes of it still due
_CRLF = 2  # expecting the CRLF after chunk data
_TRAILERS = 3  # after the last chunk: expecting the trailer section (possibly empty); never scanned

_MAX_REMAINING = (1 << 63) - 1
# The CRLF that ends chunk data, then a chunk line of the simplest form (a subset of _CHUNK_LINE).
_NEXT_SIMPLE_CHUNK = re.compile(rb"\r\n([0-9A-Fa-f]{1,15})[ \t]*\r\n")

ChunkScanner = Callable[[bytes, int, int, int, int], tuple[bytes, int, int, int]]


def scan_chunks_python(
    buf: bytes, pos: int, state: int, remaining: int, max_line: int
) -> tuple[bytes, int, int, int]:
    """Decode the chunks of ``buf[pos:]`` that need no decision: the pure-Python twin of
    ``proxy._chunked.scan`` (``ext/chunked.c``); the two return the same for every input.

    ``state`` is ``_SIZE``, ``_DATA`` or ``_CRLF``, ``remaining`` the chunk-data bytes still due in
    ``_DATA``. Returns ``(data, pos, state, remaining)``: ``data`` is the payload of every chunk
    decoded, joined (``b""`` if none), and the rest says where the scan stopped. It accepts a chunk
    line that ``_CHUNK_LINE`` matches whose CRLF lies within ``max_line`` bytes of its start and
    whose size is not 0, the data, and the CRLF after it; it stops *before* anything else (the last
    chunk, a line or CRLF cut by the end of ``buf``, an invalid byte), leaving it to ``_Chunked``,
    which waits or raises. It never raises ProtocolError. Invalid arguments raise ValueError
    (``0 <= pos <= len(buf)``, ``state`` one of the three, ``0 <= remaining < 2**63``,
    ``max_line >= 0``).
    """
    _check_scan(len(buf), pos, state, remaining, max_line)
    n = len(buf)
    parts: list[bytes] = []
    append = parts.append
    next_chunk = _NEXT_SIMPLE_CHUNK.match
    while pos < n:
        if state == _DATA:
            take = min(remaining, n - pos)
            append(buf[pos : pos + take])
            pos += take
            remaining -= take
            if remaining:
                break
            state = _CRLF
            # The steady state, one match per chunk: this CRLF, a size line without extensions
            # and all of the next chunk's data are there (half the cost of the steps below).
            while (m := next_chunk(buf, pos, pos + 2 + max_line)) is not None:
                size = int(m[1], 16)
                start = m.end()
                if not size or start + size > n:
                    break
                append(buf[start : start + size])
                pos = start + size
        elif state == _CRLF:
            if buf[pos : pos + 2] != b"\r\n":
                break
            pos += 2
            state = _SIZE
        else:
            end = buf.find(b"\r\n", pos, pos + max_line)
            line = None if end < 0 else _CHUNK_LINE.fullmatch(buf, pos, end)
            if line is None:
                break
            size = int(line[1], 16)
            if not size:
                break
            pos, state, remaining = end + 2, _DATA, size
    return b"".join(parts), pos, state, remaining


def _check_scan(n: int, pos: int, state: int, remaining: int, max_line: int) -> None:
    # The C scanner's checks, in its order and with its messages.
    if state not in (_SIZE, _DATA, _CRLF):
        raise ValueError(f"invalid scan state {state}")
    if not 0 <= remaining <= _MAX_REMAINING:
        raise ValueError("remaining out of range")
    if max_line < 0:
        raise ValueError("max_line must not be negative")
    if not 0 <= pos <= n:
        raise ValueError(f"pos {pos} out of range for a buffer of {n} bytes")


# The scanners importable here, preferred first, and the one every new decoder uses. Like
# ``proxy.atomics``: ``POOLPROXY_CHUNKED`` is ``auto`` (the default: C where built), ``c`` (fail at
# import if ``proxy._chunked`` is missing) or ``python``. Tests rebind ``scan_chunks`` to run a
# case on each.
CHUNK_ENV_VAR: Final = "POOLPROXY_CHUNKED"
CHUNK_SCANNERS: dict[str, ChunkScanner] = {}
try:
    from proxy._chunked import scan as _scan_c
except ImportError:  # not built (POOLPROXY_NO_EXT, no compiler)
    pass
else:
    CHUNK_SCANNERS["c"] = _scan_c
CHUNK_SCANNERS["python"] = scan_chunks_python


def _select_scanner(choice: str) -> str:
    if choice == "auto":
        return next(iter(CHUNK_SCANNERS))
    if choice not in ("c", "python"):
        raise ValueError(f"{CHUNK_ENV_VAR} must be auto, c or python, not {choice!r}")
    if choice not in CHUNK_SCANNERS:
        raise ImportError(f"{CHUNK_ENV_VAR}=c but proxy._chunked is not built (setup.py build_ext)")
    return choice


CHUNK_BACKEND: Final[str] = _select_scanner(os.environ.get(CHUNK_ENV_VAR, "auto") or "auto")
scan_chunks: ChunkScanner = CHUNK_SCANNERS[CHUNK_BACKEND]


class _Chunked:
    """Strict chunked decoding. A line longer than ``max_head`` is an error.

    One ``feed`` appends at most one Data, before the EndOfMessage if it comes: the payload of
    every chunk it decoded, joined (chunk boundaries carry no meaning and are not kept; the writer
    re-chunks). So a body of tiny chunks costs one event per read, not one per chunk.
    """

    __slots__ = ("_scan", "done", "limits", "remaining", "state", "status", "wait")

    def __init__(self, limits: Limits, status: int) -> None:
        self.limits = limits
        self.status = status
        self.state = _SIZE
        self.remaining = 0
        self.done = False
        self.wait = b""
        self._scan = scan_chunks

    def feed(self, buf: bytes, pos: int, events: list[Event]) -> int:
        n = len(buf)
        self.wait = b""
        parts: list[bytes] = []
        max_line = self.limits.max_head
        while pos < n and self.state != _TRAILERS:
            data, pos, self.state, self.remaining = self._scan(buf, pos, self.state, self.remaining, max_line)
            if data:
                parts.append(data)
            if pos == n:
                break
            after = self._step(buf, pos)
            if after == pos:
                break  # waiting for more bytes
            pos = after
        if parts:
            events.append(Data(parts[0] if len(parts) == 1 else b"".join(parts)))
        if self.state == _TRAILERS and pos < n:
            return self._trailers(buf, pos, events)
        return pos

    def _step(self, buf: bytes, pos: int) -> int:
        """Decide what the scanner stopped at (``pos < len(buf)``): a chunk line it left (the last
        chunk, or a line incomplete, too long or invalid) or the CRLF after chunk data (incomplete
        or invalid). Returns the new position (``pos`` itself: wait for more bytes) or raises."""
        n = len(buf)
        if self.state == _CRLF:
            if not buf.startswith(b"\r\n"[: n - pos], pos):
                raise ProtocolError("chunk data not followed by CRLF", self.status)
            if n - pos < 2:
                return pos
            self.state = _SIZE
            return pos + 2
        assert self.state == _SIZE, "the scanner stops inside chunk data only at the end of buf"
        end = buf.find(b"\r\n", pos, pos + self.limits.max_head)
        if end < 0:
            self._pending(buf, pos, b"\r\n", self.status)
            return pos
        m = _CHUNK_LINE.fullmatch(buf, pos, end)
        if m is None:
            raise ProtocolError(f"invalid chunk line {buf[pos:end][:64]!r}", self.status)
        self.remaining = int(m.group(1), 16)
        self.state = _DATA if self.remaining else _TRAILERS
        return end + 2

    def _trailers(self, buf: bytes, pos: int, events: list[Event]) -> int:
        too_large = 431 if self.status == 400 else self.status
        if buf[pos] == 0x0D:  # the empty line that ends the body, or nothing valid
            if len(buf) - pos == 1:
                return pos
            if buf[pos + 1] != 0x0A:
                raise ProtocolError("bare CR after the last chunk", self.status)
            end = pos + 2
            trailers: Headers = []
        else:
            end = buf.find(b"\r\n\r\n", pos, pos + self.limits.max_head)
            if end < 0:
                self._pending(buf, pos, b"\r\n\r\n", too_large)
                return pos
            end += 4
            if buf.count(b"\r\n", pos, end) - 1 > self.limits.max_headers:
                if _bare_lf(buf, pos, end):
                    raise ProtocolError("bare LF in trailers", self.status)
                raise ProtocolError("too many trailer fields", too_large)
            if _FIELDS_RE.fullmatch(buf, pos, end) is None:
                raise _explain(buf[pos:end], 0, self.status)
            trailers = _FIELD.findall(buf, pos, end)
        events.append(EndOfMessage(trailers))
        self.done = True
        return end

    def _pending(self, buf: bytes, pos: int, terminator: bytes, too_large: int) -> None:
        """No terminator within ``max_head``: raise if there never will be a valid one, else wait."""
        if _bare_lf(buf, pos, pos + self.limits.max_head):
            raise ProtocolError("bare LF in chunked framing", self.status)
        if len(buf) - pos >= self.limits.max_head:
            raise ProtocolError("chunk line or trailer section too large", too_large)
        self.wait = terminator


# --- Message loop --------------------------------------------------------------------------------


class _Mode(enum.Enum):
    HEAD = "head"  # expecting a head (a response parser: only once ``expect`` was called)
    BODY = "body"  # inside a body; ``_body`` decodes it
    HELD = "held"  # after an upgrade request or a 101: bytes are kept for ``detach``/``resume``
    CLOSED = "closed"  # after a message that ends the connection, an error, or EOF: bytes ignored
    DETACHED = "detached"  # ``detach`` was called; the parser is finished


_H = frozenset(b"H")
_NOTHING: frozenset[int] = frozenset()


class _Reader:
    """The loop both readers share. A subclass parses a head block and decides what follows it."""

    __slots__ = ("_after", "_body", "_buf", "_error", "_first", "_limits", "_mode", "_short", "_wait")
    _status = 400  # what every error answers, unless a rule says otherwise
    _defer_errors = True

    def __init__(self, limits: Limits, first: frozenset[int]) -> None:
        self._limits = limits
        self._mode = _Mode.HEAD
        self._buf = bytearray()  # bytes received and not consumed (kept only between calls)
        self._body: _Length | _Chunked | _UntilClose | None = None
        self._error: ProtocolError | None = None
        self._wait = b""  # the terminator whose absence stopped the last run, if any
        self._after = _Mode.HEAD  # the mode once the current message ends
        self._first = first  # the bytes a head may start with (others go to ``_skip``)
        # A block this short cannot hold more than ``max_headers`` lines (each takes 4 bytes or more).
        self._short = 4 * (limits.max_headers + 2)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._mode.name} buffered={len(self._buf)}>"

    def feed(self, data: bytes) -> list[Event]:
        if self._error is not None:
            raise self._error
        mode = self._mode
        if mode is not _Mode.HEAD and mode is not _Mode.BODY:
            if mode is _Mode.HELD:
                self._buf += data
            elif mode is _Mode.DETACHED:
                raise RuntimeError("feed() after detach()")
            return []
        if self._buf:
            old = len(self._buf)
            self._buf += data
            if self._still_waiting(old):
                return []
            buf = bytes(self._buf)
            self._buf = bytearray()
        else:
            buf = data
        events: list[Event] = []
        try:
            pos = self._run(buf, events)
        except ProtocolError as exc:
            self._error = exc
            self._mode = _Mode.CLOSED
            # Complete messages ahead of the error are returned; the error comes with the next call.
            if self._defer_errors:
                for i in range(len(events) - 1, -1, -1):
                    if isinstance(events[i], EndOfMessage):
                        return events[: i + 1]
            raise
        if pos < len(buf) and self._mode is not _Mode.CLOSED:
            self._buf = bytearray(memoryview(buf)[pos:])
        return events

    def feed_eof(self) -> list[Event]:
        if self._error is not None:
            raise self._error
        mode = self._mode
        if mode is _Mode.BODY:
            self._mode = _Mode.CLOSED
            if isinstance(self._body, _UntilClose):
                return [EndOfMessage()]
            self._error = ProtocolError("connection closed in the middle of a body", self._status)
            raise self._error
        if mode is _Mode.HEAD:
            self._mode = _Mode.CLOSED
            if self._buf:
                self._error = ProtocolError("connection closed in the middle of a head", self._status)
                raise self._error
        return []

    def detach(self) -> bytes:
        data = bytes(self._buf)
        self._buf = bytearray()
        self._mode = _Mode.DETACHED
        return data

    def _still_waiting(self, old: int) -> bool:
        """Whether bytes appended at ``old`` leave the awaited terminator absent (and nothing wrong).

        This spares re-scanning a pending head that trickles in a few bytes at a time.
        """
        wait, buf = self._wait, self._buf
        if not wait or len(buf) >= self._limits.max_head:
            return False
        if buf.find(wait, max(old - len(wait) + 1, 0)) >= 0:
            return False
        return buf.count(b"\n", old) == buf.count(b"\r\n", max(old - 1, 0))

    def _run(self, buf: bytes, events: list[Event]) -> int:
        pos, n = 0, len(buf)
        self._wait = b""
        while True:
            mode = self._mode
            if mode is _Mode.HEAD:
                if pos >= n:
                    return pos
                if buf[pos] not in self._first:
                    start, pos = pos, self._skip(buf, pos)
                    if pos == start:
                        return pos
                    continue
                max_head = self._limits.max_head
                end = buf.find(b"\r\n\r\n", pos, pos + max_head)
                if end < 0:
                    if _bare_lf(buf, pos, pos + max_head):
                        raise ProtocolError("bare LF in head", self._status)
                    if n - pos >= max_head:
                        raise ProtocolError("head larger than limits.max_head", self._too_large(buf, pos))
                    self._wait = b"\r\n\r\n"
                    return pos
                self._parse(buf[pos : end + 4], events)
                pos = end + 4
            elif mode is _Mode.BODY:
                body = self._body
                assert body is not None
                pos = body.feed(buf, pos, events)
                if not body.done:
                    self._wait = body.wait
                    return pos
                self._mode = self._after
                self._message_done()
            else:
                return pos

    def _begin(self, head: RequestHead | ResponseHead, events: list[Event]) -> None:
        """Emit ``head`` and set up its body."""
        events.append(head)
        body = head.body
        if body is Framing.NONE:
            events.append(EndOfMessage())
            self._mode = self._after
            self._message_done()
            return
        self._mode = _Mode.BODY
        if body is Framing.LENGTH:
            assert head.content_length is not None
            self._body = _Length(head.content_length)
        elif body is Framing.CHUNKED:
            self._body = _Chunked(self._limits, self._status)
        else:
            self._body = _UntilClose()

    def _check_lines(self, block: bytes) -> None:
        if len(block) > self._short and block.count(b"\r\n") - 2 > self._limits.max_headers:
            if _bare_lf(block, 0, len(block)):
                raise ProtocolError("bare LF in head", self._status)
            raise ProtocolError("too many header fields", 431 if self._status == 400 else self._status)

    def _skip(self, buf: bytes, pos: int) -> int:
        """A head cannot start at ``pos``: raise, or skip what may precede a head (new position)."""
        raise NotImplementedError

    def _too_large(self, buf: bytes, pos: int) -> int:
        return self._status

    def _parse(self, block: bytes, events: list[Event]) -> None:
        """Parse the head ``block`` and ``_begin`` its message."""
        raise NotImplementedError

    def _message_done(self) -> None:
        """The message whose head was parsed last has ended (its EndOfMessage is out)."""


class RequestReader(_Reader):
    """``proxy.h1.RequestParser`` over an engine's request tokenizer."""

    __slots__ = ("_declined", "_engine", "_skipped", "_tokenize")

    def __init__(self, tokenize: RequestTokenizer, limits: Limits, engine: str) -> None:
        super().__init__(limits, _TCHAR_BYTES)
        self._tokenize = tokenize
        self._engine = engine
        self._skipped = 0  # bytes of empty lines skipped since the last request
        self._declined = _Mode.HEAD  # the mode ``resume`` returns to after an upgrade request

    def resume(self) -> list[Event]:
        """The upgrade was declined: parse the held bytes (and later ones) as HTTP again."""
        if self._mode is not _Mode.HELD:
            raise RuntimeError(f"resume() while {self._mode.name}")
        self._mode = self._declined
        held = bytes(self._buf)
        self._buf = bytearray()
        return self.feed(held)

    def _skip(self, buf: bytes, pos: int) -> int:
        if buf[pos] == 0x0D:  # an empty line before the request line, maybe
            if pos + 1 == len(buf):
                return pos
            if buf[pos + 1] == 0x0A:
                self._skipped += 2
                if self._skipped <= self._limits.max_head:
                    return pos + 2
        raise ProtocolError("invalid request line")

    def _too_large(self, buf: bytes, pos: int) -> int:
        return 414 if buf.find(b"\r\n", pos, pos + self._limits.max_head) < 0 else 431

    def _parse(self, block: bytes, events: list[Event]) -> None:
        self._check_lines(block)
        m = _REQUEST_HEAD.fullmatch(block)
        if m is None:
            if _bare_lf(block, 0, len(block)):
                raise ProtocolError("bare LF in head")
            m = _REQUEST_LINE_RE.match(block)
            if m is None:
                raise ProtocolError("invalid request line")
        method, target = m.group(1, 2)
        if method not in KNOWN_METHODS:
            raise ProtocolError(f"unknown method {method[:32]!r}", 501)
        if target[0] != 0x2F or method == b"CONNECT":
            check_target(method, target)
        if m.end() != len(block):
            raise _explain(block, m.end(), 400)
        try:
            fields = self._tokenize(block)
        except ValueError as exc:
            try:
                fields = self._tokenize(_canonical_or_raise(block, exc, 400, self._engine))
            except ValueError as again:
                raise ProtocolError(f"{self._engine} refused the head: {again}") from again
        head = request_head(*fields)
        self._skipped = 0
        self._after = _Mode.HEAD if head.keep_alive else _Mode.CLOSED
        if head.upgrade is not None:
            self._declined, self._after = self._after, _Mode.HELD
        self._begin(head, events)


class ResponseReader(_Reader):
    """``proxy.h1.ResponseParser`` over an engine's response tokenizer."""

    __slots__ = ("_engine", "_final", "_methods", "_tokenize", "poisoned")
    _status = 502
    _defer_errors = False

    def __init__(self, tokenize: ResponseTokenizer, limits: Limits, engine: str) -> None:
        super().__init__(limits, _NOTHING)
        self._tokenize = tokenize
        self._engine = engine
        self._methods: deque[bytes] = deque()  # one per request whose final response is due
        self._final = True
        # Bytes came after the last expected response (a server out of sync): the responses
        # already complete stand, the rest is ignored, and the connection must never be reused.
        self.poisoned = False

    def expect(self, method: bytes) -> None:
        self._methods.append(method)
        self._first = _H

    def _skip(self, buf: bytes, pos: int) -> int:
        if not self._methods:
            self.poisoned = True
            self._mode = _Mode.CLOSED
            return len(buf)
        raise ProtocolError("invalid status line", 502)

    def _parse(self, block: bytes, events: list[Event]) -> None:
        self._check_lines(block)
        if _RESPONSE_HEAD.fullmatch(block) is None:
            if _bare_lf(block, 0, len(block)):
                raise ProtocolError("bare LF in head", 502)
            m = _STATUS_LINE_RE.match(block)
            if m is None:
                raise ProtocolError(f"invalid status line {block[:64]!r}", 502)
            raise _explain(block, m.end(), 502)
        method = self._methods[0]
        try:
            fields = self._tokenize(block, method)
        except ValueError as exc:
            try:
                fields = self._tokenize(_canonical_or_raise(block, exc, 502, self._engine), method)
            except ValueError as again:
                raise ProtocolError(f"{self._engine} refused the head: {again}", 502) from again
        head = response_head(*fields, method)
        status = head.status
        self._final = status >= 200 or status == 101
        if status == 101:  # the parser stops: what follows is the tunnel's
            events.append(head)
            self._mode = _Mode.HELD
            self._message_done()
            return
        self._after = _Mode.HEAD if head.keep_alive or not self._final else _Mode.CLOSED
        self._begin(head, events)

    def _message_done(self) -> None:
        # Interim responses (1xx but 101) answer the same request as the final one that follows.
        if self._final:
            self._methods.popleft()
            if not self._methods:
                self._first = _NOTHING


def _canonical_or_raise(block: bytes, exc: ValueError, status: int, engine: str) -> bytes:
    """The block to retry an engine with after it refused ``block`` (see ``canonical_head``)."""
    canonical = canonical_head(block, status)
    if canonical is None:
        raise ProtocolError(f"{engine} refused the head: {exc}", status) from exc
    return canonical
