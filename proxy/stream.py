"""A stream: one request and its response, from a client mux to a server connection and back.

Theory of operation. A client mux (``proxy.mux_h1`` now, ``proxy.mux_h2`` next) opens a ``Stream``
per request head through its environment (``Environment``; ``proxy.env.StreamEnv`` in a worker) and
feeds it the request body and end; the stream knows no protocol — it sees neutral heads, data,
trailers and ends (``proxy.message``) and speaks to the client through ``proxy.sides.ClientSide``
and to the server connection through its ``send_*`` methods, receiving its response as
``proxy.sides.ServerPeer``.

1. ``start``: rules and routing (``Frontend``), server choice, then ``Backend.acquire_now`` — a free
   slot and an idle connection of this worker attach at once (no task); otherwise one task runs
   ``Backend.acquire`` (queue, steal, connect).
2. The request head and body go to the connection once it is attached. **Bodies are bounded**: while
   no connection is attached, at most ``env.bufsize`` bytes of body wait here, then the client mux
   stops reading; once attached, the client is paused whenever the server connection cannot take
   more (its transport buffer is full), and the same holds the other way for the response.
3. The response events are relayed to the client side, which frames them for its protocol.
4. At the end, ``Backend.finish`` keeps or closes the connection (reused only if both messages ended
   exactly, in keep-alive) and releases the slot; the client side learns whether it may go on, and
   the environment logs one line.

``Phase`` is the stream's state machine (``_PHASES`` lists the legal moves; an illegal one raises).

The proxy's own answers are ``proxy.replies.Reply`` objects handed to the client side
(``send_reply``), which frames them; an error uses the backend's ``errorfile`` for its status, else
the frontend's, else the default page.

Failures are answered like HAProxy (status, termination state):
- no backend / no usable server → 503 ``SC``; queue full 503 ``SQ``; queue timeout 503 ``sQ``;
  connect failure after ``retries`` → 503 ``SC``;
- server timeout before the response head → 504 ``sH``; invalid response → 502 ``PH``;
- server closed before any response byte → 502 ``SH``, except on a *reused* connection, where a
  replayable request (idempotent, complete, small) is sent once more on a new connection, and
  otherwise the client connection is closed silently so that the client may retry (SEMANTICS.md §1);
- after the response head was sent, any failure aborts the client connection (the body is cut).
"""

from __future__ import annotations

import asyncio
import enum
import time
from typing import TYPE_CHECKING, Final, Protocol

from proxy.backend import AcquireError
from proxy.log import notice
from proxy.logformat import render
from proxy.message import Data, EndOfMessage, Event, Framing, ResponseHead, header_values
from proxy.stream_rules import StreamRules

if TYPE_CHECKING:
    from proxy.backend import Acquisition, Backend
    from proxy.backend_h2 import ServerLink
    from proxy.frontend import Frontend
    from proxy.h1 import ProtocolError
    from proxy.message import Headers, RequestHead
    from proxy.replies import Reply
    from proxy.rules import RuleCtx, Stop
    from proxy.server import ServerRuntime
    from proxy.sides import ClientSide


_monotonic: Final = time.monotonic  # a C static when compiled (no module attribute lookup)
REPLAY_MAX: Final = 16384  # a request is replayable on a new connection if it is complete and this small
_AUTH_PRIVATE: Final = (b"ntlm", b"negotiate")
_IDEMPOTENT: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


class Environment(Protocol):
    """What a stream gets from its worker (``proxy.env.StreamEnv`` is the one in use)."""

    @property
    def frontend(self) -> Frontend:
        """Routing: the rules of the frontend the request came in on."""
        ...

    @property
    def bufsize(self) -> int:
        """Request body bytes a stream may hold while no server connection is attached."""
        ...

    def log_stream(self, stream: Stream, status: int) -> None: ...

    def serve(self, service: str, head: RequestHead) -> Reply:
        """The answer of one of the worker's services (``use-service``, the stats page)."""
        ...

    def next_serial(self) -> int:
        """A number for this request, unique in this worker process (``%rt``)."""
        ...


class Phase(enum.StrEnum):  # str-based: hashed in C (``_to`` on every request)
    NEW = "new"  # created: rules, routing, server choice
    CONNECTING = "connecting"  # waiting for a slot or a connection (the acquire task runs)
    EXCHANGE = "exchange"  # a server connection is attached: request out, response in
    TUNNEL = "tunnel"  # after a 101: raw bytes both ways
    DONE = "done"  # ended; every later event is ignored


_PHASES: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.NEW: frozenset({Phase.CONNECTING, Phase.EXCHANGE, Phase.DONE}),
    Phase.CONNECTING: frozenset({Phase.EXCHANGE, Phase.DONE}),
    Phase.EXCHANGE: frozenset({Phase.CONNECTING, Phase.TUNNEL, Phase.DONE}),  # CONNECTING: a replay
    Phase.TUNNEL: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}


class IllegalPhase(Exception):
    """A stream was moved between two phases that ``_PHASES`` does not link."""


class Stream(StreamRules):
    __slots__ = (
        "acq",
        "backend",
        "body_paused",
        "bytes_out",
        "client_keep",
        "conn",
        "env",
        "fe",
        "head",
        "interim",
        "pending",
        "pending_len",
        "phase",
        "replay",
        "replay_len",
        "req_done",
        "req_trailers",
        "resp_head",
        "retried",
        "sent0",
        "serial",
        "server_keep",
        "server_last_io",
        "server_timeout",
        "side",
        "t_head",
        "t_resp",
        "t_start",
        "task",
        "term",
        "tunnel_eofs",
    )

    def __init__(self, side: ClientSide, env: Environment, head: RequestHead, t_start: float) -> None:
        self.side = side
        self.env = env
        self.fe = env.frontend
        self.head = head
        self.phase = _PH_NEW
        self.t_start = t_start
        self.t_head = _monotonic()
        self.t_resp = 0.0
        self.backend: Backend | None = None
        self.acq: Acquisition | None = None
        self.conn: ServerLink | None = None  # an HTTP/1 connection or one HTTP/2 stream
        self.task: asyncio.Task[None] | None = None
        # Request body bytes not yet sent (no connection yet), and the end once read.
        self.pending: list[bytes] = []
        self.pending_len = 0
        self.req_done = head.body is _FR_NONE
        self.req_trailers: Headers | None = [] if self.req_done else None  # the end, until sent
        self.body_paused = False  # this stream paused the client's request body
        # A copy of what was sent on a *reused* connection while the request may be replayed on a
        # new one: idempotent methods only (RFC 9110 §9.2.2), only when retries are allowed.
        self.replay: list[bytes] | None = None
        self.replay_len = 0
        self.resp_head: ResponseHead | None = None
        self.interim = False
        self.client_keep = head.keep_alive
        self.server_keep = True
        self.retried = False
        self.tunnel_eofs = 0  # bit 1: the client half-closed, bit 2: the server did
        self.bytes_out = 0
        self.sent0 = side.bytes_sent  # the log's bytes: what the client got since (heads included)
        self.term = "--"
        self.server_timeout = 0.0  # ``timeout server`` once attached (0: none); checked lazily
        self.server_last_io = 0.0
        self.rctx: RuleCtx | None = None  # the rules' context, made on first use
        self.serial = env.next_serial()

    def __repr__(self) -> str:
        h = self.head
        return (
            f"<Stream {h.method.decode()} {h.target[:40].decode('latin-1')} {self.phase.name}"
            f" conn={self.conn!r}>"
        )

    def _to(self, phase: Phase) -> None:
        if phase not in _PHASES[self.phase]:
            raise IllegalPhase(f"{self!r}: {self.phase.name} -> {phase.name}")
        self.phase = phase

    # -- StreamHandle: what the client mux reads ------------------------------------------------
    @property
    def tunnel(self) -> bool:
        return self.phase is _PH_TUNNEL

    @property
    def waiting_for_server(self) -> bool:
        return self.req_done and self.resp_head is None

    @property
    def response_started(self) -> bool:
        return self.resp_head is not None

    # -- request side ---------------------------------------------------------------------------
    def frontend(self) -> Frontend:
        return self.fe

    def start(self) -> None:
        fe = self.fe
        head = self.head
        if head.upgrade == b"h2c":  # never tunnel an h2c upgrade: serve the request as HTTP/1.1
            head.upgrade = None
        session = self.side.session
        stop, backend = fe.route(head, self.rule_ctx)
        if stop is not None:
            self.backend = backend  # the backend whose rule answered: its errorfiles and rules apply
            self._answer(stop)
            return
        if self.rctx is not None and backend is not None:
            self.rctx.sample.backend = backend.name
        if backend is None:
            self.fail(503, "SC")
            return
        self.backend = backend
        srv = backend.pick_server(session.client_ip)
        if srv is None:
            self.fail(503, "SC")
            return
        srv.count_request()  # the row's R_REQUESTS
        self._decide_keep_alive(backend)
        sni = None
        if srv.sni_expr is not None:  # ``sni <expr>``: its value is part of the connection key
            sni = render(srv.sni_expr, self.rule_ctx().sample).decode("latin-1") or None
        acq = self.acq = backend.acquisition(srv, session, sni)
        conn = backend.acquire_now(acq)
        if conn is not None:
            self._attach(conn)
            return
        self._to(_PH_CONNECTING)
        self.task = asyncio.get_running_loop().create_task(self._acquire())

    def _decide_keep_alive(self, backend: Backend) -> None:
        if not (self.fe.keep_alive_mode and backend.keep_alive_mode) and not self.head.upgrade:
            self.server_keep = False
        if backend.httpclose:
            self.client_keep = False

    async def _acquire(self, fresh: bool = False) -> None:
        """The slow path, the one task a request may need (queue, steal, connect)."""
        backend, acq = self.backend, self.acq
        assert backend is not None and acq is not None
        try:
            conn = await backend.acquire(acq, fresh=fresh)
        except AcquireError as exc:
            self.task = None
            if self.phase is not Phase.DONE:
                self.fail(exc.status, exc.term)
            elif acq.has_slot:
                backend.finish(acq, None, False)
            return
        except Exception as err:  # a bug or the environment (e.g. a lazy import refused after a
            # privilege drop): the client gets an answer, the slot is given back, the worker lives on
            self.task = None
            notice(f"internal error while getting a server connection: {err!r}")
            if self.phase is not Phase.DONE:
                self.fail(503, "SC")
            elif acq.has_slot:
                backend.finish(acq, None, False)
            return
        self.task = None
        if self.phase is Phase.DONE:  # the client left; on 3.11 wait_for may have swallowed _end's cancel
            backend.finish(acq, conn, False)
            return
        self._attach(conn)

    def _attach(self, conn: ServerLink) -> None:
        acq = self.acq
        assert acq is not None
        if self.phase is _PH_NEW or self.phase is _PH_CONNECTING:  # the legal moves, unchecked
            self.phase = _PH_EXCHANGE
        else:
            self._to(_PH_EXCHANGE)  # raises
        self.conn = conn
        conn.attach(self, self.head.method)
        keep_replay = (
            (acq.reused or conn.may_refuse)  # HTTP/2: GOAWAY or REFUSED_STREAM may leave it unprocessed
            and not self.retried
            and self.pending_len <= REPLAY_MAX
            and self.head.method in _IDEMPOTENT
            and self.backend is not None
            and self.backend.retries > 0
        )
        pending = self.pending
        self.replay = (list(pending) if pending else []) if keep_replay else None
        self.replay_len = self.pending_len
        conn.send_head(self.head, keep_alive=self.server_keep, add=self._added_headers())
        if pending:
            for chunk in pending:
                conn.send_data(chunk)
            self.pending = []  # a new list: after a replay, ``pending`` was the replay copy itself
            self.pending_len = 0
        if self.req_trailers is not None and self.req_done:
            conn.send_end(self.req_trailers)
        self._request_flow()
        if self.side.write_paused:
            conn.pause_reading()
        self._arm_server_timer()

    def on_request_data(self, data: bytes) -> None:
        phase = self.phase
        if phase is _PH_DONE or phase is _PH_TUNNEL:
            return
        conn = self.conn
        if conn is not None:
            conn.send_data(data)
            replay = self.replay
            if replay is not None:
                self.replay_len += len(data)
                if self.replay_len <= REPLAY_MAX:
                    replay.append(data)
                else:
                    self.replay = None
            return
        self.pending.append(data)
        self.pending_len += len(data)
        if self.pending_len >= self.env.bufsize and not self.body_paused:
            self._request_flow()

    def on_request_end(self, trailers: Headers) -> None:
        self.req_done = True
        if self.phase is _PH_DONE or self.req_trailers is not None:
            return  # ended, or a request without body whose end was known (and sent) from its head
        self.req_trailers = trailers
        if self.conn is not None:
            self.conn.send_end(trailers)

    def on_request_error(self, status: int) -> None:
        if self.phase is Phase.DONE:
            return
        if self.resp_head is None:
            self.fail(status, "PR")
        else:
            self.abort("PD")

    def _request_flow(self) -> None:
        """Pause the client's request body while it cannot go anywhere: no connection and a full
        buffer here, or a server connection that takes no more. Resume when that ends."""
        conn = self.conn
        pause = self.pending_len >= self.env.bufsize if conn is None else conn.write_paused
        if pause != self.body_paused:
            self.body_paused = pause
            if pause:
                self.side.pause_request()
            else:
                self.side.resume_request()

    # -- server timeout -------------------------------------------------------------------------
    def _arm_server_timer(self) -> None:
        """``timeout server`` runs from now. The stream owns no timer: its client mux's one
        deadline calls ``check_timeouts`` (the mux is told how soon, once)."""
        backend = self.backend
        timeout = backend.timeout_server if backend is not None else None
        now = self.server_last_io = _monotonic()
        if timeout:
            self.server_timeout = timeout
            self.side.deadline_hint(now + timeout)

    def check_timeouts(self, now: float) -> float | None:
        """Called by the client mux's timer: act on an expired ``timeout server`` (504 before the
        response head, a cut after it) and return when to look again (None: nothing to watch)."""
        timeout = self.server_timeout
        if not timeout or self.phase is not _PH_EXCHANGE:
            return None
        last = self.server_last_io
        if not self.req_done:  # an upload still moving keeps the server side alive too
            last = max(last, self.side.last_io)
        deadline = last + timeout
        if now < deadline:
            return deadline
        if self.resp_head is None:
            self.fail(504, "sH")
        else:
            self.abort("sD")
        return None

    # -- response side (ServerPeer) -------------------------------------------------------------
    def on_server_events(self, events: list[Event]) -> None:
        self.server_last_io = _monotonic()
        side = self.side
        side.cork()  # one write (one syscall) for everything these events produce
        try:
            for ev in events:
                if self.phase is not _PH_EXCHANGE:
                    return
                if isinstance(ev, Data):
                    if not self.interim:
                        self.bytes_out += len(ev.data)
                        side.send_data(ev.data)
                elif isinstance(ev, ResponseHead):
                    self._on_response_head(ev)
                elif isinstance(ev, EndOfMessage):
                    if self.interim:
                        self.interim = False
                        continue
                    side.send_end(ev.trailers)
                    # The server connection goes back to the pool *before* the client sees the end
                    # of the response (uncork below): its next request can find it there.
                    self.finish()
        finally:
            side.uncork()

    def _on_response_head(self, resp: ResponseHead) -> None:
        status = resp.status
        if status < 200 and status != 101:
            self.interim = True
            self.side.send_interim(resp)
            return
        if self.t_resp == 0.0:
            self.t_resp = _monotonic()
        acq = self.acq
        if acq is not None and 200 <= status < 600:  # the server's hrsp_2xx .. hrsp_5xx
            acq.server.count_hrsp[status // 100 - 2]()
        if status != 101:
            stop = self._response_rules(resp)
            if stop is not None:  # deny, or a failed rewrite: the server's answer is dropped
                self.fail(stop.status, stop.term)
                return
        self.resp_head = resp
        if status == 101:
            if not self.head.upgrade:
                self.fail(502, "PH")
                return
            self._start_tunnel(resp)
            return
        conn = self.conn
        if status in (401, 407) and conn is not None and self.backend is not None:
            auth = b"www-authenticate" if status == 401 else b"proxy-authenticate"
            for value in header_values(resp.headers, auth):
                if value.split(b" ", 1)[0].lower() in _AUTH_PRIVATE:
                    self.backend.make_private(conn)
                    break
        if not resp.keep_alive or resp.body is _FR_CLOSE:
            self.server_keep = False
        self.client_keep = self.side.send_response_head(
            resp, keep_alive=self.client_keep, request_done=self.req_done
        )

    def _start_tunnel(self, resp: ResponseHead) -> None:
        conn = self.conn
        assert conn is not None
        self._to(Phase.TUNNEL)
        self.server_keep = False
        self.client_keep = False
        leftover = conn.make_tunnel()
        early = self.side.start_tunnel(self, resp)
        if leftover:
            self.bytes_out += len(leftover)
            self.side.tunnel_send(leftover)
        if early:
            conn.tunnel_send(early)

    def on_tunnel_data(self, data: bytes) -> None:
        self.server_last_io = _monotonic()  # the tunnel's timeout counts activity both ways
        self.bytes_out += len(data)
        self.side.tunnel_send(data)

    def tunnel_from_client(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.tunnel_send(data)

    def tunnel_client_eof(self) -> None:
        """The client half-closed the tunnel: pass the FIN on; the tunnel ends when both did."""
        self.tunnel_eofs |= 1
        if self.conn is not None:
            self.conn.write_eof()
        if self.tunnel_eofs == 3:
            self.finish()

    def on_tunnel_eof(self) -> None:
        self.tunnel_eofs |= 2
        self.side.tunnel_send_eof()
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
        self.conn = None  # every branch below ends with no connection to reuse (a replay gets a new one)
        phase = self.phase
        if phase is Phase.DONE:
            return
        if phase is Phase.TUNNEL:
            self.finish()
            return
        if self.resp_head is not None:
            self.abort("SD")
            return
        acq = self.acq
        unanswered = conn is not None and not conn.got_response_bytes
        replayable = unanswered and self.replay is not None and self.req_done
        if conn is not None and replayable and acq is not None and (acq.reused or conn.refused):
            self._retry()  # a reused connection, or an HTTP/2 stream the server refused unprocessed
            return
        if conn is not None and unanswered and acq is not None and acq.reused:
            # Not replayable: close silently so that the client may retry (HAProxy's behaviour).
            self.term = "SH"
            self.client_keep = False
            self.side.abort()
            self._end(log_status=-1)
            return
        self.fail(502, "SH")

    def _retry(self) -> None:
        """Send the request again on a new connection (a reused one died before answering)."""
        assert self.replay is not None
        self.retried = True
        self.pending = self.replay
        self.pending_len = self.replay_len
        self.replay = None
        self._to(Phase.CONNECTING)
        self._request_flow()  # no connection now, and the replay is small: never a reason to pause
        self.task = asyncio.get_running_loop().create_task(self._acquire(fresh=True))

    def on_server_writable(self, writable: bool) -> None:
        self._request_flow()

    # -- client conditions ----------------------------------------------------------------------
    def on_client_writable(self, writable: bool) -> None:
        conn = self.conn
        if conn is not None:
            if writable:
                conn.resume_reading()
            else:
                conn.pause_reading()

    def on_client_timeout(self) -> None:
        if self.phase is not Phase.DONE:
            self.abort("cD")

    def on_client_shutdown(self) -> None:
        """The client half-closed after its request. With ``option abortonclose``, a request still
        waiting for a server (queued: ``CQ``, connecting: ``CC``) is aborted, as in HAProxy; otherwise
        (and once a connection is attached) the answer still goes out before the connection closes."""
        backend = self.backend
        if self.phase is not Phase.CONNECTING or backend is None or not backend.cfg.abortonclose:
            return
        acq = self.acq
        self.term = "CQ" if acq is None or not acq.has_slot else "CC"
        self.client_keep = False
        self.server_keep = False
        self._end(log_status=-1)

    @property
    def tunnel_timeout(self) -> float | None:
        return self.backend.cfg.timeouts.tunnel if self.backend is not None else None

    def on_client_closed(self) -> None:
        """The client went away: drop everything (the server connection is not reusable)."""
        phase = self.phase
        if phase is Phase.DONE:
            return
        if phase is Phase.TUNNEL:
            conn = self.conn
            self.conn = None
            if conn is not None:
                conn.close_soon()
            self.finish()
            return
        self.term = "CD" if self.resp_head is not None else "CH"
        self.server_keep = False
        self.client_keep = False
        self._end(log_status=-1)

    # -- endings --------------------------------------------------------------------------------
    def _answer(self, stop: Stop) -> None:
        """A rule answered (``return``, ``redirect``, ``deny``) or failed (500)."""
        self.term = stop.term
        if not stop.keep:
            self.fail(stop.status, stop.term)
            return
        if stop.service:
            self.local_response(self.env.serve(stop.service, self.head))
            return
        self.local_response(stop.reply if stop.reply is not None else self.error_reply(stop.status))

    def local_response(self, reply: Reply) -> None:
        """Answer locally (``http-request return``); the client connection may stay alive."""
        self._after_response(reply.status, reply.headers)
        self.client_keep = self.side.send_reply(reply, keep_alive=self.client_keep and self.req_done)
        self.bytes_out = len(reply.body)
        self._end(log_status=reply.status)

    def fail(self, status: int, term: str) -> None:
        """Answer an error and close the client connection afterwards."""
        self.term = term
        self.client_keep = False
        self.server_keep = False
        reply = self.error_reply(status)
        self._after_response(reply.status, reply.headers)
        self.side.send_reply(reply, keep_alive=False)
        self.bytes_out = 0 if reply.silent else len(reply.body)
        self._end(log_status=status)

    def abort(self, term: str) -> None:
        """A failure after the response head went out: cut the client connection."""
        self.term = term
        self.client_keep = False
        self.server_keep = False
        status = self.resp_head.status if self.resp_head is not None else -1
        self.side.abort()  # first: ending the stream must not close the client gracefully instead
        self._end(log_status=status)

    def finish(self) -> None:
        """The response ended cleanly (or a tunnel ended)."""
        status = self.resp_head.status if self.resp_head is not None else -1
        self._end(log_status=status)

    def _end(self, log_status: int) -> None:
        if self.phase is _PH_DONE:
            return
        tunnel = self.phase is _PH_TUNNEL
        self.phase = _PH_DONE  # legal from every phase but DONE (see _PHASES)
        if self.task is not None:
            self.task.cancel()
            self.task = None
        conn = self.conn
        self.conn = None
        self.pending = []
        self.replay = None
        if self.body_paused:  # whatever this stream paused on the client side ends with it
            self.body_paused = False
            self.side.resume_request()
        if tunnel and conn is not None:
            conn.close_soon()
            conn = None
        # Logged before the slot is released: the log's beconn/srv_conn count this request, as
        # HAProxy's do.
        self.env.log_stream(self, log_status)
        backend, acq = self.backend, self.acq
        if backend is not None and acq is not None:
            reusable = conn is not None and self.server_keep and self.req_done and conn.reusable
            backend.finish(acq, conn, reusable)
        elif conn is not None:
            conn.close()
        self.side.stream_done(self, self.client_keep)

    @property
    def server(self) -> ServerRuntime | None:
        return self.acq.server if self.acq is not None else None


# The enum members the per-request functions above use, as module constants: on Python 3.11
# a member lookup (``Phase.IDLE``) costs several times a global's, and a request makes dozens.
_FR_CLOSE: Final = Framing.CLOSE
_FR_NONE: Final = Framing.NONE
_PH_CONNECTING: Final = Phase.CONNECTING
_PH_DONE: Final = Phase.DONE
_PH_EXCHANGE: Final = Phase.EXCHANGE
_PH_NEW: Final = Phase.NEW
_PH_TUNNEL: Final = Phase.TUNNEL
