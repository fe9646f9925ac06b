"""systemd's notify protocol (``Type=notify``), spoken by the master in ``-Ws`` mode; no dependency.

The protocol is one ``AF_UNIX``/``SOCK_DGRAM`` datagram per notification, sent to the path in
``$NOTIFY_SOCKET`` (a name starting with ``@`` is in the abstract namespace: the ``@`` becomes a NUL
byte), holding newline-separated ``KEY=VALUE`` assignments. The master sends:

- ``READY=1`` (with ``MAINPID=<master pid>`` and a ``STATUS=``) once the first generation's workers
  accept connections;
- ``RELOADING=1`` with ``MONOTONIC_USEC=<CLOCK_MONOTONIC in µs>`` when a reload starts, then
  ``READY=1`` when it is over, successful or not (systemd waits for it either way), with a
  ``STATUS=`` line saying which: the generation and worker count, or the reload's error;
- ``STOPPING=1`` when it begins to stop.

``Notifier`` is a no-op when the variable is unset (started by hand, or not in ``-Ws`` mode). A
failed send is ignored: systemd not listening must never stop the proxy. A send waits at most
``SEND_TIMEOUT`` for room (a Unix datagram socket's queue is short: a slow reader must neither lose
the message at once nor freeze the master).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping

SEND_TIMEOUT = 0.2  # seconds a notification may wait for room in the receiver's queue


def address(value: str) -> str | bytes:
    """The socket address ``$NOTIFY_SOCKET`` names (abstract names start with ``@``)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends notifications to ``$NOTIFY_SOCKET`` (taken from ``env`` when created)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
        self.target: str | bytes | None = address(value) if value else None
        self.sent: list[str] = []  # what was sent, in order (for ``show proc`` and the tests)

    @property
    def enabled(self) -> bool:
        return self.target is not None

    def send(self, **fields: object) -> bool:
        """One datagram of ``KEY=VALUE`` lines (keyword names are upper-cased); True if sent."""
        if self.target is None:
            return False
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items())
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            # A full receive queue (a Unix datagram socket queues ~10 messages) must not block the
            # master for long: wait a moment for the reader, then drop the message.
            s.settimeout(SEND_TIMEOUT)
            try:
                s.sendto(msg.encode(), self.target)
            except OSError:
                return False
        self.sent.append(msg)
        return True

    def ready(self, status: str) -> bool:
        return self.send(ready=1, mainpid=os.getpid(), status=status)

    def reloading(self, status: str = "Reloading") -> bool:
        return self.send(reloading=1, monotonic_usec=monotonic_usec(), status=status)

    def stopping(self, status: str = "Stopping") -> bool:
        return self.send(stopping=1, status=status)

    def status(self, status: str) -> bool:
        return self.send(status=status)


def unset_in_children() -> None:
    """Workers must not talk to systemd: drop the variable from this (forked) process."""
    with contextlib.suppress(KeyError):
        del os.environ["NOTIFY_SOCKET"]
