"""HTTP/1.1 codec: one interface, two engines (``h11`` reference, ``llhttp`` via httptools, fast).

Contract (every engine satisfies it; ``tests/test_h1_*.py`` run the same cases on both):

- ``engine(name)`` returns an ``Engine`` from the registry (``ENGINES``); ``name`` is the value of
  ``tune.h1-engine``.
- ``Engine.request_parser(limits)`` returns a ``RequestParser``:
    * ``feed(data) -> list[Event]``: push bytes, get the events they complete, in order: a
      ``RequestHead`` then ``Data``* then ``EndOfMessage``, and so on for pipelined requests (parsing
      continues with the next request on its own). Raises ``ProtocolError`` (status 400/413/431/501)
      on anything invalid or ambiguous; the parser is unusable afterwards.
    * ``feed_eof() -> list[Event]``: the peer closed. Between messages: ``[]``. Mid-message: raises
      ``ProtocolError`` (the message is truncated).
    * ``detach() -> bytes``: stop parsing (after an upgrade became a tunnel) and return every byte
      received but not consumed by events already returned.
- ``Engine.response_parser(limits)`` returns a ``ResponseParser``: the same, plus
  ``expect(method)``: the next response answers a request with this method (HEAD → no body).
  ``expect`` is called once per request, before its response bytes are fed. Interim 1xx responses
  (other than 101) come as ``ResponseHead`` + ``EndOfMessage`` and are followed by the final response
  to the same request. After a 101 head the parser stops; ``detach()`` gives the tunnel's first bytes.
  A body framed by close ends at ``feed_eof()`` with ``EndOfMessage``. Errors raise
  ``ProtocolError`` with status 502.
- Heads carry validated framing (see ``proxy.message``). Strictness is the proxy's, identical for
  both engines (``proxy.h1.strict``): HAProxy's rules for Transfer-Encoding with Content-Length,
  invalid or conflicting Content-Length, bare LF, obs-folding, invalid bytes in names or values,
  oversized heads (``limits.max_head`` → 431 for requests), too many headers (``limits.max_headers``).
- ``proxy.h1.writer`` serializes heads and body chunks for the other side (always re-serialized,
  never raw bytes passed through).
"""

from __future__ import annotations

from dataclasses import dataclass


class ProtocolError(Exception):
    """Invalid HTTP/1 input. ``status`` is what to answer (request side) or log (response side)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Limits:
    max_head: int = 16384  # bytes of request/status line + headers (tune.bufsize)
    max_headers: int = 101  # header lines (tune.http.maxhdr)
