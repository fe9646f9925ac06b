"""End-to-end test harness: real processes on 127.0.0.1, real sockets, deadlines instead of sleeps.

Plain helpers with no pytest magic, imported by the tests (``from harness import ...``; conftest.py puts
this directory on ``sys.path``). Contracts:

- Nothing waits for a fixed time: ``wait_for`` polls a predicate until a deadline and fails with a message.
- Every process the harness starts runs in its own session (``start_new_session=True``), so its process
  group id is its pid and contains everything it forked. The group is recorded in ``STARTED`` when the
  process starts; ``stop()`` and ``__exit__`` kill the whole group, always, whatever the test did.
  ``leaked_processes()`` lists live (non-zombie) processes of recorded groups; conftest fails a test that
  leaves one behind.
- ``Origin`` runs ``python -m tools.origin`` (see tools/origin.py for its routes and counters) and reads
  its counters from its separate stats port, which is never counted.
- ``Proxy`` runs ``python -m proxy -f <cfg> -d`` from a config text and is ready once every frontend port
  listens on a socket owned by that master (checked in /proc, without connecting: a probe connection
  would show up in the proxy's logs and counters). Readiness means the kernel accepts connections on the
  port; a request sent then waits in the listen backlog until a worker accepts it.
- Clients: ``http_get`` (one request, fresh connection, ``Connection: close``), ``KeepAliveClient``
  (sequential requests on one connection, counting reconnections), ``raw_exchange`` (bytes in, bytes out).
- HTTP/1 engines: ``H1_ENGINES`` lists the values of ``tune.h1-engine``, ``E2E_H1_ENGINES`` those the e2e
  tests run on; ``with_h1_engine`` puts one in a config text (conftest's ``make_proxy`` does it for every
  e2e proxy, once per engine).
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple, TypeVar

from proxy.config.model import DEFAULT_H1_ENGINE
from proxy.native import COMPILED, compiled

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# Process groups (= pids of the session leaders) started by this harness, with a description for messages.
STARTED: dict[int, str] = {}


# Ports handed out by free_port() are chosen below the kernel's ephemeral range and reserved across
# processes (a file per port, created with O_EXCL) for PORT_HOLD_S: see free_port().
PORT_DIR = Path(tempfile.gettempdir()) / "poolproxy-test-ports"
PORT_HOLD_S = 120.0
_PORT_FLOOR = 10000
_reserved: list[Path] = []


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _reserve(port: int) -> bool:
    """Claim `port` for this process, unless another test process claimed it less than PORT_HOLD_S ago."""
    PORT_DIR.mkdir(exist_ok=True)
    path = PORT_DIR / str(port)
    with contextlib.suppress(OSError):
        if time.time() - path.stat().st_mtime > PORT_HOLD_S:
            path.unlink()  # stale: whoever took it has bound it (or given up) long ago
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.write(fd, b"%d\n" % os.getpid())
    os.close(fd)
    _reserved.append(path)
    return True


@atexit.register
def _release_ports() -> None:
    for path in _reserved:
        with contextlib.suppress(OSError):
            path.unlink()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses and no other test process was given recently.

    The port is for a process started next (a proxy, HAProxy), which binds it a moment later. The usual
    bind-to-0 pick is racy on a loaded machine: the kernel hands ports of its ephemeral range to every
    outgoing connection (a bench or a lab makes thousands a second) and to every other bind-to-0, so
    the port may be taken before our process binds it (EADDRINUSE, or worse, a listener with
    SO_REUSEPORT sharing it). So the port is picked at random *below* the ephemeral range, where the
    kernel never picks, checked free by a bind without SO_REUSEADDR (which fails while any socket,
    TIME_WAIT included, holds the port), and reserved for PORT_HOLD_S in PORT_DIR so that concurrent
    test runs (other worktrees included) do not pick it too. Falls back to bind-to-0 when the range
    below is too small.
    """
    low, _ = _ephemeral_range()
    if low - _PORT_FLOOR >= 1000:
        rng = random.Random()
        for _ in range(200):
            port = rng.randrange(_PORT_FLOOR, low)
            if not _reserve(port):
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


def wait_for(pred: Callable[[], T], timeout: float = 5.0, interval: float = 0.02, message: str = "") -> T:
    """Poll `pred` until it returns a truthy value, and return that value.

    Raises AssertionError at the deadline, naming `message` (or the predicate) and its last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(pred, "__name__", repr(pred))
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


# ---- processes ------------------------------------------------------------------------------------------


class _ProcStat(NamedTuple):
    pid: int
    state: str
    ppid: int
    pgrp: int


def _proc_stat(pid: int) -> _ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ")".
    fields = data[data.rindex(b")") + 2 :].split()
    return _ProcStat(pid, fields[0].decode(), int(fields[1]), int(fields[2]))


def _all_procs() -> list[_ProcStat]:
    procs = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _proc_stat(int(name))
            if stat is not None:
                procs.append(stat)
    return procs


def _alive(stat: _ProcStat) -> bool:
    return stat.state not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Live direct children of `pid`, sorted."""
    return sorted(p.pid for p in _all_procs() if p.ppid == pid and _alive(p))


def group_members(pgrp: int) -> list[int]:
    """Live processes of process group `pgrp`, sorted."""
    return sorted(p.pid for p in _all_procs() if p.pgrp == pgrp and _alive(p))


def leaked_processes() -> dict[int, str]:
    """Live processes in any process group this harness started: pid -> description of the group."""
    if not STARTED:
        return {}
    return {p.pid: STARTED[p.pgrp] for p in _all_procs() if p.pgrp in STARTED and _alive(p)}


def kill_group(pgrp: int) -> None:
    """SIGKILL every process of the group (an already finished group is fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgrp, signal.SIGKILL)


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class _Managed:
    """A subprocess in its own session whose whole group is killed on stop."""

    proc: subprocess.Popen[bytes] | None = None

    def _spawn(
        self,
        args: Sequence[str],
        description: str,
        *,
        stdout: int | IO[bytes],
        stderr: int | IO[bytes],
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``python <args>`` from the repository root as the leader of a new session."""
        command = [sys.executable, *args]
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, start_new_session=True, stdout=stdout, stderr=stderr, env=env
        )
        STARTED[proc.pid] = f"{description} (pid {proc.pid})"
        self.proc = proc
        return proc

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def _stop(self, sig: int, timeout: float) -> int:
        """Send `sig` to the leader, wait up to `timeout` for it, then kill the whole group; its exit code."""
        proc = self.proc
        assert proc is not None, "not started"
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid)
                proc.wait()
        kill_group(proc.pid)  # whatever the leader left behind (workers) goes too
        wait_for(lambda: not group_members(proc.pid), timeout, message=f"process group {proc.pid} gone")
        code: int = proc.returncode
        return code


# ---- origin ---------------------------------------------------------------------------------------------


class Origin(_Managed):
    """``python -m tools.origin`` on 127.0.0.1 with a stats port; use as a context manager."""

    def __init__(
        self,
        *,
        delay_ms: float = 0,
        idle_timeout_ms: float = 0,
        host: str = "127.0.0.1",
        ready_timeout: float = 10.0,
        args: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.extra_args = list(args)  # more options of tools.origin (``--h2``, ``--cert F``...)
        self.delay_ms = delay_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.ready_timeout = ready_timeout
        self.port = 0
        self.stats_port = 0
        self._stderr: IO[bytes] | None = None

    def start(self) -> Origin:
        # Lives as long as this object (no with-block), so that logs() still works after stop().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        args = ["-m", "tools.origin", "--host", self.host, "--port", "0", "--stats-port", "0"]
        if self.delay_ms:
            args += ["--delay-ms", str(self.delay_ms)]
        if self.idle_timeout_ms:
            args += ["--idle-timeout-ms", str(self.idle_timeout_ms)]
        args += self.extra_args
        proc = self._spawn(args, "origin", stdout=subprocess.PIPE, stderr=self._stderr)
        try:
            line = _read_line(proc, self.ready_timeout)
            match = re.fullmatch(rb"READY (\d+) (\d+)\n", line)
            if match is None:
                raise AssertionError(f"origin did not get ready: {line!r}\n{self.logs()}")
        except BaseException:
            self.stop()
            raise
        self.port, self.stats_port = int(match[1]), int(match[2])
        return self

    def __enter__(self) -> Origin:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, SIGKILL after `timeout`; returns the exit code (0 on a clean SIGTERM)."""
        code = self._stop(signal.SIGTERM, timeout)
        assert self.proc is not None
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def _stats_request(self, path: str) -> dict[str, int]:
        conn = http.client.HTTPConnection(self.host, self.stats_port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, f"{path}: {response.status} {body!r}"
            result: dict[str, int] = json.loads(body)
            return result
        finally:
            conn.close()

    def stats(self) -> dict[str, int]:
        """connections, open, max_open, requests, active, max_active."""
        return self._stats_request("/__stats")

    def reset(self) -> dict[str, int]:
        """Zero the totals (peaks restart from the current values); returns the counters after it."""
        return self._stats_request("/__reset")

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def logs(self) -> str:
        """What the origin wrote on stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    """One line from the process's stdout pipe, or AssertionError at the deadline or on early exit."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line on stdout after {timeout}s (so far: {buf!r})")
            if sel.select(left):
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(f"process exited with {proc.wait()} before a line (got {buf!r})")
                buf += chunk
    return buf


# ---- proxy ----------------------------------------------------------------------------------------------


class Proxy(_Managed):
    """``python -m proxy -f <cfg> -d`` from a config text; use as a context manager.

    `config` is the final text (placeholders already formatted); it is written to `tmp_path`/proxy.cfg
    and stdout/stderr go to `tmp_path`/stdout.log and stderr.log. `ports` are the frontend ports that must
    listen before start() returns; `workers`, if given, is how many children the master must have by then.
    `args` are appended to the command line, `env` overrides the environment, `module` replaces ``proxy``
    (the harness's own tests run a stand-in master).
    """

    def __init__(
        self,
        config: str,
        tmp_path: Path,
        *,
        ports: Sequence[int],
        workers: int | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout: float = 10.0,
        module: str = "proxy",
    ) -> None:
        self.config = config
        self.dir = Path(tmp_path)
        self.ports = list(ports)
        self.workers = workers
        self.args = list(args)
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.module = module
        self.cfg_path = self.dir / "proxy.cfg"
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"

    def start(self) -> Proxy:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg_path.write_text(self.config)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            args = ["-m", self.module, "-f", str(self.cfg_path), "-d", *self.args]
            self._spawn(args, f"proxy {self.cfg_path}", stdout=out, stderr=err, env=env)
        try:
            wait_for(self._ready, self.start_timeout, message=f"proxy listening on {self.ports}")
        except BaseException:
            self.kill()
            raise
        return self

    def _ready(self) -> bool:
        proc = self.proc
        assert proc is not None
        if proc.poll() is not None:
            raise AssertionError(f"proxy exited with {proc.returncode} during start-up\n{self.logs()}")
        owned = _socket_inodes([proc.pid, *children(proc.pid)])
        listening = _listening_inodes()
        if not all(listening.get(port, set()) & owned for port in self.ports):
            return False
        return self.workers is None or len(self.worker_pids()) >= self.workers

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()

    def worker_pids(self) -> list[int]:
        """Live children of the master, sorted."""
        return children(self.pid)

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the master only."""
        os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig` to the master, wait up to `timeout` for it to exit; its exit code.

        Past the deadline the group is killed and the code is -SIGKILL. Either way, no process of the
        group survives this call.
        """
        return self._stop(sig, timeout)

    def kill(self) -> None:
        """Kill the whole process group now (idempotent)."""
        if self.proc is not None:
            self._stop(signal.SIGKILL, timeout=5)

    def logs(self) -> str:
        """stdout then stderr of the master and its workers, as written so far."""
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)


# The signature of conftest's make_proxy fixture: make_proxy(config, *, ports=[...], **Proxy keywords).
MakeProxy = Callable[..., Proxy]


def _listening_inodes() -> dict[int, set[int]]:
    """Local port -> inodes of TCP sockets in LISTEN state (IPv4 and IPv6)."""
    result: dict[int, set[int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":  # TCP_LISTEN
                        port = int(fields[1].rsplit(":", 1)[1], 16)
                        result.setdefault(port, set()).add(int(fields[9]))
        except FileNotFoundError:
            continue
    return result


def _socket_inodes(pids: Sequence[int]) -> set[int]:
    """Inodes of the sockets that `pids` hold open."""
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


# ---- clients --------------------------------------------------------------------------------------------


class Response(NamedTuple):
    status: int
    headers: http.client.HTTPMessage  # case-insensitive .get(), .get_all()
    body: bytes


def http_get(
    port: int,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 5.0,
) -> Response:
    """One request on a fresh connection with ``Connection: close``; (status, headers, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        conn.close()


class KeepAliveClient:
    """Sequential requests on one keep-alive connection (http.client).

    http.client silently reconnects when the server closed the connection; `connects` counts the TCP
    connections it made, so a test can assert that reuse really happened (``connects == 1``).
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.connects = 0

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        if self.conn.sock is None:
            self.connects += 1
        self.conn.request(method, path, body=body, headers=dict(headers or {}))
        response = self.conn.getresponse()
        return Response(response.status, response.headers, response.read())

    def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("GET", path, headers=headers)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> KeepAliveClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def raw_exchange(
    port: int,
    data: bytes,
    *,
    read_until_close: bool = True,
    timeout: float = 5.0,
    host: str = "127.0.0.1",
) -> bytes:
    """Send `data` on a new connection and return what comes back.

    With `read_until_close`, read until the peer closes (AssertionError with the bytes so far if it has
    not closed by `timeout`; a reset ends the read like a close). Otherwise return as soon as one complete
    response is in: its head, then Content-Length bytes, or up to the last chunk, or just the head when
    it has neither (a 1xx, 204 or 304 is not followed by the next response; use the close mode for those).
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        buf = b""
        while read_until_close or not _complete_response(buf):
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no close after {timeout}s; received {buf!r}") from None
            except ConnectionResetError:
                break
            if not chunk:
                if not read_until_close:
                    raise AssertionError(f"closed before a complete response; received {buf!r}")
                break
            buf += chunk
        return buf


def _complete_response(buf: bytes) -> bool:
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = re.search(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$", head)
    if length is not None:
        return len(body) >= int(length[1])
    if re.search(rb"(?im)^transfer-encoding:.*chunked", head):
        return body.endswith(b"0\r\n\r\n")
    return True


# The values of ``tune.h1-engine``, the proxy's default first (``native`` only where its extension is built).
H1_ENGINES = ("native", "llhttp", "h11") if DEFAULT_H1_ENGINE == "native" else ("llhttp", "h11")
# The engines every e2e test runs on: the default and the reference (h11). llhttp is left out where native
# is the default, to keep the suite's time flat with three engines: it shares the message loop and every
# rule with the others, and the unit tests (test_h1_*, test_mux_h1, test_stream) run it on every case.
E2E_H1_ENGINES = (DEFAULT_H1_ENGINE, "h11")
# The values of ``tune.h2-engine``. The HTTP/2 e2e modules (``test_e2e_h2*``) run each test twice, pairing
# the engines: the defaults together, and the references (h11, the h2 library) together; both HTTP/2
# engines and both HTTP/1 ones are covered at the cost of two runs, not four.
H2_ENGINES = ("native", "h2")
E2E_ENGINE_PAIRS = ((DEFAULT_H1_ENGINE, "native"), ("h11", "h2"))


def _runs_compiled() -> bool:
    import importlib

    for name in COMPILED:
        importlib.import_module(name)
    return bool(compiled())


# This test process imports the mypyc-compiled modules compiled (False: not built, or POOLPROXY_PURE=1).
RUNS_COMPILED = _runs_compiled()


def with_h1_engine(config: str, engine: str) -> str:
    """`config` with ``tune.h1-engine <engine>`` as the first line of its ``global`` section (a ``global``
    section is added at the top if it has none). A config that already sets the keyword is refused: the
    engine is the test's parameter, and a second line would silently override it.
    """
    return _with_global(config, "tune.h1-engine", engine)


def with_h2_engine(config: str, engine: str) -> str:
    """`config` with ``tune.h2-engine <engine>`` in its ``global`` section (as ``with_h1_engine``)."""
    return _with_global(config, "tune.h2-engine", engine)


def _with_global(config: str, keyword: str, value: str) -> str:
    if re.search(r"(?m)^[ \t]*" + re.escape(keyword) + r"\b", config):
        raise AssertionError(f"the config sets {keyword} itself; make_proxy sets it from the test parameter")
    line = f"    {keyword} {value}\n"
    section = re.search(r"(?m)^global[ \t]*(?:#.*)?\n", config)
    if section is None:
        return f"global\n{line}\n{config}"
    return config[: section.end()] + line + config[section.end() :]


def proxy_config(
    port: int,
    origin_port: int,
    *,
    nbthread: int = 1,
    reuse: str | None = None,
    glob: str = "",
    defaults: str = "",
    backend: str = "",
    server: str = "",
    servers: str = "",
) -> str:
    """The e2e tests' standard configuration: one frontend on ``port`` routing to backend ``be``, whose
    one server ``s1`` is the origin (``server`` adds parameters to its line; ``servers`` replaces it).
    """
    reuse_line = f"http-reuse {reuse}" if reuse else ""
    servers = servers or f"server s1 127.0.0.1:{origin_port} {server}"
    return f"""\
global
    nbthread {nbthread}
    {glob}

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    {reuse_line}
    {defaults}

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    {backend}
    {servers}
"""
