"""proxy.atomics: both backends (the C extension and the semaphore fallback) run every case.

First the single-process contract (return values, wrap-around, bounds, alignment, closing), then
exactness across processes on a real posix_ipc segment: fetch_add counting, a compare-exchange
counter, and a maxconn-style bounded take that must neither overshoot nor lose a slot.
Children are forked but open the segment and the lock by name, as an unrelated process would;
one test also uses freshly started interpreters.
"""

from __future__ import annotations

import mmap
import os
import random
import secrets
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import posix_ipc
import pytest

from proxy import atomics
from proxy.atomics import Atomics, LockTimeout, attach, lock_name_for, unlink_lock

ROOT = Path(__file__).resolve().parent.parent
MIN64 = -(2**63)
MAX64 = 2**63 - 1

NPROC = 4
M = 20_000
SEG_SIZE = 4096
# Layout of the test segment: the word under test, a start barrier, then one 16-byte result
# record (two words) per child.
TARGET, READY, RESULTS = 0, 8, 64


@pytest.fixture(params=["c", "fallback"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name not in atomics.AVAILABLE:
        if os.environ.get("POOLPROXY_NO_EXT", "") not in ("", "0"):
            pytest.skip("proxy._atomic deliberately not built (POOLPROXY_NO_EXT)")
        pytest.fail("proxy._atomic is not built: `pip install -e .` or `setup.py build_ext --inplace`")
    return name


def pythonpath() -> str:
    """For child interpreters: this tree first, so they import the code under test."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def unique_name(tag: str) -> str:
    return f"/poolproxy-test-{tag}-{os.getpid()}-{secrets.token_hex(4)}"


@pytest.fixture
def lock_name() -> Iterator[str]:
    name = unique_name("lock")
    try:
        yield name
    finally:
        unlink_lock(name)


@pytest.fixture
def words(backend: str, lock_name: str) -> Iterator[Atomics]:
    buf = mmap.mmap(-1, 64)
    w = attach(buf, lock_name, create=True, backend=backend)
    try:
        yield w
    finally:
        w.close()
        buf.close()


# ---- single process ---------------------------------------------------------------------------


def test_fetch_add_returns_previous(words: Atomics) -> None:
    assert words.fetch_add(8, 5) == 0
    assert words.fetch_add(8, -7) == 5
    assert words.load(8) == -2
    assert words.load(0) == 0 and words.load(16) == 0  # neighbours untouched


def test_add_many_applies_pairs_in_order_and_raises_peaks(words: Atomics) -> None:
    """The compound add (one call per paired shm update): pairs in order, the src-th pair's new
    value returned and fetch_max'ed into the peaks, a lower peak never lowered."""
    words.store(48, 100)  # a peak already above: stays
    assert words.add_many((0, 1, 8, 5, 16, -2, 0, 1), 1, (40, 48)) == 5
    assert [words.load(o) for o in (0, 8, 16, 40, 48)] == [2, 5, -2, 5, 100]
    assert words.add_many((8, 1)) == 0 and words.load(8) == 6  # no src: result 0, no peak


def test_add_many_checks_every_offset_before_changing_anything(words: Atomics) -> None:
    with pytest.raises(ValueError):
        words.add_many((0, 1, 9, 1))  # misaligned second offset
    with pytest.raises(ValueError):
        words.add_many((0, 1), 0, (4096,))  # peak out of range
    assert words.load(0) == 0


def test_store_many_stores_pairs_in_order(words: Atomics) -> None:
    """The compound store (a slot's record, then its tag, in one call): later pairs win."""
    words.store_many((0, 7, 8, -3, 16, 2**63 - 1, 0, 9))
    assert [words.load(o) for o in (0, 8, 16, 24)] == [9, -3, 2**63 - 1, 0]
    words.store_many(())  # nothing to do


def test_store_many_checks_every_offset_before_changing_anything(words: Atomics) -> None:
    with pytest.raises(ValueError):
        words.store_many((0, 1, 9, 1))  # misaligned second offset
    with pytest.raises(ValueError):
        words.store_many((0, 1, 4096, 1))  # out of range
    with pytest.raises(ValueError):
        words.store_many((0, 1, 8))  # not pairs
    with pytest.raises(ValueError):
        words.store_many((0, 1) * 17)  # more than 16 pairs
    with pytest.raises(OverflowError):
        words.store_many((0, 1, 8, 2**63))
    assert words.load(0) == 0 and words.load(8) == 0


def test_bounded_add_never_goes_above_the_limit(words: Atomics) -> None:
    """+1 below the limit with the seq bracket (two increments), the cell ops, the peak; refused
    at the limit without touching seq."""
    got = [words.bounded_add(0, 8, 2, (16, 1), (24,)) for _ in range(3)]
    assert got == [1, 2, None]
    assert [words.load(o) for o in (0, 8, 16, 24)] == [4, 2, 2, 2]


def test_store_load_extremes_and_wraparound(words: Atomics) -> None:
    for value in (MIN64, -1, 0, 1, MAX64):
        words.store(0, value)
        assert words.load(0) == value
    words.store(0, MAX64)
    assert words.fetch_add(0, 1) == MAX64
    assert words.load(0) == MIN64
    assert words.fetch_add(0, -1) == MIN64
    assert words.load(0) == MAX64


def test_compare_exchange(words: Atomics) -> None:
    words.store(8, -3)
    assert words.compare_exchange(8, -3, 7) is True
    assert words.load(8) == 7
    assert words.compare_exchange(8, -3, 99) is False
    assert words.load(8) == 7


def test_exchange_and_fetch_max(words: Atomics) -> None:
    words.store(0, 4)
    assert words.exchange(0, -9) == 4
    assert words.load(0) == -9
    assert words.fetch_max(0, -20) == -9
    assert words.load(0) == -9
    assert words.fetch_max(0, 12) == -9
    assert words.load(0) == 12


@pytest.mark.parametrize("off", [-8, -1, 4, 57, 64, 72, 2**70])
def test_bad_offsets(words: Atomics, off: int) -> None:
    with pytest.raises(ValueError, match="offset"):
        words.load(off)
    with pytest.raises(ValueError, match="offset"):
        words.fetch_add(off, 1)


def test_bad_values(words: Atomics) -> None:
    for value in (MAX64 + 1, MIN64 - 1):
        with pytest.raises(OverflowError):
            words.store(0, value)
        with pytest.raises(OverflowError):
            words.fetch_add(0, value)
        with pytest.raises(OverflowError):
            words.compare_exchange(0, 0, value)
    with pytest.raises(TypeError):
        words.store(0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        words.load(8.0)  # type: ignore[arg-type]
    assert words.load(0) == 0


def test_close(words: Atomics) -> None:
    assert not words.closed and words.nbytes == 64
    words.close()
    words.close()  # idempotent
    assert words.closed and words.nbytes == 0
    with pytest.raises(ValueError, match="closed"):
        words.load(0)


def test_buffer_kinds(backend: str, lock_name: str) -> None:
    unlink_lock(lock_name)
    kinds: list[bytearray | memoryview | mmap.mmap] = [
        bytearray(16),
        memoryview(bytearray(32))[8:24],
        mmap.mmap(-1, 16),
    ]
    for i, buf in enumerate(kinds):
        with attach(buf, lock_name, create=(i == 0), backend=backend) as w:
            assert w.fetch_add(8, 3) == 0
        assert memoryview(buf)[8:16].tobytes() == (3).to_bytes(8, "little")
    with pytest.raises(BufferError):
        attach(b"\0" * 16, lock_name, backend=backend)
    with pytest.raises(BufferError):
        attach(memoryview(bytearray(32))[::2], lock_name, backend=backend)
    with pytest.raises(ValueError, match="aligned"):
        attach(memoryview(bytearray(32))[1:17], lock_name, backend=backend)
    with pytest.raises(TypeError):
        attach(42, lock_name, backend=backend)  # type: ignore[arg-type]


def test_attached_mmap_cannot_be_closed(backend: str, lock_name: str) -> None:
    buf = mmap.mmap(-1, 16)
    w = attach(buf, lock_name, create=True, backend=backend)
    with pytest.raises(BufferError):
        buf.close()
    w.close()
    buf.close()


def test_lock_names(backend: str) -> None:
    assert lock_name_for("/poolproxy.12.3") == "/poolproxy.12.3.lock"
    assert lock_name_for("poolproxy.12.3") == "/poolproxy.12.3.lock"
    for bad in ("nolead", "/a/b", "/"):
        with pytest.raises(ValueError, match="lock name"):
            attach(bytearray(8), bad, backend=backend)


def test_backends_agree_on_a_random_trace(lock_name: str) -> None:
    if "c" not in atomics.AVAILABLE:
        pytest.skip("needs both backends")
    rng = random.Random(1234)
    edge = [MIN64, MIN64 + 1, -1, 0, 1, MAX64 - 1, MAX64]
    bufs = {name: bytearray(32) for name in ("c", "fallback")}
    views = {name: attach(buf, lock_name, create=True, backend=name) for name, buf in bufs.items()}
    try:
        for _ in range(2000):
            op = rng.choice(["load", "store", "exchange", "fetch_add", "fetch_max", "compare_exchange"])
            off = rng.randrange(4) * 8
            args = [rng.choice(edge) if rng.random() < 0.3 else rng.randint(-50, 50) for _ in range(2)]
            if op == "compare_exchange" and rng.random() < 0.5:
                args[0] = views["c"].load(off)
            nargs = {"load": 0, "compare_exchange": 2}.get(op, 1)
            results = [getattr(v, op)(off, *args[:nargs]) for v in views.values()]
            assert results[0] == results[1], (op, off, args)
            assert bufs["c"] == bufs["fallback"], (op, off, args)
    finally:
        for v in views.values():
            v.close()


def test_c_module_functions_acquire_per_call() -> None:
    if "c" not in atomics.AVAILABLE:
        pytest.skip("needs the C backend")
    from proxy import _atomic

    buf = mmap.mmap(-1, 16)
    assert _atomic.fetch_add(buf, 8, 2) == 0
    assert _atomic.compare_exchange(buf, 8, 2, 5)
    assert _atomic.exchange(buf, 8, 6) == 5
    assert _atomic.fetch_max(buf, 8, 9) == 6
    _atomic.store(buf, 0, -1)
    assert (_atomic.load(buf, 0), _atomic.load(buf, 8)) == (-1, 9)
    with pytest.raises(ValueError, match="offset"):
        _atomic.load(buf, 16)
    with pytest.raises(TypeError):
        _atomic.load(buf)  # type: ignore[call-arg]
    buf.close()  # nothing stays exported between calls


# ---- fallback lock ----------------------------------------------------------------------------


def test_fallback_lock_lifecycle() -> None:
    name = unique_name("life")
    buf = bytearray(8)
    with pytest.raises(ValueError, match="lock_name"):
        attach(buf, None, backend="fallback")
    with pytest.raises(FileNotFoundError):
        attach(buf, name, backend="fallback")
    try:
        first = attach(buf, name, create=True, backend="fallback")
        with pytest.raises(FileExistsError):
            attach(buf, name, create=True, backend="fallback")
        second = attach(buf, name, backend="fallback")
        first.fetch_add(0, 1)
        assert second.load(0) == 1
        first.close()
        second.close()
    finally:
        assert unlink_lock(name) is True
    assert unlink_lock(name) is False


def test_fallback_dead_holder_times_out(lock_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented weakness: a process that dies holding the semaphore blocks everyone; the
    fallback turns that into LockTimeout instead of a hang."""
    monkeypatch.setattr(atomics, "LOCK_TIMEOUT_S", 0.2)
    w = attach(bytearray(8), lock_name, create=True, backend="fallback")
    pid = os.fork()
    if pid == 0:
        posix_ipc.Semaphore(lock_name).acquire()
        os._exit(0)  # dies holding it
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    with pytest.raises(LockTimeout, match="died"):
        w.fetch_add(0, 1)
    w.close()


def test_fallback_retries_after_a_signal(lock_name: str) -> None:
    """sem_wait fails with EINTR when a handler runs; the operation must wait again, not fail."""
    w = attach(bytearray(8), lock_name, create=True, backend="fallback")
    holder = posix_ipc.Semaphore(lock_name)
    holder.acquire()
    fired: list[int] = []

    def on_alarm(signum: int, frame: object) -> None:
        fired.append(signum)
        holder.release()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert w.fetch_add(0, 1) == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        holder.close()
        w.close()
    assert fired == [signal.SIGALRM]


def test_env_var_selects_backend() -> None:
    def backend_with(value: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "POOLPROXY_ATOMICS": value, "PYTHONPATH": pythonpath()}
        code = "import proxy.atomics as a; print(a.BACKEND)"
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)

    assert backend_with("fallback").stdout.strip() == "fallback"
    assert backend_with("auto").stdout.strip() == atomics.AVAILABLE[0]
    bad = backend_with("bogus")
    assert bad.returncode != 0 and "POOLPROXY_ATOMICS" in bad.stderr


# ---- several processes ------------------------------------------------------------------------


@dataclass
class Segment:
    """A real shared segment, as the proxy's table is: the name, its lock, and the creator's view."""

    name: str
    lock_name: str
    backend: str
    words: Atomics

    def open(self) -> Atomics:
        """Attach by name only, as an unrelated process would."""
        shm = posix_ipc.SharedMemory(self.name)
        buf = mmap.mmap(shm.fd, shm.size)
        shm.close_fd()
        return attach(buf, self.lock_name, backend=self.backend)

    def result(self, child: int, field: int) -> int:
        return self.words.load(RESULTS + 16 * child + 8 * field)


@pytest.fixture
def segment(backend: str) -> Iterator[Segment]:
    name = unique_name("shm")
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=SEG_SIZE)
    try:
        buf = mmap.mmap(shm.fd, SEG_SIZE)
        shm.close_fd()
        words = attach(buf, lock_name_for(name), create=True, backend=backend)
        try:
            yield Segment(name, lock_name_for(name), backend, words)
        finally:
            words.close()
            buf.close()
    finally:
        shm.unlink()
        unlink_lock(lock_name_for(name))


def run_children(
    seg: Segment, work: Callable[[Atomics, int], None], watch: Callable[[], None] | None = None
) -> None:
    """Fork NPROC children running ``work(words, index)`` on their own attachment, all released
    at once through a barrier word; ``watch`` runs in the parent until they are all done. Any
    child failure fails the test; no child outlives it."""
    pids: list[int] = []
    try:
        for index in range(NPROC):
            pid = os.fork()
            if pid == 0:  # child: never returns into pytest
                code = 1
                try:
                    w = seg.open()
                    w.fetch_add(READY, 1)
                    while w.load(READY) < NPROC:
                        os.sched_yield()
                    work(w, index)
                    code = 0
                except BaseException:
                    os.write(2, traceback.format_exc().encode())
                finally:
                    os._exit(code)
            pids.append(pid)
        while pids:
            if watch is not None:
                watch()
            for pid in list(pids):
                done, status = os.waitpid(pid, os.WNOHANG if watch else 0)
                if done:
                    pids.remove(pid)
                    assert os.waitstatus_to_exitcode(status) == 0, "a child failed (traceback above)"
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_fetch_add_is_exact_across_processes(segment: Segment) -> None:
    def work(w: Atomics, index: int) -> None:
        for _ in range(M):
            w.fetch_add(TARGET, 1)

    run_children(segment, work)
    assert segment.words.load(TARGET) == NPROC * M


def cas_increment(w: Atomics, off: int) -> int:
    """Increment through a compare-exchange loop; returns the number of failed attempts."""
    failures = 0
    while True:
        cur = w.load(off)
        if w.compare_exchange(off, cur, cur + 1):
            return failures
        failures += 1


def test_cas_loop_is_exact_across_processes(segment: Segment) -> None:
    def work(w: Atomics, index: int) -> None:
        failures = 0
        for _ in range(M // 2):
            failures += cas_increment(w, TARGET)
        w.store(RESULTS + 16 * index, failures)

    run_children(segment, work)
    assert segment.words.load(TARGET) == NPROC * (M // 2)


def try_take(w: Atomics, off: int, limit: int) -> int:
    """maxconn-style: take one slot unless ``limit`` are taken. Returns the count including the
    slot just taken, or 0 when refused."""
    cur = w.load(off)
    while cur < limit:
        if w.compare_exchange(off, cur, cur + 1):
            return cur + 1
        cur = w.load(off)
    return 0


def test_bounded_take_hands_out_exactly_the_limit(segment: Segment) -> None:
    limit = 3 * M // 4

    def work(w: Atomics, index: int) -> None:
        taken = highest = 0
        while got := try_take(w, TARGET, limit):
            taken += 1
            highest = max(highest, got)
        w.store(RESULTS + 16 * index, taken)
        w.store(RESULTS + 16 * index + 8, highest)

    run_children(segment, work)
    assert segment.words.load(TARGET) == limit
    assert sum(segment.result(i, 0) for i in range(NPROC)) == limit
    assert max(segment.result(i, 1) for i in range(NPROC)) == limit


def test_bounded_take_never_overshoots(segment: Segment) -> None:
    limit = 2  # fewer slots than processes, so they fight over them
    rounds = M // 8
    seen_by_parent: list[int] = []

    def work(w: Atomics, index: int) -> None:
        taken = highest = 0
        for _ in range(rounds):
            got = try_take(w, TARGET, limit)
            if got:
                taken += 1
                highest = max(highest, got, w.load(TARGET))
                if w.fetch_add(TARGET, -1) < 1:
                    raise AssertionError("released a slot nobody held")
        w.store(RESULTS + 16 * index, taken)
        w.store(RESULTS + 16 * index + 8, highest)

    def watch() -> None:
        seen_by_parent.append(segment.words.load(TARGET))
        time.sleep(0.001)

    run_children(segment, work, watch)
    assert segment.words.load(TARGET) == 0
    assert sum(segment.result(i, 0) for i in range(NPROC)) > 0
    assert max(segment.result(i, 1) for i in range(NPROC)) <= limit
    assert seen_by_parent and min(seen_by_parent) >= 0 and max(seen_by_parent) <= limit


def test_unrelated_processes(segment: Segment) -> None:
    """Fresh interpreters that share nothing with the creator but the two names."""
    n = 5000
    code = textwrap.dedent(
        f"""
        import mmap, sys, posix_ipc
        from proxy.atomics import attach
        shm = posix_ipc.SharedMemory({segment.name!r})
        buf = mmap.mmap(shm.fd, shm.size)
        w = attach(buf, {segment.lock_name!r}, backend={segment.backend!r})
        w.fetch_add({READY}, 1)
        while w.load({READY}) < 3:
            pass
        for _ in range({n}):
            w.fetch_add({TARGET}, 1)
        """
    )
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(2)]
    try:
        segment.words.fetch_add(READY, 1)
        for _ in range(n):
            segment.words.fetch_add(TARGET, 1)
        assert [p.wait(timeout=60) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert segment.words.load(TARGET) == 3 * n
