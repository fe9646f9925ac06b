"""The thief's side of a steal without the owner's help: claim, ``pidfd_getfd``, verify, take.

Theory of operation (``proxy.slots`` has the state machine, ``proxy.shm`` the layout and who moves
which counter)::

    victims in steal_order (their cells' idle counts)
      └ offers: the victim's IDLE slots, read without locking (a hint)
         └ steal_candidates: those of our key, lists in our reuse order, warmest first
            └ claim      IDLE → CLAIMED(us), compare-exchange (lost race: next candidate)
            └ getfd      pidfd_getfd(victim's pidfd, recorded fd)   refused → release, next
            └ verify     our duplicate's local/peer ports = the recorded ones   else → release, next
            └ peek       MSG_PEEK: EOF, bytes or error → TAKEN(discard), next (the owner closes it)
            └ state      HTTP/2 only: pidfd_getfd of its state file (``proxy.h2_handover``), read
                         whole; refused or unreadable → release, next

The caller then takes the slot and counts the connection in one step (``ServerRuntime.move(conn,
USED, slot=...)``: CLAIMED → TAKEN(us), the row's half of the owner's count dropped, ours added,
the owner's bell rung; refused only if the owner died and the master emptied the slot meanwhile:
the duplicate is then closed), and wraps the socket into a transport. No message is sent to the
owner and nothing waits for it: it learns of the TAKEN slot on its next pool operation or sweep,
and only then closes its copy (without ``shutdown``) and drops its cell's count. A steal therefore
costs a few atomic operations and system calls (a pidfd per victim incarnation is opened once
and kept).

``Thief.refused`` is set when the kernel refuses ``pidfd_getfd`` at run time (EPERM, ENOSYS: a
policy changed since the start-up probe); the worker then steals over the channel instead.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from proxy import pidfd
from proxy.h2_handover import BadState, read_fd
from proxy.pool_policy import ListKind, steal_candidates
from proxy.shm import R_TAKEOVERS_ASKED, R_TAKEOVERS_FAILED, ShmTable, WorkerState
from proxy.slot_array import SlotArray, SlotRecord

_LIVE = (WorkerState.STARTING, WorkerState.RUNNING, WorkerState.STOPPING)


@dataclass(slots=True)
class Claim:
    """A slot this worker claimed (CLAIMED(us)), and what it holds once fetched."""

    slots: SlotArray
    index: int
    tag: int  # the claimed tag
    record: SlotRecord
    sock: socket.socket | None = None  # our duplicate, once fetched and verified
    state: bytes | None = None  # HTTP/2: the connection's state (``proxy.h2_handover``), once fetched


class Thief:
    """This worker's steals by ``pidfd_getfd`` (see the module doc)."""

    def __init__(self, table: ShmTable, me: int) -> None:
        self.table = table
        self.me = me
        self.pidfds: dict[int, tuple[int, int, int]] = {}  # victim slot -> (pid, incarnation, pidfd)
        self.refused: str | None = None
        self.discarded = 0  # connections found dead when taken

    def close(self) -> None:
        for _, _, fd in self.pidfds.values():
            os.close(fd)
        self.pidfds.clear()

    # -- the whole steal --------------------------------------------------------------------
    def steal(
        self,
        server: int,
        victims: list[int],
        key_hash: int,
        order: tuple[ListKind, ...],
        family: int = socket.AF_INET,
    ) -> Claim | None:
        """A connection of ``key_hash`` from the first victim that has one: a claim whose ``sock`` is
        our verified, live duplicate, for the caller to take. None when there is none."""
        for victim in victims:
            slots = self.table.slots(server, victim)
            offers = slots.offers()
            if not offers:
                continue
            for pos in steal_candidates(offers, key_hash, order):
                claim = self.claim(slots, offers[pos][0], offers[pos][1])
                if claim is None:
                    continue  # somebody was quicker
                if self.fetch(claim, family):
                    return claim
                if self.refused is not None:
                    return None
        return None

    # -- the steps (separate for the tests that stop a thief between two of them) --------------
    def claim(self, slots: SlotArray, k: int, tag: int) -> Claim | None:
        """IDLE → CLAIMED(us) for slot ``k`` seen with ``tag``; the record read under the claim."""
        ctag = slots.claim(k, tag, self.me)
        if ctag is None:
            return None
        self.table.row(slots.index).add(R_TAKEOVERS_ASKED)
        return Claim(slots, k, ctag, slots.record(k))

    def fetch(self, claim: Claim, family: int = socket.AF_INET) -> bool:
        """Duplicate the owner's descriptor and check it. On failure the claim is settled here:
        released (refused, not the recorded connection) or taken as a discard (dead)."""
        rec, row = claim.record, self.table.row(claim.slots.index)
        fd = -1
        pfd = self._pidfd(claim.slots.owner, rec.owner_incarnation)
        if pfd is not None:
            try:
                fd = pidfd.getfd(pfd, rec.fd)
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.ENOSYS, errno.EACCES):
                    self.refused = f"pidfd_getfd refused: {errno.errorcode.get(exc.errno or 0, '?')}"
        if fd < 0:
            claim.slots.release(claim.index, claim.tag)
            row.add(R_TAKEOVERS_FAILED)
            return False
        try:
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fileno=fd)  # no probing syscalls
        except OSError:  # not a socket: the number was reused (the owner died meanwhile)
            os.close(fd)
            claim.slots.release(claim.index, claim.tag)
            row.add(R_TAKEOVERS_FAILED)
            return False
        try:
            same = (sock.getsockname()[1], sock.getpeername()[1]) == (rec.local_port, rec.peer_port)
        except (OSError, IndexError, TypeError):
            same = None  # no peer any more (reset): dead
        if same is False:
            sock.close()
            claim.slots.release(claim.index, claim.tag)
            row.add(R_TAKEOVERS_FAILED)
            return False
        if same is None or pidfd.peek(fd) is not pidfd.Peek.READY:
            sock.close()  # our copy only: the owner closes its own when it finalizes
            cell = self.table.cell(claim.slots.index, self.me)
            cell.take_slot(claim.slots, claim.index, claim.tag, rec.safe, discard=True)
            self.discarded += 1
            return False
        if rec.state_fd >= 0:  # HTTP/2: its protocol state too, or the connection stays the owner's
            state = self._state(pfd, rec.state_fd) if pfd is not None else None
            if state is None:
                sock.close()
                claim.slots.release(claim.index, claim.tag)
                row.add(R_TAKEOVERS_FAILED)
                return False
            claim.state = state
        claim.sock = sock
        return True

    @staticmethod
    def _state(pfd: int, target_fd: int) -> bytes | None:
        """The owner's HTTP/2 state file, read through our duplicate of its descriptor."""
        try:
            fd = pidfd.getfd(pfd, target_fd)
        except OSError:
            return None
        try:
            return read_fd(fd)
        except (OSError, BadState):
            return None
        finally:
            os.close(fd)

    def _pidfd(self, victim: int, incarnation: int) -> int | None:
        """A pidfd of the worker in slot ``victim`` if it is the ``incarnation`` that published;
        opened once per incarnation."""
        cached = self.pidfds.get(victim)
        if cached is not None:
            if cached[1] == incarnation:
                return cached[2]
            os.close(cached[2])
            del self.pidfds[victim]
        w = self.table.worker(victim)
        if w.incarnation != incarnation or w.state not in _LIVE or w.pid <= 0:
            return None
        try:
            pfd = pidfd.pidfd_open(w.pid)
        except OSError:
            return None
        again = self.table.worker(victim)  # the pid named that incarnation when the pidfd was opened
        if (again.pid, again.incarnation) != (w.pid, incarnation) or again.state not in _LIVE:
            os.close(pfd)
            return None
        self.pidfds[victim] = (w.pid, incarnation, pfd)
        return pfd
