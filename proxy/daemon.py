"""``-D``: running in the background, HAProxy's way: the command returns once the listeners are bound.

``Detacher.fork()`` forks once. The parent waits on a pipe: the child (the future master) writes
``OK`` once its listeners, shared table, pidfile and CLI sockets are in place (``detach``), and the
parent exits 0; if the child fails first, it prints its ``[ALERT]`` line on the still-attached
stderr and exits 1, the pipe closes without ``OK``, and the parent exits 1 too. ``detach`` then
leaves the terminal: ``setsid`` was done at the fork, stdin/stdout/stderr go to /dev/null (log to
syslog with ``log`` lines; the master's notices are lost, as HAProxy's are in daemon mode).
"""

from __future__ import annotations

import contextlib
import os


class Detacher:
    def __init__(self) -> None:
        self._r, self._w = os.pipe()

    def fork(self) -> int | None:
        """The parent's exit code once the child has started or failed; None in the child."""
        pid = os.fork()
        if pid == 0:
            os.close(self._r)
            os.setsid()
            return None
        os.close(self._w)
        got = b""
        while True:
            try:
                chunk = os.read(self._r, 16)
            except InterruptedError:
                continue
            if not chunk:
                break
            got += chunk
        os.close(self._r)
        if got.startswith(b"OK"):
            return 0
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        return 1

    def detach(self) -> None:
        """In the child, once it is listening: tell the parent, and let go of the terminal."""
        with contextlib.suppress(OSError):
            os.write(self._w, b"OK")
        os.close(self._w)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:
            os.close(null)
