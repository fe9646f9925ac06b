"""The HTTP/1 codec's vocabulary: the error, the limits and the parser interfaces.

Apart from ``proxy.h1`` (the registry and the contract's prose) so that the engines and the shared
reader can import it without importing the package that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from proxy.message import Event


class ProtocolError(Exception):
    """Invalid HTTP/1 input. ``status`` is what to answer (request side) or log (response side)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Limits:
    max_head: int = 16384  # bytes of request/status line + headers (tune.bufsize)
    max_headers: int = 101  # header lines (tune.http.maxhdr)


# --- Engines -------------------------------------------------------------------------------------
# An engine only tokenizes a complete, already-scanned head block (see ``proxy.h1.strict``): the
# message loop, the framing rules and the body decoders are shared, which is what makes the
# engines answer identically. The protocols below are the whole public surface of a parser.


class RequestParser(Protocol):
    def feed(self, data: bytes) -> list[Event]: ...

    def feed_eof(self) -> list[Event]: ...

    def detach(self) -> bytes: ...

    def resume(self) -> list[Event]: ...


class ResponseParser(Protocol):
    # True once bytes arrived after the last expected response: the connection must not be reused.
    poisoned: bool

    def expect(self, method: bytes) -> None: ...

    def feed(self, data: bytes) -> list[Event]: ...

    def feed_eof(self) -> list[Event]: ...

    def detach(self) -> bytes: ...


class Engine(Protocol):
    @property
    def name(self) -> str: ...

    def request_parser(self, limits: Limits = ...) -> RequestParser: ...

    def response_parser(self, limits: Limits = ...) -> ResponseParser: ...
