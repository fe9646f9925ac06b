"""Print poolproxy's shared-memory table, once or live (the ``poolproxy-shmdump`` console script).

    poolproxy-shmdump [--name NAME | --pid MASTER_PID] [--watch SECONDS] [--json]

(also ``python -m proxy.shmdump``; the runtime API's ``show pool-table [json]`` prints the same.)

Without ``--name`` it shows the newest table in /dev/shm (of ``--pid``'s master when given), and in
``--watch`` mode it follows a reload to the next generation. One line per server, like HAProxy's
``show servers conn``: slots served, connections, used/idle/safe, queue, counters, then the idle
connections of each worker (``idle_per_thr``). ``--json`` prints ``ShmTable.snapshot()``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

from proxy.health import CheckStatus
from proxy.shm import SHM_DIR, ShmTable, backend_name, read_header

_SEGMENT = re.compile(r"poolproxy\.(\d+)\.(\d+)")
COLUMNS = (
    ("served", "served"), ("max_served", "smax"), ("cur_conns", "conns"), ("max_cur_conns", "cmax"),
    ("used", "used"), ("max_used", "umax"), ("est_need", "need"), ("idle", "idle"), ("safe", "safe"),
    ("queue_len", "queue"), ("max_queue", "qmax"), ("requests", "reqs"), ("connects", "connects"),
    ("reuses", "reuses"), ("takeovers_given", "stolen"),
)  # fmt: skip


def find_newest(pid: int | None = None) -> str | None:
    """The name of the newest valid table in /dev/shm (of master ``pid`` if given), or None."""
    best: tuple[int, str] | None = None
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return None
    for entry in entries:
        m = _SEGMENT.fullmatch(entry)
        if m is None or (pid is not None and int(m.group(1)) != pid):
            continue
        try:
            created = read_header("/" + entry)["created_ns"]
        except (OSError, ValueError):
            continue
        if best is None or created > best[0]:
            best = (created, "/" + entry)
    return None if best is None else best[1]


def open_table(name: str) -> ShmTable:
    # Read with the backend the table was created with (a dump only loads, but attach insists).
    return ShmTable.attach(name, backend=backend_name(read_header(name)))


def _age(ns: int, now: int) -> str:
    return "-" if ns <= 0 else f"{(now - ns) / 1e9:.1f}s"


def render(snap: dict[str, Any]) -> str:
    h = snap["header"]
    now_mono, now_real = time.monotonic_ns(), time.time_ns()
    lines = [
        f"{h['name']}  generation {h['generation']}  master {h['master_pid']}  {h['nworkers']} workers"
        f"  {h['nservers']} servers  atomics {h['backend_name']}  layout v{h['version']}"
        f"  created {_age(h['created_ns'], now_real)} ago",
        "",
        "# slot pid incarnation state heartbeat_age",
    ]
    for w in snap["workers"]:
        age = _age(w["heartbeat_ns"], now_mono)
        lines.append(f"{w['slot']} {w['pid']} {w['incarnation']} {w['state']} {age}")
    lines.append("")
    nworkers = h["nworkers"]
    head = ["# bkname/svname", *(label for _, label in COLUMNS), f"idle_per_thr[{nworkers}]"]
    rows = [head]
    for s in snap["servers"]:
        per_thr = " ".join(str(c["idle"]) for c in s["cells"])
        rows.append([f"{s['backend']}/{s['server']}", *(str(s[k]) for k, _ in COLUMNS), per_thr])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    checked = [s for s in snap["servers"] if s.get("check", {}).get("enabled")]
    if checked:
        lines += ["", "# health checks: bkname/svname oper_state owner_slot health status code duration_ms"
                  " chkfail chkdown last_check_age"]  # fmt: skip
        for s in checked:
            c = s["check"]
            lines.append(
                f"{s['backend']}/{s['server']} {'UP' if s['oper_state'] == 2 else 'DOWN'} {c['owner'] - 1}"
                f" {c['health']} {CheckStatus(c['status']).name} {c['code']} {c['duration']} {c['chk_fail']}"
                f" {c['chk_down']} {_age(c['last_check'], now_real)}"
            )
    return "\n".join(lines)


def render_json(snap: dict[str, Any]) -> str:
    return json.dumps(snap, indent=2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="poolproxy-shmdump", description=__doc__.splitlines()[0])
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--name", help="segment name, e.g. /poolproxy.1234.1")
    which.add_argument("--pid", type=int, help="master pid: its newest generation")
    ap.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until ^C")
    ap.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    args = ap.parse_args(argv)

    table: ShmTable | None = None
    try:
        while True:
            name = args.name or find_newest(args.pid)
            if name is None:
                print("no poolproxy shared-memory table found in " + SHM_DIR, file=sys.stderr)
                return 1
            if table is None or table.name != name:
                if table is not None:
                    table.close()
                table = open_table(name)
            snap = table.snapshot()
            text = render_json(snap) if args.json else render(snap)
            if args.watch is None:
                print(text)
                return 0
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            sys.stdout.flush()
            time.sleep(args.watch)
    except (FileNotFoundError, ValueError) as e:
        print(f"shmdump: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if table is not None:
            table.close()


if __name__ == "__main__":
    sys.exit(main())
