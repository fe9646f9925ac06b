"""A stream: one request and its response, from the client connection to a server and back.

Theory of operation. The client connection (``proxy.mux_h1.ClientConn``) creates a ``Stream`` for
each request head and feeds it the request body events; the stream decides where the request goes
(``Frontend``/``Backend``), gets a server connection (``Backend.reuse`` synchronously, or a connect
task — the only task a request may create), serializes the request for the server as soon as the
connection is there (bytes produced earlier wait in ``pending``), and relays the response events
back. Bodies stream with backpressure: a peer whose transport buffer is full pauses reading on the
other side until it drains.

When it ends, the stream hands the server connection back (``Backend.release``) only if both messages
ended exactly, in keep-alive, with nothing pending; otherwise it closes it. It then tells the client
connection whether the client side may stay alive, and logs one line.

Failures are answered like HAProxy (status, termination state):
- no backend / no usable server → 503 ``SC``; connect failure after ``retries`` → 503 ``SC``;
- server timeout before the response head → 504 ``sH``; invalid response → 502 ``PH``;
- server closed before any response byte → 502 ``SH``, except on a *reused* connection, where a
  replayable request (complete, small) is sent once more on a new connection, and otherwise the
  client connection is closed silently so that the client may retry (SEMANTICS.md §1);
- after the response head was sent, any failure aborts the client connection (the body is cut).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from proxy.frontend import first_return, request_ctx
from proxy.h1 import ProtocolError, writer
from proxy.message import (
    Data,
    EndOfMessage,
    Event,
    Framing,
    RequestHead,
    ResponseHead,
    header_values,
)
from proxy.queue import Outcome
from proxy.server_conn import ServerConn
from proxy.shm import R_REQUESTS

if TYPE_CHECKING:
    from proxy.backend import Backend
    from proxy.mux_h1 import ClientConn
    from proxy.pool import ConnKey
    from proxy.server import ServerRuntime

REPLAY_MAX = 16384  # a request is replayable on a new connection if it is complete and this small
_AUTH_PRIVATE = (b"ntlm", b"negotiate")
_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


class Stream:
    __slots__ = (
        "backend",
        "bytes_out",
        "client",
        "client_framing",
        "client_keep",
        "conn",
        "connect_task",
        "done",
        "has_slot",
        "head",
        "interim",
        "key",
        "pending",
        "replay",
        "replay_len",
        "req_done",
        "resp_head",
        "retried",
        "reused",
        "server",
        "server_keep",
        "server_last_io",
        "server_timer",
        "t_connected",
        "t_head",
        "t_queued",
        "t_resp",
        "t_start",
        "term",
        "tunnel",
        "tunnel_eofs",
    )

    key: ConnKey  # set once a server is chosen

    def __init__(self, client: ClientConn, head: RequestHead, t_start: float) -> None:
        self.client = client
        self.head = head
        self.t_start = t_start
        self.t_head = time.monotonic()
        self.t_connected = 0.0
        self.t_resp = 0.0
        self.backend: Backend | None = None
        self.server: ServerRuntime | None = None
        self.conn: ServerConn | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.pending: list[bytes] = []  # serialized request bytes waiting for a connection
        # A copy of what was sent while the request may be replayed on a new connection: only
        # idempotent methods (RFC 9110 §9.2.2), and only when retries are allowed.
        self.replay: list[bytes] | None = [] if head.method in _IDEMPOTENT else None
        self.replay_len = 0
        self.has_slot = False
        self.t_queued = 0.0
        self.req_done = head.body is Framing.NONE
        self.resp_head: ResponseHead | None = None
        self.interim = False
        self.client_framing = Framing.NONE
        self.client_keep = head.keep_alive
        self.server_keep = True
        self.retried = False
        self.reused = False
        self.tunnel = False
        self.tunnel_eofs = 0  # bit 1: the client half-closed, bit 2: the server did
        self.done = False
        self.bytes_out = 0
        self.term = "--"
        self.server_timer: asyncio.TimerHandle | None = None
        self.server_last_io = 0.0

    def __repr__(self) -> str:
        h = self.head
        return f"<Stream {h.method.decode()} {h.target[:40].decode('latin-1')} conn={self.conn!r}>"

    # -- request side -------------------------------------------------------------------------
    def start(self) -> None:
        client = self.client
        fe = client.frontend
        head = self.head
        if head.upgrade == b"h2c":  # never tunnel an h2c upgrade: serve the request as HTTP/1.1
            head.upgrade = None
        ctx = request_ctx(head, client.session.client_ip)
        ret = fe.local_return(ctx)
        backend = None
        if ret is None:
            backend = fe.choose_backend(ctx)
            if backend is None:
                self.fail(503, "SC")
                return
            if backend.cfg is not fe.cfg:
                ret = first_return(backend.cfg, ctx)
        if ret is not None:
            self.term = "PR"
            self.local_response(ret.status, ret.body, ret.content_type)
            return
        assert backend is not None
        self.backend = backend
        srv = backend.pick_server(client.session.client_ip)
        if srv is None:
            self.fail(503, "SC")
            return
        self.server = srv
        srv.row.add(R_REQUESTS)
        self.key = backend.key_for(srv, client.session.client_ip)
        self._queue_request_head()
        if client.queues.try_take(srv):
            self.has_slot = True
            self.t_queued = self.t_head
            conn = backend.reuse(srv, self.key, client.session.first_request, client.session)
            if conn is not None:
                self.reused = True
                self.t_connected = time.monotonic()
                self._attach(conn)
                return
        self.connect_task = asyncio.get_running_loop().create_task(self._acquire())

    def _queue_request_head(self) -> None:
        head = self.head
        fe_cfg = self.client.frontend.cfg
        be_cfg = self.backend.cfg if self.backend is not None else fe_cfg
        add: list[tuple[bytes, bytes]] = []
        if fe_cfg.forwardfor or be_cfg.forwardfor:
            name = (fe_cfg.forwardfor_header if fe_cfg.forwardfor else be_cfg.forwardfor_header).encode()
            add.append((name, self.client.session.client_ip.encode()))
        if (
            fe_cfg.http_conn_mode != "keep-alive" or be_cfg.http_conn_mode != "keep-alive"
        ) and not head.upgrade:
            self.server_keep = False
        if be_cfg.http_conn_mode == "httpclose":
            self.client_keep = False
        data = writer.request_head(
            head,
            body=head.body,
            content_length=head.content_length,
            keep_alive=self.server_keep,
            add=add,
        )
        self._send(data)

    def _send(self, data: bytes) -> None:
        replay = self.replay
        if replay is not None:
            self.replay_len += len(data)
            if self.replay_len <= REPLAY_MAX:
                replay.append(data)
            else:
                self.replay = None
        conn = self.conn
        if conn is None:
            self.pending.append(data)
        else:
            conn.write(data)

    def on_request_data(self, data: bytes) -> None:
        if self.done or self.tunnel:
            return
        self._send(writer.data(self.head.body, data))

    def on_request_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.req_done = True
        if self.done:
            return
        tail = writer.end(self.head.body, trailers)
        if tail:
            self._send(tail)

    async def _acquire(self) -> None:
        """The slow path, the one task a request may need: wait for a maxconn slot, then find a
        connection (own pool, another worker's, or a new one)."""
        backend = self.backend
        srv = self.server
        assert backend is not None and srv is not None
        session = self.client.session
        if not self.has_slot:
            timeout = backend.cfg.timeouts.queue or backend.cfg.timeouts.connect or 5.0
            outcome = await self.client.queues.wait(srv, timeout)
            if self.done:  # the client left; on 3.11 wait_for may have swallowed _end's cancel
                if outcome is Outcome.GRANTED:
                    self.client.queues.release(srv)
                return
            if outcome is not Outcome.GRANTED:
                self.connect_task = None
                self.fail(503, "sQ" if outcome is Outcome.TIMEOUT else "SQ")
                return
            self.has_slot = True
            self.t_queued = time.monotonic()
            conn = backend.reuse(srv, self.key, session.first_request, session)
            if conn is not None:
                self.connect_task = None
                self.reused = True
                self.t_connected = time.monotonic()
                self._attach(conn)
                return
        if backend.may_steal(srv, session.first_request):
            conn = await backend.steal(srv, self.key, session.first_request)
            if conn is not None:
                if self.done:
                    backend.discard(conn)
                    return
                self.connect_task = None
                self.reused = True
                self.t_connected = time.monotonic()
                self._attach(conn)
                return
        await self._connect()

    async def _connect(self) -> None:
        backend = self.backend
        srv = self.server
        assert backend is not None and srv is not None
        attempts = max(0, backend.cfg.retries) + 1
        for _ in range(attempts):
            try:
                conn = await backend.connect(srv, self.key, self.client.session.client_ip)
            except (TimeoutError, OSError):
                if self.done:
                    return
                continue
            if self.done:  # the client went away meanwhile
                backend.discard(conn)
                return
            if not conn.alive:  # the server closed it before we could use it
                continue
            self.t_connected = time.monotonic()
            self.connect_task = None
            self._attach(conn)
            return
        self.connect_task = None
        if not self.done:
            self.fail(503, "SC")

    def _attach(self, conn: ServerConn) -> None:
        self.conn = conn
        conn.attach(self, self.head.method)
        if self.pending:
            conn.write(b"".join(self.pending))
            self.pending.clear()
        if conn.write_paused:
            self.client.pause_reading()
        if self.client.write_paused:
            conn.pause_reading()
        if self.server_timer is not None:
            self.server_timer.cancel()
            self.server_timer = None
        self._arm_server_timer()

    # -- server timeout -----------------------------------------------------------------------
    def _arm_server_timer(self) -> None:
        backend = self.backend
        timeout = backend.cfg.timeouts.server if backend is not None else None
        if timeout:
            self.server_last_io = time.monotonic()
            self.server_timer = asyncio.get_running_loop().call_later(timeout, self._server_timeout, timeout)

    def _server_timeout(self, timeout: float) -> None:
        self.server_timer = None
        if self.done or self.tunnel:
            return
        last = self.server_last_io
        if not self.req_done:  # an upload still moving keeps the server side alive too
            last = max(last, self.client.last_io)
        idle = time.monotonic() - last
        if idle < timeout:
            self.server_timer = asyncio.get_running_loop().call_later(
                timeout - idle, self._server_timeout, timeout
            )
            return
        if self.resp_head is None:
            self.fail(504, "sH")
        else:
            self.abort("sD")

    # -- response side (ServerPeer) -----------------------------------------------------------
    def on_server_events(self, events: list[Event]) -> None:
        self.server_last_io = time.monotonic()
        client = self.client
        client.cork()  # one write (one syscall) for everything these events produce
        try:
            for ev in events:
                if self.done:
                    return
                if isinstance(ev, Data):
                    if self.interim:
                        continue
                    self.bytes_out += len(ev.data)
                    client.write(writer.data(self.client_framing, ev.data))
                elif isinstance(ev, ResponseHead):
                    self._on_response_head(ev)
                elif isinstance(ev, EndOfMessage):
                    if self.interim:
                        self.interim = False
                        continue
                    client.write(writer.end(self.client_framing, ev.trailers))
                    # The server connection goes back to the pool *before* the client sees the end
                    # of the response (uncork below): its next request can find it there.
                    self.finish()
        finally:
            client.uncork()

    def _on_response_head(self, resp: ResponseHead) -> None:
        head = self.head
        client = self.client
        status = resp.status
        if status < 200 and status != 101:
            self.interim = True
            if head.version == b"1.1":
                client.write(
                    writer.response_head(resp, body=Framing.NONE, content_length=None, keep_alive=True)
                )
            return
        if self.t_resp == 0.0:
            self.t_resp = time.monotonic()
        self.resp_head = resp
        if status == 101:
            if not head.upgrade:
                self.fail(502, "PH")
                return
            self._start_tunnel(resp)
            return
        if status in (401, 407) and self.conn is not None:
            auth = b"www-authenticate" if status == 401 else b"proxy-authenticate"
            for value in header_values(resp.headers, auth):
                if value.split(b" ", 1)[0].lower() in _AUTH_PRIVATE and self.backend is not None:
                    self.backend.make_private(self.conn)
                    break
        framing = resp.body
        keep = self.client_keep and client.keep_alive_allowed()
        if framing is Framing.CLOSE:
            if head.version == b"1.1" and head.method != b"HEAD":
                framing = Framing.CHUNKED  # re-frame so the client connection can stay alive
            else:
                keep = False
        elif framing is Framing.CHUNKED and head.version == b"1.0":
            framing = Framing.CLOSE  # an HTTP/1.0 client cannot read chunks: delimit by close
            keep = False
        if not self.req_done:
            keep = False  # an early response: the rest of the request body cannot be resynced
        self.client_keep = keep
        self.client_framing = framing
        if not resp.keep_alive or resp.body is Framing.CLOSE:
            self.server_keep = False
        client.write(
            writer.response_head(
                resp,
                body=framing,
                content_length=resp.content_length,
                keep_alive=keep,
                version=head.version,
            )
        )
        if head.method == b"HEAD" or framing is Framing.NONE:
            self.client_framing = Framing.NONE

    def _start_tunnel(self, resp: ResponseHead) -> None:
        conn = self.conn
        assert conn is not None
        self.tunnel = True
        self.server_keep = False
        self.client_keep = False
        if self.server_timer is not None:
            self.server_timer.cancel()
            self.server_timer = None
        self.client.write(
            writer.response_head(
                resp, body=Framing.NONE, content_length=None, keep_alive=True, version=b"1.1"
            )
        )
        leftover = conn.make_tunnel()
        if leftover:
            self.client.write(leftover)
        early = self.client.start_tunnel(self)
        if early:
            conn.write(early)

    def on_tunnel_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.client.write(data)

    def tunnel_from_client(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.write(data)

    def tunnel_client_eof(self) -> None:
        """The client half-closed the tunnel: pass the FIN on; the tunnel ends when both did."""
        self.tunnel_eofs |= 1
        if self.conn is not None:
            self.conn.write_eof()
        if self.tunnel_eofs == 3:
            self.finish()

    def on_tunnel_eof(self) -> None:
        self.tunnel_eofs |= 2
        self.client.write_eof()
        if self.tunnel_eofs == 3:
            self.finish()

    def on_server_error(self, exc: ProtocolError) -> None:
        self.server_keep = False
        self.conn = None
        if self.resp_head is None:
            self.fail(502, "PH")
        else:
            self.abort("SD")

    def on_server_closed(self) -> None:
        conn = self.conn
        self.conn = None
        self.server_keep = False
        if self.done:
            return
        if self.tunnel:
            self.finish()
            return
        if self.resp_head is not None:
            self.abort("SD")
            return
        if conn is not None and not conn.got_response_bytes and self.reused:
            retries = self.backend.cfg.retries if self.backend is not None else 0
            if self.replay is not None and self.req_done and not self.retried and retries > 0:
                self._retry()
                return
            # Not replayable: close silently so that the client may retry (HAProxy's behaviour).
            self.term = "SH"
            self.client_keep = False
            self._end(log_status=-1)
            self.client.abort()
            return
        self.fail(502, "SH")

    def _retry(self) -> None:
        """Send the request again on a new connection (a reused one died before answering)."""
        if self.server_timer is not None:
            self.server_timer.cancel()
            self.server_timer = None
        self.client.resume_reading()
        self.retried = True
        self.reused = False
        assert self.replay is not None
        self.pending = list(self.replay)
        self.connect_task = asyncio.get_running_loop().create_task(self._connect())

    def on_server_pause_writing(self) -> None:
        self.client.pause_reading()

    def on_server_resume_writing(self) -> None:
        self.client.resume_reading()

    # -- client transport conditions ----------------------------------------------------------
    def on_client_pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def on_client_resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    def on_client_closed(self) -> None:
        """The client went away: drop everything (the server connection is not reusable)."""
        if self.done:
            return
        if self.tunnel:
            conn = self.conn
            self.conn = None
            if conn is not None:
                conn.close_soon()
            self.finish()
            return
        self.term = "CD" if self.resp_head is not None else "CH"
        self.server_keep = False
        self._end(log_status=-1)

    # -- endings ------------------------------------------------------------------------------
    def local_response(self, status: int, body: bytes, content_type: str | None) -> None:
        """Answer locally (``http-request return``); the client connection may stay alive."""
        keep = self.client_keep and self.req_done and self.client.keep_alive_allowed()
        self.client_keep = keep
        self.client.write(
            writer.simple_response(status, body=body, content_type=content_type, keep_alive=keep)
        )
        self.bytes_out = len(body)
        self._end(log_status=status)

    def fail(self, status: int, term: str) -> None:
        """Answer an error and close the client connection afterwards."""
        self.term = term
        self.client_keep = False
        self.server_keep = False
        body = writer.error_body(status)
        self.client.write(
            writer.simple_response(status, body=body, content_type="text/html", keep_alive=False)
        )
        self.bytes_out = len(body)
        self._end(log_status=status)

    def abort(self, term: str) -> None:
        """A failure after the response head went out: cut the client connection."""
        self.term = term
        self.client_keep = False
        self.server_keep = False
        status = self.resp_head.status if self.resp_head is not None else -1
        self._end(log_status=status)
        self.client.abort()

    def finish(self) -> None:
        """The response ended cleanly (or a tunnel ended)."""
        status = self.resp_head.status if self.resp_head is not None else -1
        self._end(log_status=status)

    def _end(self, log_status: int) -> None:
        if self.done:
            return
        self.done = True
        if self.server_timer is not None:
            self.server_timer.cancel()
            self.server_timer = None
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        conn = self.conn
        self.conn = None
        client = self.client
        client.resume_reading()  # whatever this stream paused on the client side ends with it
        if conn is not None:
            backend = self.backend
            assert backend is not None
            if (
                self.server_keep
                and self.req_done
                and not self.tunnel
                and conn.alive
                and not conn.write_paused
                and not conn.parser.poisoned  # bytes came after the response: never reuse it
            ):
                backend.release(conn, client.session)
            elif self.tunnel:
                conn.close_soon()
            else:
                backend.discard(conn)
        if self.has_slot:
            self.has_slot = False
            srv = self.server
            assert srv is not None
            client.queues.release(srv)
        client.log_stream(self, log_status)
        client.stream_done(self, self.client_keep)
