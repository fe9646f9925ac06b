"""Atomic 64-bit words in a shared buffer: the one atomics API the rest of poolproxy imports.

Theory of operation
-------------------
The shared-memory table is an ``mmap`` that several processes map. Its counters are signed 64-bit
little-endian words at 8-aligned offsets. ``attach(buf, lock_name)`` returns an ``Atomics`` object
whose methods operate on one word, given its byte offset::

    words = attach(mm, lock_name_for(segment_name), create=True)   # creator (the master)
    words = attach(mm, lock_name_for(segment_name))                # anyone else, forked or not
    prev = words.fetch_add(off, 1)
    ...
    words.close()                       # before mm.close(); the buffer is exported until then
    unlink_lock(lock_name_for(segment_name))                       # creator, when the table ends

Two backends implement it, chosen once at import (``BACKEND``):

- ``"c"``: ``proxy._atomic.View`` (``ext/atomic.c``): ``__atomic`` builtins, sequentially
  consistent and lock-free; nothing can be left held by a process that dies. ``lock_name`` and
  ``create`` are checked for form and otherwise ignored: no semaphore exists.
- ``"fallback"``: pure Python for platforms where the extension was not built. Each operation runs
  under a named POSIX semaphore (``posix_ipc``), so it is atomic against every process that attached
  the same buffer with the same ``lock_name``, forked or unrelated; reads and writes go through
  ``struct`` ``'<q'``. It costs one semaphore acquire and release per operation.

``POOLPROXY_ATOMICS`` forces the choice: ``c`` (fail at import if the extension is missing),
``fallback``, or ``auto`` (the default: ``c`` where importable). ``attach(..., backend=...)``
picks one explicitly (the tests run every case on both).

Contract (both backends, identical results)
-------------------------------------------
- ``buf`` exports a writable, contiguous buffer (``mmap.mmap``, ``bytearray``, writable
  ``memoryview``) whose memory is 8-byte aligned; otherwise ``BufferError``/``TypeError`` for the
  buffer, ``ValueError`` for the alignment. While attached, ``buf`` cannot be resized or closed.
- ``off``: an int with ``off % 8 == 0`` and ``0 <= off <= len(buf) - 8``, else ``ValueError``.
- values are ints in ``[-2**63, 2**63)``, else ``OverflowError``; ``fetch_add`` wraps around in
  two's complement, it never raises on overflow.
- ``load``/``store``/``exchange``/``fetch_add``/``fetch_max``/``compare_exchange`` are each one
  atomic, sequentially consistent step; ``fetch_*`` and ``exchange`` return the previous value,
  ``compare_exchange`` whether it stored. Decisions that must never overshoot a limit (maxconn) are
  compare-exchange loops over these; plain counters use ``fetch_add``.
- After ``close()`` every operation raises ``ValueError``; ``close()`` is idempotent.
- All processes attached to one table must use the same backend: a C process does not take the
  fallback's semaphore. The table header is the place to record ``BACKEND``.

Known weakness of the fallback
------------------------------
A process that dies (SIGKILL, crash) between acquiring and releasing the semaphore leaves it held
forever, and every other process then blocks. The C backend has no lock and no such failure.
The fallback bounds the wait: an operation that cannot get the lock within ``LOCK_TIMEOUT_S``
raises ``LockTimeout`` rather than hanging; recovery is a new generation with a fresh table and
lock (``create=True`` refuses a leftover name, ``unlink_lock`` removes it). For the same reason an
atomic operation must not run inside a signal handler that could interrupt another one in the same
process (the semaphore is not reentrant); poolproxy's handlers only enqueue.
"""

from __future__ import annotations

import operator
import os
import struct
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, Protocol, Self

import posix_ipc

if TYPE_CHECKING:
    from typing_extensions import Buffer

try:
    from proxy import _atomic

    _HAVE_C = True
except ImportError:  # the extension was not built (POOLPROXY_NO_EXT, no compiler)
    _HAVE_C = False

__all__ = [
    "AVAILABLE",
    "BACKEND",
    "LOCK_TIMEOUT_S",
    "WORD",
    "Atomics",
    "LockTimeout",
    "attach",
    "lock_name_for",
    "unlink_lock",
]

WORD: Final = 8
LOCK_TIMEOUT_S: Final = 10.0
ENV_VAR: Final = "POOLPROXY_ATOMICS"

_MIN: Final = -(1 << 63)
_MAX: Final = (1 << 63) - 1
_MASK: Final = (1 << 64) - 1
_FMT: Final = struct.Struct("<q")
_MAX_PAIRS: Final = 16  # the C backend's bound on a compound operation's pairs (store_many checks it)


class Atomics(Protocol):
    """Operations on the words of one attached buffer. See the module docstring for the contract."""

    @property
    def closed(self) -> bool: ...

    @property
    def nbytes(self) -> int: ...

    def load(self, off: int, /) -> int: ...

    def store(self, off: int, value: int, /) -> None: ...

    def exchange(self, off: int, value: int, /) -> int: ...

    def fetch_add(self, off: int, delta: int, /) -> int: ...

    def fetch_max(self, off: int, value: int, /) -> int: ...

    def compare_exchange(self, off: int, expected: int, desired: int, /) -> bool: ...

    def add_many(self, ops: tuple[int, ...], src: int = -1, peaks: tuple[int, ...] = (), /) -> int:
        """``fetch_add`` each ``(off, delta)`` pair of ``ops`` in order; with ``src >= 0``, return
        the value the ``src``-th pair left in its word and ``fetch_max`` it into each of ``peaks``
        (else return 0). Every offset is checked before anything changes."""
        ...

    def store_many(self, ops: tuple[int, ...], /) -> None:
        """``store`` each ``(off, value)`` pair of ``ops`` in order (at most 16 pairs): a word
        stored last is seen after the others. Every offset is checked before anything changes."""
        ...

    def bounded_add(
        self, seq: int, off: int, limit: int, ops: tuple[int, ...], peaks: tuple[int, ...], /
    ) -> int | None:
        """+1 on the word at ``off`` unless it is >= ``limit`` (compare-exchange: never above), the
        word at ``seq`` incremented before and after the change (a paired operation), then the
        ``ops`` adds and ``fetch_max`` into ``peaks``. The new value, or None when refused."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> None: ...


class LockTimeout(TimeoutError):
    """The fallback's semaphore stayed held for ``LOCK_TIMEOUT_S``: most likely a process died
    holding it. The table cannot be trusted to make progress any more."""


# ---- names --------------------------------------------------------------------------------------


def lock_name_for(shm_name: str) -> str:
    """The semaphore name that goes with a shared-memory segment name, so that every process that
    can name the segment can name its lock (``/poolproxy.123.4`` -> ``/poolproxy.123.4.lock``)."""
    return "/" + shm_name.lstrip("/") + ".lock"


def _check_lock_name(name: str) -> None:
    # POSIX: portable names are one leading slash and no other. Checked on both backends, so that
    # a name that works with the C backend also works with the fallback.
    if not name.startswith("/") or "/" in name[1:] or len(name) < 2:
        raise ValueError(f"lock name must be '/' followed by a name without '/': {name!r}")


def unlink_lock(lock_name: str) -> bool:
    """Remove the fallback's semaphore (whatever the backend: it may be left from an earlier run).
    Returns whether it existed. Processes that have it open keep working; new attaches fail."""
    _check_lock_name(lock_name)
    try:
        posix_ipc.unlink_semaphore(lock_name)
    except posix_ipc.ExistentialError:
        return False
    return True


# ---- fallback -----------------------------------------------------------------------------------


class _LockedWords:
    """The fallback backend: every operation runs under the named semaphore ``lock_name``.

    Holds a memoryview of the buffer (so the buffer can no more be closed under it than under the
    C View) and the open semaphore. Forked children may keep using an inherited instance.
    """

    __slots__ = ("_closed", "_last", "_mv", "_sem", "lock_name")

    def __init__(self, mv: memoryview, sem: posix_ipc.Semaphore, lock_name: str) -> None:
        self._mv = mv
        self._sem = sem
        self.lock_name = lock_name
        self._closed = False
        # The highest valid offset; negative once closed, so that one comparison guards both.
        self._last = mv.nbytes - WORD

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def nbytes(self) -> int:
        return 0 if self._closed else self._mv.nbytes

    def __repr__(self) -> str:
        if self._closed:
            return f"<proxy.atomics fallback closed lock={self.lock_name}>"
        return f"<proxy.atomics fallback nbytes={self._mv.nbytes} lock={self.lock_name}>"

    # The hot path: check, lock, one unpack and/or pack, unlock. Offsets are validated before the
    # lock is taken, values too, so that nothing raises while it is held but the buffer access.

    def _check(self, off: int) -> None:
        if off & 7 or not 0 <= off <= self._last:
            if self._closed:
                raise ValueError("operation on closed atomics")
            if off & 7:
                raise ValueError(f"offset {off} is not a multiple of {WORD}")
            raise ValueError(f"offset {off} out of range for a buffer of {self._mv.nbytes} bytes")

    def _lock(self) -> None:
        while True:
            try:
                self._sem.acquire(LOCK_TIMEOUT_S)
                return
            except posix_ipc.SignalError:
                # EINTR: posix_ipc ran the Python handlers already; wait again (PEP 475 style).
                # (posix_ipc replaces an exception raised by a handler, other than
                # KeyboardInterrupt, with SignalError: handlers must not raise.)
                continue
            except posix_ipc.BusyError:
                raise LockTimeout(
                    f"atomics lock {self.lock_name} held for over {LOCK_TIMEOUT_S}s; "
                    "a process probably died holding it"
                ) from None

    def load(self, off: int, /) -> int:
        self._check(off)
        self._lock()
        try:
            value: int = _FMT.unpack_from(self._mv, off)[0]
        finally:
            self._sem.release()
        return value

    def store(self, off: int, value: int, /) -> None:
        value = _int64(value)
        self._check(off)
        self._lock()
        try:
            _FMT.pack_into(self._mv, off, value)
        finally:
            self._sem.release()

    def exchange(self, off: int, value: int, /) -> int:
        value = _int64(value)
        self._check(off)
        self._lock()
        try:
            prev: int = _FMT.unpack_from(self._mv, off)[0]
            _FMT.pack_into(self._mv, off, value)
        finally:
            self._sem.release()
        return prev

    def fetch_add(self, off: int, delta: int, /) -> int:
        delta = _int64(delta)
        self._check(off)
        self._lock()
        try:
            prev: int = _FMT.unpack_from(self._mv, off)[0]
            # Two's complement wrap-around, as the C backend does.
            _FMT.pack_into(self._mv, off, ((prev + delta - _MIN) & _MASK) + _MIN)
        finally:
            self._sem.release()
        return prev

    def fetch_max(self, off: int, value: int, /) -> int:
        value = _int64(value)
        self._check(off)
        self._lock()
        try:
            prev: int = _FMT.unpack_from(self._mv, off)[0]
            if prev < value:
                _FMT.pack_into(self._mv, off, value)
        finally:
            self._sem.release()
        return prev

    def compare_exchange(self, off: int, expected: int, desired: int, /) -> bool:
        expected = _int64(expected)
        desired = _int64(desired)
        self._check(off)
        self._lock()
        try:
            swap: bool = _FMT.unpack_from(self._mv, off)[0] == expected
            if swap:
                _FMT.pack_into(self._mv, off, desired)
        finally:
            self._sem.release()
        return swap

    # The compound operations are the primitives in sequence, as the C backend's are (each step
    # atomic on its own, the sequence not: the shm's seq words make such sequences checkable).
    def add_many(self, ops: tuple[int, ...], src: int = -1, peaks: tuple[int, ...] = (), /) -> int:
        if len(ops) % 2 or src >= len(ops) // 2:
            raise ValueError("ops must be (offset, delta) pairs, src one of them")
        for off in (*ops[::2], *peaks):
            self._check(off)
        result = 0
        for i in range(0, len(ops), 2):
            prev = self.fetch_add(ops[i], ops[i + 1])
            if i // 2 == src:
                result = ((prev + ops[i + 1] - _MIN) & _MASK) + _MIN
        if src >= 0:
            for off in peaks:
                self.fetch_max(off, result)
        return result

    def store_many(self, ops: tuple[int, ...], /) -> None:
        if len(ops) % 2 or len(ops) > 2 * _MAX_PAIRS:
            raise ValueError(f"expected at most {_MAX_PAIRS} (offset, value) pairs")
        for i in range(0, len(ops), 2):
            self._check(ops[i])
            _int64(ops[i + 1])
        for i in range(0, len(ops), 2):
            self.store(ops[i], ops[i + 1])

    def bounded_add(
        self, seq: int, off: int, limit: int, ops: tuple[int, ...], peaks: tuple[int, ...], /
    ) -> int | None:
        if len(ops) % 2:
            raise ValueError("ops must be (offset, delta) pairs")
        for o in (seq, off, *ops[::2], *peaks):
            self._check(o)
        cur = self.load(off)
        if cur >= limit:
            return None
        self.fetch_add(seq, 1)
        while not self.compare_exchange(off, cur, cur + 1):
            cur = self.load(off)
            if cur >= limit:
                self.fetch_add(seq, 1)
                return None
        for i in range(0, len(ops), 2):
            self.fetch_add(ops[i], ops[i + 1])
        self.fetch_add(seq, 1)
        for o in peaks:
            self.fetch_max(o, cur + 1)
        return cur + 1

    def close(self) -> None:
        """Release the buffer and close (not unlink) the semaphore. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._last = -1
        self._mv.release()
        self._sem.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> None:
        self.close()


def _int64(value: int) -> int:
    value = operator.index(value)
    if not _MIN <= value <= _MAX:
        raise OverflowError(f"{value} does not fit in a signed 64-bit word")
    return value


def _writable_view(buf: Buffer) -> memoryview:
    """A memoryview of buf with the C backend's checks: writable, contiguous, 8-byte aligned."""
    mv = memoryview(buf)
    try:
        if mv.readonly:
            raise BufferError("buffer is not writable")
        if not mv.c_contiguous:
            raise BufferError("buffer is not C-contiguous")
        mv = mv.cast("B")
        if mv.nbytes and _address(mv) % WORD:
            raise ValueError("buffer is not 8-byte aligned in memory")
    except BaseException:
        mv.release()
        raise
    return mv


def _address(mv: memoryview) -> int:
    import ctypes  # only here: the fallback's one-off alignment check at attach

    return ctypes.addressof(ctypes.c_char.from_buffer(mv))


def _attach_fallback(buf: Buffer, lock_name: str | None, create: bool) -> Atomics:
    if lock_name is None:
        raise ValueError("the fallback atomics backend needs a lock_name (see lock_name_for)")
    mv = _writable_view(buf)
    try:
        if create:
            sem = posix_ipc.Semaphore(lock_name, posix_ipc.O_CREX, mode=0o600, initial_value=1)
        else:
            sem = posix_ipc.Semaphore(lock_name)
    except posix_ipc.ExistentialError as e:
        mv.release()
        if create:
            raise FileExistsError(f"atomics lock {lock_name} already exists (stale? unlink_lock)") from e
        raise FileNotFoundError(f"atomics lock {lock_name} does not exist (create=True first)") from e
    except BaseException:
        mv.release()
        raise
    return _LockedWords(mv, sem, lock_name)


# ---- C ------------------------------------------------------------------------------------------


def _attach_c(buf: Buffer, lock_name: str | None, create: bool) -> Atomics:
    return _atomic.View(buf)


# ---- selection ----------------------------------------------------------------------------------

_ATTACH: dict[str, Callable[[Buffer, str | None, bool], Atomics]] = {}
if _HAVE_C:
    _ATTACH["c"] = _attach_c
_ATTACH["fallback"] = _attach_fallback

AVAILABLE: Final[tuple[str, ...]] = tuple(_ATTACH)
"""The backends importable in this process, preferred first."""


def _select(choice: str) -> str:
    if choice == "auto":
        return AVAILABLE[0]
    if choice not in ("c", "fallback"):
        raise ValueError(f"{ENV_VAR} must be auto, c or fallback, not {choice!r}")
    if choice not in _ATTACH:
        raise ImportError(f"{ENV_VAR}=c but proxy._atomic is not built (pip install -e . builds it)")
    return choice


BACKEND: Final[str] = _select(os.environ.get(ENV_VAR, "auto") or "auto")
"""The backend ``attach`` uses by default: ``"c"`` or ``"fallback"``."""


def attach(
    buf: Buffer, lock_name: str | None = None, *, create: bool = False, backend: str | None = None
) -> Atomics:
    """Attach to the words of ``buf`` (see the module docstring for the contract).

    ``lock_name`` names the fallback's semaphore; pass it on every backend (``lock_name_for`` of
    the segment name), so that the code works on both. ``create=True`` (the table's creator, once)
    creates the semaphore and fails with ``FileExistsError`` if it exists; otherwise it must exist
    (``FileNotFoundError``). ``backend`` overrides ``BACKEND`` (tests, diagnostics).
    """
    if lock_name is not None:
        _check_lock_name(lock_name)
    name = BACKEND if backend is None else backend
    try:
        attach_backend = _ATTACH[name]
    except KeyError:
        raise ValueError(f"atomics backend {name!r} is not available here (have {AVAILABLE})") from None
    return attach_backend(buf, lock_name, create)
