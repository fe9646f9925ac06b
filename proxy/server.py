"""A server as one worker sees it: configuration, this worker's idle pool and local queue, its row and
cell in the shared-memory table — and the accounting of every connection to it.

The numbers that decisions read are **server-wide** and live in shm (``ServerRow``: ``used``,
``idle``, ``safe``, ``served``, ``cur_conns``, ``est_need``, ...); this worker moves them only through
its own ``ServerCell`` (paired row+cell operations, see ``proxy.shm``), so the master can repair the
table when a worker dies. What stays private to the worker is the pool itself (``IdlePool``) and the
local list of requests waiting for a ``maxconn`` slot (``waiters``).

Accounting. What the shared counters count a connection as is one ``Acct`` state, kept in the
connection's ``acct`` field but written **only** by ``ServerRuntime.move`` (nobody else assigns it).
Every legal move is one row of ``TRANSITIONS`` with the counter operation it performs; any other
move raises ``IllegalTransition``. HAProxy's ``srv_use_conn``/``srv_release_conn`` are the moves
into and out of ``USED``.

==========  ===============================================  ==================================
state       counted in                                       when
==========  ===============================================  ==================================
NONE        nothing                                          not opened yet, closed, handed away
COUNTED     ``cur_conns``                                    connecting / adopted, before use;
                                                             leaving for another worker
PRIVATE     ``cur_conns``                                    owned by one client session
USED        ``cur_conns`` + ``used``                         carrying a request
IDLE        ``cur_conns`` + ``idle``                         pooled, unsafe list
SAFE        ``cur_conns`` + ``idle`` + ``safe``              pooled, safe list
TAKEN       nothing                                          taken from our slot by another
                                                             worker (our copy is released)
==========  ===============================================  ==================================

Two moves can be refused by the shared numbers and return False (the connection keeps its state):
``NONE → COUNTED`` past a connection limit (``maxconn + nbthread - 1``, ``strict-maxconn``) and
``USED → IDLE/SAFE`` past ``pool-max-conn``. The two moves across workers carry their slot
(``SlotMove``): ``NONE → USED`` takes a connection from another worker's slot (``proxy.slots``:
CLAIMED → TAKEN, the row's half of the owner's count dropped and ours added, one bracket; refused
when the owner died meanwhile), and ``IDLE/SAFE → TAKEN`` is the owner finalizing that slot (the
cell's half of its count dropped, the slot EMPTY).

``rebind`` passes the state of a connection counted before its protocol object existed (a TLS
handshake's ALPN answer decides between HTTP/1 and HTTP/2) to that object, no counter moving.

Lending (the owner's side of ``proxy.slots``). When this worker lends (``lend_from``: several
workers, ``tune.idle-pool.shared on``), a pooled connection that is ``shareable`` (plain TCP,
HTTP/1 or h2c: never a TLS one, whose protocol state cannot leave this process) has reading paused
(so nothing meant for a thief can be read here) and is published in one of this worker's slots for
the server; an HTTP/2 one only when idle, with its protocol state (``Conn.lend_state``: a memory
file whose descriptor the slot records beside the socket's, ``proxy.h2_handover``).
Before the owner reuses or closes a published connection it takes the slot back (``unpark``: its
own claim); if another worker claimed it first, the connection leaves the pool for ``lent`` and is not
touched again until its slot says what became of it: TAKEN (``settle`` finalizes: our copy closed
without ``shutdown()``, our count dropped) or IDLE again (the claimer gave it back: into the pool
again). ``settle`` runs when the slot array's bell rang, on every pool operation, and from the
worker's sweep, which also peeks at every parked connection (``Conn.peek_ready``) and closes those
the server closed.
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from proxy.config.model import Server
from proxy.pool import ConnKey, IdlePool, ListKind, key_hash
from proxy.shm import (
    R_ADMIN_STATE,
    R_EST_NEED,
    R_HRSP_2XX,
    R_HRSP_3XX,
    R_HRSP_4XX,
    R_HRSP_5XX,
    R_IDLE,
    R_MAXCONN,
    R_OPER_STATE,
    R_QUEUE_LEN,
    R_REQUESTS,
    R_REUSES,
    R_USED,
    R_WEIGHT,
    UNLIMITED,
    AdminState,
    OperState,
    ServerCell,
)
from proxy.slot_array import SlotArray
from proxy.slots import PROTO_H1, PROTO_H2, SlotState, claimer_of, discarded, make_meta, state_of

if TYPE_CHECKING:
    from proxy.logformat import LogFormat

_FMAINT: Final = int(AdminState.FMAINT)
_RUNNING: Final = int(OperState.RUNNING)


class Acct(enum.IntEnum):
    NONE = 0
    COUNTED = 1
    PRIVATE = 2
    USED = 3
    IDLE = 4
    SAFE = 5
    TAKEN = 6


@dataclass(frozen=True, slots=True)
class SlotMove:
    """The slot a move across workers goes through: ``slots``' slot ``index``, its (claimed) ``tag``,
    and whether the connection was counted safe."""

    slots: SlotArray
    index: int
    tag: int
    safe: bool


class IllegalTransition(Exception):
    """A connection was moved between two accounting states that no rule links."""


class Accounted(Protocol):
    acct: Acct


class Conn(Protocol):
    """What the server runtime (and a client session) needs of a connection to a server;
    ``proxy.server_conn.ServerConn`` is one. Defined here so that this module needs no I/O code."""

    acct: Acct
    owner: object | None  # the client session a private connection belongs to
    idle_since: float
    id: int
    requests: int
    fd: int  # our descriptor's number (-1: none known)
    ports: int  # slots.make_ports(local, peer)
    slot: int  # the slot it is published in, -1 when not published
    slot_tag: int  # the tag it was published with
    shareable: bool  # may another worker take it (False: TLS or HTTP/2 state lives in this process)

    @property
    def key(self) -> ConnKey: ...

    @property
    def server(self) -> ServerRuntime: ...

    @property
    def alive(self) -> bool: ...

    def close(self) -> None:
        """Close now (``shutdown`` first: another process may hold a copy); the connection's
        ``on_lost`` hook (``ServerRuntime.lost``) runs at once."""

    def release_copy(self) -> None:
        """Close our descriptor only: no ``shutdown``, no hook (another worker holds the connection)."""

    def pause_reading(self) -> None: ...

    def peek_ready(self) -> bool:
        """Nothing to read and not closed by the server: fit for a request (nothing is consumed)."""

    def lend_state(self) -> int | None:
        """Before publishing: the descriptor of what a thief needs besides the socket (-1: nothing,
        HTTP/1; HTTP/2: its protocol state, ``proxy.h2_handover``), or None: not lendable now (the
        connection may then call ``ServerRuntime.lend`` later)."""

    def unlend(self) -> None:
        """Its slot is freed: drop what ``lend_state`` made."""


# A move's counter operation: (server runtime, limit, slot) -> done. ``limit`` bounds the two bounded
# moves (None: unlimited); ``slot`` is the slot of the two moves across workers; other moves ignore
# both.
_Op = Callable[["ServerRuntime", "int | None", "SlotMove | None"], bool]


def _nothing(srv: ServerRuntime, arg: int | None, slot: SlotMove | None = None) -> bool:
    return True


def _open(srv: ServerRuntime, limit: int | None, slot: SlotMove | None = None) -> bool:
    return srv.cell.try_open_conn(limit or 0)  # a connection limit of 0 means none


def _close(srv: ServerRuntime, arg: int | None, slot: SlotMove | None = None) -> bool:
    srv.cell.conn_closed()
    return True


def _use(srv: ServerRuntime, arg: int | None, slot: SlotMove | None = None) -> bool:
    srv.cell.use_new()  # used +1; max_used and est_need follow it
    return True


def _unuse(srv: ServerRuntime, arg: int | None, slot: SlotMove | None = None) -> bool:
    srv.cell.used_add(-1)
    return True


def _unuse_close(srv: ServerRuntime, arg: int | None, slot: SlotMove | None = None) -> bool:
    srv.cell.unuse_closed()
    return True


def _park(safe: bool) -> _Op:
    kind = int(safe)

    def op(srv: ServerRuntime, limit: int | None, slot: SlotMove | None = None) -> bool:
        # pool-max-conn: -1 unlimited, 0 none (then the move is always refused).
        # ``ServerCell.try_used_to_idle``, frame-free (``CellCalls``): once a request.
        if limit is None or limit < 0:
            srv.park_calls[kind]()
            return True
        return srv.take_idle_word(limit, srv.park_bounded[kind], ()) is not None

    return op


def _adopt_idle(safe: bool) -> _Op:
    def op(srv: ServerRuntime, arg: int | None, slot: SlotMove | None = None) -> bool:
        srv.cell.idle_add(1, safe)
        return True

    return op


def _stolen(srv: ServerRuntime, arg: int | None, slot: SlotMove | None = None) -> bool:
    assert slot is not None, "a stolen connection comes with its slot"
    return srv.cell.take_slot(slot.slots, slot.index, slot.tag, slot.safe)


def _lent(srv: ServerRuntime, arg: int | None, slot: SlotMove | None = None) -> bool:
    assert slot is not None, "a connection taken from our slot comes with its slot"
    srv.cell.finalize_slot(slot.slots, slot.index, slot.safe)
    return True


def _reuse(safe: bool) -> _Op:
    kind = int(safe)

    def op(srv: ServerRuntime, arg: int | None, slot: SlotMove | None = None) -> bool:
        srv.reuse_calls[kind]()  # ``ServerCell.idle_to_used``: max_used and est_need follow used
        return True

    return op


def _unidle(safe: bool, close: bool) -> _Op:
    def op(srv: ServerRuntime, arg: int | None, slot: SlotMove | None = None) -> bool:
        if close:
            srv.cell.idle_closed(safe)
        else:
            srv.cell.idle_add(-1, safe)
        return True

    return op


N, C, P, U, I, S, T = (  # noqa: E741
    Acct.NONE, Acct.COUNTED, Acct.PRIVATE, Acct.USED, Acct.IDLE, Acct.SAFE, Acct.TAKEN,
)  # fmt: skip

# (from, to) -> counter operation. The table *is* the accounting rule: read it, not the callers.
TRANSITIONS: Final[dict[tuple[Acct, Acct], _Op]] = {
    (N, C): _open,  # bounded: a connection about to be opened
    (C, U): _use,  # its first request
    (C, P): _nothing,  # born private (http-reuse never)
    (C, I): _adopt_idle(False),  # adopted late from another worker: straight into our pool
    (C, S): _adopt_idle(True),
    (C, N): _close,  # closed before use, or connect failed
    (N, U): _stolen,  # taken from another worker's slot (pidfd_getfd), used at once; may be refused
    (U, I): _park(False),  # bounded by pool-max-conn: released and kept
    (U, S): _park(True),
    (U, P): _unuse,  # became private (NTLM/Negotiate): counted in neither used nor idle
    (U, N): _unuse_close,
    (I, U): _reuse(False),
    (S, U): _reuse(True),
    (I, C): _unidle(False, close=False),  # leaving for another worker: cur_conns moves separately
    (S, C): _unidle(True, close=False),
    (I, N): _unidle(False, close=True),
    (S, N): _unidle(True, close=True),
    (P, N): _close,
    (I, T): _lent,  # another worker took it from our slot: we finalize (cell half, slot EMPTY)
    (S, T): _lent,
    (T, N): _nothing,
}
del N, C, P, U, I, S, T


class Waiting(Protocol):
    """A request of this worker waiting for a maxconn slot of one server (``proxy.queue.Waiter``)."""

    ticket: int

    def grant(self) -> bool:
        """Wake it with its slot; False if it stopped waiting."""
        ...


_NOT_PICKABLE: Final = int(AdminState.FMAINT | AdminState.FDRAIN)


class ServerRuntime:
    """One configured server inside one worker."""

    __slots__ = (
        "admin_word",
        "backend_name",
        "bell_seen",
        "cell",
        "cfg",
        "closing",
        "count_hrsp",
        "count_request",
        "count_reuse",
        "est_need_now",
        "free",
        "idle_now",
        "index",
        "lent",
        "maint",
        "max_reuse",
        "maxconn_now",
        "maxqueue",
        "oper_word",
        "owner_word",
        "park_bounded",
        "park_calls",
        "peers",
        "pool",
        "pool_low_conn",
        "pool_max_conn",
        "pool_purge_delay",
        "published",
        "queued_now",
        "release_slot",
        "reuse_calls",
        "row",
        "runtime_version_now",
        "served_args",
        "slot",
        "slots",
        "sni_expr",
        "static_key",
        "take_idle_word",
        "take_served",
        "used_now",
        "usesrc_clientip",
        "waiters",
        "weight_word",
    )

    # What every request reads of the configuration (``reconfigure``):
    max_reuse: int
    maxqueue: int
    pool_low_conn: int
    pool_max_conn: int
    pool_purge_delay: float
    sni_expr: LogFormat | None
    usesrc_clientip: bool

    def __init__(
        self, backend_name: str, index: int, cfg: Server, cells: list[ServerCell], slot: int
    ) -> None:
        self.backend_name = backend_name
        self.index = index  # the server's index in the shared table
        self.cfg = cfg
        self.peers = cells  # every worker's cell for this server (others' are only read)
        cell = self.cell = cells[slot]
        row = self.row = cell.row
        # The row's words read or counted on every request, as frame-free calls (ServerRow.reader)
        self.admin_word = row.reader(R_ADMIN_STATE)
        self.oper_word = row.reader(R_OPER_STATE)
        self.weight_word = row.reader(R_WEIGHT)
        self.queued_now = row.reader(R_QUEUE_LEN)
        self.idle_now = row.reader(R_IDLE)
        self.used_now = row.reader(R_USED)
        self.est_need_now = row.reader(R_EST_NEED)
        self.count_request = row.counter(R_REQUESTS)
        # the server's final responses by class, 2xx .. 5xx (``count_hrsp[status // 100 - 2]``)
        self.count_hrsp: tuple[Callable[[], int], ...] = tuple(
            row.counter(off) for off in (R_HRSP_2XX, R_HRSP_3XX, R_HRSP_4XX, R_HRSP_5XX)
        )
        self.count_reuse = row.counter(R_REUSES)
        self.maxconn_now = row.reader(R_MAXCONN)  # live: ``set maxconn server``
        self.runtime_version_now = row.version_reader()
        # The cell's per-request moves, frame-free (``CellCalls``; ``try_take_slot``, ``_park``...)
        calls = cell.calls()
        self.take_served = calls.take_served
        self.served_args = calls.served_args
        self.release_slot = calls.release_slot
        self.reuse_calls = calls.reuse
        self.park_calls = calls.park
        self.take_idle_word = calls.take_idle
        self.park_bounded = calls.park_bounded
        self.pool: IdlePool[Conn] = IdlePool(f"{backend_name}/{cfg.name}")
        self.reconfigure()
        self.maint = cfg.disabled
        self.static_key: ConnKey | None = None  # the key of every connection, without usesrc clientip
        self.waiters: deque[Waiting] = deque()
        self.slot = slot
        # Lending (see the module doc): our slot array, None while we do not lend.
        self.slots: SlotArray | None = None
        self.owner_word = 0  # slots.make_owner(slot, incarnation)
        self.published: dict[int, Conn] = {}  # slot index -> connection (in the pool, or lent)
        self.lent: dict[Conn, None] = {}  # claimed by another worker: out of the pool, untouchable
        self.free: list[int] = []  # free slot indices (a heap: the lowest is used first)
        self.bell_seen = 0
        self.closing = False  # soft stop: a connection given back is closed, not pooled again

    def try_take_slot(self) -> bool:
        """A ``maxconn`` slot, never above the live ``maxconn``: ``ServerCell.try_take_slot`` on the
        same ``CellCalls``, frame-free (this module is compiled; ``shm`` is not)."""
        maxconn = self.maxconn_now()
        ops, peaks = self.served_args
        return self.take_served(maxconn if maxconn > 0 else UNLIMITED, ops, peaks) is not None

    def reconfigure(self) -> None:
        """Read what every request reads of the configuration (once: it never changes in a worker;
        the unit tests that edit it in place call this again, through ``Backend.reconfigure``)."""
        cfg = self.cfg
        self.max_reuse = cfg.max_reuse
        self.maxqueue = cfg.maxqueue
        self.pool_low_conn = cfg.pool_low_conn
        self.pool_max_conn = cfg.pool_max_conn
        self.pool_purge_delay = cfg.pool_purge_delay
        self.sni_expr = cfg.sni
        self.usesrc_clientip = cfg.usesrc_clientip

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def usable(self) -> bool:
        # FMAINT: put in maintenance on the runtime API (``set server ... state maint``); the
        # operational state: DOWN by its health check (``proxy.health``). Both words loaded directly
        # from the shared row and tested as plain ints (an IntFlag ``&`` is three Python calls)
        return not self.maint and not self.admin_word() & _FMAINT and self.oper_word() == _RUNNING

    @property
    def pickable(self) -> bool:
        """The balancer may choose it for a new request: usable, not draining (``set server ...
        state drain``: HAProxy's FDRAIN; a session already on it may still use it) and weight > 0.
        The admin state and weight are the shared row's, so every worker obeys a change at once."""
        return (
            not self.maint
            and not self.admin_word() & _NOT_PICKABLE
            and self.oper_word() == _RUNNING
            and self.weight_word() > 0
        )

    def close_idle_if_maint(self) -> int:
        """In maintenance, close this worker's pooled connections (HAProxy purges a server's idle
        connections when it enters maintenance); the worker's sweep calls it. Returns the number closed."""
        if not self.pool or self.usable:
            return 0
        return sum(self.drop_idle(conn) for conn in self.pool.oldest(len(self.pool)))

    # -- accounting ---------------------------------------------------------------------------
    def move(
        self, conn: Accounted, to: Acct, limit: int | None = None, *, slot: SlotMove | None = None
    ) -> bool:
        """Move ``conn`` to accounting state ``to``, performing the table's counter operation.

        ``limit`` bounds ``NONE → COUNTED`` (connections, 0 or None: unlimited) and ``USED →
        IDLE/SAFE`` (pool-max-conn: -1 or None unlimited, 0 none); ``slot`` is the slot of the moves
        across workers (``NONE → USED``, ``IDLE/SAFE → TAKEN``). Returns False when a bounded move,
        or a take whose slot changed, is refused (the state is unchanged); raises
        ``IllegalTransition`` for a move the table does not have."""
        frm = conn.acct
        if frm is to:
            return True
        op = TRANSITIONS.get((frm, to))
        if op is None:
            raise IllegalTransition(f"{conn!r}: {frm.name} -> {to.name}")
        if not op(self, limit, slot):
            return False
        conn.acct = to
        return True

    def uncount(self, conn: Accounted) -> None:
        """Whatever it was counted as, count it no more (it is closed or closing)."""
        if conn.acct is not Acct.NONE:
            self.move(conn, Acct.NONE)

    def hand_over(self, conn: Accounted, thief: int) -> None:
        """``COUNTED → NONE`` for a connection another worker now owns: its share of
        ``cur_conns`` goes to the thief's cell instead of being dropped."""
        if conn.acct is not Acct.COUNTED:
            raise IllegalTransition(f"{conn!r}: hand over from {conn.acct.name}")
        self.cell.give_conn(thief)  # the share of cur_conns moves cell to cell, the row never dips
        conn.acct = Acct.NONE

    def rebind(self, opening: Accounted, conn: Accounted) -> None:
        """The connection counted as ``opening`` is now the object ``conn`` (its protocol became
        known with the TLS handshake's ALPN answer): the state passes over, no counter moves."""
        if conn.acct is not Acct.NONE:
            raise IllegalTransition(f"{conn!r}: rebind onto {conn.acct.name}")
        conn.acct = opening.acct
        opening.acct = Acct.NONE

    def adopt(self, conn: Accounted) -> None:
        """``NONE → COUNTED`` without counting: a connection received from another worker, whose
        share of ``cur_conns`` the victim already moved to our cell (the mirror of ``hand_over``)."""
        if conn.acct is not Acct.NONE:
            raise IllegalTransition(f"{conn!r}: adopt from {conn.acct.name}")
        conn.acct = Acct.COUNTED

    @staticmethod
    def pooled_state(kind: ListKind) -> Acct:
        return _AC_SAFE if kind is _LK_SAFE else _AC_IDLE

    # -- lending: the owner's side of proxy.slots -------------------------------------------------
    def lend_from(self, slots: SlotArray, owner_word: int) -> None:
        """Publish this worker's pooled connections in ``slots`` from now on."""
        self.slots = slots
        self.owner_word = owner_word
        self.free = list(range(slots.nslots))
        self.bell_seen = slots.bell

    def park(self, conn: Conn, kind: ListKind) -> None:
        """A connection counted IDLE/SAFE enters this worker's pool. When we lend: reading paused,
        then published (if a slot is free; else it stays ours alone). When we do not (one worker,
        ``tune.idle-pool.shared off``), it keeps reading, so that a server's close is seen at once."""
        self.pool.add(conn, kind)
        if self.slots is None or not conn.shareable:  # not lent: it keeps reading (to see a close)
            return
        self._publish(conn, kind)

    def lend(self, conn: Conn) -> None:
        """Publish a pooled connection that was not lendable when parked (HTTP/2: once it has
        stayed idle a moment, ``proxy.server_h2``); nothing if it left the pool or is published."""
        if self.slots is None or conn.slot >= 0 or conn not in self.pool:
            return
        self._publish(conn, _LK_SAFE if conn.acct is _AC_SAFE else _LK_IDLE)

    def _publish(self, conn: Conn, kind: ListKind) -> None:
        slots = self.slots
        assert slots is not None
        state_fd = conn.lend_state()  # HTTP/2: its protocol state travels with it
        if state_fd is None:  # not lendable now (HTTP/2: in flight, or just parked): it keeps reading
            return
        conn.pause_reading()
        if not self.free or conn.fd < 0:
            conn.unlend()
            return
        k = heapq.heappop(self.free)
        proto = PROTO_H1 if state_fd < 0 else PROTO_H2
        conn.slot_tag = slots.publish(
            k, owner=self.owner_word, fd=conn.fd, conn_id=conn.id, ports=conn.ports,
            meta=make_meta(safe=kind is _LK_SAFE, reqs=conn.requests, proto=proto),
            key_hash=key_hash(conn.key), idle_since_ns=int(conn.idle_since * 1e9), state_fd=state_fd,
        )  # fmt: skip
        conn.slot = k
        self.published[k] = conn

    def unpark(self, conn: Conn) -> bool:
        """Take a pooled connection's slot back before reusing or closing it. False when another
        worker claimed it first: it is then in ``lent`` (out of the pool), not ours to touch."""
        k = conn.slot
        if k < 0:
            return True
        assert self.slots is not None
        if not self.slots.unpublish(k, conn.slot_tag):
            self.pool.remove(conn)
            self.lent[conn] = None
            return False
        self._unslot(conn)
        return True

    def _unslot(self, conn: Conn) -> None:
        k = conn.slot
        conn.slot = -1
        del self.published[k]
        heapq.heappush(self.free, k)
        conn.unlend()

    def settle_if_rung(self) -> int:
        """``settle`` when a thief or the master changed one of our slots since we last looked."""
        slots = self.slots
        if slots is None or not self.published or slots.bell == self.bell_seen:
            return 0
        return self.settle()

    def settle(self) -> int:
        """Learn what became of our published connections: finalize the TAKEN ones, set the ones
        another worker claimed aside (``lent``), pool again the ones given back. Returns the
        number finalized (each one connection fewer counted here)."""
        slots = self.slots
        if slots is None or not self.published:
            return 0
        self.bell_seen = slots.bell  # first: a take after this read rings again
        tags = slots.tags()
        done = 0
        for k, conn in list(self.published.items()):
            tag = tags[k]
            state = state_of(tag)
            if state is SlotState.TAKEN:
                self._finalize(k, conn, tag)
                done += 1
            elif state is SlotState.CLAIMED and claimer_of(tag) != self.slot:
                if conn in self.pool:
                    self.pool.remove(conn)
                    self.lent[conn] = None
            elif state is SlotState.IDLE and conn in self.lent:
                del self.lent[conn]  # given back untouched (a thief gave up, or died)
                conn.slot_tag = tag
                if self.closing or not conn.alive:
                    self.drop_idle(conn)
                else:
                    self.pool.add(conn, ListKind.SAFE if conn.acct is Acct.SAFE else ListKind.IDLE)
        return done

    def _finalize(self, k: int, conn: Conn, tag: int) -> None:
        """Slot ``k`` is TAKEN: the connection is the thief's (or was found dead). Drop our count
        (the cell's half: the thief dropped the row's) and free the slot, then close our copy
        without shutdown (the thief's stays connected)."""
        assert self.slots is not None
        self.pool.remove(conn)
        self.lent.pop(conn, None)
        safe = conn.acct is Acct.SAFE
        self.move(conn, Acct.TAKEN, slot=SlotMove(self.slots, k, tag, safe))
        if not discarded(tag):
            self.cell.lent_out()
        self._unslot(conn)
        conn.release_copy()
        self.move(conn, Acct.NONE)

    def sweep(self) -> int:
        """The periodic look at our pool: ``settle``, then close the parked connections whose server
        closed them or spoke out of turn (reading is paused: only a peek can tell). Returns the
        number closed."""
        self.settle()
        closed = 0
        for conn in self.pool.oldest(len(self.pool)):
            if not (conn.alive and conn.peek_ready()) and self.drop_idle(conn):
                closed += 1
        return closed

    # -- connections closing ------------------------------------------------------------------
    def lost(self, conn: Conn) -> None:
        """Every connection's ``on_lost`` hook: it closed (or is closing), wherever it was. Take it
        out of this worker's pool or its client session, and count it no more."""
        if conn.acct is Acct.IDLE or conn.acct is Acct.SAFE:
            self.pool.remove(conn)
            # Normally unparked already. If another worker holds its claim, the counts are the
            # slot's to settle: ``settle`` finalizes it once TAKEN, or drops it once given back.
            if conn.slot >= 0 and not self.unpark(conn):
                return
            self.lent.pop(conn, None)
        self.uncount(conn)
        owner = conn.owner
        if owner is not None:
            conn.owner = None
            owner.forget_conn(conn)  # type: ignore[attr-defined]

    def drop_idle(self, conn: Conn) -> bool:
        """Close a pooled connection now (purge, kill, maintenance, soft stop), unless another
        worker claimed it (False: it is lent, untouched). ``lost`` runs first, so that the pool and
        the counts are right even before the hook (which then finds nothing)."""
        if not self.unpark(conn):
            return False
        self.lost(conn)
        conn.close()
        return True

    def take_idle(self, key: ConnKey, order: tuple[ListKind, ...]) -> Conn | None:
        """A live pooled connection of ``key`` from this worker's lists in ``order``, now counted
        as USED; dead ones met on the way are closed, claimed ones set aside. None when none fits."""
        pool = self.pool
        if self.published:
            self.settle_if_rung()
        while True:
            conn = pool.take(key, order)
            if conn is None:
                return None
            if conn.slot >= 0 and not self.unpark(conn):  # (unpark's own first test, inline)
                continue  # another worker claimed it first: lent
            if conn.alive and (self.slots is None or conn.peek_ready()):  # parked unread: peek
                self.move(conn, _AC_USED)
                return conn
            conn.close()  # closed by the server while parked: the hook uncounts it

    def __repr__(self) -> str:
        r = self.row
        return (
            f"<Server {self.backend_name}/{self.name} {self.cfg.host}:{self.cfg.port}"
            f" used={r.used} idle={r.idle} served={r.served} local_idle={len(self.pool)}>"
        )


# The enum members the per-request functions above use, as module constants: on Python 3.11
# a member lookup (``Phase.IDLE``) costs several times a global's, and a request makes dozens.
_AC_IDLE: Final = Acct.IDLE
_AC_SAFE: Final = Acct.SAFE
_AC_USED: Final = Acct.USED
_LK_SAFE: Final = ListKind.SAFE
_LK_IDLE: Final = ListKind.IDLE
