"""The stats page (``stats enable`` / ``stats uri``): an HTML page like HAProxy's, plus the shared pool
live, per worker. Pure rendering from a ``ShmTable.snapshot()``; the worker's service glue
(``proxy.services``) serves it.

The page has one table per proxy (HAProxy's layout: FRONTEND, the servers, BACKEND; queue,
sessions, bytes, status, weight, connections and reuses) and, what HAProxy's page lacks, a live
section: per server, a chart of each worker's idle, safe and used connections over time, and a
table of the current numbers per worker with the takeovers. The page is self-contained (inline CSS
and JavaScript, no CDN). The live numbers come as JSON (``pools_json``, served at ``<uri>;pools``):
embedded in the page for the first drawing, then fetched every second. Each number cell carries an
id, ``pool-<backend>-<server>-w<slot>-<field>``, which the browser test reads.

Options after the URI, HAProxy's way: ``;csv`` gives ``show stat``'s CSV, ``;norefresh`` drops the
``Refresh`` header, ``;pools`` the live JSON.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from proxy import __version__
from proxy.config.model import Config, StatsPage
from proxy.stats import server_status, stat_rows

POOL_FIELDS = ("idle", "safe", "used", "takeovers_taken", "takeovers_given")

_CSS = """
body{font-family:Arial,Helvetica,sans-serif;font-size:12px;margin:8px;background:#fff;color:#000}
h1{font-size:16px;background:#20377a;color:#fff;padding:4px 8px;margin:0 0 8px}
h2{font-size:13px;margin:14px 0 4px}
table{border-collapse:collapse;margin-bottom:10px}
th,td{border:1px solid #999;padding:2px 5px;text-align:right}
th{background:#b0b8d0}
td.name{text-align:left;font-weight:bold}
tr.px th.px{background:#20377a;color:#fff;text-align:left}
tr.front td{background:#d0f0d0} tr.back td{background:#c8d0f0}
tr.up td{background:#e0ffe0} tr.maint td{background:#c0c0c0} tr.drain td{background:#f0d0ff}
tr.down td{background:#ff9090}
.live{display:flex;flex-wrap:wrap;gap:14px}
.srv{border:1px solid #999;padding:6px}
canvas{border:1px solid #ccc;background:#fafafa;display:block;margin-bottom:4px}
.legend span{margin-right:8px}
"""

_JS = """
(function () {
  var data = JSON.parse(document.getElementById('pool-data').textContent);
  var uri = document.getElementById('pool-data').getAttribute('data-uri');
  var colors = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
  var fields = ['idle', 'safe', 'used', 'takeovers_taken', 'takeovers_given'];
  var history = {};
  function key(s) { return s.backend + '-' + s.server; }
  function ensure(s) {
    var k = key(s), box = document.getElementById('srv-' + k);
    if (box) return box;
    box = document.createElement('div');
    box.className = 'srv'; box.id = 'srv-' + k;
    var h = document.createElement('h2'); h.textContent = s.backend + '/' + s.server; box.appendChild(h);
    var c = document.createElement('canvas'); c.width = 360; c.height = 120; c.id = 'chart-' + k;
    box.appendChild(c);
    var legend = document.createElement('div'); legend.className = 'legend';
    s.workers.forEach(function (w, i) {
      var span = document.createElement('span'); span.style.color = colors[i % colors.length];
      span.textContent = 'worker ' + w.slot + ' idle'; legend.appendChild(span);
    });
    box.appendChild(legend);
    var t = document.createElement('table'), head = document.createElement('tr');
    ['worker'].concat(fields).forEach(function (f) {
      var th = document.createElement('th'); th.textContent = f; head.appendChild(th);
    });
    t.appendChild(head);
    s.workers.forEach(function (w) {
      var tr = document.createElement('tr'), td = document.createElement('td');
      td.textContent = w.slot; tr.appendChild(td);
      fields.forEach(function (f) {
        var cell = document.createElement('td'); cell.id = 'pool-' + k + '-w' + w.slot + '-' + f;
        tr.appendChild(cell);
      });
      t.appendChild(tr);
    });
    box.appendChild(t);
    document.getElementById('live').appendChild(box);
    return box;
  }
  function draw(s) {
    var k = key(s), hist = history[k] = history[k] || [];
    hist.push(s.workers.map(function (w) { return w.idle; }));
    if (hist.length > 60) hist.shift();
    s.workers.forEach(function (w) {
      fields.forEach(function (f) {
        document.getElementById('pool-' + k + '-w' + w.slot + '-' + f).textContent = w[f];
      });
    });
    var c = document.getElementById('chart-' + k), g = c.getContext('2d');
    var max = 1;
    hist.forEach(function (row) { row.forEach(function (v) { if (v > max) max = v; }); });
    g.clearRect(0, 0, c.width, c.height);
    g.fillStyle = '#666'; g.fillText('idle per worker (max ' + max + ')', 4, 10);
    s.workers.forEach(function (w, i) {
      g.strokeStyle = colors[i % colors.length]; g.beginPath();
      hist.forEach(function (row, x) {
        var px = x * (c.width - 1) / 59, py = c.height - 2 - row[i] * (c.height - 16) / max;
        if (x === 0) g.moveTo(px, py); else g.lineTo(px, py);
      });
      g.stroke();
    });
  }
  function show(d) { d.servers.forEach(function (s) { ensure(s); draw(s); }); }
  show(data);
  setInterval(function () {
    fetch(uri + ';pools', {cache: 'no-store'}).then(function (r) { return r.json(); })
      .then(show).catch(function () {});
  }, 1000);
})();
"""


def pools_json(snap: dict[str, Any]) -> dict[str, Any]:
    """The live numbers: per server, per worker, ``POOL_FIELDS``."""
    pids = {w["slot"]: w["pid"] for w in snap["workers"]}
    return {
        "servers": [
            {"backend": s["backend"], "server": s["server"],
             "workers": [{"slot": slot, "pid": pids.get(slot, 0),
                          **{f: c.get(f, 0) for f in POOL_FIELDS}}
                         for slot, c in enumerate(s["cells"])]}
            for s in snap["servers"]
        ]
    }  # fmt: skip


def _cell(v: Any) -> str:
    return "<td>" + ("" if v is None else html.escape(str(v))) + "</td>"


_HEAD = (
    "<tr><th rowspan=2></th><th colspan=3>Queue</th><th colspan=4>Sessions</th><th>Bytes</th>"
    "<th colspan=3>Server</th><th colspan=2>Connections</th>{mod_head}</tr>"
    "<tr><th>Cur</th><th>Max</th><th>Limit</th><th>Cur</th><th>Max</th><th>Limit</th><th>Total</th>"
    "<th>Out</th><th>Status</th><th>Wght</th><th>Act</th><th>New</th><th>Reused</th>{mod_cols}</tr>"
)
_COLUMNS = ("qcur", "qmax", "qlimit", "scur", "smax", "slim", "stot", "bout", "status", "weight", "act",
            "connect", "reuse")  # fmt: skip
_MODULES = ("idle_conn_cur", "safe_conn_cur", "used_conn_cur", "need_conn_est")


def _row_class(r: dict[str, Any]) -> str:
    if r["type"] == 0:
        return "front"
    if r["type"] == 1:
        return "back"
    return {"MAINT": "maint", "DRAIN": "drain", "DOWN": "down"}.get(r["status"], "up")


def _proxy_table(name: str, rows: list[dict[str, Any]], modules: bool) -> str:
    mod_head = f"<th colspan={len(_MODULES)}>Pool</th>" if modules else ""
    mod_cols = "".join(f"<th>{c.split('_')[0]}</th>" for c in _MODULES) if modules else ""
    out = [f"<table id='px-{html.escape(name)}'>",
           f"<tr class=px><th class=px colspan={14 + (len(_MODULES) if modules else 0)}>"
           f"{html.escape(name)}</th></tr>", _HEAD.format(mod_head=mod_head, mod_cols=mod_cols)]  # fmt: skip
    for r in rows:
        cells = [r.get(k) for k in _COLUMNS]
        if modules:
            cells += [r.get(k) for k in _MODULES]
        out.append(f"<tr class={_row_class(r)}><td class=name>{html.escape(r['svname'])}</td>"
                   + "".join(_cell(v) for v in cells) + "</tr>")  # fmt: skip
    out.append("</table>")
    return "\n".join(out)


def render_html(snap: dict[str, Any], config: Config, page: StatsPage, started: float) -> str:
    rows = stat_rows(snap, config)
    by_proxy: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_proxy.setdefault(r["pxname"], []).append(r)
    up = int(time.time() - started)
    workers = snap["workers"]
    live = json.dumps(pools_json(snap)).replace("</", "<\\/")
    servers = snap["servers"]
    maint = sum(1 for s in servers if server_status(s) == "MAINT")
    tables = "\n".join(_proxy_table(name, px_rows, page.show_modules) for name, px_rows in by_proxy.items())
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Statistics Report for poolproxy</title>"
        f"<style>{_CSS}</style></head><body>\n"
        f"<h1>poolproxy {html.escape(__version__)} statistics</h1>\n"
        f"<p>uptime {up // 86400}d {up % 86400 // 3600}h{up % 3600 // 60:02d}m{up % 60:02d}s;"
        f" {len(workers)} workers (pids {', '.join(str(w['pid']) for w in workers)});"
        f" {len(servers)} servers, {maint} in maintenance;"
        f" <a href='{html.escape(page.uri)};csv'>CSV export</a></p>\n"
        f"{tables}\n<h2>Shared pool, live, per worker</h2>\n<div id='live' class='live'></div>\n"
        f"<script id='pool-data' type='application/json' data-uri='{html.escape(page.uri)}'>{live}"
        "</script>\n"
        f"<script>{_JS}</script>\n</body></html>\n"
    )
