"""tools.bench's pieces (tools/benchlib.py) and the floor (tools/floor.py): parsing, /proc readings, the
generated configuration, and the floor relaying keep-alive and ``Connection: close`` requests. Quick, and
no timing is asserted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO_ROOT, KeepAliveClient, Origin, _Managed, free_port, raw_exchange, wait_for

from tools import benchlib

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:1234/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.48ms  733.34us  10.08ms   92.66%
    Req/Sec    41.15k     8.53k   59.36k    64.52%
  38646 requests in 2.00s, 2.43MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
Requests/sec:  19323.10
Transfer/sec:      1.21MB
"""


def test_parse_wrk() -> None:
    res = benchlib.parse_wrk(WRK_OUTPUT)
    assert res.rps == 19323.10
    assert res.latency_us == pytest.approx(2480.0)
    assert res.requests == 38646
    assert res.errors == "Socket errors: connect 0, read 3, write 0, timeout 0"
    assert benchlib.parse_wrk(WRK_OUTPUT.replace("2.48ms", "812.00us")).latency_us == pytest.approx(812.0)


H2LOAD_OUTPUT = """finished in 5.00s, 12345.60 req/s, 1.20MB/s
requests: 61800 total, 61900 started, 61728 done, 61700 succeeded, 28 failed, 0 errored, 0 timeout
status codes: 61700 2xx, 0 3xx, 0 4xx, 0 5xx
                     min         max         mean         sd        +/- sd
time for request:      123us     45.60ms      3.20ms      2.10ms    70.00%
"""


def test_parse_h2load() -> None:
    res = benchlib.parse_h2load(H2LOAD_OUTPUT)
    assert (res.rps, res.requests, res.errors) == (12345.60, 61700, "28 failed, 0 errored")
    assert res.latency_us == pytest.approx(3200.0)
    clean = H2LOAD_OUTPUT.replace("28 failed", "0 failed").replace("3.20ms", "812us")
    assert benchlib.parse_h2load(clean).errors == "" and benchlib.parse_h2load(clean).latency_us == 812.0


HEY_OUTPUT = """
Summary:
  Total:\t5.0057 secs
  Slowest:\t0.0111 secs
  Fastest:\t0.0001 secs
  Average:\t0.0005 secs
  Requests/sec:\t4989.4281

Response time histogram:
  0.000 [1]\t|■■■■■■■■■■■■■■■■■■■■
  0.001 [2]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■

Latency distribution:
  10% in 0.0002 secs

Details (average, fastest, slowest):
  DNS+dialup:\t0.0001 secs, 0.0001 secs, 0.0011 secs

Status code distribution:
  [200]\t24940 responses
  [503]\t3 responses

Error distribution:
  [2]\tGet "http://127.0.0.1:1234/": EOF
"""


def test_hey_summary() -> None:
    res = benchlib.hey_summary(HEY_OUTPUT)
    assert (res.rps, res.requests) == (4989.4281, 24940)
    assert res.latency_us == pytest.approx(500.0)
    assert res.errors == '3 non-200; [2] Get "http://127.0.0.1:1234/": EOF'
    clean = HEY_OUTPUT.split("  [503]")[0]
    assert benchlib.hey_summary(clean).errors == "" and benchlib.hey_summary(clean).requests == 24940
    with pytest.raises(RuntimeError):
        benchlib.hey_summary("no summary")


def test_proc_readings_of_this_process() -> None:
    before = benchlib.cpu_ticks([os.getpid()])
    sum(i * i for i in range(200_000))
    assert benchlib.cpu_ticks([os.getpid()]) >= before >= 0
    assert benchlib.rss_kib(os.getpid()) > 1000


def test_stat_median_and_spread() -> None:
    assert benchlib.Stat([3.0, 1.0, 2.0]).show() == "2 [1-3]"
    assert benchlib.Stat([12.34]).show("{:.1f}") == "12.3"


def test_profile_buckets() -> None:
    worker = REPO_ROOT / "proxy" / "worker.py"
    loop_line = next(i for i, text in enumerate(worker.read_text().splitlines(), 1) if "run_forever(" in text)
    asyncio_file = Path(benchlib.STDLIB) / "asyncio" / "events.py"
    h11_file = "/somewhere/site-packages/h11/_connection.py"
    base = f"<module> ({REPO_ROOT}/proxy/__main__.py:7);run ({worker}:{loop_line})"
    raw = "\n".join(
        [
            f"{base} 30",
            f"{base};ClientConn.write ({REPO_ROOT}/proxy/mux_h1.py:443) 50",
            f"{base};Handle._run ({asyncio_file}:80) 10",
            f"{base};Connection.next_event ({h11_file}:400) 6",
            f"{base};getpid (<frozen os>:1) 4",
            "",
        ]
    )
    prof = benchlib.parse_raw_profile(raw)
    assert prof.samples == 100
    assert prof.modules == {
        "proxy/mux_h1.py": 50,
        "uvloop": 30,
        "asyncio": 10,
        "other (h11)": 6,
        "stdlib": 4,
    }
    assert prof.functions["ClientConn.write", "proxy/mux_h1.py"] == 50
    assert prof.functions["the event loop's compiled code", "uvloop"] == 30


def test_generated_config_is_valid_for_poolproxy(tmp_path: Path) -> None:
    cfg = tmp_path / "pp.cfg"
    for h2 in (False, True):
        cfg.write_text(
            benchlib.proxy_config(free_port(), free_port(), 2, "always", engine="h11", maxconn=100, h2=h2)
        )
        out = subprocess.run(
            [sys.executable, "-m", "proxy", "-c", "-f", str(cfg)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert ("proto h2" in cfg.read_text()) == h2


class Floor(_Managed):
    def __init__(self, upstream: int) -> None:
        self.port = free_port()
        args = ["-m", "tools.floor", "--listen", str(self.port), "--upstream", str(upstream)]
        self._spawn(args, "floor", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> int:
        return self._stop(signal.SIGTERM, 5.0)

    def listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0


def test_floor_relays_keepalive_and_close(origin: Origin) -> None:
    floor = Floor(origin.port)
    try:
        wait_for(floor.listening, message="floor listening")
        with KeepAliveClient(floor.port) as client:
            responses = [client.get("/") for _ in range(3)]
        assert client.connects == 1
        assert [r.status for r in responses] == [200, 200, 200]
        assert [r.headers["X-Req-Seq"] for r in responses] == ["1", "2", "3"]  # one upstream connection
        reply = raw_exchange(floor.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200")  # and the floor closed: raw_exchange read until close
    finally:
        floor.stop()


def test_hotpath_runs_requests_in_process() -> None:
    """tools.hotpath: a few in-process keep-alive requests on each engine, and closing ones, with the
    counts printed (the figures themselves are not asserted)."""
    for engine, close in (("native", False), ("h11", False), ("native", True)):
        out = subprocess.run(
            [sys.executable, "-m", "tools.hotpath", "--engine", engine, "--requests", "50", "--rounds", "1",
             "--profile", "3", *(["--close"] if close else [])],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        kind = "Connection: close" if close else "keep-alive"
        assert f"{engine}: " in out and f"per {kind} request" in out and "Python calls per request" in out
        assert 2 <= out.count("\n") <= 5  # the title, up to three functions (compiled: fewer), the result


@pytest.mark.parametrize("pure", [False, True], ids=["default", "pure"])
def test_hpack_bench_compares_both_codecs(pure: bool) -> None:
    """tools.hpack_bench: each scenario measured for both codecs, and it says which build of the
    proxy's codec it measured (the figures themselves are not asserted)."""
    env = {**os.environ, "POOLPROXY_PURE": "1" if pure else "0"}
    out = subprocess.run(
        [sys.executable, "-m", "tools.hpack_bench", "--blocks", "20", "--repeat", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True, env=env,
    ).stdout  # fmt: skip
    assert ("Python source" in out) if pure else ("compiled" in out or "Python source" in out)
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and "scenario" not in line]
    assert [" ".join(r[:2]) for r in rows] == [
        "h2load request",
        "browser request",
        "origin response",
        "frontend response",
    ]
    assert all(float(x) > 0 for r in rows for x in r[2:])
