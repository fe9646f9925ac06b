"""``proxy.h2_handover``: an idle HTTP/2 client connection's state, dumped after real exchanges
(HPACK-indexed headers both ways, request and response bodies, SETTINGS changes), restored, and
continued on a new stream that the real ``h2`` server on the other end decodes correctly.

The server is the ``h2`` library's server side, fed the bytes the client writes; nothing is faked
but the wire (bytes are passed by hand)."""

from __future__ import annotations

import marshal
import os
import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hpack.exceptions import InvalidTableIndex

from proxy.h2 import hpack_codec
from proxy.h2_handover import (
    MAX_STATE,
    VERSION,
    BadState,
    Extra,
    NotIdle,
    check_idle,
    decoder_state,
    dump,
    encoder_state,
    load,
    read_fd,
    to_memfd,
)

REQ = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"origin.test"), (b":path", b"/a")]
CONFIG = h2.config.H2Configuration(client_side=True, header_encoding=None)
CUSTOM = [(b"x-tenant", b"tenant-0123456789"), (b"x-trace-context", b"trace=abcdef;span=42")]
RESP = [(b":status", b"200"), (b"x-served-by", b"origin-node-7"), (b"x-cache-key", b"k" * 40)]


class Pair:
    """A client ``H2Connection`` (the proxy's side, with the proxy's HPACK codec unless ``codec``
    is "library") and a server one (the ``h2`` library's, all of it), talking through ``pump``."""

    def __init__(self, codec: str = "ours") -> None:
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        if codec == "ours":
            hpack_codec.install(self.client)
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.client.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100_000,
            },
        )
        self.client.initiate_connection()
        self.server.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 7}
        )
        self.server.initiate_connection()
        self.server_events: list[h2.events.Event] = []
        self.client_events: list[h2.events.Event] = []
        self.pump()

    def pump(self) -> None:
        for _ in range(50):
            out = self.client.data_to_send()
            if out:
                self.server_events.extend(self.server.receive_data(out))
            back = self.server.data_to_send()
            if back:
                self.client_events.extend(self.client.receive_data(back))
            if not out and not back:
                return
        raise AssertionError("never quiet")

    def exchange(self, body: bytes = b"payload" * 100, resp_body: bytes = b"r" * 3000) -> tuple[Any, Any]:
        """One request (custom headers, a body) and its response (custom headers, a body), acked."""
        self.server_events.clear()
        self.client_events.clear()
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, REQ + CUSTOM)
        self.client.send_data(sid, body, end_stream=True)
        self.pump()
        got = next(e for e in self.server_events if isinstance(e, h2.events.RequestReceived))
        for e in self.server_events:
            if isinstance(e, h2.events.DataReceived):
                self.server.acknowledge_received_data(e.flow_controlled_length, sid)
        self.server.send_headers(sid, RESP)
        self.server.send_data(sid, resp_body, end_stream=True)
        self.pump()
        resp = next(e for e in self.client_events if isinstance(e, h2.events.ResponseReceived))
        for e in self.client_events:
            if isinstance(e, h2.events.DataReceived):
                self.client.acknowledge_received_data(e.flow_controlled_length, sid)
        self.pump()
        return got, resp


@pytest.mark.parametrize("codec", ["ours", "library"])
def test_an_idle_connection_continues_after_a_round_trip_through_bytes(codec: str) -> None:
    """From either HPACK codec (the proxy's, or the library's a connection made before it had), the
    restored connection has the proxy's, holding the same tables."""
    pair = Pair(codec)
    for _ in range(3):
        pair.exchange()
    before = pair.client
    assert len(encoder_state(before.encoder)[0]) >= 2  # our custom headers are indexed
    assert len(decoder_state(before.decoder)[0]) >= 2  # and the server's
    data = dump(before, Extra(opened=3, requests=3, got_settings=True))
    restored, extra = load(data, CONFIG)
    assert extra == Extra(3, 3, True)
    assert restored is not before
    assert isinstance(restored.encoder, hpack_codec.Encoder)
    assert isinstance(restored.decoder, hpack_codec.Decoder)
    # the state that must survive, field by field
    assert encoder_state(restored.encoder) == encoder_state(before.encoder)
    assert decoder_state(restored.decoder) == decoder_state(before.decoder)
    assert restored.decoder.max_header_list_size == before.decoder.max_header_list_size
    assert restored.decoder.max_allowed_table_size == before.decoder.max_allowed_table_size
    assert restored.encoder.header_table_size == before.encoder.header_table_size
    assert restored.decoder.header_table_size == before.decoder.header_table_size
    assert dict(restored.remote_settings) == dict(before.remote_settings)
    assert dict(restored.local_settings) == dict(before.local_settings)
    assert restored.remote_settings.max_concurrent_streams == 7
    assert restored.outbound_flow_control_window == before.outbound_flow_control_window
    assert restored.inbound_flow_control_window == before.inbound_flow_control_window
    assert restored.highest_outbound_stream_id == before.highest_outbound_stream_id == 5
    assert restored.get_next_available_stream_id() == 7

    # The restored object replaces the original (which is never used again): a new stream's
    # headers are sent as references to the encoder's dynamic table, and the server decodes them.
    pair.client = restored
    got, resp = pair.exchange(body=b"after")
    assert got.stream_id == 7
    assert list(got.headers) == REQ + CUSTOM
    assert list(resp.headers)[:3] == RESP  # the server's indexed fields decode on our side
    assert sum(e.data == b"after" for e in pair.server_events if isinstance(e, h2.events.DataReceived)) == 1


def test_the_headers_really_depend_on_the_transferred_tables() -> None:
    """What the test above checks is not vacuous: the same stream sent by a connection whose tables
    are empty (a fresh ``H2Connection`` on the same wire) does not decode to the same headers at the
    server, and the server's indexed response does not decode on such a fresh one."""
    pair = Pair()
    pair.exchange()
    restored, _ = load(dump(pair.client, Extra(1, 1, True)), CONFIG)
    sid = restored.get_next_available_stream_id()
    restored.send_headers(sid, REQ + CUSTOM, end_stream=True)
    wire = restored.data_to_send()
    fresh = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    fresh.initiate_connection()
    fresh.data_to_send()
    fresh.highest_outbound_stream_id = pair.client.highest_outbound_stream_id
    fresh.send_headers(sid, REQ + CUSTOM, end_stream=True)
    assert len(wire) < len(fresh.data_to_send())  # indexed: shorter than literal fields
    # the server's next response, encoded against the table the restored decoder holds
    events = pair.server.receive_data(wire)
    (req,) = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert list(req.headers) == REQ + CUSTOM
    pair.server.send_headers(sid, RESP, end_stream=True)
    back = pair.server.data_to_send()
    (resp,) = [e for e in restored.receive_data(back) if isinstance(e, h2.events.ResponseReceived)]
    assert list(resp.headers)[:3] == RESP
    empty = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    with pytest.raises(InvalidTableIndex):  # an index the empty table lacks
        empty.decoder.decode(back[9:])


def test_only_an_idle_connection_travels() -> None:
    pair = Pair()
    pair.exchange()
    c = pair.client
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, REQ, end_stream=False)
    with pytest.raises(NotIdle, match="stream"):
        check_idle(c)  # a stream open (and its bytes not sent)
    pair = Pair()
    pair.exchange()
    pair.client.ping(b"12345678")
    with pytest.raises(NotIdle, match="not sent"):
        dump(pair.client, Extra(1, 1, True))
    pair = Pair()
    pair.exchange()
    pair.server.ping(b"12345678")
    half = pair.server.data_to_send()
    pair.client.receive_data(half[:5])  # a partial frame received
    with pytest.raises(NotIdle, match="partial"):
        dump(pair.client, Extra(1, 1, True))
    pair = Pair()
    pair.client.close_connection()
    pair.client.data_to_send()
    with pytest.raises(NotIdle, match="CLOSED"):
        dump(pair.client, Extra(0, 0, True))


def test_load_refuses_what_dump_did_not_write() -> None:
    good = dump(Pair().client, Extra(0, 0, True))
    for bad in (b"", b"PPH2", b"XXXX" + good[4:], good[:-1], good[:4] + b"\x09\x00" + good[6:]):
        with pytest.raises(BadState):
            load(bad, CONFIG)
    bad_tables = (1, 0, 0, ((), 4096, ()), (), 0, 0, {}, {}, (), {}, (), 0, 0, 0)  # a decoder state of ()
    for shape in (None, (1, 2, 3), (0,) * 15, bad_tables):
        body = marshal.dumps(shape)
        with pytest.raises(BadState, match="not a connection"):
            load(struct.pack("<4sHI", b"PPH2", VERSION, len(body)) + body, CONFIG)
    wrong = bytearray(good)
    wrong[4] = 1  # an older version
    with pytest.raises(BadState, match="v1"):
        load(bytes(wrong), CONFIG)


def test_memfd_round_trip_reads_from_offset_zero() -> None:
    data = dump(Pair().client, Extra(0, 0, True))
    assert len(data) < MAX_STATE
    fd = to_memfd(data)
    try:
        dup = os.dup(fd)  # a duplicate shares the file offset: at the end after the write
        try:
            assert read_fd(dup) == data
            assert read_fd(dup) == data
        finally:
            os.close(dup)
    finally:
        os.close(fd)
