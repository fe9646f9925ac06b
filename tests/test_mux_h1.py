"""The HTTP/1 client mux (proxy.mux_h1.ClientConn) on a fake transport, with fake streams.

The environment's ``open_stream`` hands out ``FakeStream`` recorders; a test plays the stream by
calling the mux's ``ClientSide`` methods (``FakeStream.respond`` does head, data, end and
``stream_done``). Every test runs on both HTTP/1 engines.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from fakes import ENGINES, FakeClientEnv, FakeStream, FakeTransport, in_loop, response

from proxy.config.model import Cap, Proxy, Timeouts
from proxy.message import Framing, ResponseHead
from proxy.mux_h1 import FAIR_SHARE, ClientConn, Phase
from proxy.replies import local_reply


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(engine: str, **env_kw: object) -> tuple[ClientConn, FakeTransport, FakeClientEnv]:
    env = FakeClientEnv(engine, **env_kw)  # type: ignore[arg-type]
    conn = ClientConn(env)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, env


def get(target: bytes = b"/", version: bytes = b"1.1", extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/%s\r\nHost: x\r\n%s\r\n" % (target, version, extra)


def answer(body: bytes, *, close: bool = False) -> bytes:
    """What ``FakeStream.respond`` makes the mux write for an HTTP/1.1 client."""
    conn = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), conn, body)


# -- sequencing ------------------------------------------------------------------------------------
@in_loop
def test_pipelined_requests_run_one_at_a_time_in_order(engine: str) -> None:
    """Pipelined requests start one at a time, in order, each after the previous response; reading
    is paused while a parsed request waits, and resumed when none does."""
    conn, t, env = client(engine)
    assert conn.session.client_ip == "127.0.0.1" and env.opened == [conn]
    conn.data_received(get(b"/a") + get(b"/b") + get(b"/c"))
    assert [s.head.target for s in env.streams] == [b"/a"]
    assert env.streams[0].names() == ["start", "on_request_end"]
    assert not t.reading and t.pauses == 1
    env.streams[0].respond(b"A")
    assert [s.head.target for s in env.streams] == [b"/a", b"/b"]
    assert not t.reading  # /c still waits
    env.streams[1].respond(b"B")
    assert [s.head.target for s in env.streams] == [b"/a", b"/b", b"/c"]
    assert t.reading and (t.pauses, t.resumes) == (1, 1)
    env.streams[2].respond(b"C")
    assert t.data == answer(b"A") + answer(b"B") + answer(b"C")
    assert conn.session.requests_done == 3 and conn.phase is Phase.IDLE and not t.is_closing()


@in_loop
def test_stream_done_without_keep_alive_closes_after_flushing(engine: str) -> None:
    """``stream_done(keep_alive=False)``: what was written is flushed (close, not abort), the
    pipelined request is never started, and later bytes are ignored."""
    conn, t, env = client(engine)
    conn.data_received(get(b"/a") + get(b"/b"))
    env.streams[0].respond(b"A", keep_alive=False)
    assert t.data == answer(b"A", close=True) and t.closed and not t.aborted and not t.late_writes
    assert conn.closing and len(env.streams) == 1
    conn.data_received(get(b"/c"))
    assert len(env.streams) == 1


@in_loop
def test_response_before_the_request_end_waits_for_it(engine: str) -> None:
    """A stream may end before its request body was read (kept alive): the next request starts only
    once the rest of the body was passed on and its end consumed."""
    conn, _, env = client(engine)
    conn.data_received(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
    first = env.streams[0]
    conn.stream_done(first, True)  # kept alive although the body is still to come
    assert len(env.streams) == 1 and conn.stream is first
    conn.data_received(b"abc" + get(b"/b"))
    assert first.names() == ["start", "on_request_data", "on_request_end"]
    assert [s.head.target for s in env.streams] == [b"/a", b"/b"]


@in_loop
def test_soft_stop_closes_after_the_current_response(engine: str) -> None:
    """Soft stop: the response says ``Connection: close`` and the connection closes after it."""
    conn, t, env = client(engine)
    conn.data_received(get())
    env.stopping = True
    assert env.streams[0].respond(b"A") is False
    assert t.data == answer(b"A", close=True) and t.closed


# -- response framing ------------------------------------------------------------------------------
@in_loop
def test_close_delimited_response_is_chunked_for_http11(engine: str) -> None:
    """A body delimited by the server's close is re-framed as chunked for an HTTP/1.1 client, so
    the client connection stays alive."""
    conn, t, _ = client(engine)
    conn.data_received(get())
    keep = conn.send_response_head(response(framing=Framing.CLOSE), keep_alive=True, request_done=True)
    head = t.take()
    assert keep is True
    assert head == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    conn.send_data(b"hello")
    assert t.take() == b"5\r\nhello\r\n"
    conn.send_data(b"")
    assert t.take() == b""  # an empty chunk would end the body
    conn.send_end([(b"X-Trailer", b"1")])
    assert t.take() == b"0\r\nX-Trailer: 1\r\n\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "body_on_wire"),
    [
        pytest.param(get(version=b"1.0", extra=b"Connection: keep-alive\r\n"), b"hello", id="http10"),
        pytest.param(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", b"", id="head"),
    ],
)
@in_loop
def test_close_delimited_response_to_http10_or_head_closes(
    engine: str, request_bytes: bytes, body_on_wire: bytes
) -> None:
    """A close-delimited body to an HTTP/1.0 client, or to a HEAD, stays delimited by close: the
    head says ``Connection: close`` and the mux returns keep-alive False (no body for HEAD)."""
    conn, t, _ = client(engine)
    conn.data_received(request_bytes)
    keep = conn.send_response_head(response(framing=Framing.CLOSE), keep_alive=True, request_done=True)
    assert keep is False
    assert t.take() == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    conn.send_data(b"hello")
    conn.send_end([])
    assert t.take() == body_on_wire


@in_loop
def test_chunked_response_to_http10_is_close_delimited(engine: str) -> None:
    """A chunked body cannot go to an HTTP/1.0 client: raw bytes, delimited by close."""
    conn, t, _ = client(engine)
    conn.data_received(get(version=b"1.0", extra=b"Connection: keep-alive\r\n"))
    keep = conn.send_response_head(response(framing=Framing.CHUNKED), keep_alive=True, request_done=True)
    assert keep is False
    assert t.take() == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    conn.send_data(b"hello")
    conn.send_end([(b"X-Trailer", b"1")])
    assert t.take() == b"hello"


@in_loop
def test_length_response_keeps_an_http10_client_alive(engine: str) -> None:
    """A Content-Length body to a keep-alive HTTP/1.0 client: ``Connection: keep-alive``, kept."""
    conn, t, _ = client(engine)
    conn.data_received(get(version=b"1.0", extra=b"Connection: keep-alive\r\n"))
    keep = conn.send_response_head(response(length=5), keep_alive=True, request_done=True)
    assert keep is True
    assert t.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"


@pytest.mark.parametrize(("version", "forwarded"), [(b"1.1", True), (b"1.0", False)])
@in_loop
def test_interim_response_only_for_http11(engine: str, version: bytes, forwarded: bool) -> None:
    """A 1xx interim response is forwarded to an HTTP/1.1 client and dropped for HTTP/1.0."""
    conn, t, _ = client(engine)
    conn.data_received(get(version=version))
    conn.send_interim(ResponseHead(100, b"Continue", b"1.1", []))
    assert t.take() == (b"HTTP/1.1 100 Continue\r\n\r\n" if forwarded else b"")


@in_loop
def test_early_response_does_not_keep_the_connection(engine: str) -> None:
    """A response sent before the request was read to its end (``request_done=False``) closes the
    connection: there is no telling where the next request would start."""
    conn, t, _ = client(engine)
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    keep = conn.send_response_head(response(length=0), keep_alive=True, request_done=False)
    assert keep is False
    assert b"Connection: close\r\n" in t.take()


@in_loop
def test_unwritable_server_head_becomes_502(engine: str) -> None:
    """A server head that cannot be written safely (CR/LF inside a value) is answered 502 instead."""
    conn, t, _ = client(engine)
    conn.data_received(get())
    bad = ResponseHead(
        200, b"OK", b"1.1", [(b"X", b"a\r\nInjected: 1")], body=Framing.LENGTH, content_length=0
    )
    assert conn.send_response_head(bad, keep_alive=True, request_done=True) is False
    written = t.take()
    assert written.startswith(b"HTTP/1.1 502 ") and b"Injected" not in written


@in_loop
def test_local_response_keeps_an_http10_client_alive(engine: str) -> None:
    """``send_reply`` to a keep-alive HTTP/1.0 client says ``Connection: keep-alive``."""
    conn, t, _ = client(engine)
    conn.data_received(get(version=b"1.0", extra=b"Connection: keep-alive\r\n"))
    assert conn.send_reply(local_reply(200, b"ok", "text/plain"), keep_alive=True) is True
    assert t.take() == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
        b"Connection: keep-alive\r\n\r\nok"
    )


# -- bad requests ------------------------------------------------------------------------------------
@in_loop
def test_malformed_request_gets_400_and_close(engine: str) -> None:
    """A request the parser rejects: 400, logged ``PR``, connection closed, no stream."""
    conn, t, env = client(engine)
    conn.data_received(b"NOT A REQUEST\r\n\r\n")
    assert env.streams == [] and env.errors == [(400, "PR")]
    assert t.data.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close\r\n" in t.data
    assert t.closed and conn.closing


@in_loop
def test_bad_request_after_a_pipelined_one_is_answered_in_order(engine: str) -> None:
    """A bad request behind a good one: the good one is answered first, then the 400, then close."""
    conn, t, env = client(engine)
    conn.data_received(get(b"/a") + b"NOT A REQUEST\r\n\r\n")
    assert len(env.streams) == 1 and t.data == b"" and env.errors == []
    env.streams[0].respond(b"A")
    assert t.data.startswith(answer(b"A") + b"HTTP/1.1 400 ")
    assert env.errors == [(400, "PR")] and t.closed


@in_loop
def test_invalid_body_after_the_head_fails_the_stream(engine: str) -> None:
    """An invalid request body after the head went to a stream: the stream is told
    (``on_request_error``) and answers; the mux writes nothing itself."""
    conn, t, env = client(engine)
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.data_received(b"3\r\nabc\r\n")
    conn.data_received(b"zz\r\n")
    (stream,) = env.streams
    assert stream.calls == [("start",), ("on_request_data", b"abc"), ("on_request_error", 400)]
    assert t.data == b"" and env.errors == []


# -- flow control ------------------------------------------------------------------------------------
@in_loop
def test_pause_request_pauses_and_resumes_reading(engine: str) -> None:
    """``pause_request``/``resume_request`` pause and resume the transport (once each)."""
    conn, t, _ = client(engine)
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert t.reading
    conn.pause_request()
    conn.pause_request()
    assert not t.reading and t.pauses == 1
    conn.resume_request()
    assert t.reading and t.resumes == 1


def test_a_large_read_stands_aside_for_one_loop_turn(engine: str) -> None:
    """Fairness: after a read of FAIR_SHARE bytes or more, reading pauses until the loop's next
    turn (other connections get theirs), then resumes by itself; a small read never pauses."""
    body = b"x" * FAIR_SHARE

    async def main() -> None:
        conn, t, _ = client(engine)
        conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nab" % (2 * len(body)))
        assert t.reading and t.pauses == 0
        conn.data_received(body)
        assert not t.reading
        await asyncio.sleep(0)
        assert t.reading and (t.pauses, t.resumes) == (1, 1)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@in_loop
def test_resume_request_keeps_the_pipeline_pause(engine: str) -> None:
    """Reading stays paused after ``resume_request`` while a pipelined request still waits."""
    conn, t, env = client(engine)
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + get(b"/b"))
    assert not t.reading and t.pauses == 1
    conn.pause_request()
    conn.resume_request()
    assert not t.reading and t.resumes == 0
    env.streams[0].respond(b"A")
    assert t.reading and t.resumes == 1 and len(env.streams) == 2


@in_loop
def test_write_pressure_is_passed_to_the_stream(engine: str) -> None:
    """asyncio's ``pause_writing``/``resume_writing`` reach the current stream."""
    conn, _, env = client(engine)
    conn.data_received(get())
    conn.pause_writing()
    assert conn.write_paused
    conn.resume_writing()
    assert env.streams[0].calls[-2:] == [("on_client_writable", False), ("on_client_writable", True)]


# -- the client closing --------------------------------------------------------------------------------
@in_loop
def test_eof_with_a_request_in_flight_half_closes(engine: str) -> None:
    """The client's FIN while requests are in flight: keep the connection half-open, answer every
    request already received, then close."""
    conn, t, env = client(engine)
    conn.data_received(get(b"/a") + get(b"/b"))
    assert conn.eof_received() is True
    assert not t.is_closing()
    env.streams[0].respond(b"A")
    assert not t.is_closing() and len(env.streams) == 2
    env.streams[1].respond(b"B")
    assert t.data == answer(b"A") + answer(b"B") and t.closed


@in_loop
def test_eof_when_idle_closes(engine: str) -> None:
    """The client's FIN with nothing in flight: let asyncio close the connection."""
    conn, _, env = client(engine)
    conn.data_received(get())
    env.streams[0].respond(b"A")
    assert not conn.eof_received()


@in_loop
def test_connection_lost_tells_the_stream(engine: str) -> None:
    """The client went away: the current stream hears it, the environment forgets the client."""
    conn, _, env = client(engine)
    conn.data_received(get())
    conn.connection_lost(None)
    assert env.streams[0].calls[-1] == ("on_client_closed",) and env.closed == [conn]
    assert conn.closing


@in_loop
def test_connection_lost_counts_the_close_even_if_the_stream_raises(engine: str) -> None:
    """A stream failing in ``on_client_closed`` (a log target raised there once) must not leave
    the client counted open: the frontend's scur and maxconn accounting depend on it."""
    conn, _, env = client(engine)
    conn.data_received(get())

    def broken() -> None:
        raise OverflowError("from the stream")

    env.streams[0].on_client_closed = broken  # type: ignore[method-assign]
    with pytest.raises(OverflowError):
        conn.connection_lost(None)
    assert env.closed == [conn]


# -- upgrades ------------------------------------------------------------------------------------------
UPGRADE = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"


@in_loop
def test_upgrade_becomes_a_tunnel(engine: str) -> None:
    """After an upgrade request, reading pauses until the outcome is known; on a 101 the bytes the
    client already sent are handed over and every later byte is relayed raw."""
    conn, t, env = client(engine)
    conn.data_received(UPGRADE + b"early")
    (stream,) = env.streams
    assert not t.reading
    resp = ResponseHead(101, b"Switching Protocols", b"1.1", [(b"Upgrade", b"websocket")])
    assert conn.start_tunnel(stream, resp) == b"early"
    assert (
        t.take() == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )
    assert t.reading and conn.phase is Phase.TUNNEL
    conn.data_received(b"raw")
    assert conn.eof_received() is True
    conn.tunnel_send(b"back")
    conn.tunnel_send_eof()
    assert t.take() == b"back" and t.eof_written
    assert stream.calls[-2:] == [("tunnel_from_client", b"raw"), ("tunnel_client_eof",)]
    conn.stream_done(stream, False)
    assert t.closed


@in_loop
def test_declined_upgrade_parses_the_held_bytes_as_http(engine: str) -> None:
    """No 101: the bytes held after the upgrade request are parsed as the next request."""
    conn, t, env = client(engine)
    conn.data_received(UPGRADE + get(b"/next"))
    assert len(env.streams) == 1 and not t.reading
    env.streams[0].respond(b"no")
    assert [s.head.target for s in env.streams] == [b"/ws", b"/next"]
    env.streams[1].respond(b"B")
    assert t.data == answer(b"no") + answer(b"B") and t.reading


# -- timeouts (a real loop, small timeouts) -----------------------------------------------------------
def test_incomplete_head_times_out_with_408(engine: str) -> None:
    """``timeout http-request``: a head that does not complete in time gets 408 (``cR``), close."""

    async def main() -> None:
        cfg = Proxy(name="fe", cap=Cap.FRONTEND, timeouts=Timeouts(http_request=0.02))
        conn, t, env = client(engine, cfg=cfg)
        conn.data_received(b"GET / HTTP/1.1\r\nHo")
        await asyncio.sleep(0.08)
        assert t.data.startswith(b"HTTP/1.1 408 ") and t.closed and env.errors == [(408, "cR")]

    asyncio.run(main())


def test_http_ignore_probes_closes_a_silent_connection_without_408(engine: str) -> None:
    """``option http-ignore-probes``: no byte before the head timeout (a browser's pre-connect):
    closed without the 408 and without a log line; a started head still gets its 408."""

    async def main() -> None:
        timeouts = Timeouts(http_request=0.02)
        cfg = Proxy(name="fe", cap=Cap.FRONTEND, timeouts=timeouts, http_ignore_probes=True)
        conn, t, env = client(engine, cfg=cfg)
        await asyncio.sleep(0.08)
        assert t.closed and t.data == b"" and env.errors == []
        conn, t, env = client(engine, cfg=cfg)
        conn.data_received(b"GET / HT")
        await asyncio.sleep(0.08)
        assert t.data.startswith(b"HTTP/1.1 408 ") and env.errors == [(408, "cR")]

    asyncio.run(main())


def test_tunnel_times_out_when_silent_both_ways(engine: str) -> None:
    """``timeout tunnel`` (the stream's): activity either way keeps a tunnel; silence ends it."""

    async def main() -> None:
        cfg = Proxy(name="fe", cap=Cap.FRONTEND, timeouts=Timeouts(client=30.0))
        conn, _, env = client(engine, cfg=cfg)
        conn.data_received(UPGRADE)
        (stream,) = env.streams
        stream.tunnel_timeout = 0.1
        conn.start_tunnel(stream, ResponseHead(101, b"", b"1.1", [(b"Upgrade", b"websocket")]))
        for _ in range(3):  # the client talks: no timeout
            await asyncio.sleep(0.05)
            conn.data_received(b"x")
        for _ in range(3):  # the server talks
            await asyncio.sleep(0.05)
            stream.server_last_io = time.monotonic()
        assert ("on_client_timeout",) not in stream.calls
        await asyncio.sleep(0.2)
        assert stream.calls[-1] == ("on_client_timeout",)

    asyncio.run(main())


@in_loop
def test_eof_after_a_whole_request_tells_the_stream(engine: str) -> None:
    """The client's FIN once its request was read: the stream hears it (``option abortonclose``)."""
    conn, _, env = client(engine)
    conn.data_received(get())
    assert conn.eof_received() is True
    assert env.streams[0].calls[-1] == ("on_client_shutdown",)


def test_keep_alive_wait_expiry_closes_silently(engine: str) -> None:
    """``timeout http-keep-alive``: no next request in time, the connection closes, nothing written."""

    async def main() -> None:
        cfg = Proxy(name="fe", cap=Cap.FRONTEND, timeouts=Timeouts(http_keep_alive=0.02, http_request=5.0))
        conn, t, env = client(engine, cfg=cfg)
        conn.data_received(get())
        env.streams[0].respond(b"A")
        t.take()
        await asyncio.sleep(0.08)
        assert t.closed and t.data == b"" and env.errors == []

    asyncio.run(main())


def test_client_timeout_reaches_the_stream(engine: str) -> None:
    """``timeout client`` while a stream runs and the client is silent: the stream is told."""

    def not_waiting(stream: FakeStream) -> None:
        stream.waiting_for_server = False

    async def main() -> None:
        cfg = Proxy(name="fe", cap=Cap.FRONTEND, timeouts=Timeouts(client=0.02))
        conn, _, env = client(engine, cfg=cfg, on_start=not_waiting)
        conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        await asyncio.sleep(0.08)
        assert env.streams[0].calls[-1] == ("on_client_timeout",)

    asyncio.run(main())


def test_keep_alive_requests_arm_no_timer(engine: str) -> None:
    """Hot path: one timer per connection, armed when it opens; keep-alive requests only store
    timestamps (the timer re-reads them when it fires)."""
    timeouts = Timeouts(client=30.0, http_request=30.0, http_keep_alive=30.0)
    cfg = Proxy(name="fe", cap=Cap.FRONTEND, timeouts=timeouts)

    async def main() -> None:
        conn, _, env = client(engine, cfg=cfg)
        armed: list[float] = []
        real = conn.loop

        class Counting:
            def call_later(self, delay: float, *args: object) -> asyncio.TimerHandle:
                armed.append(delay)
                return real.call_later(delay, *args)  # type: ignore[arg-type]

        conn.loop = Counting()  # type: ignore[assignment]
        for _ in range(5):
            conn.data_received(get())
            env.streams[-1].respond(b"ok")
        assert conn.session.requests_done == 5 and armed == []
        assert conn.timer is not None  # the one armed when the connection opened

    asyncio.run(main())


def test_a_sooner_deadline_rearms_the_timer(engine: str) -> None:
    """A deadline sooner than the armed one re-arms the timer at once (keep-alive wait shorter
    than the client timeout), and the expiry still happens on time."""
    timeouts = Timeouts(client=30.0, http_request=30.0, http_keep_alive=0.02)
    cfg = Proxy(name="fe", cap=Cap.FRONTEND, timeouts=timeouts)

    async def main() -> None:
        conn, t, env = client(engine, cfg=cfg)
        conn.data_received(get())
        env.streams[-1].respond(b"ok")
        assert conn.timer is not None and conn.timer_at - time.monotonic() < 1.0
        await asyncio.sleep(0.08)
        assert t.is_closing()  # the keep-alive wait expired: closed silently

    asyncio.run(main())


@in_loop
def test_a_long_pipeline_in_one_read_is_answered_in_order(engine: str) -> None:
    """Hundreds of pipelined requests in one read: each starts after the previous response, in
    order (the inbox is a list read from an index: no per-event shifting)."""
    conn, t, env = client(engine)
    conn.data_received(b"".join(get(b"/%d" % i) for i in range(300)))
    for i in range(300):
        assert env.streams[i].head.target == b"/%d" % i
        env.streams[i].respond(b"%d" % i)
    assert t.data == b"".join(answer(b"%d" % i) for i in range(300))
    assert conn.session.requests_done == 300 and conn.idle and t.reading


# --- heads relayed as received (ResponseHead.wire) --------------------------------------------------
WIRE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-Order: kept\r\n\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "wire", "framing", "written"),
    [
        pytest.param(get(), WIRE, Framing.LENGTH, WIRE, id="relayed-unchanged"),
        pytest.param(
            get(extra=b"Connection: close\r\n"), WIRE, Framing.LENGTH,
            WIRE[:-2] + b"Connection: close\r\n\r\n", id="relayed-with-close",
        ),
        pytest.param(
            get(version=b"1.0"), WIRE, Framing.LENGTH,
            b"HTTP/1.1 200 OK\r\nX-Order: kept\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
            id="http10-client-serialised",
        ),
        pytest.param(
            get(), None, Framing.LENGTH, b"HTTP/1.1 200 OK\r\nX-Order: kept\r\nContent-Length: 2\r\n\r\n",
            id="no-wire-serialised",
        ),
    ],
)  # fmt: skip
def test_a_bare_response_head_is_relayed_as_received(
    request_bytes: bytes, wire: bytes | None, framing: Framing, written: bytes
) -> None:
    """A head the parser vouched for (``wire``) goes out as its bytes — header order and case kept —
    with ``Connection: close`` added when the connection ends; an HTTP/1.0 client, or a head without
    ``wire``, gets the writer's serialisation."""

    @in_loop
    def body() -> None:
        conn, t, env = client("native")
        conn.data_received(request_bytes)
        (stream,) = env.streams
        headers = [(b"content-length", b"2"), (b"X-Order", b"kept")]
        resp = ResponseHead(200, b"OK", b"1.1", headers, framing, 2, True, wire)
        keep = conn.send_response_head(resp, keep_alive=stream.head.keep_alive, request_done=True)
        assert t.take() == written
        assert keep is (written.endswith(b"\r\n\r\n") and b"Connection: close" not in written)

    body()
