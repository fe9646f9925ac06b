"""End-to-end: an idle HTTP/2 (h2c) server connection is taken by the other worker (issue #8).

Real processes: the proxy with 2 workers, ``server ... proto h2`` to ``tools.origin --h2`` (which
counts connections and numbers the streams of each: ``x-conn-id``, ``x-req-seq``), ``http-reuse
always``. The requests are arranged with SIGSTOP so that a worker needs a connection while only the
other one holds an idle one: the stopped worker cannot accept, so the request lands on the other,
which has nothing of its own and takes the stopped worker's parked connection from its slot
(``pidfd_getfd`` works on a stopped process). The origin must see ONE connection carry every
stream in sequence (the HTTP/2 state went on: HPACK tables, stream ids), every answer right, and the
shared table count the takeovers (with ``pidfd_getfd``, and over the SCM_RIGHTS channel where the
holder, resumed once the other worker accepted the client, answers). Over TLS the same sequence
opens a second connection: a TLS connection never leaves its worker.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from harness import MakeProxy, Origin, Proxy, Response, free_port, http_get, proxy_config, wait_for

from proxy import pidfd
from proxy.shm import F_CUR_CONNS, ShmTable, WorkerState, backend_name, read_header
from tools.shmdump import find_newest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(pidfd.probe(os.getpid(), 0) is not None, reason="pidfd_getfd refused here"),
]

TENANT = "tenant-0123456789-abcdef"  # a custom field: HPACK-indexed by the proxy's encoder


class Table:
    """The proxy's shared table (attached by master pid): be/s1's row and cells."""

    def __init__(self, proxy: Proxy) -> None:
        found = wait_for(lambda: find_newest(proxy.pid), message=f"shm table of master {proxy.pid}")
        assert found is not None
        self.table = ShmTable.attach(found, backend=backend_name(read_header(found)))
        self.index = self.table.server_index("be", "s1")
        wait_for(
            lambda: all(self.table.worker(w).state is WorkerState.RUNNING for w in range(2)),
            timeout=20,
            message="both workers RUNNING",
        )

    def server(self) -> dict[str, Any]:
        snap: dict[str, Any] = self.table.snapshot()["servers"][self.index]
        return snap

    def idle_per_worker(self) -> list[int]:
        return [c["idle"] for c in self.server()["cells"]]

    def lent_by(self, slot: int) -> bool:
        """One connection idle, counted in worker ``slot`` and published in its slots (the count
        moves an instant before the publication: a worker stopped in between would lend nothing)."""
        srv = self.server()
        return srv["idle"] == 1 and srv["cells"][slot]["idle"] == 1 and srv["slots"][slot]["idle"] == 1

    def pid(self, slot: int) -> int:
        return self.table.worker(slot).pid


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def echo(port: int) -> tuple[Response, dict[str, Any]]:
    response = http_get(port, "/echo", headers={"X-Tenant": TENANT}, timeout=20)
    assert response.status == 200, response
    got: dict[str, Any] = json.loads(response.body)
    assert got["http_version"] == "2"
    headers = {name.lower(): value for name, value in got["headers"]}
    assert headers["x-tenant"] == TENANT  # decoded by the origin: the HPACK state went on
    return response, got


def run_sequence(make_proxy: MakeProxy, origin: Origin, server: str) -> tuple[list[Response], dict[str, Any]]:
    """Worker A serves a request (B stopped), then B (A stopped), then A again (B stopped): each time
    the serving worker holds no idle connection and the stopped one holds one. Returns the answers
    and be/s1's row at rest."""
    port = free_port()
    config = proxy_config(port, origin.port, nbthread=2, reuse="always", server=server)
    proxy = make_proxy(config, ports=[port], workers=2)
    table = Table(proxy)
    try:
        assert proxy.logs().count("stealing idle connections with pidfd_getfd") == 2, proxy.logs()[-2000:]
        answers = []
        holder = None  # the worker slot holding the idle connection
        for step in range(3):
            # the first time either worker may serve; then the one without the idle connection must
            quiet = 1 if holder is None else holder
            with stopped(table.pid(quiet)):
                response, _ = echo(port)
            answers.append(response)
            serving = 1 - quiet
            # the answer may reach the client an instant before the worker parks its connection
            try:
                wait_for(
                    lambda s=serving: table.lent_by(s),
                    timeout=20,
                    message=f"step {step}: one connection idle, in worker {serving}",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{table.server()}\n{proxy.logs()[-3000:]}") from None
            holder = serving
        srv = wait_for(
            lambda: (s := table.server())["used"] == 0 and s["cur_conns"] == s["idle"] == 1 and s,
            timeout=20,
            message="at rest: one connection, idle",
        )
        return answers, srv
    finally:
        table.table.close()


def test_an_idle_h2c_connection_serves_the_other_worker(make_proxy: MakeProxy) -> None:
    with Origin(args=["--h2"]) as origin:
        answers, srv = run_sequence(make_proxy, origin, "proto h2 pool-purge-delay 1h")
        stats = origin.stats()
    print(f"\norigin: {stats}\nshm be/s1: connects={srv['connects']} takeovers_given={srv['takeovers_given']}"
          f" asked={srv['takeovers_asked']} failed={srv['takeovers_failed']}")  # fmt: skip
    assert stats["connections"] == 1 and stats["h2_connections"] == 1, stats
    assert [a.headers["x-conn-id"] for a in answers] == ["1", "1", "1"]
    assert [a.headers["x-req-seq"] for a in answers] == ["1", "2", "3"]  # streams 1, 3, 5 of one connection
    assert srv["connects"] == 1 and srv["takeovers_given"] == 2, srv
    assert [c["takeovers_taken"] for c in srv["cells"]] == [1, 1], srv["cells"]


def echo_accepted_first(port: int, table: Table, holder: int) -> Response:
    """One request that the worker *not* holding the idle connection serves while the holder runs:
    the holder is stopped only until the client connection is accepted (by the other worker),
    then resumed before the request is sent, so that it can answer a steal over the channel."""
    serving = 1 - holder
    front = table.table.front_index("fe")
    cur = table.table.front_cell(front, serving) + F_CUR_CONNS
    with stopped(table.pid(holder)):
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        wait_for(lambda: table.table.atomics.load(cur) == 1, timeout=20, message="accepted")
    with sock:
        head = f"GET /echo HTTP/1.1\r\nHost: origin\r\nX-Tenant: {TENANT}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        response = Response(resp.status, resp.headers, resp.read())
    assert response.status == 200, response
    got = json.loads(response.body)
    assert {name.lower(): value for name, value in got["headers"]}["x-tenant"] == TENANT
    return response


def test_over_the_channel_too(make_proxy: MakeProxy) -> None:
    """Where ``pidfd_getfd`` is refused (forced: ``POOLPROXY_STEAL=channel``), the holder gives
    the connection and its state over the SCM_RIGHTS channel (one datagram, two descriptors)."""
    with Origin(args=["--h2"]) as origin:
        port = free_port()
        server = "proto h2 pool-purge-delay 1h"
        config = proxy_config(port, origin.port, nbthread=2, reuse="always", server=server)
        proxy = make_proxy(config, ports=[port], workers=2, env={"POOLPROXY_STEAL": "channel"})
        table = Table(proxy)
        try:
            assert proxy.logs().count("stealing idle connections with channel") == 2, proxy.logs()[-2000:]
            with stopped(table.pid(1)):
                first, _ = echo(port)  # worker 0 connects
            wait_for(lambda: table.lent_by(0), timeout=20, message="worker 0's connection lent")
            answers = [first]
            for holder in (0, 1):
                answers.append(echo_accepted_first(port, table, holder))
                wait_for(lambda h=holder: table.lent_by(1 - h), timeout=20, message=f"lent by {1 - holder}")
            srv = table.server()
        finally:
            table.table.close()
        stats = origin.stats()
    assert stats["connections"] == 1, stats
    assert [a.headers["x-req-seq"] for a in answers] == ["1", "2", "3"]
    assert srv["connects"] == 1 and srv["takeovers_given"] == 2, srv
    assert [c["takeovers_taken"] for c in srv["cells"]] == [1, 1], srv["cells"]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(d / "key.pem"),
         "-out", str(d / "crt.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    pem = d / "cert.pem"
    pem.write_bytes((d / "crt.pem").read_bytes() + (d / "key.pem").read_bytes())
    return pem


def test_a_tls_http2_connection_stays_with_its_worker(make_proxy: MakeProxy, cert: Path) -> None:
    """The same sequence over TLS (ALPN h2): the worker without a connection opens its own; the idle
    one of the other worker is never published (its TLS state cannot leave the process)."""
    port = free_port()
    server = "ssl verify none alpn h2 pool-purge-delay 1h pool-low-conn 2"
    with Origin(args=["--h2", "--cert", str(cert)]) as origin:
        config = proxy_config(port, origin.port, nbthread=2, reuse="always", server=server)
        proxy = make_proxy(config, ports=[port], workers=2)
        table = Table(proxy)
        try:
            ids = []
            for quiet in (1, 0):
                with stopped(table.pid(quiet)):
                    response, _ = echo(port)
                ids.append(response.headers["x-conn-id"])
                wait_for(lambda q=quiet: table.idle_per_worker()[1 - q] == 1, timeout=20, message="parked")
            srv = table.server()
        finally:
            table.table.close()
        stats = origin.stats()
    assert ids == ["1", "2"] and stats["connections"] == 2, (ids, stats)
    assert srv["takeovers_given"] == 0 and srv["takeovers_asked"] == 0, srv
