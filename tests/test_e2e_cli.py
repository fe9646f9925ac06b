"""End-to-end runtime API: the real proxy with ``stats socket`` lines, queried with ``socat`` (the real
client) and with Python; the headers compared with the installed HAProxy's on the same config."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import MakeProxy, Origin, free_port, http_get, proxy_config, wait_for

pytestmark = pytest.mark.e2e


def ask(path: str, text: str, timeout: float = 5.0) -> str:
    """Send ``text`` on the Unix socket ``path`` and read until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(text.encode())
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode()


def accepts(path: Path) -> bool:
    """Whether a Unix socket listens at `path` (a connection is accepted into its backlog)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ppcli", dir="/tmp"))  # short: sun_path is 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def glob_lines(d: Path) -> str:
    return (f"stats socket {d}/admin.sock mode 600 level admin\n"
            f"    stats socket {d}/user.sock level user\n    stats timeout 1s")  # fmt: skip


def test_runtime_api(make_proxy: MakeProxy, origin: Origin, sockdir: Path) -> None:
    port = free_port()
    make_proxy(proxy_config(port, origin.port, nbthread=2, glob=glob_lines(sockdir)), ports=[port], workers=2)
    admin, user = str(sockdir / "admin.sock"), str(sockdir / "user.sock")
    wait_for(lambda: accepts(Path(admin)) and accepts(Path(user)), message="stats sockets accepting")
    for _ in range(5):
        assert http_get(port, "/").status == 200
    out = subprocess.run(["socat", "stdio", f"UNIX:{admin}"], input="show servers conn\n",
                         capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0].endswith("idle_per_thr[2]") and lines[1].startswith("be/s1 ")
    assert len(lines[1].split()) == len(lines[0].split()) - 2 + 2  # "#", idle_per_thr[2] -> 2 columns
    info = ask(admin, "show info; show backend\n")
    assert "Name: poolproxy\n" in info and "Nbthread: 2\n" in info and "# name\nbe\n" in info
    assert "CumReq: 5\n" in info
    # sessions, as HAProxy counts them: the pooled server connection is no session, and
    # CurrConns counts client connections (none open now)
    assert "CurrConns: 0\n" in info
    (row,) = [r.split(",") for r in ask(admin, "show stat\n").splitlines() if r.startswith("be,s1,")]
    header = ask(admin, "show stat\n").splitlines()[0].removeprefix("# ").split(",")
    col = dict(zip(header, row, strict=False))
    assert (col["scur"], col["smax"]) == ("0", "1") and int(col["idle_conn_cur"]) >= 1, col
    assert ask(user, "clear counters\n") == "Permission denied\n\n"
    assert ask(admin, "clear counters\n") == "\n"
    (row,) = [r.split(",") for r in ask(admin, "show stat\n").splitlines() if r.startswith("be,s1,")]
    assert row[5] == row[4]  # smax back to scur (no request in flight)
    assert ask(user, "bogus\n").startswith("Unknown command: 'bogus'")
    prompt = ask(user, "prompt\nshow backend\nquit\n")
    assert prompt == "> # name\nbe\n\n> "
    # maintenance from the admin socket: the workers stop picking the server (503), then resume
    assert ask(user, "disable server be/s1\n") == "Permission denied\n\n"
    assert ask(admin, "set server be/nope state maint\n") == "No such server.\n\n"
    assert ask(admin, "set server be/s1 state maint\n") == "\n"
    assert "be 1 s1 " in ask(admin, "show servers state be\n")
    assert http_get(port, "/").status == 503
    assert ask(admin, "enable server be/s1\n") == "\n"
    assert http_get(port, "/").status == 200
    # an idle interactive session is closed after stats timeout (1s)
    t0 = time.monotonic()
    assert ask(user, "prompt\n", timeout=5) == "> "
    assert time.monotonic() - t0 < 4


HAPROXY = shutil.which("haproxy")


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_headers_match_haproxy(make_proxy: MakeProxy, origin: Origin, sockdir: Path) -> None:
    port, hport = free_port(), free_port()
    glob = f"stats socket {sockdir}/ours.sock level admin"
    make_proxy(proxy_config(port, origin.port, nbthread=2, glob=glob), ports=[port], workers=2)
    cfg = sockdir / "h.cfg"
    hglob = f"stats socket {sockdir}/h.sock level admin"
    cfg.write_text(proxy_config(hport, origin.port, nbthread=2, glob=hglob))
    log = sockdir / "haproxy.log"
    with open(log, "wb") as out:
        hap = subprocess.Popen([str(HAPROXY), "-db", "-f", str(cfg)], stdout=out, stderr=out)

    def both_answer() -> bool:
        if hap.poll() is not None:  # e.g. its port taken meanwhile: say so, rather than time out
            raise AssertionError(f"haproxy exited with {hap.returncode}: {log.read_text()}")
        return accepts(sockdir / "h.sock") and accepts(sockdir / "ours.sock")

    try:
        # Connectable, not only present: a Unix socket's path exists from bind() on, before listen().
        wait_for(both_answer, message="both stats sockets accepting")
        ours, theirs = str(sockdir / "ours.sock"), str(sockdir / "h.sock")
        for cmd in ("show servers conn", "show stat"):
            assert ask(ours, cmd + "\n").splitlines()[0] == ask(theirs, cmd + "\n").splitlines()[0], cmd
        o_stat = [line.split(",") for line in ask(ours, "show stat\n").splitlines() if line]
        h_stat = [line.split(",") for line in ask(theirs, "show stat\n").splitlines() if line]
        assert [r[:2] for r in o_stat] == [r[:2] for r in h_stat]
        assert [len(r) for r in o_stat] == [len(r) for r in h_stat]
        o_conn = ask(ours, "show servers conn\n").splitlines()[1].split()
        h_conn = ask(theirs, "show servers conn\n").splitlines()[1].split()
        assert len(o_conn) == len(h_conn)
        assert o_conn[2:6] == h_conn[2:6]  # addr port - purge_delay
        o_state = ask(ours, "show servers state\n").splitlines()
        h_state = ask(theirs, "show servers state\n").splitlines()
        assert o_state[:2] == h_state[:2]
        o_row, h_row = o_state[2].split(), h_state[2].split()
        assert len(o_row) == len(h_row)
        same = [i for i in range(len(h_row)) if i != 9]  # all but the time since the last change
        assert [o_row[i] for i in same] == [h_row[i] for i in same]
        o_keys = [k.split(":")[0] for k in ask(ours, "show info\n").splitlines() if k]
        h_keys = [k.split(":")[0] for k in ask(theirs, "show info\n").splitlines() if k]
        assert [k for k in h_keys if k in o_keys] == o_keys  # ours: a subset, in HAProxy's order
    finally:
        hap.terminate()
        hap.wait(5)


def test_response_classes_per_server_and_backend(
    make_proxy: MakeProxy, origin: Origin, sockdir: Path
) -> None:
    """hrsp_2xx .. hrsp_5xx of a server and its backend count the server's answers, across the
    workers (they stayed empty: only frontends counted), in show stat and in Prometheus."""
    port = free_port()
    admin = sockdir / "admin.sock"
    make_proxy(proxy_config(port, origin.port, nbthread=2, glob=f"stats socket {admin} level admin"),
               ports=[port], workers=2)  # fmt: skip
    wait_for(lambda: accepts(admin), message="the stats socket")
    for path, times in (("/", 3), ("/status/302", 1), ("/status/404", 2), ("/status/503", 1)):
        for _ in range(times):
            http_get(port, path)
    stat = ask(str(admin), "show stat\n").splitlines()
    header = stat[0].removeprefix("# ").split(",")
    for name in ("s1", "BACKEND"):
        col = dict(zip(header, next(r for r in stat if r.startswith(f"be,{name},")).split(","), strict=False))
        assert [col[f"hrsp_{c}xx"] for c in "2345"] == ["3", "1", "2", "1"], (name, col)


def proxies_config(sock: Path, ports: list[int], origin: int) -> str:
    """backend, frontend, listen, backend, in that order: proxy ids and row order to compare."""
    return f"""global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
backend b1
    server s1 127.0.0.1:{origin}
    server s2 127.0.0.1:{origin}
frontend f1
    bind 127.0.0.1:{ports[0]}
    default_backend b1
listen l1
    bind 127.0.0.1:{ports[1]}
    server s3 127.0.0.1:{origin}
backend b2
    server s4 127.0.0.1:{origin}
"""


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_proxy_ids_order_filters_and_typed_info_match_haproxy(
    make_proxy: MakeProxy, origin: Origin, sockdir: Path
) -> None:
    """HAProxy numbers proxies by declaration (from 2) and lists a listen section's rows together;
    ``show stat <iid|proxy> <type> <sid>`` filters; ``show info typed|json`` are HAProxy's forms."""
    ours, theirs = sockdir / "ours.sock", sockdir / "h.sock"
    ports = [free_port(), free_port()]
    make_proxy(proxies_config(ours, ports, origin.port), ports=ports, workers=1)
    hports = [free_port(), free_port()]
    cfg = sockdir / "h.cfg"
    cfg.write_text(proxies_config(theirs, hports, origin.port))
    log = sockdir / "haproxy.log"
    with open(log, "wb") as out:
        hap = subprocess.Popen([str(HAPROXY), "-db", "-f", str(cfg)], stdout=out, stderr=out)
    try:
        wait_for(lambda: accepts(theirs) and accepts(ours), message="both stats sockets accepting")

        def keyed(sock: Path, cmd: str) -> list[list[str]]:  # pxname, svname, iid, sid, type
            rows = [r.split(",") for r in ask(str(sock), cmd + "\n").splitlines()[1:] if r]
            return [[r[0], r[1], r[27], r[28], r[32]] for r in rows]

        for cmd in ("show stat", "show stat -1 2 -1", "show stat b1 4 -1", "show stat 4 -1 -1",
                    "show stat -1 5 1"):  # fmt: skip
            assert keyed(ours, cmd) == keyed(theirs, cmd), cmd

        def state(sock: Path) -> list[list[str]]:  # be_id be_name srv_id srv_name
            lines = ask(str(sock), "show servers state\n").splitlines()[2:]
            return [line.split()[:4] for line in lines if line]

        assert state(ours) == state(theirs)
        typed = ask(str(ours), "show info typed\n").splitlines()
        htyped = ask(str(theirs), "show info typed\n").splitlines()
        heads = {line.rsplit(":", 1)[0] for line in htyped if line}
        assert typed[-1] == "" and all(line.rsplit(":", 1)[0] in heads for line in typed if line), typed
        info = json.loads(ask(str(ours), "show info json\n"))
        hinfo = {f["field"]["name"]: f for f in json.loads(ask(str(theirs), "show info json\n"))}
        for f in info:
            h = hinfo[f["field"]["name"]]
            assert (f["field"], f["tags"], f["value"]["type"]) == (h["field"], h["tags"], h["value"]["type"])
    finally:
        hap.terminate()
        hap.wait(5)


def two_servers(port: int, o1: Origin, o2: Origin, glob: str) -> str:
    servers = f"server s1 127.0.0.1:{o1.port}\n    server s2 127.0.0.1:{o2.port}"
    return proxy_config(port, 0, nbthread=2, glob=glob, servers=servers)


def test_runtime_changes_reach_every_worker(make_proxy: MakeProxy, sockdir: Path) -> None:
    """drain, weight, maint and maxconn set on the master's socket, obeyed by both workers."""
    with Origin() as o1, Origin() as o2:
        port = free_port()
        glob = f"stats socket {sockdir}/admin.sock level admin"
        make_proxy(two_servers(port, o1, o2, glob), ports=[port], workers=2)
        admin = str(sockdir / "admin.sock")
        wait_for(lambda: Path(admin).exists())

        def spread(n: int = 12) -> tuple[int, int]:
            o1.reset()
            o2.reset()
            for _ in range(n):
                assert http_get(port, "/").status == 200
            return o1.stats()["requests"], o2.stats()["requests"]

        first, second = spread()
        assert first > 0 and second > 0  # roundrobin, weights 1/1 (in each worker: two workers)
        assert ask(admin, "set server be/s2 weight 0\n") == "\n"
        assert spread() == (12, 0)
        assert ask(admin, "set server be/s2 weight 3; get weight be/s2\n") == "\n3 (initial 1)\n\n"
        assert ask(admin, "set server be/s1 state drain\n") == "\n"
        assert spread() == (0, 12)
        assert ask(admin, "set server be/s1 state ready; set server be/s2 weight 0\n") == "\n\n"
        assert spread(4) == (4, 0)
        assert o1.stats()["open"] > 0  # kept in the workers' pools
        # maint: nothing picks it, and every worker closes its idle connections to it
        assert ask(admin, "set server be/s1 state maint; set server be/s2 weight 1\n") == "\n\n"
        wait_for(lambda: o1.stats()["open"] == 0, message="idle connections to s1 closed")
        assert spread(4) == (0, 4)
        # maxconn: one request at a time on s1, across both workers
        assert ask(admin, "set server be/s1 state ready; set server be/s2 weight 0\n") == "\n\n"
        assert ask(admin, "set maxconn server be/s1 1\n") == "\n"
        row = next(r.split(",") for r in ask(admin, "show stat\n").splitlines() if r.startswith("be,s1,"))
        assert row[6] == "1"  # slim
        o1.reset()
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda _: http_get(port, "/delay/150").status, range(6)))
        assert statuses == [200] * 6
        assert o1.stats()["max_active"] == 1 and o1.stats()["requests"] == 6


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_admin_formats_match_haproxy(make_proxy: MakeProxy, sockdir: Path) -> None:
    """``show stat typed|json``, ``get weight`` and the refusals, beside HAProxy's on the same config."""
    with Origin() as o1, Origin() as o2:
        port, hport = free_port(), free_port()
        make_proxy(two_servers(port, o1, o2, f"stats socket {sockdir}/ours.sock level admin"),
                   ports=[port], workers=2)  # fmt: skip
        cfg = sockdir / "h.cfg"
        cfg.write_text(two_servers(hport, o1, o2, f"stats socket {sockdir}/h.sock level admin"))
        hap = subprocess.Popen([str(HAPROXY), "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_for(lambda: (sockdir / "h.sock").exists() and (sockdir / "ours.sock").exists())
            ours, theirs = str(sockdir / "ours.sock"), str(sockdir / "h.sock")
            for cmd in ("get weight be/s1", "set server be/s1 weight 50%", "get weight be/s1",
                        "set server be/s1 weight 300", "set server be/s1 weight -3%",
                        "set server be/s1 weight 4", "get weight be/s1", "get weight be/zz",
                        "get weight zz/s1", "get weight be", "set server be/s1 state bogus",
                        "set maxconn server be/s1", "set maxconn server be/s1 7",
                        "set server be/s1 state drain", "set server be/s1 state maint",
                        "set server be/s1 state ready"):  # fmt: skip
                assert ask(ours, cmd + "\n") == ask(theirs, cmd + "\n"), cmd
            ask(ours, "set server be/s2 state drain\n")
            ask(theirs, "set server be/s2 state drain\n")

            def typed(path: str) -> dict[tuple[str, str], tuple[str, str, str]]:
                out = {}
                for line in ask(path, "show stat typed\n").splitlines():
                    if line:
                        left, tag, typ, value = line.split(":", 3)
                        obj, _, sid, pos, name, _ = left.split(".")
                        out[obj + sid, pos + "." + name] = (tag, typ, value)
                return out

            o_t, h_t = typed(ours), typed(theirs)
            assert set(o_t) <= set(h_t)  # every field we give, HAProxy gives at that position
            for key, (tag, typ, _) in o_t.items():
                assert h_t[key][:2] == (tag, typ), key
            for key in (("S1", "18.weight"), ("S2", "17.status"), ("S1", "6.slim"), ("B0", "76.algo")):
                assert o_t[key][2] == h_t[key][2], key  # the same values where the state is the same
            o_j = json.loads(ask(ours, "show stat json\n"))
            h_j = json.loads(ask(theirs, "show stat json\n"))
            assert [len(o) > 0 for o in o_j] == [len(h) > 0 for h in h_j]
            assert [o[0]["objType"] for o in o_j] == [h[0]["objType"] for h in h_j]
            assert list(o_j[1][0]) == list(h_j[1][0])  # the same keys, in the same order
            h_fields = {(h[0]["objType"], f["field"]["name"]): f["tags"] for h in h_j for f in h}
            for o in o_j:
                for f in o:
                    assert h_fields[o[0]["objType"], f["field"]["name"]] == f["tags"]
        finally:
            hap.terminate()
            hap.wait(5)
