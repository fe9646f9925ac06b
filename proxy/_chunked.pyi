"""Type stub for the C extension ``proxy._chunked`` (``ext/chunked.c``); the contract is documented
there and at ``proxy.h1.bodies.scan_chunks_python``, its pure-Python twin."""

from typing import Final

from typing_extensions import Buffer

SIZE: Final[int]
DATA: Final[int]
CRLF: Final[int]

def scan(
    buf: Buffer, pos: int, state: int, remaining: int, max_line: int, /
) -> tuple[bytes, int, int, int]: ...
