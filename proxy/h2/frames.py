"""The HTTP/2 wire (RFC 9113 §4, §6): frame types, flags, error codes, setting ids, and the frames
the native engine writes, serialised straight to bytes (no frame objects).

Every frame starts with a 9-byte header::

    +-----------------------------------------------+
    |                 Length (24)                   |
    +---------------+---------------+---------------+
    |   Type (8)    |   Flags (8)   |
    +-+-------------+---------------+-------------------------------+
    |R|                 Stream Identifier (31)                      |
    +=+=============================================================+
    |                   Frame Payload (0...)                      ...
    +---------------------------------------------------------------+

``header`` builds one; the engine (``proxy.h2.conn``) reads them in place from the bytes received.
Pure functions over ints and bytes; compiled by mypyc (``proxy.native.COMPILED``).
"""

from __future__ import annotations

from typing import Final

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER_SIZE: Final = 9

# Frame types (§6)
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# Flags
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# Error codes (§7)
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
SETTINGS_TIMEOUT: Final = 0x4
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
CONNECT_ERROR: Final = 0xA
ENHANCE_YOUR_CALM: Final = 0xB
INADEQUATE_SECURITY: Final = 0xC
HTTP_1_1_REQUIRED: Final = 0xD

# Setting identifiers (§6.5.2)
HEADER_TABLE_SIZE: Final = 0x1
ENABLE_PUSH: Final = 0x2
MAX_CONCURRENT_STREAMS: Final = 0x3
INITIAL_WINDOW_SIZE: Final = 0x4
MAX_FRAME_SIZE: Final = 0x5
MAX_HEADER_LIST_SIZE: Final = 0x6

MAX_WINDOW: Final = 2**31 - 1
MIN_FRAME_SIZE: Final = 16384
MAX_FRAME_SIZE_LIMIT: Final = 2**24 - 1
DEFAULT_WINDOW: Final = 65535


def header(length: int, kind: int, flags: int, sid: int) -> bytes:
    """A frame header (the stream id's reserved bit is left 0)."""
    return bytes(
        (
            (length >> 16) & 0xFF,
            (length >> 8) & 0xFF,
            length & 0xFF,
            kind,
            flags,
            (sid >> 24) & 0x7F,
            (sid >> 16) & 0xFF,
            (sid >> 8) & 0xFF,
            sid & 0xFF,
        )
    )


def u32(data: bytes, at: int) -> int:
    """The big-endian 32-bit number at ``at``."""
    return (data[at] << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]


def settings(pairs: list[tuple[int, int]]) -> bytes:
    payload = b"".join(ident.to_bytes(2, "big") + value.to_bytes(4, "big") for ident, value in pairs)
    return header(len(payload), SETTINGS, 0, 0) + payload


def settings_ack() -> bytes:
    return header(0, SETTINGS, ACK, 0)


def ping_ack(opaque: bytes) -> bytes:
    return header(8, PING, ACK, 0) + opaque


def goaway(last_sid: int, code: int, debug: bytes = b"") -> bytes:
    payload = (last_sid & MAX_WINDOW).to_bytes(4, "big") + code.to_bytes(4, "big") + debug
    return header(len(payload), GOAWAY, 0, 0) + payload


def rst_stream(sid: int, code: int) -> bytes:
    return header(4, RST_STREAM, 0, sid) + code.to_bytes(4, "big")


def window_update(sid: int, increment: int) -> bytes:
    return header(4, WINDOW_UPDATE, 0, sid) + increment.to_bytes(4, "big")


def data(sid: int, payload: bytes, end: bool) -> bytes:
    return header(len(payload), DATA, END_STREAM if end else 0, sid) + payload


def headers(sid: int, block: bytes, end: bool, max_frame: int) -> bytes:
    """A HEADERS frame carrying ``block``, followed by CONTINUATION frames where it is larger than
    ``max_frame`` (the peer's SETTINGS_MAX_FRAME_SIZE)."""
    flags = END_STREAM if end else 0
    if len(block) <= max_frame:
        return header(len(block), HEADERS, flags | END_HEADERS, sid) + block
    parts = [header(max_frame, HEADERS, flags, sid), block[:max_frame]]
    at = max_frame
    while at < len(block):
        chunk = block[at : at + max_frame]
        at += len(chunk)
        parts.append(header(len(chunk), CONTINUATION, END_HEADERS if at >= len(block) else 0, sid))
        parts.append(chunk)
    return b"".join(parts)
