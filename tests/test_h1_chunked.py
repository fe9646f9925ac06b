"""The chunk scanners of ``proxy.h1.bodies``: ``proxy._chunked.scan`` (C) and ``scan_chunks_python``.

Both run every case below and must return exactly the same thing; random bodies, random chunk
lines and mutated requests then compare them with each other, with ``_CHUNK_LINE`` (the grammar
the C parser reimplements) and at the level of a whole request parser. Last, how the scanner is
chosen (``POOLPROXY_CHUNKED``), in fresh interpreters.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.h1 import ProtocolError, bodies, engine
from proxy.h1.bodies import CHUNK_SCANNERS, ChunkScanner
from proxy.h1.grammar import _CHUNK_LINE
from proxy.message import Data, EndOfMessage, Event, RequestHead

ROOT = Path(__file__).resolve().parent.parent
SIZE, DATA, CRLF = bodies._SIZE, bodies._DATA, bodies._CRLF
MAX = 16384
HEAD = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def require(name: str) -> ChunkScanner:
    """The scanner ``name``; a missing C extension skips the test only where it was left out on
    purpose (``POOLPROXY_NO_EXT``), and fails it otherwise."""
    if name not in CHUNK_SCANNERS:
        if os.environ.get("POOLPROXY_NO_EXT", "") not in ("", "0"):
            pytest.skip("proxy._chunked deliberately not built (POOLPROXY_NO_EXT)")
        pytest.fail("proxy._chunked is not built: `python3 setup.py build_ext --inplace`")
    return CHUNK_SCANNERS[name]


@pytest.fixture(params=["c", "python"])
def scanner(request: pytest.FixtureRequest) -> ChunkScanner:
    return require(request.param)


def both() -> tuple[ChunkScanner, ChunkScanner]:
    return require("c"), require("python")


# --- Cases: (buf, pos, state, remaining, max_line) -> (data, pos, state, remaining) --------------

CASES: list[tuple[str, tuple[bytes, int, int, int, int], tuple[bytes, int, int, int]]] = [
    ("empty", (b"", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("at-end", (b"5\r\n", 3, DATA, 5, MAX), (b"", 3, DATA, 5)),
    ("one-chunk-then-end", (b"5\r\nhello\r\n", 0, SIZE, 0, MAX), (b"hello", 10, SIZE, 0)),
    ("joined-stops-at-last", (b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 0, SIZE, 0, MAX), (b"abcde", 15, SIZE, 0)),
    ("bws-after-size", (b"3 \t \r\nabc\r\n", 0, SIZE, 0, MAX), (b"abc", 11, SIZE, 0)),
    (
        "hex-cases",
        (b"a\r\n0123456789\r\nB\r\nabcdefghijk\r\n", 0, SIZE, 0, MAX),
        (b"0123456789abcdefghijk", 31, SIZE, 0),
    ),
    ("15-digits", (b"000000000000003\r\nabc\r\n", 0, SIZE, 0, MAX), (b"abc", 22, SIZE, 0)),
    ("16-digits-stop", (b"0000000000000003\r\nabc\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("ext-token", (b"3;a\r\nabc\r\n", 0, SIZE, 0, MAX), (b"abc", 10, SIZE, 0)),
    ("ext-value", (b"3;a=b;c=d\r\nabc\r\n", 0, SIZE, 0, MAX), (b"abc", 16, SIZE, 0)),
    ("ext-bws", (b"3 ; a = b ;c\t\r\nabc\r\n", 0, SIZE, 0, MAX), (b"abc", 20, SIZE, 0)),
    ("ext-quoted", (b'3;a="x \\" ;=y"\r\nabc\r\n', 0, SIZE, 0, MAX), (b"abc", 21, SIZE, 0)),
    ("ext-quoted-obs-text", (b'3;a="\xe9\\\xe9"\r\nabc\r\n', 0, SIZE, 0, MAX), (b"abc", 16, SIZE, 0)),
    ("ext-empty-name-stop", (b"3;=b\r\nabc\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("ext-empty-value-stop", (b"3;a=\r\nabc\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("ext-open-quote-stop", (b'3;a="b\r\nabc\r\n', 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("ext-two-tokens-stop", (b"3;a b\r\nabc\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("ext-ctl-stop", (b"3;a=b\x00\r\nabc\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("ext-quoted-ctl-stop", (b'3;a="\x01"\r\nabc\r\n', 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("last-chunk-ext-stop", (b"1\r\nx\r\n0;a=b\r\n\r\n", 0, SIZE, 0, MAX), (b"x", 6, SIZE, 0)),
    ("prefix-0x-stop", (b"0x5\r\nhello\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("sign-stop", (b"+5\r\nhello\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("leading-space-stop", (b" 5\r\nhello\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("empty-line-stop", (b"\r\nhello\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("bare-lf-stop", (b"5\nhello\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("bare-cr-stop", (b"5\rhello\r\n", 0, SIZE, 0, MAX), (b"", 0, SIZE, 0)),
    ("line-cut-stop", (b"2\r\nab\r\n1f", 0, SIZE, 0, MAX), (b"ab", 7, SIZE, 0)),
    ("line-cut-at-cr", (b"2\r\nab\r\n1f\r", 0, SIZE, 0, MAX), (b"ab", 7, SIZE, 0)),
    ("data-cut", (b"5\r\nhel", 0, SIZE, 0, MAX), (b"hel", 6, DATA, 2)),
    ("data-then-crlf-cut", (b"5\r\nhello\r", 0, SIZE, 0, MAX), (b"hello", 8, CRLF, 0)),
    ("data-then-garbage", (b"5\r\nhelloXX", 0, SIZE, 0, MAX), (b"hello", 8, CRLF, 0)),
    ("data-then-lf", (b"5\r\nhello\n0\r\n", 0, SIZE, 0, MAX), (b"hello", 8, CRLF, 0)),
    ("from-data", (b"xxlo\r\n1\r\n!\r\n", 2, DATA, 2, MAX), (b"lo!", 12, SIZE, 0)),
    ("from-crlf", (b"\r\n1\r\n!\r\n", 0, CRLF, 0, MAX), (b"!", 8, SIZE, 0)),
    ("from-crlf-wrong", (b"\n\r1\r\n!\r\n", 0, CRLF, 0, MAX), (b"", 0, CRLF, 0)),
    ("zero-remaining-data", (b"\r\n", 0, DATA, 0, MAX), (b"", 2, SIZE, 0)),
    ("data-bytes-anything", (b"4\r\n\r\n0\n\r\n", 0, SIZE, 0, MAX), (b"\r\n0\n", 9, SIZE, 0)),
    ("big-size-cut", (b"fffffffffffffff\r\nab", 0, SIZE, 0, MAX), (b"ab", 19, DATA, 0xFFFFFFFFFFFFFFF - 2)),
    # The line, CRLF included, must end within max_line bytes of its start.
    ("max-line-exact", (b"5   \r\nhello\r\n", 0, SIZE, 0, 6), (b"hello", 13, SIZE, 0)),
    ("max-line-over", (b"5    \r\nhello\r\n", 0, SIZE, 0, 6), (b"", 0, SIZE, 0)),
    ("max-line-next", (b"1\r\nx\r\n1    \r\ny\r\n", 0, SIZE, 0, 6), (b"x", 6, SIZE, 0)),
    ("max-line-zero", (b"1\r\nx\r\n", 0, SIZE, 0, 0), (b"", 0, SIZE, 0)),
]


@pytest.mark.parametrize(("args", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_scan_cases(scanner: ChunkScanner, args: tuple[bytes, int, int, int, int], want: object) -> None:
    assert scanner(*args) == want


def test_scan_many_one_byte_chunks(scanner: ChunkScanner) -> None:
    body = bytes(range(256)) * 40
    wire = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body))) + b"0\r\n\r\n"
    assert scanner(wire, 0, SIZE, 0, MAX) == (body, len(wire) - 5, SIZE, 0)


def test_scan_accepts_other_buffers(scanner: ChunkScanner) -> None:
    wire = b"3\r\nabc\r\n2;x\r\nde\r\n"
    for buf in (wire, bytearray(wire)):
        assert scanner(buf, 0, SIZE, 0, MAX) == (b"abcde", len(wire), SIZE, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((b"abc", 4, SIZE, 0, MAX), "pos 4 out of range"),
        ((b"abc", -1, SIZE, 0, MAX), "pos -1 out of range"),
        ((b"abc", 0, 3, 0, MAX), "invalid scan state 3"),
        ((b"abc", 0, -1, 0, MAX), "invalid scan state -1"),
        ((b"abc", 0, DATA, -1, MAX), "remaining out of range"),
        ((b"abc", 0, DATA, 1 << 63, MAX), "remaining out of range"),
        ((b"abc", 0, SIZE, 0, -1), "max_line must not be negative"),
    ],
)
def test_scan_rejects_bad_arguments(
    scanner: ChunkScanner, args: tuple[bytes, int, int, int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        scanner(*args)


def test_c_module_constants_match() -> None:
    require("c")
    from proxy import _chunked

    assert (_chunked.SIZE, _chunked.DATA, _chunked.CRLF) == (SIZE, DATA, CRLF)


# --- Random: the two scanners, and the C line grammar against _CHUNK_LINE -------------------------

LINE_ALPHABET = [
    *(bytes([b]) for b in b'0123456789abcdefABCDEFgG;= \t"\\\r\n\x00\x7f\x80\xffxz-!~,'),
    b"\r\n",
    b";a=b",
    b'"q"',
    b"5",
]


BWS = [b"", b"", b" ", b"\t", b" \t "]
QUOTED_PIECES = [b"a", b" ", b"\t", b";", b"=", b"\x80", b"\xff", b'\\"', b"\\\\", b"\\a", b"\\\x7f", b"\\\t"]


def random_extensions(rng: random.Random) -> bytes:
    """One to three well-formed chunk extensions (each with BWS in random places)."""
    out = []
    for _ in range(rng.randint(1, 3)):
        ext = rng.choice(BWS) + b";" + rng.choice(BWS) + rng.choice([b"a", b"name", b"x-1!~"])
        if rng.random() < 0.6:
            if rng.random() < 0.5:
                value = rng.choice([b"v", b"1", b"tok-en"])
            else:
                value = b'"' + b"".join(rng.choice(QUOTED_PIECES) for _ in range(rng.randint(0, 4))) + b'"'
            ext += rng.choice(BWS) + b"=" + rng.choice(BWS) + value
        out.append(ext)
    return b"".join(out) + rng.choice(BWS)


def random_line(rng: random.Random) -> bytes:
    """A chunk line, valid or nearly: hex digits, then well-formed extensions with maybe a byte
    changed, or a random walk through the bytes that matter to the grammar."""
    digits = "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(rng.choice([0, 1, 1, 2, 15, 16])))
    if rng.random() < 0.5:
        tail = b"".join(rng.choice(LINE_ALPHABET) for _ in range(rng.randint(0, 8)))
    else:
        tail = random_extensions(rng)
        if rng.random() < 0.5:
            i = rng.randrange(len(tail))
            tail = tail[:i] + rng.choice(LINE_ALPHABET) + tail[i + 1 :]
    return digits.encode() + tail


def test_random_lines_c_accepts_exactly_chunk_line() -> None:
    """The C line parser accepts a line iff ``_CHUNK_LINE`` matches it, with the same size."""
    c_scan, py_scan = both()
    rng = random.Random(7)
    accepted = 0
    for _ in range(60000):
        line = random_line(rng)
        wire = line + b"\r\nX"
        want = py_scan(wire, 0, SIZE, 0, MAX)
        assert c_scan(wire, 0, SIZE, 0, MAX) == want, line
        end = wire.find(b"\r\n")
        m = _CHUNK_LINE.fullmatch(wire, 0, end)
        moved = want[1] != 0
        assert moved == (m is not None and int(m[1], 16) != 0), line
        accepted += moved
    assert 3000 < accepted < 57000, accepted  # both sides of the grammar were explored


def random_body(rng: random.Random) -> bytes:
    chunks = []
    for _ in range(rng.randint(0, 12)):
        size = rng.choice([1, 1, 2, 3, 16, 255, 4096])
        line = b"%x" % size
        if rng.random() < 0.2:
            line = b"0" * rng.randint(1, 3) + line
        if rng.random() < 0.3:
            line += rng.choice([b" ", b";e", b';e="v"', b" ; a=b\t", b';x="\\""'])
        data = bytes(rng.randrange(256) for _ in range(min(size, 64))) + b"d" * max(size - 64, 0)
        chunks.append(line + b"\r\n" + data + b"\r\n")
    return b"".join(chunks) + b"0\r\n\r\n"


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(out) + 1)
        op = rng.random()
        if op < 0.4:
            out[i:i] = rng.choice([b"\r", b"\n", b"\r\n", b";", b" ", b"1", b"f", b'"', b"\\", b"\x00", b"g"])
        elif op < 0.7:
            del out[i : i + rng.randint(1, 3)]
        elif i < len(out):
            out[i] = rng.randrange(256)
    return bytes(out)


def scan_all(scan: ChunkScanner, wire: bytes, cuts: list[int], max_line: int) -> list[object]:
    """Scan ``wire`` as pieces ending at ``cuts``, resuming where each scan stopped, as a decoder
    would; returns every result."""
    state, remaining, pos, results = SIZE, 0, 0, []
    for cut in [*cuts, len(wire)]:
        result = scan(wire[:cut], pos, state, remaining, max_line)
        _, pos, state, remaining = result
        results.append(result)
    return results


def test_random_bodies_both_scanners_agree() -> None:
    c_scan, py_scan = both()
    rng = random.Random(11)
    for _ in range(3000):
        wire = mutate(rng, random_body(rng))
        cuts = sorted(rng.randrange(len(wire) + 1) for _ in range(rng.randint(0, 4)))
        max_line = rng.choice([MAX, MAX, 3, 5, 8])
        assert scan_all(c_scan, wire, cuts, max_line) == scan_all(py_scan, wire, cuts, max_line), wire


# --- Through a request parser ------------------------------------------------------------------------


@pytest.fixture
def use_scanner(scanner: ChunkScanner, monkeypatch: pytest.MonkeyPatch) -> ChunkScanner:
    monkeypatch.setattr(bodies, "scan_chunks", scanner)
    return scanner


def test_chunks_read_together_make_one_data(use_scanner: ChunkScanner) -> None:
    body = b"".join(b"1\r\n%c\r\n" % c for c in b"hello world") + b"0\r\nT: v\r\n\r\n"
    for name in ("h11", "llhttp"):
        events = engine(name).request_parser().feed(HEAD + body)
        assert [type(e) for e in events] == [RequestHead, Data, EndOfMessage]
        assert events[1:] == [Data(b"hello world"), EndOfMessage([(b"T", b"v")])]


def test_each_feed_gives_at_most_one_data(use_scanner: ChunkScanner) -> None:
    body = b"".join(b"1\r\n%c\r\n" % (97 + i % 26) for i in range(5000)) + b"0\r\n\r\n"
    wire = HEAD + body
    parser = engine("llhttp").request_parser()
    got = b""
    for off in range(0, len(wire), 997):
        events = parser.feed(wire[off : off + 997])
        data = [e for e in events if isinstance(e, Data)]
        assert len(data) <= 1
        got += b"".join(d.data for d in data)
    assert got == bytes(97 + i % 26 for i in range(5000))


def test_data_before_an_error_is_not_delivered_alone(use_scanner: ChunkScanner) -> None:
    """Payload decoded in the same feed as an error goes with it: the feed raises (nothing before
    a complete message is returned), exactly as when each chunk was its own event."""
    parser = engine("llhttp").request_parser()
    with pytest.raises(ProtocolError) as info:
        parser.feed(HEAD + b"1\r\na\r\n1\r\nb\r\nzz\r\n")
    assert info.value.status == 400


def outcome(wire: bytes, pieces: int, rng: random.Random) -> tuple[object, ...]:
    parser = engine("llhttp").request_parser()
    cuts = sorted(rng.randrange(len(wire) + 1) for _ in range(pieces))
    events: list[Event] = []
    try:
        for start, stop in zip([0, *cuts], [*cuts, len(wire)], strict=True):
            events += parser.feed(wire[start:stop])
        events += parser.feed(b"")
        events += parser.feed_eof()
    except ProtocolError as exc:
        return ("error", exc.status, str(exc))
    return ("ok", events)


def test_mutated_requests_same_outcome_with_either_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same events, same cuts, same error (status *and* message) with the C and the Python scanner."""
    c_scan, py_scan = both()
    rng = random.Random(5)
    accepted = 0
    for n in range(1500):
        wire = HEAD + mutate(rng, random_body(rng)) + (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" if n % 3 else b"")
        seed, pieces = rng.random(), rng.randint(0, 5)
        results = []
        for scan in (c_scan, py_scan):
            monkeypatch.setattr(bodies, "scan_chunks", scan)
            results.append(outcome(wire, pieces, random.Random(seed)))
        assert results[0] == results[1], wire
        accepted += results[0][0] == "ok"
    assert 150 < accepted < 1350, accepted


# --- Selection ---------------------------------------------------------------------------------------


def backend_in_child(value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != bodies.CHUNK_ENV_VAR}
    if value is not None:
        env[bodies.CHUNK_ENV_VAR] = value
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    code = "from proxy.h1 import bodies; print(bodies.CHUNK_BACKEND, bodies.scan_chunks.__module__)"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("value", [None, "", "auto"])
def test_default_prefers_c(value: str | None) -> None:
    want = "c proxy._chunked" if "c" in CHUNK_SCANNERS else "python proxy.h1.bodies"
    result = backend_in_child(value)
    assert result.stdout.strip() == want, result.stderr


def test_forced_python() -> None:
    result = backend_in_child("python")
    assert result.stdout.strip() == "python proxy.h1.bodies", result.stderr


def test_forced_c() -> None:
    result = backend_in_child("c")
    if "c" in CHUNK_SCANNERS:
        assert result.stdout.strip() == "c proxy._chunked", result.stderr
    else:
        assert result.returncode != 0 and "ImportError" in result.stderr


def test_unknown_choice_fails_at_import() -> None:
    result = backend_in_child("fast")
    assert result.returncode != 0
    assert "POOLPROXY_CHUNKED must be auto, c or python, not 'fast'" in result.stderr
