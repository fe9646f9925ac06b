"""End-to-end observability served by the workers: the Prometheus exporter (``http-request
use-service prometheus-exporter``) parsed with ``prometheus_client``'s parser and compared with
HAProxy's exporter on the same config, and the stats page (``stats uri``: HTML, ``;csv``, Basic
authentication) loaded in a real headless browser (Debian's ``chromium``), whose DOM must show the
per-worker idle counts the runtime API reports."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import MakeProxy, Origin, free_port, http_get, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_e2e_cli import ask

pytestmark = pytest.mark.e2e

HAPROXY = shutil.which("haproxy")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ppobs", dir="/tmp"))  # short: sun_path is 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def config(port: int, origin: int, sock: Path, *, nbthread: int = 2, extra: str = "") -> str:
    return f"""\
global
    nbthread {nbthread}
    stats socket {sock} level admin

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.1:{port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats
    stats refresh 5s
    {extra}
    default_backend be

backend be
    server s1 127.0.0.1:{origin} pool-purge-delay 1h
    server s2 127.0.0.1:{origin} pool-purge-delay 1h
"""


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``name -> {sorted labels: value}`` of one scrape, as ``prometheus_client`` parses it."""
    resp = http_get(port, "/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(resp.body.decode()):
        for sample in fam.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_prometheus_scrape_parses_and_counts(make_proxy: MakeProxy, origin: Origin, sockdir: Path) -> None:
    port = free_port()
    make_proxy(config(port, origin.port, sockdir / "s.sock"), ports=[port], workers=2)
    for _ in range(10):
        assert http_get(port, "/").status == 200
    m = scrape(port)
    assert m["haproxy_process_nbthread"][()] == 2
    # (the scrape itself is counted once it ends)
    assert m["haproxy_frontend_http_requests_total"][(("proxy", "fe"),)] == 10
    assert m["haproxy_frontend_http_responses_total"][(("code", "2xx"), ("proxy", "fe"))] == 10
    assert m["haproxy_backend_http_requests_total"][(("proxy", "be"),)] == 10
    s1 = (("proxy", "be"), ("server", "s1"))
    assert m["haproxy_server_status"][(*s1, ("state", "UP"))] == 1
    ok = m["haproxy_server_http_responses_total"]
    assert sum(ok[(("code", "2xx"), ("proxy", "be"), ("server", n))] for n in ("s1", "s2")) == 10
    assert m["haproxy_backend_http_responses_total"][(("code", "2xx"), ("proxy", "be"))] == 10
    per_worker = [m["poolproxy_server_idle_connections"][(*s1[:1], *s1[1:], ("worker", str(w)))]
                  for w in range(2)]  # fmt: skip
    assert sum(per_worker) == m["haproxy_server_idle_connections_current"][s1]
    assert "poolproxy_server_takeovers_given_total" in m
    # a runtime change shows in the next scrape, whichever worker answers it
    assert ask(str(sockdir / "s.sock"), "set server be/s1 state maint\n") == "\n"
    assert scrape(port)["haproxy_server_status"][(*s1, ("state", "MAINT"))] == 1


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_prometheus_names_match_haproxy(make_proxy: MakeProxy, origin: Origin, sockdir: Path) -> None:
    """Every haproxy_* metric we export exists in HAProxy's exporter, with the same type and labels."""
    port, hport = free_port(), free_port()
    make_proxy(config(port, origin.port, sockdir / "s.sock"), ports=[port], workers=2)
    cfg = sockdir / "h.cfg"
    cfg.write_text(config(hport, origin.port, sockdir / "h.sock"))
    hap = subprocess.Popen([str(HAPROXY), "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: (sockdir / "h.sock").exists())

        def families(p: int) -> dict[str, tuple[str, set[tuple[str, ...]]]]:
            text = http_get(p, "/metrics").body.decode()
            return {f.name: (f.type, {tuple(sorted(s.labels)) for s in f.samples})
                    for f in text_string_to_metric_families(text)}  # fmt: skip

        ours, theirs = families(port), families(hport)
        mine = {n: v for n, v in ours.items()
                if n.startswith("haproxy_") and n != "haproxy_process_build_info"}  # fmt: skip
        assert len(mine) > 40
        for name, (kind, labels) in mine.items():
            assert name in theirs, name
            assert theirs[name][0] == kind, name
            assert labels == theirs[name][1], name
    finally:
        hap.terminate()
        hap.wait(5)


def test_stats_page_csv_and_auth(make_proxy: MakeProxy, origin: Origin, sockdir: Path) -> None:
    port = free_port()
    extra = "stats auth admin:s3cret\n    stats realm Pool stats"
    make_proxy(config(port, origin.port, sockdir / "s.sock", extra=extra), ports=[port], workers=2)
    denied = http_get(port, "/stats")
    assert denied.status == 401 and denied.headers["WWW-Authenticate"] == 'Basic realm="Pool stats"'
    bad = {"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()}
    assert http_get(port, "/stats", headers=bad).status == 401
    good = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
    page = http_get(port, "/stats", headers=good)
    assert page.status == 200 and page.headers["Refresh"] == "5"
    assert b"<table id='px-be'>" in page.body and b"id='pool-data'" in page.body
    csv = http_get(port, "/stats;csv;norefresh", headers=good)
    assert csv.status == 200 and csv.headers["Refresh"] is None
    sock_csv = ask(str(sockdir / "s.sock"), "show stat\n")
    assert csv.body.decode().splitlines()[0] == sock_csv.splitlines()[0]
    assert [r.split(",")[:2] for r in csv.body.decode().splitlines()[1:]] == [
        ["fe", "FRONTEND"], ["be", "s1"], ["be", "s2"], ["be", "BACKEND"]]  # fmt: skip
    assert http_get(port, "/other").status == 200  # not the stats uri: proxied


def idle_per_worker(sock: str) -> dict[str, list[int]]:
    """``show servers conn``: server -> the idle_per_thr columns."""
    lines = ask(sock, "show servers conn\n").splitlines()
    n = int(re.search(r"idle_per_thr\[(\d+)\]", lines[0]).group(1))  # type: ignore[union-attr]
    return {line.split()[0]: [int(v) for v in line.split()[-n:]] for line in lines[1:] if line}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_stats_page_in_a_browser_shows_the_workers_pools(
    make_proxy: MakeProxy, origin: Origin, sockdir: Path
) -> None:
    """The page's script builds the per-worker tables in the browser; the numbers it shows are the
    runtime API's ``idle_per_thr`` columns."""
    port = free_port()
    sock = str(sockdir / "s.sock")
    # the browser's own /favicon.ico must not reach a server (it would move idle connections)
    extra = "http-request return status 404 if { path /favicon.ico }"
    make_proxy(config(port, origin.port, sockdir / "s.sock", nbthread=3, extra=extra), ports=[port],
               workers=3)  # fmt: skip
    for _ in range(12):
        assert http_get(port, "/").status == 200
    for _ in range(3):  # the counts are settled when two reads around the browser's agree
        before = idle_per_worker(sock)
        dom = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=2000",
             "--dump-dom", f"http://127.0.0.1:{port}/stats"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        if idle_per_worker(sock) == before:
            break
    else:
        pytest.fail("the idle counts kept moving while the browser loaded the page")
    shown = {
        f"be/{srv}": [int(v) for _, v in sorted(
            (int(w), v) for s, w, v in re.findall(r'id="pool-be-(s\d)-w(\d+)-idle">(\d+)<', dom) if s == srv)]
        for srv in ("s1", "s2")
    }  # fmt: skip
    assert shown == before
    assert len(shown["be/s1"]) == 3 and sum(shown["be/s1"]) + sum(shown["be/s2"]) > 0
