"""HTTP/2 header blocks to and from the neutral message model (``proxy.message``): pure functions.

Requests (RFC 9113 §8.3 read as HAProxy does):

- ``:method``, ``:path``, ``:scheme`` and ``:authority`` become the request line and ``Host``:
  ``:authority`` is added as ``Host`` when the block has none (a ``Host`` that is present stays);
  ``:scheme`` is kept on the head for the logs only (``RequestHead.scheme`` does not exist: the
  caller keeps it). ``CONNECT`` (no ``:path``) is answered 405, as HTTP/1's CONNECT is.
- Several ``cookie`` fields are joined with ``"; "`` into one (§8.2.3), at the place of the first.
- The block is checked here, in the same pass (the ``h2`` library's own inbound checks are off:
  they cost a fifth of a request): pseudo-headers known, once each, before the fields, ``:method``,
  ``:scheme`` and ``:path`` present; field names lower-case tokens; values without NUL, CR, LF or
  surrounding whitespace; no connection-specific field; ``te`` only ``trailers`` (it is not
  forwarded: the HTTP/1 writer drops hop-by-hop fields). A violation is malformed
  (``RequestError.malformed``: the stream is reset with PROTOCOL_ERROR).
- Framing: a block that ends the stream has no body; else ``content-length`` gives a LENGTH body,
  and without one the body has no known length (CHUNKED, re-framed by the HTTP/1 writer).
- ``expect: 100-continue`` sets ``expect_continue`` (the header goes to the server, whose 100 comes
  back as an interim response).
- Limits: more fields than ``max_headers`` or more than ``max_head`` bytes (names, values and
  ``": "`` + CRLF each, as an HTTP/1 head would count them) is ``RequestError(431)``.

Responses: ``response_fields`` makes the block for a neutral ``ResponseHead`` (``:status`` first,
names lower-cased, the connection-specific fields and the ones ``Connection`` nominates dropped, the
framing fields replaced by the ``content-length`` the head states); ``reply_fields`` the same for the
proxy's own ``Reply``; ``trailer_fields`` the trailers (no pseudo, framing or hop-by-hop field).
"""

from __future__ import annotations

import re
from typing import Final

from proxy.message import HOP_BY_HOP, Framing, Headers, RequestHead, ResponseHead, connection_tokens
from proxy.replies import Reply

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})
_DROPPED: Final = HOP_BY_HOP | _FRAMING
_NEVER_NOMINATED: Final = frozenset({b"content-length", b"transfer-encoding"})
_VERSION: Final = b"2.0"


class RequestError(Exception):
    """A request the stream must answer with ``status`` (no stream is opened for it); ``malformed``
    (RFC 9113 §8.1.1): the stream is reset with PROTOCOL_ERROR instead of answered."""

    def __init__(self, message: str, status: int, *, malformed: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.malformed = malformed


_NAME: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")  # a token, lower-case (RFC 9113 §8.2.1)
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
_PSEUDO: Final = frozenset({b":method", b":path", b":authority", b":scheme"})
# Connection-specific fields are malformed in HTTP/2 (RFC 9113 §8.2.2); ``te`` is checked apart.
_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def _malformed(why: str) -> RequestError:
    return RequestError(why, 400, malformed=True)


def check_field(name: bytes, value: bytes) -> None:
    """A regular field (a header or a trailer) as RFC 9113 §8.2 allows it; raises RequestError."""
    if _NAME.fullmatch(name) is None:
        raise _malformed(f"invalid field name {name[:40]!r}")
    if value and _BAD_VALUE.search(value) is not None:
        raise _malformed(f"invalid value of {name[:40]!r}")
    if name in _CONNECTION_SPECIFIC:
        raise _malformed(f"connection-specific field {name!r}")


def check_trailers(fields: Headers) -> Headers:
    """The trailers of a request, checked (no pseudo-header, valid fields)."""
    for name, value in fields:
        if name[:1] == b":":
            raise _malformed("pseudo-header in trailers")
        check_field(name, value)
    return list(fields)


def request_head(
    fields: Headers, *, end_stream: bool, max_head: int, max_headers: int
) -> tuple[RequestHead, bytes]:
    """The neutral head of a request header block, and its ``:scheme``; raises ``RequestError``."""
    if len(fields) > max_headers + 4:  # the four pseudo-headers do not count, as in HTTP/1
        raise RequestError("too many header fields", 431)
    method = path = authority = scheme = b""
    headers: Headers = []
    host = False
    cookie_at = -1
    cookies: list[bytes] = []
    size = 0
    expect = False
    content_length: int | None = None
    pseudo: set[bytes] = set()
    regular = False
    for name, value in fields:
        if name[:1] == b":":
            if regular or name not in _PSEUDO or name in pseudo:
                raise _malformed(f"pseudo-header {name[:40]!r} unknown, repeated or after a field")
            pseudo.add(name)
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            else:
                scheme = value
            size += len(value)
            continue
        regular = True
        check_field(name, value)
        size += len(name) + len(value) + 4
        if name == b"cookie":
            if cookie_at < 0:
                cookie_at = len(headers)
                headers.append((b"cookie", b""))
            cookies.append(value)
            continue
        if name == b"host":
            host = True
        elif name == b"te" and value.lower() != b"trailers":
            raise _malformed("te other than trailers")
        elif name == b"content-length":
            if not value.isdigit() or len(value) > 18 or content_length not in (None, int(value)):
                raise RequestError("invalid content-length", 400)
            content_length = int(value)
        elif name == b"expect" and value.strip().lower() == b"100-continue":
            expect = True
        headers.append((name, value))
    if size > max_head:
        raise RequestError("header list too large", 431)
    if method == b"CONNECT":
        raise RequestError("CONNECT is not supported", 405)
    if not method or not scheme or not path:
        raise _malformed("a required pseudo-header is missing or empty (:method, :scheme, :path)")
    if cookie_at >= 0:
        headers[cookie_at] = (b"cookie", b"; ".join(cookies))
    if not host and authority:
        headers.insert(0, (b"host", authority))
    if end_stream:
        if content_length not in (None, 0):
            raise RequestError("content-length and no body", 400)
        body, content_length = Framing.NONE, None
    elif content_length is not None:
        body = Framing.LENGTH
    else:
        body = Framing.CHUNKED
    head = RequestHead(
        method, path, _VERSION, headers, body=body, content_length=content_length, expect_continue=expect
    )
    return head, scheme


def _end_to_end(headers: Headers, dropped: frozenset[bytes], out: list[tuple[bytes, bytes]]) -> None:
    skip = dropped
    for name, _ in headers:
        if name.lower() == b"connection":
            skip = skip | (connection_tokens(headers) - _NEVER_NOMINATED)
            break
    for name, value in headers:
        low = name.lower()
        if low not in skip and low[:1] != b":":
            out.append((low, value))


def response_fields(resp: ResponseHead, *, head_only: bool) -> tuple[Headers, bool]:
    """The header block for ``resp``, and whether it ends the stream (no body follows).

    ``head_only``: the request was HEAD. A body of unknown length (CHUNKED, CLOSE) is sent as it
    comes, DATA frames delimiting it; a 1xx, 204 or 304 never has framing fields."""
    status = resp.status
    out: Headers = [(b":status", b"%d" % status)]
    _end_to_end(resp.headers, _DROPPED, out)
    length = resp.body is Framing.LENGTH or (resp.body is Framing.NONE and resp.content_length is not None)
    if length and status >= 200 and status != 204:
        out.append((b"content-length", b"%d" % (resp.content_length or 0)))
    ends = (
        head_only
        or resp.body is Framing.NONE
        or status in (204, 304)
        or (resp.body is Framing.LENGTH and resp.content_length == 0)
    )
    return out, ends and status >= 200


def interim_fields(resp: ResponseHead) -> Headers:
    """The header block of a 1xx interim response (it never ends the stream)."""
    out: Headers = [(b":status", b"%d" % resp.status)]
    _end_to_end(resp.headers, _DROPPED, out)
    return out


def reply_fields(reply: Reply, *, head_only: bool) -> tuple[Headers, bytes]:
    """The header block and the body of one of the proxy's own answers (no body for HEAD, 204, 304)."""
    status = reply.status
    out: Headers = [(b":status", b"%d" % status)]
    _end_to_end(reply.headers, _DROPPED, out)
    body = reply.body
    if status >= 200 and status not in (204, 304):
        out.append((b"content-length", b"%d" % len(body)))
    if head_only or status in (204, 304):
        body = b""
    return out, body


def trailer_fields(trailers: Headers) -> Headers:
    """Trailers as an HTTP/2 block: lower-case names, no pseudo, framing, hop-by-hop or host field."""
    out: Headers = []
    _end_to_end(trailers, _DROPPED | {b"host"}, out)
    return out
