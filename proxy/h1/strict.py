"""The proxy's HTTP/1 rules, shared by all engines: head semantics, framing and the message loop.

Theory of operation. Bytes go into a ``RequestReader`` or ``ResponseReader``. The reader finds a
complete head block (start line through the empty line, CRLF only) within ``limits.max_head``,
counts its lines, and runs the *grammar scan* over the raw bytes (one regular expression, from
``proxy.h1.grammar``). Only a block that passes goes to the engine, whose sole job is to turn it
into fields (method, target, version, headers). ``request_head``/``response_head`` then apply the
*semantic* rules (Host, Content-Length, Transfer-Encoding, Connection) and decide the framing; the
body decoders of ``proxy.h1.bodies`` (``_Length``, ``_Chunked``, ``_UntilClose``) decode what
follows. The engines never see a body, and everything that could make two engines, or two ways of
splitting the same bytes, disagree is decided by these three modules:

- ``proxy.h1.grammar``: the head grammar (regular expressions, known methods, request-target forms,
  the canonical form of a head an engine refused);
- ``proxy.h1.bodies``: the body decoders and the chunk scanners (C or Python, ``POOLPROXY_CHUNKED``);
- here: the semantics (``request_head``, ``response_head``) and the message loop (``_Reader``,
  ``RequestReader``, ``ResponseReader``).

The ``native`` engine (``proxy.h1.engine_native``) subclasses the two readers: its C scanner does
the grammar scan, the tokenizing and the collection of the framing headers in one call
(``request_head``/``response_head`` take that collection as ``found``), and its ``feed`` parses a
head that starts the data straight away, handing what follows to ``_run_from`` and the message to
``_accept``. Whatever the scanner does not accept goes through ``_parse`` here, so the errors, and
every rule above, stay the same for all engines.

Plain and bare heads (``ext/h1head.c`` defines both). ``_parse`` builds a *plain* head (simple
framing headers: ``plain_request_facts``, ``plain_facts``) from its three framing facts
(``plain_request``, ``plain_response``, which the native engine uses too) instead of running the
general rules. For an engine whose tokenizer gives the values as received (``as_received``:
native, llhttp), a *bare* head (plain, HTTP/1.1, no other hop-by-hop header) also gets its block,
less its Connection line, as its ``wire`` (``_wire``): the muxes relay it instead of re-serialising
it. ``tests/test_h1_parse.py``'s differential holds every engine to the same heads and every
engine that vouches to the same ``wire`` bytes, head for head.

Statuses: 400 for a request, 502 for a response, except (all decided before the engine runs) a
head over ``max_head`` (431; 414 when not even the request line fits), more than ``max_headers``
header or trailer lines (431), an unknown method (501: a valid token that llhttp does not know)
and a well-formed ``CONNECT host:port`` (405: the proxy does not tunnel CONNECT). A bare LF, seen
as soon as it arrives, wins over every other verdict, so splitting never changes the answer.

Choices where HAProxy or the RFCs leave room (``tests/data/h1`` pins each one; the grammar's are
listed in ``proxy.h1.grammar``):

- Content-Length: a list or repeated headers collapse when every element is the same string
  (``5, 5``) and are rejected otherwise (``5, 05`` too, as h11 does);
- Transfer-Encoding: one header, value ``chunked`` (any case); never with Content-Length, never in
  an HTTP/1.0 message;
- Host: required in HTTP/1.1 unless the target is in absolute-form; with an absolute-form target
  (HTTP/1.0 too) Host must name the target's authority (400 otherwise, as HAProxy) and is added
  when absent; the target is forwarded in absolute-form, as HAProxy does, less an explicit
  default port (``_absolute_form`` has the details);
- empty lines before a request line are skipped (RFC 9112 §2.2), at most ``max_head`` bytes.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Final

from proxy.h1.base import Limits, ProtocolError
from proxy.h1.bodies import _Chunked, _Length, _UntilClose
from proxy.h1.grammar import (
    _ABSOLUTE_FORM,
    _CONNECTION_LINE,
    _DEFAULT_PORT,
    _HOST,
    _REQUEST_HEAD,
    _REQUEST_LINE_RE,
    _RESPONSE_HEAD,
    _SIMPLE_HOST,
    _STATUS_LINE_RE,
    _TCHAR_BYTES,
    KNOWN_METHODS,
    _bare_lf,
    _content_length_value,
    _explain,
    canonical_head,
    check_target,
)
from proxy.message import HOP_BY_HOP, EndOfMessage, Event, Framing, Headers, RequestHead, ResponseHead

# An engine: head block -> (method or status, target or reason, version, headers). ValueError if
# the engine refuses the block.
RequestTokenizer = Callable[[bytes], tuple[bytes, bytes, bytes, Headers]]
ResponseTokenizer = Callable[[bytes, bytes], tuple[int, bytes, bytes, Headers]]

# --- Semantics -----------------------------------------------------------------------------------

# The values of the framing headers, by lower-case name (``_framing_fields``).
Found = dict[bytes, list[bytes]]
# The members as module constants (see ``_HEAD`` below).
_NONE: Final = Framing.NONE
_LENGTH: Final = Framing.LENGTH
_CHUNKED: Final = Framing.CHUNKED
_CLOSE: Final = Framing.CLOSE

_FRAMING_NAMES: Final = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect"}
)


def request_head(
    method: bytes, target: bytes, version: bytes, headers: Headers, found: Found | None = None
) -> RequestHead:
    """Apply the request rules to tokenized fields and decide the framing. Raises ProtocolError(400).

    ``found``: ``_framing_fields(headers)``, when the caller has it already (the native scanner).
    """
    if found is None:
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
    body, length = _NONE, None
    te = found.get(b"transfer-encoding")
    if te is not None:
        body = _CHUNKED
        if _chunked(te, found, version, 400):
            headers = _canonical(headers, b"transfer-encoding", b"chunked")
    elif b"content-length" in found:
        body = _LENGTH
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
    status: int, reason: bytes, version: bytes, headers: Headers, method: bytes, found: Found | None = None
) -> ResponseHead:
    """Apply the response rules (for a request with ``method``) and decide the framing. Raises 502.

    ``found``: as for ``request_head``.
    """
    if found is None:
        found = _framing_fields(headers)
    te = found.get(b"transfer-encoding")
    if te is not None and _chunked(te, found, version, 502):
        headers = _canonical(headers, b"transfer-encoding", b"chunked")
    length = None
    if b"content-length" in found:
        length, headers = _length(found[b"content-length"], headers, 502)
    keep_alive = _keep_alive(found.get(b"connection"), version)
    if status < 200 or status == 204:
        body, length = _NONE, None
    elif method == b"HEAD" or status == 304:
        body = _NONE  # ``length``, if any, is the representation's: the writer passes it on
    elif te is not None:
        body = _CHUNKED
    elif length is not None:
        body = _LENGTH
    else:
        body, keep_alive = _CLOSE, False
    reason = reason.rstrip(b" \t")  # h11 keeps trailing whitespace, llhttp drops some
    return ResponseHead(status, reason, version, headers, body, length, keep_alive)


def _framing_fields(headers: Headers) -> Found:
    """The values of the headers the rules look at, by lower-case name, in one pass."""
    return _fields_and_hop(headers)[0]


# The hop-by-hop names that are not framing names (``Upgrade`` is both: it is in ``found``).
_HOP_ONLY: Final = HOP_BY_HOP - _FRAMING_NAMES
_CONNECTION_CODES: Final = {b"close": 1, b"keep-alive": 2}
_OWS: Final = frozenset(b" \t")
_V11: Final = b"1.1"

# Plain framing: (Content-Length or None, chunked, Connection: 0 absent, 1 close, 2 keep-alive).
Facts = tuple[int | None, bool, int]


def _fields_and_hop(headers: Headers) -> tuple[Found, bool]:
    """``_framing_fields(headers)``, and whether a hop-by-hop header outside them is present."""
    found: Found = {}
    hop = False
    for name, value in headers:
        lname = name.lower()
        if lname in _FRAMING_NAMES:
            if lname in found:
                found[lname].append(value)
            else:
                found[lname] = [value]
        elif lname in _HOP_ONLY:
            hop = True
    return found, hop


# --- Plain and bare heads ----------------------------------------------------------------------
#
# ``ext/h1head.c`` defines them (the native scanner decides them in C; these functions are the same
# rules for the heads the shared reader tokenizes). A *plain* head's framing follows from three
# facts, and its rules change nothing in it: ``plain_request``/``plain_response`` build the head
# from them as ``request_head``/``response_head`` would (``tests/test_h1_native.py`` and the
# engines' differential hold them equal). A *bare* head is a plain HTTP/1.1 head with no hop-by-hop
# header but the plain framing ones: its block (less its Connection line) is its ``wire``.


def plain_facts(found: Found, version: bytes) -> Facts | None:
    """The facts of plain framing headers, else None: Content-Length absent or one header of 1-15
    digits; Transfer-Encoding absent or one header exactly ``chunked`` in HTTP/1.1 without
    Content-Length; Connection absent or one header of one token, ``close`` or ``keep-alive``."""
    cl = found.get(b"content-length")
    length = None
    if cl is not None:
        digits = cl[0]
        if len(cl) != 1 or len(digits) > 15 or not digits.isdigit():  # bytes: ASCII digits only
            return None
        length = int(digits)
    te = found.get(b"transfer-encoding")
    if te is not None and (len(te) != 1 or te[0] != b"chunked" or cl is not None or version != _V11):
        return None
    connection = found.get(b"connection")
    if connection is None:
        return length, te is not None, 0
    if len(connection) != 1:
        return None
    code = _CONNECTION_CODES.get(connection[0].lower())
    return None if code is None else (length, te is not None, code)


def plain_request_facts(method: bytes, target: bytes, version: bytes, found: Found) -> Facts | None:
    """``plain_facts`` for a request, which is plain only with an origin-form target (so not
    CONNECT), no Expect, and one simple Host (or none in HTTP/1.0)."""
    if target[0] != 0x2F or method == b"CONNECT" or b"expect" in found:
        return None
    hosts = found.get(b"host")
    if hosts is None:
        if version == _V11:
            return None
    elif len(hosts) != 1 or _SIMPLE_HOST.fullmatch(hosts[0]) is None:
        return None
    return plain_facts(found, version)


def plain_request(
    method: bytes, target: bytes, version: bytes, headers: Headers, facts: Facts, wire: bytes | None
) -> RequestHead:
    """The head of a plain request (``request_head``'s rules over the facts)."""
    length, chunked, connection = facts
    keep_alive = version == _V11 if not connection else connection == 2
    if chunked:
        return RequestHead(method, target, version, headers, _CHUNKED, None, keep_alive, None, False, wire)
    if length is None:
        return RequestHead(method, target, version, headers, _NONE, None, keep_alive, None, False, wire)
    return RequestHead(method, target, version, headers, _LENGTH, length, keep_alive, None, False, wire)


def plain_response(
    status: int,
    reason: bytes,
    version: bytes,
    headers: Headers,
    method: bytes,
    facts: Facts,
    wire: bytes | None,
) -> ResponseHead:
    """The head of a plain response to ``method`` (``response_head``'s rules over the facts;
    ``reason`` already without trailing SP/HT)."""
    length, chunked, connection = facts
    keep_alive = version == _V11 if not connection else connection == 2
    if status < 200 or status == 204:
        body, length = _NONE, None
    elif method == b"HEAD" or status == 304:
        body = _NONE
    elif chunked:
        body = _CHUNKED
    elif length is not None:
        body = _LENGTH
    else:
        body, keep_alive = _CLOSE, False
    return ResponseHead(status, reason, version, headers, body, length, keep_alive, wire)


def _wire(block: bytes, version: bytes, found: Found, hop: bool, connection: int) -> bytes | None:
    """A plain head's ``wire``: ``block`` less its Connection line if it is bare, else None."""
    if hop or version != _V11 or b"upgrade" in found:
        return None
    return block if not connection else _CONNECTION_LINE.sub(b"", block, count=1)


def _reason_kept(block: bytes) -> bool:
    """Whether a status line has a reason phrase with no SP or HT after it (as a bare head needs)."""
    eol = block.find(b"\r\n")
    return eol > 13 and block[12] == 0x20 and block[eol - 1] not in _OWS


def _chunked(te: list[bytes], found: Found, version: bytes, status: int) -> bool:
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


# --- Message loop --------------------------------------------------------------------------------


class _Mode(enum.Enum):
    HEAD = "head"  # expecting a head (a response parser: only once ``expect`` was called)
    BODY = "body"  # inside a body; ``_body`` decodes it
    HELD = "held"  # after an upgrade request or a 101: bytes are kept for ``detach``/``resume``
    CLOSED = "closed"  # after a message that ends the connection, an error, or EOF: bytes ignored
    DETACHED = "detached"  # ``detach`` was called; the parser is finished


# Module constants for the members: an enum member lookup (``_Mode.HEAD``) costs ~150 ns in
# Python 3.11, and the loop makes several per message.
_HEAD: Final = _Mode.HEAD
_BODY: Final = _Mode.BODY
_HELD: Final = _Mode.HELD
_CLOSED: Final = _Mode.CLOSED
_DETACHED: Final = _Mode.DETACHED

_H: Final = frozenset(b"H")
_NOTHING: Final[frozenset[int]] = frozenset()


_SHORT: Final[dict[int, int]] = {}  # max_headers -> _Reader._short


class _Reader:
    """The loop both readers share. A subclass parses a head block and decides what follows it."""

    __slots__ = ("_after", "_body", "_buf", "_error", "_first", "_limits", "_mode", "_short", "_wait")
    _status = 400  # what every error answers, unless a rule says otherwise
    _start_line = _REQUEST_LINE_RE  # the grammar of the first line (a subclass's)
    _bad_start_line = "invalid request line"
    _defer_errors = True

    def __init__(self, limits: Limits, first: frozenset[int]) -> None:
        self._limits = limits
        self._mode = _HEAD
        # Bytes received and not consumed (kept only between calls): a bytearray while there are
        # some, the shared b"" while there are none (an empty bytearray costs 56 bytes a connection).
        self._buf: bytearray | bytes = b""
        self._body: _Length | _Chunked | _UntilClose | None = None
        self._error: ProtocolError | None = None
        self._wait = b""  # the terminator whose absence stopped the last run, if any
        self._after = _HEAD  # the mode once the current message ends
        self._first = first  # the bytes a head may start with (others go to ``_skip``)
        # A block this short cannot hold more than ``max_headers`` lines (each takes 4 bytes or more).
        # One int object for every reader with the same limit (a new one is 32 bytes a connection).
        self._short = _SHORT.setdefault(limits.max_headers, 4 * (limits.max_headers + 2))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._mode.name} buffered={len(self._buf)}>"

    def feed(self, data: bytes) -> list[Event]:
        if self._error is not None:
            raise self._error
        mode = self._mode
        if not data and mode is _HEAD and not self._buf:
            return []  # between messages with nothing buffered: nothing to find
        if mode is not _HEAD and mode is not _BODY:
            if mode is _HELD:
                if self._buf:
                    self._buf += data
                else:
                    self._buf = bytearray(data)
            elif mode is _DETACHED:
                raise RuntimeError("feed() after detach()")
            return []
        if self._buf:
            old = len(self._buf)
            self._buf += data
            if self._still_waiting(old):
                return []
            buf = bytes(self._buf)
            self._buf = b""
        else:
            buf = data
        return self._run_from(buf, 0, [])

    def _run_from(self, buf: bytes, pos: int, events: list[Event]) -> list[Event]:
        """Run the loop over ``buf[pos:]`` after ``events``; keep what is left. ``feed``'s second half."""
        try:
            pos = self._run(buf, events, pos)
        except ProtocolError as exc:
            self._error = exc
            self._mode = _CLOSED
            # Complete messages ahead of the error are returned; the error comes with the next call.
            if self._defer_errors:
                for i in range(len(events) - 1, -1, -1):
                    if isinstance(events[i], EndOfMessage):
                        return events[: i + 1]
            raise
        if pos < len(buf) and self._mode is not _CLOSED:
            self._buf = bytearray(memoryview(buf)[pos:])
        return events

    def feed_eof(self) -> list[Event]:
        if self._error is not None:
            raise self._error
        mode = self._mode
        if mode is _BODY:
            self._mode = _CLOSED
            if isinstance(self._body, _UntilClose):
                return [EndOfMessage()]
            self._error = ProtocolError("connection closed in the middle of a body", self._status)
            raise self._error
        if mode is _HEAD:
            self._mode = _CLOSED
            if self._buf:
                self._error = ProtocolError("connection closed in the middle of a head", self._status)
                raise self._error
        return []

    def detach(self) -> bytes:
        data = bytes(self._buf)
        self._buf = b""
        self._mode = _DETACHED
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
        if self._mode is _HEAD and buf.find(b"\r\n", 0, old) < 0 and buf.find(b"\r\n", max(old - 1, 0)) >= 0:
            return False  # the start line just completed: ``_run`` checks it
        return buf.count(b"\n", old) == buf.count(b"\r\n", max(old - 1, 0))

    def _run(self, buf: bytes, events: list[Event], pos: int) -> int:
        n = len(buf)
        self._wait = b""
        while True:
            mode = self._mode
            if mode is _HEAD:
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
                    self._check_start_line(buf, pos)
                    if n - pos >= max_head:
                        raise ProtocolError("head larger than limits.max_head", self._too_large(buf, pos))
                    self._wait = b"\r\n\r\n"
                    return pos
                self._parse(buf[pos : end + 4], events)
                pos = end + 4
            elif mode is _BODY:
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
        if body is _NONE or (body is _LENGTH and not head.content_length):
            events.append(EndOfMessage())  # (``_Length(0)`` would end at once, with the same events)
            self._mode = self._after
            self._message_done()
            return
        self._mode = _BODY
        if body is _LENGTH:
            assert head.content_length is not None
            self._body = _Length(head.content_length)
        elif body is _CHUNKED:
            self._body = _Chunked(self._limits, self._status)
        else:
            self._body = _UntilClose()

    def _check_lines(self, block: bytes) -> None:
        if len(block) > self._short and block.count(b"\r\n") - 2 > self._limits.max_headers:
            if _bare_lf(block, 0, len(block)):
                raise ProtocolError("bare LF in head", self._status)
            self._check_start_line(block, 0)  # a bad start line is refused as soon as it is complete
            raise ProtocolError("too many header fields", 431 if self._status == 400 else self._status)

    def _check_start_line(self, buf: bytes, pos: int) -> None:
        """Raise if the start line at ``pos`` is complete and invalid (checked while the rest of a
        head is awaited, so that garbage is answered at once, not when the head times out)."""
        eol = buf.find(b"\r\n", pos, pos + self._limits.max_head)
        if eol >= 0 and self._start_line.match(buf, pos) is None:
            raise ProtocolError(self._bad_start_line, self._status)

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
    """``proxy.h1.RequestParser`` over an engine's request tokenizer.

    ``as_received``: the tokenizer gives the header values as they are in the block (less the OWS
    around them), so a *bare* head (``_wire``) can carry the block as its ``wire``. An engine
    whose tokenizer rewrites values (h11 merges Content-Length lists, lower-cases ``chunked``) says
    False, and its heads are always re-serialised.
    """

    __slots__ = ("_as_received", "_declined", "_engine", "_skipped", "_tokenize")

    def __init__(
        self, tokenize: RequestTokenizer, limits: Limits, engine: str, *, as_received: bool = False
    ) -> None:
        super().__init__(limits, _TCHAR_BYTES)
        self._tokenize = tokenize
        self._engine = engine
        self._as_received = as_received
        self._skipped = 0  # bytes of empty lines skipped since the last request
        self._declined = _HEAD  # the mode ``resume`` returns to after an upgrade request

    def resume(self) -> list[Event]:
        """The upgrade was declined: parse the held bytes (and later ones) as HTTP again."""
        if self._mode is not _HELD:
            raise RuntimeError(f"resume() while {self._mode.name}")
        self._mode = self._declined
        held = bytes(self._buf)
        self._buf = b""
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
        as_received = self._as_received
        try:
            fields = self._tokenize(block)
        except ValueError as exc:
            as_received = False  # the fields are the canonical block's (``canonical_head``)
            try:
                fields = self._tokenize(_canonical_or_raise(block, exc, 400, self._engine))
            except ValueError as again:
                raise ProtocolError(f"{self._engine} refused the head: {again}") from again
        method, target, version, headers = fields
        found, hop = _fields_and_hop(headers)
        facts = plain_request_facts(method, target, version, found)
        if facts is None:
            self._accept(request_head(method, target, version, headers, found), events)
            return
        wire = _wire(block, version, found, hop, facts[2]) if as_received else None
        self._accept(plain_request(method, target, version, headers, facts, wire), events)

    def _accept(self, head: RequestHead, events: list[Event]) -> None:
        """The message of ``head`` begins: emit it and set what follows."""
        self._skipped = 0
        self._after = _HEAD if head.keep_alive else _CLOSED
        if head.upgrade is not None:
            self._declined, self._after = self._after, _HELD
        self._begin(head, events)


class ResponseReader(_Reader):
    """``proxy.h1.ResponseParser`` over an engine's response tokenizer (``as_received``: as for
    ``RequestReader``)."""

    __slots__ = ("_as_received", "_engine", "_final", "_methods", "_tokenize", "poisoned")
    _status = 502
    _start_line = _STATUS_LINE_RE
    _bad_start_line = "invalid status line"
    _defer_errors = False

    def __init__(
        self, tokenize: ResponseTokenizer, limits: Limits, engine: str, *, as_received: bool = False
    ) -> None:
        super().__init__(limits, _NOTHING)
        self._tokenize = tokenize
        self._engine = engine
        self._as_received = as_received
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
            self._mode = _CLOSED
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
        as_received = self._as_received
        try:
            fields = self._tokenize(block, method)
        except ValueError as exc:
            as_received = False  # the fields are the canonical block's (``canonical_head``)
            try:
                fields = self._tokenize(_canonical_or_raise(block, exc, 502, self._engine), method)
            except ValueError as again:
                raise ProtocolError(f"{self._engine} refused the head: {again}", 502) from again
        status, reason, version, headers = fields
        found, hop = _fields_and_hop(headers)
        facts = plain_facts(found, version)
        if facts is None:
            self._accept(response_head(status, reason, version, headers, method, found), events)
            return
        wire = _wire(block, version, found, hop, facts[2]) if as_received and _reason_kept(block) else None
        self._accept(
            plain_response(status, reason.rstrip(b" \t"), version, headers, method, facts, wire), events
        )

    def _accept(self, head: ResponseHead, events: list[Event]) -> None:
        """The response ``head`` (to the request ``_methods[0]``) begins: emit it, set what follows."""
        status = head.status
        self._final = status >= 200 or status == 101
        if status == 101:  # the parser stops: what follows is the tunnel's
            events.append(head)
            self._mode = _HELD
            self._message_done()
            return
        self._after = _HEAD if head.keep_alive or not self._final else _CLOSED
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
