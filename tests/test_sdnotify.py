"""systemd's notify protocol (proxy.sdnotify) against real Unix datagram sockets, path and abstract."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from proxy.sdnotify import Notifier, address, monotonic_usec


def test_address_maps_at_to_the_abstract_namespace() -> None:
    assert address("@/org/freedesktop/systemd1/notify/123") == b"\0/org/freedesktop/systemd1/notify/123"
    assert address("/run/systemd/notify") == "/run/systemd/notify"


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready("x") and n.sent == []


def test_datagrams_to_a_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(path)
        n = Notifier({"NOTIFY_SOCKET": path})
        before = monotonic_usec()
        assert n.ready("generation 1, 2 workers")
        assert n.reloading()
        assert n.stopping()
        ready = dict(line.split("=", 1) for line in rx.recv(4096).decode().splitlines())
        assert ready == {"READY": "1", "MAINPID": str(os.getpid()), "STATUS": "generation 1, 2 workers"}
        reloading = dict(line.split("=", 1) for line in rx.recv(4096).decode().splitlines())
        assert reloading["RELOADING"] == "1"
        # MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds, as systemd compares it with its own clock
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert before <= int(reloading["MONOTONIC_USEC"]) <= after
        assert rx.recv(4096).startswith(b"STOPPING=1\n")


def test_datagrams_to_an_abstract_socket() -> None:
    name = f"@poolproxy-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(b"\0" + name[1:].encode())
        assert Notifier({"NOTIFY_SOCKET": name}).status("hello")
        assert rx.recv(4096) == b"STATUS=hello"


def test_a_missing_listener_is_not_an_error(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert n.enabled and not n.ready("x") and n.sent == []
