"""HTTP/1.1 serialization for the other side: pure functions from heads and chunks to bytes.

Contract:

- Every head is re-serialized from the model (never raw bytes passed through), with CRLF line ends.
  Hop-by-hop headers (``proxy.message.HOP_BY_HOP``) and the names the ``Connection`` header
  nominates are dropped, except that a nomination never drops ``Host``, ``Content-Length`` or
  ``Transfer-Encoding`` (framing is ours, and nominating it is a smuggling trick). The received
  ``Content-Length``/``Transfer-Encoding`` are always dropped too: the caller states the framing
  (``body``, ``content_length``) and the writer emits the one header that says it.
- Header names come from a parser that checked them (tokens). Values are checked here only for what
  could split a line (CR, LF, NUL): such a head raises ProtocolError (400 for a request head, 502
  for a response head), since the bytes came from the peer whose message is being re-written.
- ``data``/``end`` frame body bytes; an empty chunk is b"" (never a premature terminator).
- ``simple_response`` builds the proxy's own answers (errors, ``http-request return``).
"""

from __future__ import annotations

from collections.abc import Sequence

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

REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    103: b"Early Hints",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    203: b"Non-Authoritative Information",
    204: b"No Content",
    205: b"Reset Content",
    206: b"Partial Content",
    300: b"Multiple Choices",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable",
    417: b"Expectation Failed",
    421: b"Misdirected Request",
    422: b"Unprocessable Content",
    425: b"Too Early",
    426: b"Upgrade Required",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}

# One sentence per status the proxy generates itself (our wording).
_ERROR_TEXT: dict[int, bytes] = {
    400: b"The request could not be understood.",
    403: b"Access to this resource is not allowed.",
    404: b"The requested resource could not be found.",
    405: b"This method is not allowed here.",
    408: b"The request was not received in time.",
    413: b"The request body is larger than allowed.",
    414: b"The request target is longer than allowed.",
    429: b"Too many requests; please slow down.",
    431: b"The request header fields are larger than allowed.",
    500: b"The proxy met an internal error.",
    501: b"The proxy does not support what this request asks for.",
    502: b"The server returned an invalid or incomplete response.",
    503: b"No server is available for this request right now.",
    504: b"The server did not respond in time.",
}

# What callers may pass as extra headers: a list (``Headers``) or a tuple.
Fields = Sequence[tuple[bytes, bytes]]

_FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding"})
_NEVER_NOMINATED = frozenset({b"host", b"content-length", b"transfer-encoding"})
_ALWAYS_DROPPED = HOP_BY_HOP | _FRAMING_NAMES
_TRAILER_DROPPED = _ALWAYS_DROPPED | {b"host"}
_STATUS_BYTES = {status: b"%d" % status for status in REASONS}
# Module constants for the members: an enum member lookup costs ~150 ns in Python 3.11.
_NONE, _LENGTH, _CHUNKED, _CLOSE = Framing.NONE, Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE


def reason(status: int) -> bytes:
    """The standard reason phrase for ``status`` (b"" when there is none)."""
    return REASONS.get(status, b"")


def error_body(status: int) -> bytes:
    """A small HTML page for a status the proxy answers itself (generic for unlisted ones)."""
    text = _ERROR_TEXT.get(status, b"The request could not be completed.")
    return b"<html><body><h1>%d %s</h1>\n%s\n</body></html>\n" % (status, reason(status), text)


def request_head(
    head: RequestHead,
    *,
    body: Framing,
    content_length: int | None,
    keep_alive: bool,
    add: Fields = (),
    drop: frozenset[bytes] = frozenset(),
) -> bytes:
    """``METHOD target HTTP/1.1`` and the headers to send to a server (``drop``: lower-case names)."""
    parts = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
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
    """Append the end-to-end headers of ``headers`` to ``parts``; return how many lines."""
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
