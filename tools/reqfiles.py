"""How many source files one keep-alive request touches in a poolproxy worker.

    python -m tools.reqfiles [--arm-at 3] [--window 2] [--idle-window 2] [--engine llhttp|h11]

The real proxy runs (``proxy.main.main()``, ``nbthread 1``, ``http-reuse always``) under a small wrapper
(this module with ``--hooked``) that installs a ``sys.setprofile`` hook before calling it, so the
forked worker inherits the hook. The hook looks at every Python function call (``call`` events, which
include resumed coroutines and generators) and, only while a window is open (``time.monotonic()``,
the same clock in every process, compared with absolute times passed in ``REQFILES_WINDOWS``), counts
the calls per code object. When a window closes (at the first call after its end) it writes what it saw
to ``$REQFILES_OUT.<pid>.<window>.json``.

Two windows: a traffic window, opened ``--arm-at`` seconds after the proxy starts and ``--window``
seconds long, and an idle window right after it with no traffic at all (the 1 s heartbeat and the
other timers run in both). This tool sends the requests: ``GET /`` on one keep-alive connection,
back to back, warm-up before the traffic window and steadily inside it (pausing 0.1 s around each edge,
so that no request straddles one), to a fast origin (HAProxy answering ``http-request return``, or
``tools.origin`` when HAProxy is missing).

Printed: the requests completed in the window; the ``proxy/`` files touched per keep-alive request
(files with a function called in the traffic window but never in the idle window), with calls per
request and the number of functions; the files touched by the timers only (every function called in
the traffic window also ran in the idle window); and the same counts for the standard library and
site-packages (``--verbose`` lists them and every function; a method outside the package is shown
with the class of its ``self``, which tells dataclass-generated methods, filed under ``<string>``,
apart).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from tools.bench import ROOT, free_port, origin_config, start, stop, wait_listening

PACKAGE = str(ROOT / "proxy") + os.sep
STDLIB = sysconfig.get_paths()["stdlib"] + os.sep
REQUEST = b"GET / HTTP/1.1\r\nHost: origin\r\n\r\n"
EDGE = 0.1  # no request in flight this close to a window's edges

# ---- the wrapper (in the proxy's processes) ---------------------------------------------------------


def install_hook(out: str, windows: list[tuple[float, float]]) -> None:
    """Count calls per code object inside each window; dump a window at the first call after its end."""
    mono = time.monotonic
    counts: list[dict[tuple[str, int, str], int]] = [{} for _ in windows]
    current = [0]

    def dump(i: int) -> None:
        data = {
            "pid": os.getpid(),
            "window": windows[i],
            "functions": [[f, line, name, n] for (f, line, name), n in sorted(counts[i].items())],
        }
        path = f"{out}.{os.getpid()}.{i}.json"
        with open(path + ".tmp", "w") as fh:
            json.dump(data, fh)
        os.replace(path + ".tmp", path)

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        t = mono()
        i = current[0]
        while t >= windows[i][1]:
            dump(i)
            i += 1
            current[0] = i
            if i == len(windows):
                sys.setprofile(None)
                threading.setprofile(None)
                return
        if t < windows[i][0]:
            return
        code = frame.f_code
        name = code.co_name
        if not code.co_filename.startswith(PACKAGE) and code.co_argcount and code.co_varnames[0] == "self":
            # outside the package (enum's __hash__, dataclass-generated methods in "<string>"): whose?
            cls = type(frame.f_locals.get("self"))
            name = f"{name} [{cls.__module__}.{cls.__qualname__}]"
        key = (code.co_filename, code.co_firstlineno, name)
        c = counts[i]
        c[key] = c.get(key, 0) + 1

    threading.setprofile(hook)
    sys.setprofile(hook)


def hooked_main(argv: list[str]) -> int:
    """Run ``proxy.main.main(argv)`` with the hook of $REQFILES_OUT / $REQFILES_WINDOWS installed."""
    windows = []
    for pair in os.environ["REQFILES_WINDOWS"].split(","):
        a, b = pair.split(":")
        windows.append((float(a), float(b)))
    import proxy.main

    install_hook(os.environ["REQFILES_OUT"], windows)
    return proxy.main.main(argv)


# ---- the tool ---------------------------------------------------------------------------------------


def proxy_config(port: int, origin: int, engine: str | None) -> str:
    engine_line = f"tune.h1-engine {engine}" if engine else ""
    return f"""global
    nbthread 1
    {engine_line}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 127.0.0.1:{origin}
"""


class Client:
    """Sequential requests on one keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def get(self) -> None:
        self.sock.sendall(REQUEST)
        buf = b""
        while True:
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected response {head[:80]!r}")
                if len(body) >= length:
                    return
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("the proxy closed the keep-alive connection")
            buf += data

    def until(self, t: float) -> int:
        """Requests back to back until monotonic time t; how many completed."""
        n = 0
        while time.monotonic() < t:
            self.get()
            n += 1
        return n

    def close(self) -> None:
        self.sock.close()


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def kind_of(path: str) -> str:
    if path.startswith(PACKAGE):
        return "proxy"
    if "site-packages" in path or "dist-packages" in path:
        return "site-packages"
    if path.startswith(STDLIB) or path.startswith("<frozen"):
        return "stdlib"
    return "other"


def wait_file(path: Path, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        time.sleep(0.05)
    return None


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


Func = tuple[str, int, str]


def analyse(traffic: dict[Func, int], idle: dict[Func, int], requests: int, verbose: bool) -> list[str]:
    out: list[str] = []
    files: dict[str, dict[str, Any]] = {}
    for (path, line, name), n in traffic.items():
        f = files.setdefault(path, {"calls": 0, "funcs": 0, "request_funcs": [], "idle_calls": 0})
        f["calls"] += n
        f["funcs"] += 1
        if (path, line, name) not in idle:
            f["request_funcs"].append(f"{name}:{line} x{n}")
    idle_files: dict[str, int] = {}
    for (path, _, _), n in idle.items():
        idle_files[path] = idle_files.get(path, 0) + n
    for kind in ("proxy", "stdlib", "site-packages", "other"):
        mine = {p: f for p, f in files.items() if kind_of(p) == kind}
        per_request = sorted(p for p, f in mine.items() if f["request_funcs"])
        timers = sorted(p for p, f in mine.items() if not f["request_funcs"])
        idle_only = sorted(p for p in idle_files if kind_of(p) == kind and p not in files)
        n_idle = sum(1 for p in idle_files if kind_of(p) == kind)
        if kind != "proxy" and not (mine or idle_only):
            out.append(f"{kind}: no file touched")
            continue
        out.append(
            f"{kind}: {len(per_request)} files touched per keep-alive request"
            f" (+{len(timers)} touched by timers only; idle window: {n_idle})"
        )
        if kind == "proxy" or verbose:
            out.append(f"    {'file':44}{'calls/req':>10}{'functions':>10}  in idle window")
            for p in per_request:
                f = mine[p]
                shown = p[len(PACKAGE) :] if kind == "proxy" else _short(p)
                idle_mark = f"{idle_files[p]} calls" if p in idle_files else "-"
                out.append(f"    {shown:44}{f['calls'] / max(requests, 1):10.2f}{f['funcs']:10}  {idle_mark}")
                if verbose:
                    for fn in sorted(f["request_funcs"]):
                        out.append(f"        {fn}")
            for p in timers:
                shown = p[len(PACKAGE) :] if kind == "proxy" else _short(p)
                out.append(f"    {shown:44}{'timers':>10}{mine[p]['funcs']:10}  {idle_files.get(p, 0)} calls")
            for p in idle_only:
                shown = p[len(PACKAGE) :] if kind == "proxy" else _short(p)
                out.append(f"    {shown:44}{'idle only':>10}{'':10}  {idle_files[p]} calls")
    return out


def _short(path: str) -> str:
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path[len(STDLIB) :] if path.startswith(STDLIB) else path


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--hooked":
        return hooked_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--arm-at", type=float, default=3.0, help="traffic window start, s after the proxy starts"
    )
    ap.add_argument("--window", type=float, default=2.0, help="traffic window length, s")
    ap.add_argument("--idle-window", type=float, default=2.0, help="idle window length, s (0: none)")
    ap.add_argument("--engine", choices=("native", "llhttp", "h11"), help="tune.h1-engine (default: unset)")
    ap.add_argument("--verbose", action="store_true", help="list every file and the functions per request")
    ap.add_argument("--json", type=Path, help="also write the raw per-function counts here")
    args = ap.parse_args()
    if args.window <= 2 * EDGE:
        ap.error(f"--window must be longer than {2 * EDGE} s")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="reqfiles-") as tmp:
        d = Path(tmp)
        origin_port, port = free_port(), free_port()
        if shutil.which("haproxy"):
            (d / "origin.cfg").write_text(origin_config(origin_port))
            procs.append(start(["haproxy", "-db", "-f", str(d / "origin.cfg")], d / "origin.log"))
            origin_name = "HAProxy http-request return"
        else:
            cmd = [sys.executable, "-m", "tools.origin", "--port", str(origin_port)]
            procs.append(start(cmd, d / "origin.log"))
            origin_name = "tools.origin"
        (d / "pp.cfg").write_text(proxy_config(port, origin_port, args.engine))
        t0 = time.monotonic()
        w_start = t0 + args.arm_at
        w_end = w_start + args.window
        windows = [(w_start, w_end)]
        if args.idle_window > 0:
            windows.append((w_end + 0.5, w_end + 0.5 + args.idle_window))
        env = {
            **os.environ,
            "REQFILES_OUT": str(d / "calls"),
            "REQFILES_WINDOWS": ",".join(f"{a!r}:{b!r}" for a, b in windows),
        }
        cmd = [sys.executable, "-m", "tools.reqfiles", "--hooked", "-f", str(d / "pp.cfg"), "-d"]
        with open(d / "pp.log", "wb") as log:
            master = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append(master)
        client: Client | None = None
        try:
            wait_listening(origin_port)
            wait_listening(port, timeout=max(1.0, args.arm_at - 0.5))
            client = Client(port)
            client.get()  # the worker accepts and serves
            if time.monotonic() > w_start - EDGE - 0.3:
                raise RuntimeError(
                    f"the proxy got ready too late for the window: raise --arm-at ({args.arm_at})"
                )
            warm = client.until(w_start - EDGE)
            sleep_until(w_start + EDGE)
            requests = client.until(w_end - EDGE)
            workers = children(master.pid)
            sleep_until(windows[-1][1] + 0.2)
            client.get()  # a call after the last window closes it in the worker (the heartbeat would too)
            if len(workers) != 1:
                raise RuntimeError(f"expected one worker, found {workers}")
            dumps = [wait_file(d / f"calls.{workers[0]}.{i}.json", 5) for i in range(len(windows))]
        except Exception:
            print((d / "pp.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            if client is not None:
                client.close()
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    stop(p)
        if any(x is None for x in dumps):
            print("the worker did not write its counts (see the proxy log)", file=sys.stderr)
            return 1
        counts: list[dict[Func, int]] = [
            {(f, line, name): n for f, line, name, n in x["functions"]} for x in dumps if x is not None
        ]
        if args.json is not None:
            args.json.write_text(json.dumps([x for x in dumps if x is not None], indent=1))
    traffic = counts[0]
    idle = counts[1] if len(counts) > 1 else {}
    engine = args.engine or "default"
    print(f"poolproxy worker, nbthread 1, http-reuse always, engine {engine}, origin {origin_name}")
    print(
        f"traffic window {args.window:g} s at t0+{args.arm_at:g} s: {requests} keep-alive requests"
        f" on one connection ({requests / (args.window - 2 * EDGE):.0f}/s under the profile hook;"
        f" {warm} warm-up requests before)"
    )
    print(f"idle window {args.idle_window:g} s (no traffic): {sum(idle.values())} calls")
    calls = sum(traffic.values())
    print(f"calls in the traffic window: {calls} ({calls / max(requests, 1):.1f} per request)")
    print()
    for line in analyse(traffic, idle, requests, args.verbose):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
