"""Runtime API: parsing, dispatch, levels and formats (proxy.cli, proxy.stats), unit level."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from proxy import cli, server_admin, stat_typed, stats
from proxy.config import load
from proxy.config.model import StatsSocket
from proxy.shm import AdminState, OperState, ShmTable

CFG = """\
global
    nbthread 2
    stats socket /tmp/x.sock mode 600 level operator
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:1
    default_backend be
backend be
    server s1 127.0.0.1:2
"""


def check(**fields: int) -> dict[str, int]:
    """A server's check record (``proxy.health``) as the snapshot gives it: no check by default."""
    rec = dict.fromkeys(("owner", "status", "code", "info", "last_check", "chk_fail", "chk_down",
                         "down_since", "down_total", "enabled"), 0)  # fmt: skip
    rec.update(health=2, duration=-1, status=1, last_change=time.time_ns())
    rec.update(fields)
    return rec


def snap() -> dict[str, Any]:
    row = dict.fromkeys(
        ("served", "cur_conns", "used", "idle", "safe", "queue_len", "max_used", "max_served",
         "max_cur_conns", "max_queue", "est_need", "weight", "connects", "reuses",
         "requests", "retries", "redispatches", "connect_errors", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx",
         "hrsp_5xx"), 0)  # fmt: skip
    row.update(idle=3, safe=1, used=2, max_used=4, est_need=5, weight=1, oper_state=2, admin_state=0)
    s = dict(row, backend="be", server="s1", host="127.0.0.1", port=2, bkid=3, svid=1, maxconn=0,
             maxqueue=0, cells=[{"idle": 1}, {"idle": 2}], check=check())  # fmt: skip
    return {"header": {"nworkers": 2}, "servers": [s], "workers": []}


@pytest.fixture
def ctx(tmp_path: Path) -> cli.Context:
    (tmp_path / "p.cfg").write_text(CFG)
    return cli.Context(load([str(tmp_path / "p.cfg")]), snap, 0.0)


PROXIES = "defaults" + CFG.partition("defaults")[2]  # CFG without its global section


def test_stats_socket_lines(tmp_path: Path) -> None:
    text = (
        "global\n    stats socket /a mode 600 level admin\n"
        "    stats socket unix@/b uid 0 gid 0 expose-fd listeners\n    stats socket /c user root group root\n"
        + PROXIES
    )
    (tmp_path / "p.cfg").write_text(text)
    a, b, c = load([str(tmp_path / "p.cfg")]).global_.stats_sockets
    assert a == StatsSocket("/a", 0o600, "admin")
    assert b == StatsSocket("/b", None, "user", 0, 0, expose_fd=True)
    assert (c.uid, c.gid, c.level) == (0, 0, "user")


def getsocks(tmp_path: Path, line: str) -> tuple[list[socket.socket], bytes]:
    """Ask ``_getsocks`` on a runtime API socket made of ``line``'s options: (descriptors, text)."""
    (tmp_path / "p.cfg").write_text(f"global\n    stats socket {tmp_path}/s.sock {line}\n" + PROXIES)
    lsock = socket.create_server(("127.0.0.1", 0))
    server = cli.CliServer(load([str(tmp_path / "p.cfg")]), snap)
    server.ctx.listeners = lambda: [lsock]
    server.bind()
    try:
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(f"{tmp_path}/s.sock")
            c.sendall(b"_getsocks\n")
            sess = None
            while sess is None:
                sess = server.accept(*server.listeners[0])
            while server.readable(sess):
                time.sleep(0.01)
            data, fds, _, _ = socket.recv_fds(c, 4096, 4)
            got = [socket.socket(fileno=fd) for fd in fds]
            for s in got:
                assert s.getsockname() == lsock.getsockname()
            return got, data
    finally:
        server.close()
        lsock.close()


def test_getsocks_needs_expose_fd_and_admin(tmp_path: Path) -> None:
    got, data = getsocks(tmp_path, "level admin expose-fd listeners")
    assert len(got) == 1 and json.loads(data) == [list(got[0].getsockname())]
    got[0].close()
    for line in ("level admin", "level operator expose-fd listeners"):
        got, data = getsocks(tmp_path, line)
        assert got == [] and data == b"Permission denied\n\n"


def test_split_commands() -> None:
    assert cli.split_commands("show info; show stat ;;help") == [["show", "info"], ["show", "stat"], ["help"]]
    assert cli.split_commands(r"a\;b") == [["a;b"]]


def test_servers_conn_format(ctx: cli.Context) -> None:
    out = cli.execute(ctx, ["show", "servers", "conn"]).splitlines()
    assert out[0] == stats.SERVERS_CONN_HEAD.format(n=2)
    assert out[1] == "be/s1 3/1 127.0.0.1 2 - 5000 2 4 5 2 1 -1 3 1 2"
    assert cli.execute(ctx, ["show", "servers", "conn", "nope"]) == "Can't find backend.\n"


def test_servers_state_format(ctx: cli.Context) -> None:
    out = cli.execute(ctx, ["show", "servers", "state", "be"]).splitlines()
    assert out[:2] == ["1", stats.SERVERS_STATE_HEAD]
    assert out[2] == "3 be 1 s1 127.0.0.1 2 0 1 1 0 1 0 2 0 0 0 0 - 2 - 0 0 - - 0"
    assert len(out[2].split()) == len(out[1].split()) - 1


def test_levels_and_unknown(ctx: cli.Context) -> None:
    ctx.level = cli.LEVELS["user"]
    assert cli.execute(ctx, ["clear", "counters"]) == "Permission denied\n"
    assert "clear counters" not in cli.execute(ctx, ["help"])
    ctx.level = cli.LEVELS["operator"]
    assert "clear counters" in cli.execute(ctx, ["help"])
    cleared: list[bool] = []
    ctx.clear_max = lambda: cleared.append(True)
    assert cli.execute(ctx, ["clear", "counters"]) == "" and cleared == [True]
    assert "Not supported" in cli.execute(ctx, ["clear", "counters", "all"])
    assert cli.execute(ctx, ["set", "server", "be/s1", "state", "maint"]) == "Permission denied\n"
    ctx.level = cli.LEVELS["admin"]
    assert cli.execute(ctx, ["disable", "server", "be/x"]) == "No such server.\n"
    assert cli.execute(ctx, ["disable", "server", "nope/s1"]) == "No such backend.\n"
    unknown = cli.execute(ctx, ["frobnicate"])
    assert unknown.startswith("Unknown command: 'frobnicate'\n")
    assert "show info" in unknown


def test_show_stat_columns(ctx: cli.Context) -> None:
    lines = stats.show_stat(snap(), ctx.config).splitlines()
    assert lines[0].startswith("# pxname,svname,qcur,qmax,scur,smax,slim,stot,")
    ncols = len(stats.STAT_COLUMNS)
    assert all(len(line.split(",")) == ncols + 1 for line in lines[1:])
    names = [line.split(",")[:2] for line in lines[1:]]
    assert names == [["fe", "FRONTEND"], ["be", "s1"], ["be", "BACKEND"]]
    data = snap()
    data["servers"][0].update(connect_errors=2, requests=5)  # econ, lbtot (they stayed empty)
    rows = {r["svname"]: r for r in stats.stat_rows(data, ctx.config)}
    for name in ("s1", "BACKEND"):
        assert (rows[name]["econ"], rows[name]["lbtot"]) == (2, 5), name


def test_show_info_keys(ctx: cli.Context) -> None:
    keys = [line.split(":")[0] for line in stats.show_info(snap(), ctx.config, 0.0).splitlines()]
    assert keys[:3] == ["Name", "Version", "Release_date"] and "Nbthread" in keys and "CumReq" in keys


def test_session_prompt_and_one_shot(ctx: cli.Context) -> None:
    a, b = socket.socketpair()
    with a, b:
        sess = cli.Session(a, 0, 0.0)
        assert sess.feed(ctx, b"show backend\n") is False
        assert bytes(sess.out) == b"# name\nbe\n\n"
        sess = cli.Session(a, 0, 0.0)
        assert sess.feed(ctx, b"prompt\n") is True
        assert bytes(sess.out) == b"> "
        assert sess.feed(ctx, b"show backend\n") is True
        assert sess.feed(ctx, b"quit\n") is False


def test_bind_shows_the_path_only_once_listening(tmp_path: Path) -> None:
    # The path appears only once the socket listens (it used to appear at bind(), before listen(): a
    # client that waited for the file could be refused, seen in test_headers_match_haproxy under
    # load): bound under a temporary name, then renamed into place; a leftover at the path is
    # replaced; the mode applies.
    d = Path(tempfile.mkdtemp(prefix="ppb", dir="/tmp"))  # short: sun_path is 108 bytes
    try:
        path = d / "s.sock"
        path.write_text("stale")
        (tmp_path / "p.cfg").write_text(CFG.replace("/tmp/x.sock", str(path)))
        server = cli.CliServer(load([str(tmp_path / "p.cfg")]), snap)
        server.bind()
        try:
            assert sorted(p.name for p in d.iterdir()) == ["s.sock"]  # no temporary name left
            assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
            with socket.socket(socket.AF_UNIX) as c:
                c.connect(str(path))  # listening: accepted by the backlog, no one has to accept()
        finally:
            server.close()
        assert not path.exists()
    finally:
        shutil.rmtree(d, ignore_errors=True)
TWO = CFG.replace("    server s1 127.0.0.1:2\n",
                  "    server s1 127.0.0.1:2 weight 4\n    server s2 127.0.0.1:3\n")  # fmt: skip
_names = count()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[cli.Context]:
    """A context over a real shared table (two servers, two workers), at the admin level."""
    (tmp_path / "p.cfg").write_text(TWO)
    config = load([str(tmp_path / "p.cfg")])
    table = ShmTable.create(config, 2, name=f"/poolproxy-test.cli.{os.getpid()}.{next(_names)}")
    try:
        yield cli.Context(config, table.snapshot, 0.0, level=cli.LEVELS["admin"], table=lambda: table)
    finally:
        table.close()
        table.unlink()


def run(ctx: cli.Context, line: str) -> str:
    return cli.execute(ctx, line.split())


def test_set_server_state_lives_in_the_row(live: cli.Context) -> None:
    table = live.table()
    assert table is not None
    row = table.row(table.server_index("be", "s1"))
    assert run(live, "set server be/s1 state drain") == ""
    assert row.admin_state == AdminState.FDRAIN and row.oper_state == OperState.RUNNING
    assert "be,s1," in run(live, "show stat") and ",DRAIN," in run(live, "show stat")
    assert run(live, "set server be/s1 state maint") == ""  # maint clears drain (HAProxy)
    assert row.admin_state == AdminState.FMAINT and row.oper_state == OperState.STOPPED
    assert ",MAINT," in run(live, "show stat")
    assert "be,s1," not in run(live, "show stat up")
    assert run(live, "set server be/s1 state ready") == "" and row.admin_state == 0
    assert run(live, "set server be/s1 state foo") == (
        "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n")
    assert run(live, "disable server be/s1") == "" and row.admin_state == AdminState.FMAINT
    assert run(live, "enable server be/s1") == "" and row.admin_state == 0
    assert run(live, "set server be/nope state maint") == "No such server.\n"
    assert run(live, "set server be state maint") == "Require 'backend/server'.\n"


def test_weight_and_maxconn(live: cli.Context) -> None:
    table = live.table()
    assert table is not None
    row = table.row(table.server_index("be", "s1"))
    assert run(live, "get weight be/s1") == "4 (initial 4)\n"
    assert row.runtime_version == 0
    assert run(live, "set server be/s1 weight 50%") == "" and row.weight == 2
    assert row.runtime_version == 1  # the workers' balancers look again
    assert run(live, "set server be/s1 weight 10") == "" and row.weight == 10
    assert run(live, "set weight be/s1 7") == "" and run(live, "get weight be/s1") == "7 (initial 4)\n"
    assert run(live, "set server be/s1 weight 300") == (
        "Absolute weight can only be between 0 and 256 inclusive.\n")
    assert run(live, "set server be/s1 weight 10000%") == "" and row.weight == 256  # capped
    assert run(live, "set server be/s1 weight -1%") == "Relative weight must be positive.\n"
    assert run(live, "set server be/s1 weight") == "Require <weight> or <weight%>.\n"
    assert run(live, "get weight nope/s1") == "No such backend.\n"
    assert row.maxconn == 0
    version = row.runtime_version
    assert run(live, "set maxconn server be/s1 20") == "" and row.maxconn == 20
    assert row.runtime_version == version + 1
    assert run(live, "set maxconn server be/s1 x") == "maxconn string empty or preceded by garbage"
    assert run(live, "set maxconn server be/s1") == "Require <maxconn>.\n"
    assert ",20," in next(r for r in run(live, "show stat").splitlines() if r.startswith("be,s1,"))


def test_static_algorithm_weights() -> None:
    assert server_admin.parse_weight("5", 1, static=True) == (
        "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n")
    assert server_admin.parse_weight("0%", 3, static=True) == 0
    assert server_admin.parse_weight("100%", 3, static=True) == 3


def test_levels_for_each_change(live: cli.Context) -> None:
    changes = ["set server be/s1 state drain", "set server be/s1 weight 2", "set weight be/s1 2",
               "set maxconn server be/s1 3", "enable server be/s1", "disable server be/s1"]
    for level in ("user", "operator"):
        live.level = cli.LEVELS[level]
        for line in changes:
            assert run(live, line) == "Permission denied\n", (level, line)
        assert run(live, "get weight be/s1") == "4 (initial 4)\n"
        assert "set server" not in run(live, "help") and "get weight" in run(live, "help")
    live.level = cli.LEVELS["user"]
    assert run(live, "show cli level") == "user\n"
    live.level = cli.LEVELS["admin"]
    assert "set maxconn server" in run(live, "help")


def test_set_server_state_restarts_lastchg(live: cli.Context) -> None:
    """HAProxy's lastchg (and srv_time_since_last_change) count from the last state change, the
    runtime API's too (they kept counting from the start)."""
    table = live.table()
    assert table is not None
    i = table.server_index("be", "s1")
    table.check(i).changed(time.time_ns() - 100 * 10**9)  # as if the last change were 100 s ago

    def lastchg() -> int:
        stat = run(live, "show stat").splitlines()
        col = stat[0].removeprefix("# ").split(",").index("lastchg")
        return int(next(r for r in stat if r.startswith("be,s1,")).split(",")[col])

    assert lastchg() >= 100
    assert run(live, "set server be/s1 state ready") == ""  # no change: still counting
    assert lastchg() >= 100
    assert run(live, "set server be/s1 state drain") == ""
    assert lastchg() <= 1


def test_stat_typed_and_json_agree(live: cli.Context) -> None:
    typed = run(live, "show stat typed").splitlines()
    assert typed[0] == "F.2.0.0.pxname.1:KNS:str:fe"  # proxy ids from 2, as HAProxy's
    assert "S.3.1.18.weight.1:MaP:u32:4" in typed
    assert "B.3.0.19.act.1:MGP:u32:2" in typed and "S.3.2.19.act.1:SGP:u32:1" in typed
    objs = json.loads(run(live, "show stat json"))
    flat = [f for obj in objs for f in obj]
    assert len(flat) == len(typed)
    for f, line in zip(flat, typed, strict=True):
        left, tag, typ, value = line.split(":", 3)
        assert left.split(".")[3:5] == [str(f["field"]["pos"]), f["field"]["name"]]
        assert (f["value"]["type"], str(f["value"]["value"])) == (typ, value)
        assert tag[0] == f["tags"]["origin"][0] and tag[2] == f["tags"]["scope"][0]
    assert [o[0]["objType"] for o in objs] == ["Frontend", "Server", "Server", "Backend"]
    assert all(name in stat_typed.TAGS for name in (f["field"]["name"] for f in flat))


def test_show_pools_and_sess(live: cli.Context) -> None:
    pools = run(live, "show pools").splitlines()
    assert pools[1].startswith("  - Pool be/s1 (127.0.0.1:2) : 0 idle (0 safe), 0 used,")
    assert "idle [0 0]" in pools[1] and pools[-1] == "Total: 2 pools, 0 idle (0 safe), 0 used."
    sess = run(live, "show sess").splitlines()
    assert len(sess) == 2 and sess[1].startswith("worker=1 pid=0 state=FREE")
    assert "be/s2" in run(live, "show pool-table")
    assert json.loads(run(live, "show pool-table json"))["header"]["nworkers"] == 2


def test_session_levels_go_down_only_and_empty_lines_get_the_list(ctx: cli.Context) -> None:
    """HAProxy's ``operator``/``user`` lower a session's level (never raise it); an empty line is
    answered with the command list; ``help show`` lists the ``show`` commands only."""
    a, b = socket.socketpair()
    with a, b:
        sess = cli.Session(a, cli.LEVELS["admin"], 0.0, prompt=True)
        sess.feed(ctx, b"operator; show cli level\n")
        assert bytes(sess.out) == b"\noperator\n\n> "
        sess.out.clear()
        sess.feed(ctx, b"admin\n")  # not a command: unknown
        assert bytes(sess.out).startswith(b"Unknown command: 'admin'")
        sess.out.clear()
        sess.feed(ctx, b"user; operator; show cli level\n")
        assert bytes(sess.out) == b"\nPermission denied\n\nuser\n\n> "
        sess.out.clear()
        sess.feed(ctx, b"\n")
        out = bytes(sess.out).decode()
        assert out.startswith("Unknown command. Please enter one of the following commands only:\n  help ")
        sess.out.clear()
        sess.feed(ctx, b"help show\n")
        listed = bytes(sess.out).decode().splitlines()[1:-2]
        assert listed and all(line.lstrip().startswith("show ") for line in listed), listed
