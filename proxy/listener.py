"""Listening sockets: bound once by the master, shared by every worker (DESIGN.md §2).

The master binds each distinct ``bind`` address before forking; workers inherit the file descriptors
and all accept on them (no SO_REUSEPORT per worker), so a worker that dies loses no queued
connection: the others keep accepting from the same backlog.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from proxy.config.model import Bind, Config

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


class BindError(Exception):
    pass


def bind_all(config: Config) -> list[Listener]:
    """Bind every frontend's addresses; raises BindError naming the address on failure."""
    out: list[Listener] = []
    try:
        for fe in config.frontends.values():
            for b in fe.binds:
                out.append(Listener(fe.name, b.host, b.port, _bind(b.host, b.port, fe.name), b))
    except BaseException:
        for lst in out:
            lst.sock.close()
        raise
    return out


def _bind(host: str, port: int, frontend: str) -> socket.socket:
    if host in ("", "*", "0.0.0.0"):
        family, addr = socket.AF_INET, "0.0.0.0"
    elif host == "::" or ":" in host:
        family, addr = socket.AF_INET6, host
    else:
        family, addr = socket.AF_INET, host
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BindError(
            f"Starting frontend {frontend}: cannot bind socket [{addr}:{port}]: {exc.strerror}"
        ) from exc
    sock.set_inheritable(True)
    return sock
