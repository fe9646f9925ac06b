"""The server-role HTTP/2 engines (``proxy.h2.conn.ServerConn``, ``tune.h2-engine native``; and the
``h2`` library behind the same interface, ``proxy.h2.engine.LibConn``) driven in memory by the ``h2``
library as the client: requests, bodies, trailers, windows, resets, GOAWAY, and RFC 9113's errors.

Where both engines must answer alike, a test runs on both (``engine`` fixture); the native engine's
own choices (an error code the library words otherwise) are tested on it alone.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import raw_frames
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    DataReceived,
    Event as LibEvent,
    RemoteSettingsChanged,
    ResponseReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from proxy.config import ConfigError, load
from proxy.h2 import Settings, conn as c, frames as f
from proxy.h2.engine import ENGINES, Engine, LibConn, make_engine, new_codec
from proxy.h2.hpack_codec import Decoder as CodecDecoder, Encoder as CodecEncoder

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/a")]
POST = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/up")]


class Peer:
    """An engine and a real client state machine wired to each other in memory."""

    def __init__(self, engine: str = "native", settings: Settings | None = None) -> None:
        self.settings = dataclasses.replace(settings or Settings(), engine=engine)
        self.server: Engine = make_engine(self.settings)
        self.server.initiate_connection()
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        self.events: list[c.Event] = []
        self.client_events: list[LibEvent] = []
        self.pump()

    def pump(self) -> list[c.Event]:
        """Exchange bytes until both sides are quiet; the server's events of this exchange."""
        got: list[c.Event] = []
        while True:
            to_server = self.client.data_to_send()
            if to_server:
                got += self.server.receive_data(to_server)
            to_client = self.server.data_to_send()
            if to_client:
                self.client_events += self.client.receive_data(to_client)
            if not to_server and not to_client:
                break
        self.events += got
        return got

    def raw(self, data: bytes) -> list[c.Event]:
        return self.server.receive_data(data)

    def client_got(self, kind: type) -> list[LibEvent]:
        return [e for e in self.client_events if isinstance(e, kind)]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def kinds(events: list[c.Event]) -> list[int]:
    return [e.kind for e in events]


def error_of(peer: Peer, data: bytes) -> int:
    with pytest.raises(c.H2Error) as info:
        peer.raw(data)
    return info.value.code


# -- the connection's start -------------------------------------------------------------------------
def test_settings_we_announce_and_their_acknowledgement(engine: str) -> None:
    p = Peer(engine, Settings(max_concurrent_streams=7, initial_window_size=1000, max_frame_size=20000))
    remote = p.client.remote_settings
    assert remote.max_concurrent_streams == 7
    assert remote.initial_window_size == 1000
    assert remote.max_frame_size == 20000
    assert remote.max_header_list_size == p.settings.max_header_list_size
    assert p.client_got(RemoteSettingsChanged)
    assert [e.kind for e in p.events] == [c.SETTINGS]  # the client's SETTINGS, acknowledged
    assert p.client_got(SettingsAcknowledged)


def test_connection_window_beyond_the_default(engine: str) -> None:
    p = Peer(engine)
    p.server.increment_flow_control_window(1 << 20)
    p.pump()
    assert p.client.outbound_flow_control_window == 65535 + (1 << 20)


def test_the_preface_may_come_byte_by_byte() -> None:
    s = c.ServerConn(Settings(), *_codec())
    request = HeadersFrame(1, Encoder().encode(GET), flags=["END_HEADERS"]).serialize()
    data = f.PREFACE + SettingsFrame(0).serialize() + request
    events: list[c.Event] = []
    for i in range(len(data)):
        events += s.receive_data(data[i : i + 1])
    assert kinds(events) == [c.SETTINGS, c.REQUEST]
    assert events[1].headers == GET and not events[1].ended


def _codec() -> tuple[CodecEncoder, CodecDecoder]:
    return new_codec()


# -- requests and responses ------------------------------------------------------------------------
def test_request_body_trailers_and_a_response(engine: str) -> None:
    p = Peer(engine)
    p.client.send_headers(1, [*POST, (b"content-length", b"5")])
    p.client.send_data(1, b"hel")
    p.client.send_data(1, b"lo", pad_length=10)
    p.client.send_headers(1, [(b"x-sum", b"9")], end_stream=True)
    evs = p.pump()
    assert kinds(evs) == [c.REQUEST, c.DATA, c.DATA, c.TRAILERS, c.ENDED]
    assert evs[0].headers[-1] == (b"content-length", b"5") and not evs[0].ended
    assert (evs[1].data, evs[1].flow) == (b"hel", 3)
    assert (evs[2].data, evs[2].flow) == (b"lo", 13)  # padding and its length byte count
    assert evs[3].headers == [(b"x-sum", b"9")]
    p.server.send_headers(1, [(b":status", b"200"), (b"content-length", b"2")])
    p.server.send_data(1, b"ok")
    p.server.end_stream(1)
    p.pump()
    resp = p.client_got(ResponseReceived)
    assert resp and dict(resp[0].headers or [])[b":status"] == b"200"
    assert b"".join(e.data or b"" for e in p.client_got(DataReceived)) == b"ok"
    assert p.client_got(StreamEnded)
    with pytest.raises(c.H2Error):
        p.server.send_data(1, b"late")  # the stream is closed both ways


def test_get_with_end_stream_ends_at_once(engine: str) -> None:
    p = Peer(engine)
    p.client.send_headers(1, GET, end_stream=True)
    evs = p.pump()
    assert kinds(evs) == [c.REQUEST, c.ENDED] and evs[0].ended and evs[0].sid == 1


def test_large_response_headers_use_continuation(engine: str) -> None:
    p = Peer(engine)
    p.client.send_headers(1, GET, end_stream=True)
    p.pump()
    big = [(b":status", b"200"), *[(b"x-h%d" % i, b"v" * 1000) for i in range(40)]]
    p.server.send_headers(1, big, end_stream=True)
    p.pump()
    resp = p.client_got(ResponseReceived)
    assert resp and len(resp[0].headers or []) == 41


def test_request_header_block_over_continuation() -> None:
    p = Peer()
    block = Encoder().encode([*GET, (b"x-long", b"y" * 3000)])
    frames = HeadersFrame(1, block[:1000], flags=["END_STREAM"]).serialize()
    frames += ContinuationFrame(1, block[1000:2000]).serialize()
    frames += ContinuationFrame(1, block[2000:], flags=["END_HEADERS"]).serialize()
    evs = p.raw(frames)
    assert kinds(evs) == [c.REQUEST, c.ENDED] and evs[0].headers[-1] == (b"x-long", b"y" * 3000)


# -- flow control ------------------------------------------------------------------------------------
def test_send_windows_follow_the_client(engine: str) -> None:
    p = Peer(engine)
    p.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 100})
    p.pump()
    p.client.send_headers(1, GET, end_stream=True)
    p.pump()
    assert p.server.local_flow_control_window(1) == 100
    with pytest.raises(c.H2Error):
        p.server.send_data(1, b"x" * 101)
    p.server.send_headers(1, [(b":status", b"200")])
    p.server.send_data(1, b"x" * 100)
    assert p.server.local_flow_control_window(1) == 0
    p.pump()
    p.client.increment_flow_control_window(50, stream_id=1)
    evs = p.pump()
    assert [(e.kind, e.sid) for e in evs] == [(c.WINDOW, 1)]
    assert p.server.local_flow_control_window(1) == 50
    p.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 200})
    evs = p.pump()
    assert evs[-1].kind == c.SETTINGS and evs[-1].window_changed
    assert p.server.local_flow_control_window(1) == 150


def test_received_data_is_given_back_once_acknowledged(engine: str) -> None:
    p = Peer(engine)
    p.client.send_headers(1, POST)
    for _ in range(4):
        p.client.send_data(1, b"x" * 10000)
    evs = p.pump()
    assert sum(e.flow for e in evs) == 40000
    assert p.client.local_flow_control_window(1) == 65535 - 40000
    p.pump()
    assert p.client.local_flow_control_window(1) == 65535 - 40000  # nothing given back by itself
    p.server.acknowledge_received_data(40000, 1)
    p.pump()
    assert p.client.local_flow_control_window(1) == 65535
    assert p.client_got(WindowUpdated)


def test_data_beyond_the_window_is_a_flow_control_error() -> None:
    p = Peer(settings=Settings(initial_window_size=100))
    p.client.send_headers(1, POST)
    p.pump()
    assert error_of(p, DataFrame(1, b"x" * 101).serialize()) == f.FLOW_CONTROL_ERROR


def test_window_overflow_is_a_flow_control_error(engine: str) -> None:
    p = Peer(engine)
    assert error_of(p, WindowUpdateFrame(0, window_increment=2**31 - 1).serialize()) == f.FLOW_CONTROL_ERROR
    p = Peer(engine)
    p.client.send_headers(1, GET, end_stream=True)
    p.pump()
    # a stream's window: a stream error (RFC 9113 §6.9.1), the connection goes on
    evs = p.raw(WindowUpdateFrame(1, window_increment=2**31 - 1).serialize())
    assert [(e.kind, e.sid, e.code) for e in evs] == [(c.RESET, 1, f.FLOW_CONTROL_ERROR)]
    assert [(type(x).__name__, x.error_code) for x in raw_frames(p.server.data_to_send())] == [
        ("RstStreamFrame", f.FLOW_CONTROL_ERROR)
    ]


def test_zero_window_increment_is_a_protocol_error() -> None:
    p = Peer()
    assert error_of(p, WindowUpdateFrame(0, window_increment=0).serialize()) == f.PROTOCOL_ERROR


# -- resets and endings --------------------------------------------------------------------------------
def test_client_reset_then_late_data_is_dropped(engine: str) -> None:
    p = Peer(engine)
    p.client.send_headers(1, POST)
    p.pump()
    p.raw(DataFrame(1, b"abc").serialize())
    evs = p.raw(RstStreamFrame(1, error_code=f.CANCEL).serialize())
    assert [(e.kind, e.sid, e.code) for e in evs] == [(c.RESET, 1, f.CANCEL)]
    assert p.raw(DataFrame(1, b"late").serialize()) == []  # the stream is closed: dropped
    with pytest.raises(c.H2Error):
        p.server.send_headers(1, [(b":status", b"200")])


def test_our_reset_reaches_the_client(engine: str) -> None:
    p = Peer(engine)
    p.client.send_headers(1, POST)
    p.pump()
    p.server.reset_stream(1, f.REFUSED_STREAM)
    p.pump()
    resets = p.client_got(StreamReset)
    assert resets and resets[0].stream_id == 1 and resets[0].error_code == f.REFUSED_STREAM
    with pytest.raises(c.H2Error):
        p.server.reset_stream(1, f.CANCEL)


def test_trailers_of_a_stream_we_reset_are_dropped() -> None:
    """The block is decoded (HPACK stays in step) and dropped: not a stream-id reuse."""
    p = Peer()
    p.client.send_headers(1, POST)
    p.pump()
    p.server.reset_stream(1, f.PROTOCOL_ERROR)
    trailers = HeadersFrame(1, p.client.encoder.encode([(b"x-t", b"1")]), flags=["END_HEADERS", "END_STREAM"])
    assert p.raw(trailers.serialize()) == []
    p.client.send_headers(3, GET, end_stream=True)
    assert kinds(p.pump()) == [c.REQUEST, c.ENDED]


def test_data_after_end_stream_is_a_stream_error() -> None:
    p = Peer()
    p.client.send_headers(1, GET, end_stream=True)
    p.pump()
    evs = p.raw(DataFrame(1, b"x").serialize())
    assert [(e.kind, e.code) for e in evs] == [(c.RESET, f.STREAM_CLOSED)]
    assert p.server.data_to_send() == f.rst_stream(1, f.STREAM_CLOSED)


def test_goaway_both_ways(engine: str) -> None:
    p = Peer(engine)
    p.client.send_headers(1, GET, end_stream=True)
    p.pump()
    evs = p.raw(GoAwayFrame(0, last_stream_id=0, error_code=f.NO_ERROR).serialize())
    assert [(e.kind, e.code) for e in evs] == [(c.GOAWAY, f.NO_ERROR)]
    if engine == "h2":
        return  # the library closes its side at the client's GOAWAY: nothing more can be sent
    # native: the streams the client's GOAWAY covers still get their responses (RFC 9113 §6.8)
    p.server.send_goaway(1, f.NO_ERROR)  # graceful: stream 1 goes on
    p.server.send_headers(1, [(b":status", b"204")], end_stream=True)
    p.server.close_connection(f.ENHANCE_YOUR_CALM)
    frames = raw_frames(p.server.data_to_send())
    assert [type(x).__name__ for x in frames] == ["GoAwayFrame", "HeadersFrame", "GoAwayFrame"]
    assert (frames[0].last_stream_id, frames[0].error_code) == (1, f.NO_ERROR)
    assert (frames[2].last_stream_id, frames[2].error_code) == (1, f.ENHANCE_YOUR_CALM)


def test_ping_is_acknowledged_and_unknown_frames_reported(engine: str) -> None:
    p = Peer(engine)
    evs = p.raw(PingFrame(0, opaque_data=b"12345678").serialize())
    assert kinds(evs) == [c.PING]
    assert p.server.data_to_send().endswith(f.ping_ack(b"12345678"))
    evs = p.raw(f.header(3, 0xFA, 0, 0) + b"abc")
    assert kinds(evs) == [c.UNKNOWN]


def test_priority_is_validated_and_ignored() -> None:
    p = Peer()
    assert p.raw(PriorityFrame(3, depends_on=1, stream_weight=10).serialize()) == []
    assert error_of(p, PriorityFrame(5, depends_on=5).serialize()) == f.PROTOCOL_ERROR
    p = Peer()
    assert error_of(p, f.header(4, f.PRIORITY, 0, 3) + b"\0\0\0\1") == f.FRAME_SIZE_ERROR


# -- connection errors (RFC 9113) ---------------------------------------------------------------------
@pytest.mark.parametrize("engine_name", ENGINES)
def test_bad_preface(engine_name: str) -> None:
    s = make_engine(Settings(engine=engine_name))
    s.initiate_connection()
    with pytest.raises(c.H2Error) as info:
        s.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert info.value.code == f.PROTOCOL_ERROR


def test_first_frame_must_be_settings() -> None:
    s = c.ServerConn(Settings(), *_codec())  # type: ignore[arg-type]
    with pytest.raises(c.H2Error) as info:
        s.receive_data(f.PREFACE + PingFrame(0, opaque_data=b"12345678").serialize())
    assert info.value.code == f.PROTOCOL_ERROR


def test_stream_ids(engine: str) -> None:
    p = Peer(engine)
    p.client.send_headers(3, GET, end_stream=True)
    p.pump()
    block = p.client.encoder.encode(GET)
    reuse = error_of(p, HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    assert reuse == f.PROTOCOL_ERROR
    p = Peer(engine)
    even = HeadersFrame(2, Encoder().encode(GET), flags=["END_HEADERS"])
    assert error_of(p, even.serialize()) == f.PROTOCOL_ERROR
    p = Peer(engine)
    assert error_of(p, DataFrame(1, b"x").serialize()) == f.PROTOCOL_ERROR  # idle stream


def test_frames_over_our_max_frame_size(engine: str) -> None:
    p = Peer(engine)
    p.client.send_headers(1, POST)
    p.pump()
    assert error_of(p, DataFrame(1, b"x" * 16385).serialize()) == f.FRAME_SIZE_ERROR


def test_push_promise_from_a_client() -> None:
    p = Peer()
    p.client.send_headers(1, GET, end_stream=True)
    p.pump()
    frame = PushPromiseFrame(1, promised_stream_id=2, data=Encoder().encode(GET), flags=["END_HEADERS"])
    assert error_of(p, frame.serialize()) == f.PROTOCOL_ERROR


def test_header_block_interrupted(engine: str) -> None:
    p = Peer(engine)
    data = HeadersFrame(1, Encoder().encode(GET)[:3]).serialize()
    data += PingFrame(0, opaque_data=b"x" * 8).serialize()
    assert error_of(p, data) == f.PROTOCOL_ERROR


def test_continuation_flood(engine: str) -> None:
    p = Peer(engine)
    first = HeadersFrame(1, Encoder().encode(GET)).serialize()
    flood = b"".join(ContinuationFrame(1, b"\0" * 100).serialize() for _ in range(200))
    assert error_of(p, first + flood) == f.PROTOCOL_ERROR  # too many frames
    p = Peer()
    flood = b"".join(ContinuationFrame(1, b"\0" * 16000).serialize() for _ in range(10))
    assert error_of(p, first + flood) == f.ENHANCE_YOUR_CALM  # too many bytes


def test_hpack_bomb_and_bad_hpack() -> None:
    p = Peer(settings=Settings(max_head=1000, max_headers=5))
    big = [*GET, *[(b"x-%d" % i, b"v" * 500) for i in range(20)]]
    bomb = HeadersFrame(1, Encoder().encode(big), flags=["END_HEADERS"])
    assert error_of(p, bomb.serialize()) == f.ENHANCE_YOUR_CALM
    p = Peer()
    bad = HeadersFrame(1, b"\xff\xff\xff\xff", flags=["END_HEADERS"])
    assert error_of(p, bad.serialize()) == f.COMPRESSION_ERROR


def test_trailers_must_end_the_stream() -> None:
    p = Peer()
    p.client.send_headers(1, POST)
    p.pump()
    frame = HeadersFrame(1, p.client.encoder.encode([(b"x-t", b"1")]), flags=["END_HEADERS"])
    assert error_of(p, frame.serialize()) == f.PROTOCOL_ERROR


def test_content_length_against_the_data(engine: str) -> None:
    p = Peer(engine)
    p.client.send_headers(1, [*POST, (b"content-length", b"3")])
    p.pump()
    assert error_of(p, DataFrame(1, b"abcd", flags=["END_STREAM"]).serialize()) == f.PROTOCOL_ERROR
    p = Peer(engine)
    p.client.send_headers(1, [*POST, (b"content-length", b"3")])
    p.pump()
    assert error_of(p, DataFrame(1, b"ab", flags=["END_STREAM"]).serialize()) == f.PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("setting", "value", "code"),
    [
        (f.ENABLE_PUSH, 2, f.PROTOCOL_ERROR),
        (f.INITIAL_WINDOW_SIZE, 2**31, f.FLOW_CONTROL_ERROR),
        (f.MAX_FRAME_SIZE, 100, f.PROTOCOL_ERROR),
        (f.MAX_FRAME_SIZE, 2**24, f.PROTOCOL_ERROR),
    ],
)
def test_bad_settings(engine: str, setting: int, value: int, code: int) -> None:
    p = Peer(engine)
    assert error_of(p, f.settings([(setting, value)])) == code


def test_frame_sizes_fixed_by_their_type() -> None:
    for frame in (
        f.header(7, f.PING, 0, 0) + b"x" * 7,
        f.header(3, f.RST_STREAM, 0, 1) + b"xxx",
        f.header(5, f.WINDOW_UPDATE, 0, 0) + b"xxxxx",
        f.header(5, f.SETTINGS, 0, 0) + b"xxxxx",
        f.header(6, f.SETTINGS, f.ACK, 0) + b"xxxxxx",
    ):
        p = Peer()
        assert error_of(p, frame) == f.FRAME_SIZE_ERROR, frame


def test_lib_engine_is_the_library() -> None:
    assert isinstance(make_engine(Settings(engine="h2")), LibConn)
    assert isinstance(make_engine(Settings(engine="native")), c.ServerConn)
    with pytest.raises(ValueError):
        make_engine(Settings(engine="nope"))


def test_headers_after_the_request_ended_is_a_stream_error(engine: str) -> None:
    """RFC 9113 §5.1, half-closed (remote): RST_STREAM STREAM_CLOSED; the connection goes on."""
    p = Peer(engine)
    p.client.send_headers(1, GET, end_stream=True)
    p.pump()
    again = HeadersFrame(1, p.client.encoder.encode(GET), flags=["END_HEADERS", "END_STREAM"])
    evs = p.raw(again.serialize())
    assert [(e.kind, e.sid, e.code) for e in evs] == [(c.RESET, 1, f.STREAM_CLOSED)]
    assert [(type(x).__name__, x.error_code) for x in raw_frames(p.server.data_to_send())] == [
        ("RstStreamFrame", f.STREAM_CLOSED)
    ]


# -- tune.h2-engine ------------------------------------------------------------------------------------
def test_keyword_selects_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "p.cfg"
    for value in ENGINES:
        path.write_text(f"global\n    tune.h2-engine {value}\nbackend b\n    server s 127.0.0.1:1\n")
        assert load([str(path)]).global_.h2_engine == value
    path.write_text("global\n    tune.h2-engine nghttp2\nbackend b\n    server s 127.0.0.1:1\n")
    with pytest.raises(ConfigError, match="unknown HTTP/2 engine"):
        load([str(path)])


def test_default_engine_is_native_only_where_compiled() -> None:
    """``native`` by default where ``proxy.h2.conn`` is built and not run from source; ``h2`` else."""
    code = (
        "from proxy.config.model import DEFAULT_H2_ENGINE as d\n"
        "from proxy.h2 import Settings\n"
        "print(d, Settings().engine)\n"
    )
    root = Path(__file__).resolve().parent.parent
    built = any(p.name.startswith("conn.") and p.suffix == ".so" for p in (root / "proxy" / "h2").iterdir())
    for pure, expected in (("1", "h2"), ("", "native" if built else "h2")):
        env = {**os.environ, "POOLPROXY_PURE": pure}
        argv = [sys.executable, "-c", code]
        run = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=True, timeout=60)
        out = run.stdout
        assert out.split() == [expected, expected], pure


def test_responses_are_encoded_as_literals_without_a_table(engine: str) -> None:
    """No Huffman coding and no dynamic table: a value is sent as its bytes, every time."""
    p = Peer(engine)
    p.client.send_headers(1, GET, end_stream=True)
    p.client.send_headers(3, GET, end_stream=True)
    p.pump()
    for sid in (1, 3):
        p.server.send_headers(sid, [(b":status", b"200"), (b"x-value", b"plain-value-42")], end_stream=True)
        assert b"x-value" in (out := p.server.data_to_send()) and b"plain-value-42" in out


def test_random_frames_raise_nothing_but_h2error() -> None:
    """Bounded fuzzing (fixed seed): frames of every type with random flags, ids and payloads after a
    valid start; the engine answers with events or an ``H2Error``, never another exception."""
    import random

    rnd = random.Random(9113)
    block = Encoder().encode(GET)
    for _ in range(300):
        p = Peer()
        p.client.send_headers(1, POST)
        p.pump()
        try:
            for _ in range(20):
                kind = rnd.choice([*range(10), 0xFA])
                noise = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 24)))
                payload = rnd.choice([b"", block, noise])
                sid = rnd.choice([0, 1, 2, 3, 5, 2**31 - 1])
                frame = f.header(len(payload), kind, rnd.randrange(256), sid)
                p.raw(frame + payload)
                p.server.data_to_send()
        except c.H2Error:
            pass


def test_both_engines_use_the_compiled_hpack_codec_without_huffman() -> None:
    """``new_codec``: proxy.h2.hpack_codec's classes (not the ``hpack`` library's), literals only."""
    native = make_engine(Settings(engine="native"))
    lib = make_engine(Settings(engine="h2"))
    assert isinstance(native, c.ServerConn) and isinstance(lib, LibConn)
    for enc, dec in ((native.encoder, native.decoder), (lib.conn.encoder, lib.conn.decoder)):
        assert isinstance(enc, CodecEncoder) and isinstance(dec, CodecDecoder)
        assert enc.huffman is False and enc.header_table_size == 0 and dec.header_tuples is False
