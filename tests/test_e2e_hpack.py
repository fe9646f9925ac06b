"""End-to-end: header blocks through the proxy's HPACK codec (``proxy.h2.hpack_codec``) both ways.

An HTTP/2 client (the ``h2`` library on a raw socket, with the ``hpack`` library's codec) talks h2c to
the proxy, whose server is the HTTP/2 counting origin (``tools.origin --h2``, the ``h2`` library too).
Every request block is decoded by the proxy's decoder (the client's encoder indexes and Huffman-codes,
and its table fills and evicts), encoded again by the proxy's encoder toward the origin (dynamic
table, Huffman), decoded by the origin and echoed back in the body; every response block comes from
the origin's encoder (its table too) through the proxy's decoder, then the proxy's encoder (no table,
no Huffman) to the client. Sixty requests, one client connection, one server connection: a header
decoded wrong anywhere, or a table out of step, shows as a wrong echo or a broken connection.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded
from harness import MakeProxy, Origin, free_port, proxy_config

pytestmark = pytest.mark.e2e

REQUESTS = 60


@pytest.fixture
def h2_origin() -> Iterator[Origin]:
    with Origin(args=["--h2"]) as origin:
        yield origin


def _request(i: int) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"origin.test"),
        (b":path", b"/echo?i=%d" % i),
        (b"x-const", b"the same value every time"),
        (b"x-var", b"value-%d" % i),
        (b"x-cycle", b"c%d" % (i % 5)),
        (b"x-long", b"L%d-" % i + b"x" * (200 + i * 37 % 900)),  # evicts the 4096-byte tables
        (b"user-agent", "hpack-e2e/1.0 (été)".encode()),  # not ASCII: raw bytes all the way
    ]


Fields = list[tuple[bytes, bytes]]


def _round_trip(sock: socket.socket, conn: H2Connection, headers: Fields) -> tuple[Fields, bytes]:
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers, end_stream=True)
    sock.sendall(conn.data_to_send())
    head: Fields = []
    body = b""
    for _ in range(1000):  # bounded: each pass reads at least one byte or fails
        data = sock.recv(65536)
        assert data, "the proxy closed the connection"
        for ev in conn.receive_data(data):
            if isinstance(ev, ResponseReceived) and ev.stream_id == sid:
                head = [(bytes(n), bytes(v)) for n, v in ev.headers or ()]
            elif isinstance(ev, DataReceived) and ev.stream_id == sid:
                body += ev.data or b""
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, StreamEnded) and ev.stream_id == sid:
                sock.sendall(conn.data_to_send())
                return head, body
        sock.sendall(conn.data_to_send())
    raise AssertionError("no end of stream")


def test_headers_cross_both_codecs_on_long_lived_connections(
    make_proxy: MakeProxy, h2_origin: Origin
) -> None:
    port = free_port()
    cfg = proxy_config(port, h2_origin.port, reuse="always", server="proto h2")
    cfg = cfg.replace(f"bind 127.0.0.1:{port}", f"bind 127.0.0.1:{port} proto h2")
    make_proxy(cfg, ports=[port])
    conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        seqs = []
        conn_ids = set()
        for i in range(REQUESTS):
            sent = _request(i)
            head, body = _round_trip(sock, conn, sent)
            assert dict(head)[b":status"] == b"200", head
            echo = json.loads(body)
            assert (echo["target"], echo["authority"]) == (f"/echo?i={i}", "origin.test")
            ours = {n for n, _ in sent if not n.startswith(b":")}
            got = [(n.encode(), v.encode()) for n, v in echo["headers"]]  # the origin decodes UTF-8
            assert [f for f in got if f[0] in ours] == [f for f in sent if f[0] in ours], i
            fields = dict(head)
            seqs.append(int(fields[b"x-req-seq"]))
            conn_ids.add(fields[b"x-conn-id"])
    assert seqs == list(range(seqs[0], seqs[0] + REQUESTS))  # one server connection, in order
    assert len(conn_ids) == 1
    stats = h2_origin.stats()
    assert stats["h2_connections"] == 1
