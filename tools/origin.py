"""A counting HTTP/1.1 origin server: the real backend of the end-to-end tests, the reuse lab and the bench.

Run it as ``python -m tools.origin --port P [--host 127.0.0.1] [--stats-port S] [--delay-ms 0]
[--idle-timeout-ms 0]``.
Port 0 picks a free port. Once every listener is bound it prints exactly one line on stdout and nothing
else afterwards (a harness may keep reading the pipe or not):

    READY <port>               without --stats-port
    READY <port> <stats_port>  with --stats-port

It is independent from the proxy's own HTTP code on purpose (h11 parses, never ``proxy.*``): a bug the
proxy and its test peer shared would go unseen.

Theory of operation
-------------------
One asyncio stream (uvloop when installed) and one ``h11.Connection`` per TCP connection; keep-alive and
pipelining are h11's. A connection idle for ``--idle-timeout-ms`` between requests is closed without a
word (the server side of the keep-alive race; 0, the default, never closes). For every request the server
first reads the whole request body (sending ``100 Continue`` when the client waits for it), then waits
``--delay-ms``, then runs the route. Bodies are streamed both ways with bounded memory: reading stops
while the stream's buffer is full, writing awaits ``drain()`` after every 64 KiB chunk. A client that
breaks the protocol gets a 4xx (or nothing) and loses its connection; it never takes the server down.

Counters (global, traffic on the main port only)
------------------------------------------------
``connections`` accepted in total, ``open`` now, ``max_open`` peak of ``open``; ``requests`` received in
total, ``active`` in progress (from the request head until the response is fully written, the tunnel ends
or the connection dies), ``max_active`` peak of ``active``. They are served as JSON on the separate stats
port (``GET /__stats``; ``GET /__reset`` zeroes the totals, sets the peaks to the current values and
answers the counters after the reset), so that reading them never disturbs what they count.
Connection ids (1, 2, 3, ...) are unique for the life of the process: a reset does not restart them.

Every response on the main port carries ``X-Conn-Id: <connection id>`` and ``X-Req-Seq: <n>`` (the n-th
request on that connection, from 1); so do the broken ones under ``/bad/`` that have a head.

Routes (by path; the query string is ignored; HEAD gets the same head without a body)
--------------------------------------------------------------------------------------
==========================  ============================================================================
``/`` and anything unknown  200, empty body, ``Content-Length: 0``
``/echo``                   200 JSON ``{method, target, http_version, headers: [[name, value], ...],
                            body_len, peer: "ip:port"}`` (header names with their received case)
``/size/<n>``               200 with ``Content-Length: n``; byte i of the body is ``i % 256``
``/chunked/<n>``            the same body with ``Transfer-Encoding: chunked`` (64 KiB chunks)
``/upload``                 200 JSON ``{bytes, sha256}`` of the request body (Content-Length or chunked)
``/ntlm``                   401 ``WWW-Authenticate: NTLM ...`` unless the request has ``Authorization:
                            NTLM ...`` and arrives on a connection that already got that 401: then 200
                            with ``X-Auth-Conn: <connection id>`` (NTLM authenticates the connection)
``/ws``                     101 WebSocket handshake (needs ``Upgrade: websocket``, ``Connection: upgrade``,
                            ``Sec-WebSocket-Key``, else 400), then raw echo of every byte until EOF
``/close``                  200 with ``Connection: close``, then close
``/delay/<ms>``             sleep, then 200 empty
``/status/<n>``             status n (200..599), empty body; 204 and 304 without Content-Length
``/bad/te-cl``              raw: ``Transfer-Encoding: chunked`` and ``Content-Length`` together, then close
``/bad/cl``                 raw: ``Content-Length: abc``, then close
``/bad/garbage``            raw: bytes that are not HTTP, then close
``/bad/close``              close (FIN) without answering
``/bad/reset``              close with RST (SO_LINGER 0) without answering
``/bad/close-on-reuse``     200 on a connection's first request; on a later one (a reused connection),
                            close without answering (the keep-alive race, made deterministic)
``/bad/hang``               never answer; keep the connection open until the client closes it
``/bad/truncated``          raw: ``Content-Length: 100`` and 10 body bytes, then close
==========================  ============================================================================
Malformed numbers in ``/size``, ``/chunked``, ``/delay``, ``/status`` and unknown ``/bad/<kind>`` get 400.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import resource
import signal
import socket
import ssl
import struct
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11

if TYPE_CHECKING:
    from h11._headers import Headers  # h11 does not export the type; only annotations use it

CHUNK = 64 * 1024
# Byte i of every generated body is i % 256; CHUNK is a multiple of 256, so each chunk is a prefix of this.
_PATTERN = bytes(range(256)) * (CHUNK // 256)
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_NTLM_CHALLENGE = b"NTLM TlRMTVNTUAACAAAA"
_MAX_DELAY_MS = 3_600_000

Header = tuple[bytes, bytes]
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class Counters:
    """The global counters; one instance per server process, mutated only from the event loop."""

    def __init__(self) -> None:
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests = 0
        self.active = 0
        self.max_active = 0
        self.h2_connections = 0  # HTTP/2 connections among ``connections`` (tools.origin_h2)
        self.h2_max_streams = 0  # the most streams at once on one HTTP/2 connection
        self._last_conn_id = 0

    def connection_opened(self) -> int:
        """Count a new connection and return its id."""
        self._last_conn_id += 1
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        return self._last_conn_id

    def connection_closed(self) -> None:
        self.open -= 1

    def request_started(self) -> None:
        self.requests += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)

    def request_finished(self) -> None:
        self.active -= 1

    def reset(self) -> None:
        """Zero the totals; the peaks restart from what is in progress now."""
        self.connections = 0
        self.requests = 0
        self.h2_connections = 0
        self.h2_max_streams = 0
        self.max_open = self.open
        self.max_active = self.active

    def snapshot(self) -> dict[str, int]:
        return {
            "connections": self.connections,
            "open": self.open,
            "max_open": self.max_open,
            "requests": self.requests,
            "active": self.active,
            "max_active": self.max_active,
            "h2_connections": self.h2_connections,
            "h2_max_streams": self.h2_max_streams,
        }


class _Closed(Exception):
    """The route decided the connection ends here (its bytes, if any, are already written)."""


class _H1:
    """One h11 server connection over an asyncio stream pair: events in, bytes out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER)

    async def next_event(self) -> Any:
        """The next h11 event, reading from the socket as needed (EOF is fed to h11 as b"")."""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(CHUNK))
                continue
            return event

    async def read_body(self, digest: Callable[[bytes], object] | None = None) -> int:
        """Consume the current request's body and return its length (sends 100 Continue if awaited)."""
        if self.h11.they_are_waiting_for_100_continue:
            self.writer.write(
                self.h11.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
                or b""
            )
        length = 0
        while True:
            event = await self.next_event()
            if type(event) is h11.Data:
                length += len(event.data)
                if digest is not None:
                    digest(event.data)
            elif type(event) is h11.EndOfMessage:
                return length
            else:  # h11 raises on a premature EOF; anything else here is a state we did not plan for.
                raise h11.RemoteProtocolError(f"unexpected {event!r} in a request body")

    async def write(self, *events: Any) -> None:
        """Serialize events, write them and wait while the transport's buffer is above its high mark."""
        out: list[bytes] = []
        for event in events:
            out.extend(self.h11.send_with_data_passthrough(event) or ())
        self.writer.writelines(out)
        await self.writer.drain()

    def reject(self, error: h11.RemoteProtocolError) -> None:
        """Answer a protocol violation with its status if a response can still start, then stop."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = error.error_status_hint
            headers = [(b"Content-Length", b"0"), (b"Connection", b"close")]
            with contextlib.suppress(h11.LocalProtocolError):
                response = h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
                self.writer.write(self.h11.send(response) or b"")
                self.writer.write(self.h11.send(h11.EndOfMessage()) or b"")

    def next_cycle(self) -> bool:
        """After a response: True if the connection can carry another request."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False


@dataclass
class Request:
    method: bytes
    target: bytes
    path: str
    arg: str  # the rest of the path after /<route>/ ("123" for /size/123), "" if none
    headers: Headers
    http_version: bytes
    body_len: int = 0
    sha256: str = ""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return bytes(value)
        return None

    def header_tokens(self, name: bytes) -> set[bytes]:
        """The comma-separated lowercase tokens of every `name` header."""
        tokens: set[bytes] = set()
        for key, value in self.headers:
            if key == name:
                tokens.update(t.strip().lower() for t in value.split(b","))
        return tokens


Handler = Callable[["OriginConnection", Request], Awaitable[None]]


@dataclass(frozen=True)
class Settings:
    delay_s: float = 0.0  # before every response on the main port
    idle_timeout_s: float = 0.0  # close a connection idle this long between requests; 0: never
    h2: bool = False  # plain connections speak HTTP/2 with prior knowledge (tools.origin_h2)
    h2_max_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS of HTTP/2 connections


@dataclass(frozen=True)
class Route:
    handler: Handler
    hash_body: bool = False


class OriginConnection(_H1):
    """A connection on the main port: counted, numbered, routed."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counters: Counters,
        settings: Settings,
    ) -> None:
        super().__init__(reader, writer)
        self.counters = counters
        self.settings = settings
        self.conn_id = counters.connection_opened()
        self.seq = 0
        self.ntlm_challenged = False

    async def serve(self) -> None:
        while True:
            event = await self._next_request()
            if type(event) is not h11.Request:  # ConnectionClosed between requests: a clean end.
                return
            self.seq += 1
            self.counters.request_started()
            try:
                await self._handle(event)
            finally:
                self.counters.request_finished()
            if not self.next_cycle():
                return

    async def _next_request(self) -> Any:
        """The next request head, or None once the connection stayed idle past --idle-timeout-ms."""
        if not self.settings.idle_timeout_s:
            return await self.next_event()
        try:
            async with asyncio.timeout(self.settings.idle_timeout_s):
                return await self.next_event()
        except TimeoutError:
            return None

    async def _handle(self, event: h11.Request) -> None:
        target = bytes(event.target)
        path = target.partition(b"?")[0].decode("latin-1")
        route, arg = _lookup(path)
        digest = hashlib.sha256() if route.hash_body else None
        request = Request(event.method, target, path, arg, event.headers, event.http_version)
        request.body_len = await self.read_body(digest.update if digest else None)
        if digest is not None:
            request.sha256 = digest.hexdigest()
        if self.settings.delay_s:
            await asyncio.sleep(self.settings.delay_s)
        await route.handler(self, request)

    def _id_headers(self) -> list[Header]:
        return [(b"X-Conn-Id", b"%d" % self.conn_id), (b"X-Req-Seq", b"%d" % self.seq)]

    async def respond(
        self, request: Request, status: int, headers: Iterable[Header] = (), body: bytes = b""
    ) -> None:
        """A complete response with a known body; HEAD, 204 and 304 get the head only."""
        head = self._id_headers()
        head.extend(headers)
        if status not in (204, 304):
            head.append((b"Content-Length", b"%d" % len(body)))
        events: list[Any] = [h11.Response(status_code=status, headers=head, reason=_REASONS.get(status, b""))]
        if body and _has_body(request, status):
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        await self.write(*events)

    async def respond_json(self, request: Request, obj: object) -> None:
        body = json.dumps(obj).encode()
        await self.respond(request, 200, [(b"Content-Type", b"application/json")], body)

    async def stream_pattern(self, request: Request, size: int, framing: Header) -> None:
        """200 with `size` pattern bytes framed by `framing`, 64 KiB per write, awaiting drain."""
        head = self._id_headers()
        head.append(framing)
        await self.write(h11.Response(status_code=200, headers=head, reason=b"OK"))
        if _has_body(request, 200):
            remaining = size
            while remaining > 0:
                chunk = _PATTERN if remaining >= CHUNK else _PATTERN[:remaining]
                remaining -= len(chunk)
                await self.write(h11.Data(data=chunk))
        await self.write(h11.EndOfMessage())

    def write_raw(self, data: bytes) -> None:
        """Bytes that bypass h11 (a deliberately broken response); the connection must end after them."""
        self.writer.write(data)
        raise _Closed


def _has_body(request: Request, status: int) -> bool:
    return request.method != b"HEAD" and status not in (204, 304)


def _parse_int(text: str, low: int, high: int) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    return value if low <= value <= high else None


# ---- routes ---------------------------------------------------------------------------------------------


async def _route_default(conn: OriginConnection, request: Request) -> None:
    await conn.respond(request, 200)


async def _route_bad_request(conn: OriginConnection, request: Request) -> None:
    await conn.respond(request, 400, [(b"Connection", b"close")])


async def _route_echo(conn: OriginConnection, request: Request) -> None:
    peer = conn.writer.get_extra_info("peername")
    await conn.respond_json(
        request,
        {
            "method": request.method.decode("latin-1"),
            "target": request.target.decode("latin-1"),
            "http_version": request.http_version.decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw_items()],
            "body_len": request.body_len,
            "peer": f"{peer[0]}:{peer[1]}" if peer else "",
        },
    )


async def _route_size(conn: OriginConnection, request: Request) -> None:
    size = _parse_int(request.arg, 0, 1 << 50)
    if size is None:
        return await _route_bad_request(conn, request)
    await conn.stream_pattern(request, size, (b"Content-Length", b"%d" % size))


async def _route_chunked(conn: OriginConnection, request: Request) -> None:
    size = _parse_int(request.arg, 0, 1 << 50)
    if size is None:
        return await _route_bad_request(conn, request)
    await conn.stream_pattern(request, size, (b"Transfer-Encoding", b"chunked"))


async def _route_upload(conn: OriginConnection, request: Request) -> None:
    await conn.respond_json(request, {"bytes": request.body_len, "sha256": request.sha256})


async def _route_ntlm(conn: OriginConnection, request: Request) -> None:
    auth = request.header(b"authorization") or b""
    if auth[:5].lower() == b"ntlm " and conn.ntlm_challenged:
        await conn.respond(request, 200, [(b"X-Auth-Conn", b"%d" % conn.conn_id)])
        return
    conn.ntlm_challenged = True
    await conn.respond(request, 401, [(b"WWW-Authenticate", _NTLM_CHALLENGE)])


async def _route_ws(conn: OriginConnection, request: Request) -> None:
    key = request.header(b"sec-websocket-key")
    if (
        key is None
        or b"websocket" not in request.header_tokens(b"upgrade")
        or b"upgrade" not in request.header_tokens(b"connection")
    ):
        return await _route_bad_request(conn, request)
    accept = base64.b64encode(hashlib.sha1(key.strip() + _WS_GUID).digest())
    headers = [
        *conn._id_headers(),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", accept),
    ]
    await conn.write(
        h11.InformationalResponse(status_code=101, headers=headers, reason=b"Switching Protocols")
    )
    leftover, closed = conn.h11.trailing_data
    if leftover:
        conn.writer.write(leftover)
    while not closed:
        data = await conn.reader.read(CHUNK)
        if not data:
            break
        conn.writer.write(data)
        await conn.writer.drain()
    raise _Closed


async def _route_close(conn: OriginConnection, request: Request) -> None:
    await conn.respond(request, 200, [(b"Connection", b"close")])


async def _route_delay(conn: OriginConnection, request: Request) -> None:
    ms = _parse_int(request.arg, 0, _MAX_DELAY_MS)
    if ms is None:
        return await _route_bad_request(conn, request)
    await asyncio.sleep(ms / 1000)
    await conn.respond(request, 200)


async def _route_status(conn: OriginConnection, request: Request) -> None:
    status = _parse_int(request.arg, 200, 599)
    if status is None:
        return await _route_bad_request(conn, request)
    await conn.respond(request, status)


def _raw_head(conn: OriginConnection, *lines: bytes) -> bytes:
    ids = b"".join(b"%s: %s\r\n" % h for h in conn._id_headers())
    return b"HTTP/1.1 200 OK\r\n" + ids + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


async def _bad_te_cl(conn: OriginConnection, request: Request) -> None:
    head = _raw_head(conn, b"Transfer-Encoding: chunked", b"Content-Length: 5")
    conn.write_raw(head + b"5\r\nhello\r\n0\r\n\r\n")


async def _bad_cl(conn: OriginConnection, request: Request) -> None:
    conn.write_raw(_raw_head(conn, b"Content-Length: abc") + b"hello")


async def _bad_garbage(conn: OriginConnection, request: Request) -> None:
    conn.write_raw(b"\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n")


async def _bad_close(conn: OriginConnection, request: Request) -> None:
    raise _Closed


async def _bad_reset(conn: OriginConnection, request: Request) -> None:
    sock = conn.writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.writer.transport.abort()
    raise _Closed


async def _bad_close_on_reuse(conn: OriginConnection, request: Request) -> None:
    if conn.seq > 1:
        raise _Closed
    await conn.respond(request, 200)


async def _bad_hang(conn: OriginConnection, request: Request) -> None:
    while await conn.reader.read(CHUNK):
        pass
    raise _Closed


async def _bad_truncated(conn: OriginConnection, request: Request) -> None:
    conn.write_raw(_raw_head(conn, b"Content-Length: 100") + b"0123456789")


_FAULTS: dict[str, Handler] = {
    "te-cl": _bad_te_cl,
    "cl": _bad_cl,
    "garbage": _bad_garbage,
    "close": _bad_close,
    "reset": _bad_reset,
    "close-on-reuse": _bad_close_on_reuse,
    "hang": _bad_hang,
    "truncated": _bad_truncated,
}


async def _route_bad(conn: OriginConnection, request: Request) -> None:
    await _FAULTS.get(request.arg, _route_bad_request)(conn, request)


# First path segment -> route. "/size/123" looks up "size" with arg "123"; "/" and unknowns get the default.
ROUTES: dict[str, Route] = {
    "echo": Route(_route_echo),
    "size": Route(_route_size),
    "chunked": Route(_route_chunked),
    "upload": Route(_route_upload, hash_body=True),
    "ntlm": Route(_route_ntlm),
    "ws": Route(_route_ws),
    "close": Route(_route_close),
    "delay": Route(_route_delay),
    "status": Route(_route_status),
    "bad": Route(_route_bad),
}
_DEFAULT_ROUTE = Route(_route_default)


def _lookup(path: str) -> tuple[Route, str]:
    name, _, arg = path[1:].partition("/")
    return ROUTES.get(name, _DEFAULT_ROUTE), arg


# ---- servers --------------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"origin: {message}", file=sys.stderr, flush=True)


async def _run_connection(conn: _H1, serve: Callable[[], Awaitable[None]]) -> None:
    """Serve one connection until it ends; whatever the peer does, only this connection is lost."""
    try:
        await serve()
    except h11.RemoteProtocolError as error:
        conn.reject(error)
    except (_Closed, ConnectionError, TimeoutError):
        pass
    except asyncio.CancelledError:
        # Shutdown. The task ends here on purpose: Python 3.11's stream callback reports a cancelled
        # connection task as an unhandled exception.
        pass
    except Exception as error:  # a bug in a route must not take the server down
        _log(f"connection error: {error!r}")
    finally:
        conn.writer.close()


class OriginServer:
    """The main listener, the optional stats listener and the counters they share."""

    def __init__(self, settings: Settings) -> None:
        self.counters = Counters()
        self.settings = settings

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")
        if (tls.selected_alpn_protocol() == "h2") if tls is not None else self.settings.h2:
            from tools.origin_h2 import H2Origin

            h2conn = H2Origin(
                reader, writer, self.counters, delay_s=self.settings.delay_s,
                max_streams=self.settings.h2_max_streams,
            )  # fmt: skip
            try:
                await h2conn.serve()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()
                self.counters.connection_closed()
            return
        conn = OriginConnection(reader, writer, self.counters, self.settings)
        try:
            await _run_connection(conn, conn.serve)
        finally:
            self.counters.connection_closed()

    async def handle_stats(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _H1(reader, writer)

        async def serve() -> None:
            while True:
                event = await conn.next_event()
                if type(event) is not h11.Request:
                    return
                await conn.read_body()
                path = bytes(event.target).partition(b"?")[0]
                if path == b"/__reset":
                    self.counters.reset()
                status, body = 404, b""
                if path in (b"/__stats", b"/__reset"):
                    status, body = 200, json.dumps(self.counters.snapshot()).encode()
                headers = [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body))]
                events: list[Any] = [
                    h11.Response(status_code=status, headers=headers, reason=_REASONS[status])
                ]
                if event.method != b"HEAD":
                    events.append(h11.Data(data=body))
                await conn.write(*events, h11.EndOfMessage())
                if not conn.next_cycle():
                    return

        await _run_connection(conn, serve)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(
    host: str, port: int, stats_port: int | None, settings: Settings, tls: ssl.SSLContext | None = None
) -> None:
    """Listen, print the READY line, serve until SIGTERM or SIGINT."""
    origin = OriginServer(settings)
    server = await asyncio.start_server(origin.handle, host, port, backlog=4096, limit=CHUNK, ssl=tls)
    servers = [server]
    ready = ["READY", str(server.sockets[0].getsockname()[1])]
    if stats_port is not None:
        stats = await asyncio.start_server(origin.handle_stats, host, stats_port)
        servers.append(stats)
        ready.append(str(stats.sockets[0].getsockname()[1]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(" ".join(ready), flush=True)
    await stop.wait()
    for listener in servers:
        listener.close()
    # Connections still open are cancelled by the runner on the way out.


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.origin", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="main port (0: pick a free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--stats-port", type=int, default=None, help="serve /__stats and /__reset here")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added before every response")
    parser.add_argument(
        "--idle-timeout-ms",
        type=float,
        default=0.0,
        help="close keep-alive connections idle this long (0: never)",
    )
    parser.add_argument(
        "--h2", action="store_true", help="speak HTTP/2 (h2c prior knowledge; with --cert, ALPN)"
    )
    parser.add_argument("--h2-max-streams", type=int, default=100, help="SETTINGS_MAX_CONCURRENT_STREAMS")
    parser.add_argument("--cert", help="PEM certificate chain: serve TLS (ALPN h2 with --h2, and http/1.1)")
    parser.add_argument("--key", help="PEM private key of --cert (default: in the --cert file)")
    args = parser.parse_args(argv)
    settings = Settings(
        delay_s=args.delay_ms / 1000, idle_timeout_s=args.idle_timeout_ms / 1000, h2=args.h2,
        h2_max_streams=args.h2_max_streams,
    )  # fmt: skip
    tls = None
    if args.cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.cert, args.key)
        tls.set_alpn_protocols(["h2", "http/1.1"] if args.h2 else ["http/1.1"])
    _raise_fd_limit()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args.host, args.port, args.stats_port, settings, tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
