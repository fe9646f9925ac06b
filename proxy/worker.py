"""A worker process: one uvloop event loop serving the shared listeners.

``run()`` is entered right after the fork (the master never runs an event loop, DESIGN.md §2). It
builds this worker's runtime objects from the configuration (frontends, backends, each server with
its own idle pool), accepts on every inherited listener, tells the master ``READY`` over the control
socket, and serves until a signal:

- SIGTERM: hard stop, exit at once (connections are cut);
- SIGUSR1: soft stop: stop accepting, close idle client connections and idle server connections,
  let in-flight requests finish (their connections close after the response), exit when none is left;
- SIGINT is ignored: in the foreground a Ctrl-C reaches the whole process group and the master
  decides. The worker also exits if the master dies (parent-death signal, and a periodic check).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import time
from typing import NoReturn

from proxy.backend import ORDERS, Backend, WorkerLink
from proxy.config.model import Config
from proxy.frontend import Frontend
from proxy.h1 import Limits
from proxy.listener import Listener
from proxy.log import HttpLogRecord, LogSink, format_httplog, notice
from proxy.message import RequestHead
from proxy.mux_h1 import ClientConn
from proxy.queue import Queues
from proxy.server import ServerRuntime
from proxy.shm import ShmTable
from proxy.stream import Stream
from proxy.takeover import Channel, Handed, Message

PR_SET_PDEATHSIG = 1
HEARTBEAT_INTERVAL = 1.0


def request_line(head: RequestHead) -> str:
    method = head.method.decode("latin-1")
    return f"{method} {head.target.decode('latin-1')} HTTP/{head.version.decode('latin-1')}"


def _ms(a: float, b: float) -> int:
    return -1 if a <= 0.0 or b <= 0.0 else max(0, int((b - a) * 1000))


class WorkerState:
    """Everything one worker owns; the protocols reach the rest of the worker through it.

    It is also the ``takeover.Victim`` of this worker's channel: other workers' requests for idle
    connections, slot hand-offs, kills and purge shares arrive here and go to the backend owning
    the server."""

    def __init__(self, slot: int, config: Config, loop: asyncio.AbstractEventLoop, table: ShmTable) -> None:
        self.slot = slot
        self.config = config
        self.loop = loop
        self.table = table
        g = config.global_
        limits = Limits(max_head=g.bufsize, max_headers=g.maxhdr)
        self.link = WorkerLink(slot, table.nworkers, loop)
        self.link.shared = g.idle_pool_shared
        self.link.late = self.adopt_late
        self.channel: Channel | None = None
        self.queues = Queues(table, slot, loop, self._send)
        self.by_index: dict[int, tuple[Backend, ServerRuntime]] = {}
        self.backends: dict[str, Backend] = {}
        for name, cfg in config.backends.items():
            servers = []
            for s in cfg.servers:
                i = table.server_index(name, s.name)
                cells = [table.cell(i, w) for w in range(table.nworkers)]
                servers.append(ServerRuntime(name, i, s, cells, slot))
            backend = self.backends[name] = Backend(cfg, servers, g.h1_engine, limits, self.link)
            for srv in servers:
                self.by_index[srv.index] = (backend, srv)
        self.frontends = {
            name: Frontend(cfg, self.backends, g.h1_engine, limits) for name, cfg in config.frontends.items()
        }
        self.clients: set[ClientConn] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.stopping = False
        self.requests = 0
        self.log = LogSink(g.logs)

    # -- bookkeeping called by client connections ---------------------------------------------
    def client_opened(self, client: ClientConn) -> None:
        self.clients.add(client)

    def client_closed(self, client: ClientConn) -> None:
        self.clients.discard(client)
        if self.stopping and not self.clients:
            self.loop.stop()

    def log_stream(self, client: ClientConn, stream: Stream, status: int) -> None:
        if not self.log.enabled:
            return
        now = time.monotonic()
        wall = time.time()
        t0 = stream.t_start
        head = stream.head
        backend = stream.backend
        server = stream.server
        srv_conn = server.row.served if server is not None else 0
        self.log.emit(
            format_httplog(
                HttpLogRecord(
                    client=f"{client.session.client_ip}:{client.session.client_port}",
                    accept_ts=wall - (now - t0),
                    frontend=client.frontend.name,
                    backend=backend.name if backend is not None else client.frontend.name,
                    server=server.name if server is not None else "<NOSRV>",
                    tq=_ms(t0, stream.t_head),
                    tw=_ms(stream.t_head, stream.t_queued),
                    tc=_ms(stream.t_head, stream.t_connected),
                    tr=_ms(stream.t_connected, stream.t_resp),
                    ta=_ms(t0, now),
                    status=status,
                    bytes_out=stream.bytes_out,
                    term=stream.term,
                    actconn=len(self.clients),
                    feconn=len(self.clients),
                    beconn=sum(s.row.served for s in backend.servers) if backend is not None else 0,
                    srv_conn=srv_conn,
                    retries=1 if stream.retried else 0,
                    request_line=request_line(head),
                )
            )
        )

    def log_error(self, client: ClientConn, status: int, term: str, reason: str) -> None:
        if not self.log.enabled:
            return
        self.log.emit(
            format_httplog(
                HttpLogRecord(
                    client=f"{client.session.client_ip}:{client.session.client_port}",
                    accept_ts=time.time(),
                    frontend=client.frontend.name,
                    backend=client.frontend.name,
                    server="<NOSRV>",
                    tq=-1,
                    tw=-1,
                    tc=-1,
                    tr=-1,
                    ta=0,
                    status=status,
                    bytes_out=0,
                    term=term,
                    actconn=len(self.clients),
                    feconn=len(self.clients),
                    beconn=0,
                    srv_conn=0,
                    retries=0,
                    request_line="<BADREQ>",
                )
            )
        )

    # -- takeover.Victim: what other workers and the master ask of us ---------------------------
    def _send(self, slot: int, msg: Message) -> bool:
        return self.channel.send(slot, msg) if self.channel is not None else False

    def give_idle(self, server: int, key: int, order: int) -> tuple[int, int, int] | None:
        found = self.by_index.get(server)
        ckey = self.link.keys.get(key)
        if found is None or ckey is None or not 0 <= order < len(ORDERS):
            return None
        backend, srv = found
        return backend.give_idle(srv, ckey, ORDERS[order])

    def handed_over(self, server: int, thief: int, sent: bool) -> None:
        found = self.by_index.get(server)
        if found is not None:
            found[0].handed_over(found[1], thief, sent)

    def slot_granted(self, server: int) -> None:
        found = self.by_index.get(server)
        if found is not None:
            self.queues.granted(found[1])

    def kill_idle(self, server: int) -> None:
        found = self.by_index.get(server)
        if found is not None:
            found[0].kill_idle(found[1])

    def purge(self, server: int, to_close: int, idle_total: int) -> None:
        found = self.by_index.get(server)
        if found is not None:
            found[0].purge(found[1], to_close, idle_total)

    def adopt_late(self, handed: Handed) -> None:
        found = self.by_index.get(handed.server)
        if found is None:
            os.close(handed.fd)
            return
        found[0].adopt_late(found[1], handed)

    def heartbeat(self) -> None:
        """Every second: tell the master we live, and claim any maxconn slot handed to this slot
        whose SLOT datagram never arrived (sent while the slot was being respawned): passed on to
        a waiter, or given back, so a slot is never stranded."""
        self.table.heartbeat(self.slot)
        for _backend, srv in self.by_index.values():
            if srv.cell.incoming > 0:
                self.queues.granted(srv)
        if not self.stopping:
            self.loop.call_later(HEARTBEAT_INTERVAL, self.heartbeat)

    # -- stopping -----------------------------------------------------------------------------
    def soft_stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.link.stopping = True
        for srv in self.servers:
            srv.close()
        for backend in self.backends.values():
            backend.close_idle()
        for client in list(self.clients):
            if client.stream is None and client.tunnel_stream is None and not client.inbox:
                client.close()
        if not self.clients:
            self.loop.stop()

    def hard_stop(self) -> None:
        self.stopping = True
        self.loop.stop()


def _set_pdeathsig() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _watch_parent(loop: asyncio.AbstractEventLoop, ppid: int, state: WorkerState) -> None:
    if os.getppid() != ppid:
        state.hard_stop()
        return
    loop.call_later(1.0, _watch_parent, loop, ppid, state)


def run(
    slot: int, config: Config, listeners: list[Listener], ctl: socket.socket, ppid: int, table: ShmTable
) -> NoReturn:
    """The worker's main: never returns (the process exits)."""
    import uvloop  # imported after the fork, only in workers

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _set_pdeathsig()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    state = WorkerState(slot, config, loop, table)
    loop.add_signal_handler(signal.SIGTERM, state.hard_stop)
    loop.add_signal_handler(signal.SIGUSR1, state.soft_stop)
    code = 0
    try:
        state.channel = state.link.channel = Channel(loop, table.name, slot, state)
        state.heartbeat()
        for lst in listeners:
            frontend = state.frontends[lst.frontend]

            def factory(fe: Frontend = frontend) -> ClientConn:
                return ClientConn(fe, state)

            server = loop.run_until_complete(loop.create_server(factory, sock=lst.sock, backlog=1024))
            state.servers.append(server)
        with contextlib.suppress(OSError):
            ctl.send(f"READY {slot} {os.getpid()}".encode())
        _watch_parent(loop, ppid, state)
        if not state.stopping:
            loop.run_forever()
    except Exception as exc:  # a worker that cannot start says why; the master respawns it
        notice(f"worker {slot} failed: {exc!r}")
        code = 1
    finally:
        if state.stopping:
            notice(f"worker {slot} (pid {os.getpid()}) exiting after {state.requests} requests")
    os._exit(code)
