"""Type stub for the C extension ``proxy._h1head`` (``ext/h1head.c``), the head scanner of the
``native`` HTTP/1 engine; the contract is documented there and in ``proxy.h1.engine_native``."""

from typing import Final, TypeAlias

from typing_extensions import Buffer

_Headers: TypeAlias = list[tuple[bytes, bytes]]
_Found: TypeAlias = dict[bytes, list[bytes]] | None

# proxy.h1.grammar.KNOWN_METHODS, in the scanner's order.
METHODS: Final[tuple[bytes, ...]]

# (end, method, target, version, headers, found, length, chunked, connection, wire), or None.
def parse_request(
    buf: Buffer, pos: int, max_head: int, max_headers: int, /
) -> tuple[int, bytes, bytes, bytes, _Headers, _Found, int | None, bool, int, bytes | None] | None: ...

# (end, status, reason, version, headers, found, length, chunked, connection, wire), or None.
def parse_response(
    buf: Buffer, pos: int, max_head: int, max_headers: int, /
) -> tuple[int, int, bytes, bytes, _Headers, _Found, int | None, bool, int, bytes | None] | None: ...

# The writer's header lines (proxy.h1.writer._copy_fields), or None when its Python loop must run.
def fields(headers: _Headers, drop: frozenset[bytes], /) -> tuple[bytes, int] | None: ...
