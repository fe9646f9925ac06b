"""The HTTP/1 body decoders: ``_Length``, ``_UntilClose`` and ``_Chunked``, and the chunk scanners.

Contract. The message loop (``proxy.h1.strict``) makes one decoder per body, once the head has
decided the framing, and feeds it every byte that follows the head until ``done``. A decoder
consumes ``buf[pos:]``, appends Data (never empty) and at the end EndOfMessage to ``events``, and
returns the new position; ``done`` turns True with the EndOfMessage. ``wait`` is the terminator
whose absence stopped it, if any (the reader skips re-scanning until it comes). Each decoder
appends at most one ``Data`` per ``feed`` (everything it decoded, joined), so the cost of a body is
per read, not per chunk. Errors raise ``ProtocolError`` with the reader's status (400 for a
request, 502 for a response; 431 for a request's trailer section over the limits).

``_Chunked`` leaves the chunks that need no decision (size line with or without extensions, data,
CRLF) to ``scan_chunks``: the C extension ``proxy._chunked`` (``ext/chunked.c``, a few ns per chunk)
or its pure-Python twin ``scan_chunks_python``, which return the same for every input. The scanner
stops at anything else (the last chunk, a line cut by the end of the input, any invalid byte) and
``_Chunked`` decides it in Python, so errors and waiting are the same whichever scanner runs.
``POOLPROXY_CHUNKED`` picks it: ``auto`` (default: C if built), ``c`` (ImportError if not built) or
``python``. Chunk lines and trailers follow the grammar of ``proxy.h1.grammar`` (``_CHUNK_LINE``,
``_FIELDS_RE``); a bare LF in either is rejected, never repaired.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Final

from proxy.h1.base import Limits, ProtocolError
from proxy.h1.grammar import _CHUNK_LINE, _FIELD, _FIELDS_RE, _bare_lf, _explain
from proxy.message import Data, EndOfMessage, Event, Headers


class _Length:
    __slots__ = ("done", "remaining", "wait")

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = False
        self.wait = b""

    def feed(self, buf: bytes, pos: int, events: list[Event]) -> int:
        n = min(self.remaining, len(buf) - pos)
        if n:
            events.append(Data(buf[pos : pos + n]))
            self.remaining -= n
        if not self.remaining:
            events.append(EndOfMessage())
            self.done = True
        return pos + n


class _UntilClose:
    """A response body that the server ends by closing the connection (``Framing.CLOSE``)."""

    __slots__ = ("done", "wait")

    def __init__(self) -> None:
        self.done = False
        self.wait = b""

    def feed(self, buf: bytes, pos: int, events: list[Event]) -> int:
        if pos < len(buf):
            events.append(Data(buf[pos:]))
        return len(buf)


# Chunked bodies. ``_Chunked`` hands the bulk of the work to ``scan_chunks``, which decodes every
# chunk that needs no decision (size line, data, CRLF) and returns their payloads joined; what it
# stops at is decided by ``_Chunked`` itself, one step at a time. The states, as ints because the
# scanner (C or Python) takes and returns them:
_SIZE = 0  # expecting a chunk-size line
_DATA = 1  # inside chunk data, ``remaining`` bytes of it still due
_CRLF = 2  # expecting the CRLF after chunk data
_TRAILERS = 3  # after the last chunk: expecting the trailer section (possibly empty); never scanned

_MAX_REMAINING = (1 << 63) - 1
# The CRLF that ends chunk data, then a chunk line of the simplest form (a subset of _CHUNK_LINE).
_NEXT_SIMPLE_CHUNK = re.compile(rb"\r\n([0-9A-Fa-f]{1,15})[ \t]*\r\n")

ChunkScanner = Callable[[bytes, int, int, int, int], tuple[bytes, int, int, int]]


def scan_chunks_python(
    buf: bytes, pos: int, state: int, remaining: int, max_line: int
) -> tuple[bytes, int, int, int]:
    """Decode the chunks of ``buf[pos:]`` that need no decision: the pure-Python twin of
    ``proxy._chunked.scan`` (``ext/chunked.c``); the two return the same for every input.

    ``state`` is ``_SIZE``, ``_DATA`` or ``_CRLF``, ``remaining`` the chunk-data bytes still due in
    ``_DATA``. Returns ``(data, pos, state, remaining)``: ``data`` is the payload of every chunk
    decoded, joined (``b""`` if none), and the rest says where the scan stopped. It accepts a chunk
    line that ``_CHUNK_LINE`` matches whose CRLF lies within ``max_line`` bytes of its start and
    whose size is not 0, the data, and the CRLF after it; it stops *before* anything else (the last
    chunk, a line or CRLF cut by the end of ``buf``, an invalid byte), leaving it to ``_Chunked``,
    which waits or raises. It never raises ProtocolError. Invalid arguments raise ValueError
    (``0 <= pos <= len(buf)``, ``state`` one of the three, ``0 <= remaining < 2**63``,
    ``max_line >= 0``).
    """
    _check_scan(len(buf), pos, state, remaining, max_line)
    n = len(buf)
    parts: list[bytes] = []
    append = parts.append
    next_chunk = _NEXT_SIMPLE_CHUNK.match
    while pos < n:
        if state == _DATA:
            take = min(remaining, n - pos)
            append(buf[pos : pos + take])
            pos += take
            remaining -= take
            if remaining:
                break
            state = _CRLF
            # The steady state, one match per chunk: this CRLF, a size line without extensions
            # and all of the next chunk's data are there (half the cost of the steps below).
            while (m := next_chunk(buf, pos, pos + 2 + max_line)) is not None:
                size = int(m[1], 16)
                start = m.end()
                if not size or start + size > n:
                    break
                append(buf[start : start + size])
                pos = start + size
        elif state == _CRLF:
            if buf[pos : pos + 2] != b"\r\n":
                break
            pos += 2
            state = _SIZE
        else:
            end = buf.find(b"\r\n", pos, pos + max_line)
            line = None if end < 0 else _CHUNK_LINE.fullmatch(buf, pos, end)
            if line is None:
                break
            size = int(line[1], 16)
            if not size:
                break
            pos, state, remaining = end + 2, _DATA, size
    return b"".join(parts), pos, state, remaining


def _check_scan(n: int, pos: int, state: int, remaining: int, max_line: int) -> None:
    # The C scanner's checks, in its order and with its messages.
    if state not in (_SIZE, _DATA, _CRLF):
        raise ValueError(f"invalid scan state {state}")
    if not 0 <= remaining <= _MAX_REMAINING:
        raise ValueError("remaining out of range")
    if max_line < 0:
        raise ValueError("max_line must not be negative")
    if not 0 <= pos <= n:
        raise ValueError(f"pos {pos} out of range for a buffer of {n} bytes")


# The scanners importable here, preferred first, and the one every new decoder uses. Like
# ``proxy.atomics``: ``POOLPROXY_CHUNKED`` is ``auto`` (the default: C where built), ``c`` (fail at
# import if ``proxy._chunked`` is missing) or ``python``. Tests rebind ``scan_chunks`` to run a
# case on each.
CHUNK_ENV_VAR: Final = "POOLPROXY_CHUNKED"
CHUNK_SCANNERS: dict[str, ChunkScanner] = {}
try:
    from proxy._chunked import scan as _scan_c
except ImportError:  # not built (POOLPROXY_NO_EXT, no compiler)
    pass
else:
    CHUNK_SCANNERS["c"] = _scan_c
CHUNK_SCANNERS["python"] = scan_chunks_python


def _select_scanner(choice: str) -> str:
    if choice == "auto":
        return next(iter(CHUNK_SCANNERS))
    if choice not in ("c", "python"):
        raise ValueError(f"{CHUNK_ENV_VAR} must be auto, c or python, not {choice!r}")
    if choice not in CHUNK_SCANNERS:
        raise ImportError(f"{CHUNK_ENV_VAR}=c but proxy._chunked is not built (setup.py build_ext)")
    return choice


CHUNK_BACKEND: Final[str] = _select_scanner(os.environ.get(CHUNK_ENV_VAR, "auto") or "auto")
scan_chunks: ChunkScanner = CHUNK_SCANNERS[CHUNK_BACKEND]


class _Chunked:
    """Strict chunked decoding. A line longer than ``max_head`` is an error.

    One ``feed`` appends at most one Data, before the EndOfMessage if it comes: the payload of
    every chunk it decoded, joined (chunk boundaries carry no meaning and are not kept; the writer
    re-chunks). So a body of tiny chunks costs one event per read, not one per chunk.
    """

    __slots__ = ("_scan", "done", "limits", "remaining", "state", "status", "wait")

    def __init__(self, limits: Limits, status: int) -> None:
        self.limits = limits
        self.status = status
        self.state = _SIZE
        self.remaining = 0
        self.done = False
        self.wait = b""
        self._scan = scan_chunks

    def feed(self, buf: bytes, pos: int, events: list[Event]) -> int:
        n = len(buf)
        self.wait = b""
        parts: list[bytes] = []
        max_line = self.limits.max_head
        while pos < n and self.state != _TRAILERS:
            data, pos, self.state, self.remaining = self._scan(buf, pos, self.state, self.remaining, max_line)
            if data:
                parts.append(data)
            if pos == n:
                break
            after = self._step(buf, pos)
            if after == pos:
                break  # waiting for more bytes
            pos = after
        if parts:
            events.append(Data(parts[0] if len(parts) == 1 else b"".join(parts)))
        if self.state == _TRAILERS and pos < n:
            return self._trailers(buf, pos, events)
        return pos

    def _step(self, buf: bytes, pos: int) -> int:
        """Decide what the scanner stopped at (``pos < len(buf)``): a chunk line it left (the last
        chunk, or a line incomplete, too long or invalid) or the CRLF after chunk data (incomplete
        or invalid). Returns the new position (``pos`` itself: wait for more bytes) or raises."""
        n = len(buf)
        if self.state == _CRLF:
            if not buf.startswith(b"\r\n"[: n - pos], pos):
                raise ProtocolError("chunk data not followed by CRLF", self.status)
            if n - pos < 2:
                return pos
            self.state = _SIZE
            return pos + 2
        assert self.state == _SIZE, "the scanner stops inside chunk data only at the end of buf"
        end = buf.find(b"\r\n", pos, pos + self.limits.max_head)
        if end < 0:
            self._pending(buf, pos, b"\r\n", self.status)
            return pos
        m = _CHUNK_LINE.fullmatch(buf, pos, end)
        if m is None:
            raise ProtocolError(f"invalid chunk line {buf[pos:end][:64]!r}", self.status)
        self.remaining = int(m.group(1), 16)
        self.state = _DATA if self.remaining else _TRAILERS
        return end + 2

    def _trailers(self, buf: bytes, pos: int, events: list[Event]) -> int:
        too_large = 431 if self.status == 400 else self.status
        if buf[pos] == 0x0D:  # the empty line that ends the body, or nothing valid
            if len(buf) - pos == 1:
                return pos
            if buf[pos + 1] != 0x0A:
                raise ProtocolError("bare CR after the last chunk", self.status)
            end = pos + 2
            trailers: Headers = []
        else:
            end = buf.find(b"\r\n\r\n", pos, pos + self.limits.max_head)
            if end < 0:
                self._pending(buf, pos, b"\r\n\r\n", too_large)
                return pos
            end += 4
            if buf.count(b"\r\n", pos, end) - 1 > self.limits.max_headers:
                if _bare_lf(buf, pos, end):
                    raise ProtocolError("bare LF in trailers", self.status)
                raise ProtocolError("too many trailer fields", too_large)
            if _FIELDS_RE.fullmatch(buf, pos, end) is None:
                raise _explain(buf[pos:end], 0, self.status)
            trailers = _FIELD.findall(buf, pos, end)
        events.append(EndOfMessage(trailers))
        self.done = True
        return end

    def _pending(self, buf: bytes, pos: int, terminator: bytes, too_large: int) -> None:
        """No terminator within ``max_head``: raise if there never will be a valid one, else wait."""
        if _bare_lf(buf, pos, pos + self.limits.max_head):
            raise ProtocolError("bare LF in chunked framing", self.status)
        if len(buf) - pos >= self.limits.max_head:
            raise ProtocolError("chunk line or trailer section too large", too_large)
        self.wait = terminator
