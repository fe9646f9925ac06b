"""The channel between workers: idle connection takeover (fd passing) and queue slot hand-off.

Theory of operation
-------------------
Every worker slot owns one ``AF_UNIX``/``SOCK_DGRAM`` socket bound to an abstract address derived
from the shared-memory segment's name and the slot (``\\0<segment>.w<slot>``), so any worker — and
the master — can reach any slot without a file on disk, and a respawned worker simply binds the
same name again. Datagrams are small fixed structs (``struct`` format below); a file descriptor
travels as ``SCM_RIGHTS`` ancillary data of a GIVE datagram.

Takeover (stealing), thief T, victim V::

    T ── ASK(seq, server, key, order) ──▶ V     V pops an idle connection of that key from its pool
    T ◀─ GIVE(seq, server, reqs, kind)+fd ── V   (taken out of V's loop and counters *before* the
    T ◀─ NONE(seq) ──────────────────────── V    send; V then drops its own copy without shutdown)

An HTTP/2 connection travels with a second descriptor in the same GIVE: a memory file holding its
protocol state (``proxy.h2_handover``), closed by the sender once sent, read whole by the receiver.

The thief waits for the answer at most ``deadline`` seconds (stealing must never cost more than a
connect would) and then opens a connection itself. An answer arriving after the deadline is not
lost: a GIVE'n descriptor is handed to ``on_late_fd`` (the worker pools it as its own idle
connection), so a connection is never used by two workers and never leaked.

Queue hand-off: ``SLOT(server)`` tells a worker that a ``maxconn`` slot of that server was
transferred to it for its oldest waiter (``served`` stays counted); ``KILL(server)`` asks a worker to
close one idle connection of that server (``strict-maxconn``); ``PURGE(server, n, idle_total)``
from the master asks for this worker's share of a purge.
"""

from __future__ import annotations

import array
import asyncio
import os
import socket
import struct
from dataclasses import dataclass
from typing import Protocol

# kind byte, then: seq u32, server u32, key u64, order u8, reqs u32, idle u32, n u32
_MSG = struct.Struct("<cIIQBIII")
ASK, GIVE, NONE, SLOT, KILL, PURGE = b"A", b"G", b"N", b"S", b"K", b"P"
_ANC_SPACE = socket.CMSG_SPACE(2 * array.array("i").itemsize)  # a GIVE carries up to two descriptors


@dataclass(frozen=True, slots=True)
class Message:
    kind: bytes
    seq: int = 0
    server: int = 0
    key: int = 0
    order: int = 0
    reqs: int = 0
    idle: int = 0
    n: int = 0

    def encode(self) -> bytes:
        return _MSG.pack(self.kind, self.seq, self.server, self.key, self.order, self.reqs, self.idle, self.n)

    @classmethod
    def decode(cls, data: bytes) -> Message:
        return cls(*_MSG.unpack(data[: _MSG.size]))


def slot_address(base: str, slot: int) -> bytes:
    """The abstract socket address of a worker slot (``base`` is the shm segment name)."""
    return b"\0" + f"{base.strip('/')}.w{slot}".encode()


def notify(base: str, slot: int, msg: Message) -> bool:
    """Send one datagram to a worker from a process without a channel (the master)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        try:
            s.sendto(msg.encode(), slot_address(base, slot))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Handed:
    """A connection received from another worker."""

    fd: int
    server: int
    reqs: int
    kind: int  # 0 = idle (unsafe), 1 = safe
    state_fd: int = -1  # HTTP/2: the memory file of its state (``proxy.h2_handover``); -1: HTTP/1


class Victim(Protocol):
    """What the channel asks of its worker."""

    def give_idle(self, server: int, key: int, order: int) -> tuple[int, int, int, int] | None:
        """Detach an idle connection and return ``(dup'd fd, reqs, kind, state fd)`` (state fd: an
        HTTP/2 connection's state, ``proxy.h2_handover``, else -1); None if nothing fits. The
        channel closes both descriptors once it has sent them."""

    def handed_over(self, server: int, thief: int, sent: bool) -> None:
        """After give_idle: whether the descriptor left for ``thief`` (the connection is its now)."""

    def slot_granted(self, server: int) -> None: ...
    def kill_idle(self, server: int) -> None: ...
    def purge(self, server: int, to_close: int, idle_total: int) -> None: ...
    def adopt_late(self, handed: Handed) -> None: ...


class Channel:
    """This worker's end: answers other workers and asks them for connections."""

    def __init__(self, loop: asyncio.AbstractEventLoop, base: str, slot: int, worker: Victim) -> None:
        self.loop = loop
        self.base = base
        self.slot = slot
        self.worker = worker
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(slot_address(base, slot))
        self.seq = 0
        self.waiting: dict[int, asyncio.Future[Handed | None]] = {}
        self.asked = self.given = self.failed = 0
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_result(None)

    # -- thief side -----------------------------------------------------------------------------
    async def ask(self, victim: int, server: int, key: int, order: int, deadline: float) -> Handed | None:
        """Ask ``victim`` for an idle connection; None when it has none or does not answer in time."""
        self.seq = seq = (self.seq + 1) & 0xFFFFFFFF
        fut: asyncio.Future[Handed | None] = self.loop.create_future()
        self.waiting[seq] = fut
        self.asked += 1
        if not self._send(victim, Message(ASK, seq=seq, server=server, key=key, order=order)):
            del self.waiting[seq]
            self.failed += 1
            return None
        try:
            got = await asyncio.wait_for(fut, deadline)
        except TimeoutError:
            got = None
        finally:
            self.waiting.pop(seq, None)
        if got is None:
            self.failed += 1
        return got

    def send(self, slot: int, msg: Message) -> bool:
        return self._send(slot, msg)

    def _send(self, slot: int, msg: Message, fds: list[int] | None = None) -> bool:
        try:
            if not fds:
                self.sock.sendto(msg.encode(), slot_address(self.base, slot))
            else:
                self.sock.sendmsg(
                    [msg.encode()],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
                    0,
                    slot_address(self.base, slot),
                )
        except OSError:  # the peer is gone (respawning) or its queue is full: treat as no answer
            return False
        return True

    # -- both sides: incoming datagrams ---------------------------------------------------------
    def _on_readable(self) -> None:
        for _ in range(64):
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(_MSG.size, _ANC_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            fds = _fds(ancdata)
            if len(data) < _MSG.size:
                for fd in fds:
                    os.close(fd)
                continue
            self._dispatch(Message.decode(data), fds, addr)

    def _dispatch(self, msg: Message, fds: list[int], addr: object) -> None:
        kind = msg.kind
        if kind == ASK:
            self._answer(msg, addr)
        elif kind == GIVE:
            if not fds:
                return
            handed = Handed(fds[0], msg.server, msg.reqs, msg.order, fds[1] if len(fds) > 1 else -1)
            for extra in fds[2:]:
                os.close(extra)
            fut = self.waiting.pop(msg.seq, None)
            if fut is not None and not fut.done():
                fut.set_result(handed)
            else:
                self.worker.adopt_late(handed)  # answered after our deadline: keep it, never leak it
        elif kind == NONE:
            fut = self.waiting.pop(msg.seq, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif kind == SLOT:
            self.worker.slot_granted(msg.server)
        elif kind == KILL:
            self.worker.kill_idle(msg.server)
        elif kind == PURGE:
            self.worker.purge(msg.server, msg.n, msg.idle)
        for fd in fds if kind != GIVE else ():
            os.close(fd)

    def _answer(self, msg: Message, addr: object) -> None:
        thief = _slot_of(addr, self.base)
        if thief is None:
            return
        got = self.worker.give_idle(msg.server, msg.key, msg.order)
        if got is None:
            self._send(thief, Message(NONE, seq=msg.seq))
            return
        fd, reqs, kind, state_fd = got
        sent = False
        try:
            sent = self._send(
                thief,
                Message(GIVE, seq=msg.seq, server=msg.server, reqs=reqs, order=kind),
                fds=[fd] if state_fd < 0 else [fd, state_fd],
            )
            if sent:
                self.given += 1
        finally:
            os.close(fd)  # the duplicates travel in the datagram; our copies go now
            if state_fd >= 0:
                os.close(state_fd)
            self.worker.handed_over(msg.server, thief, sent)


def _fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, typ, data in ancdata:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - (len(data) % arr.itemsize)])
            fds.extend(arr)
    return fds


def _slot_of(addr: object, base: str) -> int | None:
    if not isinstance(addr, bytes):
        return None
    prefix = slot_address(base, 0)[:-1]
    if not addr.startswith(prefix):
        return None
    try:
        return int(addr[len(prefix) :])
    except ValueError:
        return None

