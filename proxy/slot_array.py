"""The slot array: where a worker publishes its lendable idle connections to one server.

One array per (server, worker) in the shared table (``proxy.shm`` has the layout diagram and who
moves which counter at each transition; ``proxy.slots`` the state machine and the tag word). This
module is the view: the offsets of the array header and of a slot's eight words, and
``SlotArray``, whose methods are the slot moves that carry no counter. The two that do (a take, a
finalize) are ``ServerCell.take_slot`` and ``ServerCell.finalize_slot`` in ``proxy.shm``: they
move the tag inside a bracket of the mover's cell.
"""

from __future__ import annotations

import mmap
import struct
from typing import Final, NamedTuple

from proxy import slots as sl
from proxy.atomics import Atomics
from proxy.slots import SlotState

SLOT_HEADER: Final = 64  # a slot array's header: 8 words
SLOT_SIZE: Final = 64  # one slot: 8 words
NSLOTS: Final = 128  # default slots per (server, worker): idle connections beyond are not lent

# slot array header offsets, and slot record offsets (proxy.slots: the tag word and the packing)
A_BELL, A_HIGH = 0, 8
S_TAG, S_OWNER, S_FD, S_CONN_ID, S_PORTS, S_META, S_KEY, S_IDLE_SINCE = range(0, 64, 8)
_FD_MASK: Final = 0xFFFFFFFF  # the fd word: the socket's descriptor, and above it state_fd + 1


class SlotRecord(NamedTuple):
    """What a published slot says of its connection (read by a thief after its claim). A named
    tuple: built on every steal, it costs less than a frozen dataclass."""

    owner_slot: int
    owner_incarnation: int
    fd: int
    conn_id: int
    local_port: int
    peer_port: int
    safe: bool
    proto: int
    reqs: int
    key_hash: int
    idle_since_ns: int
    state_fd: int = -1  # HTTP/2: the owner's descriptor of the connection's state (-1: none)


# A thief's view of one published slot, for ``pool_policy.steal_candidates``:
# (index, tag, meta, key hash, idle since ns)
Offer = tuple[int, int, int, int, int]

_RECORDS: dict[int, struct.Struct] = {}


def _records(n: int) -> struct.Struct:
    st = _RECORDS.get(n)
    if st is None:
        st = _RECORDS[n] = struct.Struct(f"<{n * (SLOT_SIZE // 8)}q")
    return st


class SlotArray:
    """The slots in which worker ``owner`` publishes its idle connections to server ``index``.

    The state machine and the tag word are ``proxy.slots``. Who calls what:

    - the owner: ``publish``, ``unpublish`` (its own claim, then EMPTY), ``ServerCell.finalize_slot``
      (TAKEN → EMPTY, after it closed its copy), ``tags``/``bell`` (to learn what others did);
    - a thief: ``offers`` (a lock-free snapshot, a hint only), ``claim`` (compare-exchange), then
      ``record`` (the fields, stable while claimed), then ``ServerCell.take_slot`` or ``release``;
    - the master: ``clear_dead_owner`` and ``return_claims`` (``ShmTable.reconcile_worker``).

    The header's ``bell`` is incremented by whoever changes a slot under the owner's feet (a take,
    a repair); the owner compares it with the value it last saw to know when to look. ``high`` is
    one past the highest slot the owner has published in, so that scans stop there."""

    __slots__ = ("_a", "_mm", "_slots", "base", "index", "nslots", "owner")

    def __init__(self, a: Atomics, mm: mmap.mmap, base: int, index: int, owner: int, nslots: int) -> None:
        self._a = a
        self._mm = mm
        self.base = base
        self._slots = base + SLOT_HEADER
        self.index = index
        self.owner = owner
        self.nslots = nslots

    def tag_off(self, k: int) -> int:
        if not 0 <= k < self.nslots:
            raise IndexError(f"slot {k} out of range (0..{self.nslots - 1})")
        return self._slots + k * SLOT_SIZE

    def tag(self, k: int) -> int:
        return self._a.load(self.tag_off(k))

    @property
    def bell(self) -> int:
        return self._a.load(self.base + A_BELL)

    @property
    def high(self) -> int:
        return self._a.load(self.base + A_HIGH)

    def ring(self) -> None:
        self._a.fetch_add(self.base + A_BELL, 1)

    # -- the owner ------------------------------------------------------------------------------
    def publish(
        self, k: int, *, owner: int, fd: int, conn_id: int, ports: int, meta: int, key_hash: int,
        idle_since_ns: int, state_fd: int = -1,
    ) -> int:  # fmt: skip
        """Write the record of EMPTY slot ``k``, then its tag IDLE (version + 1). Returns the tag.
        ``owner`` is ``slots.make_owner(slot, incarnation)``; ``state_fd`` (HTTP/2: the descriptor
        of the connection's state) shares the fd word: its low half is ``fd``, its high half
        ``state_fd + 1``."""
        a, off = self._a, self.tag_off(k)
        tag = a.load(off)
        sl.check_move(sl.state_of(tag), SlotState.IDLE, sl.Actor.OWNER)
        a.fetch_max(self.base + A_HIGH, k + 1)  # first: a scan may then meet the slot still EMPTY
        new = sl.published(tag)
        a.store_many((
            off + S_OWNER, owner,
            off + S_FD, (fd & _FD_MASK) | ((state_fd + 1) << 32),
            off + S_CONN_ID, conn_id,
            off + S_PORTS, ports,
            off + S_META, meta,
            off + S_KEY, key_hash,
            off + S_IDLE_SINCE, idle_since_ns,
            off, new,  # last: the record is complete before anybody can claim it
        ))  # fmt: skip
        return new

    def unpublish(self, k: int, tag: int) -> bool:
        """The owner takes slot ``k`` back (to reuse or close the connection): its own claim of
        IDLE ``tag``, then EMPTY. False when another worker claimed it first (hands off)."""
        a, off = self._a, self.tag_off(k)
        mine = sl.claimed(tag, self.owner)
        if not a.compare_exchange(off, tag, mine):
            return False
        a.store(off, sl.emptied(mine))
        return True

    def tags(self) -> list[int]:
        """The tags of slots ``0 .. high-1`` (a snapshot, each word read once)."""
        n = self._a.load(self.base + A_HIGH)
        if n <= 0:
            return []
        return list(_records(n).unpack_from(self._mm, self._slots)[:: SLOT_SIZE // 8])

    # -- a thief --------------------------------------------------------------------------------
    def offers(self) -> list[Offer]:
        """The IDLE slots as (index, tag, meta, key hash, idle since), read without locking: a
        hint, which ``claim`` confirms (a record is complete before its tag says IDLE)."""
        n = self._a.load(self.base + A_HIGH)
        if n <= 0:
            return []
        words = _records(n).unpack_from(self._mm, self._slots)
        idle, mask = SlotState.IDLE, sl.STATE_MASK
        # columns by slicing (done in C), then one pass over the IDLE ones
        tags, metas = words[0::8], words[S_META // 8 :: 8]
        cols = zip(tags, metas, words[S_KEY // 8 :: 8], words[S_IDLE_SINCE // 8 :: 8], strict=True)
        return [(k, t, m, h, i) for k, (t, m, h, i) in enumerate(cols) if t & mask == idle]

    def claim(self, k: int, tag: int, by: int) -> int | None:
        """IDLE ``tag`` → CLAIMED(by): the claimed tag, or None if the slot changed meanwhile."""
        mine = sl.claimed(tag, by)
        return mine if self._a.compare_exchange(self.tag_off(k), tag, mine) else None

    def record(self, k: int) -> SlotRecord:
        """The fields of slot ``k``; stable while the caller's claim holds."""
        a, off = self._a, self.tag_off(k)
        owner, meta, ports = a.load(off + S_OWNER), a.load(off + S_META), a.load(off + S_PORTS)
        oslot, inc = sl.split_owner(owner)
        local, peer = sl.split_ports(ports)
        fds = a.load(off + S_FD)
        return SlotRecord(
            oslot, inc, fds & _FD_MASK, a.load(off + S_CONN_ID), local, peer, sl.meta_safe(meta),
            sl.meta_proto(meta), sl.meta_reqs(meta), a.load(off + S_KEY), a.load(off + S_IDLE_SINCE),
            (fds >> 32) - 1,
        )  # fmt: skip

    def release(self, k: int, ctag: int) -> bool:
        """CLAIMED ``ctag`` → IDLE: the claimer gives the connection back untouched. False if the
        slot was repaired meanwhile (its owner died)."""
        return self._a.compare_exchange(self.tag_off(k), ctag, sl.released(ctag))

    # ``take`` (CLAIMED → TAKEN) and ``finalize`` (TAKEN → EMPTY) move counters with the tag, in a
    # seq bracket of the mover's cell: they are ``ServerCell.take_slot`` and ``finalize_slot``.

    # -- the master -----------------------------------------------------------------------------
    def clear_dead_owner(self) -> tuple[int, int, int]:
        """Every slot of a dead owner → EMPTY (its copies died with it; a thief that holds a
        duplicate keeps the connection, counted in its own cell). Returns the slots cleared, and
        how many of them were TAKEN, and of those safe (what its cell still counted)."""
        a = self._a
        cleared = taken = safe = 0
        for k in range(self.nslots):
            off = self.tag_off(k)
            while True:
                tag = a.load(off)
                state = sl.state_of(tag)
                if state is SlotState.EMPTY:
                    break
                if a.compare_exchange(off, tag, sl.emptied(tag)):
                    cleared += 1
                    if state is SlotState.TAKEN:
                        taken += 1
                        safe += sl.meta_safe(a.load(off + S_META))
                    break
        a.store(self.base + A_HIGH, 0)
        return cleared, taken, safe

    def return_claims(self, dead: int, *, owner_alive: bool) -> int:
        """Slots CLAIMED by the dead worker ``dead``: back to IDLE for a live owner (the thief wrote
        nothing before taking), EMPTY for a dead one. TAKEN ones stay for the owner to finalize.
        Rings the bell when anything changed. Returns the slots repaired."""
        a = self._a
        fixed = 0
        for k in range(a.load(self.base + A_HIGH)):
            off = self.tag_off(k)
            tag = a.load(off)
            if sl.state_of(tag) is not SlotState.CLAIMED or sl.claimer_of(tag) != dead:
                continue
            to = sl.released(tag) if owner_alive else sl.emptied(tag)
            if a.compare_exchange(off, tag, to):  # else its owner moved it (it may: its own claim)
                fixed += 1
        if fixed:
            self.ring()
        return fixed

    def counts(self) -> dict[str, int]:
        """Slots by state (observation)."""
        out = {s.name.lower(): 0 for s in SlotState}
        for tag in self.tags():
            out[sl.state_of(tag).name.lower()] += 1
        out["empty"] += self.nslots - sum(out.values())
        return out

    def __repr__(self) -> str:
        c = self.counts()
        return (
            f"<SlotArray server={self.index} owner={self.owner} idle={c['idle']} claimed={c['claimed']}"
            f" taken={c['taken']}>"
        )
