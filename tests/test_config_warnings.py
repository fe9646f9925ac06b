"""Warnings: HAProxy's ``[WARNING]`` level, the whole-configuration warnings, ``zero-warning``/``-dW``,
``quiet``, and the global switches of the diagnostics commit (default-path, limits, log header)."""

from __future__ import annotations

import re
import resource
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from proxy import limits
from proxy.config import ConfigError, load
from proxy.config.errors import ZERO_WARNING
from proxy.config.model import Config, Global
from proxy.log import LogSink
from proxy.main import main

TIMEOUTS = "    timeout client 5s\n    timeout connect 5s\n    timeout server 5s\n"
FE_BE = """\
frontend fe
    bind 127.0.0.1:18080
    default_backend be
backend be
    server s1 127.0.0.1:18081
"""


def write(tmp_path: Path, text: str, name: str = "t.cfg") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def warnings_of(path: str) -> list[str]:
    return load([path], env={}).warnings


def test_missing_timeouts_named_per_proxy_with_haproxy_explanation(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults\n    mode http\n" + FE_BE)
    fe, be = warnings_of(path)
    assert fe.startswith(f"[WARNING] config : [{path}:3] : missing timeouts for frontend 'fe'.\n   | ")
    assert fe.endswith("timeouts are set to a non-zero value: 'client', 'connect', 'server'.")
    assert len(fe.splitlines()) == 4
    assert be.startswith(f"[WARNING] config : [{path}:6] : missing timeouts for backend 'be'.")


def test_timeouts_from_defaults_silence_it_and_a_serverless_backend_is_not_warned(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults\n" + TIMEOUTS + FE_BE + "backend empty\n    timeout connect 1s\n")
    assert warnings_of(path) == []


def test_httplog_without_a_log_target(tmp_path: Path) -> None:
    text = "defaults\n" + TIMEOUTS + "    option httplog\n" + FE_BE
    (warning,) = warnings_of(write(tmp_path, text))
    assert warning.endswith("log format ignored for frontend 'fe' since it has no log address.")
    logged = "global\n    log stderr local0\ndefaults\n    log global\n" + text.removeprefix("defaults\n")
    assert warnings_of(write(tmp_path, logged, "logged.cfg")) == []
    # 'log global' without any global target is no log address either
    no_target = "defaults\n    log global\n" + text.removeprefix("defaults\n")
    assert len(warnings_of(write(tmp_path, no_target, "none.cfg"))) == 1


def test_no_log_cancels_an_inherited_log_global(tmp_path: Path) -> None:
    text = "global\n    log stderr local0\ndefaults\n    log global\n" + TIMEOUTS + FE_BE.replace(
        "    default_backend be\n", "    default_backend be\n    no log\n"
    )
    cfg = load([write(tmp_path, text)], env={})
    assert not cfg.frontends["fe"].log_global and cfg.backends["be"].log_global


def test_ignored_keyword_warns_and_zero_warning_refuses(tmp_path: Path) -> None:
    base = "global\n    nosplice\ndefaults\n" + TIMEOUTS + FE_BE
    path = write(tmp_path, base)
    (warning,) = warnings_of(path)
    assert warning == (
        f"[WARNING] config : parsing [{path}:2] : 'nosplice' is ignored: poolproxy never splices:"
        " bodies are copied in user space."
    )
    with pytest.raises(ConfigError) as err:
        load([path], env={}, zero_warning=True)
    assert err.value.messages == [ZERO_WARNING] and err.value.warnings == [warning]
    assert err.value.lines == [warning, ZERO_WARNING]
    strict = write(tmp_path, base.replace("global\n", "global\n    zero-warning\n"), "zw.cfg")
    with pytest.raises(ConfigError) as err:
        load([strict], env={})
    assert err.value.messages == [ZERO_WARNING]


def test_zero_warning_without_warnings_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "global\n    zero-warning\ndefaults\n" + TIMEOUTS + FE_BE)
    assert load([path], env={}).global_.zero_warning


def test_main_check_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "defaults\n    mode http\n" + FE_BE)
    assert main(["-c", "-f", path]) == 0
    out, err = capsys.readouterr()
    assert out == "Warnings were found.\nConfiguration file is valid\n"
    assert err.count("[WARNING] config : ") == 2
    assert main(["-c", "-q", "-f", path]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["-c", "-dW", "-f", path]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("[WARNING]") == 2 and ZERO_WARNING in err
    quiet = write(tmp_path, "global\n    quiet\ndefaults\n    mode http\n" + FE_BE, "quiet.cfg")
    assert main(["-c", "-f", quiet]) == 0
    assert capsys.readouterr() == ("", "")


def test_default_path_config_reads_files_next_to_the_configuration(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    (sub / "body.txt").write_text("from the config dir")
    rule = "    http-request return status 200 content-type text/plain file body.txt\n"
    text = "global\n    default-path config\ndefaults\n" + TIMEOUTS + FE_BE.replace(
        "    default_backend be\n", "    default_backend be\n" + rule
    )
    cfg = load([write(sub, text, "p.cfg")], env={})
    assert return_body(cfg) == b"from the config dir"
    origin = text.replace("default-path config", f"default-path origin {sub}")
    cfg = load([write(tmp_path, origin, "o.cfg")], env={})
    assert return_body(cfg) == b"from the config dir"
    bad = text.replace("default-path config", "default-path somewhere")
    with pytest.raises(ConfigError, match="expects 'current', 'config', 'parent' or 'origin <path>'"):
        load([write(tmp_path, bad, "bad.cfg")], env={})


def return_body(cfg: Config) -> bytes:
    ret = cfg.frontends["fe"].http_request[0].ret
    assert ret is not None
    return ret.body


def test_global_switches_are_stored(tmp_path: Path) -> None:
    text = """\
global
    hard-stop-after 30s
    stats timeout 1m
    log-tag edge
    log-send-hostname lb1
    no strict-limits
    ulimit-n 4096
    insecure-fork-wanted
    insecure-setuid-wanted
    expose-experimental-directives
"""
    cfg = load([write(tmp_path, text + "defaults\n" + TIMEOUTS + FE_BE)], env={})
    g = cfg.global_
    assert (g.hard_stop_after, g.stats_timeout, g.log_tag, g.log_send_hostname) == (30.0, 60.0, "edge", "lb1")
    assert (g.strict_limits, g.ulimit_n) == (False, 4096)
    assert cfg.warnings == []


# -- the file descriptor limit -----------------------------------------------------------------------


def test_needed_fds() -> None:
    assert limits.needed_fds(Global(), 3) == 0
    assert limits.needed_fds(Global(maxconn=1000), 3) == 2000 + 3 + limits.MARGIN
    assert limits.needed_fds(Global(maxconn=1000, ulimit_n=50), 3) == 50


def test_raise_fd_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    state = {"soft": 1024, "hard": 4096}

    def getrlimit(which: int) -> tuple[int, int]:
        return state["soft"], state["hard"]

    def setrlimit(which: int, value: tuple[int, int]) -> None:
        if value[1] > state["hard"]:
            raise ValueError("not allowed to raise the hard limit")
        state["soft"], state["hard"] = value

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert limits.raise_fd_limit(0) is None and state["soft"] == 1024
    assert limits.raise_fd_limit(2000) is None and state["soft"] == 2000
    assert limits.raise_fd_limit(100) is None and state["soft"] == 2000  # never lowered
    assert limits.raise_fd_limit(10000) == "[haproxy.main()] Cannot raise FD limit to 10000, limit is 4096."


# -- the syslog header ------------------------------------------------------------------------------------


def test_log_sink_header_has_tag_and_hostname(tmp_path: Path) -> None:
    path = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        LogSink([path], tag="edge", hostname="lb1").emit("hello")
        LogSink([path]).emit("plain")
        first, second = server.recv(1024).decode(), server.recv(1024).decode()
    assert re.fullmatch(r"<134>\w{3} [ \d]\d \d\d:\d\d:\d\d lb1 edge\[\d+\]: hello", first), first
    assert re.fullmatch(r"<134>\w{3} [ \d]\d \d\d:\d\d:\d\d poolproxy\[\d+\]: plain", second), second


# -- the same words as HAProxy ----------------------------------------------------------------------------

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_warnings_are_worded_as_haproxy_words_them(tmp_path: Path) -> None:
    """The capability and timeout warnings, compared with ``haproxy -c`` on the same file (what
    follows "parsing [file:line] : ", and the first line of the whole-configuration ones)."""
    text = """\
defaults
    mode http
frontend fe
    bind 127.0.0.1:18080
    default_backend be
    balance roundrobin
    timeout server 5s
    retries 3
backend be
    timeout client 5s
    use_backend be
    default_backend be
    server s1 127.0.0.1:18081
"""
    path = write(tmp_path, text)
    assert HAPROXY is not None
    run = subprocess.run([HAPROXY, "-c", "-f", path], capture_output=True, text=True, timeout=30)
    theirs = [line.split(" : ", 2)[2] for line in run.stderr.splitlines() if line.startswith("[WARNING]")]
    ours = [w.splitlines()[0].split(" : ", 2)[2] for w in warnings_of(path)]

    def text_of(message: str) -> str:  # "parsing [f:l] : msg" or "[f:l] : msg" -> "msg"
        return message.split("] : ", 1)[1] if "] : " in message else message

    assert [text_of(m) for m in ours] == [text_of(m) for m in theirs]


# -- health checks: built (proxy.health, proxy.checks); their settings warn no more ----------------------


def test_health_check_settings_load_without_warning_and_observe_is_refused(tmp_path: Path) -> None:
    text = "defaults\n" + TIMEOUTS + """\
    default-server inter 3s fall 3 rise 2
    option redispatch
frontend fe
    bind 127.0.0.1:18080 name plain
    default_backend be
backend be
    option httpchk GET /health
    http-check expect status 200
    timeout check 2s
    server s1 127.0.0.1:18081 check
"""
    path = write(tmp_path, text)
    assert warnings_of(path) == []
    srv = load([path], env={}).backends["be"].servers[0]
    assert (srv.check, srv.inter, srv.fall, srv.rise) == (True, 3.0, 3, 2)
    refused = write(tmp_path, text.replace("check\n", "check observe layer7\n"), "observe.cfg")
    with pytest.raises(ConfigError) as err:
        load([refused], env={})
    (alert,) = err.value.messages
    assert "'server s1': parameter 'observe' is not supported: passive health monitoring" in alert
