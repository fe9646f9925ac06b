"""Runtime API output formats (HAProxy 2.6's), computed from a ``ShmTable.snapshot()``.

Pure functions of plain data: no I/O, no HTTP code (the master imports this). The column sets and
their order are HAProxy 2.6's (``reference/haproxy-pooling.md`` §6); fields poolproxy does not track
are left empty, as HAProxy leaves its unused ones.
"""

from __future__ import annotations

import os
import time
from typing import Any

from proxy import __version__
from proxy.config.model import Cap, Config
from proxy.health import CheckStatus, result_info, status_text
from proxy.shm import AdminState

# HAProxy 2.6's ``show stat`` columns, in order (the header ends with a trailing comma).
_STAT_HEAD = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
    "status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,"
    "type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,"
    "hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,"
    "comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,"
    "agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,"
    "agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,"
    "dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,"
    "ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,"
    "agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,"
    "h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,"
    "h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,"
    "h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,"
    "h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,"
    "h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out"
)
STAT_COLUMNS = tuple(_STAT_HEAD.split(","))

SERVERS_CONN_HEAD = (
    "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb safe_nb "
    "idle_lim idle_cur idle_per_thr[{n}]"
)


def _server_conf(config: Config, backend: str, server: str) -> Any:
    be = config.backends.get(backend)
    for s in be.servers if be is not None else ():
        if s.name == server:
            return s
    return None


def _servers(snap: dict[str, Any], backend: str | None) -> list[dict[str, Any]]:
    return [s for s in snap["servers"] if backend is None or s["backend"] == backend]


def show_servers_conn(snap: dict[str, Any], config: Config, backend: str | None = None) -> str:
    """``show servers conn [BE]``: HAProxy 2.6's header and one line per server."""
    lines = [SERVERS_CONN_HEAD.format(n=snap["header"]["nworkers"])]
    for s in _servers(snap, backend):
        conf = _server_conf(config, s["backend"], s["server"])
        purge_ms = round((conf.pool_purge_delay if conf else 5.0) * 1000)
        idle_lim = conf.pool_max_conn if conf else -1
        per_thr = " ".join(str(c["idle"]) for c in s["cells"])
        unsafe = max(0, s["idle"] - s["safe"])
        lines.append(
            f"{s['backend']}/{s['server']} {s['bkid']}/{s['svid']} {s['host']} {s['port']} - {purge_ms}"
            f" {s['used']} {s['max_used']} {s['est_need']} {unsafe} {s['safe']} {idle_lim}"
            f" {s['idle']} {per_thr}"
        )
    return "\n".join(lines) + "\n"


SERVERS_STATE_HEAD = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
    "srv_check_port srv_check_addr srv_agent_addr srv_agent_port"
)


def show_servers_state(snap: dict[str, Any], config: Config, backend: str | None = None) -> str:
    """``show servers state [BE]``: HAProxy's version line ``1``, header, one line per server, the
    operational state and the check's fields from the shared table (``state_check_fields``)."""
    lines = ["1", SERVERS_STATE_HEAD]
    for s in _servers(snap, backend):
        conf = _server_conf(config, s["backend"], s["server"])
        iweight = conf.weight if conf else 1
        check_port = (conf.check_port if conf else None) or 0
        check_addr = (conf.check_addr if conf else None) or "-"
        lines.append(
            f"{s['bkid']} {s['backend']} {s['svid']} {s['server']} {s['host']} {s['oper_state']}"
            f" {s['admin_state']} {s['weight']} {iweight} {state_check_fields(s, conf)} 0 0 -"
            f" {s['port']} - 0 {check_port} {check_addr} - 0"
        )
    return "\n".join(lines) + "\n"


def show_backend(config: Config) -> str:
    return "\n".join(["# name", *config.backends]) + "\n"


def show_info(snap: dict[str, Any], config: Config, started: float) -> str:
    """``show info``: HAProxy's keys in HAProxy's order, where poolproxy has a value for them."""
    return "".join(f"{k}: {v}\n" for k, v in info_pairs(snap, config, started))


def info_pairs(snap: dict[str, Any], config: Config, started: float) -> list[tuple[str, Any]]:
    """``show info``'s fields and values (``proxy.stat_typed`` renders them typed or as JSON)."""
    up = max(0, int(time.time() - started))
    d, rem = divmod(up, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    servers = snap["servers"]
    # HAProxy's CurrConns: the client connections open now (server connections, pooled or not,
    # are not sessions).
    cur = sum(f["cur_conns"] for f in snap.get("frontends", ()))
    reqs = sum(s["requests"] for s in servers)
    g = config.global_
    maxconn = getattr(g, "maxconn", 0) or 0
    pairs = [
        ("Name", "poolproxy"),
        ("Version", __version__),
        ("Release_date", ""),
        ("Nbthread", snap["header"]["nworkers"]),
        ("Nbproc", 1),
        ("Process_num", 1),
        ("Pid", os.getpid()),
        ("Uptime", f"{d}d {h}h{m:02d}m{sec:02d}s"),
        ("Uptime_sec", up),
        ("Maxconn", maxconn),
        ("Hard_maxconn", maxconn),
        ("CurrConns", cur),
        ("CumReq", reqs),
    ]
    return pairs


def _row(values: dict[str, Any]) -> str:
    return ",".join("" if values.get(c) is None else str(values[c]) for c in STAT_COLUMNS) + ","


HRSP = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
# what the shared table counts per server (its final responses; 1xx and others are not counted)
SERVER_HRSP = ("hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx")


def server_status(s: dict[str, Any]) -> str:
    """A server's ``status`` column: HAProxy's words for a server without health checks."""
    admin = AdminState(s["admin_state"])
    if admin & (AdminState.FMAINT | AdminState.CMAINT | AdminState.IMAINT):
        return "MAINT"
    if admin & (AdminState.FDRAIN | AdminState.IDRAIN):
        return "DRAIN"
    return "no check"


def stat_rows(snap: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    """One dict per ``show stat`` line (FRONTEND rows, then per backend its servers and BACKEND),
    column name -> value (None or absent: left empty). The CSV, typed, JSON, HTML and Prometheus
    renderings all start from these."""
    out: list[dict[str, Any]] = []
    fronts = {f["name"]: f for f in snap.get("frontends", ())}
    # HAProxy's order and ids (``Config.proxy_ids``): by declaration, a listen section's rows together
    for iid, px in enumerate(config.proxies(), 2):
        name = px.name
        if px.cap & Cap.FRONTEND:
            out.append(_frontend_row(name, iid, fronts.get(name), config))
        if px.cap & Cap.BACKEND:
            out += _backend_rows(name, iid, snap, config)
    return out


def _frontend_row(name: str, iid: int, f: dict[str, Any] | None, config: Config) -> dict[str, Any]:
    row: dict[str, Any] = {"pxname": name, "svname": "FRONTEND", "status": "OPEN", "pid": 1,
                           "iid": iid, "sid": 0, "type": 0, "mode": "http"}  # fmt: skip
    if f is not None:
        row.update({
            "scur": f["cur_conns"], "smax": f["max_conns"],
            "slim": config.frontends[name].maxconn or None, "stot": f["conns_total"],
            "conn_tot": f["conns_total"], "bout": f["bytes_out"], "req_tot": f["requests_total"],
            "dreq": f["denied_req"], "ereq": f["bad_req"],
            **{k: f[k] for k in HRSP},
        })  # fmt: skip
    return row


def _backend_rows(be: str, iid: int, snap: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    """A backend's server rows, then its BACKEND row."""
    out: list[dict[str, Any]] = []
    rows = _servers(snap, be)
    active, backup = 0, 0  # the usable servers' weights (a drained one weighs nothing)
    for s in rows:
        conf = _server_conf(config, be, s["server"])
        cols = check_columns(s, conf)
        drained = server_status(s) == "DRAIN"
        if cols["status"] in ("no check", "UP") and drained:
            cols["status"] = "DRAIN"
        if _up(s) and not drained:
            if conf is not None and conf.backup:
                backup += s["weight"]
            else:
                active += s["weight"]
        out.append({
            "pxname": be, "svname": s["server"], "qcur": s["queue_len"], "qmax": s["max_queue"],
            # scur/smax: streams being served (HAProxy's sessions), not connections (idle ones sit
            # in the pool: idle_conn_cur/safe_conn_cur/used_conn_cur count those)
            "scur": s["served"], "smax": s["max_served"], "slim": s["maxconn"] or None,
            "stot": s["connects"], "weight": s["weight"], "pid": 1, "iid": iid, "sid": s["svid"],
            "econ": s["connect_errors"], "lbtot": s["requests"],
            **{k: s[k] for k in SERVER_HRSP},
            "type": 2, "addr": f"{s['host']}:{s['port']}", "mode": "http", "connect": s["connects"],
            "reuse": s["reuses"], "req_tot": s["requests"], "idle_conn_cur": s["idle"],
            "safe_conn_cur": s["safe"], "used_conn_cur": s["used"], "need_conn_est": s["est_need"],
            "uweight": s["weight"], **cols,
        })  # fmt: skip
    # HAProxy's backend weight: the usable active servers', or the usable backups' when none is
    weight = active or backup
    out.append({
        "pxname": be, "svname": "BACKEND", "qcur": sum(s["queue_len"] for s in rows),
        "scur": sum(s["served"] for s in rows), "stot": sum(s["connects"] for s in rows),
        "econ": sum(s["connect_errors"] for s in rows), "lbtot": sum(s["requests"] for s in rows),
        **{k: sum(s[k] for s in rows) for k in SERVER_HRSP},
        "weight": weight, "uweight": weight, "pid": 1, "iid": iid, "sid": 0, "type": 1, "mode": "http",
        "algo": config.backends[be].balance, "connect": sum(s["connects"] for s in rows),
        "reuse": sum(s["reuses"] for s in rows), "req_tot": sum(s["requests"] for s in rows),
        **backend_check_columns(rows, config, be),
    })  # fmt: skip
    return out


def csv(rows: list[dict[str, Any]]) -> str:
    """The CSV of ``stat_rows``: HAProxy's header line, then one line per row."""
    return "\n".join(["# " + ",".join(STAT_COLUMNS) + ",", *(_row(r) for r in rows)]) + "\n"


def show_stat(snap: dict[str, Any], config: Config) -> str:
    """``show stat``: the CSV header, then FRONTEND rows, and per backend its servers and BACKEND."""
    return csv(stat_rows(snap, config))


def show_pools(snap: dict[str, Any]) -> str:
    """``show pools``, poolproxy's kind: HAProxy's command reports its memory pools; ours reports
    the idle *connection* pools, in the same shape (one ``  - Pool`` line each, then ``Total:``)."""
    lines = ["Dumping idle connection pools (per server; per worker in [])."]
    idle = safe = used = 0
    for s in snap["servers"]:
        cells = s["cells"]
        lent = [sl.get("IDLE", 0) for sl in s.get("slots", [])]
        lines.append(
            f"  - Pool {s['backend']}/{s['server']} ({s['host']}:{s['port']}) : {s['idle']} idle"
            f" ({s['safe']} safe), {s['used']} used, need_est {s['est_need']}, max_used {s['max_used']},"
            f" idle [{' '.join(str(c['idle']) for c in cells)}],"
            f" safe [{' '.join(str(c['safe']) for c in cells)}],"
            f" used [{' '.join(str(c['used']) for c in cells)}],"
            f" published [{' '.join(map(str, lent))}], takeovers {s['takeovers_asked']} asked"
            f" {s['takeovers_given']} given {s['takeovers_failed']} failed, {s['purged']} purged"
        )
        idle, safe, used = idle + s["idle"], safe + s["safe"], used + s["used"]
    lines.append(f"Total: {len(snap['servers'])} pools, {idle} idle ({safe} safe), {used} used.")
    return "\n".join(lines) + "\n"


def show_sess(snap: dict[str, Any]) -> str:
    """``show sess``, summarised: the master does not see the workers' streams one by one (each
    worker owns its own), so one line per worker with what the shared table knows of its traffic:
    connections to servers in use and idle, requests waiting in a queue."""
    lines = []
    for w in snap["workers"]:
        slot = w["slot"]
        used = sum(s["cells"][slot]["used"] for s in snap["servers"])
        idle = sum(s["cells"][slot]["idle"] for s in snap["servers"])
        queued = sum(s["cells"][slot]["queued"] for s in snap["servers"])
        lines.append(
            f"worker={slot} pid={w['pid']} state={w['state']} srv_used={used} srv_idle={idle}"
            f" queued={queued}"
        )
    return "\n".join(lines) + "\n"


# ---- health checks: the columns the shared check records fill (proxy.health) ----------------------

_MAINT = 0x01 | 0x02 | 0x04 | 0x20  # AdminState FMAINT | IMAINT | CMAINT | RMAINT


def _up(s: dict[str, Any]) -> bool:
    return not s["admin_state"] & _MAINT and s["oper_state"] == 2  # OperState.RUNNING


def check_columns(s: dict[str, Any], conf: Any, now_ns: int | None = None) -> dict[str, Any]:
    """``show stat``'s status and check columns of one server, HAProxy's way: ``UP``, ``DOWN``,
    ``UP 1/3`` (going down), ``DOWN 1/2`` (going up), ``MAINT``, ``no check``."""
    chk = s["check"]
    now = time.time_ns() if now_ns is None else now_ns
    down = chk["down_total"] + (now - chk["down_since"] if chk["down_since"] else 0)
    backup = bool(conf is not None and conf.backup)
    cols: dict[str, Any] = {
        "act": 0 if backup else 1, "bck": 1 if backup else 0, "wretr": s["retries"],
        "wredis": s["redispatches"], "lastchg": max(0, (now - chk["last_change"]) // 10**9),
    }  # fmt: skip
    if s["admin_state"] & _MAINT:
        cols["status"] = "MAINT"
    elif not chk["enabled"] or conf is None:
        cols["status"] = "no check"
        return cols
    else:
        cols["status"] = status_text(chk["health"], conf.rise, conf.fall)
    status = CheckStatus(chk["status"])
    cols.update({
        "chkfail": chk["chk_fail"], "chkdown": chk["chk_down"], "downtime": down // 10**9,
        "check_status": status.name, "check_code": chk["code"] or None,
        "check_duration": chk["duration"] if chk["duration"] >= 0 else None,
        "last_chk": result_info(status, chk["code"], chk["info"]) or None, "check_desc": status.desc,
        "check_rise": conf.rise, "check_fall": conf.fall, "check_health": chk["health"],
    })  # fmt: skip
    return cols


def backend_check_columns(rows: list[dict[str, Any]], config: Config, backend: str) -> dict[str, Any]:
    """The BACKEND line: UP while one server can take traffic; act/bck count the usable ones."""
    confs = [_server_conf(config, backend, s["server"]) for s in rows]
    act = sum(1 for s, c in zip(rows, confs, strict=True) if _up(s) and not (c is not None and c.backup))
    bck = sum(1 for s, c in zip(rows, confs, strict=True) if _up(s) and c is not None and c.backup)
    return {
        "status": "UP" if act + bck else "DOWN", "act": act, "bck": bck,
        "wretr": sum(s["retries"] for s in rows), "wredis": sum(s["redispatches"] for s in rows),
    }  # fmt: skip


def state_check_fields(s: dict[str, Any], conf: Any, now_ns: int | None = None) -> str:
    """``show servers state``'s srv_time_since_last_change srv_check_status srv_check_result
    srv_check_health srv_check_state srv_agent_state (HAProxy's numbers: the check state 6 is
    CONFIGURED | ENABLED)."""
    chk = s["check"]
    now = time.time_ns() if now_ns is None else now_ns
    since = max(0, (now - chk["last_change"]) // 10**9)
    if not chk["enabled"]:
        return f"{since} {CheckStatus.INI.value} 0 {chk['health']} 0 0"
    status = CheckStatus(chk["status"])
    return f"{since} {status.value} {status.result} {chk['health']} 6 0"
