"""The ``native`` engine's C head scanner (``proxy._h1head``, ``ext/h1head.c``), held to the Python grammar.

``reference`` below is the scanner's contract written with ``proxy.h1.grammar``'s expressions and
``proxy.h1.strict._framing_fields``: for every input (the table cases, cut and shifted; mutated heads;
random bytes) the scanner must return exactly what it returns. Then the plain-head shortcut of
``proxy.h1.engine_native`` must give the head that the shared rules give, the fast path of ``feed`` must
hand over to the shared loop correctly, and the registry, the keyword's default and the fallback where the
extension is missing must agree. (``tests/test_h1_parse.py`` runs every parser case on this engine too.)
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from proxy import h1
from proxy.config import ConfigError, kw_global, load
from proxy.config.model import DEFAULT_H1_ENGINE
from proxy.h1 import Limits, ProtocolError
from proxy.h1.grammar import _FIELD, _REQUEST_HEAD, _RESPONSE_HEAD, KNOWN_METHODS
from proxy.h1.strict import _framing_fields, request_head, response_head
from proxy.message import HOP_BY_HOP, Data, EndOfMessage, Event, Framing, Headers, RequestHead, ResponseHead

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "h1"
MAX_HEAD, MAX_HEADERS = Limits().max_head, Limits().max_headers


def native() -> ModuleType:
    """``proxy._h1head``; missing, the test is skipped only where it was left out on purpose."""
    try:
        import proxy._h1head as module
    except ImportError:
        if os.environ.get("POOLPROXY_NO_EXT", "") not in ("", "0"):
            pytest.skip("proxy._h1head deliberately not built (POOLPROXY_NO_EXT)")
        pytest.fail("proxy._h1head is not built: `python3 setup.py build_ext --inplace`")
    return module


@pytest.fixture
def c() -> ModuleType:
    return native()


# --- The reference: the scanner's contract in Python ---------------------------------------------

_SIMPLE_HOST = re.compile(rb"[-A-Za-z0-9._~!$&'()*+,;=%]*(?::[0-9]*)?")
_DIGITS = re.compile(rb"[0-9]{1,15}")


_HOP = HOP_BY_HOP - {b"transfer-encoding", b"connection"}


def plain_framing(found: dict[bytes, list[bytes]], version: bytes) -> tuple[int | None, bool, int] | None:
    """(length, chunked, connection) of a plain head, None if it is not plain (see ext/h1head.c)."""
    cl, te, conn = (found.get(n) for n in (b"content-length", b"transfer-encoding", b"connection"))
    if any(v is not None and len(v) > 1 for v in (cl, te, conn)):
        return None
    length = None
    if cl is not None:
        if _DIGITS.fullmatch(cl[0]) is None:
            return None
        length = int(cl[0])
    chunked = False
    if te is not None:
        if version != b"1.1" or cl is not None or te[0] != b"chunked":
            return None
        chunked = True
    connection = 0
    if conn is not None:
        code = {b"close": 1, b"keep-alive": 2}.get(conn[0].lower())
        if code is None:
            return None
        connection = code
    return length, chunked, connection


def plain_request(method: bytes, target: bytes, version: bytes, found: dict[bytes, list[bytes]]) -> Any:
    facts = plain_framing(found, version)
    if facts is None or method == b"CONNECT" or target[:1] != b"/" or b"expect" in found:
        return None
    hosts = found.get(b"host")
    if hosts is None:
        return facts if version == b"1.0" else None
    return facts if len(hosts) == 1 and _SIMPLE_HOST.fullmatch(hosts[0]) else None


def reference(request: bool, buf: bytes, pos: int, max_head: int, max_headers: int) -> tuple[Any, ...] | None:
    end = buf.find(b"\r\n\r\n", pos, pos + max_head)
    if end < 0:
        return None
    block = buf[pos : end + 4]
    if block.count(b"\r\n") - 2 > max_headers:
        return None
    m = (_REQUEST_HEAD if request else _RESPONSE_HEAD).fullmatch(block)
    if m is None:
        return None
    line_end = block.index(b"\r\n") + 2
    headers: Headers = [(n, v) for n, v in _FIELD.findall(block, line_end)]
    found = _framing_fields(headers)
    first: bytes | int
    if request:
        first, second = m.group(1, 2)
        if first not in KNOWN_METHODS:
            return None
        version = block[line_end - 5 : line_end - 2]
        facts = plain_request(first, second, version, found)
    else:
        version, first = block[5:8], int(block[9:12])
        second = block[13 : line_end - 2].rstrip(b" \t") if block[12:13] == b" " else b""
        facts = plain_framing(found, version)
    if facts is None:
        return (end + 4, first, second, version, headers, found, None, False, 0, None)
    # Bare: relayable unchanged (HTTP/1.1, no hop-by-hop header but a plain chunked TE; a response's
    # reason phrase non-empty with nothing stripped after it).
    bare = version == b"1.1" and not any(n.lower() in _HOP for n, _ in headers)
    if not request:
        raw_reason = block[13 : line_end - 2] if block[12:13] == b" " else b""
        bare = bare and bool(second) and raw_reason == second
    # ...relayed without its Connection line (a plain head has one at most)
    wire = re.sub(rb"\r\n[Cc][Oo][Nn][Nn][Ee][Cc][Tt][Ii][Oo][Nn]:[^\r]*", b"", block, count=1)
    return (end + 4, first, second, version, headers, None, *facts, wire if bare else None)


def scan(c: ModuleType, request: bool, buf: bytes, pos: int = 0, max_head: int = MAX_HEAD,
         max_headers: int = MAX_HEADERS) -> tuple[Any, ...] | None:  # fmt: skip
    got = (c.parse_request if request else c.parse_response)(buf, pos, max_head, max_headers)
    want = reference(request, buf, pos, max_head, max_headers)
    assert got == want, (buf, pos, max_head, max_headers)
    return got  # type: ignore[no-any-return]


def table(name: str) -> list[bytes]:
    out = []
    for case in json.loads((DATA / name).read_text()):
        raw = case["raw"]
        if not isinstance(raw, str):
            raw = "".join(p if isinstance(p, str) else p["repeat"] * p["times"] for p in raw)
        out.append(raw.encode("latin-1"))
    return out


REQUESTS = table("requests.json")
RESPONSES = table("responses.json")


# --- The scanner against the reference ------------------------------------------------------------


def test_methods_are_the_grammars(c: ModuleType) -> None:
    assert len(c.METHODS) == len(set(c.METHODS))
    assert set(c.METHODS) == KNOWN_METHODS


@pytest.mark.parametrize("request_side", [True, False], ids=["request", "response"])
def test_table_cases_cut_shifted_and_limited(c: ModuleType, request_side: bool) -> None:
    for raw in REQUESTS if request_side else RESPONSES:
        got = scan(c, request_side, raw)
        scan(c, request_side, b"xx" + raw, 2)
        scan(c, request_side, raw, 0, MAX_HEAD, 2)
        for cut in {1, len(raw) // 2, len(raw) - 1}:
            scan(c, request_side, raw[:cut])
        if got is not None:  # the limits, at their edges
            end = got[0]
            assert scan(c, request_side, raw, 0, end) is not None
            assert scan(c, request_side, raw, 0, end - 1) is None
            lines = len(got[4])
            assert scan(c, request_side, raw, 0, MAX_HEAD, lines) is not None
            assert scan(c, request_side, raw, 0, MAX_HEAD, max(lines - 1, 0)) is None or lines == 0


SEED_REQUESTS = [
    b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:18090\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    b"POST /b HTTP/1.1\r\nhost: a\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
    b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    b"GET http://a:80/x HTTP/1.0\r\nConnection: Keep-Alive\r\nUpgrade: h2c\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\nX:  \t v \t \r\nCONTENT-LENGTH: 0\r\n\r\n",
]
SEED_RESPONSES = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\ncache-control: no-cache\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    b"HTTP/1.0 404 Not Found \t\r\nConnection: keep-alive\r\nContent-Length: 12\r\n\r\n",
    b"HTTP/1.1 101 Switching\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 304\r\nETag: x\r\n\r\n",
]
PIECES = [
    *(bytes([b]) for b in b"\r\n \t:,;\x00\x01\x7f\x80\xff09aA-/#?\"'[]@=\\%\x0b\x0c~|`<>{}^"),
    b"\r\n",
    b"\r\n\r\n",
    b"Content-Length: 5\r\n",
    b"content-length:  05 \r\n",
    b"Content-Length: 5, 5\r\n",
    b"Content-Length: 1234567890123456\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"transfer-encoding: Chunked\r\n",
    b"Connection: close\r\n",
    b"connection: KEEP-ALIVE\r\n",
    b"Connection: upgrade, close\r\n",
    b"Host: b:8080\r\n",
    b"Host: [::1]\r\n",
    b"host: a b\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: websocket\r\n",
    b"HTTP/1.0",
    b"CONNECT",
    b"chunked",
    b"close",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(out) + 1)
        op = rng.random()
        if op < 0.45:
            out[i:i] = rng.choice(PIECES)
        elif op < 0.7 and len(out) > 1:
            del out[i : i + rng.randint(1, 3)]
        elif i < len(out):
            out[i : i + 1] = rng.choice(PIECES)
    return bytes(out)


@pytest.mark.parametrize("seed", range(3))
def test_mutations_match_the_reference(c: ModuleType, seed: int) -> None:
    rng = random.Random(seed)
    accepted = plain = 0
    for n in range(6000):
        request_side = bool(n % 2)
        data = mutate(rng, rng.choice(SEED_REQUESTS if request_side else SEED_RESPONSES))
        got = scan(c, request_side, data)
        if got is not None:
            accepted += 1
            plain += got[5] is None
    assert 600 < accepted < 5400 and 150 < plain < accepted, (accepted, plain)


def test_random_bytes_match_the_reference(c: ModuleType) -> None:
    rng = random.Random(7)
    alphabet = b"GETHP/1.0 \r\n:\tax\x00\x80"
    for _ in range(3000):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        scan(c, True, data)
        scan(c, False, data)
        scan(c, True, b"GET / HTTP/1.1\r\n" + data)
        scan(c, False, b"HTTP/1.1 200 OK\r\n" + data)


def test_arguments(c: ModuleType) -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    want = c.parse_request(head, 0, MAX_HEAD, MAX_HEADERS)
    assert want is not None
    assert c.parse_request(bytearray(head), 0, MAX_HEAD, MAX_HEADERS) == want
    assert c.parse_request(memoryview(head), 0, MAX_HEAD, MAX_HEADERS) == want
    assert c.parse_request(head, len(head), MAX_HEAD, MAX_HEADERS) is None
    with pytest.raises(TypeError):
        c.parse_request(head, 0, MAX_HEAD)
    with pytest.raises(TypeError):
        c.parse_response("text", 0, MAX_HEAD, MAX_HEADERS)
    for pos, max_head, max_headers in [(-1, 1, 1), (len(head) + 1, 1, 1), (0, -1, 1), (0, 1, -1)]:
        with pytest.raises(ValueError):
            c.parse_request(head, pos, max_head, max_headers)


# --- The plain-head shortcut gives what the shared rules give -------------------------------------


def outcome(build: Any, *args: Any) -> Any:
    try:
        return build(*args)
    except ProtocolError as exc:
        return ("error", exc.status)


@pytest.mark.parametrize("seed", range(2))
def test_heads_equal_the_shared_rules(c: ModuleType, seed: int) -> None:
    from proxy.h1 import engine_native

    rng = random.Random(100 + seed)
    seen = 0
    for n in range(6000):
        request_side = bool(n % 2)
        data = mutate(rng, rng.choice(SEED_REQUESTS if request_side else SEED_RESPONSES))
        got = (c.parse_request if request_side else c.parse_response)(data, 0, MAX_HEAD, MAX_HEADERS)
        if got is None:
            continue
        seen += 1
        fields = got[1:5]
        if request_side:
            assert outcome(engine_native._request, got) == outcome(request_head, *fields), data
        else:
            for method in (b"GET", b"HEAD"):
                assert outcome(engine_native._response, got, method) == outcome(
                    response_head, *fields, method
                ), data
    assert seen > 1000


# --- The fast path of feed ------------------------------------------------------------------------

GET = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
POST = b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_fast_path_hands_what_follows_to_the_loop(c: ModuleType) -> None:
    parser = h1.engine("native").request_parser()
    events = parser.feed(POST + b"hel")
    assert kinds(events) == ["RequestHead", "Data"]
    assert parser.feed(b"lo" + GET + GET[:7]) == [Data(b"lo"), EndOfMessage(), *parser_events(GET)]
    assert repr(parser).endswith("HEAD buffered=7>")
    assert kinds(parser.feed(GET[7:])) == ["RequestHead", "EndOfMessage"]
    # A zero Content-Length ends the message with its head, with no body decoder.
    events = parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert kinds(events) == ["RequestHead", "EndOfMessage"]
    assert isinstance(events[0], RequestHead) and events[0].body is Framing.LENGTH
    assert events[0].content_length == 0


def test_fast_path_whole_messages(c: ModuleType) -> None:
    """A message that is the whole of ``data`` completes inline; the state after it is the loop's."""
    parser = h1.engine("native").request_parser()
    events = parser.feed(POST + b"hello")
    assert kinds(events) == ["RequestHead", "Data", "EndOfMessage"] and events[1] == Data(b"hello")
    assert kinds(parser.feed(GET)) == ["RequestHead", "EndOfMessage"]
    assert kinds(parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")) == [
        "RequestHead",
        "EndOfMessage",
    ]
    assert parser.feed(GET) == []  # after Connection: close, ignored
    responses = h1.engine("native").response_parser()
    responses.expect(b"GET")
    responses.expect(b"GET")
    events = responses.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert kinds(events) == ["ResponseHead", "Data", "EndOfMessage"] and events[1] == Data(b"ok")
    assert kinds(responses.feed(b"HTTP/1.1 204 No Content\r\n\r\n")) == ["ResponseHead", "EndOfMessage"]
    assert responses.feed(b"H") == [] and responses.poisoned  # nothing more was expected


def parser_events(data: bytes) -> list[Event]:
    return h1.engine("native").request_parser().feed(data)


def test_fast_path_errors_as_the_general_path(c: ModuleType) -> None:
    parser = h1.engine("native").request_parser()
    with pytest.raises(ProtocolError) as info:
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")  # not plain: the rules raise
    assert info.value.status == 400
    with pytest.raises(ProtocolError):
        parser.feed(GET)  # the parser is done
    parser = h1.engine("native").request_parser()
    assert kinds(parser.feed(GET + b"GET / HTTP/1.1\r\n\r\n")) == ["RequestHead", "EndOfMessage"]
    with pytest.raises(ProtocolError) as info:
        parser.feed(b"")  # deferred behind the complete request
    assert info.value.status == 400


def test_fast_path_responses(c: ModuleType) -> None:
    parser = h1.engine("native").response_parser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\n") == []  # nothing expected: poisoned, ignored
    assert parser.poisoned
    parser = h1.engine("native").response_parser()
    for method in (b"HEAD", b"GET", b"GET"):
        parser.expect(method)
    events = parser.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    assert kinds(events) == ["ResponseHead", "EndOfMessage", "ResponseHead", "EndOfMessage"]
    assert isinstance(events[2], ResponseHead) and events[2].body is Framing.NONE
    events = parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert events[1:] == [Data(b"abc"), EndOfMessage()]
    events = parser.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
    assert isinstance(events[0], ResponseHead) and events[0].body is Framing.CLOSE
    assert events[1:] == [Data(b"until close")]
    assert parser.feed_eof() == [EndOfMessage()]
    assert not parser.poisoned


# --- Registry, keyword, fallback ------------------------------------------------------------------


def test_registered_and_the_default(c: ModuleType) -> None:
    assert "native" in h1.ENGINES
    assert h1.DEFAULT == DEFAULT_H1_ENGINE == "native"
    assert h1.engine("native").name == "native"


def test_keyword(c: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.cfg"
    path.write_text("global\n    tune.h1-engine native\nbackend b\n    server s 127.0.0.1:1\n")
    assert load([str(path)]).global_.h1_engine == "native"
    monkeypatch.setattr(kw_global, "DEFAULT_H1_ENGINE", "llhttp")  # as where the extension is missing
    with pytest.raises(ConfigError, match="native HTTP/1 engine is not built"):
        load([str(path)])


def test_without_the_extension_llhttp_is_the_default() -> None:
    """In a fresh interpreter that cannot import ``proxy._h1head``."""
    code = (
        "import sys; sys.modules['proxy._h1head'] = None\n"
        "from proxy import h1\n"
        "from proxy.config.model import DEFAULT_H1_ENGINE, Global\n"
        "print(sorted(h1.ENGINES), h1.DEFAULT, DEFAULT_H1_ENGINE, Global().h1_engine)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.split() == ["['h11',", "'llhttp']", "llhttp", "llhttp", "llhttp"]
