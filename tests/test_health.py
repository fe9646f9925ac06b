"""proxy.health (the rise/fall counter, statuses, HTTP verdicts, the shared record, log lines),
proxy.retry (retries and redispatch) and the health-check keywords."""

from __future__ import annotations

import errno
import mmap
from pathlib import Path

import pytest

from proxy import atomics
from proxy.config import ConfigError, load
from proxy.config.model import HttpCheck, Proxy as ProxyCfg, Server
from proxy.health import (
    CHECK_SIZE,
    CheckRecord,
    CheckResult,
    CheckStatus,
    Transition,
    after_check,
    check_line,
    http_request,
    interval,
    judge_http,
    spread,
    status_text,
    transition_line,
)
from proxy.retry import next_retry


def walk(rise: int, fall: int, results: str, start: int | None = None) -> list[str]:
    """The status after each of ``results`` ('+' passed, '-' failed), from ``start`` (rise)."""
    health = rise if start is None else start
    out = []
    for r in results:
        health, change = after_check(health, rise, fall, r == "+")
        out.append(status_text(health, rise, fall) + (f" ({change.value})" if change else ""))
    return out


def test_a_checked_server_starts_up_and_falls_at_its_first_failure() -> None:
    # HAProxy: the counter starts at rise ("up, but will fall down at first failure")
    assert status_text(2, 2, 3) == "UP 1/3"
    assert walk(2, 3, "-") == ["DOWN (DOWN)"]


def test_fall_failures_in_a_row_take_a_healthy_server_down_and_rise_passes_bring_it_back() -> None:
    assert walk(2, 3, "++") == ["UP 2/3", "UP"]  # from the start (rise) to full health
    assert walk(2, 3, "---", start=4) == ["UP 2/3", "UP 1/3", "DOWN (DOWN)"]
    assert walk(2, 3, "+-++", start=0) == ["DOWN 1/2", "DOWN", "DOWN 1/2", "UP (UP)"]
    # a pass while going down restores one step; full health is the top
    assert walk(2, 3, "-+", start=4) == ["UP 2/3", "UP"]


@pytest.mark.parametrize("rise,fall", [(1, 1), (2, 3), (3, 2), (5, 5)])
def test_counter_stays_in_range_and_transitions_exactly_at_the_thresholds(rise: int, fall: int) -> None:
    top = rise + fall - 1
    health = top
    for _ in range(fall - 1):
        health, change = after_check(health, rise, fall, False)
        assert change is None and health >= rise
    health, change = after_check(health, rise, fall, False)
    assert (health, change) == (0, Transition.DOWN)
    for _ in range(rise - 1):
        health, change = after_check(health, rise, fall, True)
        assert change is None and 0 < health < rise
    health, change = after_check(health, rise, fall, True)
    assert (health, change) == (top, Transition.UP)


def test_interval_follows_the_state() -> None:
    srv = Server("s", "h", 1, check=True, inter=2.0, fastinter=0.5, downinter=10.0, rise=2, fall=3)
    assert interval(srv, 4) == 2.0  # full health
    assert interval(srv, 3) == 0.5 and interval(srv, 1) == 0.5  # going down / going up
    assert interval(srv, 0) == 10.0
    plain = Server("s", "h", 1, check=True, inter=1.5)
    assert {interval(plain, h) for h in range(4)} == {1.5}
    assert spread(2.0, 10, 0.0) == pytest.approx(1.8) and spread(2.0, 10, 0.5) == 2.0


def test_http_request_and_verdicts() -> None:
    chk = HttpCheck("GET", "/health", "HTTP/1.1", [("X-A", "1")])
    assert http_request(chk, "10.0.0.1") == (
        b"GET /health HTTP/1.1\r\nHost: 10.0.0.1\r\nX-A: 1\r\nConnection: close\r\n\r\n"
    )
    assert http_request(HttpCheck(), "h").startswith(b"OPTIONS / HTTP/1.0\r\n")
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nalive"
    down = b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
    assert judge_http(HttpCheck(), ok) == (CheckStatus.L7OK, 200)
    assert judge_http(HttpCheck(), b"HTTP/1.0 302 Found\r\n\r\n") == (CheckStatus.L7OK, 302)
    assert judge_http(HttpCheck(), down) == (CheckStatus.L7STS, 503)
    assert judge_http(HttpCheck(), b"garbage") == (CheckStatus.L7RSP, 0)
    assert judge_http(HttpCheck(expect=("status", False, "200,300-399")), down)[0] is CheckStatus.L7STS
    assert judge_http(HttpCheck(expect=("status", True, "503")), down)[0] is CheckStatus.L7STS
    assert judge_http(HttpCheck(expect=("rstatus", False, "^5")), down)[0] is CheckStatus.L7OK
    assert judge_http(HttpCheck(expect=("string", False, "alive")), ok)[0] is CheckStatus.L7OK
    assert judge_http(HttpCheck(expect=("string", False, "dead")), ok)[0] is CheckStatus.L7RSP
    assert judge_http(HttpCheck(expect=("rstring", False, "al.ve")), ok)[0] is CheckStatus.L7OK


def test_log_lines_read_as_haproxys() -> None:
    refused = CheckResult(CheckStatus.L4CON, 0, info_errno=errno.ECONNREFUSED)
    assert transition_line("be", "s3", Transition.DOWN, refused, 2, 0) == (
        'Server be/s3 is DOWN, reason: Layer4 connection problem, info: "Connection refused", check duration:'
        " 0ms. 2 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue."
    )
    passed = CheckResult(CheckStatus.L7OK, 1, code=200)
    assert transition_line("be", "s3", Transition.UP, passed, 3, 1) == (
        "Server be/s3 is UP, reason: Layer7 check passed, code: 200, check duration: 1ms. 3 active and 1"
        " backup servers online. 0 sessions requeued, 0 total in queue."
    )
    wrong = CheckResult(CheckStatus.L7STS, 2, code=503)
    assert check_line("be", "s1", wrong, 3, 2, 3) == (
        'Health check for server be/s1 failed, reason: Layer7 wrong status, code: 503, info: "Service'
        ' Unavailable", check duration: 2ms, status: 2/3 UP.'
    )


def test_record_owner_claims_and_the_counters_of_show_stat() -> None:
    mm = mmap.mmap(-1, CHECK_SIZE)
    a = atomics.attach(mm, None, create=True, backend="c") if atomics.BACKEND == "c" else None
    if a is None:
        pytest.skip("the C atomics backend is not built")
    rec = CheckRecord(a, 0, 0)
    srv = Server("s", "h", 1, check=True, rise=2, fall=2)
    rec.init(srv, owner=1, now_ns=1)
    assert rec.owner == 1 and not rec.claim(0)  # owned by worker 1
    assert rec.release(1) and rec.owner == -1
    assert rec.claim(0) and rec.owner == 0 and not rec.claim(1)
    refused = CheckResult(CheckStatus.L4CON, 1, info_errno=errno.ECONNREFUSED)
    assert rec.apply(srv, refused, 10) is Transition.DOWN
    assert rec.apply(srv, refused, 20) is None
    assert rec.apply(srv, CheckResult(CheckStatus.L4OK, 1), 30) is None
    assert rec.apply(srv, CheckResult(CheckStatus.L4OK, 1), 40) is Transition.UP
    snap = rec.snapshot()
    # chkfail counts the failures while UP only (HAProxy): the second one found it DOWN
    assert (snap["chk_fail"], snap["chk_down"], snap["down_total"], snap["down_since"]) == (1, 1, 30, 0)
    assert (snap["last_change"], snap["last_check"], snap["status"]) == (40, 40, CheckStatus.L4OK)


@pytest.mark.parametrize(
    "done,retries,redispatch,up,balance,nup,expect",
    [
        (0, 3, 0, True, "roundrobin", 3, (False, 1.0)),  # no redispatch: same server, 1 s turn-around
        (3, 3, 0, True, "roundrobin", 3, None),  # spent: 503 SC
        (0, 3, -1, True, "roundrobin", 3, (True, 0.0)),  # several servers, round-robin kind: at once
        (0, 3, -1, True, "random", 3, (True, 0.0)),
        (0, 3, -1, True, "roundrobin", 1, (False, 1.0)),  # one server up: the turn-around
        (0, 3, -1, True, "source", 3, (False, 1.0)),  # a hash: only the last retry moves
        (2, 3, -1, True, "source", 3, (True, 1.0)),
        (0, 3, -1, False, "source", 3, (True, 1.0)),  # the server is DOWN: move
        (0, 2, 1, True, "source", 1, (True, 1.0)),  # every retry
        (0, 3, -1, True, "leastconn", 3, (False, 1.0)),  # connection-based: the last retry moves
        (2, 3, -1, True, "leastconn", 3, (True, 1.0)),  # ... and still waits (not round-robin kind)
    ],
)
def test_next_retry(
    done: int, retries: int, redispatch: int, up: bool, balance: str, nup: int,
    expect: tuple[bool, float] | None,
) -> None:  # fmt: skip
    step = next_retry(done=done, retries=retries, redispatch=redispatch, server_up=up, balance=balance,
                      servers_up=nup, connect_timeout=None)  # fmt: skip
    assert (None if step is None else (step.redispatch, step.delay)) == expect
    short = next_retry(done=0, retries=1, redispatch=0, server_up=True, balance="roundrobin", servers_up=1,
                       connect_timeout=0.2)  # fmt: skip
    assert short is not None and short.delay == 0.2
    reused = next_retry(done=0, retries=1, redispatch=0, server_up=True, balance="roundrobin", servers_up=1,
                        connect_timeout=None, reused=True)  # fmt: skip
    assert reused is not None and reused.delay == 0.0
    timed_out = next_retry(done=0, retries=1, redispatch=0, server_up=True, balance="roundrobin",
                           servers_up=1, connect_timeout=None, timed_out=True)  # fmt: skip
    assert timed_out is not None and timed_out.delay == 0.0  # the timeout spent the time already


CONFIG = """defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
backend be
{body}
frontend fe
    bind 127.0.0.1:18080
    default_backend be
"""


def load_backend(tmp_path: Path, body: str) -> ProxyCfg:
    path = tmp_path / "c.cfg"
    path.write_text(CONFIG.format(body=body))
    return load([str(path)], env={}).backends["be"]


def test_httpchk_forms(tmp_path: Path) -> None:
    assert load_backend(tmp_path, "    option httpchk").httpchk == HttpCheck()
    assert load_backend(tmp_path, "    option httpchk /ping").httpchk == HttpCheck(uri="/ping")
    old = load_backend(tmp_path, "    option httpchk HEAD /h HTTP/1.1\\r\\nHost:\\ www.example")
    assert old.httpchk == HttpCheck("HEAD", "/h", "HTTP/1.1", [("Host", "www.example")])
    new = load_backend(tmp_path, "    http-check send meth GET uri /h ver HTTP/1.1 hdr Host a.b\n"
                                 "    http-check expect ! rstring ^down")  # fmt: skip
    want = HttpCheck("GET", "/h", "HTTP/1.1", [("Host", "a.b")], expect=("rstring", True, "^down"))
    assert new.httpchk == want
    be = load_backend(tmp_path, "    option redispatch 2\n    option allbackups\n    timeout check 3s\n"
                                "    server a 127.0.0.1:1 check port 81 addr 127.0.0.2 backup no-backup"
                                " inter 1s fastinter 100ms downinter 5s")  # fmt: skip
    s = be.servers[0]
    assert (be.redispatch, be.allbackups, be.timeouts.check) == (2, True, 3.0)
    assert (s.check, s.check_port, s.check_addr, s.backup) == (True, 81, "127.0.0.2", False)
    assert (s.inter, s.fastinter, s.downinter) == (1.0, 0.1, 5.0)


@pytest.mark.parametrize(
    "body,message",
    [
        ("    http-check expect status 200\n    http-check expect status 204", "no rule lists"),
        ("    http-check expect header name x", "'http-check expect header' is not supported"),
        ("    http-check send-state", "'http-check send-state' is not supported yet"),
        ("    tcp-check connect", "'tcp-check' is not supported: tcp-check rule lists"),
        ("    option mysql-check", "not supported: checks are TCP connects or HTTP requests"),
        ("    server a 127.0.0.1:1 check rise 0", "'rise'"),
        ("    server a 127.0.0.1:1 check inter 0", "must be greater than zero"),
        ("    option httpchk GET / HTTP/2", "version 'HTTP/2' is not supported"),
        ("    server a 127.0.0.1:1 track be/b", "no tracking"),
    ],
)
def test_refusals_say_why(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_backend(tmp_path, body)


def test_show_stat_and_servers_state_check_fields() -> None:
    from proxy import stats

    srv = Server("s3", "h", 1, check=True, rise=2, fall=3)
    now = 100 * 10**9
    rec = dict(owner=1, health=0, status=int(CheckStatus.L4CON), code=0, duration=1,
               info=errno.ECONNREFUSED, last_check=now, last_change=now - 5 * 10**9, chk_fail=4,
               chk_down=1, down_since=now - 5 * 10**9, down_total=2 * 10**9, enabled=1)  # fmt: skip
    s = {"check": rec, "admin_state": 0, "oper_state": 0, "retries": 3, "redispatches": 1}
    cols = stats.check_columns(s, srv, now)
    want = {
        "status": "DOWN", "check_status": "L4CON", "last_chk": "Connection refused", "chkfail": 4,
        "chkdown": 1, "lastchg": 5, "downtime": 7, "check_desc": "Layer4 connection problem",
        "wretr": 3, "wredis": 1,
    }  # fmt: skip
    assert {k: cols[k] for k in want} == want
    assert stats.state_check_fields(s, srv, now) == "5 8 2 0 6 0"  # HCHK_STATUS_L4CON, CHK_RES_FAILED
    going = dict(s, oper_state=2, check=dict(rec, health=3, status=int(CheckStatus.L7OK), code=200))
    assert stats.check_columns(going, srv, now)["status"] == "UP 2/3"
    assert stats.check_columns(dict(going, admin_state=1), srv, now)["status"] == "MAINT"
