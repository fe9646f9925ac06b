"""tools.lab (and tools.labkit), the reference lab: its rows, the configurations it generates (valid for
both proxies), the parsing of hey and of HAProxy's ``show stat``, the table; then one short row and a
short ``--edge`` run for real (hey, HAProxy, poolproxy). No timing is asserted."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO_ROOT, free_port

from tools import lab, labkit

HEY_OUTPUT = """
Summary:
  Total:\t1.0006 secs
  Requests/sec:\t12667.9899

Response time histogram:
  0.000 [1]\t|
  0.000 [2999]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■

Status code distribution:
  [200]\t12600 responses
  [503]\t7 responses

Error distribution:
  [4]\tGet "http://127.0.0.1:1/": dial tcp 127.0.0.1:1: connect: connection refused
  [2]\tGet "http://127.0.0.1:1/": EOF
"""

SHOW_STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,req_tot,conn_tot
h1,FRONTEND,,,3,50,9987,16529,16600,16529
h2,FRONTEND,,,0,4,9987,5,12000,5

"""


def test_rows_in_the_articles_order() -> None:
    rows = lab.all_rows()
    first = ["close-h1-safe", "close-h1-aggressive", "close-h1-always", "close-h2-safe"]
    assert [r.name for r in rows[:4]] == first
    assert len(rows) == 12 and set(lab.ARTICLE) == set(lab.HAPROXY_26) == {r.key for r in rows}
    assert len(lab.all_rows(never=True)) == 16
    assert lab.select_rows("keepalive-h2-never, close-h1-always") == [
        lab.Row("keepalive", "h2", "never"),
        lab.Row("close", "h1", "always"),
    ]
    for bad in ("close-h3-always", "close-h1", "open-h1-safe", "close-h1-sometimes"):
        with pytest.raises(ValueError, match="bad row"):
            lab.Row.parse(bad)


def test_parse_hey() -> None:
    res = labkit.parse_hey(HEY_OUTPUT)
    assert (res.ok, res.other, res.errors, res.rps) == (12600, {503: 7}, 6, pytest.approx(12667.9899))
    assert res.error_text.startswith('[4]\tGet "http://127.0.0.1:1/"')
    assert labkit.parse_hey("Status code distribution:\n  [200]\t5 responses\n").errors == 0


def test_parse_show_stat() -> None:
    stat = labkit.parse_show_stat(SHOW_STAT)
    assert stat[("h1", "FRONTEND")]["conn_tot"] == "16529"
    assert stat[("h2", "FRONTEND")]["smax"] == "4"


def test_table_puts_the_references_beside() -> None:
    row = lab.Row("close", "h1", "always")
    measured = lab.Result(row, "poolproxy", requests=5000, connects=52, max_conns=50, errors=0,
                          own={"connects": 52, "takeovers_given": 70, "takeovers_asked": 71,
                               "takeovers_failed": 1})  # fmt: skip
    label = lab.refusal_label("h2", "'server s1': parameter 'proto' is not supported yet")
    refused = lab.Result(lab.Row("close", "h2", "safe"), "poolproxy", refused=label)
    never = lab.Result(lab.Row("close", "h1", "never"), "haproxy", requests=10, connects=10, max_conns=9)
    lines = lab.format_table([measured, refused, never]).splitlines()
    assert lines[0].split()[:6] == ["row", "proxy", "requests", "connects", "max", "conns"]
    assert lines[2].split()[:6] == ["close-h1-always", "poolproxy", "5000", "52", "50", "0"]
    assert "54 / 50" in lines[2] and "51 / 50" in lines[2]  # the article's, and HAProxy 2.6's here
    assert "takeovers 70/71 (failed 1)" in lines[2]
    assert lines[3].endswith("poolproxy: proto h2 refused (not built)")
    assert lines[4].split()[6:8] == ["-", "-"]  # no reference for never
    other = lab.refusal_label("h1", "'foo' is unknown")
    assert other == "poolproxy refused the configuration: 'foo' is unknown"


def test_edge_table() -> None:
    res = [lab.EdgeResult("poolproxy", 5, [2, 3, 3], own_max=3), lab.EdgeResult("x", 2, refused="why")]
    res[0].codes.update({200: 96})
    lines = lab.format_edge(res, 2, 4, 3, 32).splitlines()
    assert lines[2].split()[:6] == ["poolproxy", "5", "3", "3", "2x1", "3x2"]
    assert lines[3] == f"{'x':26} refused: why"


def _check(cmd: list[str], cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, "-c", "-f", str(cfg)], cwd=REPO_ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("proto", lab.PROTOS)
@pytest.mark.parametrize("mode", lab.ALL_MODES)
def test_generated_configs_are_valid(tmp_path: Path, proto: str, mode: str) -> None:
    # The same text for both proxies. poolproxy refuses `proto h2` until it is built (the lab then
    # reports the row as refused, with that reason); everything else it must accept.
    cfg = tmp_path / "lab.cfg"
    cfg.write_text(lab.proxy_config(free_port(), free_port(), 4, mode, proto))
    reason = labkit.poolproxy_refusal(cfg)
    if proto == "h1":
        assert reason is None
    elif reason is not None:
        assert lab.refusal_label(proto, reason) == "poolproxy: proto h2 refused (not built)", reason
    if shutil.which("haproxy") is not None:
        out = _check(["haproxy"], cfg)
        assert out.returncode == 0, out.stdout + out.stderr


def test_generated_edge_and_server_configs_are_valid(tmp_path: Path) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed")
    for variant, (proxy, params, glob) in lab.EDGE_VARIANTS.items():
        cfg = tmp_path / "edge.cfg"
        cfg.write_text(lab.edge_config(free_port(), free_port(), 4, 2, params, glob))
        assert "maxconn 2" in cfg.read_text()
        out = _check([sys.executable, "-m", "proxy"] if proxy == "poolproxy" else ["haproxy"], cfg)
        assert out.returncode == 0, (variant, out.stdout + out.stderr)
    cfg = tmp_path / "server.cfg"
    cfg.write_text(labkit.server_config(free_port(), free_port(), tmp_path / "s.sock"))
    out = _check(["haproxy"], cfg)
    assert out.returncode == 0, out.stdout + out.stderr


def _run_lab(*args: str) -> str:
    if shutil.which("hey") is None or shutil.which("haproxy") is None:
        pytest.skip("the lab needs hey and haproxy")
    out = subprocess.run(
        [sys.executable, "-m", "tools.lab", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.e2e
def test_lab_one_row_for_real() -> None:
    # One row, 1 s, 10 users: both proxies measured; with http-reuse always the server sees far fewer
    # connections than requests even though every client request comes on a new connection.
    out = _run_lab("--rows", "close-h1-always", "--seconds", "1", "--users", "10")
    table = out.split("\n\n", 1)[1]
    lines = {line.split()[1]: line for line in table.splitlines() if line.startswith("close-h1-always")}
    assert set(lines) == {"poolproxy", "haproxy"}, out
    for name, line in lines.items():
        requests, connects, max_conns = (int(v) for v in line.split()[2:5])
        assert requests > 0 and 0 < connects < requests, (name, out)
        assert 0 < max_conns <= connects, (name, out)
    assert "own connects" in lines["poolproxy"], out


@pytest.mark.e2e
def test_lab_edge_for_real() -> None:
    # Two spikes through poolproxy: the peak stays within each variant's bound, strict-maxconn at maxconn.
    out = _run_lab("--edge", "--proxies", "poolproxy", "--spikes", "2", "--spike-size", "16")
    found = re.finditer(r"(?m)^(poolproxy.*?)\s+(\d+)\s+(\d+)\s+(\d+)  ", out)
    rows = {m[1]: (int(m[2]), int(m[3]), int(m[4])) for m in found}
    assert set(rows) == {"poolproxy", "poolproxy nosteal", "poolproxy strict-maxconn"}, out
    for variant, (bound, _, own_max) in rows.items():
        assert own_max <= bound, (variant, out)  # the proxy's own exact count
    assert rows["poolproxy strict-maxconn"][2] <= 2, out
    assert "32 x 200" in out, out


def test_lab_ports_below_the_ephemeral_range() -> None:
    # The lab's own connections take source ports from the ephemeral range: its listeners stay below.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {labkit.free_port() for _ in range(10)}
    if low - 10000 >= 1000:
        assert all(10000 <= p < low for p in ports), ports
