"""An idle h2c server connection lent to another worker with its HTTP/2 state (issue #8).

Two workers' views of one server over a real shared-memory table, in this process (as
``test_pidfd``'s lab): worker 0 owns a real TCP connection to an in-process HTTP/2 server (the
``h2`` library's server side on the accepted socket), carries exchanges on it with HPACK-indexed
custom headers, and parks it; worker 1's real ``Thief`` claims the slot and duplicates both the
socket and the published state with ``pidfd_getfd``; a new ``H2ServerConn`` continues from that
state on the duplicate. The server must see one connection go on: the next stream decodes
correctly there, its response decodes here, and no GOAWAY or second preface was sent.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import select
import socket
from collections.abc import Callable, Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import uvloop

from proxy import pidfd, slots as sl
from proxy.config.model import Cap, Config, Proxy, Server
from proxy.donor import ORDERS, Donor, WorkerLink, adopt, key_id
from proxy.h1 import Limits
from proxy.message import Data, EndOfMessage, Event, RequestHead, ResponseHead
from proxy.pool import ListKind, key_hash, server_conn_key
from proxy.server import Acct, ServerRuntime, SlotMove
from proxy.server_conn import wrap_socket
from proxy.server_h2 import H2ServerConn, H2Stream
from proxy.shm import ShmTable, WorkerState
from proxy.steal import Thief
from proxy.takeover import Handed

pytestmark = pytest.mark.skipif(pidfd.probe(os.getpid(), 0) is not None, reason="pidfd_getfd refused here")

_gen = itertools.count(9500)
CUSTOM = [(b"x-tenant", b"tenant-0123456789"), (b"x-trace-context", b"trace=abcdef;span=42")]
RESP_FIELDS = [(b"x-served-by", b"origin-node-7"), (b"x-cache-key", b"k" * 40)]


class Peer:
    """The ``ServerPeer`` of one stream: records its events."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.failed = 0

    def on_server_events(self, events: list[Event]) -> None:
        self.events.extend(events)

    def on_server_error(self, exc: Exception) -> None:
        self.failed += 1

    def on_server_closed(self) -> None:
        self.failed += 1

    def on_server_writable(self, writable: bool) -> None:
        pass

    def on_tunnel_data(self, data: bytes) -> None:
        raise AssertionError

    def on_tunnel_eof(self) -> None:
        raise AssertionError

    @property
    def done(self) -> bool:
        return any(isinstance(e, EndOfMessage) for e in self.events) or self.failed > 0

    @property
    def head(self) -> ResponseHead:
        return next(e for e in self.events if isinstance(e, ResponseHead))


class Origin:
    """The server end of one accepted connection, driven by hand (``step``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.answered: set[int] = set()
        self.eof = False

    def step(self) -> None:
        if select.select([self.sock], [], [], 0.002)[0]:
            data = self.sock.recv(65536)
            if not data:
                self.eof = True
            else:
                self.events.extend(self.h2.receive_data(data))
        for ev in self.events:  # answer every complete request: its fields echoed in one header
            if isinstance(ev, h2.events.StreamEnded) and ev.stream_id not in self.answered:
                self.answered.add(ev.stream_id)
                req = next(
                    e for e in self.events
                    if isinstance(e, h2.events.RequestReceived) and e.stream_id == ev.stream_id
                )  # fmt: skip
                tenant = dict(req.headers).get(b"x-tenant", b"-")
                fields = [(b":status", b"200"), *RESP_FIELDS, (b"x-echo-tenant", tenant)]
                self.h2.send_headers(ev.stream_id, fields)
                self.h2.send_data(ev.stream_id, b"body-%d" % ev.stream_id, end_stream=True)
        out = self.h2.data_to_send()
        if out:
            self.sock.sendall(out)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class Lab:
    """Worker 0 (``owner``) and worker 1 (``other``) of one server; one event loop for both."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.cfg = Server(name="s1", host="127.0.0.1", port=self.listener.getsockname()[1], proto="h2")
        config = Config(backends={"be": Proxy(name="be", cap=Cap.BACKEND, servers=[self.cfg])})
        self.table = ShmTable.create(config, 2, generation=next(_gen), nslots=4)
        for w in range(2):
            self.table.register_worker(w, os.getpid(), 1)
            self.table.set_worker_state(w, WorkerState.RUNNING)
        cells = [self.table.cell(0, w) for w in range(2)]
        self.owner = ServerRuntime("be", 0, self.cfg, cells, 0)
        self.owner.lend_from(self.table.slots(0, 0), sl.make_owner(0, 1))
        self.other = ServerRuntime("be", 0, self.cfg, cells, 1)
        self.key = server_conn_key("be", self.cfg)
        self.origins: list[Origin] = []

    def until(self, cond: Callable[[], bool], what: str) -> None:
        for _ in range(2000):
            self.loop.run_until_complete(asyncio.sleep(0))
            for o in self.origins:
                o.step()
            if cond():
                return
        raise AssertionError(f"never: {what}")

    def connect(self, *, shareable: bool = True) -> H2ServerConn:
        conn = H2ServerConn(self.owner, self.key)
        conn.shareable = shareable
        assert self.owner.move(conn, Acct.COUNTED, 0) and self.owner.move(conn, Acct.USED)
        conn.on_lost = self.owner.lost
        sock = socket.create_connection(self.listener.getsockname())
        self.origins.append(Origin(self.listener.accept()[0]))
        self.loop.run_until_complete(wrap_socket(self.loop, conn, sock))
        self.until(lambda: conn.got_settings, "the server's SETTINGS")
        return conn

    def exchange(self, conn: H2ServerConn, tenant: bytes = b"tenant-0123456789") -> Peer:
        """One GET with the custom fields on a new stream of ``conn``, to its end."""
        st = conn.open_stream()
        peer = Peer()
        st.attach(peer, b"GET")
        fields = [(b"Host", b"origin.test"), (b"X-Tenant", tenant), (b"X-Trace-Context", CUSTOM[1][1])]
        st.send_head(RequestHead(b"GET", b"/", b"1.1", fields), keep_alive=True, add=[])
        self.until(lambda: peer.done, "the response")
        assert peer.failed == 0
        self.finish(st)
        return peer

    def finish(self, st: H2Stream) -> None:
        st.detach()

    def park(self, conn: H2ServerConn, *, lent: bool = True) -> None:
        """What ``Backend._finish_stream`` does with a connection whose last stream ended; then
        (``lent``) wait until it is published (it is, once idle ``LEND_AFTER``)."""
        conn.make_idle()
        assert self.owner.move(conn, Acct.SAFE, -1)
        self.owner.park(conn, ListKind.SAFE)
        assert conn.slot == -1 and conn.state_fd == -1  # not at once
        if lent:
            self.until(lambda: conn.slot >= 0, "the connection lent")

    def gauges(self) -> dict[str, Any]:
        s = self.table.snapshot()["servers"][0]
        return {k: s[k] for k in ("cur_conns", "idle", "safe", "used")}

    def close(self) -> None:
        for o in self.origins:
            o.sock.close()
        self.listener.close()
        self.loop.close()
        self.table.close()
        self.table.unlink()


@pytest.fixture
def lab() -> Iterator[Lab]:
    made = Lab()
    yield made
    made.close()


def body(peer: Peer) -> bytes:
    return b"".join(e.data for e in peer.events if isinstance(e, Data))


def test_an_idle_h2c_connection_moves_with_its_state(lab: Lab) -> None:
    conn = lab.connect()
    for _ in range(3):
        assert body(lab.exchange(conn)).startswith(b"body-")
    lab.park(conn)
    # published like an HTTP/1 one, with the descriptor of its state beside the socket's
    assert conn.slot == 0 and conn.state_fd >= 0 and conn.transport is not None
    assert not conn.transport.is_reading()
    rec = lab.table.slots(0, 0).record(0)
    assert (rec.fd, rec.state_fd, rec.proto, rec.reqs) == (conn.fd, conn.state_fd, sl.PROTO_H2, 3)
    assert lab.gauges() == {"cur_conns": 1, "idle": 1, "safe": 1, "used": 0}

    thief = Thief(lab.table, 1)
    claim = thief.steal(0, [0], key_hash(lab.key), (ListKind.SAFE,))
    assert claim is not None and claim.sock is not None and claim.state is not None
    taken = H2ServerConn(lab.other, lab.key)
    assert taken.restore_from(claim.state)
    assert lab.other.move(taken, Acct.USED, slot=SlotMove(claim.slots, claim.index, claim.tag, True))
    taken.on_lost = lab.other.lost
    lab.loop.run_until_complete(wrap_socket(lab.loop, taken, claim.sock))
    assert lab.owner.settle() == 1  # the owner finalizes: its copy closed, without GOAWAY
    assert not conn.alive and conn.state_fd == -1 and lab.owner.published == {}
    assert lab.gauges() == {"cur_conns": 1, "idle": 0, "safe": 0, "used": 1}
    assert (taken.opened, taken.requests, taken.got_settings) == (3, 3, True)

    # the thief goes on: stream 7, its indexed fields decode at the server, the server's here
    origin = lab.origins[0]
    peer = lab.exchange(taken)
    (req,) = [e for e in origin.of(h2.events.RequestReceived) if e.stream_id == 7]
    assert dict(req.headers)[b"x-tenant"] == b"tenant-0123456789"
    assert dict(req.headers)[b"x-trace-context"] == CUSTOM[1][1]
    fields = dict(peer.head.headers)
    assert fields[b"x-served-by"] == b"origin-node-7" and fields[b"x-cache-key"] == b"k" * 40
    assert body(peer) == b"body-7"
    # a new field, then the same again (indexed by now): both decode
    for _ in range(2):
        peer = lab.exchange(taken, tenant=b"another-tenant")
        assert dict(peer.head.headers)[b"x-echo-tenant"] == b"another-tenant"
    assert not origin.of(h2.events.ConnectionTerminated) and not origin.eof
    assert len(origin.of(h2.events.RemoteSettingsChanged)) == 1  # one preface, one SETTINGS: one connection
    assert lab.table.cell(0, 0).takeovers_given == 1
    taken.close()
    thief.close()


def test_the_owner_reusing_its_connection_takes_the_slot_back(lab: Lab) -> None:
    conn = lab.connect()
    lab.exchange(conn)
    lab.park(conn)
    state_fd = conn.state_fd
    assert state_fd >= 0
    again = lab.owner.take_idle(lab.key, (ListKind.SAFE,))
    assert again is conn and conn.slot == -1 and conn.state_fd == -1
    with pytest.raises(OSError):
        os.fstat(state_fd)  # the state file is closed with its slot (unless the number was reused)
    peer = lab.exchange(conn)  # reading resumed when the stream opened
    assert body(peer) == b"body-3" and conn.transport is not None and conn.transport.is_reading()


def test_a_connection_used_again_at_once_is_never_serialized(lab: Lab) -> None:
    """Parked, then taken by this worker's next request before ``LEND_AFTER``: never published,
    never paused, no state written (the cost of lending is paid only by connections that wait)."""
    conn = lab.connect()
    lab.exchange(conn)
    lab.park(conn, lent=False)
    assert conn.lend_timer is not None
    assert lab.owner.take_idle(lab.key, (ListKind.SAFE,)) is conn
    peer = lab.exchange(conn)
    assert conn.lend_timer is None and conn.slot == -1 and conn.state_fd == -1 and body(peer) == b"body-3"
    assert conn.transport is not None and conn.transport.is_reading()
    lab.park(conn)  # idle this time: lent after the delay
    assert conn.slot == 0 and conn.state_fd >= 0


def test_a_tls_connection_is_never_lent(lab: Lab) -> None:
    """TLS state cannot leave the process (Python's ``ssl``): ``shareable`` stays False, the
    connection is pooled unpublished and keeps reading (to see GOAWAY or a close at once)."""
    conn = lab.connect(shareable=False)
    lab.exchange(conn)
    lab.park(conn, lent=False)
    lab.until(lambda: True, "a loop turn")
    assert conn.slot == -1 and conn.state_fd == -1 and lab.table.slots(0, 0).offers() == []
    assert conn.transport is not None and conn.transport.is_reading()
    assert conn in lab.owner.pool


def test_nothing_in_flight_travels(lab: Lab) -> None:
    """A partial frame received, or bytes not written yet: not published, keeps reading."""
    conn = lab.connect()
    lab.exchange(conn)
    conn.inbuf = b"\x00\x00"  # the start of a frame
    lab.park(conn, lent=False)
    assert conn.slot == -1 and conn.state_fd == -1 and conn.transport is not None
    assert conn.transport.is_reading()
    assert lab.owner.take_idle(lab.key, (ListKind.SAFE,)) is conn
    conn.inbuf = b""
    conn.h2.ping(b"12345678")  # queued in h2, not flushed
    lab.park(conn, lent=False)
    assert conn.slot == -1 and conn.state_fd == -1


def test_bytes_from_the_server_while_parked_refuse_the_takeover(lab: Lab) -> None:
    """A frame that arrived while the connection was parked (reading paused) is not read by
    anybody: the thief's peek sees it and the connection is discarded, never continued blind."""
    conn = lab.connect()
    lab.exchange(conn)
    lab.park(conn)
    origin = lab.origins[0]
    origin.h2.ping(b"abcdefgh")
    origin.sock.sendall(origin.h2.data_to_send())
    lab.until(lambda: pidfd.peek(conn.fd) is pidfd.Peek.DATA, "the PING in the socket")
    thief = Thief(lab.table, 1)
    assert thief.steal(0, [0], key_hash(lab.key), (ListKind.SAFE,)) is None and thief.discarded == 1
    assert lab.owner.settle() == 1 and not conn.alive
    assert lab.gauges() == {"cur_conns": 0, "idle": 0, "safe": 0, "used": 0}
    thief.close()


def test_the_channel_gives_an_http2_connection_with_its_state(lab: Lab) -> None:
    """Where workers steal over the SCM_RIGHTS channel (``pidfd_getfd`` refused), the victim's
    ``give_idle`` detaches the socket and writes the state (one GIVE, two descriptors); the thief
    continues the connection from it, as from a published slot."""
    conn = lab.connect()
    lab.exchange(conn)
    lab.exchange(conn)
    lab.park(conn)
    link = WorkerLink(0, 2, lab.loop)
    link.register(lab.key)
    donor = Donor(link, {0: lab.owner}, "llhttp", Limits(), lambda *a: None)
    got = donor.give_idle(0, key_id(lab.key), ORDERS.index((ListKind.SAFE,)))
    assert got is not None
    fd, reqs, kind, state_fd = got
    assert reqs == 2 and kind == 1 and state_fd >= 0
    assert not conn.alive and conn not in lab.owner.pool and lab.owner.published == {}
    donor.handed_over(0, 1, sent=True)  # what the channel does once the datagram left
    assert lab.gauges() == {"cur_conns": 1, "idle": 0, "safe": 0, "used": 0}
    handed = Handed(fd, 0, reqs, kind, state_fd)
    taken = lab.loop.run_until_complete(adopt(lab.loop, H2ServerConn(lab.other, lab.key), handed))
    assert taken is not None and taken.acct is Acct.COUNTED and taken.requests == 2
    assert lab.other.move(taken, Acct.USED)
    peer = lab.exchange(taken, tenant=b"via-the-channel")
    assert dict(peer.head.headers)[b"x-echo-tenant"] == b"via-the-channel" and body(peer) == b"body-5"
    origin = lab.origins[0]
    assert not origin.of(h2.events.ConnectionTerminated) and not origin.eof
    assert lab.gauges() == {"cur_conns": 1, "idle": 0, "safe": 0, "used": 1}
    taken.close()


def test_the_channel_keeps_an_http2_connection_with_something_in_flight(lab: Lab) -> None:
    conn = lab.connect()
    lab.exchange(conn)
    lab.park(conn)
    conn.h2.ping(b"12345678")  # a frame not written yet: its state cannot travel
    link = WorkerLink(0, 2, lab.loop)
    link.register(lab.key)
    donor = Donor(link, {0: lab.owner}, "llhttp", Limits(), lambda *a: None)
    assert donor.give_idle(0, key_id(lab.key), ORDERS.index((ListKind.SAFE,))) is None
    assert conn in lab.owner.pool and conn.alive and conn.slot >= 0
