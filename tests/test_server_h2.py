"""The HTTP/2 server connection (``proxy.server_h2``) and its message translation
(``proxy.server_h2_msg``), driven through a fake transport with the ``h2`` library as the server.

``H2Server`` pumps bytes between the connection under test and a real ``h2`` server-side state
machine: what the proxy writes is fed to the server, what the server answers to the proxy. The
backend-level tests (available list, accounting, maxconn slots, max-reuse, GOAWAY in the pool) use
the real ``Backend`` over ``fakes.World``'s real shared-memory table, with ``_connect`` handing out
``H2ServerConn`` objects on such fake transports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from fakes import FakeTransport, World, worlds
from hyperframe.frame import GoAwayFrame

from proxy.backend import Acquisition, Backend
from proxy.config.model import ReuseMode
from proxy.h1 import ProtocolError
from proxy.message import Data, EndOfMessage, Event, Framing, RequestHead, ResponseHead
from proxy.pool import ListKind
from proxy.server import Acct
from proxy.server_h2 import H2ServerConn, H2Stream
from proxy.server_h2_msg import MessageError, request_fields, response_head
from proxy.session import Session
from proxy.shm import R_CONNECTS


# -- translation ------------------------------------------------------------------------------------
def test_request_fields_translate_an_http1_head() -> None:
    head = RequestHead(
        b"POST", b"/up?x=1", b"1.1",
        [(b"Host", b"example.com"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"),
         (b"Keep-Alive", b"timeout=5"), (b"TE", b"trailers, deflate"), (b"Transfer-Encoding", b"chunked"),
         (b"Upgrade", b"websocket"), (b"Expect", b"100-continue"), (b"X-Kept", b"yes")],
        body=Framing.CHUNKED,
    )  # fmt: skip
    fields = request_fields(head, scheme=b"http", add=[(b"X-Forwarded-For", b"10.0.0.1")])
    assert fields == [
        (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"example.com"), (b":path", b"/up?x=1"),
        (b"te", b"trailers"), (b"expect", b"100-continue"), (b"x-kept", b"yes"),
        (b"x-forwarded-for", b"10.0.0.1"),
    ]  # fmt: skip


def test_request_fields_absolute_form_length_and_no_host() -> None:
    head = RequestHead(
        b"PUT", b"http://user@origin.test:8080/a", b"1.1", [(b"Host", b"other"), (b"TE", b"gzip")],
        body=Framing.LENGTH, content_length=5,
    )  # fmt: skip
    fields = request_fields(head, scheme=b"https", add=[])
    assert fields[:4] == [
        (b":method", b"PUT"), (b":scheme", b"https"), (b":authority", b"origin.test:8080"), (b":path", b"/a"),
    ]  # fmt: skip
    assert (b"content-length", b"5") in fields and not any(n == b"te" for n, _ in fields)
    bare = request_fields(RequestHead(b"OPTIONS", b"*", b"1.0", []), scheme=b"http", add=[])
    assert bare == [(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":path", b"*")]


def test_response_head_framing() -> None:
    plain = response_head(
        [(b":status", b"200"), (b"content-length", b"12"), (b"x", b"1")], method=b"GET", ended=False
    )
    assert (plain.status, plain.body, plain.content_length, plain.headers) == (
        200,
        Framing.LENGTH,
        12,
        [(b"x", b"1")],
    )
    unknown = response_head([(b":status", b"200")], method=b"GET", ended=False)
    assert unknown.body is Framing.CHUNKED  # ends with the stream: chunks for an HTTP/1.1 client
    assert response_head([(b":status", b"200")], method=b"GET", ended=True).body is Framing.NONE
    for status in (b"204", b"304", b"103"):
        assert response_head([(b":status", status)], method=b"GET", ended=False).body is Framing.NONE
    head = response_head([(b":status", b"200"), (b"content-length", b"7")], method=b"HEAD", ended=True)
    assert (head.body, head.content_length) == (Framing.LENGTH, 7)  # the length; the client mux sends no body
    for bad in ([(b"x", b"1")], [(b":status", b"2000")], [(b":status", b"200"), (b"content-length", b"x")]):
        with pytest.raises(MessageError):
            response_head(bad, method=b"GET", ended=False)


# -- one connection against the h2 library as the server ----------------------------------------------
class Peer:
    """A ``ServerPeer`` recording what its stream is told."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed = 0
        self.errors: list[ProtocolError] = []
        self.writable: list[bool] = []

    def on_server_events(self, events: list[Event]) -> None:
        self.events.extend(events)

    def on_server_error(self, exc: ProtocolError) -> None:
        self.errors.append(exc)

    def on_server_closed(self) -> None:
        self.closed += 1

    def on_tunnel_data(self, data: bytes) -> None:
        raise AssertionError("no tunnel over HTTP/2")

    def on_tunnel_eof(self) -> None:
        raise AssertionError("no tunnel over HTTP/2")

    def on_server_writable(self, writable: bool) -> None:
        self.writable.append(writable)

    @property
    def body(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, Data))


class H2Server:
    """The ``h2`` library as the server of ``conn``, over a ``FakeTransport``."""

    def __init__(self, conn: H2ServerConn, **settings: int) -> None:
        self.conn = conn
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        codes = {"max_concurrent_streams": h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS}
        self.h2.local_settings = h2.settings.Settings(
            client=False, initial_values={codes[k]: v for k, v in settings.items()}
        )
        self.h2.initiate_connection()
        self.transport = FakeTransport()
        self.events: list[h2.events.Event] = []
        conn.connection_made(self.transport)  # type: ignore[arg-type]
        self.pump()

    def pump(self) -> None:
        for _ in range(100):
            out = self.transport.take()
            if out:
                self.events.extend(self.h2.receive_data(out))
            back = self.h2.data_to_send()
            if back:
                self.conn.data_received(back)
            if not out and not back:
                return
        raise AssertionError("the two sides never went quiet")

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def body(self, sid: int) -> bytes:
        return b"".join(e.data for e in self.of(h2.events.DataReceived) if e.stream_id == sid)

    def ack_all(self) -> None:
        for e in self.of(h2.events.DataReceived):
            if e.flow_controlled_length:
                self.h2.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                e.flow_controlled_length = 0
        self.pump()


@pytest.fixture
def make_world() -> Iterator[Callable[..., World]]:
    yield from worlds()


def h2conn(w: World, **kw: Any) -> H2ServerConn:
    return H2ServerConn(w.srv, w.key(), **kw)


def get(path: bytes = b"/", method: bytes = b"GET", **kw: Any) -> RequestHead:
    return RequestHead(method, path, b"1.1", [(b"Host", b"origin")], **kw)


def start(conn: H2ServerConn, head: RequestHead, peer: Peer | None = None) -> tuple[H2Stream, Peer]:
    peer = peer if peer is not None else Peer()
    st = conn.open_stream()
    st.attach(peer, head.method)
    st.send_head(head, keep_alive=True, add=[])
    return st, peer


def test_a_request_and_its_response(make_world: Callable[..., World]) -> None:
    w = make_world()
    conn = h2conn(w)
    server = H2Server(conn)
    st, peer = start(conn, get(b"/x"))
    server.pump()
    (req,) = server.of(h2.events.RequestReceived)
    assert dict(req.headers)[b":authority"] == b"origin" and req.stream_ended is not None
    server.h2.send_headers(1, [(b":status", b"200"), (b"content-length", b"5")])
    server.h2.send_data(1, b"hello", end_stream=True)
    server.pump()
    head = peer.events[0]
    assert isinstance(head, ResponseHead) and head.status == 200 and head.content_length == 5
    assert peer.body == b"hello" and isinstance(peer.events[-1], EndOfMessage)
    assert st.reusable and st.got_response_bytes
    st.detach()
    assert (conn.active, conn.requests, conn.streams) == (0, 1, {})


def test_interim_response_and_trailers(make_world: Callable[..., World]) -> None:
    w = make_world()
    conn = h2conn(w)
    server = H2Server(conn)
    st, peer = start(conn, get(b"/up", b"POST", body=Framing.CHUNKED))
    st.send_data(b"abc")
    st.send_end([(b"X-Sum", b"1")])
    server.pump()
    assert server.body(1) == b"abc"
    (trailers,) = server.of(h2.events.TrailersReceived)
    assert list(trailers.headers) == [(b"x-sum", b"1")]
    server.h2.send_headers(1, [(b":status", b"100")])
    server.h2.send_headers(1, [(b":status", b"200")])
    server.h2.send_data(1, b"ok")
    server.h2.send_headers(1, [(b"x-t", b"2")], end_stream=True)
    server.pump()
    kinds = [(type(e).__name__, getattr(e, "status", None)) for e in peer.events]
    assert kinds[:3] == [("ResponseHead", 100), ("EndOfMessage", None), ("ResponseHead", 200)]
    assert peer.events[-1] == EndOfMessage([(b"x-t", b"2")]) and peer.body == b"ok"
    assert st.reusable


def test_request_body_waits_for_the_servers_window(make_world: Callable[..., World]) -> None:
    """Flow control, request side: what the window does not allow waits, the client is paused
    (``on_server_writable(False)``) until the server's WINDOW_UPDATE lets the rest out."""
    w = make_world()
    conn = h2conn(w)
    server = H2Server(conn)
    st, peer = start(conn, get(b"/up", b"POST", body=Framing.LENGTH, content_length=100_000))
    st.send_data(b"x" * 100_000)
    st.send_end([])
    server.pump()
    assert len(server.body(1)) == 65535 and st.write_paused and peer.writable == [False]
    server.ack_all()  # the server consumed it: WINDOW_UPDATE
    assert len(server.body(1)) == 100_000 and not st.write_paused and peer.writable == [False, True]
    assert server.of(h2.events.StreamEnded)


def test_response_data_is_acknowledged_only_when_the_client_takes_it(
    make_world: Callable[..., World],
) -> None:
    """Flow control, response side: while the stream's client is slow (``pause_reading``), received
    DATA stays unacknowledged, so the server's window closes; resuming acknowledges it."""
    w = make_world()
    conn = h2conn(w, window=1000)
    server = H2Server(conn)
    st, peer = start(conn, get())
    server.pump()
    server.h2.send_headers(1, [(b":status", b"200")])
    st.pause_reading()
    server.h2.send_data(1, b"y" * 1000)
    server.pump()
    assert peer.body == b"y" * 1000  # delivered at once (one window at most)
    assert server.h2.local_flow_control_window(1) == 0  # but not acknowledged: the server must stop
    st.resume_reading()
    server.pump()
    assert server.h2.local_flow_control_window(1) == 1000


def test_goaway_refuses_the_streams_above_last_stream_id(make_world: Callable[..., World]) -> None:
    w = make_world()
    conn = h2conn(w)
    server = H2Server(conn)
    first, p1 = start(conn, get())
    second, p2 = start(conn, get())
    server.pump()
    goaway = GoAwayFrame(0)  # raw: the h2 library sends nothing more after its own GOAWAY
    goaway.last_stream_id = 1
    conn.data_received(goaway.serialize())
    assert p2.closed == 1 and second.refused and not p2.errors  # unprocessed: replayable elsewhere
    assert p1.closed == 0 and not first.refused
    assert conn.retiring and conn.free_streams == 0 and conn.alive
    third, p3 = start(conn, get())  # picked before the GOAWAY was seen: refused, not sent
    assert third.refused and p3.closed == 1
    server.h2.send_headers(1, [(b":status", b"204")], end_stream=True)
    server.pump()
    assert first.reusable and isinstance(p1.events[-1], EndOfMessage)


def test_refused_stream_and_reset(make_world: Callable[..., World]) -> None:
    w = make_world()
    conn = h2conn(w)
    server = H2Server(conn)
    st, peer = start(conn, get())
    st2, peer2 = start(conn, get())
    server.pump()
    server.h2.reset_stream(1, h2.errors.ErrorCodes.REFUSED_STREAM)
    server.h2.send_headers(3, [(b":status", b"200")])
    server.h2.reset_stream(3, h2.errors.ErrorCodes.INTERNAL_ERROR)
    server.pump()
    assert st.refused and peer.closed == 1
    assert not st2.refused and peer2.closed == 1  # answered, then reset: a cut, not a replay
    assert conn.alive and not st.reusable


def test_a_dead_connection_fails_its_streams(make_world: Callable[..., World]) -> None:
    w = make_world()
    conn = h2conn(w)
    server = H2Server(conn)
    lost: list[H2ServerConn] = []
    conn.on_lost = lost.append
    st, peer = start(conn, get())
    st2, peer2 = start(conn, get())
    server.pump()
    server.h2.send_headers(1, [(b":status", b"200")])
    server.pump()
    conn.connection_lost(None)
    assert peer.closed == 1 and peer2.closed == 1 and lost == [conn]
    assert not st.refused and not st2.refused and not conn.alive
    conn.close()  # the hook ran once only
    assert lost == [conn]


def test_protocol_error_fails_streams_with_502(make_world: Callable[..., World]) -> None:
    w = make_world()
    conn = h2conn(w)
    H2Server(conn)
    _st, peer = start(conn, get())
    conn.data_received(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")  # DATA on stream 0
    assert peer.errors and peer.errors[0].status == 502 and not conn.alive


def test_capacity_follows_settings_tune_and_max_reuse(make_world: Callable[..., World]) -> None:
    w = make_world()
    conn = h2conn(w)
    assert conn.capacity == 100  # until the server's SETTINGS
    H2Server(conn, max_concurrent_streams=3)
    assert conn.capacity == 3 and conn.free_streams == 3
    capped = h2conn(w, max_streams=2)
    H2Server(capped, max_concurrent_streams=3)
    assert capped.capacity == 2
    once = h2conn(w, max_reuse=1)  # used once and reused once: two streams in its life
    H2Server(once)
    a, _ = start(once, get())
    assert once.free_streams == 1 and not once.retiring
    start(once, get())
    assert once.free_streams == 0 and once.retiring
    a.detach()
    assert once.free_streams == 0


# -- the backend: available list, accounting, slots ---------------------------------------------------
class H2Backend(Backend):
    """The real ``Backend``; ``_connect`` counts like the real one and hands out ``H2ServerConn``
    objects, each with its ``H2Server``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.servers_h2: list[H2Server] = []

    async def _connect(self, acq: Acquisition) -> H2ServerConn:  # type: ignore[override]
        srv = acq.server
        conn = H2ServerConn(srv, acq.key, max_reuse=srv.cfg.max_reuse)
        assert srv.move(conn, Acct.COUNTED, 0)
        srv.move(conn, Acct.PRIVATE if self.mode is ReuseMode.NEVER else Acct.USED)
        srv.row.add(R_CONNECTS)
        conn.on_lost = srv.lost
        self.servers_h2.append(H2Server(conn))
        return conn


def h2_world(make_world: Callable[..., World], **kw: Any) -> tuple[World, H2Backend]:
    w = make_world(**kw)
    be = H2Backend(w.be_cfg, w.servers, w.engine_name, w.backend.limits, w.link)
    w.backend = be
    return w, be


def take(w: World, be: H2Backend, session: Session) -> tuple[Acquisition, H2Stream]:
    acq = be.acquisition(w.srv, session)

    async def go() -> H2Stream:
        link = be.acquire_now(acq)
        if link is None:
            link = await be.acquire(acq)
        assert isinstance(link, H2Stream)
        return link

    return acq, w.run(go())


def answer(be: H2Backend, st: H2Stream, peer: Peer) -> None:
    """``st`` sends its head, the server answers 200 and ends it."""
    st.attach(peer, b"GET")
    st.send_head(get(), keep_alive=True, add=[])
    server = next(s for s in be.servers_h2 if s.conn is st.conn)
    server.pump()
    assert st.stream_id is not None
    server.h2.send_headers(st.stream_id, [(b":status", b"200")], end_stream=True)
    server.pump()


def test_aggressive_shares_a_new_connection_once_a_stream_ended(make_world: Callable[..., World]) -> None:
    """HAProxy: only ``always`` offers a connection from its first stream on; in ``aggressive`` it
    is offered once a stream ended on it (or when it comes back from the pool)."""
    w, be = h2_world(make_world, reuse=ReuseMode.AGGRESSIVE)
    a_acq, a = take(w, be, Session("10.0.0.1", 1))
    _, b = take(w, be, Session("10.0.0.2", 2))
    assert a.conn is not b.conn  # new connections: not offered yet
    answer(be, a, Peer())
    w.sync(lambda: be.finish(a_acq, a, True))  # no stream left: into the safe list
    _, c = take(w, be, Session("10.0.0.3", 3))
    _, d = take(w, be, Session("10.0.0.4", 4))  # a first request, served by the pooled one's streams
    assert c.conn is a.conn and d.conn is a.conn and len(be.servers_h2) == 2
    answer(be, b, Peer())
    _, e = take(w, be, Session("10.0.0.5", 5))
    assert e.conn is a.conn  # b's connection is still unoffered (its stream has not ended)


def test_always_shares_a_connection_from_its_first_stream(make_world: Callable[..., World]) -> None:
    mode = ReuseMode.ALWAYS
    w, be = h2_world(make_world, reuse=mode, maxconn=10)
    a_acq, a = take(w, be, Session("10.0.0.1", 1))
    b_acq, b = take(w, be, Session("10.0.0.2", 2))  # a first request too: HTTP/2 counts as safe
    assert a.conn is b.conn and len(be.servers_h2) == 1
    g = w.gauges()
    assert (g["served"], g["used"], g["conns"]) == (2, 1, 1)  # one slot per stream, one connection
    pa, pb = Peer(), Peer()
    answer(be, a, pa)
    answer(be, b, pb)
    w.sync(lambda: be.finish(a_acq, a, True))
    assert w.gauges()["used"] == 1 and a.conn.active == 1  # still carrying b's stream
    w.sync(lambda: be.finish(b_acq, b, True))
    g = w.gauges()
    assert (g["served"], g["used"], g["idle"], g["safe"], g["conns"]) == (0, 0, 1, 1, 1)
    assert a.conn.acct is Acct.SAFE and w.srv.pool.kind_of(a.conn) is ListKind.SAFE


def test_safe_mode_keeps_a_busy_connection_with_its_session(make_world: Callable[..., World]) -> None:
    w, be = h2_world(make_world, reuse=ReuseMode.SAFE)
    alice = Session("10.0.0.1", 1)
    a_acq, a = take(w, be, alice)
    _, b = take(w, be, Session("10.0.0.2", 2))
    assert a.conn is not b.conn  # another client's first request does not share it
    alice.requests_done = 1
    _, a2 = take(w, be, alice)
    assert a2.conn is a.conn  # the same client's next stream does
    answer(be, a, Peer())
    w.sync(lambda: be.finish(a_acq, a, True))
    assert a.conn.acct is Acct.USED and a.conn.session is alice


def test_max_reuse_retires_the_connection_after_its_last_stream(make_world: Callable[..., World]) -> None:
    w, be = h2_world(make_world, reuse=ReuseMode.ALWAYS)
    w.srv.cfg.max_reuse = 1
    acq1, s1 = take(w, be, Session("10.0.0.1", 1))
    acq2, s2 = take(w, be, Session("10.0.0.2", 2))
    _, s3 = take(w, be, Session("10.0.0.3", 3))
    assert s1.conn is s2.conn and s3.conn is not s1.conn
    for acq, st in ((acq1, s1), (acq2, s2)):
        answer(be, st, Peer())
        w.sync(lambda acq=acq, st=st: be.finish(acq, st, True))
    assert not s1.conn.alive and s1.conn.acct is Acct.NONE
    assert w.gauges()["conns"] == 1  # s3's connection only


def test_goaway_on_a_pooled_connection_closes_it(make_world: Callable[..., World]) -> None:
    w, be = h2_world(make_world, reuse=ReuseMode.ALWAYS)
    acq, st = take(w, be, Session("10.0.0.1", 1))
    answer(be, st, Peer())
    w.sync(lambda: be.finish(acq, st, True))
    assert st.conn in w.srv.pool
    server = be.servers_h2[0]
    server.h2.close_connection()
    server.pump()
    assert st.conn not in w.srv.pool and not st.conn.alive
    g = w.gauges()
    assert (g["conns"], g["idle"], g["safe"]) == (0, 0, 0)


def test_an_unshareable_http2_connection_is_never_published_nor_given(
    make_world: Callable[..., World],
) -> None:
    """A connection not marked ``shareable`` (TLS: its state cannot leave this process) stays with
    its worker; plain h2c is lent with its state (``tests/test_h2_share.py``)."""
    w, be = h2_world(make_world, reuse=ReuseMode.ALWAYS)
    acq, st = take(w, be, Session("10.0.0.1", 1))
    answer(be, st, Peer())
    w.sync(lambda: be.finish(acq, st, True))
    assert st.conn.slot == -1 and not st.conn.shareable
    from proxy.donor import ORDERS, Donor, key_id

    w.link.register(acq.key)
    donor = Donor(w.link, {w.srv.index: w.srv}, w.engine_name, w.backend.limits, lambda *a: None)
    assert donor.give_idle(w.srv.index, key_id(acq.key), ORDERS.index((ListKind.SAFE,))) is None
    assert st.conn in w.srv.pool


def test_reset_stream_leaves_the_connection_to_others(make_world: Callable[..., World]) -> None:
    w, be = h2_world(make_world, reuse=ReuseMode.ALWAYS)
    acq, st = take(w, be, Session("10.0.0.1", 1))
    st.attach(Peer(), b"GET")
    st.send_head(get(), keep_alive=True, add=[])
    server = be.servers_h2[0]
    server.pump()
    w.sync(lambda: be.finish(acq, st, False))  # the client left: the stream is cancelled
    server.pump()
    (reset,) = server.of(h2.events.StreamReset)
    assert reset.error_code == h2.errors.ErrorCodes.CANCEL
    assert st.conn.alive and st.conn in w.srv.pool and w.gauges()["served"] == 0


def test_no_leftover_tasks(make_world: Callable[..., World]) -> None:
    w, be = h2_world(make_world, reuse=ReuseMode.AGGRESSIVE)
    take(w, be, Session("10.0.0.1", 1))
    assert not [t for t in asyncio.all_tasks(w.loop) if not t.done()]


def test_ready_waits_for_the_servers_settings(make_world: Callable[..., World]) -> None:
    w = make_world()
    conn = h2conn(w)
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    server.initiate_connection()
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]

    async def go() -> bool:
        waiting = asyncio.ensure_future(conn.ready(5.0))
        await asyncio.sleep(0)
        before = waiting.done()
        conn.data_received(server.data_to_send())  # the server's SETTINGS
        await waiting
        return before

    assert w.run(go()) is False and conn.got_settings
    other = h2conn(w)
    other.connection_made(FakeTransport())  # type: ignore[arg-type]

    async def closed() -> None:
        waiting = asyncio.ensure_future(other.ready(5.0))
        await asyncio.sleep(0)
        other.connection_lost(None)  # a connection that dies wakes its waiter too
        await waiting

    w.run(closed())
    with pytest.raises(TimeoutError):
        third = h2conn(w)
        third.connection_made(FakeTransport())  # type: ignore[arg-type]
        w.run(third.ready(0.01))
