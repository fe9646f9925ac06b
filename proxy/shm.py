"""The shared-memory table: server-wide counters and per-worker cells, one segment per generation.

Theory of operation
-------------------
The master creates the table before it forks (``ShmTable.create``): one ``posix_ipc`` segment named
``/poolproxy.<master_pid>.<generation>``, mapped with ``mmap``. Forked workers **keep using the
inherited object**: the mapping is ``MAP_SHARED`` and lives at the same address in the child, and both
atomics backends stay valid across ``fork`` (the C view points into that mapping; the fallback's named
semaphore is shared too). No re-attach after fork. Unrelated processes (``tools.shmdump``, a runtime
API helper) use ``ShmTable.attach(name)``, which checks magic, layout version, sizes and the atomics
backend; every word is a signed little-endian int64 at an 8-aligned offset, accessed through
``proxy.atomics``.

A server **row** holds the server-wide numbers that decisions read (``served`` for maxconn,
``cur_conns`` for strict-maxconn, ``idle``/``used`` for keep-on-release, ...). A **cell** per (server,
worker) holds that worker's share of each *gauge*. The invariant, for each gauge::

    row.served    == sum(cell.served + cell.incoming)      row.idle      == sum(cell.idle)
    row.cur_conns == sum(cell.conns)                       row.safe      == sum(cell.safe)
    row.used      == sum(cell.used)                        row.queue_len == sum(cell.queued)

(``idle``, ``safe`` and ``cur_conns`` less what TAKEN slots still count in their owners' cells: see
"Stealing without the owner's help" below.)

Gauges move only through *paired* operations (``ServerCell`` methods: row first, then the worker's
own cell). Where a limit must hold, the row moves by compare-exchange (``served`` never exceeds
maxconn, ``cur_conns`` a strict limit, ``queue_len`` maxqueue). After reaping a worker, the master
calls ``reconcile_worker(slot)`` (before respawning the slot; mark every reaped slot DEAD first when
several died), which subtracts the dead cells from the rows with ``fetch_add`` of the negated values,
so live workers keep updating the rows meanwhile.

A worker killed *between* the row half and the cell half of a paired operation would leave the row
off by one forever (a leaked maxconn slot, with maxconn 1, is a dead server). So every paired
operation brackets itself with the cell's ``seq`` word: odd while in flight, even otherwise (only the
owner writes it). If the dead worker's ``seq`` is odd for a server, ``reconcile_worker`` takes a
consistent snapshot of that server's row and cells -- every other cell's ``seq`` even (or its worker
marked DEAD) and unchanged across the read -- and corrects the row to the sum of the other cells.
Under constant load on one server a snapshot may not settle within ``timeout``: the report then says
``exact=False``. The fallback backend has its own weakness: a process killed while holding the
semaphore blocks everyone (see ``proxy.atomics``).

Slot hand-off (DESIGN.md §5): ``ServerCell.give_slot(to_slot)`` moves a held slot from the giver's
``served`` to the receiver's ``incoming`` (the row is unchanged); the receiver ``claim_incoming()`` to
use it. A receiver that finds ``incoming > 0`` and nobody waiting (its waiter left, or the slot was
given to its dead predecessor) claims and releases it.

Stealing without the owner's help (layout 2)
--------------------------------------------
Each worker *publishes* its lendable idle connections in its own **slot array** per server
(``proxy.slot_array.SlotArray``; the state machine and the tag word are ``proxy.slots``): EMPTY → IDLE (owner
publishes) → CLAIMED(w) (compare-exchange by any worker, the owner included) → TAKEN(w) (the thief
holds a duplicate made with ``pidfd_getfd``, verified against the recorded ports) → EMPTY (the owner
closed its copy). Cells stay single-writer: a worker writes only its own cell (and the rows, with
atomic adds), always inside a bracket of its own ``seq``. A connection moving from owner O to thief
T is the one case where the row and O's cell do not move together: T moves the row at once, O its
cell later. So the invariant becomes, per server and gauge::

    row == sum(cells) - taken pending        taken pending: per TAKEN slot, idle 1, cur_conns 1,
                                                            safe 1 if it was safe (O still counts it)

==============================  ======  =============================================================
slot transition                 who     counters (one seq bracket of the mover's cell each)
==============================  ======  =============================================================
EMPTY → IDLE (publish)          O       none (the connection was counted IDLE/SAFE when parked)
IDLE → CLAIMED(T)               T       none; row ``takeovers_asked`` +1
CLAIMED → IDLE (release)        T       none; row ``takeovers_failed`` +1 (descriptor refused, ports
                                        differ)
CLAIMED → TAKEN(T)              T       ``take_slot``: row ``idle`` (``safe``) -1, row ``used`` +1
                                        (``cur_conns`` unchanged: O's -1 and T's +1); T's cell
                                        ``used`` +1, ``cur_conns`` +1. Then row ``takeovers_given``
                                        +1, T's cell ``takeovers_taken`` +1
CLAIMED → TAKEN(T, discard)     T       ``take_slot(discard)``: row ``idle`` (``safe``) -1,
                                        ``cur_conns`` -1 (the connection is dead: T keeps nothing)
TAKEN → EMPTY (finalize)        O       ``finalize_slot``: O's cell ``idle`` (``safe``) -1,
                                        ``cur_conns`` -1, the tag EMPTY; O's cell
                                        ``takeovers_given`` +1 unless discarded
IDLE → CLAIMED(O) → EMPTY       O       none (it reuses or closes the connection, and counts that)
==============================  ======  =============================================================

The row is thus exact at every moment (no connection counted twice in the numbers decisions read);
only the sum of the cells lags until the owner finalizes, which it does on its next pool operation,
its next channel message, or its sweep (the thief rings the array's ``bell``). The peak
``max_cur_conns`` is not touched by a steal.

Reconcile, for each slot state, when a worker dies (``reconcile_worker``): the snapshot that settles
an unfinished bracket reads the slot tags too (``row - (sum(cells) - taken pending)`` is what the
dead worker's half-done operation left); then its cells are subtracted from the rows as before, and:

- **its own slots** (dead owner): all become EMPTY. IDLE ones died with it. A CLAIMED one: the
  thief's ``take_slot`` then fails (the tag changed), so it closes any duplicate it made and counts
  nothing. A TAKEN one: the thief keeps the connection (counted in the thief's cell); the dead
  owner's cell, just subtracted, still counted it although the row no longer did, so the row gets
  that back (``clear_dead_owner`` returns it).
- **slots it claimed** (dead thief): CLAIMED ones go back to IDLE (a thief writes nothing before
  ``take_slot``, so the connection is as its owner left it; EMPTY if the owner is dead too) and the
  owner's bell rings. TAKEN ones are left: the owner finalizes them as usual (its copy is now the
  last, so its close ends the connection), and the thief's count of it left with the thief's cell.
- **both dead**: each is reconciled in turn; the owner's reconcile empties every slot, whatever the
  claimer did.

Layout (LAYOUT_VERSION 5)
-------------------------
::

    offset                       size               content
    0                            256                header: 32 words
    workers_off = 256            nworkers * 64      worker records (8 words)
    rows_off                     nservers * 256     server rows (32 words: 4 cache lines)
    cells_off                    nservers*nworkers  cells (16 words: 2 cache lines), server-major:
                                   * 128              cell(i, slot) = cells_off + (i*nworkers + slot)*128
    slots_off                    nservers*nworkers  slot arrays, server-major, each slot_array_size =
                                   * slot_array_size  64 + nslots * 64: array(i, w) =
                                                      slots_off + (i*nworkers + w) * slot_array_size
    checks_off                   nservers * 128     check records (16 words, ``proxy.health``): who runs
                                                      the server's health check, its counter and results
    fronts_off                   nfrontends         per frontend: its row (16 words), then one cell
                                   * (nworkers+1)     (16 words) per worker: front(f) = fronts_off + f *
                                   * 128              (nworkers + 1) * 128, its cell w 128 * (w + 1) further
    names_off                    names_len          UTF-8 JSON: {"servers": [one list per server: names,
                                                      address, ids, limits], "frontends": [names]}

    header word: 0 magic ("POOLPRXY")   1 version   2 header_size   3 total_size   4 nworkers
                 5 nservers   6 worker_size   7 row_size   8 cell_size   9 workers_off   10 rows_off
                 11 cells_off   12 names_off   13 names_len   14 backend (atomics: c=1, fallback=2)
                 15 generation   16 master_pid   17 created_ns (CLOCK_REALTIME)   18 nslots
                 19 slots_off   20 slot_array_size   21 nfrontends   22 fronts_off   23 checks_off
                 24 runtime_version (moved by the runtime API on each weight or maxconn change;
                 workers rebuild their balancers when it moves)   25..31 zero
    worker:      0 pid   1 incarnation   2 state (WorkerState)   3 heartbeat (CLOCK_MONOTONIC ns)
                 4 started (CLOCK_MONOTONIC ns)   5..7 zero
    row:         0 served   1 cur_conns   2 used   3 idle   4 safe   5 queue_len   6 next_ticket
                 7 max_used | 8 max_served   9 max_cur_conns   10 max_queue   11 est_need
                 12 admin_state (AdminState)   13 oper_state (OperState: RUNNING or STOPPED, moved
                 by the health check's owner)   14 weight
                 15 maxconn (the live limit: the config's, then ``set maxconn server``) |
                 16 connects   17 connect_errors   18 reuses   19 requests   20 purged
                 21 takeovers_asked   22 takeovers_given   23 takeovers_failed |
                 24 queue_timeouts   25 queue_full   26 retries (wretr)   27 redispatches (wredis) |
                 28 hrsp_2xx   29 hrsp_3xx   30 hrsp_4xx   31 hrsp_5xx (the server's final
                 responses by class, counted by the stream that received them)
    cell:        0 seq   1 idle   2 safe   3 used   4 served   5 incoming   6 conns   7 queued |
                 8 oldest_ticket (0 = no waiter)   9 takeovers_given   10 takeovers_taken   11..15 zero
    slot array:  0 bell (rung by takes and repairs)   1 high (one past the highest slot published)
                 2..7 zero, then nslots slots
    front row:   0 max_conns (the peak of the sum of the cells' cur_conns)   1..15 zero
    front cell:  0 cur_conns   1 conns_total   2 requests_total   3 bytes_out   4..9 hrsp_1xx .. hrsp_5xx,
                 hrsp_other   10 denied_req   11 bad_req   12..15 zero (only its worker writes a cell;
                 ``reconcile_worker`` zeroes a dead worker's cur_conns; the totals stay)
    slot:        0 tag (proxy.slots: state, discard, claimer, version)   1 owner (slot << 32 |
                 incarnation)   2 fd (the owner's descriptor number; bits 32-63: an HTTP/2
                 connection's state descriptor plus one, or nothing)   3 conn_id (the owner's)
                 4 ports (local << 16 | peer)   5 meta (safe: bit 0, protocol: bits 8-15,
                 requests served: bits 16-47)   6 key (the connection key's 63-bit hash)
                 7 idle_since (CLOCK_MONOTONIC ns)
    check record: see ``proxy.health`` (owner, health, status, code, duration, info, last_check,
                 last_change, chk_fail, chk_down, down_since, down_total, enabled)

Health checks (layout 3): the master gives each checked server's record a first owner, worker
``k % nworkers`` for the k-th checked server; ``reconcile_worker`` frees the dead worker's records
(owner 0) and the next live worker to look claims each by compare-exchange. The operational state
(``oper_state`` in the row, the record's counter) is thus apart from the admin state, and every
worker reads the same at once.

The magic is written last at creation. Any change to this diagram bumps LAYOUT_VERSION.
"""

from __future__ import annotations

import contextlib
import enum
import json
import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, NamedTuple, Self, overload

import posix_ipc

from proxy import atomics, slots as sl
from proxy.atomics import Atomics, lock_name_for, unlink_lock
from proxy.config.model import Config
from proxy.health import CHECK_SIZE, CheckRecord
from proxy.pool_policy import oldest_waiter
from proxy.slot_array import NSLOTS, S_META, SLOT_HEADER, SLOT_SIZE, SlotArray
from proxy.slots import SlotState

LAYOUT_VERSION: Final = 5  # 3: row word 15 is the live maxconn; 4: frontend cells and check records;
# 5: row words 28..31 count the server's responses by class
MAGIC: Final = int.from_bytes(b"POOLPRXY", "little")
HEADER_SIZE: Final = 256
WORKER_SIZE: Final = 64
ROW_SIZE: Final = 256
CELL_SIZE: Final = 128
FRONT_SIZE: Final = 128  # a frontend's row, and each of its cells
SHM_DIR: Final = "/dev/shm"
BACKEND_IDS: Final = {"c": 1, "fallback": 2}

# header words, in order (the header is 32 words; the rest are zero)
HEADER_KEYS: Final = (
    "magic", "version", "header_size", "total_size", "nworkers", "nservers", "worker_size", "row_size",
    "cell_size", "workers_off", "rows_off", "cells_off", "names_off", "names_len", "backend", "generation",
    "master_pid", "created_ns", "nslots", "slots_off", "slot_array_size", "nfrontends", "fronts_off",
    "checks_off",
)  # fmt: skip
_HEADER = struct.Struct("<32q")

H_RUNTIME_VERSION: Final = 8 * 24  # header word (see the layout): not a static key, it moves

# worker record offsets
W_PID, W_INCARNATION, W_STATE, W_HEARTBEAT, W_STARTED = 0, 8, 16, 24, 32

# row offsets
R_SERVED, R_CUR_CONNS, R_USED, R_IDLE, R_SAFE, R_QUEUE_LEN, R_NEXT_TICKET, R_MAX_USED = range(0, 64, 8)
(R_MAX_SERVED, R_MAX_CUR_CONNS, R_MAX_QUEUE, R_EST_NEED, R_ADMIN_STATE, R_OPER_STATE, R_WEIGHT,
 R_MAXCONN) = range(64, 128, 8)  # fmt: skip
(R_CONNECTS, R_CONNECT_ERRORS, R_REUSES, R_REQUESTS, R_PURGED, R_TAKEOVERS_ASKED, R_TAKEOVERS_GIVEN,
 R_TAKEOVERS_FAILED, R_QUEUE_TIMEOUTS, R_QUEUE_FULL, R_RETRIES,
 R_REDISPATCHES) = range(128, 224, 8)  # fmt: skip
R_HRSP_2XX, R_HRSP_3XX, R_HRSP_4XX, R_HRSP_5XX = range(224, 256, 8)

# frontend cell offsets (F_HRSP: hrsp_1xx; the next five words are 2xx..5xx and other)
(F_CUR_CONNS, F_CONNS_TOTAL, F_REQUESTS_TOTAL, F_BYTES_OUT, F_HRSP, F_DENIED_REQ, F_BAD_REQ) = (
    0, 8, 16, 24, 32, 80, 88)  # fmt: skip
FRONT_FIELDS: Final = {
    "cur_conns": F_CUR_CONNS, "conns_total": F_CONNS_TOTAL, "requests_total": F_REQUESTS_TOTAL,
    "bytes_out": F_BYTES_OUT, "hrsp_1xx": F_HRSP, "hrsp_2xx": F_HRSP + 8, "hrsp_3xx": F_HRSP + 16,
    "hrsp_4xx": F_HRSP + 24, "hrsp_5xx": F_HRSP + 32, "hrsp_other": F_HRSP + 40,
    "denied_req": F_DENIED_REQ, "bad_req": F_BAD_REQ,
}  # fmt: skip

# cell offsets
C_SEQ, C_IDLE, C_SAFE, C_USED, C_SERVED, C_INCOMING, C_CONNS, C_QUEUED = range(0, 64, 8)
C_OLDEST_TICKET, C_TAKEOVERS_GIVEN, C_TAKEOVERS_TAKEN = range(64, 88, 8)

# slot array header offsets, slot record offsets and the array view: proxy.slot_array (re-exported)

# Each gauge: its name, the row word, and the cell words whose sum over the workers it equals.
GAUGES: Final[tuple[tuple[str, int, tuple[int, ...]], ...]] = (
    ("served", R_SERVED, (C_SERVED, C_INCOMING)),
    ("conns", R_CUR_CONNS, (C_CONNS,)),
    ("used", R_USED, (C_USED,)),
    ("idle", R_IDLE, (C_IDLE,)),
    ("safe", R_SAFE, (C_SAFE,)),
    ("queued", R_QUEUE_LEN, (C_QUEUED,)),
)


class WorkerState(enum.IntEnum):
    FREE = 0  # never used in this generation
    STARTING = 1
    RUNNING = 2
    STOPPING = 3
    DEAD = 4  # reaped by the master; its cells are frozen (reconcile_worker sets it)


class OperState(enum.IntEnum):
    """HAProxy's ``srv_op_state``."""

    STOPPED = 0
    STARTING = 1
    RUNNING = 2
    STOPPING = 3


class AdminState(enum.IntFlag):
    """HAProxy's ``srv_admin_state`` bits (``disabled`` in the config is CMAINT)."""

    READY = 0
    FMAINT = 0x01
    IMAINT = 0x02
    CMAINT = 0x04
    FDRAIN = 0x08
    IDRAIN = 0x10
    RMAINT = 0x20
    HMAINT = 0x40


class ShmLayoutError(ValueError):
    """The segment is not a table this code can use: wrong magic, version, sizes or atomics backend."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the table records about a server besides its counters (the names region)."""

    index: int
    backend: str
    name: str
    host: str
    port: int
    bkid: int  # the backend's proxy id (``Config.proxy_ids``: HAProxy's, in declaration order)
    svid: int  # 1-based position of the server in its backend
    maxconn: int
    maxqueue: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    slot: int
    pid: int
    incarnation: int
    state: WorkerState
    heartbeat_ns: int
    started_ns: int


@dataclass(slots=True)
class ReconcileReport:
    """What ``reconcile_worker`` took back from a dead worker's cells (totals over its servers)."""

    slot: int
    pid: int
    inflight: bool = False  # it died inside a paired operation (settled from a snapshot)
    exact: bool = True  # False: that operation could not be settled in time (see the module doc)
    reclaimed: dict[str, int] = field(default_factory=lambda: {g[0]: 0 for g in GAUGES})
    per_server: dict[int, dict[str, int]] = field(default_factory=dict)
    slots_cleared: int = 0  # its published slots emptied (it was their owner)
    claims_returned: int = 0  # slots it had claimed, given back to their owners
    checks_released: int = 0  # health checks it ran, left for another worker to claim

    def __str__(self) -> str:
        r = self.reclaimed
        text = (
            f"slot {self.slot} (pid {self.pid}): released {r['served']} slots, {r['queued']} queued,"
            f" {r['conns']} conns ({r['used']} used, {r['idle']} idle, {r['safe']} safe),"
            f" {self.slots_cleared} slots emptied, {self.claims_returned} claims returned"
            + (f", {self.checks_released} health checks released" if self.checks_released else "")
        )
        return text if self.exact else text + " [inexact: an in-flight update could not be settled]"


# ---- views --------------------------------------------------------------------------------------


class _View:
    __slots__ = ("_a", "_base")

    def __init__(self, a: Atomics, base: int) -> None:
        self._a = a
        self._base = base


class _Word:
    """A field of a row or cell: ``view.served`` is one atomic load."""

    __slots__ = ("off",)

    def __init__(self, off: int) -> None:
        self.off = off

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Word: ...
    @overload
    def __get__(self, obj: _View, owner: type[Any]) -> int: ...
    def __get__(self, obj: _View | None, owner: type[Any]) -> _Word | int:
        if obj is None:
            return self
        return obj._a.load(obj._base + self.off)


class ServerRow(_View):
    """The server-wide row of server ``index``. Properties load; gauges are never written here
    (use ``ServerCell``), only counters, peaks and states."""

    __slots__ = ("index",)

    def __init__(self, a: Atomics, base: int, index: int) -> None:
        super().__init__(a, base)
        self.index = index

    # One read-only property per word, in layout order (ROW_FIELDS below lists them by name).
    served, cur_conns, used, idle, safe, queue_len, next_ticket, max_used = map(_Word, range(0, 64, 8))
    max_served, max_cur_conns, max_queue, est_need, admin_state, oper_state, weight, maxconn = map(
        _Word, range(64, 128, 8)
    )
    connects, connect_errors, reuses, requests, purged = map(_Word, range(128, 168, 8))
    takeovers_asked, takeovers_given, takeovers_failed, queue_timeouts, queue_full = map(
        _Word, range(168, 208, 8)
    )
    retries, redispatches = map(_Word, range(208, 224, 8))
    hrsp_2xx, hrsp_3xx, hrsp_4xx, hrsp_5xx = map(_Word, range(224, 256, 8))

    def load(self, off: int) -> int:
        return self._a.load(self._base + off)

    def reader(self, off: int) -> Callable[[], int]:
        """A ready-made ``load`` of the word at ``off``: a ``functools.partial`` over the compiled
        call, so that reading it costs no Python frame (for the words read on every request)."""
        return partial(self._a.load, self._base + off)

    def counter(self, off: int) -> Callable[[], int]:
        """A ready-made ``add(off)`` (+1 on a counter, returning the previous value), frame-free
        like ``reader``."""
        return partial(self._a.fetch_add, self._base + off, 1)

    def version_reader(self) -> Callable[[], int]:
        """A ready-made load of the table's runtime version (``runtime_version``), frame-free."""
        return partial(self._a.load, H_RUNTIME_VERSION)

    @property
    def runtime_version(self) -> int:
        """The table's runtime version (a header word, read through any row): it moves when the
        runtime API changes a weight or a maxconn, so a worker needs one load to know."""
        return self._a.load(H_RUNTIME_VERSION)

    def store(self, off: int, value: int) -> None:
        """For states, weight, maxconn and the purge's ``est_need``/``max_used``; never for a gauge."""
        self._a.store(self._base + off, value)

    def add(self, off: int, delta: int = 1) -> int:
        """``fetch_add`` on a counter (``R_CONNECTS``, ``R_REQUESTS``, ...); returns the previous value."""
        return self._a.fetch_add(self._base + off, delta)

    def raise_to(self, off: int, value: int) -> None:
        """``fetch_max`` on a peak or estimate (``R_EST_NEED``): never lowers it."""
        self._a.fetch_max(self._base + off, value)

    def take_ticket(self) -> int:
        """The next queue ticket: 1, 2, 3, ... (global order across workers; 0 means none)."""
        return self._a.fetch_add(self._base + R_NEXT_TICKET, 1)

    def __repr__(self) -> str:
        return (
            f"<ServerRow {self.index} served={self.served} conns={self.cur_conns} used={self.used}"
            f" idle={self.idle} safe={self.safe} queue={self.queue_len}>"
        )


UNLIMITED: Final = 1 << 62  # a bounded add's limit meaning "no limit"


class CellCalls(NamedTuple):
    """The per-request moves of one cell as frame-free calls (``functools.partial`` over the
    compiled atomics), for the compiled hot path (``ServerRuntime``): the same operations and
    results as the ``ServerCell`` methods named, without a Python frame each. Index 0 of a pair is
    for an unsafe idle connection, 1 for a safe one."""

    take_served: Callable[[int, tuple[int, ...], tuple[int, ...]], int | None]  # try_take_slot's
    served_args: tuple[tuple[int, ...], tuple[int, ...]]  # its ops and peaks
    release_slot: Callable[[], int]  # release_slot
    reuse: tuple[Callable[[], int], Callable[[], int]]  # idle_to_used(safe)
    park: tuple[Callable[[], int], Callable[[], int]]  # try_used_to_idle(safe, -1)
    take_idle: Callable[[int, tuple[int, ...], tuple[int, ...]], int | None]  # try_used_to_idle's
    park_bounded: tuple[tuple[int, ...], tuple[int, ...]]  # its ops, by safe


class ServerCell(_View):
    """Server ``index`` as seen by worker ``slot``: its cell, with the paired operations.

    Contract: only the worker of ``slot`` calls these on its own cell. (``give_slot`` also adds to
    the receiver's ``incoming``, the one word with two writers, both using atomic read-modify-write.)
    Every paired operation is: seq odd, row, cell, seq even. C_SEQ is 0: the cell's base is its seq.
    """

    __slots__ = ("_by_kind", "_calls", "_ops", "_peers", "_row", "index", "row", "slot")

    def __init__(self, a: Atomics, row: ServerRow, base: int, slot: int, peers: int) -> None:
        super().__init__(a, base)
        self.row = row
        self.index = row.index
        self.slot = slot
        r = self._row = row._base
        self._peers = peers  # the cell of (index, slot 0)
        c = base
        # The hot paired operations, as ready-made argument tuples for one compound atomic call
        # each (``Atomics.add_many``/``bounded_add``): seq, row, cell, seq, in that order.
        def pair(*changes: tuple[int, int, int]) -> tuple[int, ...]:
            ops: list[int] = [c, 1]
            for row_off, cell_off, delta in changes:
                ops += (r + row_off, delta, c + cell_off, delta)
            return (*ops, c, 1)

        self._ops = {
            "release_slot": pair((R_SERVED, C_SERVED, -1)),
            "conn_closed": pair((R_CUR_CONNS, C_CONNS, -1)),
            "used+": pair((R_USED, C_USED, 1)),
            "used-": pair((R_USED, C_USED, -1)),
            "used-closed": pair((R_USED, C_USED, -1), (R_CUR_CONNS, C_CONNS, -1)),
            "served_cell": (c + C_SERVED, 1),
            "conns_cell": (c + C_CONNS, 1),
            "queued_cell": (c + C_QUEUED, 1),
            "peak_served": (r + R_MAX_SERVED,),
            "peak_conns": (r + R_MAX_CUR_CONNS,),
            "peak_queue": (r + R_MAX_QUEUE,),
            "peak_used": (r + R_MAX_USED, r + R_EST_NEED),
        }
        # The moves between used and idle, per kind: index 0 for an unsafe idle connection, 1 for
        # a safe one (``idle`` counts both; ``safe`` the second kind too).
        by_kind: dict[str, list[tuple[int, ...]]] = {}
        for safe in (False, True):
            idle = ((R_IDLE, C_IDLE), (R_SAFE, C_SAFE)) if safe else ((R_IDLE, C_IDLE),)
            moves = {
                # reuse: idle (and safe) -1, then used +1: the last pair before the closing seq,
                # whose new value the peaks take
                "reuse": pair(*((ro, co, -1) for ro, co in idle), (R_USED, C_USED, 1)),
                "park": pair((R_USED, C_USED, -1), *((ro, co, 1) for ro, co in idle)),
                # bounded park: the row's idle +1 by compare-exchange, then these
                "park_bounded": (c + C_IDLE, 1, r + R_USED, -1, c + C_USED, -1)
                + ((r + R_SAFE, 1, c + C_SAFE, 1) if safe else ()),
                "idle+": pair(*((ro, co, 1) for ro, co in idle)),
                "idle-": pair(*((ro, co, -1) for ro, co in idle)),
                "idle-closed": pair(*((ro, co, -1) for ro, co in idle), (R_CUR_CONNS, C_CONNS, -1)),
            }
            for name, ops in moves.items():
                by_kind.setdefault(name, []).append(ops)
        self._by_kind = {name: (pair_[0], pair_[1]) for name, pair_ in by_kind.items()}
        self._calls = self.calls()  # the per-request moves below go through these

    seq, idle, safe, used, served, incoming, conns, queued = map(_Word, range(0, 64, 8))
    oldest_ticket, takeovers_given, takeovers_taken = map(_Word, range(64, 88, 8))

    def _bounded_take(self, row_off: int, cell_ops: str, limit: int, peaks: str) -> bool:
        """+1 on a row gauge unless it is at ``limit`` (0 = unlimited), by compare-exchange so it
        never overshoots; then +1 on the cell; then the row's peak (fetch_max)."""
        ops = self._ops
        return (
            self._a.bounded_add(
                self._base, self._row + row_off, limit if limit > 0 else UNLIMITED, ops[cell_ops],
                ops[peaks],
            )
            is not None
        )

    def _open_below(self, off: int, limit: int) -> int | None:
        """+1 on the row word at ``off`` by compare-exchange unless it is at ``limit``. On success
        the cell's bracket is left open (seq odd: the caller finishes the paired operation and
        closes it) and the new value is returned; on refusal the bracket is closed (or was never
        opened) and None is returned."""
        a, cell = self._a, self._base
        cur = a.load(off)
        if cur >= limit:  # refused without touching seq: the common case of a full server
            return None
        a.fetch_add(cell, 1)
        while not a.compare_exchange(off, cur, cur + 1):
            cur = a.load(off)
            if cur >= limit:
                a.fetch_add(cell, 1)
                return None
        return cur + 1

    def _pair_add(self, row_off: int, cell_off: int, delta: int) -> int:
        a, cell = self._a, self._base
        a.fetch_add(cell, 1)
        prev = a.fetch_add(self._row + row_off, delta)
        a.fetch_add(cell + cell_off, delta)
        a.fetch_add(cell, 1)
        return prev

    def calls(self) -> CellCalls:
        """This cell's per-request moves as frame-free calls (``CellCalls``)."""
        a, ops, kinds = self._a, self._ops, self._by_kind
        reuse = kinds["reuse"]
        return CellCalls(
            take_served=partial(a.bounded_add, self._base, self._row + R_SERVED),
            served_args=(ops["served_cell"], ops["peak_served"]),
            release_slot=partial(a.add_many, ops["release_slot"]),
            reuse=(
                partial(a.add_many, reuse[0], len(reuse[0]) // 2 - 3, ops["peak_used"]),
                partial(a.add_many, reuse[1], len(reuse[1]) // 2 - 3, ops["peak_used"]),
            ),
            park=(partial(a.add_many, kinds["park"][0]), partial(a.add_many, kinds["park"][1])),
            take_idle=partial(a.bounded_add, self._base, self._row + R_IDLE),
            park_bounded=kinds["park_bounded"],
        )

    def try_take_slot(self, maxconn: int) -> bool:
        """A maxconn slot: never above maxconn (0 = unlimited: always). Keeps ``max_served``.
        (``_bounded_take(R_SERVED, "served_cell", maxconn, "peak_served")``, inline: once a request.)"""
        c = self._calls
        ops, peaks = c.served_args
        return c.take_served(maxconn if maxconn > 0 else UNLIMITED, ops, peaks) is not None

    def release_slot(self) -> None:
        """Give back a held slot (the caller first offers it to the oldest waiter: ``give_slot``)."""
        self._calls.release_slot()

    def give_slot(self, to_slot: int) -> None:
        """Hand a held slot to worker ``to_slot`` (its ``incoming``); ``served`` stays counted."""
        a, cell = self._a, self._base
        a.fetch_add(cell, 1)
        a.fetch_add(cell + C_SERVED, -1)
        a.fetch_add(self._peers + to_slot * CELL_SIZE + C_INCOMING, 1)
        a.fetch_add(cell, 1)

    def claim_incoming(self) -> bool:
        """Turn one slot handed to this worker into a held one; False if none was handed."""
        a, cell = self._a, self._base
        off = cell + C_INCOMING
        cur = a.load(off)
        if cur <= 0:
            return False
        a.fetch_add(cell, 1)
        while not a.compare_exchange(off, cur, cur - 1):
            cur = a.load(off)
            if cur <= 0:
                a.fetch_add(cell, 1)
                return False
        a.fetch_add(cell + C_SERVED, 1)
        a.fetch_add(cell, 1)
        return True

    def try_open_conn(self, limit: int) -> bool:
        """Count a connection about to be opened unless ``cur_conns`` is at ``limit`` (strict-maxconn;
        0 = unlimited). Keeps ``max_cur_conns``, the peak the ``maxconn + nbthread - 1`` case shows."""
        return self._bounded_take(R_CUR_CONNS, "conns_cell", limit, "peak_conns")

    def conn_closed(self) -> None:
        self._a.add_many(self._ops["conn_closed"])

    def give_conn(self, to_slot: int) -> None:
        """An open connection moves to worker ``to_slot`` (a takeover): its share of ``cur_conns``
        moves with it and the row is unchanged, so a strict limit never sees a hole to slip in."""
        a, cell = self._a, self._base
        a.fetch_add(cell, 1)
        a.fetch_add(cell + C_CONNS, -1)
        a.fetch_add(self._peers + to_slot * CELL_SIZE + C_CONNS, 1)
        a.fetch_add(cell, 1)

    def used_add(self, delta: int) -> None:
        """Connections carrying a request (or connecting); keeps ``max_used`` (fetch_max)."""
        if delta == 1:
            self._a.add_many(self._ops["used+"], 1, self._ops["peak_used"][:1])
        elif delta == -1:
            self._a.add_many(self._ops["used-"])
        else:
            prev = self._pair_add(R_USED, C_USED, delta)
            if delta > 0:
                self._a.fetch_max(self._row + R_MAX_USED, prev + delta)

    def use_new(self) -> None:
        """A new connection is about to be used (HAProxy's ``srv_use_conn``): ``used`` +1, and
        ``max_used`` and ``est_need`` raised to the new ``used``. One compound call."""
        self._a.add_many(self._ops["used+"], 1, self._ops["peak_used"])

    # -- the slot moves that carry counters (see "Stealing without the owner's help") ----------
    def take_slot(self, slots: SlotArray, k: int, ctag: int, safe: bool, *, discard: bool = False) -> bool:
        """The thief, slot ``k`` of ``slots`` claimed as ``ctag``: CLAIMED → TAKEN and, in the same
        bracket of our seq, the row's half of the owner's count of the connection (``idle``,
        ``safe``, ``cur_conns`` -1) and, unless ``discard``, our own count of it (row and cell
        ``cur_conns`` +1, ``used`` +1; ``max_used``/``est_need`` follow). The row is exact at once;
        the owner's cell keeps counting the connection until it finalizes (``finalize_slot``).
        False (nothing changed) if the slot is not ``ctag`` any more (its owner died, the master
        emptied it)."""
        a, cell, r = self._a, self._base, self._row
        a.fetch_add(cell, 1)
        if not a.compare_exchange(slots.tag_off(k), ctag, sl.taken(ctag, discard=discard)):
            a.fetch_add(cell, 1)
            return False
        ops = (r + R_IDLE, -1) + ((r + R_SAFE, -1) if safe else ())
        if discard:
            a.add_many((*ops, r + R_CUR_CONNS, -1, cell, 1))
        else:
            mine = (r + R_USED, 1, cell + C_USED, 1, cell + C_CONNS, 1, cell, 1)
            used = a.add_many((*ops, *mine), len(ops) // 2)
            a.fetch_max(r + R_MAX_USED, used)
            a.fetch_max(r + R_EST_NEED, used)
        slots.ring()
        return True

    def finalize_slot(self, slots: SlotArray, k: int, safe: bool) -> None:
        """The owner, slot ``k`` TAKEN: the cell's half of its count of the connection (``idle``,
        ``safe``, ``cur_conns`` -1; the thief did the row's) and the slot EMPTY, in one bracket."""
        a, cell = self._a, self._base
        tag = a.load(slots.tag_off(k))
        sl.check_move(sl.state_of(tag), SlotState.EMPTY, sl.Actor.OWNER)
        ops = (cell, 1, cell + C_IDLE, -1, cell + C_CONNS, -1) + ((cell + C_SAFE, -1) if safe else ())
        a.add_many(ops)
        a.store(slots.tag_off(k), sl.emptied(tag))
        a.fetch_add(cell, 1)

    def unuse_closed(self) -> None:
        """A used connection closed: ``used`` -1 and ``cur_conns`` -1 in one bracket."""
        self._a.add_many(self._ops["used-closed"])

    def idle_add(self, delta: int, safe: bool = False) -> None:
        """Idle connections; ``safe`` moves the safe subset too (``idle`` counts both kinds)."""
        if delta in (1, -1):
            self._a.add_many(self._by_kind["idle+" if delta == 1 else "idle-"][safe])
            return
        a, cell, row = self._a, self._base, self._row
        a.fetch_add(cell, 1)
        a.fetch_add(row + R_IDLE, delta)
        a.fetch_add(cell + C_IDLE, delta)
        if safe:
            a.fetch_add(row + R_SAFE, delta)
            a.fetch_add(cell + C_SAFE, delta)
        a.fetch_add(cell, 1)

    def idle_closed(self, safe: bool) -> None:
        """A pooled connection closed: ``idle`` (and ``safe``) -1, ``cur_conns`` -1, one bracket."""
        self._a.add_many(self._by_kind["idle-closed"][safe])

    def idle_to_used(self, safe: bool) -> None:
        """Reuse of a pooled connection: ``idle_add(-1, safe)`` + ``used_add(1)`` in one bracket,
        then ``max_used`` and ``est_need`` raised to the new ``used`` (HAProxy's srv_use_conn)."""
        self._calls.reuse[safe]()

    def try_used_to_idle(self, safe: bool, limit: int) -> bool:
        """``used_to_idle`` unless the server-wide ``idle`` is at ``limit`` (pool-max-conn; < 0 =
        unlimited): the row's ``idle`` moves by compare-exchange, so it never overshoots."""
        c = self._calls
        if limit < 0:
            c.park[safe]()  # used_to_idle
            return True
        return c.take_idle(limit, c.park_bounded[safe], ()) is not None

    def used_to_idle(self, safe: bool) -> None:
        """A released connection is kept: ``used_add(-1)`` + ``idle_add(1, safe)`` in one bracket."""
        self._calls.park[safe]()

    def try_queue(self, maxqueue: int) -> bool:
        """Count a waiter of this worker unless ``queue_len`` is at ``maxqueue`` (0 = unlimited)."""
        return self._bounded_take(R_QUEUE_LEN, "queued_cell", maxqueue, "peak_queue")

    def dequeued(self) -> None:
        """A waiter of this worker left the queue (served, timed out or aborted)."""
        self._pair_add(R_QUEUE_LEN, C_QUEUED, -1)

    def publish_oldest(self, ticket: int) -> None:
        """This worker's oldest waiting ticket for the server (0 = none), for ``oldest_waiter``."""
        self._a.store(self._base + C_OLDEST_TICKET, ticket)

    def takeover_given(self) -> None:
        self._a.fetch_add(self._base + C_TAKEOVERS_GIVEN, 1)
        self._a.fetch_add(self._row + R_TAKEOVERS_GIVEN, 1)

    def takeover_taken(self) -> None:
        self._a.fetch_add(self._base + C_TAKEOVERS_TAKEN, 1)

    def lent_out(self) -> None:
        """The owner finalized a slot a thief took: its cell's ``takeovers_given`` (the row's was
        counted by the thief when it took the connection)."""
        self._a.fetch_add(self._base + C_TAKEOVERS_GIVEN, 1)

    def __repr__(self) -> str:
        return (
            f"<ServerCell {self.index}/{self.slot} idle={self.idle} safe={self.safe} used={self.used}"
            f" served={self.served} conns={self.conns} queued={self.queued}>"
        )


def _pending(taken: int, safe: int) -> list[int]:
    """Per gauge (``GAUGES`` order), what ``taken`` TAKEN slots (``safe`` of them safe) still count
    in their owners' cells and no more in the row."""
    return [{"idle": taken, "safe": safe, "conns": taken}.get(g[0], 0) for g in GAUGES]


def _fields(cls: type) -> dict[str, int]:
    return {k: v.off for k, v in vars(cls).items() if isinstance(v, _Word)}


ROW_FIELDS: Final = _fields(ServerRow)
CELL_FIELDS: Final = _fields(ServerCell)


# ---- the table ----------------------------------------------------------------------------------


def segment_name(master_pid: int, generation: int) -> str:
    return f"/poolproxy.{master_pid}.{generation}"


def layout_sizes(
    nworkers: int, nservers: int, names_len: int, nslots: int = NSLOTS, nfrontends: int = 0
) -> dict[str, int]:
    """Every offset and size of the layout, from the counts (the one place they are computed)."""
    rows_off = HEADER_SIZE + nworkers * WORKER_SIZE
    cells_off = rows_off + nservers * ROW_SIZE
    slots_off = cells_off + nservers * nworkers * CELL_SIZE
    slot_array_size = SLOT_HEADER + nslots * SLOT_SIZE
    checks_off = slots_off + nservers * nworkers * slot_array_size
    fronts_off = checks_off + nservers * CHECK_SIZE
    names_off = fronts_off + nfrontends * (nworkers + 1) * FRONT_SIZE
    total_size = names_off + (names_len + 7) // 8 * 8
    return dict(workers_off=HEADER_SIZE, rows_off=rows_off, cells_off=cells_off, slots_off=slots_off,
                slot_array_size=slot_array_size, checks_off=checks_off, fronts_off=fronts_off,
                names_off=names_off,
                total_size=total_size)  # fmt: skip


class ShmTable:
    """One generation's table. Create it in the master (``create``), inherit it across ``fork``,
    ``attach`` it by name elsewhere. See the module docstring."""

    def __init__(self, name: str, mm: mmap.mmap, words: Atomics, header: dict[str, int]) -> None:
        self.name = name
        self.atomics = words
        self.header = header
        self.servers, self.frontends = _read_names(name, mm, header)
        self.nworkers = header["nworkers"]
        self.nservers = header["nservers"]
        self.generation = header["generation"]
        self.master_pid = header["master_pid"]
        self.backend = backend_name(header)
        self._mm = mm
        self._workers_off = header["workers_off"]
        self._cells_off = header["cells_off"]
        self._index = {(s.backend, s.name): s.index for s in self.servers}
        self._rows = [ServerRow(words, header["rows_off"] + i * ROW_SIZE, i) for i in range(self.nservers)]
        self._cells: list[ServerCell | None] = [None] * (self.nservers * self.nworkers)
        self.nslots = header["nslots"]
        self._slots_off = header["slots_off"]
        self._slot_array_size = header["slot_array_size"]
        self._arrays: list[SlotArray | None] = [None] * (self.nservers * self.nworkers)
        self._fronts_off = header["fronts_off"]
        self._front_index = {fe: f for f, fe in enumerate(self.frontends)}
        self._checks = [
            CheckRecord(words, header["checks_off"] + i * CHECK_SIZE, i) for i in range(self.nservers)
        ]
        self._closed = False

    # -- life cycle ------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, config: Config, nworkers: int, *, generation: int = 1, name: str | None = None,
        backend: str | None = None, nslots: int = NSLOTS,
    ) -> ShmTable:  # fmt: skip
        """Create and initialise the segment (the master, before forking). Servers are numbered in
        config order (backends, then their servers). ``FileExistsError`` if the name or the
        fallback's lock exists: run ``cleanup_stale`` first."""
        backend = atomics.BACKEND if backend is None else backend
        if nworkers < 1 or backend not in BACKEND_IDS:
            raise ValueError(f"need nworkers >= 1 (got {nworkers}) and a known backend (got {backend!r})")
        if nworkers > sl.MAX_CLAIMER or nslots < 0:
            raise ValueError(f"need nworkers <= {sl.MAX_CLAIMER} and nslots >= 0 (got {nslots})")
        name = segment_name(os.getpid(), generation) if name is None else name
        backend_ids = config.proxy_ids()[1]
        servers = [
            (bk, s, backend_ids[bk], svid)
            for bk, px in config.backends.items()
            for svid, s in enumerate(px.servers, 1)
        ]
        fronts = list(config.frontends)
        names = json.dumps({
            "servers": [[bk, s.name, s.host, s.port, bkid, svid, s.maxconn, s.maxqueue]
                        for bk, s, bkid, svid in servers],
            "frontends": fronts,
        }).encode()  # fmt: skip
        sizes = layout_sizes(nworkers, len(servers), len(names), nslots, len(fronts))
        header = dict(magic=MAGIC, version=LAYOUT_VERSION, header_size=HEADER_SIZE,
                      nworkers=nworkers, nservers=len(servers), nslots=nslots, nfrontends=len(fronts),
                      worker_size=WORKER_SIZE, row_size=ROW_SIZE, cell_size=CELL_SIZE, **sizes,
                      names_len=len(names), backend=BACKEND_IDS[backend], generation=generation,
                      master_pid=os.getpid(), created_ns=time.time_ns())  # fmt: skip
        header = {k: header[k] for k in HEADER_KEYS}  # in layout order
        try:
            seg = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=sizes["total_size"])
        except posix_ipc.ExistentialError as e:
            raise FileExistsError(f"shared memory {name} already exists (stale? cleanup_stale)") from e
        mm = None
        try:
            mm = mmap.mmap(seg.fd, sizes["total_size"])
            words = atomics.attach(mm, lock_name_for(name), create=True, backend=backend)
        except BaseException:
            if mm is not None:
                mm.close()
            posix_ipc.unlink_shared_memory(name)
            raise
        finally:
            seg.close_fd()
        mm[sizes["names_off"] : sizes["names_off"] + len(names)] = names
        for k, key in enumerate(HEADER_KEYS[1:], 1):
            words.store(8 * k, header[key])
        table = cls(name, mm, words, header)
        checked = 0
        for k, (_, cfg, _, _) in enumerate(servers):
            table._checks[k].init(cfg, checked % nworkers, header["created_ns"])
            checked += cfg.check
            row = table._rows[k]
            row.store(R_NEXT_TICKET, 1)
            row.store(R_WEIGHT, cfg.weight)
            row.store(R_MAXCONN, cfg.maxconn)
            row.store(R_ADMIN_STATE, AdminState.CMAINT if cfg.disabled else AdminState.READY)
            row.store(R_OPER_STATE, OperState.STOPPED if cfg.disabled else OperState.RUNNING)
        words.store(0, MAGIC)  # last: the table is complete
        return table

    @classmethod
    def attach(cls, name: str, *, backend: str | None = None) -> ShmTable:
        """Map an existing table by name (not needed after fork). ``FileNotFoundError``, or
        ``ShmLayoutError`` on any mismatch; ``backend`` defaults to ``proxy.atomics.BACKEND``."""
        mm = _map(name, writable=True)
        try:
            header = _check_header(name, mm)
            mine = atomics.BACKEND if backend is None else backend
            if BACKEND_IDS.get(mine) != header["backend"]:
                raise ShmLayoutError(
                    f"{name}: created with the {backend_name(header)!r} atomics backend, this process"
                    f" uses {mine!r} (mixing them breaks atomicity; set POOLPROXY_ATOMICS)"
                )
            return cls(name, mm, atomics.attach(mm, lock_name_for(name), backend=mine), header)
        except BaseException:
            mm.close()
            raise

    def close(self) -> None:
        """Unmap (this process only). Idempotent; views used afterwards raise ``ValueError``."""
        if not self._closed:
            self._closed = True
            self.atomics.close()
            self._mm.close()

    def unlink(self) -> None:
        """Remove the segment's name and the fallback's lock (the creator, when the generation
        ends). Mappings already made stay valid. Idempotent."""
        try:
            posix_ipc.unlink_shared_memory(self.name)
        except posix_ipc.ExistentialError:
            pass
        unlink_lock(lock_name_for(self.name))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<ShmTable {self.name} gen={self.generation} workers={self.nworkers} servers={self.nservers}"
            f" backend={self.backend}{' closed' if self._closed else ''}>"
        )

    # -- access ----------------------------------------------------------------------------------
    def server_index(self, backend: str, server: str) -> int:
        try:
            return self._index[backend, server]
        except KeyError:
            raise KeyError(f"no server {backend}/{server} in {self.name}") from None

    def row(self, i: int) -> ServerRow:
        if not 0 <= i < self.nservers:
            raise IndexError(f"server index {i} out of range (0..{self.nservers - 1})")
        return self._rows[i]

    def cell(self, i: int, slot: int) -> ServerCell:
        """The (server, worker) view; cached, so a worker may keep it for its hot path."""
        if not (0 <= i < self.nservers and 0 <= slot < self.nworkers):
            raise IndexError(
                f"cell ({i}, {slot}) out of range ({self.nservers} servers, {self.nworkers} workers)"
            )
        k = i * self.nworkers + slot
        c = self._cells[k]
        if c is None:
            peers = self._cells_off + i * self.nworkers * CELL_SIZE
            c = self._cells[k] = ServerCell(
                self.atomics, self._rows[i], peers + slot * CELL_SIZE, slot, peers
            )
        return c

    def check(self, i: int) -> CheckRecord:
        """Server ``i``'s health-check record (``proxy.health``)."""
        if not 0 <= i < self.nservers:
            raise IndexError(f"server index {i} out of range (0..{self.nservers - 1})")
        return self._checks[i]

    def slots(self, i: int, owner: int) -> SlotArray:
        """The slot array of worker ``owner`` for server ``i``; cached."""
        if not (0 <= i < self.nservers and 0 <= owner < self.nworkers):
            raise IndexError(
                f"slots ({i}, {owner}) out of range ({self.nservers} servers, {self.nworkers} workers)"
            )
        k = i * self.nworkers + owner
        arr = self._arrays[k]
        if arr is None:
            base = self._slots_off + k * self._slot_array_size
            arr = self._arrays[k] = SlotArray(self.atomics, self._mm, base, i, owner, self.nslots)
        return arr

    # The operations by index, for callers that do not keep a ServerCell (one extra call each).
    def try_take_slot(self, i: int, slot: int, maxconn: int) -> bool:
        return self.cell(i, slot).try_take_slot(maxconn)

    def release_slot(self, i: int, slot: int) -> None:
        self.cell(i, slot).release_slot()

    def try_open_conn(self, i: int, slot: int, limit: int) -> bool:
        return self.cell(i, slot).try_open_conn(limit)

    def conn_closed(self, i: int, slot: int) -> None:
        self.cell(i, slot).conn_closed()

    def idle_add(self, i: int, slot: int, delta: int, safe: bool = False) -> None:
        self.cell(i, slot).idle_add(delta, safe)

    def used_add(self, i: int, slot: int, delta: int) -> None:
        self.cell(i, slot).used_add(delta)

    def take_ticket(self, i: int) -> int:
        return self.row(i).take_ticket()

    def oldest_waiter(self, i: int) -> tuple[int, int] | None:
        """``(slot, ticket)`` of the oldest published waiter for server ``i`` across workers, or None."""
        a = self.atomics
        base = self._cells_off + i * self.nworkers * CELL_SIZE + C_OLDEST_TICKET
        tickets = [a.load(base + slot * CELL_SIZE) or None for slot in range(self.nworkers)]
        slot = oldest_waiter(tickets)
        if slot is None:
            return None
        ticket = tickets[slot]
        assert ticket is not None
        return slot, ticket

    # -- workers ---------------------------------------------------------------------------------
    def _wrec(self, slot: int) -> int:
        if not 0 <= slot < self.nworkers:
            raise IndexError(f"worker slot {slot} out of range (0..{self.nworkers - 1})")
        return self._workers_off + slot * WORKER_SIZE

    def register_worker(self, slot: int, pid: int, incarnation: int) -> None:
        """A (re)spawned worker in ``slot`` (the master after fork, or the worker itself)."""
        a, off, now = self.atomics, self._wrec(slot), time.monotonic_ns()
        a.store(off + W_PID, pid)
        a.store(off + W_INCARNATION, incarnation)
        a.store(off + W_STARTED, now)
        a.store(off + W_HEARTBEAT, now)
        a.store(off + W_STATE, WorkerState.STARTING)

    def set_worker_state(self, slot: int, state: WorkerState) -> None:
        self.atomics.store(self._wrec(slot) + W_STATE, state)

    def heartbeat(self, slot: int) -> None:
        self.atomics.store(self._wrec(slot) + W_HEARTBEAT, time.monotonic_ns())

    def worker(self, slot: int) -> WorkerInfo:
        a, off = self.atomics, self._wrec(slot)
        return WorkerInfo(
            slot, a.load(off + W_PID), a.load(off + W_INCARNATION), WorkerState(a.load(off + W_STATE)),
            a.load(off + W_HEARTBEAT), a.load(off + W_STARTED),
        )  # fmt: skip

    def bump_runtime_version(self) -> None:
        """After a weight or maxconn change (``proxy.server_admin``): workers look again."""
        self.atomics.fetch_add(H_RUNTIME_VERSION, 1)

    # -- frontends ------------------------------------------------------------------------------
    def front_index(self, frontend: str) -> int:
        return self._front_index[frontend]

    def front_cell(self, f: int, slot: int) -> int:
        """The offset of frontend ``f``'s cell of worker ``slot`` (``F_*`` words); only that worker
        writes it."""
        return self._fronts_off + (f * (self.nworkers + 1) + slot + 1) * FRONT_SIZE

    def front_peak(self, f: int) -> int:
        """The offset of frontend ``f``'s peak of concurrent connections across workers (the word
        before the workers' cells; raised by ``proxy.front_counter``, the only writer of the cells)."""
        return self._fronts_off + f * (self.nworkers + 1) * FRONT_SIZE

    def feconn(self, f: int) -> int:
        """Client connections open on frontend ``f``, across workers."""
        a = self.atomics
        return sum(a.load(self.front_cell(f, w) + F_CUR_CONNS) for w in range(self.nworkers))

    def actconn(self) -> int:
        """Client connections open on every frontend, across workers (HAProxy's actconn)."""
        return sum(self.feconn(f) for f in range(len(self.frontends)))

    def _front_snapshot(self) -> list[dict[str, Any]]:
        a, out = self.atomics, []
        for f, name in enumerate(self.frontends):
            cells = [
                {k: a.load(self.front_cell(f, w) + off) for k, off in FRONT_FIELDS.items()}
                for w in range(self.nworkers)
            ]
            entry: dict[str, Any] = {k: sum(c[k] for c in cells) for k in FRONT_FIELDS}
            max_conns = a.load(self.front_peak(f))
            entry.update(name=name, max_conns=max_conns, cells=cells)
            out.append(entry)
        return out

    # -- reconciliation --------------------------------------------------------------------------
    def reconcile_worker(self, slot: int, *, timeout: float = 0.1) -> ReconcileReport:
        """The master, after reaping the worker of ``slot``: remove its cells from the rows (slots,
        connections, idle/used counts, queue entries) and zero them, so that each row equals the sum of
        the other cells. Safe while the other workers run. Marks the slot DEAD."""
        a = self.atomics
        self.set_worker_state(slot, WorkerState.DEAD)
        report = ReconcileReport(slot, self.worker(slot).pid)
        for f in range(len(self.frontends)):  # its client connections died with it
            a.store(self.front_cell(f, slot) + F_CUR_CONNS, 0)
        deadline = time.monotonic() + timeout
        for i in range(self.nservers):
            report.checks_released += self._checks[i].release(slot)
            cell = self.cell(i, slot)._base
            row = self._rows[i]._base
            a.store(cell + C_OLDEST_TICKET, 0)  # first: no releaser may hand this slot a seat any more
            drift = [0] * len(GAUGES)
            if a.load(cell + C_SEQ) & 1:  # it died inside a paired operation on this server
                report.inflight = True
                settled = self._settle(i, slot, deadline)
                report.exact = report.exact and settled is not None
                drift = settled or drift
            got: dict[str, int] = {}
            for (gname, roff, coffs), d in zip(GAUGES, drift, strict=True):
                v = sum(a.exchange(cell + c, 0) for c in coffs)
                if v + d:
                    a.fetch_add(row + roff, -(v + d))
                if v:
                    got[gname] = v
                    report.reclaimed[gname] += v
            for off in (C_OLDEST_TICKET, C_TAKEOVERS_GIVEN, C_TAKEOVERS_TAKEN, C_SEQ):
                a.store(cell + off, 0)
            if got:
                report.per_server[i] = got
            # Its slots (proxy.slots): as owner, all EMPTY (its copies died with it); as claimer,
            # its claims returned. Gauges are not involved: a slot moves no counter.
            # A TAKEN slot of the dead owner: its cell (just subtracted) still counted the connection,
            # which the row had already dropped (the thief did): give the row that back.
            cleared, taken, safe = self.slots(i, slot).clear_dead_owner()
            pending = _pending(taken, safe)
            report.slots_cleared += cleared
            for (_, roff, _), p in zip(GAUGES, pending, strict=True):
                if p:
                    a.fetch_add(row + roff, p)
            for owner in range(self.nworkers):
                if owner != slot:
                    alive = a.load(self._wrec(owner) + W_STATE) != WorkerState.DEAD
                    report.claims_returned += self.slots(i, owner).return_claims(slot, owner_alive=alive)
        return report

    def _taken_pending(self, i: int) -> list[int]:
        """Per gauge, what the TAKEN slots of server ``i`` (all owners) still count in their
        owners' cells and no more in the row: ``idle`` and ``cur_conns`` 1 each, ``safe`` 1 if safe."""
        n = safe = 0
        for owner in range(self.nworkers):
            arr = self.slots(i, owner)
            for k, tag in enumerate(arr.tags()):
                if sl.state_of(tag) is SlotState.TAKEN:
                    n += 1
                    safe += sl.meta_safe(self.atomics.load(arr.tag_off(k) + S_META))
        return _pending(n, safe)

    def _settle(self, i: int, dead: int, deadline: float) -> list[int] | None:
        """Per gauge, ``row - (sum(all cells) - taken pending)`` of server ``i`` from a consistent
        snapshot: what the dead worker's unfinished operation left in the row. None if no snapshot
        settled by ``deadline``."""
        a = self.atomics
        base = self._cells_off + i * self.nworkers * CELL_SIZE
        others = [s for s in range(self.nworkers) if s != dead]
        row = self._rows[i]._base
        while True:
            frozen = [a.load(self._wrec(s) + W_STATE) == WorkerState.DEAD for s in others]
            v1 = [a.load(base + s * CELL_SIZE + C_SEQ) for s in others]
            if all(v % 2 == 0 or f for v, f in zip(v1, frozen, strict=True)):
                rows = [a.load(row + roff) for _, roff, _ in GAUGES]
                sums = [
                    sum(a.load(base + s * CELL_SIZE + c) for s in range(self.nworkers) for c in coffs)
                    for _, _, coffs in GAUGES
                ]
                pending = self._taken_pending(i)
                if v1 == [a.load(base + s * CELL_SIZE + C_SEQ) for s in others]:
                    return [r - (s - p) for r, s, p in zip(rows, sums, pending, strict=True)]
            if time.monotonic() > deadline:
                return None
            os.sched_yield()

    # -- observation -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Plain data (JSON-able): header, workers, servers with their row fields and cells. Each
        word is read atomically; the whole is not a consistent cut (counters converge)."""
        a = self.atomics
        workers = []
        for slot in range(self.nworkers):
            w = self.worker(slot)
            workers.append({
                "slot": slot, "pid": w.pid, "incarnation": w.incarnation, "state": w.state.name,
                "heartbeat_ns": w.heartbeat_ns, "started_ns": w.started_ns,
            })  # fmt: skip
        servers = []
        for s in self.servers:
            rbase = self._rows[s.index]._base
            entry: dict[str, Any] = {
                "index": s.index, "backend": s.backend, "server": s.name, "host": s.host, "port": s.port,
                "bkid": s.bkid, "svid": s.svid, "maxconn": s.maxconn, "maxqueue": s.maxqueue,
            }  # fmt: skip
            entry.update({k: a.load(rbase + off) for k, off in ROW_FIELDS.items()})
            entry["cells"] = [
                {k: a.load(self.cell(s.index, slot)._base + off) for k, off in CELL_FIELDS.items()}
                for slot in range(self.nworkers)
            ]
            entry["slots"] = [self.slots(s.index, slot).counts() for slot in range(self.nworkers)]
            entry["check"] = self._checks[s.index].snapshot()
            servers.append(entry)
        header = dict(self.header, name=self.name, backend_name=self.backend)
        return {"header": header, "workers": workers, "servers": servers, "frontends": self._front_snapshot()}


def _map(name: str, *, writable: bool) -> mmap.mmap:
    try:
        seg = posix_ipc.SharedMemory(name, read_only=not writable)
    except posix_ipc.ExistentialError as e:
        raise FileNotFoundError(f"no shared memory named {name}") from e
    try:
        if seg.size < HEADER_SIZE:
            raise ShmLayoutError(f"{name}: {seg.size} bytes, too small for a poolproxy table")
        return mmap.mmap(seg.fd, seg.size, prot=mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0))
    finally:
        seg.close_fd()


def _check_header(name: str, mm: mmap.mmap) -> dict[str, int]:
    h = dict(zip(HEADER_KEYS, _HEADER.unpack_from(mm, 0), strict=False))
    if h["magic"] != MAGIC:
        raise ShmLayoutError(f"{name}: not a poolproxy table (bad magic), or still being created")
    if h["version"] != LAYOUT_VERSION:
        raise ShmLayoutError(f"{name}: layout version {h['version']}, this code reads {LAYOUT_VERSION}")
    if h["nworkers"] < 1 or h["nservers"] < 0 or h["names_len"] < 0:
        raise ShmLayoutError(f"{name}: bad counts nworkers={h['nworkers']} nservers={h['nservers']}")
    want = dict(header_size=HEADER_SIZE, worker_size=WORKER_SIZE, row_size=ROW_SIZE, cell_size=CELL_SIZE)
    if h["nslots"] < 0:
        raise ShmLayoutError(f"{name}: bad slot count {h['nslots']}")
    want.update(layout_sizes(h["nworkers"], h["nservers"], h["names_len"], h["nslots"], h["nfrontends"]))
    for k, v in want.items():
        if h[k] != v:
            raise ShmLayoutError(f"{name}: header {k}={h[k]}, expected {v} for this layout")
    if len(mm) != h["total_size"]:
        raise ShmLayoutError(f"{name}: segment is {len(mm)} bytes, header says {h['total_size']}")
    if h["backend"] not in BACKEND_IDS.values():
        raise ShmLayoutError(f"{name}: unknown atomics backend id {h['backend']}")
    return h


def _read_names(name: str, mm: mmap.mmap, h: dict[str, int]) -> tuple[list[ServerInfo], list[str]]:
    raw = json.loads(bytes(mm[h["names_off"] : h["names_off"] + h["names_len"]]))
    servers = [ServerInfo(i, *entry) for i, entry in enumerate(raw["servers"])]
    if len(servers) != h["nservers"] or len(raw["frontends"]) != h["nfrontends"]:
        raise ShmLayoutError(f"{name}: {len(servers)} server names for {h['nservers']} rows")
    return servers, list(raw["frontends"])


def read_header(name: str) -> dict[str, int]:
    """The checked header of a table, without attaching atomics (to pick the backend, to list)."""
    with _map(name, writable=False) as mm:
        return _check_header(name, mm)


def backend_name(header: dict[str, int]) -> str:
    return next((k for k, v in BACKEND_IDS.items() if v == header["backend"]), "?")


# ---- stale segments -----------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time_ns(pid: int) -> int | None:
    """When ``pid`` started (CLOCK_REALTIME ns, to a second), from /proc; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return (btime * 10**9) + ticks * 10**9 // os.sysconf("SC_CLK_TCK")


def _stale(pid: int, name: str | None) -> bool:
    if not _pid_alive(pid):
        return True
    if name is None:
        return False
    try:  # the pid may have been reused: a live process younger than the segment did not create it
        created = read_header(name)["created_ns"]
    except (OSError, ValueError, posix_ipc.Error):  # another user's segment: not ours to judge
        return False
    started = _start_time_ns(pid)
    return started is not None and started > created + 2 * 10**9


def cleanup_stale(prefix: str = "/poolproxy.") -> list[str]:
    """Remove segments ``<prefix><pid>.<generation>`` and their fallback locks whose master pid is
    dead (or was reused by a younger process); other users' segments are left alone. Returns the
    names removed."""
    stem = prefix.lstrip("/")
    found: dict[str, list[bool]] = {}  # segment name -> [segment exists, lock exists]
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    for entry in entries:
        is_sem = entry.startswith("sem.")
        rest = entry[4:] if is_sem else entry
        if not rest.startswith(stem):
            continue
        parts = rest[len(stem) :].split(".")
        if len(parts) != (3 if is_sem else 2) or not (parts[0].isdigit() and parts[1].isdigit()):
            continue
        if is_sem and parts[2] != "lock":
            continue
        found.setdefault("/" + stem + ".".join(parts[:2]), [False, False])[is_sem] = True
    removed: list[str] = []
    for seg, (has_seg, has_sem) in sorted(found.items()):
        if not _stale(int(seg[len(stem) + 1 :].split(".")[0]), seg if has_seg else None):
            continue
        # Another user's segment (or lock) is skipped: removing it is not ours to do
        # (posix_ipc.PermissionsError), and a start must never fail on it.
        if has_seg:
            try:
                posix_ipc.unlink_shared_memory(seg)
                removed.append(seg)
            except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
                pass
        with contextlib.suppress(posix_ipc.PermissionsError):
            if has_sem and unlink_lock(lock_name_for(seg)):
                removed.append(lock_name_for(seg))
    return removed
