"""The HTTP/2 state of an idle server connection, as it travels from one worker to another.

An idle plain-TCP HTTP/2 connection (h2c, no open stream, not draining) may be taken by another
worker like an HTTP/1 one (``proxy.server``'s lending, ``proxy.steal``). The descriptor alone is not
enough: the ``h2`` library's connection object holds what both ends agreed on, and the thief must
continue exactly where the owner stopped. This module turns that state into bytes and back.

Contract:

- ``dump`` takes an **idle** ``h2.connection.H2Connection`` (state OPEN or IDLE-after-preface, no
  stream open, nothing it has not sent yet, no partial frame received) and the few fields the
  proxy's connection object keeps beside it (``Extra``: streams opened in its life, for
  ``max-reuse``; exchanges completed; whether the server's SETTINGS arrived). It raises
  ``NotIdle`` otherwise: a connection with anything in flight is never handed over.
- What travels is the state of the ``H2Connection``, field by field, as plain values (``marshal``:
  ints, bytes, tuples, dicts — no object of any class is ever rebuilt from the bytes): the HPACK
  encoder's and decoder's dynamic tables, their sizes and limits (including a table-size update
  still owed to the peer), both sides' SETTINGS (acknowledged values and pending ones), the
  connection's flow-control windows both ways (and the inbound window manager's unacknowledged
  count), the frame sizes, the connection state, the highest stream ids used each way, and the
  recently closed streams (a late frame of one is still recognised). ``load`` applies it to a new
  ``H2Connection`` made with the receiver's configuration (the same as the owner's: one proxy), which
  the receiver continues to use as its own. What is not state (the frame dispatch table, the
  configuration) is the new object's own. The fields are the ``h2`` 4 ones; the HPACK tables travel
  as plain values (entries oldest first, sizes, the size updates still owed), read from either the
  ``hpack`` library's coder or ``proxy.h2.hpack_codec``'s, and ``load`` gives the new connection
  ``proxy.h2.hpack_codec``'s (``install``) holding them: ``tests/test_h2_handover.py`` checks the
  round trip against a real peer. Version 2 carried the ``hpack`` library's own fields; 3 these.
- The bytes are only exchanged between the workers of one proxy (same program, same user), through
  a descriptor duplicated from the owner (``pidfd_getfd``): ``load`` refuses anything without this
  module's header and version, or not of the expected shape (``BadState``).
- ``to_memfd`` puts the bytes in an anonymous memory file (``memfd_create``) whose descriptor the
  owner publishes with the connection's slot and closes when the slot is freed; ``read_fd`` reads
  such a file whole from a duplicated descriptor (at its offset 0, whatever the shared offset).

Bytes received from the server but not yet given to the ``h2`` object are not part of the state:
the owner refuses to publish while its own buffer holds a partial frame, and the thief refuses a
socket with anything to read (``MSG_PEEK``), so nothing is ever lost between the two.
"""

from __future__ import annotations

import marshal
import os
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.settings
import h2.stream
from h2.connection import ConnectionState

from proxy.h2 import hpack_codec

MAGIC = b"PPH2"
VERSION = 3
_HEADER = struct.Struct("<4sHI")  # magic, version, length of what follows
MAX_STATE = 1 << 20  # a state larger than this is refused (an idle connection's is a few KiB)
_USABLE = (ConnectionState.IDLE, ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN)
_NFIELDS = 15


class NotIdle(ValueError):
    """The connection carries something that cannot travel (a stream, unsent or unparsed bytes)."""


class BadState(ValueError):
    """Bytes that are not a state written by ``dump`` of this version."""


@dataclass(frozen=True, slots=True)
class Extra:
    """What the proxy's connection object keeps beside the ``h2`` object."""

    opened: int  # streams opened in the connection's life (``max-reuse``)
    requests: int  # exchanges completed on it
    got_settings: bool  # the server's first SETTINGS arrived


def check_idle(conn: h2.connection.H2Connection) -> None:
    """Raise ``NotIdle`` unless ``conn`` may travel (see the module doc). (Counting the open
    streams also drops the closed ones ``h2`` still keeps: afterwards ``streams`` is empty.)"""
    if conn.state_machine.state not in _USABLE:
        raise NotIdle(f"connection state {conn.state_machine.state.name}")
    if conn.open_outbound_streams or conn.open_inbound_streams or conn.streams:
        raise NotIdle("a stream is open")
    if conn._data_to_send:  # h2 has no public "pending output" test
        raise NotIdle("bytes not sent yet")
    buf = conn.incoming_buffer
    if buf._data or buf._headers_buffer or conn._header_frames:
        raise NotIdle("a partial frame was received")


def _settings_out(s: h2.settings.Settings) -> dict[int, tuple[int, ...]]:
    return {int(code): tuple(values) for code, values in s._settings.items()}


def _settings_in(s: h2.settings.Settings, values: dict[int, tuple[int, ...]]) -> None:
    s._settings = {h2.settings._setting_code_from_int(code): deque(v) for code, v in values.items()}


Entries = tuple[tuple[bytes, bytes], ...]


def encoder_state(enc: Any) -> tuple[Entries, int, tuple[int, ...]]:
    """(entries oldest first, maximum size, size updates owed) of either codec's encoder."""
    if isinstance(enc, hpack_codec.Encoder):
        return enc.table_state()
    table = enc.header_table
    owed = tuple(enc.table_size_changes) if table.resized else ()
    return tuple(reversed(table.dynamic_entries)), int(table.maxsize), owed


def decoder_state(dec: Any) -> tuple[Entries, int]:
    """(entries oldest first, current maximum size) of either codec's decoder."""
    if isinstance(dec, hpack_codec.Decoder):
        return dec.table_state()
    return tuple(reversed(dec.header_table.dynamic_entries)), int(dec.header_table.maxsize)


def dump(conn: h2.connection.H2Connection, extra: Extra) -> bytes:
    """The state of an idle connection, as bytes (``NotIdle`` if it is not idle)."""
    check_idle(conn)
    dec = conn.decoder
    wm = conn._inbound_flow_control_window_manager
    fields = (
        conn.state_machine.state.value,
        conn.highest_inbound_stream_id,
        conn.highest_outbound_stream_id,
        encoder_state(conn.encoder), decoder_state(dec),
        dec.max_header_list_size, dec.max_allowed_table_size,
        _settings_out(conn.local_settings), _settings_out(conn.remote_settings),
        (conn.outbound_flow_control_window, conn.max_outbound_frame_size, conn.max_inbound_frame_size),
        {sid: -1 if why is None else why.value for sid, why in conn._closed_streams.items()},
        (wm.max_window_size, wm.current_window_size, wm._bytes_processed),
        extra.opened, extra.requests, extra.got_settings,
    )  # fmt: skip
    body = marshal.dumps(fields)
    if len(body) > MAX_STATE:
        raise NotIdle(f"state of {len(body)} bytes")
    return _HEADER.pack(MAGIC, VERSION, len(body)) + body


def load(data: bytes, config: h2.config.H2Configuration) -> tuple[h2.connection.H2Connection, Extra]:
    """A new ``H2Connection`` of ``config`` in the state ``dump`` wrote, and its ``Extra``
    (``BadState`` if the bytes are not such a state)."""
    if len(data) < _HEADER.size:
        raise BadState("too short")
    magic, version, length = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or length != len(data) - _HEADER.size:
        raise BadState(f"header {magic!r} v{version} length {length} of {len(data) - _HEADER.size}")
    try:
        fields = marshal.loads(data[_HEADER.size :])
        if not isinstance(fields, tuple) or len(fields) != _NFIELDS:
            raise BadState("not a connection state")
        return _apply(h2.connection.H2Connection(config), fields)
    except BadState:
        raise
    except (ValueError, TypeError, EOFError, KeyError) as exc:
        raise BadState(f"not a connection state: {exc!r}") from exc


def _apply(conn: h2.connection.H2Connection, f: tuple[Any, ...]) -> tuple[h2.connection.H2Connection, Extra]:
    (state, hi_in, hi_out, (e_entries, e_max, e_owed), (d_entries, d_max), d_list, d_allowed,
     local, remote, windows, closed, wm, opened, requests, got) = f  # fmt: skip
    conn.state_machine.state = ConnectionState(state)
    conn.highest_inbound_stream_id = int(hi_in)
    conn.highest_outbound_stream_id = int(hi_out)
    hpack_codec.install(conn)
    enc, dec = conn.encoder, conn.decoder
    assert isinstance(enc, hpack_codec.Encoder) and isinstance(dec, hpack_codec.Decoder)
    enc.restore(e_entries, e_max, e_owed)
    dec.restore(d_entries, d_max)
    dec.max_header_list_size = int(d_list)
    dec.max_allowed_table_size = int(d_allowed)
    _settings_in(conn.local_settings, local)
    _settings_in(conn.remote_settings, remote)
    out_window, out_frame, in_frame = (int(n) for n in windows)
    conn.outbound_flow_control_window = out_window
    conn.max_outbound_frame_size = out_frame
    conn.max_inbound_frame_size = in_frame
    conn.incoming_buffer.max_frame_size = in_frame
    for sid, why in dict(closed).items():
        conn._closed_streams[int(sid)] = None if why < 0 else h2.stream.StreamClosedBy(why)
    m = conn._inbound_flow_control_window_manager
    m.max_window_size, m.current_window_size, m._bytes_processed = (int(n) for n in wm)
    return conn, Extra(int(opened), int(requests), bool(got))


def to_memfd(data: bytes) -> int:
    """An anonymous memory file holding ``data``; the caller owns (and closes) the descriptor."""
    fd = os.memfd_create("poolproxy-h2", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_fd(fd: int) -> bytes:
    """The whole content of a memory file (``to_memfd``), read from offset 0 (``pread``: the
    duplicate shares its offset with the owner's copy, which must not matter)."""
    size = os.fstat(fd).st_size
    if size > MAX_STATE + _HEADER.size:
        raise BadState(f"state file of {size} bytes")
    parts: list[bytes] = []
    got = 0
    while got < size:
        chunk = os.pread(fd, size - got, got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)
