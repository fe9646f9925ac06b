"""``proxy.h2.hpack_codec`` and ``proxy.h2.huffman``: RFC 7541's examples, the ``hpack`` library as a
differential oracle both ways, every decoding error, and ``install`` into an ``h2`` connection.

The RFC examples are data (tests/data/hpack/rfc7541_appendix_c.json, cross-checked against the
``hpack`` library's decoder here too, so a typo in the data cannot pass silently).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from proxy.h2 import huffman
from proxy.h2.hpack_codec import STATIC_TABLE, Decoder, Encoder, install

DATA = json.loads((Path(__file__).parent / "data" / "hpack" / "rfc7541_appendix_c.json").read_text())
SEQUENCES = DATA["sequences"]

Field = tuple[bytes, bytes]


def _fields(pairs: list[list[str]]) -> list[Field]:
    return [(n.encode(), v.encode()) for n, v in pairs]


def _newest_first(table: list[Field]) -> list[Field]:
    return table[::-1]


def _lib_table(codec: hpack.Encoder | hpack.Decoder) -> list[Field]:
    return list(codec.header_table.dynamic_entries)


def _encoder(table_size: int = 4096) -> Encoder:
    enc = Encoder()
    enc.restore((), table_size, ())  # agreed size: no update on the wire
    return enc


def _decoder(table_size: int = 4096) -> Decoder:
    dec = Decoder()
    dec.header_table_size = table_size
    return dec


# --- RFC 7541 Appendix C ----------------------------------------------------------------------------


@pytest.mark.parametrize("seq", SEQUENCES, ids=[s["name"] for s in SEQUENCES])
def test_rfc_examples_decode(seq: dict[str, Any]) -> None:
    ours = _decoder(seq["table_size"])
    lib = hpack.Decoder()
    lib.header_table_size = seq["table_size"]
    for block in seq["blocks"]:
        data = bytes.fromhex(block["hex"])
        assert ours.decode(data, raw=True) == _fields(block["headers"])
        assert lib.decode(data, raw=True) == _fields(block["headers"])  # the data itself is right
        assert _newest_first(ours.entries) == _fields(block["table"])
        assert _lib_table(lib) == _fields(block["table"])


@pytest.mark.parametrize("seq", SEQUENCES, ids=[s["name"] for s in SEQUENCES])
def test_rfc_examples_encode(seq: dict[str, Any]) -> None:
    """Without Huffman, the RFC's bytes exactly. With it, our encoder codes a string only when that
    is shorter (the RFC codes "307", 3 bytes either way): the same list and table, no more bytes."""
    enc = _encoder(seq["table_size"])
    lib = hpack.Decoder()
    lib.header_table_size = seq["table_size"]
    for block in seq["blocks"]:
        ours = enc.encode(_fields(block["headers"]), huffman=seq["huffman"])
        rfc = bytes.fromhex(block["hex"])
        if seq["huffman"]:
            assert len(ours) <= len(rfc)
        else:
            assert ours == rfc
        assert lib.decode(ours, raw=True) == _fields(block["headers"])
        assert _newest_first(enc.entries) == _fields(block["table"]) == _lib_table(lib)


def test_rfc_unindexed_literals() -> None:
    for case in DATA["unindexed"]:
        dec = Decoder()
        (field,) = dec.decode(bytes.fromhex(case["hex"]), raw=True)
        assert field == tuple(n.encode() for n in case["header"])
        assert isinstance(field, NeverIndexedHeaderTuple) == case["never_indexed"]
        assert dec.entries == []


def test_rfc_integer_examples() -> None:
    # C.1: 10 and 1337 on a 5-bit prefix (as a table size update), 42 on 8 bits (a string length).
    dec = Decoder()
    dec.decode(bytes([0x20 | 10]))
    assert dec.header_table_size == 10
    dec.decode(bytes([0x3F, 0x9A, 0x0A]))
    assert dec.header_table_size == 1337
    enc = Encoder()
    enc.header_table_size = 1337
    assert enc.encode([]) == bytes([0x3F, 0x9A, 0x0A])


# --- Huffman ------------------------------------------------------------------------------------------


def test_huffman_table_is_rfc_appendix_b() -> None:
    assert [c for c, _ in huffman.CODES] == list(REQUEST_CODES)
    assert [n for _, n in huffman.CODES] == list(REQUEST_CODES_LENGTH)


def test_huffman_round_trip_against_the_library() -> None:
    rng = random.Random(7541)
    lib = hpack.huffman.HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    for n in range(600):
        data = bytes(rng.randrange(256) for _ in range(n % 70))
        coded = huffman.encode(data)
        assert coded == lib.encode(data)
        assert huffman.encoded_length(data) == len(coded)
        assert huffman.decode(coded) == data
    every = bytes(range(256))
    assert huffman.decode(huffman.encode(every)) == every


@pytest.mark.parametrize(
    ("coded", "why"),
    [
        (b"\xff\xff\xff\xfc", "EOS"),  # EOS's 30 one bits (then padding)
        (b"\x1f\xff", "padding"),  # 'a' (00011) then 11 one bits: padding longer than 7 bits
        (b"\x18", "padding"),  # 'a' then 000: padding that is not EOS's prefix
        (b"\xfe", "padding"),  # 7 one bits then 0: not a whole code, not padding
        (b"\x00", "padding"),  # '0' (00000) then 000
    ],
)
def test_huffman_invalid_strings(coded: bytes, why: str) -> None:
    with pytest.raises(HPACKDecodingError, match=why):
        huffman.decode(coded)


def test_huffman_padding_limits() -> None:
    assert huffman.decode(b"\x1f") == b"a"  # 'a' + 3 one bits
    assert huffman.decode(b"") == b""
    # '0' (00000) + 'a' (00011) + 6 one bits = 2 bytes, 6 bits of padding: valid
    assert huffman.decode(bytes([0b00000000, 0b11111111])) == b"0a"


# --- differential tests against the hpack library ---------------------------------------------------

_NAMES = [b":method", b":path", b":authority", b"content-type", b"cookie", b"x-a", b"x-b", b"x-long-name"]
_VALUES = [b"", b"GET", b"/", b"/index.html", b"text/html", b"a" * 40, b"\x00\xff\x80", b"zz", b"v" * 300]


def _random_headers(rng: random.Random) -> list[Any]:
    out: list[Any] = []
    for _ in range(rng.randrange(12)):
        name = rng.choice([*_NAMES, bytes(rng.randrange(97, 123) for _ in range(rng.randrange(1, 9)))])
        value = rng.choice([*_VALUES, bytes(rng.randrange(256) for _ in range(rng.randrange(20)))])
        kind = rng.randrange(5)
        if kind == 0:
            out.append(NeverIndexedHeaderTuple(name, value))
        elif kind == 1:
            out.append(HeaderTuple(name, value))
        elif kind == 2:
            out.append((name, value, rng.random() < 0.3))
        else:
            out.append((name, value))
    if rng.random() < 0.3 and out:  # the same field again, often: the table's hits
        out.append(out[0])
    return out


def _plain(headers: list[Any]) -> list[Field]:
    return [(bytes(h[0]), bytes(h[1])) for h in headers]


def _sensitive(headers: list[Any]) -> list[bool]:
    return [(not h.indexable) if isinstance(h, HeaderTuple) else (len(h) > 2 and bool(h[2])) for h in headers]


@pytest.mark.parametrize("seed", range(6))
def test_differential_with_the_library(seed: int) -> None:
    """Our encoder -> the library's decoder, the library's encoder -> our decoder, on one random
    connection each (table size changes, evictions, sensitive fields): the same lists, the same
    tables, and never-indexed fields stay never-indexed."""
    rng = random.Random(seed)
    ours_enc, lib_dec = Encoder(), hpack.Decoder()
    lib_enc, ours_dec = hpack.Encoder(), Decoder()
    for _ in range(120):
        if rng.random() < 0.1:
            size = rng.choice([0, 64, 100, 256, 4096])
            ours_enc.header_table_size = size
            lib_enc.header_table_size = size
        headers = _random_headers(rng)
        huff = rng.random() < 0.7
        got = lib_dec.decode(ours_enc.encode(headers, huffman=huff), raw=True)
        assert got == _plain(headers)
        assert [isinstance(h, NeverIndexedHeaderTuple) for h in got] == _sensitive(headers)
        assert _lib_table(lib_dec) == _newest_first(ours_enc.entries)
        assert lib_dec.header_table_size == ours_enc.header_table_size

        got = ours_dec.decode(lib_enc.encode(headers, huffman=huff), raw=True)
        assert got == _plain(headers)
        # (the library sends a sensitive field already in its table as an index)
        never = [isinstance(h, NeverIndexedHeaderTuple) for h in got]
        assert all(s for n, s in zip(never, _sensitive(headers), strict=True) if n)
        assert _newest_first(ours_dec.entries) == _lib_table(lib_enc)
        assert ours_dec.header_table_size == lib_enc.header_table_size


def test_encoder_table_index_matches_the_library_after_evictions() -> None:
    """Not only the same decoded lists: the same bytes as the library when both Huffman-code
    nothing (same table choices, same indexes after evictions)."""
    rng = random.Random(99)
    ours, lib = _encoder(256), hpack.Encoder()
    lib.header_table_size = 256
    lib.encode([])  # the library owes an update for the size set: flush it
    for _ in range(200):
        headers = [(rng.choice(_NAMES), rng.choice(_VALUES[:8])) for _ in range(rng.randrange(1, 6))]
        assert ours.encode(headers, huffman=False) == lib.encode(headers, huffman=False)


def test_text_headers_and_input_types() -> None:
    enc, dec = Encoder(), Decoder()
    block = enc.encode([(":method", "GET"), ("x-ü", "é"), (b"x-b", "mixed")])
    assert dec.decode(block) == [(":method", "GET"), ("x-ü", "é"), ("x-b", "mixed")]
    assert all(type(h) is HeaderTuple for h in Decoder().decode(enc.encode([("a", "b")])))
    # a dict: pseudo-headers first
    lib = hpack.Decoder()
    got = list(lib.decode(Encoder().encode({"x-z": "1", ":path": "/", ":method": "GET"}), raw=True))
    assert [n for n, _ in got[:2]] == [b":path", b":method"] and got[2] == (b"x-z", b"1")
    with pytest.raises(HPACKDecodingError, match="UTF-8"):
        Decoder().decode(Encoder().encode([(b"x", b"\xff")]))


def test_header_tuples_switch() -> None:
    dec = Decoder()
    dec.header_tuples = False
    got = dec.decode(Encoder().encode([(b"a", b"b"), NeverIndexedHeaderTuple(b"c", b"d")]), raw=True)
    assert type(got[0]) is tuple and type(got[1]) is NeverIndexedHeaderTuple


def test_encoder_huffman_only_when_shorter_and_when_allowed() -> None:
    enc = Encoder()
    assert enc.encode([(b"x-aaaa", b"aaaaaaaa")], huffman=True)[1] & 0x80  # Huffman name
    assert not enc.encode([(b"x-b", b"\xff\xfe")], huffman=True)[-3] & 0x80  # longer coded: literal
    enc.huffman = False
    block = enc.encode([(b"x-c", b"aaaaaaaa")], huffman=True)
    assert b"x-c" in block and b"aaaaaaaa" in block


def test_table_size_updates_smallest_then_last() -> None:
    enc, dec = Encoder(), Decoder()
    enc.header_table_size = 0
    enc.header_table_size = 100
    enc.header_table_size = 200
    block = enc.encode([(b"a", b"b")])
    assert block[:3] == bytes([0x20, 0x3F, 200 - 31])  # 0, then 200 (5-bit prefix)
    dec.decode(block)
    assert dec.header_table_size == 200
    assert enc.encode([])[:1] != b"\x20"  # owed once
    enc.header_table_size = 200  # unchanged: nothing owed
    assert enc.encode([]) == b""


def test_table_state_round_trip() -> None:
    enc, dec = Encoder(), Decoder()
    for i in range(50):
        dec.decode(enc.encode([(b"x-%d" % (i % 7), b"v" * i)]))
    enc.header_table_size = 1000
    e2, d2 = Encoder(), Decoder()
    e2.restore(*enc.table_state())
    d2.restore(*dec.table_state())
    headers = [(b"x-3", b"v" * 45), (b"x-new", b"w")]
    assert e2.encode(headers) == enc.encode(headers)
    assert d2.decode(e2.encode(headers)) == dec.decode(enc.encode(headers))
    with pytest.raises(ValueError, match="fit"):
        Encoder().restore([(b"a", b"b" * 100)], 64, ())


def _int(first: int, prefix_bits: int, value: int) -> bytes:
    """RFC 7541 5.1, written out here independently of the codec."""
    limit = 2**prefix_bits - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


# --- decoding errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "error"),
    [
        (b"\x80", InvalidTableIndex),  # index 0
        (b"\xbe", InvalidTableIndex),  # 62: the dynamic table is empty
        (b"\xff\x80\x80\x80\x80\x01", HPACKDecodingError),  # integer past 4 continuation bytes
        (b"\xff", HPACKDecodingError),  # truncated integer
        (b"\xff\x80", HPACKDecodingError),  # truncated integer, continuation bit set
        (b"\x40", HPACKDecodingError),  # literal name: no length
        (b"\x40\x05ab", HPACKDecodingError),  # literal name shorter than its length
        (b"\x41\x05ab", HPACKDecodingError),  # value shorter than its length
        (b"\x41", HPACKDecodingError),  # value missing
        (b"\x40\x81\xff\x01v", HPACKDecodingError),  # Huffman name with EOS-prefix padding > 7 bits
        (b"\x40\x84\xff\xff\xff\xff\x01v", HPACKDecodingError),  # EOS inside a Huffman string
        (b"\x3f\xe2\x1f", InvalidTableSizeError),  # update to 4096 + 1 > allowed
        (b"\x82\x20", HPACKDecodingError),  # update after a field
        (b"\x7f\xff\x03\x01v", InvalidTableIndex),  # literal whose name's index is out of range
    ],
)
def test_decoding_errors(block: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        Decoder().decode(block)
    with pytest.raises(HPACKDecodingError):  # the library agrees it is an error (every one is one)
        hpack.Decoder().decode(block)


def test_table_left_above_the_allowed_size() -> None:
    dec = Decoder()
    dec.max_allowed_table_size = 100  # we announced less; the peer never sent the update
    with pytest.raises(InvalidTableSizeError):
        dec.decode(b"\x82")
    dec = Decoder()
    dec.max_allowed_table_size = 100
    assert dec.decode(b"\x3f\x45\x82") == [(":method", "GET")]  # update to 100 first: fine


def test_header_list_too_large() -> None:
    enc = Encoder()
    headers = [(b"x-big", b"v" * 100)] * 10
    block = enc.encode(headers)
    dec = Decoder(max_header_list_size=10 * (32 + 5 + 100))
    assert len(dec.decode(block)) == 10
    dec = Decoder(max_header_list_size=10 * (32 + 5 + 100) - 1)
    with pytest.raises(OversizedHeaderListError):
        dec.decode(Encoder().encode(headers))


def test_hpack_bomb_is_refused_before_expanding() -> None:
    """One 4000-byte entry, then thousands of 1-byte references to it: refused once the list passes
    the limit, not after building it."""
    block = b"\x40\x01x" + _int(0, 7, 4000) + b"v" * 4000 + b"\xbe" * 5000
    dec = Decoder(max_header_list_size=65536)
    with pytest.raises(OversizedHeaderListError):
        dec.decode(block, raw=True)


def test_huge_string_refused_before_decoding() -> None:
    dec = Decoder(max_header_list_size=1000)
    with pytest.raises(OversizedHeaderListError, match="string"):
        dec.decode(b"\x00\x01x" + _int(0, 7, 4000) + b"v" * 4000)  # a 4000-byte literal value
    with pytest.raises(OversizedHeaderListError, match="string"):
        dec.decode(b"\x00\x01x" + _int(0x80, 7, 4000) + b"\x00" * 4000)  # Huffman: >= 1066 bytes


# --- install into an h2 connection --------------------------------------------------------------------


_GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]


def _pair() -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    return client, server


def _exchange(a: h2.connection.H2Connection, b: h2.connection.H2Connection) -> list[h2.events.Event]:
    return b.receive_data(a.data_to_send())


def test_install_keeps_limits_and_talks_to_the_library() -> None:
    client, server = _pair()
    server.decoder.max_header_list_size = 1234
    install(client)
    install(server, huffman=False)
    enc, dec = server.encoder, server.decoder
    assert isinstance(client.encoder, Encoder) and isinstance(enc, Encoder) and isinstance(dec, Decoder)
    assert dec.max_header_list_size == 1234
    assert dec.header_tuples is False and enc.huffman is False
    client.initiate_connection()
    server.initiate_connection()
    _exchange(client, server)
    _exchange(server, client)
    _exchange(client, server)
    request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/p")]
    for sid in (1, 3, 5):
        client.send_headers(sid, [*request, (b"x-n", b"%d" % sid)], end_stream=True)
        (ev, *_) = _exchange(client, server)
        assert isinstance(ev, h2.events.RequestReceived)
        assert list(ev.headers or ()) == [*request, (b"x-n", b"%d" % sid)]
        server.send_headers(sid, [(b":status", b"200"), (b"server", b"x")], end_stream=True)
        (ev, *_) = _exchange(server, client)
        assert isinstance(ev, h2.events.ResponseReceived)
        assert list(ev.headers or ()) == [(b":status", b"200"), (b"server", b"x")]
    install(server)  # again: only the Huffman switch changes
    assert server.encoder is enc and enc.huffman is True


def test_install_refuses_a_used_connection() -> None:
    client, _ = _pair()
    client.initiate_connection()
    client.send_headers(1, _GET)
    with pytest.raises(ValueError, match="before"):
        install(client)


@pytest.mark.parametrize("ours", [True, False], ids=["ours", "library"])
def test_h2_answers_our_errors_as_the_library_s(ours: bool) -> None:
    """A bad header block ends the connection with the same GOAWAY whichever codec decoded it."""
    client, server = _pair()
    if ours:
        install(server)
    client.initiate_connection()
    server.initiate_connection()
    _exchange(client, server)
    server.data_to_send()
    client.send_headers(1, _GET)
    wire = bytearray(client.data_to_send())
    # the HEADERS frame is the last one: its first field becomes index 0
    wire[len(wire) - _last_frame_length(bytes(wire))] = 0x80
    with pytest.raises(h2.exceptions.ProtocolError):
        server.receive_data(bytes(wire))
    goaway = server.data_to_send()
    assert goaway[3] == 0x7 and goaway[-4:] == b"\x00\x00\x00\x01"  # GOAWAY PROTOCOL_ERROR


def _last_frame_length(wire: bytes) -> int:
    pos = 0
    last = 0
    while pos < len(wire):
        length = int.from_bytes(wire[pos : pos + 3], "big")
        last = length
        pos += 9 + length
    return last


def test_static_table_is_rfc_appendix_a() -> None:
    assert STATIC_TABLE == hpack.table.HeaderTable.STATIC_TABLE
