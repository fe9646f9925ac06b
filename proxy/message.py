"""The neutral HTTP message model shared by every codec (HTTP/1 engines now, HTTP/2 later).

A message is a sequence of events: one head (``RequestHead`` or ``ResponseHead``), zero or more
``Data`` chunks, then ``EndOfMessage``. Heads carry headers as ``(name, value)`` byte pairs in wire
order, names as received (case kept for HTTP/1 forwarding), and the *framing facts* the codec
derived and validated, so the proxy never re-derives framing from raw headers:

- ``body``: ``Framing.NONE`` (no body), ``Framing.LENGTH`` (``content_length`` bytes),
  ``Framing.CHUNKED``, or ``Framing.CLOSE`` (responses only: body runs until the server closes).
- ``keep_alive``: whether the *sender* allows the connection to be reused after this message
  (HTTP/1.1 without ``Connection: close``, or HTTP/1.0 with an explicit ``keep-alive``).

Headers listed in ``HOP_BY_HOP`` never cross the proxy; the codec leaves them in ``headers`` and the
writer drops them, together with the names nominated by ``Connection``.

``wire``: the head's HTTP/1.1 bytes as received (less its ``Connection`` line), when a codec vouches
that they can be relayed unchanged to an HTTP/1.1 peer in keep-alive (*bare* heads: plain framing,
HTTP/1.1, no hop-by-hop header but a plain ``Transfer-Encoding: chunked`` and a one-token
``Connection``; see ``ext/h1head.c``, which the ``native`` engine's scanner implements and
``proxy.h1.strict._bare`` the shared reader, for the engines whose tokenizer gives the values as
received: ``native`` and ``llhttp``, not ``h11``), else None. It describes the head as parsed:
**whoever changes a head (the rules) sets it to None first**. It takes no part in equality, and
protocols other than HTTP/1 ignore it.
"""

from __future__ import annotations

import enum
from typing import Final


class Framing(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"


Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    """Every value of header ``name`` (lower-case), in order."""
    return [v for n, v in headers if n.lower() == name]


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case), or None."""
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def connection_tokens(headers: Headers) -> set[bytes]:
    """The lower-cased tokens of every ``Connection`` header."""
    tokens: set[bytes] = set()
    for v in header_values(headers, b"connection"):
        tokens.update(t.strip().lower() for t in v.split(b",") if t.strip())
    return tokens


class RequestHead:
    """A request's head (a plain class rather than a dataclass: compiled, its ``__init__`` is native,
    where a dataclass keeps one generated in Python: 3,000 instructions a request, twice)."""

    __slots__ = (
        "body",
        "content_length",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "target",
        "upgrade",
        "version",
        "wire",
    )  # fmt: skip

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,  # b"1.1" or b"1.0"
        headers: Headers,
        body: Framing = Framing.NONE,
        content_length: int | None = None,
        keep_alive: bool = True,
        # Lower-cased protocol named by ``Upgrade`` when ``Connection: upgrade`` is present, else None.
        upgrade: bytes | None = None,
        expect_continue: bool = False,
        wire: bytes | None = None,  # the head as received (see the module docstring)
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.content_length = content_length
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.expect_continue = expect_continue
        self.wire = wire

    def _fields(self) -> tuple[object, ...]:
        return (
            self.method, self.target, self.version, self.headers, self.body, self.content_length,
            self.keep_alive, self.upgrade, self.expect_continue,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:  # ``wire`` is left out, as the dataclass did
        return isinstance(other, RequestHead) and other._fields() == self._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (
            f"RequestHead(method={self.method!r}, target={self.target!r}, version={self.version!r},"
            f" headers={self.headers!r}, body={self.body!r}, content_length={self.content_length!r},"
            f" keep_alive={self.keep_alive!r}, upgrade={self.upgrade!r},"
            f" expect_continue={self.expect_continue!r})"
        )


class ResponseHead:
    """A response's head (a plain class, as ``RequestHead``)."""

    __slots__ = ("body", "content_length", "headers", "keep_alive", "reason", "status", "version", "wire")

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: bytes,
        headers: Headers,
        body: Framing = Framing.NONE,
        content_length: int | None = None,
        keep_alive: bool = True,
        wire: bytes | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.body = body
        self.content_length = content_length
        self.keep_alive = keep_alive
        self.wire = wire

    def _fields(self) -> tuple[object, ...]:
        return (
            self.status, self.reason, self.version, self.headers, self.body, self.content_length,
            self.keep_alive,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:  # ``wire`` is left out, as the dataclass did
        return isinstance(other, ResponseHead) and other._fields() == self._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (
            f"ResponseHead(status={self.status!r}, reason={self.reason!r}, version={self.version!r},"
            f" headers={self.headers!r}, body={self.body!r}, content_length={self.content_length!r},"
            f" keep_alive={self.keep_alive!r})"
        )


class Data:
    """A piece of a message body (a plain class, like ``EndOfMessage``: a native ``__init__``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Data) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return f"Data(data={self.data!r})"


class EndOfMessage:
    """The end of a message, with its trailers (a plain class: compiled, its ``__init__`` is native
    where a dataclass ``default_factory`` would keep one generated in Python)."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: Headers | None = None) -> None:
        self.trailers: Headers = [] if trailers is None else trailers

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EndOfMessage) and other.trailers == self.trailers

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return f"EndOfMessage(trailers={self.trailers!r})"


Event = RequestHead | ResponseHead | Data | EndOfMessage
