"""The stream (proxy.stream.Stream) driven through its phases with fakes: no socket, no process.

The client side is a ``RecordingSide``; the worker is a ``World`` (real shared table, real
``ServerRuntime``/``IdlePool``/``Queues``, real ``Frontend``, a ``Backend`` whose ``_connect`` hands out
real ``ServerConn`` objects on fake transports). A server "answers" by feeding bytes to its
``ServerConn`` (``data_received``), and "closes" through ``eof_received``/``connection_lost``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from fakes import ENGINES, FakeTransport, RecordingSide, World, pooled_conn, request, worlds

from proxy.config.model import HttpReturn, Timeouts
from proxy.mux_h1 import ClientConn
from proxy.pool import ListKind
from proxy.server import Acct
from proxy.server_conn import ServerConn
from proxy.shm import F_BYTES_OUT, F_HRSP, F_REQUESTS_TOTAL
from proxy.stream import _PHASES, REPLAY_MAX, IllegalPhase, Phase, Stream

ZERO = {"served": 0, "conns": 0, "used": 0, "idle": 0, "safe": 0, "queued": 0}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
OK_RELAYED = [("send_response_head", 200, True, True), ("send_data", b"hello"), ("send_end", [])]


@pytest.fixture
def make_world() -> Iterator[Callable[..., World]]:
    yield from worlds()


def reused(
    w: World, kind: ListKind = ListKind.IDLE, **head_kw: object
) -> tuple[Stream, RecordingSide, ServerConn]:
    """A stream for the second request of a client connection, with one pooled connection waiting."""
    conn = pooled_conn(w.srv, w.key(), kind, w.engine_name)
    stream, side = w.new_stream(request(**head_kw))  # type: ignore[arg-type]
    side.session.requests_done = 1
    return stream, side, conn


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# -- local answers and routing failures ----------------------------------------------------------
@pytest.mark.parametrize(
    ("head", "keep"),
    [
        pytest.param(request(), True, id="complete-request"),
        pytest.param(request(b"POST", body=5), False, id="body-still-to-come"),
    ],
)
def test_local_return_answers_without_a_server(make_world: Callable[..., World], head, keep) -> None:
    """``http-request return``: answered locally, no slot, no connection; kept alive only when the
    request was read to its end."""
    w = make_world(returns=[HttpReturn(status=403, content_type="text/plain", body=b"no")])
    stream, side = w.new_stream(head)
    w.sync(stream.start)
    assert side.calls == [("send_reply", 403, keep), ("stream_done", keep)]
    (reply,) = side.replies
    assert (reply.body, reply.headers) == (b"no", [(b"Content-Type", b"text/plain")])
    assert stream.phase is Phase.DONE and stream.bytes_out == 2
    assert w.env.logged == [(403, "PR")]
    assert w.gauges() == ZERO and w.srv.row.requests == 0


def test_no_usable_server_is_503_sc(make_world: Callable[..., World]) -> None:
    """Every server in maintenance: 503 ``SC`` at once, no task."""
    w = make_world()
    w.srv.maint = True
    stream, side = w.new_stream(request())
    w.sync(stream.start)
    assert side.calls == [("send_reply", 503, False), ("stream_done", False)]
    assert stream.task is None and w.env.logged == [(503, "SC")]


# -- the fast path: acquire_now ---------------------------------------------------------------------
def test_pooled_connection_attaches_synchronously(make_world: Callable[..., World]) -> None:
    """A free slot and an idle connection of this worker: attached inside ``start`` (no task), the
    request written to it at once, the connection counted as used and the slot as served."""
    w = make_world()
    stream, side, conn = reused(w, target=b"/x")
    w.sync(stream.start)
    assert stream.phase is Phase.EXCHANGE and stream.task is None
    assert stream.conn is conn and conn.peer is stream and stream.acq is not None and stream.acq.reused
    assert conn.transport.data.startswith(b"GET /x HTTP/1.1\r\nHost: example.test\r\n")
    assert side.calls == []
    assert w.gauges() == dict(ZERO, served=1, conns=1, used=1)
    assert (w.srv.row.requests, w.srv.row.reuses, w.fake.connects) == (1, 1, 0)


def test_response_is_relayed_and_the_connection_pooled(make_world: Callable[..., World]) -> None:
    """Head, data and end go to the client side in order; the connection goes back to the pool
    (SAFE: its second request) before the stream is done; the slot is released."""
    w = make_world()
    stream, side, conn = reused(w)
    w.sync(stream.start)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
    conn.data_received(b"lo")
    assert side.calls == [
        ("send_response_head", 200, True, True),
        ("send_data", b"hel"),
        ("send_data", b"lo"),
        ("send_end", []),
        ("stream_done", True),
    ]
    assert side.corked == 0  # every cork was uncorked
    assert w.fake.finished == [(conn, True)]
    assert w.srv.pool.kind_of(conn) is ListKind.SAFE and conn.requests == 2 and conn.peer is None
    assert w.gauges() == dict(ZERO, conns=1, idle=1, safe=1)
    assert w.env.logged == [(200, "--")] and stream.bytes_out == 5
    assert " be/s1 " in w.env.sink.lines[-1] and '"GET / HTTP/1.1"' in w.env.sink.lines[-1]
    # the frontend's counters (proxy.front_counter): one request, the bytes the side sent, a 2xx
    assert w.env.clients.counted == [(F_REQUESTS_TOTAL, 1), (F_BYTES_OUT, side.bytes_sent), (F_HRSP + 8, 1)]


@pytest.mark.parametrize(
    ("head", "answer", "reusable", "client_keep"),
    [
        pytest.param(request(), OK, True, True, id="both-keep-alive"),
        pytest.param(request(keep_alive=False), OK, True, False, id="client-closes-server-side-kept"),
        pytest.param(
            request(),
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
            False,
            True,
            id="server-closes",
        ),
        pytest.param(request(b"POST", body=10), OK, False, False, id="early-response"),
    ],
)
def test_connection_reused_only_when_both_messages_ended_in_keep_alive(
    make_world: Callable[..., World], head, answer: bytes, reusable: bool, client_keep: bool
) -> None:
    """``finish`` gets reusable=True only when the request was read to its end and the response
    ended in keep-alive; the client's own keep-alive is decided apart (server side independent)."""
    w = make_world()
    conn = pooled_conn(w.srv, w.key(), ListKind.IDLE)
    stream, side = w.new_stream(head)
    side.session.requests_done = 1
    w.sync(stream.start)
    conn.data_received(answer)
    assert w.fake.finished == [(conn, reusable)]
    assert side.calls[-1] == ("stream_done", client_keep)
    assert (conn in w.srv.pool) is reusable
    assert conn.transport.aborted is not reusable
    expected = dict(ZERO, conns=1, idle=1, safe=1) if reusable else ZERO
    assert w.gauges() == expected


def test_close_delimited_response_ends_at_eof_and_is_not_reused(make_world: Callable[..., World]) -> None:
    """A response delimited by the server's close ends at its EOF: relayed whole, never pooled."""
    w = make_world()
    stream, side, conn = reused(w)
    w.sync(stream.start)
    conn.data_received(b"HTTP/1.1 200 OK\r\n\r\nhello")
    assert conn.eof_received() is None
    assert side.calls == [*OK_RELAYED, ("stream_done", True)]
    assert w.fake.finished == [(conn, False)] and w.gauges() == ZERO


def test_server_close_mode_asks_the_server_to_close(make_world: Callable[..., World]) -> None:
    """``option http-server-close``: the request says ``Connection: close`` to the server and the
    connection is not reused, while the client connection stays alive."""
    w = make_world(fe_conn_mode="http-server-close")
    stream, side, conn = reused(w)
    w.sync(stream.start)
    assert b"Connection: close\r\n" in conn.transport.data
    conn.data_received(OK)
    assert w.fake.finished == [(conn, False)] and side.calls[-1] == ("stream_done", True)


def test_forwardfor_adds_the_client_address(make_world: Callable[..., World]) -> None:
    """``option forwardfor``: the client address goes to the server in ``x-forwarded-for``."""
    w = make_world(forwardfor=True)
    stream, _, conn = reused(w)
    w.sync(stream.start)
    assert b"x-forwarded-for: 127.0.0.1\r\n" in conn.transport.data


def test_interim_response_is_forwarded_and_does_not_end_the_stream(make_world: Callable[..., World]) -> None:
    """A 100 Continue goes to the client side as interim; its end is not the response's end."""
    w = make_world()
    stream, side, conn = reused(w)
    w.sync(stream.start)
    conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert side.calls == [("send_interim", 100), *OK_RELAYED, ("stream_done", True)]


def test_ntlm_challenge_makes_the_connection_private(make_world: Callable[..., World]) -> None:
    """A 401 with an NTLM challenge: the connection leaves the shared accounting and goes back to
    the client session, whose next request takes it before any pooled one."""
    w = make_world()
    stream, side, conn = reused(w)
    w.sync(stream.start)
    conn.data_received(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n")
    assert conn.acct is Acct.PRIVATE and side.session.conns == [conn] and conn not in w.srv.pool
    assert w.gauges() == dict(ZERO, conns=1)
    other = pooled_conn(w.srv, w.key(), ListKind.IDLE)
    stream2, _ = w.new_stream(request(), RecordingSide(side.session))
    w.sync(stream2.start)
    assert stream2.conn is conn and other in w.srv.pool


# -- the slow path: the acquire task ---------------------------------------------------------------
def test_first_request_connects_in_the_acquire_task(make_world: Callable[..., World]) -> None:
    """First request in ``safe`` mode: a slot at once, no pooled connection may serve it, so one
    task connects; the request follows on the new connection, which is pooled IDLE after."""
    w = make_world()
    stream, side = w.new_stream(request())

    async def main() -> None:
        stream.start()
        assert stream.phase is Phase.CONNECTING and stream.task is not None
        assert w.gauges() == dict(ZERO, served=1)
        await settle()

    w.run(main())
    (conn,) = w.fake.opened
    assert stream.phase is Phase.EXCHANGE and stream.task is None and stream.conn is conn
    assert stream.acq is not None and not stream.acq.reused
    assert conn.transport.data.startswith(b"GET / HTTP/1.1\r\n")
    conn.data_received(OK)
    assert side.calls == [*OK_RELAYED, ("stream_done", True)]
    assert w.srv.pool.kind_of(conn) is ListKind.IDLE
    assert w.gauges() == dict(ZERO, conns=1, idle=1) and w.srv.row.connects == 1


def test_client_leaving_while_queued_gives_the_place_back(make_world: Callable[..., World]) -> None:
    """The client leaves while its request waits in the queue: the task is cancelled, the queue
    place is given back, no slot is kept, one log line ``CH``."""
    w = make_world(maxconn=1)
    assert w.other[0].cell.try_take_slot(1)  # worker 1 holds the only slot
    stream, side = w.new_stream(request())

    async def main() -> None:
        stream.start()
        await settle()
        assert stream.phase is Phase.CONNECTING and w.gauges() == dict(ZERO, served=1, queued=1)
        stream.on_client_closed()
        await settle()

    w.run(main())
    assert side.names() == ["stream_done"]  # its keep-alive flag is moot: the client is gone
    assert w.env.logged == [(-1, "CH")] and w.fake.finished == [(None, False)]
    assert w.gauges() == dict(ZERO, served=1) and not w.srv.waiters  # only worker 1's slot
    w.other[0].cell.release_slot()
    assert w.gauges() == ZERO


@pytest.mark.parametrize("abort", [False, True], ids=["no-abortonclose", "abortonclose"])
def test_client_shutdown_while_queued_aborts_only_with_abortonclose(
    make_world: Callable[..., World], abort: bool
) -> None:
    """The client half-closes while its request is queued: with ``option abortonclose`` the request
    is abandoned (``CQ``, the place given back); without, it keeps waiting for its answer."""
    w = make_world(maxconn=1)
    w.be_cfg.abortonclose = abort
    assert w.other[0].cell.try_take_slot(1)
    stream, side = w.new_stream(request())

    async def main() -> None:
        stream.start()
        await settle()
        stream.on_client_shutdown()
        await settle()

    w.run(main())
    if abort:
        assert side.names() == ["stream_done"] and w.env.logged == [(-1, "CQ")]
        assert w.gauges() == dict(ZERO, served=1) and not w.srv.waiters
    else:
        assert stream.phase is Phase.CONNECTING and side.names() == [] and w.env.logged == []
        stream.on_client_closed()
    w.other[0].cell.release_slot()


def test_tunnel_timeout_is_the_backends(make_world: Callable[..., World]) -> None:
    w = make_world(timeouts=Timeouts(tunnel=7.0))
    stream, _ = w.new_stream(request())
    assert stream.tunnel_timeout is None  # no backend yet
    stream.backend = w.backend
    assert stream.tunnel_timeout == 7.0


@pytest.mark.parametrize("swallow", [False, True], ids=["cancelled", "cancel-swallowed"])
def test_client_leaving_while_connecting_gives_everything_back(
    make_world: Callable[..., World], swallow: bool
) -> None:
    """The client leaves while the task connects: the slot is released at once, and a connection
    the task still obtained (a cancel swallowed, as 3.11's ``wait_for`` may) is closed, uncounted."""
    w = make_world()
    w.fake.gate = w.loop.create_future()
    w.fake.swallow_cancel = swallow
    stream, side = w.new_stream(request())

    async def main() -> None:
        stream.start()
        await settle()
        assert w.fake.connects == 1 and w.gauges() == dict(ZERO, served=1)
        stream.on_client_closed()
        await settle()

    w.run(main())
    assert side.names() == ["stream_done"] and w.env.logged == [(-1, "CH")]
    if swallow:
        (conn,) = w.fake.opened
        assert w.fake.finished == [(None, False), (conn, False)] and conn.transport.aborted
    else:
        assert w.fake.opened == [] and w.fake.finished == [(None, False)]
    assert w.gauges() == ZERO


def test_queue_full_is_503_sq(make_world: Callable[..., World]) -> None:
    """The server is full and so is its queue (another worker's waiter): 503 ``SQ``."""
    w = make_world(maxconn=1, maxqueue=1)
    assert w.other[0].cell.try_take_slot(1) and w.other[0].cell.try_queue(1)
    stream, side = w.new_stream(request())

    async def main() -> None:
        stream.start()
        await settle()

    w.run(main())
    assert side.calls == [("send_reply", 503, False), ("stream_done", False)]
    assert w.env.logged == [(503, "SQ")] and w.fake.finished == [(None, False)]
    assert w.gauges() == dict(ZERO, served=1, queued=1)  # worker 1's, untouched


def test_connect_failures_after_retries_are_503_sc(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every connection attempt fails (1 + ``retries``): 503 ``SC``, the slot given back. Each retry
    waits the turn-around (``proxy.retry``, shortened here) before it connects again."""
    monkeypatch.setattr("proxy.retry.TURNAROUND_MAX", 0.001)
    w = make_world(retries=2)
    w.fake.fail = ConnectionRefusedError()
    stream, side = w.new_stream(request())

    async def main() -> None:
        stream.start()
        await settle()
        assert w.fake.connects == 1  # the first retry waits its turn-around
        for _ in range(100):
            if side.calls:
                break
            await asyncio.sleep(0.005)

    w.run(main())
    assert w.fake.connects == 3
    assert side.calls == [("send_reply", 503, False), ("stream_done", False)]
    assert w.env.logged == [(503, "SC")]
    assert w.gauges() == ZERO


def test_unexpected_error_while_connecting_is_answered(make_world: Callable[..., World]) -> None:
    """Regression (privilege drop): a connect raised LookupError (the IDNA codec could not be imported
    by a worker running as another user); the acquire task died and the client waited forever. Any
    error now answers 503 ``SC``, gives everything back, and the worker goes on."""
    w = make_world(retries=0)
    w.fake.fail = LookupError("unknown encoding: idna")
    stream, side = w.new_stream(request())

    async def main() -> None:
        stream.start()
        await settle()

    w.run(main())
    assert side.calls == [("send_reply", 503, False), ("stream_done", False)]
    assert w.env.logged == [(503, "SC")]
    assert w.gauges() == ZERO


# -- server failures -------------------------------------------------------------------------------
def test_invalid_response_before_the_head_is_502(make_world: Callable[..., World]) -> None:
    """An invalid response before any head reached the client: 502 ``PH``, connection closed and
    uncounted, slot released."""
    w = make_world()
    stream, side, conn = reused(w)
    w.sync(stream.start)
    conn.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    assert side.calls == [("send_reply", 502, False), ("stream_done", False)]
    assert w.env.logged == [(502, "PH")] and conn.transport.aborted
    assert w.fake.finished == [(None, False)] and w.gauges() == ZERO


def test_invalid_response_after_the_head_aborts_the_client(make_world: Callable[..., World]) -> None:
    """An invalid body after the head was relayed: the client connection is cut (``SD``)."""
    w = make_world()
    stream, side, conn = reused(w)
    w.sync(stream.start)
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    conn.data_received(b"zz\r\n")
    assert side.calls == [
        ("send_response_head", 200, True, True),
        ("send_data", b"abc"),
        ("abort",),  # cut first: ending the stream must not close the client gracefully instead
        ("stream_done", False),
    ]
    assert w.env.logged == [(200, "SD")] and w.gauges() == ZERO


def replay_after_close(w: World, method: bytes) -> tuple[Stream, RecordingSide, ServerConn, ServerConn]:
    """A reused connection that closes before any response byte, under a complete idempotent
    request (with a body for PUT); returns the stream, its side, the old and the new connection."""
    body = b"hello" if method == b"PUT" else None
    stream, side, old = reused(w, method=method, body=len(body) if body else None)

    async def main() -> None:
        stream.start()
        if body:
            stream.on_request_data(body)
            stream.on_request_end([])
        pooled_conn(w.srv, w.key(), ListKind.IDLE)  # the replay must not take this one
        old.connection_lost(None)
        assert stream.phase is Phase.CONNECTING
        await settle()

    w.run(main())
    (new,) = w.fake.opened
    return stream, side, old, new


@pytest.mark.parametrize("method", [b"GET", b"PUT"])
def test_reused_connection_closed_before_any_byte_replays(make_world: Callable[..., World], method) -> None:
    """A reused connection closes before any response byte: an idempotent, complete request is sent
    once more, on a new connection (the pool is not searched again), and answered there."""
    w = make_world()
    stream, side, old, new = replay_after_close(w, method)
    assert stream.conn is new and stream.retried and stream.acq is not None and not stream.acq.reused
    assert new.transport.data.startswith(method + b" / HTTP/1.1\r\nHost: example.test\r\n")
    assert new.transport.data.endswith(b"\r\n\r\nhello" if method == b"PUT" else b"\r\n\r\n")
    new.data_received(OK)
    assert side.calls == [*OK_RELAYED, ("stream_done", True)]
    assert w.env.logged == [(200, "--")] and "/1 0/0 " in w.env.sink.lines[-1]  # retries: 1
    # the old one uncounted; the other untouched, and the replay's new connection pooled beside it
    assert old.acct is Acct.NONE and len(w.srv.pool) == 2


def test_replayed_request_keeps_the_server_connection_alive(make_world: Callable[..., World]) -> None:
    """The replay is the same request: sent in keep-alive like the first try, and the new
    connection is pooled after a clean keep-alive response."""
    w = make_world()
    _, _, old, new = replay_after_close(w, b"GET")
    assert new.transport.data == old.transport.data
    new.data_received(OK)
    assert w.fake.finished[-1] == (new, True) and new in w.srv.pool


def test_request_bigger_than_replay_max_is_never_replayed(make_world: Callable[..., World]) -> None:
    """Only a small request (at most ``REPLAY_MAX`` bytes of body) is replayed, even when its body
    was held while it waited in the queue and it then got a reused connection."""
    w = make_world(maxconn=1)
    assert w.other[0].cell.try_take_slot(1)  # worker 1 holds the only slot: this request queues
    stream, side, conn = reused(w, method=b"PUT", body=2 * 10000)
    assert REPLAY_MAX < 2 * 10000

    async def main() -> None:
        stream.start()
        await settle()
        stream.on_request_data(b"x" * 10000)
        stream.on_request_data(b"y" * 10000)  # already read when the client was paused
        stream.on_request_end([])
        w.other[0].cell.release_slot()
        w.link.queues.offer(w.srv)  # the freed slot goes to our waiter, which takes the pooled conn
        await settle()
        assert stream.conn is conn and stream.acq is not None and stream.acq.reused
        conn.connection_lost(None)
        await settle()

    w.run(main())
    assert w.fake.connects == 0  # not replayed: closed silently instead
    assert side.calls[-2:] == [("abort",), ("stream_done", False)]


@pytest.mark.pure_only  # it spies on ServerConn.send_end by monkeypatching the class
def test_request_end_reaches_the_server_connection_once(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request's end is passed to its server connection exactly once."""
    ends: list[object] = []
    send_end = ServerConn.send_end

    def spy(self: ServerConn, trailers: list[tuple[bytes, bytes]]) -> None:
        ends.append(trailers)
        send_end(self, trailers)

    monkeypatch.setattr(ServerConn, "send_end", spy)
    w = make_world()
    stream, _, conn = reused(w)
    w.sync(stream.start)
    stream.on_request_end([])  # the mux delivers the GET's EndOfMessage after start()
    conn.data_received(OK)
    assert len(ends) == 1


@pytest.mark.parametrize(
    ("retries", "method", "complete"),
    [
        pytest.param(3, b"POST", True, id="not-idempotent"),
        pytest.param(0, b"GET", True, id="no-retries"),
        pytest.param(3, b"PUT", False, id="incomplete-request"),
    ],
)
def test_reused_connection_closed_before_any_byte_closes_the_client_silently(
    make_world: Callable[..., World], retries: int, method: bytes, complete: bool
) -> None:
    """A reused connection closes before any response byte and the request cannot be replayed: no
    error page, the client connection is closed so that the client may retry (``SH``)."""
    w = make_world(retries=retries)
    stream, side, conn = reused(w, method=method, body=None if method == b"GET" else 4)
    w.sync(stream.start)
    if method != b"GET":
        stream.on_request_data(b"data")
        if complete:
            stream.on_request_end([])
    assert conn.eof_received() is None  # no byte: the transport would close, then:
    conn.connection_lost(None)
    assert side.calls == [("abort",), ("stream_done", False)]
    assert w.env.logged == [(-1, "SH")] and w.fake.opened == [] and w.gauges() == ZERO


def test_new_connection_closed_before_any_byte_is_502(make_world: Callable[..., World]) -> None:
    """A new connection closes before any response byte: 502 ``SH`` (nothing to retry on)."""
    w = make_world()
    stream, side = w.new_stream(request())

    async def main() -> None:
        stream.start()
        await settle()
        w.fake.opened[0].connection_lost(None)

    w.run(main())
    assert side.calls == [("send_reply", 502, False), ("stream_done", False)]
    assert w.env.logged == [(502, "SH")] and w.fake.connects == 1 and w.gauges() == ZERO


def test_server_timeout_before_the_head_is_504(make_world: Callable[..., World]) -> None:
    """``timeout server`` expires before the response head: 504 ``sH``, connection closed."""
    w = make_world(timeouts=Timeouts(server=0.02))
    stream, side, conn = reused(w)

    async def main() -> None:
        stream.start()
        await asyncio.sleep(0.08)

    w.run(main())
    assert side.calls == [("send_reply", 504, False), ("stream_done", False)]
    assert w.env.logged == [(504, "sH")] and conn.transport.aborted and w.gauges() == ZERO


def test_server_timeout_after_the_head_aborts(make_world: Callable[..., World]) -> None:
    """``timeout server`` expires in the middle of the body: the client is cut (``sD``)."""
    w = make_world(timeouts=Timeouts(server=0.02))
    stream, side, conn = reused(w)

    async def main() -> None:
        stream.start()
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await asyncio.sleep(0.08)

    w.run(main())
    assert side.calls == [
        ("send_response_head", 200, True, True),
        ("send_data", b"abc"),
        ("abort",),  # cut first: ending the stream must not close the client gracefully instead
        ("stream_done", False),
    ]
    assert w.env.logged == [(200, "sD")] and w.gauges() == ZERO


def test_server_timeout_is_checked_lazily(make_world: Callable[..., World]) -> None:
    """The stream owns no timer: it tells its side the deadline once, and ``check_timeouts`` before
    it returns that deadline (recomputed from the last server activity) instead of failing."""
    w = make_world(timeouts=Timeouts(server=10.0))
    stream, side, _ = reused(w)

    async def main() -> None:
        stream.start()
        assert len(side.hints) == 1
        now = time.monotonic()
        assert stream.check_timeouts(now) == pytest.approx(stream.server_last_io + 10.0)
        assert side.calls == []
        stream.server_last_io -= 11.0  # now idle for longer than the timeout
        assert stream.check_timeouts(time.monotonic()) is None
        assert side.calls == [("send_reply", 504, False), ("stream_done", False)]
        assert stream.check_timeouts(time.monotonic()) is None  # ended: nothing to watch

    w.run(main())


# -- bounded request bodies and flow control ------------------------------------------------------
def test_body_held_without_a_connection_is_bounded(make_world: Callable[..., World]) -> None:
    """With no connection yet, body bytes beyond ``bufsize`` pause the client once; attaching a
    connection sends the held bytes in order and resumes the client; later bytes go straight on."""
    w = make_world(bufsize=10)
    w.fake.gate = w.loop.create_future()
    stream, side = w.new_stream(request(b"POST", body=30))

    async def main() -> None:
        stream.start()
        await settle()
        stream.on_request_data(b"a" * 6)
        assert side.calls == []
        stream.on_request_data(b"b" * 6)  # 12 bytes held: at least bufsize
        assert side.calls == [("pause_request",)]
        stream.on_request_data(b"c" * 6)  # already read when reading paused: held too, no 2nd pause
        assert side.calls == [("pause_request",)]
        assert w.fake.gate is not None
        w.fake.gate.set_result(None)
        await settle()

    w.run(main())
    (conn,) = w.fake.opened
    assert side.calls == [("pause_request",), ("resume_request",)]
    assert conn.transport.data.endswith(b"\r\n\r\n" + b"a" * 6 + b"b" * 6 + b"c" * 6)
    stream.on_request_data(b"d" * 12)
    assert conn.transport.data.endswith(b"c" * 6 + b"d" * 12)
    assert side.calls == [("pause_request",), ("resume_request",)]


def test_body_below_bufsize_never_pauses(make_world: Callable[..., World]) -> None:
    """Body bytes that stay below ``bufsize`` while connecting never pause the client."""
    w = make_world(bufsize=10)
    w.fake.gate = w.loop.create_future()
    stream, side = w.new_stream(request(b"POST", body=9))

    async def main() -> None:
        stream.start()
        stream.on_request_data(b"x" * 9)
        stream.on_request_end([])
        assert w.fake.gate is not None
        w.fake.gate.set_result(None)
        await settle()

    w.run(main())
    assert side.calls == [] and w.fake.opened[0].transport.data.endswith(b"\r\n\r\n" + b"x" * 9)


def test_stream_ending_while_paused_resumes_the_client(make_world: Callable[..., World]) -> None:
    """A stream that paused the client's body and then fails (503) resumes it on its way out."""
    w = make_world(bufsize=10, retries=0)  # no retry: no turn-around wait before the 503
    w.fake.fail = ConnectionRefusedError()
    stream, side = w.new_stream(request(b"POST", body=30))

    async def main() -> None:
        stream.start()
        stream.on_request_data(b"x" * 10)
        await settle()

    w.run(main())
    assert side.calls == [
        ("pause_request",),
        ("send_reply", 503, False),
        ("resume_request",),
        ("stream_done", False),
    ]


def test_server_not_writable_pauses_the_client(make_world: Callable[..., World]) -> None:
    """Attached: a server connection whose buffer is full pauses the client's body (once); writable
    again resumes it."""
    w = make_world()
    stream, side, conn = reused(w, method=b"POST", body=100)
    w.sync(stream.start)
    conn.pause_writing()  # what asyncio calls past the transport's high-water mark
    assert conn.write_paused and side.calls == [("pause_request",)]
    stream.on_server_writable(False)
    assert side.calls == [("pause_request",)]
    conn.resume_writing()
    assert side.calls == [("pause_request",), ("resume_request",)]


def test_client_not_writable_pauses_the_server(make_world: Callable[..., World]) -> None:
    """A client that does not take the response pauses reading from the server, at attach time as
    well as later; writable again resumes it."""
    w = make_world()
    stream, side, conn = reused(w)
    side.write_paused = True
    w.sync(stream.start)
    assert not conn.transport.reading
    side.write_paused = False
    stream.on_client_writable(True)
    assert conn.transport.reading
    stream.on_client_writable(False)
    assert not conn.transport.reading


# -- tunnels -----------------------------------------------------------------------------------------
def test_101_turns_the_stream_into_a_tunnel(make_world: Callable[..., World]) -> None:
    """A 101 to an upgrade request: bytes both ways raw (including what each side sent early); the
    tunnel ends when both sides half-closed; the slot is released, the connection never pooled."""
    w = make_world()
    stream, side, conn = reused(w, upgrade=b"websocket")
    side.early = b"client-early"
    w.sync(stream.start)
    conn.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nserver-early"
    )
    assert stream.phase is Phase.TUNNEL and stream.tunnel
    assert side.calls == [("start_tunnel", 101), ("tunnel_send", b"server-early")]
    assert conn.transport.data.endswith(b"\r\n\r\nclient-early")
    stream.tunnel_from_client(b"ping")
    conn.data_received(b"pong")
    assert conn.transport.data.endswith(b"client-earlyping") and side.calls[-1] == ("tunnel_send", b"pong")
    stream.tunnel_client_eof()
    assert conn.transport.eof_written and stream.phase is Phase.TUNNEL
    assert conn.eof_received() is True
    assert side.calls[-2:] == [("tunnel_send_eof",), ("stream_done", False)]
    assert stream.phase is Phase.DONE and conn.transport.closed and not conn.transport.aborted
    assert w.env.logged == [(101, "--")] and w.fake.finished == [(None, False)]
    assert w.gauges() == dict(ZERO, conns=1, used=1)  # until the transport reports it lost
    conn.connection_lost(None)
    assert w.gauges() == ZERO


def test_101_without_an_upgrade_request_is_502(make_world: Callable[..., World]) -> None:
    """A 101 the client never asked for is an invalid response: 502 ``PH``."""
    w = make_world()
    stream, side, conn = reused(w)
    w.sync(stream.start)
    conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n")
    assert side.calls == [("send_reply", 502, False), ("stream_done", False)]
    assert w.env.logged == [(502, "PH")] and w.gauges() == ZERO


# -- with the real HTTP/1 client mux --------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_real_mux_stops_reading_a_body_that_has_nowhere_to_go(
    make_world: Callable[..., World], engine
) -> None:
    """Through the real client mux: while connecting, the client's transport is paused once
    ``bufsize`` body bytes wait; on attach they are sent and reading resumes; the response is
    written back and the connection pooled."""
    w = make_world(bufsize=10, engine_name=engine)
    w.fake.gate = w.loop.create_future()
    client = FakeTransport()

    async def main() -> None:
        mux = ClientConn(w.env)
        mux.connection_made(client)  # type: ignore[arg-type]
        mux.data_received(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n" + b"a" * 6)
        assert client.reading
        mux.data_received(b"b" * 6)
        assert not client.reading and client.pauses == 1
        mux.data_received(b"c" * 6)  # already read: held, no second pause
        assert w.fake.gate is not None
        w.fake.gate.set_result(None)
        await settle()
        assert client.reading and client.resumes == 1
        (conn,) = w.fake.opened
        assert conn.transport.take() == (
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n" + b"a" * 6 + b"b" * 6 + b"c" * 6
        )
        mux.data_received(b"d" * 12)
        assert conn.transport.take() == b"d" * 12
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert client.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        assert not client.is_closing() and mux.session.requests_done == 1

    w.run(main())
    assert w.env.logged == [(200, "--")] and w.gauges() == dict(ZERO, conns=1, idle=1)


def test_log_line_counts_the_logged_request(make_world: Callable[..., World]) -> None:
    """The log's ``actconn/feconn/beconn/srv_conn/retries`` for a lone request read ``1/1/1/1/0``."""
    w = make_world()
    stream, side, conn = reused(w)
    w.env.clients.client_opened(side)
    w.sync(stream.start)
    conn.data_received(OK)
    assert " 1/1/1/1/0 " in w.env.sink.lines[-1]


# -- the phase machine -----------------------------------------------------------------------------
ILLEGAL = [(a, b) for a in Phase for b in Phase if b not in _PHASES[a]]
LEGAL = [(a, b) for a in Phase for b in _PHASES[a]]


@pytest.mark.parametrize(("frm", "to"), ILLEGAL, ids=[f"{a.name}-{b.name}" for a, b in ILLEGAL])
def test_illegal_phase_move_raises(make_world: Callable[..., World], frm: Phase, to: Phase) -> None:
    """A move ``_PHASES`` does not list raises ``IllegalPhase`` and leaves the phase as it was."""
    w = make_world()
    stream, _ = w.new_stream(request())
    stream.phase = frm
    with pytest.raises(IllegalPhase):
        stream._to(to)
    assert stream.phase is frm


@pytest.mark.parametrize(("frm", "to"), LEGAL, ids=[f"{a.name}-{b.name}" for a, b in LEGAL])
def test_legal_phase_move_is_taken(make_world: Callable[..., World], frm: Phase, to: Phase) -> None:
    """Every move ``_PHASES`` lists is taken."""
    w = make_world()
    stream, _ = w.new_stream(request())
    stream.phase = frm
    stream._to(to)
    assert stream.phase is to


def test_events_after_the_end_are_ignored(make_world: Callable[..., World]) -> None:
    """Once DONE, late events from either side change nothing and end nothing twice."""
    w = make_world()
    stream, side, conn = reused(w)
    w.sync(stream.start)
    stream.on_client_closed()
    calls = list(side.calls)
    stream.on_request_data(b"late")
    stream.on_request_end([])
    stream.on_request_error(400)
    stream.on_server_closed()
    stream.on_client_timeout()
    stream.on_client_closed()
    stream.finish()
    assert side.calls == calls and side.names() == ["stream_done"]
    assert w.env.logged == [(-1, "CH")] and w.fake.finished == [(conn, False)]


# --- heads relayed as received (RequestHead.wire) -------------------------------------------------
@pytest.mark.parametrize("server_keep", [True, False])
def test_a_bare_request_head_is_relayed_as_received(
    make_world: Callable[..., World], server_keep: bool
) -> None:
    """The server connection writes a request head's ``wire`` bytes (the client's order and case),
    adding ``Connection: close`` when it will not be reused; a rule's context drops ``wire`` first."""
    w = make_world(engine_name="native", be_conn_mode="keep-alive" if server_keep else "httpclose")
    wire = b"GET /x HTTP/1.1\r\nhost: example.test\r\nX-Order: kept\r\n\r\n"
    head = request(target=b"/x", headers=[(b"X-Order", b"kept")])
    head.wire = wire
    conn = pooled_conn(w.srv, w.key(), ListKind.IDLE, w.engine_name)
    stream, _ = w.new_stream(head)
    stream.side.session.requests_done = 1
    w.sync(stream.start)
    assert stream.conn is conn
    sent = conn.transport.take()  # type: ignore[union-attr]
    assert sent == (wire if server_keep else wire[:-2] + b"Connection: close\r\n\r\n")
    stream.rule_ctx()
    assert head.wire is None
