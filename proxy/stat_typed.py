"""``show stat typed`` and ``show stat json``: HAProxy 2.6's self-describing stat formats.

Both render the rows of ``proxy.stats.stat_rows`` (one per FRONTEND, server and BACKEND), field by
field, skipping the empty ones (HAProxy skips the fields an object does not have). Each field carries
three tags -- origin, nature, scope -- and a value type; ``TAGS`` lists HAProxy's per field
(``FIELD_OVERRIDES`` where a BACKEND's differ). Typed line::

    <obj>.<iid>.<sid>.<pos>.<name>.<pid>:<origin><nature><scope>:<type>:<value>

with ``obj`` F (frontend), B (backend) or S (server). JSON: a list per object of field objects
(``objType``, ``proxyId``, ``id``, ``field{pos,name}``, ``processNum``, ``tags``, ``value{type,value}``),
written compactly as HAProxy does.
"""

from __future__ import annotations

import json
from typing import Any, Final

from proxy.stats import STAT_COLUMNS

_TAG_TABLE = (
    "pxname:KNS:str svname:KNS:str qcur:MGP:u32 qmax:MMP:u32 scur:MGP:u32 smax:MMP:u32 slim:CLP:u32 "
    "stot:MCP:u64 bin:MCP:u64 bout:MCP:u64 dreq:MCP:u64 dresp:MCP:u64 ereq:MCP:u64 econ:MCP:u64 "
    "eresp:MCP:u64 wretr:MCP:u64 wredis:MCP:u64 status:SGP:str weight:MaP:u32 act:SGP:u32 bck:SGP:u32 "
    "chkdown:MCP:u64 lastchg:MAP:u32 downtime:MCP:u32 pid:KGP:u32 iid:KGS:u32 sid:KGS:u32 "
    "lbtot:MCP:u64 type:CGS:u32 rate:MRP:u32 rate_lim:CLP:u32 rate_max:MMP:u32 hrsp_1xx:MCP:u64 "
    "hrsp_2xx:MCP:u64 hrsp_3xx:MCP:u64 hrsp_4xx:MCP:u64 hrsp_5xx:MCP:u64 hrsp_other:MCP:u64 "
    "req_rate:MRP:u32 req_rate_max:MMP:u32 req_tot:MCP:u64 cli_abrt:MCP:u64 srv_abrt:MCP:u64 "
    "comp_in:MCP:u64 comp_out:MCP:u64 comp_byp:MCP:u64 comp_rsp:MCP:u64 lastsess:MAP:s32 "
    "qtime:MaP:u32 ctime:MaP:u32 rtime:MaP:u32 ttime:MaP:u32 addr:CGS:str mode:CGS:str algo:CGS:str "
    "conn_rate:MRP:u32 conn_rate_max:MMP:u32 conn_tot:MCP:u64 intercepted:MCP:u64 dcon:MCP:u64 "
    "dses:MCP:u64 wrew:MCP:u64 connect:MCP:u64 reuse:MCP:u64 cache_lookups:MCP:u64 "
    "cache_hits:MCP:u64 srv_icur:MGP:u32 qtime_max:MMP:u32 ctime_max:MMP:u32 rtime_max:MMP:u32 "
    "ttime_max:MMP:u32 eint:MCP:u64 idle_conn_cur:MGP:u32 safe_conn_cur:MGP:u32 "
    "used_conn_cur:MGP:u32 need_conn_est:MGP:u32 uweight:MaP:u32 agg_server_status:MGP:u32 "
    "agg_server_check_status:MGP:u32 agg_check_status:MGP:u32"
)
TAGS: Final[dict[str, tuple[str, str]]] = {
    name: (tag, typ) for name, tag, typ in (w.split(":") for w in _TAG_TABLE.split())
}
FIELD_OVERRIDES: Final = {("B", "rate"): "MGP", ("B", "rate_max"): "MGP", ("B", "act"): "MGP",
                          ("B", "bck"): "MGP"}  # fmt: skip
_OBJ = {0: "F", 1: "B", 2: "S"}
_OBJ_NAME = {"F": "Frontend", "B": "Backend", "S": "Server"}
_ORIGIN = {"K": "Key", "M": "Metric", "S": "Status", "C": "Config", "P": "Product"}
_NATURE = {"N": "Name", "G": "Gauge", "M": "Max", "L": "Limit", "C": "Counter", "R": "Rate", "a": "Avg",
           "A": "Age", "O": "Output", "D": "Duration"}  # fmt: skip
_SCOPE = {"P": "Process", "S": "Service"}


def _fields(row: dict[str, Any]) -> list[tuple[int, str, str, str, Any]]:
    """``(pos, name, tag, type, value)`` for each non-empty field of ``row``, in column order."""
    obj = _OBJ[row["type"]]
    out = []
    for pos, name in enumerate(STAT_COLUMNS):
        value = row.get(name)
        if value is None or name not in TAGS:
            continue
        tag, typ = TAGS[name]
        out.append((pos, name, FIELD_OVERRIDES.get((obj, name), tag), typ, value))
    return out


def show_stat_typed(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        obj = _OBJ[row["type"]]
        for pos, name, tag, typ, value in _fields(row):
            lines.append(f"{obj}.{row['iid']}.{row['sid']}.{pos}.{name}.{row['pid']}:{tag}:{typ}:{value}")
    return "\n".join(lines) + "\n"


def show_stat_json(rows: list[dict[str, Any]]) -> str:
    objects = []
    for row in rows:
        obj = _OBJ[row["type"]]
        objects.append([
            {"objType": _OBJ_NAME[obj], "proxyId": row["iid"], "id": row["sid"],
             "field": {"pos": pos, "name": name}, "processNum": row["pid"],
             "tags": {"origin": _ORIGIN[tag[0]], "nature": _NATURE[tag[1]], "scope": _SCOPE[tag[2]]},
             "value": {"type": typ, "value": value}}
            for pos, name, tag, typ, value in _fields(row)
        ])  # fmt: skip
    return json.dumps(objects, separators=(",", ":")) + "\n"


# ``show info``'s fields: HAProxy 2.6's position in its list, tags and type (``show info typed``).
INFO_FIELDS: dict[str, tuple[int, str, str]] = {
    "Name": (0, "POS", "str"), "Version": (1, "POS", "str"), "Release_date": (2, "POS", "str"),
    "Nbthread": (3, "CGS", "u32"), "Nbproc": (4, "CGS", "u32"), "Process_num": (5, "KGP", "u32"),
    "Pid": (6, "SGP", "u32"), "Uptime": (7, "MDP", "str"), "Uptime_sec": (8, "MDP", "u32"),
    "Maxconn": (15, "CLP", "u32"), "Hard_maxconn": (16, "CLP", "u32"), "CurrConns": (17, "MGP", "u32"),
    "CumReq": (19, "MCP", "u32"),
}  # fmt: skip


def show_info_typed(pairs: list[tuple[str, Any]]) -> str:
    """``show info typed``: ``pos.name.process:tags:type:value`` per field."""
    lines = []
    for name, value in pairs:
        pos, tag, typ = INFO_FIELDS[name]
        lines.append(f"{pos}.{name}.1:{tag}:{typ}:{value}")
    return "\n".join(lines) + "\n"


def show_info_json(pairs: list[tuple[str, Any]]) -> str:
    """``show info json``: HAProxy's list of field objects."""
    fields = []
    for name, value in pairs:
        pos, tag, typ = INFO_FIELDS[name]
        fields.append({
            "field": {"pos": pos, "name": name}, "processNum": 1,
            "tags": {"origin": _ORIGIN[tag[0]], "nature": _NATURE[tag[1]], "scope": _SCOPE[tag[2]]},
            "value": {"type": typ, "value": value if typ == "str" else int(value)},
        })  # fmt: skip
    return json.dumps(fields, separators=(",", ":")) + "\n"
