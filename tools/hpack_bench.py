"""HPACK encode and decode cost per header block: ``proxy.h2.hpack_codec`` next to the ``hpack`` library.

    python -m tools.hpack_bench [--blocks 200] [--repeat 5]

Each scenario is the sequence of header blocks one connection carries (``--blocks`` of them, the
``:path`` and a few values changing from one to the next, as on a real connection, so that the
dynamic table fills, hits and evicts as it does there):

- ``h2load request``: what h2load sends (the bench's client);
- ``browser request``: a browser's navigation request, cookie and client hints included;
- ``origin response``: a typical response (date, length, type, cache and server fields);
- ``frontend response``: the same response encoded as the proxy's client side does (no dynamic
  table, no Huffman: ``proxy.mux_h2``).

Encode: a fresh encoder per run encodes the sequence. Decode: the sequence as the ``hpack``
library encodes it (Huffman, incremental indexing: what nghttp2 and browsers send) is decoded by a
fresh decoder per run. The figure is the best of ``--repeat`` runs, in µs per block. Run it with
``POOLPROXY_PURE=1`` for the codec's Python source; it says which one it measured.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import time
from collections.abc import Callable, Sequence
from typing import Any

import hpack

from proxy import native

Block = list[tuple[bytes, bytes]]


def h2load_requests(n: int) -> list[Block]:
    return [
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"127.0.0.1:8443"),
            (b":path", b"/" if i % 2 else b"/index.html"),
            (b"accept-encoding", b"gzip, deflate"),
            (b"user-agent", b"h2load nghttp2/1.52.0"),
        ]
        for i in range(n)
    ]


def browser_requests(n: int) -> list[Block]:
    return [
        [
            (b":method", b"GET"),
            (b":authority", b"www.example.com"),
            (b":scheme", b"https"),
            (b":path", b"/static/app/%d/bundle.js?v=%d" % (i % 17, i)),
            (b"sec-ch-ua", b'"Chromium";v="128", "Not;A=Brand";v="24", "Google Chrome";v="128"'),
            (b"sec-ch-ua-mobile", b"?0"),
            (b"sec-ch-ua-platform", b'"Linux"'),
            (b"upgrade-insecure-requests", b"1"),
            (
                b"user-agent",
                b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                b"Chrome/128.0.0.0 Safari/537.36",
            ),
            (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"),
            (b"sec-fetch-site", b"same-origin"),
            (b"sec-fetch-mode", b"navigate"),
            (b"sec-fetch-dest", b"document"),
            (b"referer", b"https://www.example.com/page/%d" % (i % 5)),
            (b"accept-encoding", b"gzip, deflate, br, zstd"),
            (b"accept-language", b"en-US,en;q=0.9,fr;q=0.8"),
            (b"cookie", b"sid=%032x; theme=dark; consent=1" % (i // 20)),
        ]
        for i in range(n)
    ]


def responses(n: int) -> list[Block]:
    return [
        [
            (b":status", b"200"),
            (b"date", b"Tue, 01 Dec 2026 03:%02d:%02d GMT" % (i // 60 % 60, i % 60)),
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", b"%d" % (1000 + i * 7 % 5000)),
            (b"cache-control", b"private, max-age=0"),
            (b"etag", b'"%08x"' % (i * 2654435761 % 2**32)),
            (b"server", b"nginx"),
            (b"x-request-id", b"%016x" % (i * 11400714819323198485 % 2**64)),
        ]
        for i in range(n)
    ]


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def encode_run(make: Callable[[], Any], blocks: Sequence[Block], frontend: bool) -> Callable[[], object]:
    def run() -> object:
        enc = make()
        if frontend:
            enc.header_table_size = 0
        for block in blocks:
            enc.encode(block, huffman=not frontend)
        return enc

    return run


def decode_run(make: Callable[[], Any], wire: Sequence[bytes]) -> Callable[[], object]:
    def run() -> object:
        dec = make()
        for data in wire:
            dec.decode(data, raw=True)
        return dec

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.hpack_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=200, help="header blocks per connection")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best one counts")
    args = parser.parse_args(argv)
    native.install_pure_finder()
    from proxy.h2 import hpack_codec

    origin = getattr(hpack_codec, "__file__", "") or ""
    kind = "compiled" if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) else "Python source"

    def ours_decoder() -> Any:
        dec = hpack_codec.Decoder()
        dec.header_tuples = False  # as install() sets it for h2's header_encoding=None
        return dec

    n = args.blocks
    scenarios = [
        ("h2load request", h2load_requests(n), False),
        ("browser request", browser_requests(n), False),
        ("origin response", responses(n), False),
        ("frontend response", responses(n), True),
    ]
    print(f"HPACK µs per header block, best of {args.repeat} runs of {n} blocks; hpack_codec: {kind}")
    print(f"  {'scenario':<20}{'encode hpack':>14}{'ours':>9}{'x':>7}{'decode hpack':>15}{'ours':>9}{'x':>7}")
    for name, blocks, frontend in scenarios:
        e_lib = best(encode_run(hpack.Encoder, blocks, frontend), args.repeat) * 1e6 / n
        e_our = best(encode_run(hpack_codec.Encoder, blocks, frontend), args.repeat) * 1e6 / n
        peer = hpack.Encoder()
        if frontend:
            peer.header_table_size = 0
        wire = [peer.encode(b, huffman=not frontend) for b in blocks]
        d_lib = best(decode_run(hpack.Decoder, wire), args.repeat) * 1e6 / n
        d_our = best(decode_run(ours_decoder, wire), args.repeat) * 1e6 / n
        print(
            f"  {name:<20}{e_lib:>14.2f}{e_our:>9.2f}{e_lib / e_our:>7.1f}"
            f"{d_lib:>15.2f}{d_our:>9.2f}{d_lib / d_our:>7.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
