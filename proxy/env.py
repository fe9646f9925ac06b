"""A stream's environment: what a stream and its client mux get from the worker, explicitly.

One ``StreamEnv`` per frontend per worker. It implements ``proxy.sides.ClientEnv`` for the client
muxes of that frontend's listeners (settings, a stream per request head, the client registry) and is
the stream's only way to the rest of the worker: routing (``frontend``), the body buffer limit
(``bufsize``), logging (``log_stream``/``log_error``), soft stop. A stream never reaches the worker
through its client connection.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final, Protocol

from mypy_extensions import mypyc_attr

from proxy.front_counter import FrontCounter
from proxy.log import HttpLogRecord, LogSink, format_httplog
from proxy.replies import Reply, error_reply
from proxy.stream import Stream

if TYPE_CHECKING:
    from proxy.config.model import Proxy
    from proxy.frontend import Frontend
    from proxy.h1 import Limits
    from proxy.message import RequestHead
    from proxy.services import Services
    from proxy.sides import ClientSide


_monotonic: Final = time.monotonic  # a C static when compiled (no module attribute lookup)


class Clients(Protocol):
    """The worker's registry of client connections (soft stop waits for it to empty)."""

    stopping: bool

    def client_opened(self, side: object) -> None: ...

    def client_closed(self, side: object) -> None: ...

    def client_count(self) -> int: ...

    def feconn(self, frontend: str) -> int:
        """Client connections open on ``frontend``, across workers (the shared table)."""
        ...

    def actconn(self) -> int:
        """Client connections open on every frontend, across workers."""
        ...

    def front_counter(self, frontend: str) -> FrontCounter:
        """The frontend's request counters in this worker's cell of the shared table."""
        ...

    def count_bad_request(self, frontend: str) -> None: ...


_SERIAL: Final = [0]  # requests opened in this process, all frontends together (``%rt``)


def request_line(head: RequestHead) -> str:
    method = head.method.decode("latin-1")
    return f"{method} {head.target.decode('latin-1')} HTTP/{head.version.decode('latin-1')}"


def _ms(a: float, b: float) -> int:
    return -1 if a <= 0.0 or b <= 0.0 else max(0, int((b - a) * 1000))


@mypyc_attr(allow_interpreted_subclasses=True)  # tests' fakes subclass it
class StreamEnv:
    """``log`` is used only when the frontend says ``log global`` (HAProxy: a proxy without a log
    target logs nothing)."""

    __slots__ = (
        "bufsize", "clients", "counter", "engine_name", "frontend", "limits", "log", "logging", "requests",
        "services",
    )  # fmt: skip

    def __init__(
        self,
        frontend: Frontend,
        clients: Clients,
        log: LogSink,
        engine_name: str,
        limits: Limits,
        bufsize: int,
    ) -> None:
        self.frontend = frontend
        self.clients = clients
        self.counter: FrontCounter | None = None  # the frontend's counters, from ``clients`` once
        self.log = log
        # ``log global``, and a target that takes ``info`` lines: else a request formats no line
        self.logging = frontend.cfg.log_global and log.wants("info")
        self.engine_name = engine_name
        self.limits = limits
        self.bufsize = bufsize  # request body bytes a stream holds while it has no connection
        self.requests = 0
        self.services: Services | None = None  # the worker's (``proxy.services``), set once built

    def serve(self, service: str, head: RequestHead) -> Reply:
        if self.services is None:
            return error_reply(503)
        return self.services.serve(service, head)

    def __repr__(self) -> str:
        return f"<StreamEnv fe={self.frontend.name} requests={self.requests}>"

    # -- ClientEnv ------------------------------------------------------------------------------
    @property
    def cfg(self) -> Proxy:
        return self.frontend.cfg

    @property
    def stopping(self) -> bool:
        return self.clients.stopping

    def next_serial(self) -> int:
        _SERIAL[0] += 1
        return _SERIAL[0]

    def open_stream(self, side: ClientSide, head: RequestHead, t_start: float) -> Stream:
        self.requests += 1
        return Stream(side, self, head, t_start)

    def client_opened(self, side: object) -> None:
        self.clients.client_opened(side)

    def client_closed(self, side: object) -> None:
        self.clients.client_closed(side)

    # -- logging --------------------------------------------------------------------------------
    def log_stream(self, stream: Stream, status: int) -> None:
        """The exchange ended: count it, and log it when the frontend logs."""
        bytes_out = stream.side.bytes_sent - stream.sent0
        name = self.frontend.name
        counter = self.counter
        if counter is None:
            counter = self.counter = self.clients.front_counter(name)
        counter.request(status, bytes_out)
        if not self.logging:
            return
        now = _monotonic()
        t0 = stream.t_start
        backend = stream.backend
        acq = stream.acq
        server = acq.server if acq is not None else None
        session = stream.side.session
        self.log.emit(
            format_httplog(
                HttpLogRecord(
                    client=f"{session.client_ip}:{session.client_port}",
                    accept_ts=time.time() - (now - t0),
                    frontend=self.frontend.name + ("~" if session.ssl else ""),  # HAProxy's %ft
                    backend=backend.name if backend is not None else self.frontend.name,
                    server=server.name if server is not None else "<NOSRV>",
                    tq=_ms(t0, stream.t_head),
                    tw=_ms(stream.t_head, acq.t_queued) if acq is not None else -1,
                    tc=_ms(stream.t_head, acq.t_connected) if acq is not None else -1,
                    tr=_ms(acq.t_connected, stream.t_resp) if acq is not None else -1,
                    ta=_ms(t0, now),
                    status=status,
                    bytes_out=bytes_out,
                    term=stream.term,
                    actconn=self.clients.actconn(),
                    feconn=self.clients.feconn(name),
                    beconn=sum(s.row.served for s in backend.servers) if backend is not None else 0,
                    srv_conn=server.row.served if server is not None else 0,
                    # connection retries, plus the replay of a request whose reused connection died
                    retries=(acq.retries if acq is not None else 0) + stream.retried,
                    request_line=request_line(stream.head),
                    redispatched=acq is not None and acq.redispatched,
                )
            )
        )

    def log_error(self, side: ClientSide, status: int, term: str, ta: int = 0) -> None:
        self.clients.count_bad_request(self.frontend.name)
        if not self.logging:
            return
        session = side.session
        nclients = self.clients.actconn()
        self.log.emit(
            format_httplog(
                HttpLogRecord(
                    client=f"{session.client_ip}:{session.client_port}",
                    accept_ts=time.time(),
                    frontend=self.frontend.name + ("~" if session.ssl else ""),  # HAProxy's %ft
                    backend=self.frontend.name,
                    server="<NOSRV>",
                    tq=-1,
                    tw=-1,
                    tc=-1,
                    tr=-1,
                    ta=ta,
                    status=status,
                    bytes_out=0,
                    term=term,
                    actconn=nclients,
                    feconn=self.clients.feconn(self.frontend.name),
                    beconn=0,
                    srv_conn=0,
                    retries=0,
                    request_line="<BADREQ>",
                )
            )
        )
