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
- What travels is the whole ``H2Connection`` (pickled): the HPACK encoder's and decoder's dynamic
  tables and their size limits (including a table-size update still owed to the peer), both sides'
  SETTINGS (acknowledged or pending), the connection's flow-control windows both ways (and the
  inbound window manager's unacknowledged count), the highest stream ids used each way, and the
  recently closed streams (a late frame of one is still recognised). ``load`` returns an equal
  object that the receiver continues to use as its own.
- The bytes are only exchanged between the workers of one proxy (same program, same user), through
  a descriptor duplicated from the owner (``pidfd_getfd``) or received from it (``SCM_RIGHTS``):
  ``load`` refuses anything without this module's header and version. Unpickling is trusted input
  from the same proxy only; never feed it bytes from the network.
- ``to_memfd`` puts the bytes in an anonymous memory file (``memfd_create``) whose descriptor the
  owner publishes with the connection's slot and closes when the slot is freed; ``read_fd`` reads
  such a file whole from a duplicated descriptor (at its offset 0, whatever the shared offset).

Bytes received from the server but not yet given to the ``h2`` object are not part of the state:
the owner refuses to publish while its own buffer holds a partial frame, and the thief refuses a
socket with anything to read (``MSG_PEEK``), so nothing is ever lost between the two.
"""

from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass

import h2.connection
from h2.connection import ConnectionState

MAGIC = b"PPH2"
VERSION = 1
_HEADER = struct.Struct("<4sHI")  # magic, version, length of what follows
MAX_STATE = 1 << 20  # a state larger than this is refused (an idle connection's is a few KiB)
_USABLE = (ConnectionState.IDLE, ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN)


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
    """Raise ``NotIdle`` unless ``conn`` may travel (see the module doc)."""
    if conn.state_machine.state not in _USABLE:
        raise NotIdle(f"connection state {conn.state_machine.state.name}")
    if conn.open_outbound_streams or conn.open_inbound_streams:
        raise NotIdle("a stream is open")
    if conn._data_to_send:  # h2 has no public "pending output" test
        raise NotIdle("bytes not sent yet")
    buf = conn.incoming_buffer
    if buf._data or buf._headers_buffer or conn._header_frames:
        raise NotIdle("a partial frame was received")


def dump(conn: h2.connection.H2Connection, extra: Extra) -> bytes:
    """The state of an idle connection, as bytes (``NotIdle`` if it is not idle)."""
    check_idle(conn)
    body = pickle.dumps((conn, extra), protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) > MAX_STATE:
        raise NotIdle(f"state of {len(body)} bytes")
    return _HEADER.pack(MAGIC, VERSION, len(body)) + body


def load(data: bytes) -> tuple[h2.connection.H2Connection, Extra]:
    """The connection and its ``Extra`` back from ``dump``'s bytes (``BadState`` if not)."""
    if len(data) < _HEADER.size:
        raise BadState("too short")
    magic, version, length = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or length != len(data) - _HEADER.size:
        raise BadState(f"header {magic!r} v{version} length {length} of {len(data) - _HEADER.size}")
    try:
        conn, extra = pickle.loads(data[_HEADER.size :])  # from our own workers only
    except Exception as exc:  # any unpickling failure is a bad state
        raise BadState(f"unpickling failed: {exc!r}") from exc
    if not isinstance(conn, h2.connection.H2Connection) or not isinstance(extra, Extra):
        raise BadState("not a connection state")
    return conn, extra


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
