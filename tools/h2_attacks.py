"""HTTP/2 error cases and floods against a running proxy: the answer each gets, and the worker's RSS.

    python -m tools.h2_attacks --port 8080 [--host 127.0.0.1] [--pid WORKER_PID] [--repeat 20]

Each case opens one connection (h2c with prior knowledge), sends what it is named after, reads what
comes back until the proxy closes the connection or ``--timeout`` passes, and reports the first
GOAWAY's error code (or the RST_STREAM codes, or the status of a response). With ``--pid`` the worker's
RSS (``/proc/PID/status`` VmRSS) is printed after each case, every case being run ``--repeat`` times
so that a leak would show. Finally a plain request checks that the proxy still answers.

Cases (what a correct HTTP/2 server answers, RFC 9113, and what poolproxy adds):

- ``bad-preface``: an HTTP/1-looking preface on an HTTP/2-only listener, or any garbage after the
  preface's first bytes -> GOAWAY PROTOCOL_ERROR;
- ``stream-id-reuse``: a second HEADERS frame on a stream whose request ended -> RST_STREAM
  STREAM_CLOSED (a stream error, RFC 9113 §5.1: half-closed remote);
- ``stream-id-lower``: a new stream with a lower id than one already opened -> GOAWAY PROTOCOL_ERROR;
- ``oversized-headers``: a header list over ``tune.bufsize`` -> a 431 on that stream; one over twice
  what we announce (the HPACK decoded-size limit) -> GOAWAY ENHANCE_YOUR_CALM;
- ``window-overflow``: WINDOW_UPDATE past 2^31-1 -> GOAWAY FLOW_CONTROL_ERROR;
- ``rapid-reset``: 1000 streams opened and reset at once (CVE-2023-44487) -> GOAWAY ENHANCE_YOUR_CALM;
- ``continuation-flood``: a HEADERS frame followed by endless CONTINUATION frames -> GOAWAY;
- ``settings-flood`` / ``ping-flood``: 1000 SETTINGS / PING frames -> GOAWAY ENHANCE_YOUR_CALM;
- ``too-many-streams``: 1000 concurrent streams when 100 are announced -> RST_STREAM REFUSED_STREAM
  for each one beyond (a stream error), then, past the reset budget, GOAWAY ENHANCE_YOUR_CALM.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ResponseReceived
from hpack import Decoder
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"attack"), (b":path", b"/")]


def _client() -> H2Connection:
    c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    c.initiate_connection()
    return c


def _headers(c: H2Connection, sid: int, fields: list[tuple[bytes, bytes]], flags: list[str]) -> bytes:
    """A header block as HEADERS (+ CONTINUATION frames: at most 16384 bytes each)."""
    block = c.encoder.encode(fields)
    chunks = [block[i : i + 16384] for i in range(0, len(block), 16384)] or [b""]
    end_headers = "END_HEADERS" in flags
    first = [f for f in flags if f != "END_HEADERS"] + (
        ["END_HEADERS"] if end_headers and len(chunks) == 1 else []
    )
    out = [HeadersFrame(sid, chunks[0], flags=first).serialize()]
    for i, chunk in enumerate(chunks[1:], 2):
        last = end_headers and i == len(chunks)
        out.append(ContinuationFrame(sid, chunk, flags=["END_HEADERS"] if last else []).serialize())
    return b"".join(out)


def bad_preface(c: H2Connection) -> bytes:
    return b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + b"\x00" * 64


def stream_id_reuse(c: H2Connection) -> bytes:
    first = c.data_to_send() + _headers(c, 1, GET, ["END_HEADERS", "END_STREAM"])
    return first + _headers(c, 1, GET, ["END_HEADERS", "END_STREAM"])


def stream_id_lower(c: H2Connection) -> bytes:
    first = c.data_to_send() + _headers(c, 5, GET, ["END_HEADERS", "END_STREAM"])
    return first + _headers(c, 3, GET, ["END_HEADERS", "END_STREAM"])


def oversized_headers(c: H2Connection) -> bytes:
    return c.data_to_send() + _headers(c, 1, [*GET, (b"x-big", b"v" * 20000)], ["END_HEADERS", "END_STREAM"])


def hpack_bomb(c: H2Connection) -> bytes:
    fields = [*GET, *[(b"x-%d" % i, b"v" * 4000) for i in range(40)]]
    return c.data_to_send() + _headers(c, 1, fields, ["END_HEADERS", "END_STREAM"])


def window_overflow(c: H2Connection) -> bytes:
    return c.data_to_send() + WindowUpdateFrame(0, window_increment=2**31 - 1).serialize()


def rapid_reset(c: H2Connection) -> bytes:
    for _ in range(1000):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, GET, end_stream=True)
        c.reset_stream(sid, ErrorCodes.CANCEL)
    return c.data_to_send()


def continuation_flood(c: H2Connection) -> bytes:
    out = [c.data_to_send(), _headers(c, 1, GET, [])]
    out += [ContinuationFrame(1, b"\x40\x01a\x01b" * 100).serialize() for _ in range(5000)]
    return b"".join(out)


def settings_flood(c: H2Connection) -> bytes:
    return c.data_to_send() + SettingsFrame(0).serialize() * 1000


def ping_flood(c: H2Connection) -> bytes:
    return c.data_to_send() + b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(1000))


def too_many_streams(c: H2Connection) -> bytes:
    out = [c.data_to_send()]
    out += [_headers(c, 2 * i + 1, GET, ["END_HEADERS"]) for i in range(1000)]
    return b"".join(out)


# Cases answered on the stream alone (the connection stays open): the first answer is the answer.
STREAM_ERRORS = frozenset({"oversized-headers", "stream-id-reuse"})
CASES: dict[str, Callable[[H2Connection], bytes]] = {
    "bad-preface": bad_preface,
    "stream-id-reuse": stream_id_reuse,
    "stream-id-lower": stream_id_lower,
    "oversized-headers": oversized_headers,
    "hpack-bomb": hpack_bomb,
    "window-overflow": window_overflow,
    "rapid-reset": rapid_reset,
    "continuation-flood": continuation_flood,
    "settings-flood": settings_flood,
    "ping-flood": ping_flood,
    "too-many-streams": too_many_streams,
}


def _code(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


class Reader:
    """The frames the proxy sends, parsed without a state machine (ours sent raw, invalid frames)."""

    def __init__(self) -> None:
        self.buf = b""
        self.decoder = Decoder()
        self.parts: list[str] = []
        self.goaway: str | None = None
        self.statuses = 0

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            frame.parse_body(memoryview(self.buf[9 : 9 + length]))
            self.buf = self.buf[9 + length :]
            if isinstance(frame, GoAwayFrame) and self.goaway is None:
                self.goaway = f"GOAWAY {_code(frame.error_code)}"
            elif isinstance(frame, RstStreamFrame):
                self.parts.append(f"RST_STREAM {_code(frame.error_code)}")
            elif isinstance(frame, HeadersFrame):
                try:
                    fields = dict(self.decoder.decode(frame.data, raw=True))
                except Exception:
                    continue
                self.statuses += 1
                self.parts.append("status " + fields.get(b":status", b"?").decode())

    def answer(self, closed: bool) -> str:
        """What the proxy answered, in words: the GOAWAY code, else the statuses and RST codes seen."""
        parts = list(dict.fromkeys(self.parts))
        if self.goaway is not None:
            parts = [self.goaway, *[p for p in parts if p.startswith("status")]]
        if closed:
            parts.append("close")
        return ", ".join(parts) or "nothing"


def run_case(host: str, port: int, name: str, timeout: float = 5.0) -> str:
    """One case on a fresh connection: what came back."""
    client = _client()
    payload = CASES[name](client)
    reader = Reader()
    closed = False
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            closed = True  # the proxy closed while we were still sending: read what it said
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                data = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            reader.feed(data)
            if reader.goaway is not None:
                closed = _wait_close(sock, deadline)
                break
            if name in STREAM_ERRORS and reader.parts:
                break  # a stream error: the connection goes on, nothing more to wait for
    return reader.answer(closed)


def _wait_close(sock: socket.socket, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


def plain_get(host: str, port: int, timeout: float = 5.0) -> str:
    """A normal request on a new connection: the status, or what went wrong."""
    client = _client()
    client.send_headers(1, GET, end_stream=True)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(client.data_to_send())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return "closed"
            for ev in client.receive_data(data):
                if isinstance(ev, ResponseReceived):
                    return dict(ev.headers or []).get(b":status", b"?").decode()
            sock.sendall(client.data_to_send())
    return "timeout"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, help="the worker whose RSS to print")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each case (the RSS is read after them)")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("cases", nargs="*", default=list(CASES), help="which cases (default: all)")
    args = ap.parse_args(argv)
    if args.pid:
        print(f"worker RSS before: {rss_kib(args.pid)} KiB")
    print(f"| case | answer | worker RSS after (KiB, x{args.repeat}) |")
    print("|---|---|---|")
    for name in args.cases:
        answers = {run_case(args.host, args.port, name, args.timeout) for _ in range(args.repeat)}
        rss = str(rss_kib(args.pid)) if args.pid else "-"
        print(f"| {name} | {' / '.join(sorted(answers))} | {rss} |")
    status = plain_get(args.host, args.port, args.timeout)
    print(f"a plain GET afterwards: {status}")
    return 0 if status.isdigit() else 1


if __name__ == "__main__":
    sys.exit(main())
