"""The responses the proxy makes itself, as protocol-neutral data: ``Reply``.

Every answer that does not come from a server is a ``Reply`` (status, reason, headers, body): the
default error pages, the configured ``errorfile`` pages, ``http-request return``, ``deny`` and
``redirect``. A stream builds it (choosing the backend's errorfile, else the frontend's, else the
default page: HAProxy's order), lets ``http-after-response`` rules edit its headers, and hands it to
its client side (``proxy.sides.ClientSide.send_reply``); the client mux frames it for its protocol
(for HTTP/1: the status line, the headers, a ``Content-Length`` and ``Connection`` of its own; the
headers listed here never carry framing). An errorfile is an HTTP/1 response on disk, parsed when the
configuration is loaded (``proxy.config.errorfile``) into the same neutral fields, so any mux can
send it. A ``silent`` reply (an empty errorfile) means: close the connection without answering.

The default pages are small HTML documents worded here, with ``Cache-Control: no-cache`` as
HAProxy's own error pages have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.config.model import ErrorPage
from proxy.message import Headers

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


def reason(status: int) -> bytes:
    """The standard reason phrase for ``status`` (b"" when there is none)."""
    return REASONS.get(status, b"")


def error_body(status: int) -> bytes:
    """A small HTML page for a status the proxy answers itself (generic for unlisted ones)."""
    text = _ERROR_TEXT.get(status, b"The request could not be completed.")
    return b"<html><body><h1>%d %s</h1>\n%s\n</body></html>\n" % (status, reason(status), text)


@dataclass(slots=True)
class Reply:
    """A response made by the proxy; ``headers`` never include framing (Content-Length...)."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    reason: bytes = b""  # empty: the standard phrase for ``status``
    silent: bool = False  # close without answering (an empty errorfile)

    def __repr__(self) -> str:
        silent = " silent" if self.silent else ""
        return f"<Reply {self.status} headers={len(self.headers)} body={len(self.body)}{silent}>"


def error_reply(status: int, page: ErrorPage | None = None) -> Reply:
    """The proxy's answer for an error ``status``: the configured page, else the default one."""
    if page is not None:
        if page.silent:
            return Reply(status, silent=True)
        return Reply(page.status, list(page.headers), page.body, page.reason)
    headers = [(b"Cache-Control", b"no-cache"), (b"Content-Type", b"text/html")]
    return Reply(status, headers, error_body(status))


def local_reply(
    status: int, body: bytes = b"", content_type: str | None = None, headers: Headers | None = None
) -> Reply:
    """``http-request return``-like answers: the status, an optional typed body, extra headers."""
    fields: Headers = []
    if content_type is not None:
        fields.append((b"Content-Type", content_type.encode("latin-1")))
    return Reply(status, fields + (headers or []), body)
