"""The reference lab (SEMANTICS.md §6): ``http-reuse`` modes, poolproxy beside HAProxy, counted at the server.

    python -m tools.lab                      # the 12 rows of the article, 5 s each, both proxies
    python -m tools.lab --quick              # the same, 1 s per row
    python -m tools.lab --rows close-h1-always,keepalive-h2-safe --seconds 3
    python -m tools.lab --never              # the 12 rows plus the 4 ``http-reuse never`` rows
    python -m tools.lab --edge               # the maxconn + nbthread - 1 case (SEMANTICS.md §4)

Matrix. A row is ``<clients>-<proto>-<mode>``: clients ``close`` (``hey -disable-keepalive``: every
request on a new client connection) or ``keepalive`` (hey's default); ``proto`` is what the proxy speaks
to the server, ``h1`` or ``h2`` (``server ... proto h2``, cleartext with prior knowledge); ``mode`` is
``http-reuse`` safe / aggressive / always / never. The clients always speak HTTP/1.1, ``--users`` of
them (50) for ``--seconds`` per row and proxy. For each row, one configuration file is generated
(``--workers`` threads, 4) and run by poolproxy, then by Debian's HAProxy: the *same file*, rows
interleaved, each proxy started fresh for its row and stopped after it.

The server (``tools.labkit``). One HAProxy process answers empty 200s (``http-request return status
200``) on two frontends: one speaking HTTP/1.1, one ``bind ... proto h2`` (the article's set-up). It is
never the proxy under test. Its runtime API (a stats socket) counts: before each run ``clear counters
all``; after it, from ``show stat``, the frontend's ``conn_tot`` (the proxy's ``connect()`` calls that
reached the server), ``smax`` (the peak of concurrent connections: ``max(scur before, smax)``, since
HAProxy raises ``smax`` only when it accepts) and ``req_tot`` (requests served).

Printed per row and proxy: requests answered 200 by hey, the server's connections (connects), the
peak of concurrent server connections, errors (hey's error distribution, and non-200 answers), the
article's figures and those of HAProxy 2.6 measured on this project's machine (SEMANTICS.md §6) for
that row. For poolproxy, its own counters from the shared table (connects, takeovers asked / given /
failed) and how its workers steal. A configuration that poolproxy refuses (``proto h2`` until it is
built) is reported as refused with poolproxy's reason, and HAProxy's row is still run.

``--edge`` (SEMANTICS.md §4): a very fast server (the same HAProxy origin), ``server ... maxconn 2``
(``--edge-maxconn``), ``http-reuse always``, 4 workers, and ``--spikes`` spikes of ``--spike-size``
simultaneous one-shot requests (sent from one thread: every connection opened and written before any
answer is read). Per spike the server's peak of concurrent connections; printed: the largest, the
histogram, and the bound ``maxconn + nbthread - 1`` (``maxconn`` with ``strict-maxconn``), for
poolproxy, poolproxy with ``tune.idle-pool.shared off`` (no stealing: the case in full), poolproxy with
``strict-maxconn``, and HAProxy with and without ``tune.idle-pool.shared off`` (2.6 knows no
``strict-maxconn``). For poolproxy the shared table's
``max_cur_conns`` (its own exact count) is printed too; the server sees a close a moment after it
happened, so its peak may show one more.

Everything listens on 127.0.0.1 and is stopped before the tool exits (also on Ctrl-C or SIGTERM);
every hey run is bounded (``-z``) and killed past twice its time and 30 s. Needs ``hey`` and
``haproxy``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import re
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.benchlib import stop
from tools.labkit import LabServer, free_port, hey, poolproxy_refusal, shm_counters, start_proxy

CLIENTS = ("close", "keepalive")
PROTOS = ("h1", "h2")
MODES = ("safe", "aggressive", "always")
ALL_MODES = (*MODES, "never")
PROXIES = ("poolproxy", "haproxy")

# (clients, proto, mode) -> (connect() calls, max server connections): the article's table (HAProxy, one
# minute, 50 users) and Debian's HAProxy 2.6 measured here (4 threads, 50 hey users, 5 s), SEMANTICS.md §6.
ARTICLE: dict[tuple[str, str, str], tuple[int, int]] = {
    ("close", "h1", "safe"): (22000, 50), ("close", "h1", "aggressive"): (22000, 50),
    ("close", "h1", "always"): (54, 50), ("close", "h2", "safe"): (20000, 50),
    ("close", "h2", "aggressive"): (50, 4), ("close", "h2", "always"): (4, 4),
    ("keepalive", "h1", "safe"): (59, 50), ("keepalive", "h1", "aggressive"): (55, 50),
    ("keepalive", "h1", "always"): (55, 50), ("keepalive", "h2", "safe"): (51, 50),
    ("keepalive", "h2", "aggressive"): (49, 4), ("keepalive", "h2", "always"): (4, 4),
}  # fmt: skip
HAPROXY_26: dict[tuple[str, str, str], tuple[int, int]] = {
    ("close", "h1", "safe"): (16529, 107), ("close", "h1", "aggressive"): (16177, 102),
    ("close", "h1", "always"): (51, 50), ("close", "h2", "safe"): (12985, 105),
    ("close", "h2", "aggressive"): (12, 11), ("close", "h2", "always"): (5, 4),
    ("keepalive", "h1", "safe"): (56, 50), ("keepalive", "h1", "aggressive"): (51, 50),
    ("keepalive", "h1", "always"): (51, 50), ("keepalive", "h2", "safe"): (80, 50),
    ("keepalive", "h2", "aggressive"): (17, 16), ("keepalive", "h2", "always"): (5, 4),
}  # fmt: skip


# ---- rows and configurations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the matrix: how the clients behave, what the proxy speaks to the server, the mode."""

    clients: str
    proto: str
    mode: str

    @property
    def name(self) -> str:
        return f"{self.clients}-{self.proto}-{self.mode}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.clients, self.proto, self.mode)

    @classmethod
    def parse(cls, name: str) -> Row:
        parts = name.strip().split("-")
        if len(parts) != 3 or parts[0] not in CLIENTS or parts[1] not in PROTOS or parts[2] not in ALL_MODES:
            raise ValueError(
                f"bad row {name!r}: <{'|'.join(CLIENTS)}>-<{'|'.join(PROTOS)}>-<{'|'.join(ALL_MODES)}>"
            )
        return cls(*parts)


def all_rows(never: bool = False) -> list[Row]:
    """The article's order: clients, then protocol, then mode."""
    modes = ALL_MODES if never else MODES
    return [Row(c, p, m) for c, p, m in itertools.product(CLIENTS, PROTOS, modes)]


def select_rows(spec: str | None, never: bool = False) -> list[Row]:
    if not spec:
        return all_rows(never)
    return [Row.parse(name) for name in spec.split(",") if name.strip()]


def proxy_config(port: int, server_port: int, workers: int, mode: str, proto: str, server: str = "") -> str:
    """The configuration both proxies run for one row: the same text, byte for byte."""
    proto_kw = " proto h2" if proto == "h2" else ""
    extra = f" {server}" if server else ""
    return f"""global
    nbthread {workers}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout queue 30s
    http-reuse {mode}
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 127.0.0.1:{server_port}{proto_kw}{extra}
"""


def refusal_label(proto: str, reason: str) -> str:
    """What the table says about a refused row: ``proto h2`` has its own words until it is built."""
    if proto == "h2" and "proto" in reason:
        return "poolproxy: proto h2 refused (not built)"
    return f"poolproxy refused the configuration: {reason}"


@dataclass
class Result:
    row: Row
    proxy: str
    refused: str = ""  # why the row was not run for this proxy
    requests: int = 0  # 200 answers seen by the clients
    connects: int = 0  # connections the server accepted
    max_conns: int = 0  # peak of concurrent server connections
    errors: int = 0  # client requests without a 200
    error_text: str = ""
    rps: float = 0.0
    own: dict[str, int] = field(default_factory=dict)  # poolproxy's shared-table counters
    note: str = ""


def run_row(
    row: Row, name: str, server: LabServer, d: Path, *, workers: int, users: int, seconds: float,
    env: dict[str, str],
) -> Result:  # fmt: skip
    port = free_port()
    cfg = d / f"{row.name}.cfg"
    cfg.write_text(proxy_config(port, server.ports[row.proto], workers, row.mode, row.proto))
    if name == "poolproxy":
        reason = poolproxy_refusal(cfg)
        if reason is not None:
            return Result(row, name, refused=refusal_label(row.proto, reason))
    c = start_proxy(name, cfg, port, workers, d, env)
    try:
        server.reset(row.proto)
        res = hey(port, users, seconds, keepalive=row.clients == "keepalive")
        counts = server.counts(row.proto)
        out = Result(
            row, name, requests=res.ok, connects=counts.connects, max_conns=counts.max_conns,
            errors=res.errors + sum(res.other.values()), rps=res.rps,
            error_text="; ".join([*(f"{n} x {s}" for s, n in sorted(res.other.items())), res.error_text][:3]),
        )  # fmt: skip
        if name == "poolproxy":
            out.own = shm_counters(c.proc.pid)
            via = sorted(set(re.findall(r"stealing idle connections with (\S+)", c.log_tail(200000))))
            out.note = "/".join(via)
        return out
    finally:
        stop(c.proc)


# ---- the table --------------------------------------------------------------------------------------------


def _ref(table: dict[tuple[str, str, str], tuple[int, int]], row: Row) -> str:
    ref = table.get(row.key)
    return f"{ref[0]} / {ref[1]}" if ref else "-"


def format_table(results: Sequence[Result]) -> str:
    """The article's table, one line per row and proxy, the reference figures beside."""
    head = (
        f"{'row':24} {'proxy':9} {'requests':>8} {'connects':>8} {'max conns':>9} {'errors':>6}"
        f"  {'article':>11}  {'haproxy 2.6':>11}  notes"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        refs = f"  {_ref(ARTICLE, r.row):>11}  {_ref(HAPROXY_26, r.row):>11}"
        if r.refused:
            lines.append(f"{r.row.name:24} {r.proxy:9} {r.refused}")
            continue
        notes = []
        if r.own:
            notes.append(
                f"own connects {r.own['connects']}, takeovers {r.own['takeovers_given']}/"
                f"{r.own['takeovers_asked']} (failed {r.own['takeovers_failed']})"
            )
        if r.note:
            notes.append(r.note)
        if r.error_text:
            notes.append(r.error_text)
        lines.append(
            f"{r.row.name:24} {r.proxy:9} {r.requests:8} {r.connects:8} {r.max_conns:9} {r.errors:6}{refs}"
            f"  {'; '.join(notes)}"
        )
    return "\n".join(lines)


# ---- the edge case ----------------------------------------------------------------------------------------

EDGE_VARIANTS: dict[str, tuple[str, str, str]] = {
    # variant -> (proxy, server parameters beyond maxconn, global lines)
    "poolproxy": ("poolproxy", "", ""),
    "poolproxy nosteal": ("poolproxy", "", "tune.idle-pool.shared off"),
    "poolproxy strict-maxconn": ("poolproxy", "strict-maxconn", ""),
    "haproxy": ("haproxy", "", ""),
    "haproxy nosteal": ("haproxy", "", "tune.idle-pool.shared off"),
}


def edge_config(port: int, server_port: int, workers: int, maxconn: int, server: str, glob: str) -> str:
    text = proxy_config(port, server_port, workers, "always", "h1", f"maxconn {maxconn} {server}".strip())
    if glob:
        text = text.replace("global\n", f"global\n    {glob}\n", 1)
    return text


def spike(port: int, n: int, timeout: float = 30.0) -> Counter[int]:
    """`n` one-shot requests at once: every connection opened and written before any answer is read;
    the statuses (0: no answer)."""
    request = b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    codes: Counter[int] = Counter()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        try:
            for s in socks:
                s.sendall(request)
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ, bytearray())
            while sel.get_map():
                if time.monotonic() > deadline:
                    codes[0] += len(sel.get_map())
                    break
                for key, _ in sel.select(0.2):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        chunk = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except ConnectionError:
                        chunk = b""
                    if chunk:
                        key.data.extend(chunk)
                        continue
                    sel.unregister(sock)
                    m = re.match(rb"HTTP/1\.[01] (\d{3})", bytes(key.data))
                    codes[int(m[1]) if m else 0] += 1
        finally:
            for s in socks:
                s.close()
    return codes


@dataclass
class EdgeResult:
    variant: str
    bound: int
    peaks: list[int] = field(default_factory=list)
    codes: Counter[int] = field(default_factory=Counter)
    own_max: int | None = None  # poolproxy's max_cur_conns
    refused: str = ""


def run_edge(
    variant: str, server: LabServer, d: Path, *, workers: int, maxconn: int, spikes: int, size: int,
    env: dict[str, str],
) -> EdgeResult:  # fmt: skip
    name, params, glob = EDGE_VARIANTS[variant]
    bound = maxconn if "strict-maxconn" in params else maxconn + workers - 1
    port = free_port()
    cfg = d / f"edge-{variant.replace(' ', '-')}.cfg"
    cfg.write_text(edge_config(port, server.ports["h1"], workers, maxconn, params, glob))
    res = EdgeResult(variant, bound)
    if name == "poolproxy" and (reason := poolproxy_refusal(cfg)) is not None:
        res.refused = reason
        return res
    c = start_proxy(name, cfg, port, workers, d, env)
    try:
        for _ in range(spikes):
            server.reset("h1", settle=0.0)  # the idle connections the proxy keeps count in the peak
            res.codes.update(spike(port, size))
            res.peaks.append(server.counts("h1").max_conns)
        if name == "poolproxy":
            res.own_max = shm_counters(c.proc.pid).get("max_cur_conns")
    finally:
        stop(c.proc)
    return res


def format_edge(results: Sequence[EdgeResult], maxconn: int, workers: int, spikes: int, size: int) -> str:
    lines = [
        f"maxconn {maxconn}, {workers} workers/threads, http-reuse always, {spikes} spikes of {size}"
        f" simultaneous one-shot requests; per spike the server's peak of concurrent connections",
        f"{'variant':26} {'bound':>5} {'max peak':>8}  {'own max':>7}  peaks (value x spikes)   answers",
    ]
    for r in results:
        if r.refused:
            lines.append(f"{r.variant:26} refused: {r.refused}")
            continue
        hist = " ".join(f"{v}x{n}" for v, n in sorted(Counter(r.peaks).items()))
        own = "-" if r.own_max is None else str(r.own_max)
        codes = ", ".join(f"{n} x {s or 'none'}" for s, n in sorted(r.codes.items()))
        lines.append(f"{r.variant:26} {r.bound:5} {max(r.peaks, default=0):8}  {own:>7}  {hist:24} {codes}")
    return "\n".join(lines)


# ---- main -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def lab_server() -> Iterator[tuple[LabServer, Path]]:
    with tempfile.TemporaryDirectory(prefix="poolproxy-lab-") as tmp:
        d = Path(tmp)
        server = LabServer(d)
        try:
            yield server, d
        finally:
            server.stop()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", help="rows, e.g. close-h1-always,keepalive-h2-safe (default: all)")
    ap.add_argument("--never", action="store_true", help="add the http-reuse never rows to the default set")
    ap.add_argument("--proxies", default=",".join(PROXIES), help="poolproxy,haproxy (default: both)")
    ap.add_argument("--workers", type=int, default=4, help="nbthread of both proxies")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5.0, help="per row and proxy")
    ap.add_argument("--quick", action="store_true", help="1 s per row and proxy; with --edge, 5 spikes")
    ap.add_argument("--rounds", type=int, default=1, help="run the rows this many times, interleaved")
    ap.add_argument("--steal", default="auto", choices=("auto", "pidfd", "channel"),
                    help="poolproxy's stealing mechanism (POOLPROXY_STEAL)")  # fmt: skip
    ap.add_argument("--edge", action="store_true", help="the maxconn + nbthread - 1 case")
    ap.add_argument("--edge-maxconn", type=int, default=2)
    ap.add_argument("--spikes", type=int, default=20)
    ap.add_argument("--spike-size", type=int, default=32)
    args = ap.parse_args(argv)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C: every process started is stopped on the way out.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    for tool in ("hey", "haproxy"):
        if shutil.which(tool) is None:
            print(f"{tool} is required (apt-get install {tool})", file=sys.stderr)
            return 1
    env = {} if args.steal == "auto" else {"POOLPROXY_STEAL": args.steal}
    try:
        rows = select_rows(args.rows, args.never)
    except ValueError as exc:
        ap.error(str(exc))
    proxies = [p for p in args.proxies.split(",") if p]
    if any(p not in PROXIES for p in proxies):
        ap.error(f"--proxies: {', '.join(PROXIES)}")
    with lab_server() as (server, d):
        if args.edge:
            spikes = 5 if args.quick else args.spikes
            edge: list[EdgeResult] = []
            for variant, (proxy, _, _) in EDGE_VARIANTS.items():
                if proxy in proxies:
                    peaks = run_edge(
                        variant, server, d, workers=args.workers, maxconn=args.edge_maxconn, spikes=spikes,
                        size=args.spike_size, env=env,
                    )  # fmt: skip
                    edge.append(peaks)
            print(format_edge(edge, args.edge_maxconn, args.workers, spikes, args.spike_size))
            return 0
        seconds = 1.0 if args.quick else args.seconds
        print(
            f"{args.users} hey users (HTTP/1.1), {seconds:g} s per row and proxy,"
            f" {args.workers} workers/threads;"
            f" server: HAProxy answering empty 200s, counted by its runtime API; article: HAProxy, 1 min;"
            f" haproxy 2.6: SEMANTICS.md §6 (5 s). Columns: connects / max concurrent server connections.",
            flush=True,
        )
        results: list[Result] = []
        for _, row, name in itertools.product(range(args.rounds), rows, proxies):
            one = run_row(
                row, name, server, d, workers=args.workers, users=args.users, seconds=seconds, env=env
            )
            results.append(one)
            print(format_table(results[-1:]).splitlines()[-1], flush=True)
        print()
        print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
