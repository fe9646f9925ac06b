"""HTTP/1 serialization: heads are rebuilt from the model, framing is the caller's, never the peer's."""

from __future__ import annotations

import os

import pytest

from proxy.h1 import ENGINES, ProtocolError, bodies, engine, writer
from proxy.message import Data, EndOfMessage, Event, Framing, RequestHead, ResponseHead


def parse_request(data: bytes) -> RequestHead:
    head = engine("llhttp").request_parser().feed(data)[0]
    assert isinstance(head, RequestHead)
    return head


def parse_response(data: bytes, method: bytes = b"GET") -> ResponseHead:
    parser = engine("llhttp").response_parser()
    parser.expect(method)
    head = parser.feed(data)[0]
    assert isinstance(head, ResponseHead)
    return head


def test_request_head_drops_hop_by_hop_and_nominated() -> None:
    head = parse_request(
        b"POST /x?y HTTP/1.0\r\nHost: a\r\nConnection: keep-alive, X-Secret, Host, Content-Length\r\n"
        b"X-Secret: s\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: gzip\r\nUpgrade: foo\r\n"
        b"Content-Length: 3\r\nX-Keep: k\r\n\r\nabc"
    )
    out = writer.request_head(head, body=Framing.LENGTH, content_length=3, keep_alive=True)
    assert out == b"POST /x?y HTTP/1.1\r\nHost: a\r\nX-Keep: k\r\nContent-Length: 3\r\n\r\n"


def test_nomination_never_drops_framing_or_host() -> None:
    """Regression guard (matrix A11): `Connection: Host, Content-Length` must not delete framing."""
    head = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host, content-length, x\r\nX: 1\r\n\r\n")
    out = writer.request_head(head, body=Framing.NONE, content_length=None, keep_alive=True)
    assert out == b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def test_request_head_framing_add_drop_close() -> None:
    head = parse_request(
        b"PUT /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Drop: d\r\nX: 1\r\n\r\n"
    )
    out = writer.request_head(
        head,
        body=Framing.CHUNKED,
        content_length=None,
        keep_alive=False,
        add=[(b"X-Forwarded-For", b"10.0.0.1")],
        drop=frozenset({b"x-drop"}),
    )
    assert out == (
        b"PUT /u HTTP/1.1\r\nHost: a\r\nX: 1\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )


def test_request_head_reframes_collapsed_content_length() -> None:
    head = parse_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n")
    out = writer.request_head(head, body=head.body, content_length=head.content_length, keep_alive=True)
    assert out.count(b"Content-Length") == 1
    assert out.endswith(b"Content-Length: 5\r\n\r\n")


def test_request_head_upgrade() -> None:
    head = parse_request(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n"
        b"Sec-WebSocket-Key: k\r\n\r\n"
    )
    out = writer.request_head(head, body=Framing.NONE, content_length=None, keep_alive=True)
    assert out == (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nUpgrade: WebSocket\r\n"
        b"Connection: upgrade\r\n\r\n"
    )


def test_request_head_http11_unless_http10_without_host() -> None:
    # HTTP/1.0 without Host stays HTTP/1.0, as HAProxy forwards it (as HTTP/1.1 it was sent without
    # Host, which an HTTP/1.1 server must refuse; an empty Host is refused by nginx)
    head = parse_request(b"GET / HTTP/1.0\r\n\r\n")
    out = writer.request_head(head, body=Framing.NONE, content_length=None, keep_alive=False)
    assert out == b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n"
    out = writer.request_head(head, body=Framing.NONE, content_length=None, keep_alive=True)
    assert out == b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    assert writer.request_head(head, body=Framing.NONE, content_length=None, keep_alive=True,
                               add=[(b"host", b"h")]) == b"GET / HTTP/1.1\r\nhost: h\r\n\r\n"  # fmt: skip
    head = parse_request(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
    out = writer.request_head(head, body=Framing.NONE, content_length=None, keep_alive=True)
    assert out == b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.mark.parametrize("value", [b"a\r\nX-Injected: 1", b"a\nb", b"a\rb", b"a\x00b"])
def test_injection_refused(value: bytes) -> None:
    """Regression guard: a value carrying CR/LF/NUL (e.g. from HTTP/2) must not split a line."""
    head = RequestHead(b"GET", b"/", b"1.1", [(b"Host", b"a"), (b"X", value)])
    with pytest.raises(ProtocolError) as info:
        writer.request_head(head, body=Framing.NONE, content_length=None, keep_alive=True)
    assert info.value.status == 400
    response = ResponseHead(200, b"OK", b"1.1", [(b"X", value)])
    with pytest.raises(ProtocolError) as info:
        writer.response_head(response, body=Framing.LENGTH, content_length=0, keep_alive=True)
    assert info.value.status == 502


def test_response_head_length_and_hop_by_hop() -> None:
    head = parse_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Private\r\nX-Private: p\r\n"
        b"Keep-Alive: timeout=5\r\nServer: s\r\n\r\nok"
    )
    out = writer.response_head(head, body=Framing.LENGTH, content_length=2, keep_alive=True)
    assert out == b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\n\r\n"


def test_response_head_rechunks_and_closes() -> None:
    head = parse_response(b"HTTP/1.1 404 Nope\r\nTransfer-Encoding: chunked\r\n\r\n")
    out = writer.response_head(head, body=Framing.CHUNKED, content_length=None, keep_alive=False)
    assert out == b"HTTP/1.1 404 Nope\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"


def test_response_head_http10_client() -> None:
    head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    out = writer.response_head(head, body=Framing.LENGTH, content_length=0, keep_alive=True, version=b"1.0")
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
    with pytest.raises(ValueError):
        writer.response_head(head, body=Framing.CHUNKED, content_length=None, keep_alive=True, version=b"1.0")


def test_response_head_bodyless() -> None:
    head = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", b"HEAD")
    out = writer.response_head(head, body=head.body, content_length=head.content_length, keep_alive=True)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
    no_content = ResponseHead(204, b"", b"1.1", [(b"Content-Length", b"3")])
    out = writer.response_head(no_content, body=Framing.NONE, content_length=3, keep_alive=True)
    assert out == b"HTTP/1.1 204 No Content\r\n\r\n"
    interim = ResponseHead(100, b"Continue", b"1.1", [])
    assert writer.response_head(interim, body=Framing.NONE, content_length=None, keep_alive=True) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )


def test_response_head_101_keeps_upgrade() -> None:
    head = parse_response(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: x\r\n\r\n"
    )
    out = writer.response_head(head, body=Framing.NONE, content_length=None, keep_alive=True)
    assert out == (
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\nUpgrade: websocket\r\n"
        b"Connection: upgrade\r\n\r\n"
    )


def test_data_and_end() -> None:
    assert writer.data(Framing.CHUNKED, b"hello") == b"5\r\nhello\r\n"
    assert writer.data(Framing.CHUNKED, b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert writer.data(Framing.CHUNKED, b"") == b""
    assert writer.data(Framing.LENGTH, b"raw") == b"raw"
    assert writer.data(Framing.CLOSE, b"") == b""
    assert writer.end(Framing.CHUNKED, []) == b"0\r\n\r\n"
    trailers = [(b"Checksum", b"1"), (b"Content-Length", b"9"), (b"Connection", b"close")]
    assert writer.end(Framing.CHUNKED, trailers) == b"0\r\nChecksum: 1\r\n\r\n"
    assert writer.end(Framing.LENGTH, trailers) == b""


@pytest.mark.parametrize("scanner", ["c", "python"])
def test_rechunked_body_round_trips(scanner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunked body re-framed by the writer parses back to the same bytes and trailers."""
    if scanner not in bodies.CHUNK_SCANNERS:
        if os.environ.get("POOLPROXY_NO_EXT", "") not in ("", "0"):
            pytest.skip("proxy._chunked deliberately not built (POOLPROXY_NO_EXT)")
        pytest.fail("proxy._chunked is not built: `python3 setup.py build_ext --inplace`")
    monkeypatch.setattr(bodies, "scan_chunks", bodies.CHUNK_SCANNERS[scanner])
    body = [b"a" * 100, b"", b"bc", b"\r\n0\r\n\r\n"]
    wire = b"".join(writer.data(Framing.CHUNKED, c) for c in body) + writer.end(
        Framing.CHUNKED, [(b"T", b"v")]
    )
    for name in sorted(ENGINES):
        parser = engine(name).request_parser()
        events: list[Event] = parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        events += parser.feed(wire)
        assert b"".join(e.data for e in events if isinstance(e, Data)) == b"".join(body)
        assert events[-1] == EndOfMessage([(b"T", b"v")])


def test_simple_response_error_default_body() -> None:
    out = writer.simple_response(503)
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 503 Service Unavailable",
        b"Cache-Control: no-cache",
        b"Content-Length: %d" % len(body),
        b"Content-Type: text/html",
        b"Connection: close",
    ]
    assert body == writer.error_body(503)
    assert body.startswith(b"<html><body><h1>503 Service Unavailable</h1>\n")


def test_simple_response_given_body_and_keep_alive() -> None:
    out = writer.simple_response(
        200, body=b"hi", content_type="text/plain", keep_alive=True, extra=[(b"X-Served-By", b"proxy")]
    )
    assert out == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nX-Served-By: proxy\r\n\r\nhi"
    )
    out = writer.simple_response(404, keep_alive=True, default_body=False, version=b"1.0")
    assert out == b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"


@pytest.mark.parametrize("status", [400, 403, 404, 405, 408, 413, 414, 431, 500, 501, 502, 503, 504])
def test_error_bodies(status: int) -> None:
    body = writer.error_body(status)
    assert body.startswith(b"<html><body><h1>%d %s</h1>\n" % (status, writer.reason(status)))
    assert body.endswith(b"\n</body></html>\n")
    assert writer.reason(status)
    response = writer.simple_response(status)
    parser = engine("h11").response_parser()
    parser.expect(b"GET")
    events = parser.feed(response)
    assert isinstance(events[0], ResponseHead) and events[0].status == status
    assert b"".join(e.data for e in events if isinstance(e, Data)) == body


def test_written_heads_parse_back_identically() -> None:
    """What the writer emits is accepted by both engines, with the same headers."""
    head = parse_request(
        b"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nCookie: a=b; c=d\r\nX-Empty:\r\n\r\n"
    )
    out = writer.request_head(head, body=Framing.NONE, content_length=None, keep_alive=True)
    for name in sorted(ENGINES):
        again = engine(name).request_parser().feed(out)[0]
        assert again == head


# --- the compiled field writer (ext/h1head.c ``fields``) and its Python fallback ------------------
_FIELD_CASES: list[list[tuple[bytes, bytes]]] = [
    [],
    [(b"Host", b"a"), (b"X-One", b"1"), (b"x-two", b"")],
    [(b"Host", b"a"), (b"Content-Length", b"3"), (b"TRANSFER-ENCODING", b"chunked"), (b"X", b"y")],
    [(b"Keep-Alive", b"5"), (b"Proxy-Connection", b"x"), (b"TE", b"gzip"), (b"Trailer", b"t"),
     (b"Upgrade", b"ws"), (b"Proxy-Authenticate", b"a"), (b"Proxy-Authorization", b"b"), (b"Z", b"z")],
    [(b"Host", b"a"), (b"Connection", b"close, X-Secret"), (b"X-Secret", b"s"), (b"X-Keep", b"k")],
    [(b"Host", b"a"), (b"cOnNeCtIoN", b"keep-alive"), (b"close", b"c")],
    [(b"Host", b"a"), (b"X-Bad", b"1\r\nInjected: yes")],
    [(b"Host", b"a"), (b"X-Bad", b"nul\x00")],
    [(b"Host", b"a"), (b"X-Drop", b"d"), (b"x-DROP", b"e"), (b"X-Other", b"o")],
]  # fmt: skip


@pytest.mark.parametrize("headers", _FIELD_CASES)
@pytest.mark.parametrize("drop", [frozenset(), frozenset({b"x-drop"})])
def test_compiled_fields_write_what_the_python_loop_writes(
    monkeypatch: pytest.MonkeyPatch, headers: list[tuple[bytes, bytes]], drop: frozenset[bytes]
) -> None:
    """``_copy_fields`` with the compiled ``fields`` and without it (the fallback where the extension
    is not built): the same request and response heads, or the same error."""
    pytest.importorskip("proxy._h1head")
    assert writer._fields is not None

    def both() -> tuple[object, object]:
        req = RequestHead(b"GET", b"/", b"1.1", list(headers))
        resp = ResponseHead(200, b"OK", b"1.1", list(headers), Framing.LENGTH, 0)
        out: list[object] = []
        for make in (
            lambda: writer.request_head(
                req, body=Framing.NONE, content_length=None, keep_alive=True, drop=drop
            ),
            lambda: writer.response_head(resp, body=Framing.LENGTH, content_length=0, keep_alive=False),
        ):
            try:
                out.append(make())
            except ProtocolError as exc:
                out.append(("error", exc.status))
        return out[0], out[1]

    compiled = both()
    monkeypatch.setattr(writer, "_fields", None)
    assert compiled == both()
