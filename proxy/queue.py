"""Server ``maxconn`` slots and the queue shared by all workers (DESIGN.md §5, SEMANTICS.md §4).

Fairness rule. ``served`` (server-wide, in shm) counts requests holding a slot and never exceeds
``maxconn``: slots are taken by compare-exchange. A request that finds the server full — or finds
anybody already waiting, so that it cannot overtake them — takes a global ticket (``fetch_add``) and
waits in its own worker's list; each worker publishes its oldest ticket per server in its cell.
Whoever releases a slot gives it to the oldest ticket across all workers: to one of its own waiters
directly, or, for another worker's, moves the slot to that worker's ``incoming`` (``served`` stays
counted) and wakes it with a ``SLOT`` datagram. So the queue is one FIFO across workers.

Races and their repair:
- a waiter published just after a releaser looked: every new waiter, and a periodic sweep while
  waiters exist, calls ``offer()``, which takes free slots for the oldest waiters;
- two releasers choose the same oldest waiter: the owner gets two slots and passes the extra on
  (``granted`` with no waiter left releases it the same way);
- a waiter that times out (503 ``sQ``) or whose client aborts leaves the list and its count;
  a slot that reached it meanwhile is passed on, never leaked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import Enum
from typing import Final

from proxy.server import ServerRuntime
from proxy.shm import R_QUEUE_FULL, R_QUEUE_TIMEOUTS, ShmTable
from proxy.takeover import SLOT, Message

SWEEP_INTERVAL: Final = 0.05  # seconds between offer() sweeps while this worker has waiters


class Waiter:
    """A request of this worker waiting for a maxconn slot of one server."""

    __slots__ = ("future", "ticket")

    def __init__(self, ticket: int, future: asyncio.Future[bool]) -> None:
        self.ticket = ticket
        self.future = future

    def grant(self) -> bool:
        """Wake it with its slot; False if it stopped waiting (timed out or cancelled)."""
        if self.future.done():
            return False
        self.future.set_result(True)
        return True

    def __repr__(self) -> str:
        return f"Waiter(ticket={self.ticket})"


class Outcome(Enum):
    GRANTED = "granted"
    FULL = "full"  # maxqueue reached: 503
    TIMEOUT = "timeout"  # timeout queue: 503 sQ


class Queues:
    """This worker's side of every server's queue."""

    def __init__(
        self,
        table: ShmTable,
        slot: int,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[int, Message], bool],
    ) -> None:
        self.table = table
        self.slot = slot
        self.loop = loop
        self.send = send
        self.sweeping: set[ServerRuntime] = set()

    # -- taking a slot ----------------------------------------------------------------------------
    def try_take(self, srv: ServerRuntime) -> bool:
        """The fast path: a free slot and nobody waiting anywhere for this server."""
        if srv.queued_now():
            return False
        return srv.try_take_slot()  # on the live maxconn (``set maxconn server``)

    async def wait(self, srv: ServerRuntime, timeout: float | None) -> Outcome:
        """Queue for a slot; on GRANTED the caller holds one (and must ``release`` it)."""
        cell = srv.cell
        if not cell.try_queue(srv.maxqueue):
            srv.row.add(R_QUEUE_FULL)
            return Outcome.FULL
        waiter = Waiter(srv.row.take_ticket(), self.loop.create_future())
        srv.waiters.append(waiter)
        if len(srv.waiters) == 1:
            cell.publish_oldest(waiter.ticket)
        self.offer(srv)
        self._sweep(srv)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                # The slot arrived in the same instant: we hold it, but nobody will use it.
                self.release(srv)
            else:
                waiter.future.cancel()
                self._leave(srv, waiter)
            if isinstance(exc, asyncio.CancelledError):
                raise
            srv.row.add(R_QUEUE_TIMEOUTS)
            return Outcome.TIMEOUT
        return Outcome.GRANTED

    def _leave(self, srv: ServerRuntime, waiter: Waiter) -> None:
        try:
            srv.waiters.remove(waiter)
        except ValueError:
            return
        srv.cell.dequeued()
        self._publish(srv)

    def _publish(self, srv: ServerRuntime) -> None:
        srv.cell.publish_oldest(srv.waiters[0].ticket if srv.waiters else 0)

    def _hand_local(self, srv: ServerRuntime) -> bool:
        """Give a slot this worker holds to its oldest waiter; False when none is left."""
        while srv.waiters:
            waiter = srv.waiters.popleft()
            srv.cell.dequeued()
            self._publish(srv)
            if waiter.grant():
                return True
        return False

    # -- giving a slot back -----------------------------------------------------------------------
    def release(self, srv: ServerRuntime) -> None:
        """Give back a held slot: to the oldest waiter across workers, else to the server."""
        if not srv.queued_now():
            # Nobody waits (the common case): no cell to scan. A waiter counted just after this
            # read takes the freed slot itself (``offer`` when it queues, and its sweep).
            srv.release_slot()
            return
        while True:
            oldest = self.table.oldest_waiter(srv.index)
            if oldest is None:
                srv.cell.release_slot()
                return
            owner = oldest[0]
            if owner == self.slot:
                if self._hand_local(srv):
                    return
                continue  # our published ticket was stale; look again
            srv.cell.give_slot(owner)
            # If the datagram is lost, the owner's sweep claims the slot anyway; if the owner died,
            # the master's reconcile returns its incoming slots to the server.
            self.send(owner, Message(SLOT, server=srv.index))
            return

    def granted(self, srv: ServerRuntime) -> None:
        """A ``SLOT`` datagram: another worker moved a slot to us for our oldest waiter."""
        while srv.cell.claim_incoming():
            if not self._hand_local(srv):
                self.release(srv)  # nobody waits any more here: pass it on

    def offer(self, srv: ServerRuntime) -> None:
        """Take free slots (if any) for the oldest waiters, wherever they are."""
        maxconn = srv.row.maxconn
        while srv.row.queue_len:
            oldest = self.table.oldest_waiter(srv.index)
            if oldest is None or not srv.cell.try_take_slot(maxconn):
                return
            if oldest[0] == self.slot:
                if not self._hand_local(srv):
                    srv.cell.release_slot()
                    return
            else:
                peer = srv.peers[oldest[0]]
                if peer.incoming >= peer.queued:  # it already has a slot on the way per waiter
                    srv.cell.release_slot()
                    return
                srv.cell.give_slot(oldest[0])
                self.send(oldest[0], Message(SLOT, server=srv.index))

    def _sweep(self, srv: ServerRuntime) -> None:
        if srv in self.sweeping:
            return
        self.sweeping.add(srv)

        def tick() -> None:
            self.granted(srv)  # also picks up a slot whose SLOT datagram was lost
            self.offer(srv)
            if srv.waiters:
                self.loop.call_later(SWEEP_INTERVAL, tick)
            else:
                self.sweeping.discard(srv)

        self.loop.call_later(SWEEP_INTERVAL, tick)
