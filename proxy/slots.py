"""The idle-connection slot: its state machine, and how a slot's state is packed into one word.

Theory of operation
-------------------
Every idle connection a worker may lend is *published* in a slot of the shared table (the layout is
in ``proxy.shm``): per (server, owner worker) a bounded array of slots, each a record of eight words
whose first word, the **tag**, holds the state. Any worker moves a tag with compare-exchange; the
other words (descriptor number, ports, kind, key hash, ...) are written by the owner only while the
slot is EMPTY, and read by the others only after they claimed the tag, so a claim sees the record
that was published with it.

::

    EMPTY ──publish (owner)──▶ IDLE ──claim (any worker, CAS)──▶ CLAIMED(w) ──take (w)──▶ TAKEN(w)
      ▲                         ▲  ◀──release (w, or the master for a dead w)──┘              │
      │                         └─ the owner's claim is followed at once by unpublish ──▶ EMPTY │
      └──────────────────── finalize (owner: its copy closed, its count dropped) ◀────────────┘

- Only the owner publishes, only the owner finalizes, and the owner never reads, writes or closes a
  descriptor whose slot another worker has claimed.
- ``take`` says the thief holds its duplicate (or found the connection dead: ``discard``); either
  way the owner then closes its own copy without ``shutdown()`` and counts the connection no more.
- The master repairs what a dead worker left (``proxy.shm`` ``reconcile_worker``): the slots of a dead
  owner all become EMPTY (its copies died with it); a slot CLAIMED by a dead thief goes back to IDLE
  (a thief writes nothing before ``take``, so the connection is as the owner left it); a slot TAKEN
  by a dead thief is left for its owner to finalize (the thief's copies died with it).

The tag word (a signed int64, never negative)::

    bits 0-3   state (SlotState)
    bit  4     discard (TAKEN only: the thief found the connection dead and did not keep it)
    bits 8-23  claimer: the worker slot that claimed or took it
    bits 24-62 version: incremented by each publish, so that a tag read before an unpublish and
               a republish of the same slot never matches again (no ABA)

Everything here is pure: no shared memory, no descriptor.
"""

from __future__ import annotations

import enum
import socket
from typing import Final


class SlotState(enum.IntEnum):
    EMPTY = 0
    IDLE = 1
    CLAIMED = 2
    TAKEN = 3


class Actor(enum.Enum):
    OWNER = "owner"  # the worker whose slot array it is
    THIEF = "thief"  # the worker named in the tag as claimer (the owner too, claiming its own)
    MASTER = "master"  # reconcile, for a dead worker


class IllegalSlotMove(Exception):
    """A slot was moved between two states that no rule links, or by an actor the rule excludes."""


E, I, C, T = SlotState.EMPTY, SlotState.IDLE, SlotState.CLAIMED, SlotState.TAKEN  # noqa: E741
O, W, M = Actor.OWNER, Actor.THIEF, Actor.MASTER  # noqa: E741

# (from, to) -> who may make the move. The table *is* the protocol: read it, not the callers.
TRANSITIONS: Final[dict[tuple[SlotState, SlotState], frozenset[Actor]]] = {
    (E, I): frozenset({O}),  # publish: the record is written first, the tag last
    (I, C): frozenset({O, W}),  # claim: compare-exchange, by a thief or by the owner itself
    (C, I): frozenset({W, M}),  # release: the thief gives up (nothing touched), or it died
    (C, E): frozenset({O, M}),  # the owner's own claim ends in unpublish; a dead owner's slots
    (C, T): frozenset({W}),  # take: the thief holds its duplicate (or discards a dead connection)
    (T, E): frozenset({O, M}),  # finalize: the owner closed its copy; a dead owner's slots
    (I, E): frozenset({M}),  # a dead owner's slots (its copies died with it)
}
del E, I, C, T, O, W, M

# The same table for the hot path, keyed by ``from * 16 + to`` and listing the actors in a tuple:
# an enum member's hash is a Python-level ``__hash__`` (a frame per lookup), an int's is not, and
# ``in`` on a tuple finds a member by identity.
_ALLOWED: Final[dict[int, tuple[Actor, ...]]] = {
    int(frm) * 16 + int(to): tuple(actors) for (frm, to), actors in TRANSITIONS.items()
}
_STATES: Final[tuple[SlotState, ...]] = tuple(SlotState)


def check_move(frm: SlotState, to: SlotState, actor: Actor) -> None:
    """Raise ``IllegalSlotMove`` unless ``actor`` may move a slot from ``frm`` to ``to``."""
    allowed = _ALLOWED.get(int(frm) * 16 + int(to))
    if allowed is None or actor not in allowed:
        raise IllegalSlotMove(f"slot {frm.name} -> {to.name} by the {actor.value}")


# -- the tag word -----------------------------------------------------------------------------------
STATE_MASK: Final = 0xF
DISCARD: Final = 0x10
CLAIMER_SHIFT: Final = 8
CLAIMER_MASK: Final = 0xFFFF
VERSION_SHIFT: Final = 24
VERSION_MASK: Final = (1 << 39) - 1
MAX_CLAIMER: Final = CLAIMER_MASK


def state_of(tag: int) -> SlotState:
    s = tag & STATE_MASK
    if s < len(_STATES):  # ``SlotState(s)`` runs the enum machinery's Python code: 3 frames
        return _STATES[s]
    raise ValueError(f"{s} is not a valid SlotState")


def claimer_of(tag: int) -> int:
    return (tag >> CLAIMER_SHIFT) & CLAIMER_MASK


def version_of(tag: int) -> int:
    return tag >> VERSION_SHIFT


def discarded(tag: int) -> bool:
    return bool(tag & DISCARD)


def make_tag(state: SlotState, version: int, claimer: int = 0, *, discard: bool = False) -> int:
    if not 0 <= claimer <= MAX_CLAIMER:
        raise ValueError(f"claimer {claimer} out of range")
    return (
        ((version & VERSION_MASK) << VERSION_SHIFT)
        | (claimer << CLAIMER_SHIFT)
        | (DISCARD if discard else 0)
        | int(state)
    )


def published(tag: int) -> int:
    """The tag of the next publish in a slot whose tag is ``tag`` (EMPTY): IDLE, version + 1."""
    return make_tag(SlotState.IDLE, version_of(tag) + 1)


def claimed(tag: int, by: int) -> int:
    """IDLE ``tag`` claimed by worker ``by``: same version."""
    return make_tag(SlotState.CLAIMED, version_of(tag), by)


def released(tag: int) -> int:
    """CLAIMED ``tag`` given back: IDLE with the same version (the same publish, untouched)."""
    return make_tag(SlotState.IDLE, version_of(tag))


def taken(tag: int, *, discard: bool = False) -> int:
    """CLAIMED ``tag`` taken by its claimer (``discard``: found dead, not kept)."""
    return make_tag(SlotState.TAKEN, version_of(tag), claimer_of(tag), discard=discard)


def emptied(tag: int) -> int:
    """Any ``tag`` made EMPTY, its version kept (the next publish increments it)."""
    return make_tag(SlotState.EMPTY, version_of(tag))


def describe(tag: int) -> str:
    """``IDLE v3``, ``CLAIMED(w1) v3``, ``TAKEN(w1, discard) v3``: for reprs and messages."""
    state = state_of(tag)
    who = ""
    if state in (SlotState.CLAIMED, SlotState.TAKEN):
        who = f"(w{claimer_of(tag)}{', discard' if discarded(tag) else ''})"
    return f"{state.name}{who} v{version_of(tag)}"


# -- the meta word: kind, protocol, requests served -------------------------------------------------
PROTO_H1: Final = 1
PROTO_H2: Final = 2  # h2c: the slot also records the descriptor of its state (``proxy.h2_handover``)


def make_meta(*, safe: bool, reqs: int, proto: int = PROTO_H1) -> int:
    return (1 if safe else 0) | ((proto & 0xFF) << 8) | ((min(reqs, (1 << 32) - 1) & 0xFFFFFFFF) << 16)


def meta_safe(meta: int) -> bool:
    return bool(meta & 1)


def meta_proto(meta: int) -> int:
    return (meta >> 8) & 0xFF


def meta_reqs(meta: int) -> int:
    return (meta >> 16) & 0xFFFFFFFF


def make_ports(local: int, peer: int) -> int:
    return ((local & 0xFFFF) << 16) | (peer & 0xFFFF)


def socket_ports(sock: socket.socket) -> int | None:
    """``make_ports`` of a connected TCP socket's local and peer ports; None for another address
    family, or a socket already reset."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        return make_ports(sock.getsockname()[1], sock.getpeername()[1])
    except OSError:
        return None


def split_ports(ports: int) -> tuple[int, int]:
    return (ports >> 16) & 0xFFFF, ports & 0xFFFF


def make_owner(slot: int, incarnation: int) -> int:
    return (slot << 32) | (incarnation & 0xFFFFFFFF)


def split_owner(owner: int) -> tuple[int, int]:
    return owner >> 32, owner & 0xFFFFFFFF
