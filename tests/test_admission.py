"""maxconn: the limits divided between workers (unit), and connections beyond a frontend's limit
waiting in the listen backlog until one closes (end-to-end, once: nothing here depends on the
HTTP/1 engine)."""

from __future__ import annotations

import socket

import pytest
from harness import MakeProxy, Origin, free_port, proxy_config, wait_for

from proxy.admission import Gate, gate_for, share


def test_share_divides_exactly() -> None:
    assert [share(10, 4, s) for s in range(4)] == [3, 3, 2, 2]
    assert [share(3, 4, s) for s in range(4)] == [1, 1, 1, 0]  # a share of 0: never accepts
    assert sum(share(1001, 7, s) for s in range(7)) == 1001
    assert share(0, 4, 0) == 0


def test_gate() -> None:
    g = Gate(2)
    assert not g.opened() and g.opened() and g.full  # the second makes it full: stop accepting
    assert g.closed() and not g.full  # back under: accept again
    unlimited = gate_for(0, 4, 1)
    assert unlimited.limit is None and not unlimited.opened() and not unlimited.full
    assert gate_for(3, 4, 3).full  # share 0


def backlog(port: int) -> int:
    """Connections waiting in the accept queue of the socket listening on ``port`` (IPv4)."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"nothing listens on {port}")


def ask(sock: socket.socket) -> None:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")


def answered(sock: socket.socket) -> bool:
    sock.settimeout(5)
    return sock.recv(65536).startswith(b"HTTP/1.1 200 ")


@pytest.mark.e2e
def test_frontend_maxconn_leaves_the_rest_in_the_backlog(make_proxy: MakeProxy, origin: Origin) -> None:
    """maxconn 3 over 2 workers (shares 2 and 1): of 5 connections, 3 are served, 2 wait in the
    backlog; each one that closes lets one more in."""
    port = free_port()
    config = proxy_config(port, origin.port, nbthread=2).replace(
        f"bind 127.0.0.1:{port}", f"bind 127.0.0.1:{port}\n    maxconn 3"
    )
    make_proxy(config, ports=[port], workers=2)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    try:
        for c in clients:
            ask(c)
        wait_for(lambda: sum(map(_ready, clients)) == 3, message="three connections served")
        assert backlog(port) == 2
        served = [c for c in clients if _ready(c)]
        waiting = [c for c in clients if c not in served]
        served[0].close()
        wait_for(lambda: sum(map(_ready, waiting)) == 1, message="one more served")
        assert backlog(port) == 1
        for c in served[1:]:
            c.close()
        wait_for(lambda: backlog(port) == 0, message="all accepted")
        assert all(answered(c) for c in waiting)
    finally:
        for c in clients:
            c.close()


def _ready(sock: socket.socket) -> bool:
    """An answer is there to read (without consuming it)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False
