"""HTTP/1.1 codec: one interface, three engines (``native``: a C head scanner, the fastest and the
default where built; ``llhttp`` via httptools, the default otherwise; ``h11``, the reference).

Contract (every engine satisfies it; ``tests/test_h1_*.py`` run the same cases on each):

- ``engine(name)`` returns an ``Engine`` from the registry (``ENGINES``); ``name`` is the value of
  ``tune.h1-engine``. ``native`` is registered only where the C extension ``proxy._h1head`` is
  built; ``DEFAULT`` is ``native`` then, ``llhttp`` otherwise (``proxy.config.model`` makes the
  same choice for the keyword's default without importing the engines).
- ``Engine.request_parser(limits)`` returns a ``RequestParser``:
    * ``feed(data) -> list[Event]``: push bytes, get the events they complete, in order: a
      ``RequestHead`` then ``Data``* then ``EndOfMessage``, and so on for pipelined requests (parsing
      continues with the next request on its own). One call returns at most one ``Data`` per message:
      all the body bytes it decoded for that message, joined (chunk boundaries are not kept; the
      writer re-frames). Raises ``ProtocolError`` (status 400/413/431/501) on anything invalid or
      ambiguous; the parser is unusable afterwards.
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
  all engines (``proxy.h1.strict``): HAProxy's rules for Transfer-Encoding with Content-Length,
  invalid or conflicting Content-Length, bare LF, obs-folding, invalid bytes in names or values,
  oversized heads (``limits.max_head`` → 431 for requests), too many headers (``limits.max_headers``).
- ``proxy.h1.writer`` serializes heads and body chunks for the other side. A head the parser
  vouched for as *bare* (``proxy.message``'s ``wire``: the ``native`` and ``llhttp`` engines) is
  relayed as received instead, less its ``Connection`` line; any other head is re-serialized.

Additions made with the engines (nothing above changes):

- ``RequestParser.resume() -> list[Event]``: after a request that asked for an upgrade the parser
  holds every later byte (it may be the tunnel's); if the upgrade is declined (no 101), ``resume()``
  parses what was held as HTTP again. ``detach()`` is the other way out.
- A request parser that meets an error after one or more *complete* requests in the same ``feed``
  returns those requests and raises the error on the next ``feed``/``feed_eof`` (``feed(b"")``
  polls it), so pipelined requests ahead of a bad one are answered first. A response parser raises
  at once (a bad response poisons the whole connection).
- After a message that does not keep the connection alive, later bytes are ignored.
- ``CONNECT`` is not supported: a well-formed one is answered 405, a malformed one 400. Unknown
  methods are 501. Versions other than HTTP/1.0 and HTTP/1.1 are 400.
"""

from __future__ import annotations

from proxy.h1.base import Engine, Limits, ProtocolError, RequestParser, ResponseParser
from proxy.h1.engine_h11 import ENGINE as _H11
from proxy.h1.engine_llhttp import ENGINE as _LLHTTP

__all__ = [
    "DEFAULT",
    "ENGINES",
    "Engine",
    "Limits",
    "ProtocolError",
    "RequestParser",
    "ResponseParser",
    "engine",
]

ENGINES: dict[str, Engine] = {}


def engine(name: str) -> Engine:
    """The engine registered as ``name`` (``tune.h1-engine``); ValueError names the known ones."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown h1 engine {name!r} (known: {', '.join(sorted(ENGINES))})") from None


try:
    from proxy.h1.engine_native import ENGINE as _NATIVE
except ImportError:  # proxy._h1head not built (POOLPROXY_NO_EXT, no compiler)
    pass
else:
    ENGINES[_NATIVE.name] = _NATIVE
ENGINES[_LLHTTP.name] = _LLHTTP
ENGINES[_H11.name] = _H11
DEFAULT = "native" if "native" in ENGINES else "llhttp"
