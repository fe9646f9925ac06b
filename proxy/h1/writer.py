"""HTTP/1.1 serialization for the other side: pure functions from heads and chunks to bytes.

Contract:

- Every head it writes is re-serialized from the model, with CRLF line ends. (The muxes do not call
  it for a head whose ``wire`` bytes the native parser vouched for — ``proxy.message``: those are
  relayed as received, less the ``Connection`` line, which says the same as what is written here.)
  Hop-by-hop headers (``proxy.message.HOP_BY_HOP``) and the names the ``Connection`` header
  nominates are dropped, except that a nomination never drops ``Host``, ``Content-Length`` or
  ``Transfer-Encoding`` (framing is ours, and nominating it is a smuggling trick). The received
  ``Content-Length``/``Transfer-Encoding`` are always dropped too: the caller states the framing
  (``body``, ``content_length``) and the writer emits the one header that says it.
- Header names come from a parser that checked them (tokens). Values are checked here only for what
  could split a line (CR, LF, NUL): such a head raises ProtocolError (400 for a request head, 502
  for a response head), since the bytes came from the peer whose message is being re-written.
- ``data``/``end`` frame body bytes; an empty chunk is b"" (never a premature terminator).
- ``reply`` frames the proxy's own answers (``proxy.replies.Reply``: errors, errorfiles,
  ``http-request return``, redirects) for HTTP/1; ``simple_response`` is the older shortcut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from proxy.h1.base import ProtocolError
from proxy.message import (
    HOP_BY_HOP,
    Framing,
    Headers,
    RequestHead,
    ResponseHead,
    connection_tokens,
    header_value,
)
from proxy.replies import REASONS, Reply, error_body, reason

# The compiled field writer (ext/h1head.c), None where the extension is not built.
_fields: Callable[[Headers, frozenset[bytes]], tuple[bytes, int] | None] | None
try:
    from proxy._h1head import fields as _fields
except ImportError:  # pragma: no cover (the pure-Python loop of _copy_fields is the fallback)
    _fields = None

# What callers may pass as extra headers: a list (``Headers``) or a tuple.
Fields = Sequence[tuple[bytes, bytes]]

_FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding"})
_NEVER_NOMINATED = frozenset({b"host", b"content-length", b"transfer-encoding"})
_ALWAYS_DROPPED = HOP_BY_HOP | _FRAMING_NAMES
_TRAILER_DROPPED = _ALWAYS_DROPPED | {b"host"}
_STATUS_BYTES = {status: b"%d" % status for status in REASONS}
# Module constants for the members: an enum member lookup costs ~150 ns in Python 3.11.
_NONE, _LENGTH, _CHUNKED, _CLOSE = Framing.NONE, Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE


def request_head(
    head: RequestHead,
    *,
    body: Framing,
    content_length: int | None,
    keep_alive: bool,
    add: Fields = (),
    drop: frozenset[bytes] = frozenset(),
) -> bytes:
    """``METHOD target HTTP/1.1`` and the headers to send to a server (``drop``: lower-case names).

    An HTTP/1.0 request without Host stays HTTP/1.0 (``Connection: keep-alive`` when the server
    connection is to be kept), as HAProxy forwards it: as HTTP/1.1 it would need a Host, and an
    empty one (RFC 9112 §3.2's for a target without authority) is refused by common servers."""
    as_10 = head.version != b"1.1" and header_value([*head.headers, *add], b"host") is None
    parts = [head.method, b" ", head.target, b" HTTP/1.0\r\n" if as_10 else b" HTTP/1.1\r\n"]
    lines = 2 + _copy_fields(head.headers, drop, parts)
    lines += _add(add, parts)
    if body is _LENGTH:
        parts.append(b"Content-Length: %d\r\n" % _length(content_length))
        lines += 1
    elif body is _CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
        lines += 1
    elif body is _CLOSE:
        raise ValueError("a request body cannot be framed by closing the connection")
    if head.upgrade is not None:
        parts += (b"Upgrade: ", header_value(head.headers, b"upgrade") or head.upgrade, b"\r\n")
        parts.append(b"Connection: upgrade\r\n" if keep_alive else b"Connection: upgrade, close\r\n")
        lines += 2
    elif not keep_alive:
        parts.append(b"Connection: close\r\n")
        lines += 1
    elif as_10:
        parts.append(b"Connection: keep-alive\r\n")
        lines += 1
    parts.append(b"\r\n")
    return _checked(b"".join(parts), lines, 400)


def response_head(
    head: ResponseHead,
    *,
    body: Framing,
    content_length: int | None,
    keep_alive: bool,
    version: bytes = b"1.1",
    add: Fields = (),
) -> bytes:
    """The status line and headers to send to a client that spoke HTTP/``version``.

    The status line always says HTTP/1.1 (RFC 9110 §2.5: the highest version we conform to); the
    client's ``version`` decides the rest: a kept-alive HTTP/1.0 client gets
    ``Connection: keep-alive``, and cannot be sent chunks (ValueError).

    ``body`` NONE with a ``content_length`` writes that Content-Length (a HEAD or 304 response
    describing the representation); 1xx and 204 never carry framing headers.
    """
    status = head.status
    parts = [
        b"HTTP/1.1 ",
        _STATUS_BYTES.get(status) or b"%d" % status,
        b" ",
        head.reason or reason(status),
        b"\r\n",
    ]
    lines = 2 + _copy_fields(head.headers, frozenset(), parts)
    lines += _add(add, parts)
    if status >= 200 and status != 204:
        if body is _LENGTH or (body is _NONE and content_length is not None):
            parts.append(b"Content-Length: %d\r\n" % _length(content_length))
            lines += 1
        elif body is _CHUNKED:
            if version != b"1.1":
                raise ValueError("chunked transfer coding needs an HTTP/1.1 client")
            parts.append(b"Transfer-Encoding: chunked\r\n")
            lines += 1
    if status == 101:
        upgrade = header_value(head.headers, b"upgrade")
        if upgrade is not None:
            parts += (b"Upgrade: ", upgrade, b"\r\n")
            lines += 1
        parts.append(b"Connection: upgrade\r\n")
        lines += 1
    elif not keep_alive:
        parts.append(b"Connection: close\r\n")
        lines += 1
    elif version == b"1.0":
        parts.append(b"Connection: keep-alive\r\n")
        lines += 1
    parts.append(b"\r\n")
    return _checked(b"".join(parts), lines, 502)


def data(framing: Framing, chunk: bytes) -> bytes:
    """Body bytes as sent under ``framing`` (a chunk when CHUNKED; b"" stays b"")."""
    if framing is not _CHUNKED or not chunk:
        return chunk
    return b"%x\r\n%b\r\n" % (len(chunk), chunk)


def end(framing: Framing, trailers: Fields = ()) -> bytes:
    """What ends a body under ``framing``: the last chunk and trailers when CHUNKED, else b""."""
    if framing is not _CHUNKED:
        return b""
    if not trailers:
        return b"0\r\n\r\n"
    parts = [b"0\r\n"]
    lines = 2
    for name, value in trailers:
        if name.lower() not in _TRAILER_DROPPED:
            parts += (name, b": ", value, b"\r\n")
            lines += 1
    parts.append(b"\r\n")
    return _checked(b"".join(parts), lines, 502)


def reply(r: Reply, *, keep_alive: bool, version: bytes = b"1.1", head_only: bool = False) -> bytes:
    """A ``Reply`` for an HTTP/1 client: its status and headers (framing and hop-by-hop ones dropped:
    ours are a Content-Length and Connection), then its body (none for a HEAD request,
    ``head_only``). A header value with CR, LF or NUL raises ProtocolError (500)."""
    status = r.status
    status_bytes = _STATUS_BYTES.get(status) or b"%d" % status
    parts = [b"HTTP/1.1 ", status_bytes, b" ", r.reason or reason(status), b"\r\n"]
    lines = 1
    for name, value in r.headers:
        if name.lower() not in _ALWAYS_DROPPED:
            parts += (name, b": ", value, b"\r\n")
            lines += 1
    if status >= 200 and status not in (204, 304):
        parts.append(b"Content-Length: %d\r\n" % len(r.body))
        lines += 1
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
        lines += 1
    elif version == b"1.0":
        parts.append(b"Connection: keep-alive\r\n")
        lines += 1
    parts.append(b"\r\n")
    head = _checked(b"".join(parts), lines + 1, 500)
    return head if head_only or status in (204, 304) else head + r.body


def simple_response(
    status: int,
    *,
    body: bytes = b"",
    content_type: str | None = None,
    keep_alive: bool = False,
    extra: Fields = (),
    default_body: bool = True,
    version: bytes = b"1.1",
) -> bytes:
    """A complete response generated by the proxy, with Content-Length.

    With no ``body`` and ``default_body``, an error status (4xx/5xx) gets ``error_body(status)`` as
    ``text/html`` and ``Cache-Control: no-cache``, as HAProxy's own error pages do. ``version`` is
    the client's (an HTTP/1.0 client kept alive gets ``Connection: keep-alive``).
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason(status))]
    if not body and default_body and status >= 400:
        body = error_body(status)
        content_type = content_type or "text/html"
        lines.append(b"Cache-Control: no-cache\r\n")
    if status >= 200 and status not in (204, 304):
        lines.append(b"Content-Length: %d\r\n" % len(body))
    if content_type is not None:
        lines.append(b"Content-Type: %s\r\n" % content_type.encode("latin-1"))
    lines += [b"%s: %s\r\n" % field for field in extra]
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    elif version == b"1.0":
        lines.append(b"Connection: keep-alive\r\n")
    lines.append(b"\r\n")
    return _checked(b"".join(lines), len(lines), 500) + body


def _copy_fields(headers: Headers, drop: frozenset[bytes], parts: list[bytes]) -> int:
    """Append the end-to-end headers of ``headers`` to ``parts``; return how many lines.

    The compiled ``fields`` (``ext/h1head.c``) does it in one call when it can (no Connection
    header, nothing to refuse); this loop is its fallback and its reference."""
    if _fields is not None:
        done = _fields(headers, drop)
        if done is not None:
            parts.append(done[0])
            return done[1]
    skip = _ALWAYS_DROPPED
    if drop:
        skip = skip | drop
    connection = header_value(headers, b"connection")
    if connection is not None:
        nominated = connection_tokens(headers) - _NEVER_NOMINATED
        if nominated:
            skip = skip | nominated
    lines = 0
    for name, value in headers:
        if name.lower() not in skip:
            parts += (name, b": ", value, b"\r\n")
            lines += 1
    return lines


def _add(add: Fields, parts: list[bytes]) -> int:
    for name, value in add:
        parts += (name, b": ", value, b"\r\n")
    return len(add)


def _length(content_length: int | None) -> int:
    if content_length is None or content_length < 0:
        raise ValueError(f"invalid content_length {content_length!r}")
    return content_length


def _checked(head: bytes, lines: int, status: int) -> bytes:
    """``head`` if it has exactly ``lines`` CRLF-ended lines and no NUL (nothing was injected)."""
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        raise ProtocolError("CR, LF or NUL in a header to write", status)
    return head
