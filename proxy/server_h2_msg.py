"""Neutral messages to and from HTTP/2 header blocks, for requests sent to an HTTP/2 server.

Pure functions (no I/O, no ``h2`` import), used by ``proxy.server_h2``:

- ``request_fields``: a neutral ``RequestHead`` (as an HTTP/1 client sent it) → the request's header
  block. ``Host`` becomes ``:authority`` (an absolute-form target's authority wins, RFC 9110 §7.2),
  the target becomes ``:path`` (``*`` stays ``*``), ``:scheme`` is the connection's. Connection-specific
  headers never cross (RFC 9113 §8.2.2): the hop-by-hop ones and every name ``Connection``
  nominates; ``TE`` only as ``trailers``. Names are lower-cased. ``Content-Length`` is sent when the
  body has one; a chunked body has no length in HTTP/2 (DATA frames and END_STREAM frame it).
  ``Expect: 100-continue`` is end-to-end: it crosses, and the server's 100 comes back as an interim
  response.
- ``response_head``: a response header block → a neutral ``ResponseHead``. The body framing is
  derived for the client mux: none for HEAD, 1xx, 204, 304 or a block that ended the stream, the
  length when ``content-length`` says it (a HEAD answer keeps its length, the client mux sends no
  body for HEAD), otherwise ``CHUNKED`` (length unknown: it ends with the
  stream; an HTTP/1.1 client gets chunks, an HTTP/1.0 one a close-delimited body).
- ``trailer_fields`` / ``trailers_in``: trailers both ways (framing and connection headers dropped).

``MessageError`` says a header block cannot be translated (a missing or invalid ``:status``).
"""

from __future__ import annotations

from proxy.message import HOP_BY_HOP, Framing, Headers, RequestHead, ResponseHead, connection_tokens

_DROP = HOP_BY_HOP | {b"host", b"content-length", b"transfer-encoding"}
_TRAILER_DROP = _DROP
_NO_BODY_STATUS = (204, 304)


class MessageError(ValueError):
    """A header block that makes no HTTP message (the server broke the protocol: 502)."""


def _authority_and_path(target: bytes) -> tuple[bytes | None, bytes]:
    """An absolute-form target's authority and path; (None, target) for origin-form and ``*``."""
    if target[:1] == b"/" or target == b"*":
        return None, target
    scheme_end = target.find(b"://")
    if scheme_end < 0:
        return None, target or b"/"
    rest = target[scheme_end + 3 :]
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not path.startswith(b"/"):
        path = b"/" + path
    return authority.rpartition(b"@")[2] or None, path


def request_fields(head: RequestHead, *, scheme: bytes, add: Headers) -> Headers:
    """The HTTP/2 header block of ``head`` (pseudo-headers first), with ``add`` appended."""
    authority, path = _authority_and_path(head.target)
    headers = head.headers
    skip = _DROP
    if any(n.lower() == b"connection" for n, _ in headers):
        skip = skip | connection_tokens(headers)
    host: bytes | None = None
    out: Headers = []
    for name, value in headers:
        lname = name.lower()
        if lname == b"host":
            if host is None:
                host = value
            continue
        if lname == b"te":
            if b"trailers" in {t.strip().lower() for t in value.split(b",")}:
                out.append((b"te", b"trailers"))
            continue
        if lname in skip:
            continue
        out.append((lname, value))
    if head.body is Framing.LENGTH and head.content_length is not None:
        out.append((b"content-length", b"%d" % head.content_length))
    for name, value in add:
        out.append((name.lower(), value))
    pseudo: Headers = [(b":method", head.method), (b":scheme", scheme)]
    authority = authority or host
    if authority:
        pseudo.append((b":authority", authority))
    pseudo.append((b":path", path))
    return pseudo + out


def response_head(fields: Headers, *, method: bytes, ended: bool) -> ResponseHead:
    """The neutral head of a response (or 1xx) header block; ``ended``: the block ended the stream."""
    status: int | None = None
    headers: Headers = []
    length: int | None = None
    for name, value in fields:
        if name[:1] == b":":
            if name == b":status":
                if not (len(value) == 3 and value.isdigit()):
                    raise MessageError(f"invalid :status {value!r}")
                status = int(value)
            continue
        if name == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise MessageError(f"invalid content-length {value!r}")
            length = int(value)
            continue  # the client mux writes the framing header itself
        if name in _DROP:
            continue
        headers.append((name, value))
    if status is None:
        raise MessageError("response without :status")
    if method == b"HEAD" and length is not None and status >= 200 and status not in _NO_BODY_STATUS:
        body, clen = Framing.LENGTH, length  # the client mux sends the length, never a body
    elif status < 200 or ended or method == b"HEAD" or status in _NO_BODY_STATUS:
        body, clen = Framing.NONE, None
    elif length is not None:
        body, clen = Framing.LENGTH, length
    else:
        body, clen = Framing.CHUNKED, None
    return ResponseHead(status, b"", b"2.0", headers, body=body, content_length=clen, keep_alive=True)


def trailer_fields(trailers: Headers) -> Headers:
    """Request trailers for HTTP/2: lower-case names, nothing connection-specific or framing."""
    return [(n.lower(), v) for n, v in trailers if n.lower() not in _TRAILER_DROP]


def trailers_in(fields: Headers) -> Headers:
    """Response trailers from HTTP/2 (pseudo-headers have no place there and are dropped)."""
    return [(n, v) for n, v in fields if n[:1] != b":" and n not in _TRAILER_DROP]
