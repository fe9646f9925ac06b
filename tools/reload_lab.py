"""Reload lab: hitless reloads under load, measured.

``python -m tools.reload_lab [--duration 30] [--reloads 20] [--closing 25] [--keepalive 25]
[--nbthread 2] [--hard-stop-after 5] [--json]``

Starts an origin (``tools.origin``) and poolproxy in ``-Ws`` mode with a master CLI socket and a real
``NOTIFY_SOCKET`` (a datagram socket this tool reads), then runs ``--closing`` clients that send one
request per connection and ``--keepalive`` clients that reuse theirs (reconnecting only when a
response says ``Connection: close``) for ``--duration`` seconds, while it reloads ``--reloads`` times,
evenly spaced, alternating SIGUSR2 and the master CLI's ``reload``. Then one reload with a broken
configuration (it must fail, keep serving and show its error in ``show proc``), and SIGTERM.

What it checks and reports (exit code 0 only when every check holds):

- every request got a 200 (``failed`` counts connection errors and short reads, ``non_200`` the
  other statuses);
- the listening socket never changed nor closed: before and after each reload, exactly one
  listening socket is on the port, always the same inode;
- after each reload the old workers are gone within ``hard-stop-after`` (the time until ``show
  proc`` lists no old worker);
- each reload answered ``Success=1`` (CLI) or was counted in ``show proc`` (SIGUSR2);
- shared memory: during the run, one segment per live generation; after the master's exit, none
  of its segments left in /dev/shm;
- the notify datagrams: READY, then RELOADING/READY per reload, STOPPING at the end.

Clients are asyncio coroutines on raw sockets (HTTP/1.1, ``Content-Length`` bodies), so every
failure is seen and counted, not retried by a library.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Counts:
    ok: int = 0
    non_200: int = 0
    failed: int = 0
    connects: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.failed += 1
        self.errors[why] = self.errors.get(why, 0) + 1


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, server closes): reads one response with a Content-Length body (or none)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if length:
        await reader.readexactly(int(length[1]))
    closes = re.search(rb"(?im)^connection:\s*close", head) is not None
    return status, closes


async def client(port: int, keepalive: bool, stop: asyncio.Event, counts: Counts) -> None:
    request = b"GET / HTTP/1.1\r\nHost: lab\r\n" + (b"\r\n" if keepalive else b"Connection: close\r\n\r\n")
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    while not stop.is_set():
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                counts.connects += 1
            assert reader is not None
            writer.write(request)
            status, closes = await asyncio.wait_for(_read_response(reader), 10)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            counts.fail(type(exc).__name__)
            if writer is not None:
                writer.close()
            writer = None
            continue
        if status == 200:
            counts.ok += 1
        else:
            counts.non_200 += 1
        if closes or not keepalive:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            writer = None
    if writer is not None:
        writer.close()


def run_load(port: int, closing: int, keepalive: int, stop: threading.Event) -> tuple[Counts, Counts]:
    """The clients, in this thread's event loop, until ``stop`` is set."""
    counts = (Counts(), Counts())

    async def main() -> None:
        done = asyncio.Event()
        tasks = [asyncio.create_task(client(port, False, done, counts[0])) for _ in range(closing)]
        tasks += [asyncio.create_task(client(port, True, done, counts[1])) for _ in range(keepalive)]
        while not stop.is_set():
            await asyncio.sleep(0.05)
        done.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return counts


def listening_inodes(port: int) -> set[int]:
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    out.add(int(fields[9]))
    return out


def segments(master: int) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"poolproxy.{master}."))


def cli(path: str, command: str, timeout: float = 30.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def workers_of(show_proc: str) -> list[int]:
    """The current workers' pids in ``show proc``'s answer."""
    section = show_proc.split("# workers\n", 1)[1].split("# ", 1)[0]
    return [int(line.split()[0]) for line in section.splitlines() if line.strip()]


def watch_exits(
    draining: list[tuple[float, list[int]]], gone_at: dict[int, float], done: threading.Event
) -> None:
    """Note when each listed worker process is gone (exited, reaped or a zombie)."""
    while not done.is_set():
        for _, pids in list(draining):
            for pid in pids:
                if pid not in gone_at:
                    try:
                        with open(f"/proc/{pid}/stat") as f:
                            alive = f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
                    except OSError:
                        alive = False
                    if not alive:
                        gone_at[pid] = time.monotonic()
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


STATES = ("READY=1", "RELOADING=1", "STOPPING=1")
CONFIG = """\
global
    nbthread {nbthread}
    hard-stop-after {hard_stop_after_ms}ms
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse safe
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 127.0.0.1:{origin}
"""


@dataclass
class LabSetup:
    duration: float = 30.0
    reloads: int = 20
    closing: int = 25
    keepalive: int = 25
    nbthread: int = 2
    hard_stop_after: float = 5.0


class Lab:
    """One run: the processes it started (killed whatever happens), the notify reader, the figures."""

    def __init__(self, setup: LabSetup, workdir: Path) -> None:
        self.setup = setup
        self.workdir = workdir
        self.port = free_port()
        self.msock = str(workdir / "master.sock")
        self.notify_path = str(workdir / "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.states: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_path = workdir / "proxy.log"
        self.result: dict[str, Any] = {"checks": {}}
        threading.Thread(target=self._read_notify, daemon=True).start()

    def _read_notify(self) -> None:  # read at once: a Unix datagram queue holds only a few messages
        with contextlib.suppress(OSError):
            while msg := self.notify.recv(4096).decode():
                self.states.extend(line for line in msg.splitlines() if line in STATES)

    def run(self) -> dict[str, Any]:
        try:
            with open(self.log_path, "wb") as log:
                self._run(log)
        except Exception:
            sys.stderr.write(self.log_path.read_text(errors="replace")[-6000:])
            raise
        finally:
            for p in self.procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            with contextlib.suppress(OSError):
                self.notify.shutdown(socket.SHUT_RDWR)
            self.notify.close()
        self.result["ok"] = all(self.result["checks"].values())
        return self.result

    def _start(self, log: IO[bytes]) -> tuple[subprocess.Popen[bytes], Path, str]:
        st = self.setup
        origin = subprocess.Popen([sys.executable, "-m", "tools.origin", "--port", "0"], cwd=ROOT,
                                  stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
        self.procs.append(origin)
        assert origin.stdout is not None
        origin_port = int(origin.stdout.readline().split()[1])
        cfg = self.workdir / "lab.cfg"
        good = CONFIG.format(nbthread=st.nbthread, hard_stop_after_ms=round(st.hard_stop_after * 1000),
                             port=self.port, origin=origin_port)  # fmt: skip
        cfg.write_text(good)
        env = {**os.environ, "NOTIFY_SOCKET": self.notify_path, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "proxy", "-Ws", "-f", str(cfg), "-S", self.msock]
        proxy = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
        self.procs.append(proxy)

        def listening() -> bool:
            if proxy.poll() is not None:
                raise RuntimeError(f"the proxy exited with {proxy.returncode}")
            return os.path.exists(self.msock) and bool(listening_inodes(self.port))

        wait(listening, 15, "the proxy listening")
        # READY=1: the first generation accepts (show proc lists workers as soon as they are forked)
        wait(lambda: "READY=1" in self.states, 30, "READY=1 from the master")
        return proxy, cfg, good

    def _reload(self, proxy: subprocess.Popen[bytes], k: int) -> str:
        """Reload number ``k``: SIGUSR2 for even ones, the master CLI for odd ones."""
        if k % 2:
            return cli(self.msock, "reload").strip()

        def reloads() -> int:
            return int(cli(self.msock, "show proc").splitlines()[1].split()[2])

        before = reloads()
        os.kill(proxy.pid, signal.SIGUSR2)
        wait(lambda: reloads() > before, 30, "the SIGUSR2 reload")
        return "SIGUSR2 ok"

    def _run(self, log: IO[bytes]) -> None:
        st, msock = self.setup, self.msock
        proxy, cfg, good = self._start(log)
        inode = listening_inodes(self.port)
        stop = threading.Event()
        box: list[tuple[Counts, Counts]] = []
        load = threading.Thread(
            target=lambda: box.append(run_load(self.port, st.closing, st.keepalive, stop))
        )
        # Reloads do not wait for each other: old generations drain side by side. A watcher notes
        # when each worker process is gone; a reload's drain time runs from its start until the
        # last worker it replaced is gone.
        draining: list[tuple[float, list[int]]] = []
        gone_at: dict[int, float] = {}
        watching = threading.Event()
        watcher = threading.Thread(target=watch_exits, args=(draining, gone_at, watching), daemon=True)
        watcher.start()
        t0 = time.monotonic()
        load.start()
        gap = st.duration / (st.reloads + 1)
        answers: list[str] = []
        inode_ok = True
        most_segments = 0
        for k in range(st.reloads):
            time.sleep(max(0.0, t0 + gap * (k + 1) - time.monotonic()))
            inode_ok &= listening_inodes(self.port) == inode
            draining.append((time.monotonic(), workers_of(cli(msock, "show proc"))))
            answers.append(self._reload(proxy, k))
            most_segments = max(most_segments, len(segments(proxy.pid)))
            inode_ok &= listening_inodes(self.port) == inode
        # a broken configuration: refused, the running generation keeps serving
        cfg.write_text(good.replace("default_backend be", "default_backend be\n    bogus-keyword 1"))
        broken = cli(msock, "reload")
        proc_after = cli(msock, "show proc")
        cfg.write_text(good)
        time.sleep(max(0.0, t0 + st.duration - time.monotonic()))
        stop.set()
        load.join()
        elapsed = time.monotonic() - t0
        wait(lambda: all(p in gone_at for _, pids in draining for p in pids), st.hard_stop_after + 10,
             "every replaced worker gone")  # fmt: skip
        watching.set()
        watcher.join()
        drains = [max(gone_at[p] for p in pids) - t for t, pids in draining if pids]
        closing, keepalive = box[0]
        live_segments = segments(proxy.pid)
        os.kill(proxy.pid, signal.SIGTERM)
        proxy.wait(30)
        wait(lambda: "STOPPING=1" in self.states, 5, "the STOPPING notification")
        left = segments(proxy.pid)
        expected = ["READY=1"] + ["RELOADING=1", "READY=1"] * (st.reloads + 1) + ["STOPPING=1"]
        counts = (closing, keepalive)
        self.result.update(
            port=self.port, duration_s=round(elapsed, 1), reloads=st.reloads,
            clients={"closing": st.closing, "keepalive": st.keepalive},
            closing=asdict(closing), keepalive=asdict(keepalive),
            requests=sum(c.ok + c.non_200 + c.failed for c in counts),
            reload_answers=sorted(set(answers)), drain_s_max=round(max(drains, default=0.0), 2),
            drain_s_mean=round(sum(drains) / len(drains), 2) if drains else 0.0,
            broken_reload_answer=broken.strip().splitlines()[:3], show_proc_after_broken=proc_after,
            segments_during=live_segments, segments_peak=most_segments, segments_left=left,
            notify=self.states,
        )  # fmt: skip
        checks = self.result["checks"]
        checks["all_200"] = sum(c.failed + c.non_200 for c in counts) == 0 and all(c.ok for c in counts)
        checks["listener_never_changed"] = inode_ok and len(inode) == 1
        checks["reloads_succeeded"] = set(answers) <= {"SIGUSR2 ok", "Success=1"}
        checks["old_workers_gone_within_hard_stop_after"] = max(drains, default=0.0) <= st.hard_stop_after
        refused = broken.startswith("Success=0") and "bogus-keyword" in broken
        checks["broken_config_refused_and_shown"] = refused and "last reload failed" in proc_after
        checks["one_segment_while_running_none_after"] = len(live_segments) == 1 and left == []
        checks["notify_sequence"] = self.states == expected


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--reloads", type=int, default=20)
    p.add_argument("--closing", type=int, default=25)
    p.add_argument("--keepalive", type=int, default=25)
    p.add_argument("--nbthread", type=int, default=2)
    p.add_argument("--hard-stop-after", type=float, default=5.0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reload-lab-", ignore_cleanup_errors=True) as tmp:
        setup = LabSetup(args.duration, args.reloads, args.closing, args.keepalive, args.nbthread,
                         args.hard_stop_after)  # fmt: skip
        result = Lab(setup, Path(tmp)).run()
        if not result["ok"]:
            sys.stderr.write((Path(tmp) / "proxy.log").read_text(errors="replace")[-6000:])
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key in ("duration_s", "reloads", "clients", "requests", "closing", "keepalive", "reload_answers",
                    "drain_s_max", "drain_s_mean", "segments_during", "segments_peak", "segments_left",
                    "broken_reload_answer", "notify"):  # fmt: skip
            print(f"{key}: {result.get(key)}")
        for name, ok in result["checks"].items():
            print(f"check {name}: {'PASS' if ok else 'FAIL'}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
