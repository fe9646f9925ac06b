"""Fakes for the orchestration unit tests: no sockets, no processes.

- ``FakeTransport``: an ``asyncio.Transport`` stand-in that records what is written and what is asked
  of it (reading paused, closed, aborted, EOF written). It never calls its protocol back: a test calls
  ``connection_lost`` / ``eof_received`` itself when it wants the peer to have closed.
- ``RecordingSide``: a ``proxy.sides.ClientSide`` that records every call a stream makes.
- ``FakeClientEnv`` / ``FakeStream``: a ``proxy.sides.ClientEnv`` whose ``open_stream`` hands out
  ``FakeStream`` recorders (``StreamHandle``), for driving ``proxy.mux_h1.ClientConn``.
- ``World``: one worker's runtime for backend ``be`` over a **real** ``ShmTable`` (2 worker slots,
  this one is slot 0), real ``ServerRuntime``/``IdlePool``/``Queues``, a real ``Frontend`` ``fe`` and
  a ``StreamEnv`` that records what it logs. Its backend is a ``FakeConnectBackend``: the real
  ``Backend`` in everything but ``_connect``, which hands out real ``ServerConn`` objects on
  ``FakeTransport``\\ s, counted exactly as the real one counts them (or the real ``Backend`` with
  ``real_connect=True``).
- ``open_conn`` / ``pooled_conn``: real ``ServerConn`` objects on fake transports, moved to their
  accounting state through ``ServerRuntime.move`` only, so the shared counters are right.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from hyperframe.frame import Frame

from proxy import h1
from proxy.backend import Acquisition, Backend
from proxy.config.model import Cap, Config, HttpReturn, HttpRule, Proxy, ReuseMode, Server, Timeouts
from proxy.donor import WorkerLink
from proxy.env import StreamEnv
from proxy.front_counter import FrontCounter, for_worker
from proxy.frontend import Frontend
from proxy.h1 import Limits
from proxy.log import LogSink
from proxy.message import Framing, Headers, RequestHead, ResponseHead
from proxy.pool import ConnKey, ListKind
from proxy.queue import Queues
from proxy.replies import Reply
from proxy.server import Acct, ServerRuntime
from proxy.server_conn import ServerConn, State
from proxy.session import Session
from proxy.shm import CELL_FIELDS, GAUGES, R_CONNECTS, ROW_FIELDS, ShmTable
from proxy.stream import Stream
from proxy.takeover import Message

PEER = ("127.0.0.1", 5555)
# The HTTP/1 engines the unit tests run on: every one registered (native only where built).
ENGINES = tuple(name for name in ("native", "llhttp", "h11") if name in h1.ENGINES)
T = TypeVar("T")


# -- transports -------------------------------------------------------------------------------------
class FakeTransport:
    """Records writes (``data``), reading paused or not, close/abort and EOF."""

    def __init__(self, peername: tuple[str, int] = PEER) -> None:
        self.peername = peername
        self.writes: list[bytes] = []
        self.reading = True
        self.pauses = 0  # pause_reading calls that paused
        self.resumes = 0  # resume_reading calls that resumed
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.buffer_size = 0
        self.late_writes: list[bytes] = []  # written after close()/abort(): a real one drops them

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    def take(self) -> bytes:
        """What was written since the last ``take``."""
        out = self.data
        self.writes.clear()
        return out

    def write(self, data: bytes) -> None:
        if self.is_closing():
            self.late_writes.append(bytes(data))
            return
        self.writes.append(bytes(data))

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.pauses += 1

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            self.resumes += 1

    def is_reading(self) -> bool:
        return self.reading

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peername
        return default

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return getattr(self, "protocol", None)


# -- the client side of a stream -------------------------------------------------------------------
class RecordingSide:
    """A ``ClientSide`` that records, in order, every call a stream makes (cork/uncork apart).

    Answers like an HTTP/1 mux would: ``send_response_head`` keeps the connection alive only when
    asked to and the request was read to its end; ``send_reply`` keeps it when asked to (and keeps
    the replies in ``replies``)."""

    def __init__(self, session: Session | None = None) -> None:
        self.session = session if session is not None else Session(*PEER)
        self.write_paused = False
        self.last_io = time.monotonic()
        self.bytes_sent = 0  # bodies only (no framing here)
        self.calls: list[tuple[Any, ...]] = []
        self.replies: list[Reply] = []
        self.corked = 0  # cork depth: 0 when every cork was uncorked
        self.early = b""  # what start_tunnel returns (client bytes read past the upgrade request)
        self.allow_keep_alive = True
        # Timeouts, as a mux's one timer does them: ``deadline_hint`` arms a timer (on the running
        # loop) that calls the stream's ``check_timeouts`` and re-arms for what it returns.
        self.stream: Any = None
        self.hints: list[float] = []
        self.timer: asyncio.TimerHandle | None = None

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c[0] == name)

    def keep_alive_allowed(self) -> bool:
        return self.allow_keep_alive

    def local_address(self) -> tuple[str, int]:
        return ("127.0.0.1", 8080)

    def send_interim(self, resp: ResponseHead) -> None:
        self.calls.append(("send_interim", resp.status))

    def send_response_head(self, resp: ResponseHead, *, keep_alive: bool, request_done: bool) -> bool:
        self.calls.append(("send_response_head", resp.status, keep_alive, request_done))
        return keep_alive and request_done and self.allow_keep_alive

    def send_data(self, data: bytes) -> None:
        self.calls.append(("send_data", data))
        self.bytes_sent += len(data)

    def send_end(self, trailers: Headers) -> None:
        self.calls.append(("send_end", list(trailers)))

    def send_reply(self, reply: Reply, *, keep_alive: bool) -> bool:
        self.calls.append(("send_reply", reply.status, keep_alive))
        self.replies.append(reply)
        self.bytes_sent += len(reply.body)
        return keep_alive and self.allow_keep_alive and not reply.silent

    def cork(self) -> None:
        self.corked += 1

    def uncork(self) -> None:
        self.corked -= 1

    def pause_request(self) -> None:
        self.calls.append(("pause_request",))

    def resume_request(self) -> None:
        self.calls.append(("resume_request",))

    def abort(self) -> None:
        self.calls.append(("abort",))

    def start_tunnel(self, stream: object, resp: ResponseHead) -> bytes:
        self.calls.append(("start_tunnel", resp.status))
        return self.early

    def tunnel_send(self, data: bytes) -> None:
        self.calls.append(("tunnel_send", data))

    def tunnel_send_eof(self) -> None:
        self.calls.append(("tunnel_send_eof",))

    def stream_done(self, stream: object, keep_alive: bool) -> None:
        self.calls.append(("stream_done", keep_alive))

    def deadline_hint(self, when: float) -> None:
        self.hints.append(when)
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(max(0.0, when - time.monotonic()), self.tick)

    def tick(self) -> None:
        """The timer fired: what a mux does then."""
        self.timer = None
        if self.stream is None:
            return
        nxt = self.stream.check_timeouts(time.monotonic())
        if nxt is not None:
            self.timer = asyncio.get_running_loop().call_later(max(0.0, nxt - time.monotonic()), self.tick)


# -- the client mux's environment -------------------------------------------------------------------
class FakeStream:
    """A ``StreamHandle`` that records what its client mux tells it; ``respond`` plays a stream
    answering through the mux (its ``ClientSide``)."""

    def __init__(self, side: Any, head: RequestHead, on_start: Callable[[FakeStream], None] | None) -> None:
        self.side = side
        self.head = head
        self.on_start = on_start
        self.calls: list[tuple[Any, ...]] = []
        self.server_last_io = 0.0
        self.tunnel = False
        self.tunnel_timeout: float | None = None
        self.waiting_for_server = False
        self.response_started = False
        self.request_ended = head.body is Framing.NONE
        self.next_check: float | None = None  # what check_timeouts answers (None: nothing to watch)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def check_timeouts(self, now: float) -> float | None:
        return self.next_check

    def start(self) -> None:
        self.calls.append(("start",))
        if self.on_start is not None:
            self.on_start(self)

    def on_request_data(self, data: bytes) -> None:
        self.calls.append(("on_request_data", data))

    def on_request_end(self, trailers: Headers) -> None:
        self.request_ended = True
        self.calls.append(("on_request_end", list(trailers)))

    def on_request_error(self, status: int) -> None:
        self.calls.append(("on_request_error", status))

    def on_client_closed(self) -> None:
        self.calls.append(("on_client_closed",))

    def on_client_writable(self, writable: bool) -> None:
        self.calls.append(("on_client_writable", writable))

    def on_client_shutdown(self) -> None:
        self.calls.append(("on_client_shutdown",))

    def on_client_timeout(self) -> None:
        self.calls.append(("on_client_timeout",))

    def tunnel_from_client(self, data: bytes) -> None:
        self.calls.append(("tunnel_from_client", data))

    def tunnel_client_eof(self) -> None:
        self.calls.append(("tunnel_client_eof",))

    def respond(self, body: bytes = b"ok", *, status: int = 200, keep_alive: bool = True) -> bool:
        """Send a complete Content-Length response and end the stream; returns the mux's keep-alive."""
        self.response_started = True
        resp = ResponseHead(status, b"", b"1.1", [], body=Framing.LENGTH, content_length=len(body))
        keep = self.side.send_response_head(resp, keep_alive=keep_alive, request_done=self.request_ended)
        self.side.send_data(body)
        self.side.send_end([])
        self.side.stream_done(self, keep)
        return bool(keep)


class FakeClientEnv:
    """A ``ClientEnv``: frontend settings, a ``FakeStream`` per request head, recorded errors."""

    def __init__(
        self,
        engine_name: str = "llhttp",
        *,
        cfg: Proxy | None = None,
        on_start: Callable[[FakeStream], None] | None = None,
    ) -> None:
        self.cfg = cfg if cfg is not None else Proxy(name="fe", cap=Cap.FRONTEND)
        self.engine_name = engine_name
        self.limits = Limits()
        self.stopping = False
        self.on_start = on_start
        self.streams: list[FakeStream] = []
        self.errors: list[tuple[int, str]] = []
        self.opened: list[object] = []
        self.closed: list[object] = []

    def open_stream(self, side: Any, head: RequestHead, t_start: float) -> FakeStream:
        stream = FakeStream(side, head, self.on_start)
        self.streams.append(stream)
        return stream

    def log_error(self, side: object, status: int, term: str, ta: int = 0) -> None:
        self.errors.append((status, term))

    def client_opened(self, side: object) -> None:
        self.opened.append(side)

    def client_closed(self, side: object) -> None:
        self.closed.append(side)


def in_loop(test: Callable[..., None]) -> Callable[..., None]:
    """Run a synchronous test body inside a running event loop (``ClientConn`` and ``Stream`` ask
    for ``asyncio.get_running_loop()``); no callback runs unless the body awaits, which it cannot."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            test(*args, **kwargs)

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    return wrapper


# -- a worker's runtime over a real shared table ----------------------------------------------------
class RecordingLog(LogSink):
    """A log sink that keeps its lines (so ``StreamEnv.log_stream`` formats for real)."""

    def __init__(self) -> None:
        super().__init__([])
        self.lines: list[str] = []

    @property
    def enabled(self) -> bool:
        return True

    def wants(self, level: str) -> bool:
        return True

    def emit(self, line: str, level: str = "info") -> None:
        self.lines.append(line)


def _no_load(off: int) -> int:
    return 0


def _no_max(off: int, value: int) -> int:
    return 0


class FakeClients:
    """``proxy.env.Clients``: the worker's client registry. Its frontend counters record their adds
    in ``counted``, or count in worker slot 0's cell of ``table`` when one is given (as a worker's)."""

    def __init__(self, table: ShmTable | None = None) -> None:
        self.table = table
        self.stopping = False
        self.clients: set[object] = set()
        self.requests: list[tuple[str, int, int]] = []  # count_bad_request's
        self.counted: list[tuple[int, int]] = []  # front_counter's adds

    def client_opened(self, side: object) -> None:
        self.clients.add(side)

    def client_closed(self, side: object) -> None:
        self.clients.discard(side)

    def client_count(self) -> int:
        return len(self.clients)

    def feconn(self, frontend: str) -> int:
        return len(self.clients)

    def actconn(self) -> int:
        return len(self.clients)

    def front_counter(self, frontend: str) -> FrontCounter:
        """Counts into ``counted`` (the ``proxy.shm`` F_* offset of each add, and its delta; the
        peak, a load and a max, is not recorded), or in ``table`` as worker 0's."""
        table = self.table
        if table is not None:
            return for_worker(table, table.front_index(frontend), 0)
        return FrontCounter(self._count, 0, load=_no_load, fetch_max=_no_max, cur_words=(), peak=0)

    def _count(self, off: int, delta: int) -> int:
        self.counted.append((off, delta))
        return 0

    def count_bad_request(self, frontend: str) -> None:
        self.requests.append((frontend, 400, 0))


class RecordingEnv(StreamEnv):
    """The real ``StreamEnv``, also keeping ``(status, term)`` of every stream it logs."""

    def __init__(self, frontend: Frontend, *, bufsize: int, engine_name: str) -> None:
        self.sink = RecordingLog()
        self.logged: list[tuple[int, str]] = []
        super().__init__(frontend, FakeClients(), self.sink, engine_name, Limits(), bufsize)

    def log_stream(self, stream: Stream, status: int) -> None:
        self.logged.append((status, stream.term))
        super().log_stream(stream, status)


def set_up_conn(conn: ServerConn, transport: FakeTransport | None = None) -> ServerConn:
    """What ``adopt_socket`` does: a transport, and the connection is connected and unattached."""
    conn.on_lost = conn.server.lost
    conn.connection_made(transport if transport is not None else FakeTransport(("127.0.0.1", 8080)))
    conn.state = State.IDLE
    return conn


def open_conn(
    srv: ServerRuntime, key: ConnKey, engine_name: str = "llhttp", *, private: bool = False
) -> ServerConn:
    """A connection as ``Backend._connect`` returns one: counted (``NONE → COUNTED → USED``, or
    ``PRIVATE`` for ``http-reuse never``), ``R_CONNECTS`` counted, on a ``FakeTransport``."""
    conn = ServerConn(srv, key, engine_name, Limits())
    assert srv.move(conn, Acct.COUNTED, 0)
    srv.move(conn, Acct.PRIVATE if private else Acct.USED)
    srv.row.add(R_CONNECTS)
    return set_up_conn(conn)


def pooled_conn(srv: ServerRuntime, key: ConnKey, kind: ListKind, engine_name: str = "llhttp") -> ServerConn:
    """A connection that served its requests and sits in this worker's ``kind`` list: one request
    for IDLE, two for SAFE (``kind_after_release``), moved ``USED → IDLE/SAFE`` like a release."""
    conn = open_conn(srv, key, engine_name)
    conn.requests = 0 if kind is ListKind.IDLE else 1
    conn.make_idle()
    assert srv.move(conn, srv.pooled_state(kind), -1)
    srv.pool.add(conn, kind)
    return conn


def private_conn(
    srv: ServerRuntime, key: ConnKey, session: Session, engine_name: str = "llhttp"
) -> ServerConn:
    """A private connection (``http-reuse never``) idle in ``session``."""
    conn = open_conn(srv, key, engine_name, private=True)
    conn.make_idle()
    assert session.attach_conn(conn)
    return conn


class FakeConnectBackend(Backend):
    """The real ``Backend`` except ``_connect``, which opens nothing: it hands out real
    ``ServerConn`` objects on ``FakeTransport``\\ s (``open_conn``). ``gate``: a future each connect
    waits on first; ``swallow_cancel``: a connect cancelled at the gate still returns its connection
    (what ``asyncio.wait_for`` may do on Python 3.11); ``fail``: an exception every connect raises.
    ``finished`` records every ``finish(acq, conn, reusable)`` call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate: asyncio.Future[None] | None = None
        self.swallow_cancel = False
        self.fail: BaseException | None = None
        self.opened: list[ServerConn] = []
        self.connects = 0
        self.finished: list[tuple[ServerConn | None, bool]] = []

    async def _connect(self, acq: Acquisition) -> ServerConn:
        self.connects += 1
        if self.gate is not None:
            try:
                await self.gate
            except asyncio.CancelledError:
                if not self.swallow_cancel:
                    raise
        if self.fail is not None:
            raise self.fail
        conn = open_conn(acq.server, acq.key, self.engine_name, private=self.mode is ReuseMode.NEVER)
        self.opened.append(conn)
        return conn

    def finish(self, acq: Acquisition, conn: ServerConn | None, reusable: bool) -> None:
        self.finished.append((conn, reusable))
        super().finish(acq, conn, reusable)


_generations = itertools.count(1000)
_ROW_NAME = {off: name for name, off in ROW_FIELDS.items()}
_CELL_NAME = {off: name for name, off in CELL_FIELDS.items()}


class World:
    """Worker slot 0 of 2, backend ``be`` with servers ``s1``.. over a real ``ShmTable``, frontend
    ``fe`` (default backend ``be``) and its recording ``StreamEnv``. ``close()`` unlinks the table.

    ``other`` is worker slot 1's view of the same servers (to hold slots or queue places there)."""

    def __init__(
        self,
        *,
        engine_name: str = "llhttp",
        nservers: int = 1,
        server_port: int = 8080,
        maxconn: int = 0,
        maxqueue: int = 0,
        pool_max_conn: int = -1,
        reuse: ReuseMode = ReuseMode.SAFE,
        retries: int = 3,
        timeouts: Timeouts | None = None,
        fe_conn_mode: str = "keep-alive",
        be_conn_mode: str = "keep-alive",
        returns: list[HttpReturn] | None = None,
        forwardfor: bool = False,
        bufsize: int = 16384,
        real_connect: bool = False,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine_name = engine_name
        servers = [
            Server(
                name=f"s{i + 1}", host="127.0.0.1", port=server_port, maxconn=maxconn, maxqueue=maxqueue,
                pool_max_conn=pool_max_conn,
            )
            for i in range(nservers)
        ]  # fmt: skip
        self.be_cfg = Proxy(
            name="be", cap=Cap.BACKEND, servers=servers, http_reuse=reuse, retries=retries,
            timeouts=timeouts if timeouts is not None else Timeouts(), http_conn_mode=be_conn_mode,
        )  # fmt: skip
        self.fe_cfg = Proxy(
            name="fe", cap=Cap.FRONTEND, default_backend="be", http_conn_mode=fe_conn_mode,
            http_request=[HttpRule("return", cond=r.cond, ret=r) for r in returns or []],
            forwardfor=forwardfor, log_global=True,
        )  # fmt: skip
        config = Config(frontends={"fe": self.fe_cfg}, backends={"be": self.be_cfg})
        self.table = ShmTable.create(config, 2, generation=next(_generations))
        self.sent: list[tuple[int, Message]] = []  # datagrams to other workers
        self.link = WorkerLink(0, 2, self.loop)
        self.link.queues = Queues(self.table, 0, self.loop, self._send)
        self.servers = [self._runtime(s, 0) for s in servers]
        self.other = [self._runtime(s, 1) for s in servers]
        cls = Backend if real_connect else FakeConnectBackend
        self.backend = cls(self.be_cfg, self.servers, engine_name, Limits(), self.link)
        self.frontend = Frontend(self.fe_cfg, {"be": self.backend}, engine_name, Limits())
        self.env = RecordingEnv(self.frontend, bufsize=bufsize, engine_name=engine_name)

    def _runtime(self, s: Server, slot: int) -> ServerRuntime:
        i = self.table.server_index("be", s.name)
        return ServerRuntime("be", i, s, [self.table.cell(i, w) for w in range(2)], slot)

    def _send(self, slot: int, msg: Message) -> bool:
        self.sent.append((slot, msg))
        return True

    @property
    def fake(self) -> FakeConnectBackend:
        assert isinstance(self.backend, FakeConnectBackend)
        return self.backend

    @property
    def srv(self) -> ServerRuntime:
        return self.servers[0]

    def key(self, srv: ServerRuntime | None = None) -> ConnKey:
        return self.backend.key_for(srv or self.srv, PEER[0])

    def row(self, srv: ServerRuntime | None = None) -> dict[str, int]:
        """The server-wide gauges of ``srv``'s row, by name (``served``, ``conns``, ``used``, ...)."""
        entry = self.table.snapshot()["servers"][(srv or self.srv).index]
        return {name: entry[_ROW_NAME[off]] for name, off, _ in GAUGES}

    def cells_sum(self, srv: ServerRuntime | None = None) -> dict[str, int]:
        """Each gauge summed over the workers' cells: equal to ``row()`` when the books balance."""
        cells = self.table.snapshot()["servers"][(srv or self.srv).index]["cells"]
        return {
            name: sum(cell[_CELL_NAME[off]] for cell in cells for off in offs) for name, _, offs in GAUGES
        }

    def gauges(self, srv: ServerRuntime | None = None) -> dict[str, int]:
        """``row()`` after checking that it equals the sum of the cells."""
        row = self.row(srv)
        assert row == self.cells_sum(srv), f"row {row} != cells {self.cells_sum(srv)}"
        return row

    def new_stream(
        self, head: RequestHead, side: RecordingSide | None = None
    ) -> tuple[Stream, RecordingSide]:
        side = side if side is not None else RecordingSide()
        self.frontend.reconfigure()  # the test may have edited the configuration in place
        self.backend.reconfigure()
        stream = self.env.open_stream(side, head, time.monotonic())
        side.stream = stream
        return stream, side

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def sync(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` inside the running loop (no callback runs meanwhile)."""

        async def main() -> T:
            return fn()

        return self.loop.run_until_complete(main())

    def close(self) -> None:
        loop = self.loop
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()
        self.table.close()
        self.table.unlink()


def worlds() -> Iterator[Callable[..., World]]:
    """The body of a ``make_world`` fixture: a factory whose worlds are closed at teardown."""
    made: list[World] = []

    def make(**kwargs: Any) -> World:
        world = World(**kwargs)
        made.append(world)
        return world

    yield make
    for world in made:
        world.close()


# -- messages -------------------------------------------------------------------------------------
def request(
    method: bytes = b"GET",
    target: bytes = b"/",
    *,
    body: int | None = None,
    chunked: bool = False,
    version: bytes = b"1.1",
    keep_alive: bool = True,
    upgrade: bytes | None = None,
    headers: Headers | None = None,
) -> RequestHead:
    """A parsed request head: no body, ``body`` bytes of Content-Length, or chunked."""
    hdrs: Headers = [(b"Host", b"example.test"), *(headers or [])]
    framing, length = Framing.NONE, None
    if body is not None:
        framing, length = Framing.LENGTH, body
        hdrs.append((b"Content-Length", b"%d" % body))
    elif chunked:
        framing = Framing.CHUNKED
        hdrs.append((b"Transfer-Encoding", b"chunked"))
    if upgrade is not None:
        hdrs += [(b"Connection", b"upgrade"), (b"Upgrade", upgrade)]
    return RequestHead(
        method, target, version, hdrs, body=framing, content_length=length, keep_alive=keep_alive,
        upgrade=upgrade,
    )  # fmt: skip


def response(
    status: int = 200,
    *,
    framing: Framing = Framing.LENGTH,
    length: int | None = None,
    keep_alive: bool = True,
) -> ResponseHead:
    return ResponseHead(status, b"", b"1.1", [], body=framing, content_length=length, keep_alive=keep_alive)


def raw_frames(data: bytes) -> list[Any]:
    """The HTTP/2 frames in ``data`` (what a mux or engine wrote), parsed without a state machine."""
    out = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out
