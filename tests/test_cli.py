"""Runtime API: parsing, dispatch, levels and formats (proxy.cli, proxy.stats), unit level."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from proxy import cli, stats
from proxy.config import load

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
         "requests", "retries", "redispatches"), 0)  # fmt: skip
    row.update(idle=3, safe=1, used=2, max_used=4, est_need=5, weight=1, oper_state=2, admin_state=0)
    s = dict(row, backend="be", server="s1", host="127.0.0.1", port=2, bkid=3, svid=1, maxconn=0,
             maxqueue=0, cells=[{"idle": 1}, {"idle": 2}], check=check())  # fmt: skip
    return {"header": {"nworkers": 2}, "servers": [s], "workers": []}


@pytest.fixture
def ctx(tmp_path: Path) -> cli.Context:
    (tmp_path / "p.cfg").write_text(CFG)
    return cli.Context(load([str(tmp_path / "p.cfg")]), snap, 0.0)


def test_parse_socket_line() -> None:
    assert cli.parse_socket_line("/a mode 600 level admin") == cli.SocketSpec("/a", 0o600, "admin")
    assert cli.parse_socket_line("/a").level == "user"
    with pytest.raises(ValueError):
        cli.parse_socket_line("/a level root")


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
    calls: list[tuple[str, str, bool]] = []
    ctx.set_maint = lambda b, s, m: calls.append((b, s, m)) is None and s == "s1"
    assert cli.execute(ctx, ["set", "server", "be/s1", "state", "maint"]) == ""
    assert cli.execute(ctx, ["enable", "server", "be/s1"]) == ""
    assert cli.execute(ctx, ["disable", "server", "be/x"]) == "No such server.\n"
    assert calls == [("be", "s1", True), ("be", "s1", False), ("be", "x", True)]
    assert "Not supported yet" in cli.execute(ctx, ["set", "server", "be/s1", "weight", "5"])
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
