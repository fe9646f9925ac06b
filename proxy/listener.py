"""Listening sockets: bound once by the master, shared by every worker (DESIGN.md §2).

The master binds each distinct ``bind`` address before forking; workers inherit the file descriptors
and all accept on them (no SO_REUSEPORT per worker), so a worker that dies loses no queued
connection: the others keep accepting from the same backlog.

Across a reload the master keeps these sockets (``reconcile``): an address of the new configuration
that is already bound keeps its socket (the new generation of workers accepts from the same backlog,
so no connection is refused), a new address is bound, and the sockets of addresses gone from the
configuration are returned for the master to close once the old generation has stopped.

Sockets may also come from elsewhere: ``-x SOCKET`` receives an old process's listening sockets
(``proxy.daemon.receive_listeners``) and ``bind_all(config, inherited=...)`` uses those whose
address matches instead of binding. Sockets are bound with ``SO_REUSEPORT`` (HAProxy's default,
``noreuseport`` turns it off) so that ``-sf``/``-st`` without ``-x`` can bind next to the old
process before it is told to stop.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.config.model import Bind, Config, Where

BACKLOG = 1024


@dataclass(slots=True)
class Listener:
    frontend: str
    host: str
    port: int
    sock: socket.socket
    bind: Bind | None = None  # its line's settings (protocol, TLS)

    def __repr__(self) -> str:
        return f"<Listener {self.frontend} {self.host or '*'}:{self.port} fd={self.sock.fileno()}>"

    @property
    def key(self) -> tuple[str, int]:
        return address_key(self.host, self.port)


class BindError(Exception):
    pass


def address_key(host: str, port: int) -> tuple[str, int]:
    """The address a bind line names, normalised ("*", "" and 0.0.0.0 are the same)."""
    return (_family_addr(host)[1], port)


def bind_all(config: Config, inherited: Iterable[socket.socket] = ()) -> list[Listener]:
    """Bind every frontend's addresses (using an ``inherited`` socket whose local address matches,
    instead of binding); raises BindError naming the address on failure."""
    return reconcile([], config, inherited)[0]


def reconcile(
    current: list[Listener], config: Config, inherited: Iterable[socket.socket] = ()
) -> tuple[list[Listener], list[Listener]]:
    """The listeners ``config`` needs, and those of ``current`` it no longer needs (the caller
    closes them when nobody accepts on them any more). A socket of ``current`` or ``inherited``
    bound to a wanted address is kept as it is (never closed, never re-bound). On BindError,
    what this call bound is closed and ``current`` is left untouched."""
    pool: dict[tuple[str, int], socket.socket] = {}
    for sock in inherited:
        addr = sock.getsockname()
        pool.setdefault(address_key(str(addr[0]), int(addr[1])), sock)
    for lst in current:
        pool[lst.key] = lst.sock
    kept: set[tuple[str, int]] = set()
    fresh: list[socket.socket] = []
    out: list[Listener] = []
    reuseport = config.global_.reuseport
    try:
        for fe in config.frontends.values():
            for b in fe.binds:
                key = address_key(b.host, b.port)
                found = pool.get(key) if key not in kept else None
                if found is None:
                    sock = _bind(b.host, b.port, fe.name, reuseport, b.where)
                    fresh.append(sock)
                else:
                    sock = found
                    sock.set_inheritable(True)
                    sock.setblocking(False)
                kept.add(key)
                out.append(Listener(fe.name, b.host, b.port, sock, b))
    except BaseException:
        for sock in fresh:
            sock.close()
        raise
    gone = [lst for lst in current if lst.key not in kept]
    return out, gone


def _family_addr(host: str) -> tuple[socket.AddressFamily, str]:
    if host in ("", "*", "0.0.0.0"):
        return socket.AF_INET, "0.0.0.0"
    if host == "::" or ":" in host:
        return socket.AF_INET6, host
    return socket.AF_INET, host


def _bind(
    host: str, port: int, frontend: str, reuseport: bool = True, where: Where | None = None
) -> socket.socket:
    family, addr = _family_addr(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((addr, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        line = f" ({where})" if where is not None else ""  # the bind line, as HAProxy names it
        raise BindError(
            f"Starting frontend {frontend}: cannot bind socket [{addr}:{port}]{line}: {exc.strerror}"
        ) from exc
    sock.set_inheritable(True)
    return sock
