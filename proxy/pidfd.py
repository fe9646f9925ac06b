"""Taking a sibling's descriptor directly (Linux 5.6+), and peeking at a parked connection.

``pidfd_getfd(pidfd, targetfd, 0)`` puts into the caller's table a duplicate of descriptor
``targetfd`` of the process that ``pidfd`` names (``os.pidfd_open``), the same open file: the same
TCP connection. Python 3.11 has no wrapper, so it is called through ``syscall(2)`` with ctypes
(``SYS_pidfd_getfd`` is 438 on every architecture: syscalls from 424 on share one number). The
kernel allows it when the caller may ``ptrace`` the target (``PTRACE_MODE_ATTACH_REALCREDS``): same
user and Yama's ``ptrace_scope`` 0, or ``CAP_SYS_PTRACE``. A seccomp filter, an older kernel
(ENOSYS) or Yama (EPERM between siblings) refuses it: ``probe`` tells, once per worker at start, and
the worker then steals over the SCM_RIGHTS channel instead (``proxy.takeover``).

``peek(fd)``: a non-blocking ``recv(MSG_PEEK)`` of one byte, which consumes nothing: whether a
parked connection is still fit for a request (nothing to read), closed by its server (EOF) or out
of sync (unexpected bytes), without reading it on behalf of whoever will use it. ``peek_code(fd)``
is the same as an int (``Peek`` in declaration order: 0 is READY), the form the hot path calls: a
worker of several peeks at a pooled connection on every reuse. It is ``proxy._peek`` (C) where
built, else the same call through ctypes (``peek_code_ctypes``; ``POOLPROXY_PEEK=ctypes`` forces it).

``POOLPROXY_STEAL`` forces the mechanism: ``pidfd`` (the default where the probe succeeds),
``channel`` (always the SCM_RIGHTS channel), or ``auto``.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import socket
from collections.abc import Callable
from typing import Final

SYS_pidfd_getfd: Final = 438
ENV_VAR: Final = "POOLPROXY_STEAL"

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_int, ctypes.c_uint]
_recv = _libc.recv
_recv.restype = ctypes.c_ssize_t
_recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_shutdown = _libc.shutdown
_shutdown.restype = ctypes.c_int
_shutdown.argtypes = [ctypes.c_int, ctypes.c_int]
_BYTE = ctypes.create_string_buffer(1)
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def pidfd_open(pid: int) -> int:
    """A pidfd for ``pid`` (``OSError`` if it is gone: ESRCH)."""
    return os.pidfd_open(pid)


def getfd(pidfd: int, target_fd: int) -> int:
    """A duplicate of the target's descriptor ``target_fd`` in this process (close-on-exec).
    ``OSError``: EBADF (no such descriptor there), ESRCH (the process exited), EPERM (not allowed),
    ENOSYS (kernel older than 5.6)."""
    fd = _syscall(SYS_pidfd_getfd, pidfd, target_fd, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd: {os.strerror(err)}")
    return int(fd)


class Peek(enum.Enum):
    READY = "ready"  # nothing to read: fit for a request
    EOF = "eof"  # the server closed it
    DATA = "data"  # bytes nobody asked for: out of sync, never reuse
    ERROR = "error"  # reset, or not a socket any more


_CODES: Final = tuple(Peek)  # peek_code's answers, in order


def peek_code_ctypes(fd: int) -> int:
    """``peek_code`` through ctypes (where ``proxy._peek`` is not built)."""
    n = _recv(fd, _BYTE, 1, _PEEK)
    if n > 0:
        return 2
    if n == 0:
        return 1
    err = ctypes.get_errno()
    return 0 if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR) else 3


peek_code: Callable[[int], int] = peek_code_ctypes
if os.environ.get("POOLPROXY_PEEK", "auto") != "ctypes":
    try:
        from proxy._peek import peek as peek_code
    except ImportError:  # not built (POOLPROXY_NO_EXT): ctypes
        pass


def peek(fd: int) -> Peek:
    """What a parked connection's descriptor holds, without consuming anything."""
    return _CODES[peek_code(fd)]


def shutdown(fd: int) -> None:
    """``shutdown(fd, SHUT_RDWR)``, errors ignored (already closed by the peer, not connected)."""
    _shutdown(fd, socket.SHUT_RDWR)


def probe(pid: int, fd: int) -> str | None:
    """Whether this process may take descriptors from ``pid`` (a process of the same standing as
    the workers it will steal from: the master, whose children they all are, is refused by Yama
    exactly when a sibling would be): None if ``pidfd_getfd`` of its descriptor ``fd`` worked, else
    why not, in words. ``POOLPROXY_STEAL=channel`` makes it refuse."""
    forced = os.environ.get(ENV_VAR, "auto")
    if forced == "channel":
        return f"{ENV_VAR}=channel"
    try:
        pidfd = pidfd_open(pid)
    except (OSError, AttributeError) as exc:
        return f"pidfd_open refused: {exc}"
    try:
        dup = getfd(pidfd, fd)
    except OSError as exc:
        if exc.errno == errno.EBADF:  # the kernel checked the permission first: allowed
            return None
        return f"pidfd_getfd refused: {errno.errorcode.get(exc.errno or 0, exc.errno)} ({exc.strerror})"
    finally:
        os.close(pidfd)
    os.close(dup)
    return None


def probe_from_child() -> str | None:
    """``probe`` as a worker runs it (a child of this process taking one of its descriptors), for
    ``poolproxy -vv``: None if allowed, else why not."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            why = probe(os.getppid(), r)  # the parent's read end: open until it has read
            os.write(w, (why or "").encode()[:512])
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        out = os.read(r, 512).decode()
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return out or None


def ptrace_scope() -> int | None:
    """Yama's ``kernel.yama.ptrace_scope`` (None without Yama), for messages."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
