"""Absolute-form targets against Host: HAProxy's answers and ours, side by side, from the h1 table.

    python -m tools.absform [--prefix A08-absolute --prefix A07-absolute] [--haproxy PATH]

Takes the request cases of ``tests/data/h1/requests.json`` whose id starts with a ``--prefix`` and
sends each one to a local HAProxy twice: to a frontend that answers ``http-request return status
200`` (the status HAProxy gives the request), and to a frontend that forwards it to a capture
server here (what HAProxy sends on: target and Host). The same bytes go through this tree's
request parser (``llhttp``) and ``proxy.h1.writer``, which says what poolproxy would answer and
forward. Prints one row per case and marks where the two differ. Everything listens on 127.0.0.1;
every wait is bounded, and HAProxy is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "data" / "h1" / "requests.json"
TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: no answer within TIMEOUT_S
    target: str = ""  # the request line's target forwarded to the server ("" if not forwarded)
    host: str = ""  # the Host values forwarded, joined with ", " ("-" for none)

    def forwarded(self) -> str:
        return f"{self.target} Host={self.host}" if self.target else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_bytes(raw: str | list[Any]) -> bytes:
    """A case's bytes (the format of tests/data/h1/README.md)."""
    if isinstance(raw, str):
        return raw.encode("latin-1")
    return "".join(p if isinstance(p, str) else p["repeat"] * p["times"] for p in raw).encode("latin-1")


def target_and_host(head: bytes) -> tuple[str, str]:
    lines = head.decode("latin-1").split("\r\n")
    target = lines[0].split(" ")[1] if lines[0].count(" ") >= 2 else lines[0]
    hosts = [line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("host:")]
    return target, ", ".join(hosts) if hosts else "-"


# --- HAProxy -------------------------------------------------------------------------------------


class Capture:
    """The server behind HAProxy: keeps each request head it receives, answers 200 and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.heads: queue.Queue[bytes] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(TIMEOUT_S)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        more = conn.recv(65536)
                        if not more:
                            break
                        data += more
                    self.heads.put(data.split(b"\r\n\r\n", 1)[0])
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def haproxy_config(answer_port: int, forward_port: int, server_port: int) -> str:
    return f"""global
    maxconn 100
defaults
    mode http
    timeout connect 2s
    timeout client 2s
    timeout server 2s
frontend answer
    bind 127.0.0.1:{answer_port}
    http-request return status 200
frontend forward
    bind 127.0.0.1:{forward_port}
    default_backend capture
backend capture
    server capture 127.0.0.1:{server_port}
"""


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def status_of(port: int, data: bytes) -> int | None:
    """Send ``data``, return the status of the first response (None if none comes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as s:
        s.sendall(data)
        answer = b""
        try:
            while b"\r\n" not in answer:
                more = s.recv(4096)
                if not more:
                    break
                answer += more
        except TimeoutError:
            return None
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def haproxy_outcome(data: bytes, answer_port: int, forward_port: int, capture: Capture) -> Outcome:
    status = status_of(answer_port, data)
    while not capture.heads.empty():
        capture.heads.get_nowait()
    if status_of(forward_port, data) != 200:
        return Outcome(status)
    try:
        head = capture.heads.get(timeout=TIMEOUT_S)
    except queue.Empty:
        return Outcome(status)
    return Outcome(status, *target_and_host(head))


# --- poolproxy -----------------------------------------------------------------------------------


def our_outcome(data: bytes) -> Outcome:
    """What poolproxy answers (200 standing for "accepted") and forwards, from the parser and writer."""
    from proxy.h1 import ProtocolError, engine, writer
    from proxy.message import RequestHead

    parser = engine("llhttp").request_parser()
    try:
        events = parser.feed(data) + parser.feed(b"")
    except ProtocolError as exc:
        return Outcome(exc.status)
    head = events[0]
    assert isinstance(head, RequestHead)
    out = writer.request_head(head, body=head.body, content_length=head.content_length, keep_alive=True)
    return Outcome(200, *target_and_host(out.split(b"\r\n\r\n", 1)[0]))


# --- main ----------------------------------------------------------------------------------------


def cases(prefixes: list[str]) -> list[dict[str, Any]]:
    table: list[dict[str, Any]] = json.loads(TABLE.read_text())
    return [c for c in table if any(c["id"].startswith(p) for p in prefixes)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", action="append", help="case id prefix (repeatable)")
    ap.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    args = ap.parse_args()
    selected = cases(args.prefix or ["A08-absolute", "A07-absolute", "A08-origin-form-no-host"])
    version = subprocess.run([args.haproxy, "-v"], capture_output=True, text=True, timeout=10)
    print(version.stdout.splitlines()[0])
    capture = Capture()
    answer_port, forward_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="absform-") as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(haproxy_config(answer_port, forward_port, capture.port))
        proc = subprocess.Popen([args.haproxy, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL)
        try:
            wait_listening(answer_port, proc)
            wait_listening(forward_port, proc)
            rows = []
            for case in selected:
                data = raw_bytes(case["raw"])
                theirs = haproxy_outcome(data, answer_port, forward_port, capture)
                ours = our_outcome(data)
                rows.append((case["id"], theirs, ours))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            capture.close()
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  HAProxy  ours  {'HAProxy forwards':<40}  ours forwards")
    for cid, theirs, ours in rows:
        mark = "  " if (theirs.status, theirs.forwarded()) == (ours.status, ours.forwarded()) else "≠ "
        print(
            f"{cid:<{width}}  {theirs.status!s:>7}  {ours.status!s:>4}  "
            f"{theirs.forwarded():<40}  {ours.forwarded()}  {mark}".rstrip()
        )


if __name__ == "__main__":
    main()
