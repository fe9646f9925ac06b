"""The victim's side of takeovers, and what links a worker's backends to the other workers.

``proxy.takeover`` is the wire (datagrams, descriptors, the ``Victim`` interface); this module is
what those messages do to this worker's pools — give an idle connection away, close one to make room
(KILL), close this worker's share of a purge, pool a connection that arrived after its thief gave up
— and what both sides of a takeover share: ``WorkerLink`` (slot, channel, connection-key registry),
``key_id`` and ``ORDERS`` (how a key and a list order travel), ``adopt`` (wrap a received
descriptor). It is apart from the channel because the master sends on the channel too, and the
master imports no HTTP code (DESIGN.md §2).

Contract of a hand-over (the victim): the connection leaves our pool, our loop and our counts
*before* its descriptor is sent; our copy is then closed without ``shutdown()``, so the thief's copy
stays connected; its share of ``cur_conns`` moves to the thief's cell once the datagram left
(``ServerRuntime.hand_over``), or is dropped if it could not be sent. An idle h2c connection goes
with its HTTP/2 state (``H2ServerConn.detach_socket``: a memory file, ``proxy.h2_handover``) as a
second descriptor, and ``adopt`` continues it from that state; one with anything in flight, and a
TLS one, stays here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from proxy.h1 import Limits
from proxy.h2_handover import NotIdle
from proxy.log import notice
from proxy.pool import ConnKey, ListKind, worker_share
from proxy.server import Acct, ServerRuntime
from proxy.server_conn import ServerConn, adopt_socket, wrap_socket
from proxy.server_h2 import H2ServerConn
from proxy.shm import R_PURGED
from proxy.takeover import Channel, Handed

if TYPE_CHECKING:
    from proxy.queue import Queues
    from proxy.steal import Thief


AdoptedConn = TypeVar("AdoptedConn", ServerConn, H2ServerConn)

# The order of lists a thief asks for travels as one byte: the index of ``reuse_order``'s answer here.
ORDERS: tuple[tuple[ListKind, ...], ...] = (
    (ListKind.IDLE, ListKind.SAFE),
    (ListKind.SAFE,),
    (ListKind.SAFE, ListKind.IDLE),
)


def key_id(key: ConnKey) -> int:
    """A stable 63-bit identity of a connection key, the same in every worker."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class WorkerLink:
    """What a worker's backends and its donor share: identity, the channel, the key registry."""

    def __init__(self, slot: int, nworkers: int, loop: asyncio.AbstractEventLoop) -> None:
        self.slot = slot
        self.nworkers = nworkers
        self.loop = loop
        self.channel: Channel | None = None
        # How this worker steals: with pidfd_getfd from published slots (``thief`` set), or over
        # the channel (``thief`` None): decided once at start (``steal_via`` says which, and why).
        self.thief: Thief | None = None
        self.steal_via = "channel"
        self.queues: Queues
        self.keys: dict[int, ConnKey] = {}  # key_id -> key, for the keys of this worker's connections
        self.shared = True  # tune.idle-pool.shared: may this worker steal from the others
        self.late: Callable[[Handed], None] | None = None  # where a connection for another server goes
        self.stopping = False  # soft stop: nothing is pooled any more
        self.tasks: set[asyncio.Task[None]] = set()  # background adoptions, referenced until done

    def steal_refused(self, reason: str) -> None:
        """``pidfd_getfd`` was refused at run time: steal over the channel from now on."""
        if self.thief is not None:
            self.thief.close()
            self.thief = None
            self.steal_via = f"channel ({reason})"
            notice(f"worker {self.slot}: stealing idle connections over the channel from now on: {reason}")

    def register(self, key: ConnKey) -> ConnKey:
        """Remember ``key`` under its ``key_id``, so that a thief's ASK can name it."""
        self.keys.setdefault(key_id(key), key)
        return key


async def adopt(loop: asyncio.AbstractEventLoop, conn: AdoptedConn, handed: Handed) -> AdoptedConn | None:
    """Wrap a descriptor received from another worker into ``conn`` (a new, unattached connection:
    an ``H2ServerConn`` when ``handed`` carries an HTTP/2 state, continued from it).

    The victim moved its share of ``cur_conns`` to our cell with the descriptor, so the connection
    arrives COUNTED; on failure it is uncounted and None returned (a cancellation propagates).
    Every descriptor in ``handed`` is ours to close, whatever happens."""
    srv = conn.server
    srv.adopt(conn)
    conn.on_lost = srv.lost
    if isinstance(conn, H2ServerConn):
        if handed.state_fd < 0 or not conn.restore_from_fd(handed.state_fd):
            os.close(handed.fd)
            conn.close()  # never connected: the hook uncounts it
            return None
    elif handed.state_fd >= 0:
        os.close(handed.state_fd)
    conn.requests = handed.reqs
    try:
        sock = socket.socket(fileno=handed.fd)
    except OSError:
        os.close(handed.fd)
        conn.close()
        return None
    try:
        if isinstance(conn, H2ServerConn):
            await wrap_socket(loop, conn, sock)
        else:
            await adopt_socket(loop, conn, sock)
    except BaseException as exc:  # OSError, or the stream gave up (cancelled) meanwhile
        conn.close()
        if isinstance(exc, OSError):
            return None
        raise
    if not conn.alive:  # the server spoke or closed before we resumed: close() uncounted it
        conn.close()
        return None
    return conn


class Donor:
    """The victim's side of takeovers, kills and purges: this worker's ``Victim`` for its channel.

    A connection given away leaves our pool, our loop and our counts *before* its descriptor is
    sent; our copy is then closed without ``shutdown()``, so the thief's copy stays connected."""

    def __init__(
        self,
        link: WorkerLink,
        servers: dict[int, ServerRuntime],
        engine_name: str,
        limits: Limits,
        slot_granted: Callable[[ServerRuntime], None],
    ) -> None:
        self.link = link
        self.servers = servers
        self.engine_name = engine_name
        self.limits = limits
        self._slot_granted = slot_granted
        self._leaving: ServerConn | H2ServerConn | None = None  # between give_idle and handed_over

    def give_idle(self, server: int, key: int, order: int) -> tuple[int, int, int, int] | None:
        srv = self.servers.get(server)
        ckey = self.link.keys.get(key)
        if srv is None or ckey is None or not 0 <= order < len(ORDERS):
            return None
        srv.settle_if_rung()
        while True:
            got = srv.pool.take_with_kind(ckey, ORDERS[order])
            if got is None:
                return None
            conn = got[0]
            kind = got[1]
            if not isinstance(conn, ServerConn | H2ServerConn) or not conn.shareable or (
                isinstance(conn, H2ServerConn) and not conn.lendable
            ):
                # TLS: its state cannot leave this process (nor can an HTTP/2 connection's with
                # something in flight): it stays ours, untouched
                srv.pool.add(conn, kind)
                return None
            if not srv.unpark(conn):
                continue  # claimed from its slot by another worker meanwhile: lent
            if conn.alive and conn.peek_ready():
                break
            conn.close()  # its hook uncounts it (it already left the pool)
        srv.move(conn, Acct.COUNTED)  # no longer idle here; cur_conns moves in handed_over
        try:
            if isinstance(conn, H2ServerConn):
                fd, state_fd = conn.detach_socket()  # and its HTTP/2 state (``proxy.h2_handover``)
            else:
                fd, state_fd = conn.detach_socket(), -1
        except (OSError, AttributeError, NotIdle):
            conn.close()
            srv.uncount(conn)
            return None
        srv.cell.takeover_given()
        self._leaving = conn
        return fd, conn.requests, 1 if kind is ListKind.SAFE else 0, state_fd

    def handed_over(self, server: int, thief: int, sent: bool) -> None:
        """After ``give_idle``: the connection's share of cur_conns goes to the thief, or, if the
        datagram could not be sent (the descriptor is then closed), the connection is gone."""
        conn, self._leaving = self._leaving, None
        if conn is None:
            return
        if sent:
            conn.server.hand_over(conn, thief)
        else:
            conn.server.uncount(conn)

    def slot_granted(self, server: int) -> None:
        srv = self.servers.get(server)
        if srv is not None:
            self._slot_granted(srv)

    def kill_idle(self, server: int) -> None:
        """Make room for one connection: close our oldest idle one (not one another worker took)."""
        srv = self.servers.get(server)
        if srv is None:
            return
        srv.settle()
        while srv.pool:
            if srv.drop_idle(srv.pool.oldest(1)[0]):
                return

    def purge(self, server: int, to_close: int, idle_total: int) -> None:
        """This worker's share of a purge the master decided (oldest connections first)."""
        srv = self.servers.get(server)
        if srv is None:
            return
        srv.settle()
        for conn in srv.pool.oldest(worker_share(to_close, len(srv.pool), idle_total)):
            if srv.unpark(conn):  # a lent one is not ours to close
                srv.row.add(R_PURGED)  # before the close: a reader of idle, then purged, agrees
                srv.drop_idle(conn)

    def close_idle(self) -> None:
        """Soft stop: close every idle connection of this worker."""
        for srv in self.servers.values():
            srv.closing = True  # a lent connection given back later is closed then
            srv.settle()
            for conn in srv.pool.oldest(len(srv.pool)):
                srv.drop_idle(conn)

    def adopt_late(self, handed: Handed) -> None:
        """A connection handed over after the thief gave up waiting: pool it as our own idle one."""
        srv = self.servers.get(handed.server)
        if srv is None:
            os.close(handed.fd)
            return
        key = srv.static_key
        if key is None or srv.cfg.usesrc_clientip or self.link.stopping or handed.state_fd >= 0:
            # We cannot tell its key here (do not guess), or it is HTTP/2 (its settings are the
            # backend's): closed. (Our copy is the only one left: the server sees the close.)
            os.close(handed.fd)
            if handed.state_fd >= 0:
                os.close(handed.state_fd)
            srv.cell.conn_closed()  # the victim moved its count to us
            return
        link = self.link

        async def pool_it() -> None:
            conn = await adopt(link.loop, ServerConn(srv, key, self.engine_name, self.limits), handed)
            if conn is None:
                return
            kind = ListKind.SAFE if handed.kind else ListKind.IDLE
            srv.move(conn, srv.pooled_state(kind))
            conn.idle_since = link.loop.time()
            srv.park(conn, kind)

        task = link.loop.create_task(pool_it())
        link.tasks.add(task)
        task.add_done_callback(link.tasks.discard)
