"""The HTTP/2 client mux (proxy.mux_h2) on a fake transport, driven by the ``h2`` library as the client
(every test on both connection engines, ``tune.h2-engine native|h2``).

The environment's ``open_stream`` hands out ``FakeStream`` recorders; a test plays the stream by
calling its ``H2Side`` (``FakeStream.respond`` does head, data, end and ``stream_done``). What the
mux writes is read back by a real HTTP/2 client state machine (``Client.events``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeClientEnv, FakeStream, FakeTransport, in_loop, raw_frames, response
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.settings import SettingCodes
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, WindowUpdateFrame

from proxy.client_mux import MuxFactory
from proxy.config.model import H2_ENGINES, Cap, Proxy, Timeouts
from proxy.h2 import Settings
from proxy.message import Framing, ResponseHead
from proxy.mux_h1 import ClientConn
from proxy.mux_h2 import FLUSH_AT, H2ClientConn
from proxy.replies import error_reply

ENGINE = ["h2"]  # the engine of this test's muxes (the fixture below sets it)


@pytest.fixture(autouse=True, params=H2_ENGINES)
def h2_engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs on both connection engines (``tune.h2-engine``)."""
    ENGINE[0] = request.param
    yield request.param
    ENGINE[0] = "h2"


GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"example.com"), (b":path", b"/a")]


def post(path: bytes = b"/up", extra: list[tuple[bytes, bytes]] | None = None) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"x"),
        (b":path", path),
        *(extra or []),
    ]


class Client:
    """A real HTTP/2 client state machine talking to the mux over a fake transport."""

    def __init__(self, settings: Settings | None = None, **env_kw: Any) -> None:
        self.env = FakeClientEnv(**env_kw)
        settings = dataclasses.replace(settings or Settings(), engine=ENGINE[0])
        self.mux = H2ClientConn(self.env, settings)  # type: ignore[arg-type]
        self.t = FakeTransport()
        self.mux.connection_made(self.t)  # type: ignore[arg-type]
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        self.flush()
        self.log: list[Event] = []
        self.events()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.mux.data_received(data)

    def raw(self, data: bytes) -> None:
        self.mux.data_received(data)

    def events(self) -> list[Event]:
        """What the mux wrote since last time, as the client's events (its acks are sent back)."""
        data = self.take()
        evs = self.h2.receive_data(data) if data else []
        self.log += evs
        self.flush()
        return evs

    def take(self) -> bytes:
        """What the mux wrote since last time (its write for this loop iteration made now)."""
        self.mux.flush()
        return self.t.take()

    def request(self, headers: list[tuple[bytes, bytes]], *, end: bool = True) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid

    def stream(self, i: int = -1) -> FakeStream:
        return self.env.streams[i]


def kinds(evs: list[Event]) -> list[str]:
    return [type(e).__name__ for e in evs]


def goaway(evs: list[Event]) -> int | None:
    for e in evs:
        if isinstance(e, ConnectionTerminated):
            return int(e.error_code or 0)
    return None


# -- requests ------------------------------------------------------------------------------------
@in_loop
def test_request_translation_and_a_response_back() -> None:
    """Pseudo-headers become the neutral head (``:authority`` -> Host, cookies joined into one field,
    version 2.0);
    the stream's response comes back as HEADERS + DATA + END_STREAM on the same stream."""
    c = Client()
    assert c.env.opened == [c.mux] and c.mux.session.client_ip == "127.0.0.1"
    sid = c.request([*GET, (b"cookie", b"a=1"), (b"user-agent", b"t"), (b"cookie", b"b=2")])
    s = c.stream()
    head = s.head
    assert (head.method, head.target, head.version, head.body) == (b"GET", b"/a", b"2.0", Framing.NONE)
    assert sorted(head.headers) == [
        (b"cookie", b"a=1; b=2"),
        (b"host", b"example.com"),
        (b"user-agent", b"t"),
    ]
    assert head.headers[0] == (b"host", b"example.com")
    assert s.names() == ["start", "on_request_end"]
    s.respond(b"hello")
    evs = c.events()
    assert kinds(evs) == ["ResponseReceived", "DataReceived", "DataReceived", "StreamEnded"]
    assert isinstance(evs[0], ResponseReceived) and evs[0].stream_id == sid
    assert dict(evs[0].headers or []) == {b":status": b"200", b"content-length": b"5"}
    assert isinstance(evs[1], DataReceived) and evs[1].data == b"hello"
    assert c.mux.streams == {} and not c.t.closed


@in_loop
def test_an_ended_stream_and_its_side_no_longer_refer_to_each_other() -> None:
    """Once the mux forgets a stream's side, the side drops its stream: the pair (and the heads it
    holds) is freed by reference counting, not left to the cyclic collector (a few hundred streams
    in flight made it a tenth of a worker's time)."""
    c = Client()
    c.request(GET)
    s = c.stream()
    side = s.side
    assert side.handle is s
    s.respond(b"hello")
    c.events()
    assert c.mux.streams == {} and side.handle is None


@in_loop
def test_responses_of_one_loop_iteration_share_one_write() -> None:
    """Streams answered one after the other (each from its own server callback, not corked) are
    written together at the end of the loop iteration: one ``transport.write`` for all of them."""
    c = Client()
    sids = [c.request(GET) for _ in range(3)]
    c.mux.flush()
    c.t.take()
    for s in c.env.streams:
        s.respond(b"hello")
    assert c.t.writes == [] and c.mux.flush_handle is not None  # scheduled, not written
    c.mux.flush()
    assert len(c.t.writes) == 1 and c.mux.flush_handle is None
    evs = c.events()
    assert sorted(e.stream_id for e in evs if isinstance(e, StreamEnded)) == sids


@in_loop
def test_a_large_body_is_written_at_once() -> None:
    """Past ``FLUSH_AT`` body bytes framed, the write is made now: the transport sees the bytes
    (and can push back) before the server connection is read again."""
    c = Client()
    c.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    c.h2.increment_flow_control_window(1 << 20)
    c.flush()
    c.events()
    c.request(GET)
    c.mux.flush()
    c.t.take()
    s = c.stream()
    resp = ResponseHead(200, b"", b"1.1", [], body=Framing.LENGTH, content_length=FLUSH_AT + 10)
    s.side.send_response_head(resp, keep_alive=True, request_done=True)
    s.side.send_data(b"x" * 100)
    assert c.t.writes == []
    s.side.send_data(b"x" * (FLUSH_AT - 90))
    assert len(c.t.writes) == 1 and c.mux.framed == 0


@in_loop
def test_responses_use_no_dynamic_table() -> None:
    """The encoder announces a table of size 0 and indexes nothing, even after the client's
    SETTINGS_HEADER_TABLE_SIZE: the client's decoder table stays empty."""
    c = Client()
    c.h2.update_settings({SettingCodes.HEADER_TABLE_SIZE: 8192})
    c.flush()
    for _ in range(3):
        c.request(GET)
        resp = ResponseHead(200, b"", b"1.1", [(b"x-id", b"v%d" % len(c.env.streams))], body=Framing.NONE)
        c.stream().side.send_response_head(resp, keep_alive=True, request_done=True)
        c.stream().side.stream_done(c.stream(), True)
        resps = [e for e in c.events() if isinstance(e, ResponseReceived)]
        assert dict(resps[0].headers or [])[b"x-id"] == b"v%d" % len(c.env.streams)
    assert len(c.h2.decoder.header_table.dynamic_entries) == 0


@in_loop
def test_request_bodies_framing_and_trailers() -> None:
    """A content-length gives a LENGTH body, none a CHUNKED one; trailers reach the stream's end."""
    c = Client()
    sid = c.request(post(extra=[(b"content-length", b"3")]), end=False)
    assert c.stream().head.body is Framing.LENGTH and c.stream().head.content_length == 3
    c.h2.send_data(sid, b"abc", end_stream=True)
    c.flush()
    assert c.stream().calls[1:] == [("on_request_data", b"abc"), ("on_request_end", [])]
    sid = c.request(post(extra=[(b"te", b"trailers")]), end=False)
    s = c.stream()
    assert s.head.body is Framing.CHUNKED and s.head.content_length is None
    c.h2.send_data(sid, b"xy")
    c.h2.send_headers(sid, [(b"x-sum", b"1")], end_stream=True)
    c.flush()
    assert s.calls[1:] == [("on_request_data", b"xy"), ("on_request_end", [(b"x-sum", b"1")])]


@in_loop
def test_request_data_is_acknowledged_only_once_consumed() -> None:
    """While the stream asked to pause, what it received is not acknowledged (the client's window
    does not reopen); when it resumes, the window comes back."""
    c = Client()
    sid = c.request(post(), end=False)
    s = c.stream()
    s.side.pause_request()
    window = c.h2.local_flow_control_window(sid)
    for _ in range(4):
        c.h2.send_data(sid, b"x" * 10000)
    c.flush()
    assert c.h2.local_flow_control_window(sid) == window - 40000
    assert not [e for e in c.events() if isinstance(e, WindowUpdated) and e.stream_id == sid]
    assert c.mux.streams[sid].unacked == 40000
    s.side.resume_request()
    assert [e for e in c.events() if isinstance(e, WindowUpdated) and e.stream_id == sid]
    assert c.h2.local_flow_control_window(sid) == window
    # Not paused: acknowledged as it comes (the library sends WINDOW_UPDATE past half the window).
    for _ in range(4):
        c.h2.send_data(sid, b"y" * 10000)
    c.flush()
    assert c.mux.streams[sid].unacked == 0


@in_loop
def test_response_waits_for_the_client_window_and_pauses_the_stream() -> None:
    """Body bytes beyond the client's window wait; past ``max_head`` waiting, the stream hears the
    client is not writable (it pauses its server); the client's WINDOW_UPDATE lets the rest and the
    end go out, and the stream hears it is writable again."""
    c = Client(Settings(max_head=4096))
    c.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    c.flush()
    c.events()
    sid = c.request(GET)
    s = c.stream()
    s.side.send_response_head(response(framing=Framing.CHUNKED), keep_alive=True, request_done=True)
    s.side.send_data(b"z" * 6000)
    s.side.send_end([(b"x-t", b"1"), (b"connection", b"x")])
    evs = c.events()
    assert sum(len(e.data or b"") for e in evs if isinstance(e, DataReceived)) == 1000
    assert s.side.write_paused and s.calls[-1] == ("on_client_writable", False)
    c.h2.increment_flow_control_window(100000, stream_id=sid)
    c.flush()
    evs = c.events()
    assert sum(len(e.data or b"") for e in evs if isinstance(e, DataReceived)) == 5000
    trailers = [e for e in evs if isinstance(e, TrailersReceived)]
    assert trailers and trailers[0].headers == [(b"x-t", b"1")]
    assert any(isinstance(e, StreamEnded) for e in evs)
    assert s.calls[-1] == ("on_client_writable", True)
    s.side.stream_done(s, True)
    assert c.mux.streams == {}


@in_loop
def test_head_204_and_connection_headers() -> None:
    """A HEAD response ends with its headers (Content-Length kept); connection-specific fields and
    those ``Connection`` nominates never reach the client."""
    c = Client()
    c.request([(b":method", b"HEAD"), *GET[1:]])
    s = c.stream()
    resp = ResponseHead(
        200,
        b"OK",
        b"1.1",
        [(b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"), (b"Keep-Alive", b"t=1"), (b"X-End", b"2")],
        body=Framing.NONE,
        content_length=42,
    )
    s.side.send_response_head(resp, keep_alive=True, request_done=True)
    s.side.send_data(b"never")
    s.side.send_end([])
    s.side.stream_done(s, True)
    evs = c.events()
    assert kinds(evs) == ["ResponseReceived", "StreamEnded"]
    assert evs[0].headers == [(b":status", b"200"), (b"x-end", b"2"), (b"content-length", b"42")]  # type: ignore[attr-defined]
    c.request(GET)
    s = c.stream()
    s.side.send_response_head(response(204, framing=Framing.NONE), keep_alive=True, request_done=True)
    s.side.send_end([])
    s.side.stream_done(s, True)
    evs = c.events()
    assert kinds(evs) == ["ResponseReceived", "StreamEnded"]
    assert evs[0].headers == [(b":status", b"204")]  # type: ignore[attr-defined]


@in_loop
def test_interim_100_then_the_response() -> None:
    c = Client()
    c.request(post(extra=[(b"expect", b"100-continue")]), end=False)
    s = c.stream()
    assert s.head.expect_continue
    s.side.send_interim(ResponseHead(100, b"Continue", b"1.1", []))
    s.side.send_response_head(response(length=0), keep_alive=True, request_done=False)
    evs = c.events()
    assert kinds(evs) == ["InformationalResponseReceived", "ResponseReceived", "StreamEnded"]
    assert isinstance(evs[0], InformationalResponseReceived) and evs[0].headers == [(b":status", b"100")]


@in_loop
def test_proxy_reply_is_an_h2_response() -> None:
    c = Client()
    c.request(GET)
    s = c.stream()
    reply = error_reply(503)
    s.side.send_reply(reply, keep_alive=False)
    s.side.stream_done(s, False)
    evs = c.events()
    assert kinds(evs) == ["ResponseReceived", "DataReceived", "StreamEnded"]
    fields = dict(evs[0].headers or [])  # type: ignore[attr-defined]
    assert fields[b":status"] == b"503" and fields[b"content-length"] == b"%d" % len(reply.body)
    assert fields[b"cache-control"] == b"no-cache"
    assert evs[1].data == reply.body  # type: ignore[attr-defined]
    assert not c.t.closed  # an error on one stream is no reason to close the connection


@in_loop
def test_abort_resets_the_stream_and_a_client_reset_ends_it() -> None:
    c = Client()
    sid = c.request(GET)
    s = c.stream()
    s.side.send_response_head(response(length=10), keep_alive=True, request_done=True)
    s.side.abort()
    s.side.stream_done(s, False)
    evs = c.events()
    assert isinstance(evs[-1], StreamReset) and evs[-1].stream_id == sid
    assert evs[-1].error_code == ErrorCodes.INTERNAL_ERROR
    sid = c.request(GET)
    s = c.stream()
    c.h2.reset_stream(sid, ErrorCodes.CANCEL)
    c.flush()
    assert s.calls[-1] == ("on_client_closed",)
    assert c.mux.streams == {}


@in_loop
def test_response_before_the_request_ends_resets_with_no_error() -> None:
    """RFC 9113 §8.1: a complete response to an unfinished request is followed by RST_STREAM
    NO_ERROR, which tells the client to stop sending its body."""
    c = Client()
    sid = c.request(post(), end=False)
    c.stream().side.cork()
    c.stream().respond(b"early")
    c.stream().side.uncork()
    evs = c.events()
    assert kinds(evs)[:3] == ["ResponseReceived", "DataReceived", "StreamEnded"]
    assert (
        isinstance(evs[-1], StreamReset)
        and evs[-1].error_code == ErrorCodes.NO_ERROR
        and evs[-1].stream_id == sid
    )
    # Data the client had in flight is acknowledged, not held against the connection window.
    assert c.mux.streams == {}


@in_loop
def test_headers_over_the_limits_get_431_on_their_stream() -> None:
    c = Client(Settings(max_head=1000, max_headers=5))
    c.request([*GET, (b"x-big", b"v" * 1200)])
    evs = c.events()
    assert isinstance(evs[0], ResponseReceived) and dict(evs[0].headers or [])[b":status"] == b"431"
    assert c.env.errors == [(431, "PR")] and c.env.streams == []
    c.request([*GET, *[(b"x-%d" % i, b"v") for i in range(6)]])
    evs = c.events()
    assert isinstance(evs[0], ResponseReceived) and dict(evs[0].headers or [])[b":status"] == b"431"
    c.request([(b":method", b"CONNECT"), (b":authority", b"h:443")])
    evs = c.events()
    assert isinstance(evs[0], ResponseReceived) and dict(evs[0].headers or [])[b":status"] == b"405"
    c.request(GET)  # the connection goes on
    assert c.env.streams[-1].head.target == b"/a"


@in_loop
def test_malformed_requests_reset_their_stream_only() -> None:
    """RFC 9113 §8.1.1: a malformed request (checked by the mux, not by the library) is a stream
    error PROTOCOL_ERROR; its trailers too; the connection goes on."""
    c = Client()
    bad_blocks = [
        [*GET, (b"X-Upper", b"1")],
        [*GET, (b"connection", b"close")],
        [*GET, (b"te", b"gzip")],
        [*GET, (b"x-v", b"a\r\nb")],
        [*GET, (b"x-v", b" lead")],
        [GET[0], (b"x", b"1"), *GET[1:]],
        [GET[0], GET[0], *GET[1:]],
        [GET[0], GET[2], GET[3]],
    ]
    for i, block in enumerate(bad_blocks):
        sid = 2 * i + 1  # raw frames: the client's state machine does not know these streams
        frame = HeadersFrame(sid, c.h2.encoder.encode(block), flags=["END_HEADERS", "END_STREAM"])
        c.raw(frame.serialize())
        frames = raw_frames(c.take())
        assert [(type(f).__name__, f.stream_id, f.error_code) for f in frames] == [
            ("RstStreamFrame", sid, ErrorCodes.PROTOCOL_ERROR)
        ], block
    assert c.env.streams == [] and len(c.env.errors) == len(bad_blocks) and not c.t.closed
    sid = 2 * len(bad_blocks) + 1
    c.raw(HeadersFrame(sid, c.h2.encoder.encode(post()), flags=["END_HEADERS"]).serialize())
    s = c.stream()
    c.raw(
        HeadersFrame(
            sid, c.h2.encoder.encode([(b"x-T", b"1")]), flags=["END_HEADERS", "END_STREAM"]
        ).serialize()
    )
    frames = raw_frames(c.take())
    assert [(type(f).__name__, f.error_code) for f in frames] == [
        ("RstStreamFrame", ErrorCodes.PROTOCOL_ERROR)
    ]
    assert s.calls[-1] == ("on_client_closed",) and c.mux.streams == {}
    c.raw(HeadersFrame(sid + 2, c.h2.encoder.encode(GET), flags=["END_HEADERS", "END_STREAM"]).serialize())
    assert c.env.streams[-1].head.target == b"/a" and not c.t.closed


# -- connection errors and floods ------------------------------------------------------------------
def _fresh() -> tuple[H2ClientConn, FakeTransport, FakeClientEnv]:
    env = FakeClientEnv()
    mux = H2ClientConn(env, Settings(engine=ENGINE[0]))  # type: ignore[arg-type]
    t = FakeTransport()
    mux.connection_made(t)  # type: ignore[arg-type]
    return mux, t, env


def _goaway_code(written: bytes) -> int | None:
    client = H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    return goaway(client.receive_data(written))


@in_loop
def test_bad_preface_is_a_protocol_error() -> None:
    mux, t, _env = _fresh()
    mux.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _goaway_code(t.data) == ErrorCodes.PROTOCOL_ERROR and t.closed and mux.error


@in_loop
def test_stream_id_reuse_ends_the_connection() -> None:
    c = Client()
    sid = c.request(GET)
    c.stream().respond(b"x")
    c.events()
    frame = HeadersFrame(sid, c.h2.encoder.encode(GET), flags=["END_HEADERS", "END_STREAM"])
    c.raw(frame.serialize())
    code = goaway(c.h2.receive_data(c.take()))
    assert code in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.STREAM_CLOSED) and c.t.closed


@in_loop
def test_window_overflow_is_a_flow_control_error() -> None:
    c = Client()
    c.raw(WindowUpdateFrame(0, window_increment=2**31 - 1).serialize())
    assert _goaway_code_from(c) == ErrorCodes.FLOW_CONTROL_ERROR and c.t.closed


def _goaway_code_from(c: Client) -> int | None:
    return goaway(c.h2.receive_data(c.take()))


@in_loop
def test_rapid_reset_is_answered_enhance_your_calm() -> None:
    """CVE-2023-44487: streams opened and reset at once, hundreds in one read, end the connection
    with ENHANCE_YOUR_CALM; every stream opened was told its client left."""
    c = Client()
    for _ in range(300):
        sid = c.h2.get_next_available_stream_id()
        c.h2.send_headers(sid, GET, end_stream=True)
        c.h2.reset_stream(sid, ErrorCodes.CANCEL)
    c.flush()
    assert _goaway_code_from(c) == ErrorCodes.ENHANCE_YOUR_CALM and c.t.closed
    assert all(s.calls[-1] == ("on_client_closed",) for s in c.env.streams)
    c.mux.connection_lost(None)
    assert c.mux.streams == {} and c.env.closed == [c.mux]


@in_loop
def test_ping_flood_is_answered_enhance_your_calm() -> None:
    c = Client()
    c.raw(b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(500)))
    assert _goaway_code_from(c) == ErrorCodes.ENHANCE_YOUR_CALM and c.t.closed


@in_loop
def test_continuation_flood_is_refused() -> None:
    """A header block that never ends: the library buffers at most 64 CONTINUATION frames."""
    c = Client()
    first = HeadersFrame(1, c.h2.encoder.encode(GET), flags=[])
    frames = [first.serialize()] + [ContinuationFrame(1, b"\x00" * 100).serialize() for _ in range(200)]
    c.raw(b"".join(frames))
    assert _goaway_code_from(c) in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.ENHANCE_YOUR_CALM) and c.t.closed
    assert c.env.streams == []


@in_loop
def test_hpack_bomb_is_refused() -> None:
    c = Client(Settings(max_head=1000, max_headers=5))
    big = [*GET, *[(b"x-%d" % i, b"v" * 500) for i in range(20)]]
    c.raw(HeadersFrame(1, c.h2.encoder.encode(big), flags=["END_HEADERS", "END_STREAM"]).serialize())
    assert _goaway_code_from(c) == ErrorCodes.ENHANCE_YOUR_CALM and c.t.closed


@in_loop
def test_too_many_concurrent_streams() -> None:
    c = Client(Settings(max_concurrent_streams=2))
    assert c.h2.remote_settings.max_concurrent_streams == 2
    for _ in range(2):
        c.request(GET)
    frame = HeadersFrame(5, c.h2.encoder.encode(GET), flags=["END_HEADERS", "END_STREAM"])
    c.raw(frame.serialize())
    frames = raw_frames(c.take())
    assert [(type(f).__name__, f.stream_id, f.error_code) for f in frames] == [
        ("RstStreamFrame", 5, ErrorCodes.REFUSED_STREAM)
    ]  # RFC 9113 §5.1.2: a stream error, the connection goes on
    assert not c.t.closed and len(c.env.streams) == 2
    c.stream(0).respond(b"x")
    c.raw(HeadersFrame(7, c.h2.encoder.encode(GET), flags=["END_HEADERS", "END_STREAM"]).serialize())
    assert len(c.env.streams) == 3  # room again
    c.raw(b"".join(HeadersFrame(2 * i + 9, c.h2.encoder.encode(GET), flags=["END_HEADERS"]).serialize()
                   for i in range(300)))  # fmt: skip
    assert c.t.closed and goaway(c.h2.receive_data(c.take())) == ErrorCodes.ENHANCE_YOUR_CALM


# -- endings -------------------------------------------------------------------------------------
@in_loop
def test_drain_sends_goaway_and_lets_streams_finish() -> None:
    c = Client()
    c.request(GET)
    s = c.stream()
    c.mux.drain()
    frames = raw_frames(c.take())
    assert [(type(f).__name__, f.error_code, f.last_stream_id) for f in frames] == [("GoAwayFrame", 0, 1)]
    assert not c.t.closed
    s.side.cork()  # as the stream does around the events of one read: the end rides on the DATA
    s.respond(b"done")
    s.side.uncork()
    frames = raw_frames(c.take())
    assert [type(f).__name__ for f in frames] == ["HeadersFrame", "DataFrame"]
    assert frames[1].data == b"done" and "END_STREAM" in frames[1].flags
    assert c.t.closed


@in_loop
def test_max_total_streams_drains_after_the_last() -> None:
    c = Client(Settings(max_total_streams=2))
    c.request(GET)
    c.stream().respond(b"1")
    c.request(GET)
    assert not c.t.closed
    c.stream().respond(b"2")
    assert c.t.closed and len(c.env.streams) == 2


@in_loop
def test_idle_connection_times_out_with_goaway() -> None:
    cfg = Proxy(name="fe", cap=Cap.FRONTEND, timeouts=Timeouts(http_keep_alive=0.01))
    c = Client(cfg=cfg)
    assert c.mux.timer is not None
    c.mux._on_timer()  # what the timer does once due (its deadline is past by now or soon)
    c.mux.t_idle -= 1.0
    c.mux._on_timer()
    assert c.t.closed and goaway(c.events()) == ErrorCodes.NO_ERROR


# -- detection -------------------------------------------------------------------------------------
@in_loop
def test_prior_knowledge_preface_hands_the_connection_to_h2() -> None:
    """A plain listener's HTTP/1 mux hands a connection opened with the HTTP/2 preface (here in two
    reads) to the HTTP/2 mux; other first bytes stay HTTP/1."""
    env = FakeClientEnv()
    factory = MuxFactory(env, Settings())  # type: ignore[arg-type]
    conn = factory()
    assert isinstance(conn, ClientConn)
    t = FakeTransport()
    conn.connection_made(t)  # type: ignore[arg-type]
    h2c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    h2c.initiate_connection()
    h2c.send_headers(1, GET, end_stream=True)
    data = h2c.data_to_send()
    conn.data_received(data[:10])
    assert env.streams == [] and t.get_protocol() is None
    conn.data_received(data[10:])
    mux = t.get_protocol()
    assert isinstance(mux, H2ClientConn) and env.opened == [conn, mux] and env.closed == [conn]
    assert env.streams[0].head.version == b"2.0"
    conn2 = factory()
    t2 = FakeTransport()
    conn2.connection_made(t2)  # type: ignore[arg-type]
    conn2.data_received(b"P")
    assert env.streams[-1].head.version == b"2.0"  # a prefix of the preface: undecided yet
    conn2.data_received(b"UT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert t2.get_protocol() is None and env.streams[-1].head.method == b"PUT"
    assert env.streams[-1].head.version == b"1.1"
    assert isinstance(MuxFactory(env, Settings(), proto="h2")(), H2ClientConn)  # type: ignore[arg-type]


class _TlsTransport(FakeTransport):
    def __init__(self, alpn: str | None) -> None:
        super().__init__()
        self.alpn = alpn

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self
        return super().get_extra_info(name, default)

    def selected_alpn_protocol(self) -> str | None:
        return self.alpn


@in_loop
def test_alpn_chooses_the_mux_on_tls_connections() -> None:
    """A TLS listener's connection goes to the mux ALPN chose (h2, else HTTP/1.1), which takes the
    transport over; the session knows it is TLS (``ssl_fc``)."""
    env = FakeClientEnv()
    factory = MuxFactory(env, Settings(), tls=True)  # type: ignore[arg-type]
    for alpn, kind in (("h2", H2ClientConn), ("http/1.1", ClientConn), (None, ClientConn)):
        chooser = factory()
        t = _TlsTransport(alpn)
        chooser.connection_made(t)  # type: ignore[arg-type]
        mux = t.get_protocol()
        assert isinstance(mux, kind) and env.opened[-1] is mux
        assert mux.session.ssl


@in_loop
def test_a_full_transport_pauses_reading_and_the_streams() -> None:
    """While the transport's buffer is full, the client is not read (what it sends cannot make us
    queue more acknowledgements) and every stream hears the client is not writable; body bytes wait.
    When it drains, reading resumes and what waited goes out."""
    c = Client()
    c.request(GET)
    s = c.stream()
    s.side.send_response_head(response(length=5), keep_alive=True, request_done=True)
    c.events()
    c.mux.pause_writing()
    assert not c.t.reading and s.calls[-1] == ("on_client_writable", False) and s.side.write_paused
    s.side.send_data(b"hello")
    s.side.send_end([])
    assert not [f for f in raw_frames(c.take()) if type(f).__name__ == "DataFrame"]
    c.mux.resume_writing()
    assert c.t.reading and s.calls[-1] == ("on_client_writable", True)
    evs = c.events()
    assert [e.data for e in evs if isinstance(e, DataReceived)] == [b"hello"]
    assert any(isinstance(e, StreamEnded) for e in evs)
