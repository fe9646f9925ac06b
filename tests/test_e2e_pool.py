"""End-to-end: the shared pool across workers (SEMANTICS.md §3-4, DESIGN.md §3-5).

Real master and ``nbthread 4`` workers on 127.0.0.1 in front of the counting origin (tools/origin.py),
real clients. Two independent witnesses are read:

- the origin's counters (``connections`` opened by the proxy, ``open`` now, ``max_open`` peak since the
  last ``/__reset``, ``active``/``max_active`` requests in progress);
- the proxy's shared-memory table (``proxy.shm``), attached (only ever read) with ``ShmTable.attach``
  (the same code path as ``python -m tools.shmdump --json --pid MASTER``): the server row (``served``,
  ``cur_conns``, ``idle``, ``connects``, ``takeovers_*``, ``purged``, ``queue_*``, peaks) and the
  per-worker cells.

Assertions are counts and bounds, never durations; every wait for a state polls with a deadline
(``wait_for``). Bursts are sent from one thread over raw sockets (all connections opened, then every
request written, then the answers read with a selector), so that they really arrive at once whatever
the scheduling of client threads on a small machine. Figures worth a note (connect counts, takeovers,
the histogram of per-spike peaks) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
import selectors
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from harness import KeepAliveClient, MakeProxy, Origin, Proxy, free_port, proxy_config, wait_for

from proxy.shm import ShmTable, WorkerState, backend_name, read_header
from tools.shmdump import find_newest

# Runs on both HTTP/1 engines (conftest's h1_engine): the engine tokenizes the response heads whose
# Connection and framing headers decide whether a server connection goes back to the pool.
pytestmark = pytest.mark.e2e

NBTHREAD = 4

# What a worker or the master writes when an exception escaped a callback (asyncio's default handler, an
# uncaught error): a test fails on it even when every client got its answer (STYLE.md habit 10).
UNHANDLED = ("Traceback (most recent call last)", "Exception in callback", "exception was never retrieved")

# The gauges whose server-wide row value must equal the sum of the workers' cells (proxy/shm.py).
GAUGES = {
    "served": ("served", "incoming"),
    "cur_conns": ("conns",),
    "used": ("used",),
    "idle": ("idle",),
    "safe": ("safe",),
    "queue_len": ("queued",),
}


@pytest.fixture
def make_proxy(make_proxy: MakeProxy) -> Iterator[MakeProxy]:
    """conftest's ``make_proxy``; at teardown, no proxy it started may have logged an unhandled exception."""
    started: list[Proxy] = []

    def make(config: str, **kwargs: Any) -> Proxy:
        proxy = make_proxy(config, **kwargs)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        logs = proxy.logs()
        if any(marker in logs for marker in UNHANDLED):
            pytest.fail(f"unhandled exception in the logs of {proxy.cfg_path}:\n{logs[-4000:]}")


def config(
    port: int, origin_port: int, *, server: str = "", backend: str = "", reuse: str = "always", glob: str = ""
) -> str:
    """One frontend on `port`, one backend `be` with one server `s1` (the origin), nbthread 4."""
    return proxy_config(
        port, origin_port, nbthread=NBTHREAD, reuse=reuse, glob=glob, backend=backend, server=server
    )


class Shm:
    """The proxy's shared-memory table, attached by master pid (what ``tools.shmdump --pid`` reads)."""

    def __init__(self, proxy: Proxy) -> None:
        found = wait_for(lambda: find_newest(proxy.pid), message=f"shm table of master {proxy.pid}")
        assert found is not None
        name: str = found
        self.table = ShmTable.attach(name, backend=backend_name(read_header(name)))
        self.index = self.table.server_index("be", "s1")
        self.row = self.table.row(self.index)

    def server(self) -> dict[str, Any]:
        """The row of be/s1 with its ``cells``, as ``tools.shmdump --json`` prints it."""
        snap: dict[str, Any] = self.table.snapshot()["servers"][self.index]
        return snap

    def close(self) -> None:
        self.table.close()


@pytest.fixture
def shm_tables() -> Iterator[list[Shm]]:
    tables: list[Shm] = []
    yield tables
    for t in tables:
        t.close()


@dataclass
class Setup:
    port: int
    proxy: Proxy
    shm: Shm


# start(server="...", backend="...", reuse="always") -> Setup
Start = Callable[..., Setup]


@pytest.fixture
def start(make_proxy: MakeProxy, origin: Origin, shm_tables: list[Shm]) -> Start:
    """start(server="...", backend="...", reuse="always") -> Setup (proxy started, shm attached)."""

    def go(**kw: str) -> Setup:
        port = free_port()
        proxy = make_proxy(config(port, origin.port, **kw), ports=[port], workers=NBTHREAD)
        shm = Shm(proxy)
        shm_tables.append(shm)
        # Every worker accepting (READY: RUNNING in the table) before any load: a worker still
        # importing when a short load runs would leave it all to the others.
        wait_for(
            lambda: all(shm.table.worker(w).state is WorkerState.RUNNING for w in range(NBTHREAD)),
            timeout=20,
            message="every worker RUNNING",
        )
        return Setup(port, proxy, shm)

    return go


# ---- clients ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int = 0  # 0: no complete response (reset, closed early)
    conn_id: int = 0  # X-Conn-Id of the server connection that carried it
    order: int = -1  # completion order within its burst (0 = first complete answer)
    tag: int = 0  # caller's label (the wave)
    buf: bytearray = field(default_factory=bytearray, repr=False)


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
_CONN_ID = re.compile(rb"(?im)^x-conn-id:[ \t]*(\d+)")
_CLEN = re.compile(rb"(?im)^content-length:[ \t]*(\d+)")


def _complete(buf: bytes) -> bool:
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = _CLEN.search(head)
    return m is not None and len(body) >= int(m[1])


def _parse(answer: Answer) -> None:
    m = _STATUS.match(answer.buf)
    answer.status = int(m[1]) if m else 0
    c = _CONN_ID.search(answer.buf)
    answer.conn_id = int(c[1]) if c else 0


class Burst:
    """Many client connections driven from one thread: open, write every request at once, read answers.

    Each connection carries one request. With ``keep_alive`` the request asks for keep-alive and the
    client closes its side once the answer is complete (a keep-alive client that leaves); otherwise it
    sends ``Connection: close`` and reads until the proxy closes. ``send()`` may be called again while
    earlier answers are pending (waves); ``pump()`` reads what is there; ``finish()`` reads the rest.
    """

    def __init__(self, port: int, *, keep_alive: bool = False, timeout: float = 30.0) -> None:
        self.port = port
        self.keep_alive = keep_alive
        self.deadline = time.monotonic() + timeout
        self.sel = selectors.DefaultSelector()
        self.answers: list[Answer] = []
        self.done = 0

    def send(self, n: int, path: str = "/", tag: int = 0) -> None:
        conn = "keep-alive" if self.keep_alive else "close"
        request = f"GET {path} HTTP/1.1\r\nHost: pool.test\r\nConnection: {conn}\r\n\r\n".encode()
        socks = [socket.create_connection(("127.0.0.1", self.port), timeout=5) for _ in range(n)]
        for sock in socks:
            sock.sendall(request)
        for sock in socks:
            sock.setblocking(False)
            answer = Answer(tag=tag)
            self.answers.append(answer)
            self.sel.register(sock, selectors.EVENT_READ, answer)

    @property
    def pending(self) -> int:
        return len(self.answers) - self.done

    def _finish_one(self, sock: socket.socket, answer: Answer) -> None:
        self.sel.unregister(sock)
        sock.close()
        _parse(answer)
        answer.order = self.done
        self.done += 1

    def pump(self, wait: float = 0.01) -> None:
        for key, _ in self.sel.select(wait):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            answer: Answer = key.data
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                chunk = b""
            answer.buf += chunk
            if not chunk or (self.keep_alive and _complete(bytes(answer.buf))):
                self._finish_one(sock, answer)

    def finish(self) -> list[Answer]:
        while self.pending:
            if time.monotonic() > self.deadline:
                self.close()
                raise AssertionError(f"burst: {self.pending} of {len(self.answers)} answers missing")
            self.pump(0.05)
        self.sel.close()
        return self.answers

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()


def burst(port: int, n: int, path: str = "/", *, keep_alive: bool = False) -> list[Answer]:
    b = Burst(port, keep_alive=keep_alive)
    b.send(n, path)
    return b.finish()


def statuses(answers: list[Answer]) -> Counter[int]:
    return Counter(a.status for a in answers)


def one_shot_load(port: int, *, clients: int = 8, per_client: int = 25, path: str = "/") -> Counter[int]:
    """`clients` concurrent clients, each doing `per_client` one-shot requests one after the other (each
    on a new connection with ``Connection: close``, the next one sent as soon as the previous answer is
    in). Driven from one thread with a selector, so the clients cost little CPU next to the proxy."""
    request = f"GET {path} HTTP/1.1\r\nHost: pool.test\r\nConnection: close\r\n\r\n".encode()
    left = [per_client] * clients
    codes: Counter[int] = Counter()
    deadline = time.monotonic() + 60
    with selectors.DefaultSelector() as sel:

        def open_one(client: int) -> None:
            left[client] -= 1
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(request)
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, (client, bytearray()))

        for client in range(clients):
            open_one(client)
        while sel.get_map():
            assert time.monotonic() < deadline, f"one-shot load: {codes} after 60 s"
            for key, _ in sel.select(0.5):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                client, buf = key.data
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionError:
                    chunk = b""
                buf += chunk
                if chunk:
                    continue
                sel.unregister(sock)
                sock.close()
                m = _STATUS.match(buf)
                codes[int(m[1]) if m else 0] += 1
                if left[client]:
                    open_one(client)
    return codes


def settled(shm: Shm) -> dict[str, Any]:
    """Wait until nothing is in flight (no request holds a slot or waits, no connection is used)."""
    return wait_for(
        lambda: (s := shm.server())["served"] == 0 and s["queue_len"] == 0 and s["used"] == 0 and s,
        timeout=10,
        message="server at rest (served, queue_len, used all 0)",
    )


def per_worker(srv: dict[str, Any], key: str) -> list[int]:
    return [c[key] for c in srv["cells"]]


def server_row_equals_cells(srv: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The gauges whose row value differs from the sum of the workers' cells: name -> (row, sum)."""
    wrong = {}
    for name, parts in GAUGES.items():
        total = sum(c[p] for c in srv["cells"] for p in parts)
        if srv[name] != total:
            wrong[name] = (srv[name], total)
    return wrong


class Sampler(threading.Thread):
    """Reads a number from shm over and over in the background; keeps the largest value seen."""

    def __init__(self, read: Callable[[], int]) -> None:
        super().__init__(daemon=True)
        self.read = read
        self.max = -1
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.max = max(self.max, self.read())
            self.samples += 1
            time.sleep(0.0002)

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join()


def histogram(values: list[int]) -> str:
    counts = Counter(values)
    return "  ".join(f"{v}:{'#' * counts[v]}({counts[v]})" for v in sorted(counts))


# ---- (a), (b): clients that close after each response ----------------------------------------------


def warm_one_worker(setup: Setup, n: int = 8) -> None:
    """Make the load uneven on purpose: with every worker but one stopped (SIGSTOP), `n` concurrent
    slow requests all land on that worker, which ends up holding `n` idle server connections; the
    other workers, resumed, hold none and must steal (or connect)."""
    pids = setup.proxy.worker_pids()
    assert len(pids) == NBTHREAD
    stopped = pids[1:]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        answers = burst(setup.port, n, "/delay/200")
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert statuses(answers) == {200: n}
    assert len({a.conn_id for a in answers}) == n
    srv = wait_for(
        lambda: (s := setup.shm.server())["idle"] == n and s,
        message=f"{n} idle connections after the warm-up",
    )
    assert sorted(per_worker(srv, "idle")) == [0] * (NBTHREAD - 1) + [n], srv["cells"]


def run_one_shot(start: Start, origin: Origin, server: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Warm one worker with 8 idle connections, then 8 clients x 25 one-shot requests; at rest:
    (the shm row of the server, the origin's counters since before the warm-up).

    The requests take 5 ms at the origin: with an instant origin the warm worker, always running, wins
    nearly every accept() and the others see almost no load; with a short wait every worker sleeps in
    epoll and the kernel spreads the connections over all four."""
    setup = start(server=server)
    origin.reset()
    warm_one_worker(setup)
    codes = one_shot_load(setup.port, path="/delay/5")
    assert codes == {200: 200}, codes
    srv = settled(setup.shm)
    stats = origin.stats()
    setup.proxy.stop()
    wait_for(lambda: origin.stats()["open"] == 0, message="the proxy's server connections closed")
    return srv, stats


def describe(label: str, srv: dict[str, Any], stats: dict[str, int]) -> str:
    return (
        f"[{label}] connects={srv['connects']} (origin connections={stats['connections']})"
        f" reuses={srv['reuses']} takeovers asked={srv['takeovers_asked']} given={srv['takeovers_given']}"
        f" failed={srv['takeovers_failed']} max_cur_conns={srv['max_cur_conns']} idle at rest={srv['idle']}"
        f" closed={srv['connects'] - srv['cur_conns']} (purged={srv['purged']}) est_need={srv['est_need']}"
        f" given per worker={per_worker(srv, 'takeovers_given')}"
        f" taken per worker={per_worker(srv, 'takeovers_taken')}"
    )


def test_close_mode_always_steals_instead_of_connecting(start: Start, origin: Origin) -> None:
    # 8 concurrent clients x 25 one-shot requests (Connection: close), spread over 4 workers by the
    # kernel; one worker holds all 8 idle connections at the start. With http-reuse always a first
    # request may take any idle connection, and a worker with none takes one from another worker
    # (claims a published slot and duplicates the descriptor with pidfd_getfd, scanning the victims
    # until one has one): about one server connection per concurrent client carries the 200
    # requests.
    # What the semantics bound is how many server connections exist *at once* (the proxy's exact
    # peak, max_cur_conns): a worker connects only when every connection it looked at was busy, and
    # 8 clients keep at most 8 busy. The slack of 2: a thief's scan of the other workers is not one
    # instant, so it may miss a connection released behind it, as HAProxy's threads do (its lab:
    # 51-54 connects for 50 users). Beyond that, each extra connection must be explained by a failed
    # takeover (with the SCM_RIGHTS channel, where pidfd_getfd is refused: a victim not scheduled
    # within 5 ms; such a thief connects instead of waiting, by design).
    # The *total* of connects is not bounded that way: the pool shrinks toward its estimated need
    # (the keep-on-release rule closes a connection once used + idle exceeds est_need, and est_need
    # decays at every pool-purge-delay, 5 s) and grows back on demand, one connect per connection
    # closed meanwhile. On a quiet machine the load is over before the first purge period ends; on a
    # loaded one it spans more and connections are replaced (a failure reported 11 connects for the
    # bound of 10 on the total; seen here under load: 9 connects for a peak of 8, none purged).
    clients = 8
    srv, stats = run_one_shot(start, origin, "")
    print("\n" + describe("always, pool-low-conn 0", srv, stats))
    assert stats["requests"] == 200 + clients
    assert srv["connects"] == stats["connections"]
    assert srv["takeovers_given"] > 0, srv
    assert srv["max_cur_conns"] <= clients + 2 + srv["takeovers_failed"], describe("always", srv, stats)
    assert stats["connections"] <= 200 // 4, describe("always", srv, stats)  # far below one per request


def test_channel_fallback_still_steals(make_proxy: MakeProxy, origin: Origin, shm_tables: list[Shm]) -> None:
    # Where pidfd_getfd is refused (old kernel, seccomp, Yama), workers steal over the SCM_RIGHTS
    # channel as before: forced here with POOLPROXY_STEAL=channel, the start-up lines say so, and the
    # one-shot load is still carried by stolen connections.
    port = free_port()
    env = {"POOLPROXY_STEAL": "channel"}
    proxy = make_proxy(config(port, origin.port), ports=[port], workers=NBTHREAD, env=env)
    shm = Shm(proxy)
    shm_tables.append(shm)
    wait_for(
        lambda: all(shm.table.worker(w).state is WorkerState.RUNNING for w in range(NBTHREAD)),
        timeout=20,
        message="every worker RUNNING",
    )
    setup = Setup(port, proxy, shm)
    origin.reset()
    warm_one_worker(setup)
    assert one_shot_load(port, path="/delay/5") == {200: 200}
    srv = settled(shm)
    print("\n" + describe("always, channel", srv, origin.stats()))
    assert srv["takeovers_given"] > 0
    assert proxy.logs().count("stealing idle connections with channel (POOLPROXY_STEAL=channel)") == NBTHREAD


def test_pool_low_conn_trades_steals_for_connects(start: Start, origin: Origin) -> None:
    # The same load twice: stealing allowed (pool-low-conn 0), then in practice forbidden
    # (pool-low-conn 100: never that many idle connections): the other workers connect instead.
    base, base_stats = run_one_shot(start, origin, "")
    low, low_stats = run_one_shot(start, origin, "pool-low-conn 100")
    print("\n" + describe("always, pool-low-conn 0", base, base_stats))
    print(describe("always, pool-low-conn 100", low, low_stats))
    assert low["takeovers_asked"] == 0 and low["takeovers_given"] == 0, low
    assert low["connects"] == low_stats["connections"]
    assert base["takeovers_given"] > low["takeovers_given"]
    assert low["connects"] > base["connects"], (base["connects"], low["connects"])


# ---- (c) pool-max-conn ------------------------------------------------------------------------------


def test_pool_max_conn_caps_idle_connections(start: Start, origin: Origin) -> None:
    # 40 concurrent keep-alive clients, each one request then gone: 40 server connections are used at
    # once, and at most 2 of them may stay idle, server-wide, at any moment.
    setup = start(server="pool-max-conn 2")
    row = setup.shm.row
    with Sampler(lambda: row.idle) as idle:
        for _ in range(2):
            answers = burst(setup.port, 40, "/delay/100", keep_alive=True)
            assert statuses(answers) == {200: 40}
        wait_for(lambda: origin.stats()["open"] <= 2, message="origin: at most 2 connections left open")
    srv = settled(setup.shm)
    stats = origin.stats()
    print(
        f"\n[pool-max-conn 2] max idle sampled={idle.max} ({idle.samples} samples) idle at rest={srv['idle']}"
        f" origin max_open={stats['max_open']} open={stats['open']} connects={srv['connects']}"
    )
    assert stats["max_open"] >= 20, "the burst did not need many connections at once"
    assert idle.max <= 2
    assert srv["idle"] <= 2
    assert stats["open"] <= 2
    wait_for(lambda: setup.shm.server()["cur_conns"] == origin.stats()["open"], message="cur_conns == open")


# ---- (d) purge ----------------------------------------------------------------------------------------


def test_purge_halves_the_idle_excess_each_period(start: Start, origin: Origin) -> None:
    # 16 idle connections (pool-low-conn high enough that every worker keeps all it releases, and no
    # worker steals), then no traffic: every pool-purge-delay the master closes half the excess over
    # the need estimate (which itself decays), so the pool shrinks step by step to almost nothing.
    setup = start(server="pool-purge-delay 1s pool-low-conn 32")
    answers = burst(setup.port, 16, "/delay/300", keep_alive=True)
    assert statuses(answers) == {200: 16}
    assert len({a.conn_id for a in answers}) == 16
    wait_for(lambda: setup.shm.row.idle == 16, message="16 idle connections")
    row = setup.shm.row
    samples: list[tuple[float, int, int]] = []  # (time, idle, est_need)

    def shrunk() -> bool:
        samples.append((time.monotonic(), row.idle, row.est_need))
        return samples[-1][1] <= 2

    wait_for(shrunk, timeout=20, interval=0.01, message="idle <= 2 by purges")
    srv = setup.shm.server()
    # Group the drops into purge periods: the master plans one purge per period (>= 1 s apart), the
    # workers close their shares within milliseconds of each other.
    levels = [16]
    last_drop = -10.0
    for t, idle, _ in samples:
        if idle < levels[-1]:
            if t - last_drop > 0.5:
                levels.append(idle)
            else:
                levels[-1] = idle
            last_drop = t
    ests = [e for _, _, e in samples]
    print(
        f"\n[purge 1s] idle per purge period: {' -> '.join(map(str, levels))};"
        f" est_need went {max(ests)} -> {ests[-1]}; purged={srv['purged']} ({len(samples)} samples)"
    )
    idles = [i for _, i, _ in samples]
    assert all(a >= b for a, b in itertools.pairwise(idles)), "idle grew without traffic"
    assert len(levels) >= 3, f"not gradual: {levels}"
    # halving the excess over a need estimate that itself halves: a handful of periods, not one each
    assert len(levels) - 1 <= 6, f"too slow: {levels}"
    for before, after in itertools.pairwise(levels):
        # at most ceil(excess / 2) <= ceil(idle / 2), plus one per worker (each closes its share + 1)
        assert before - after <= -(-before // 2) + NBTHREAD, levels
    assert srv["purged"] == 16 - srv["idle"] > 0
    wait_for(
        lambda: origin.stats()["open"] == setup.shm.row.cur_conns <= 2, message="origin open == cur_conns"
    )


# ---- (e) the maxconn + nbthread - 1 edge case, and strict-maxconn --------------------------------------


@pytest.mark.parametrize("variant", ["loose", "nosteal", "strict"])
@pytest.mark.parametrize("maxconn", [1, 2])
def test_spikes_peak_connections(start: Start, origin: Origin, maxconn: int, variant: str) -> None:
    # A very fast origin, a tiny maxconn, 20 spikes of 32 simultaneous one-shot requests: at most
    # maxconn requests are active, yet every worker not carrying them may keep its one idle connection,
    # so the server-side connections may reach maxconn + nbthread - 1 -- never more. strict-maxconn
    # caps the total at maxconn. The peak of each spike is the origin's max_open since a reset.
    # http-reuse always: the bound assumes the worker that gets a slot may use an idle connection. In
    # `safe` mode a first request never does (each opens a connection, each worker keeps one idle
    # beside it, and the one it closes is still open when the next opens): the same spikes through
    # Debian's HAProxy 2.6 peak at 5-6 for maxconn 1 and 7-8 for maxconn 2, poolproxy alike. Through
    # HAProxy in `always` mode they peak at 2 and 3: the edge case itself.
    # "nosteal" (tune.idle-pool.shared off) turns stealing off: each worker then serves from its own
    # idle connection and the edge case shows in full. (pool-low-conn would not do: it is also slack in
    # the keep-on-release rule, so a high value lets every worker keep every connection.)
    strict = variant == "strict"
    server = f"maxconn {maxconn}" + {"loose": "", "nosteal": "", "strict": " strict-maxconn"}[variant]
    glob = "tune.idle-pool.shared off" if variant == "nosteal" else ""
    setup = start(server=server, backend="timeout queue 30s", glob=glob)
    peaks = []
    for _ in range(20):
        settled(setup.shm)
        origin.reset()
        answers = burst(setup.port, 32, "/")
        assert statuses(answers) == {200: 32}
        peaks.append(origin.stats()["max_open"])
    srv = settled(setup.shm)
    bound = maxconn if strict else maxconn + NBTHREAD - 1
    print(
        f"\n[{variant} {server}] per-spike peak server connections (bound {bound}): {histogram(peaks)};"
        f" shm max_served={srv['max_served']} max_cur_conns={srv['max_cur_conns']}"
        f" connects={srv['connects']} takeovers={srv['takeovers_given']} max_queue={srv['max_queue']}"
    )
    assert srv["max_served"] == maxconn  # never above; and reached, or the spikes were not spikes
    assert srv["max_queue"] > 0
    assert srv["max_cur_conns"] <= bound  # the proxy's own count: exact, the invariant itself
    # The origin's view lags the proxy's by the time it takes to notice a close: a worker that makes
    # room by closing an idle connection opens the next one at once, and the origin may accept it
    # before it reads the old one's reset (seen under load on 2 cores: one spike in twenty at
    # bound + 1, with the proxy's count at the bound). More than that would be a real overshoot.
    assert max(peaks) <= bound + 1, histogram(peaks)
    assert sorted(peaks)[len(peaks) // 2] <= bound, histogram(peaks)  # the typical spike: within
    assert origin.stats()["max_active"] <= maxconn
    if variant == "nosteal":
        assert max(peaks) > maxconn, histogram(peaks)  # the edge case is reproduced, not only bounded


# ---- (f) the shared queue: maxconn, FIFO, timeout queue, maxqueue ----------------------------------------


def test_queue_is_fifo_across_workers(start: Start, origin: Origin) -> None:
    # 200 clients on maxconn 5 with a 50 ms origin, sent in two waves: the second only once every
    # request of the first is in (served, queued or answered, read from shm). Whatever worker a
    # request landed on, the queue is one FIFO: wave 1 is served before wave 2 (slack: maxconn).
    maxconn, wave = 5, 100
    setup = start(server=f"maxconn {maxconn}", backend="timeout queue 60s")
    row = setup.shm.row
    origin.reset()
    b = Burst(setup.port, timeout=60)
    b.send(wave, "/delay/50", tag=1)

    def wave1_in() -> bool:
        b.pump(0)
        done = b.done  # read first: a request moving on between the reads is counted in neither
        return done + row.served + row.queue_len >= wave

    wait_for(wave1_in, timeout=30, interval=0.005, message="wave 1 queued")
    queued, pending = row.queue_len, b.pending
    b.send(wave, "/delay/50", tag=2)
    answers = b.finish()
    srv = settled(setup.shm)
    stats = origin.stats()
    last1 = max(a.order for a in answers if a.tag == 1)
    overtakers = sum(1 for a in answers if a.tag == 2 and a.order < last1)
    print(
        f"\n[maxconn {maxconn}] wave 2 sent with {queued} queued, {pending} of wave 1 unanswered;"
        f" wave-2 answers before the last of wave 1: {overtakers}; origin max_active={stats['max_active']}"
        f" shm max_served={srv['max_served']} max_queue={srv['max_queue']}"
    )
    assert statuses(answers) == {200: 2 * wave}
    assert pending > maxconn and queued > 0, "wave 1 was over before wave 2: nothing to compare"
    assert stats["max_active"] <= maxconn
    assert srv["max_served"] == maxconn
    assert overtakers <= maxconn


def test_queue_timeout_answers_503(start: Start, origin: Origin) -> None:
    # maxconn 1, a 1 s origin, timeout queue 200ms, 20 clients at once: one is served, the 19 others
    # wait in the queue and get 503 when their 200 ms are up.
    setup = start(server="maxconn 1", backend="timeout queue 200ms")
    answers = burst(setup.port, 20, "/delay/1000")
    srv = settled(setup.shm)
    print(f"\n[timeout queue 200ms] {dict(statuses(answers))} queue_timeouts={srv['queue_timeouts']}")
    assert statuses(answers) == {200: 1, 503: 19}
    assert srv["queue_timeouts"] == 19
    assert srv["queue_full"] == 0


def test_maxqueue_full_answers_503_at_once(start: Start, origin: Origin) -> None:
    # maxconn 1, maxqueue 3, 10 clients at once on a 300 ms origin: 1 served, 3 queued (served in turn),
    # 6 refused with 503 without waiting (before the first answer comes back).
    setup = start(server="maxconn 1 maxqueue 3", backend="timeout queue 30s")
    answers = burst(setup.port, 10, "/delay/300")
    srv = settled(setup.shm)
    print(
        f"\n[maxqueue 3] {dict(statuses(answers))} queue_full={srv['queue_full']}"
        f" max_queue={srv['max_queue']}"
    )
    assert statuses(answers) == {200: 4, 503: 6}
    assert srv["queue_full"] == 6
    assert srv["max_queue"] == 3
    first_ok = min(a.order for a in answers if a.status == 200)
    assert all(a.order < first_ok for a in answers if a.status == 503)


# ---- (g) a worker killed under load --------------------------------------------------------------------


def test_worker_crash_repairs_shared_counters(start: Start, origin: Origin) -> None:
    # 8 keep-alive clients hammer maxconn 3 (so some always wait in the queue); one worker holding a
    # slot or a queued request is killed with SIGKILL. The master reconciles its cells; once the load
    # stops, every server-wide gauge equals the sum of the live workers' cells, nothing is served or
    # queued, and the origin sees exactly the connections the table counts.
    setup = start(server="maxconn 3", backend="timeout queue 30s")
    shm = setup.shm
    stop = threading.Event()
    ok = Counter[int]()
    errors = Counter[str]()
    lock = threading.Lock()

    def hammer() -> None:
        while not stop.is_set():
            try:
                with KeepAliveClient(setup.port) as client:
                    while not stop.is_set():
                        status = client.get("/delay/5").status
                        with lock:
                            ok[status] += 1
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors[type(exc).__name__] += 1

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    try:

        def busy_slot() -> list[int]:  # [slot], or [] (falsy) while no worker qualifies
            cells = shm.server()["cells"]
            return [slot for slot, c in enumerate(cells) if c["queued"] and c["served"]][:1]

        busy = wait_for(
            busy_slot, timeout=10, interval=0.005, message="a worker with a slot and a queued request"
        )[0]
        victim = shm.table.worker(busy).pid
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: victim not in setup.proxy.worker_pids() and len(setup.proxy.worker_pids()) == NBTHREAD,
            message="the killed worker respawned",
        )
        before = origin.stats()["requests"]
        wait_for(lambda: origin.stats()["requests"] >= before + 200, timeout=20, message="load goes on")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    srv = settled(shm)
    print(f"\n[crash] killed worker slot {busy}; answers {dict(ok)} client errors {dict(errors)}")
    wait_for(lambda: not server_row_equals_cells(shm.server()), message="rows == sum of cells")
    srv = shm.server()
    assert srv["served"] == 0 and srv["queue_len"] == 0
    assert server_row_equals_cells(srv) == {}
    assert set(ok) == {200}, ok
    wait_for(
        lambda: origin.stats()["open"] == shm.row.cur_conns,
        message="origin open == shm cur_conns",
    )
