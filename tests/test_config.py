"""Loading good configurations: what each directive becomes in the model, inheritance, files."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import h1
from proxy.config import VALID_MESSAGE, ConfigError, check, load
from proxy.config.model import Cap, Config, HttpReturn, Proxy, ReuseMode, StatsSocket, Where

DATA = Path(__file__).parent / "data" / "config"
GOOD = DATA / "good"
ENV = {
    "POOLPROXY_T_PORT": "8088",
    "POOLPROXY_T_PREFIXES": "/a /b",
    "POOLPROXY_T_BODY": "hello world",
    "POOLPROXY_T_DIR": str(GOOD),
}


def load_good(*names: str) -> Config:
    return load([str(GOOD / n) for n in names], env=ENV)


def write(tmp_path: Path, text: str, name: str = "t.cfg") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", ["inheritance.cfg", "listen.cfg", "env_quoting.cfg", "conf.d"])
def test_good_configs_check_clean(name: str) -> None:
    paths = [str(GOOD / name)] + ([str(GOOD / "extra.cfg")] if name == "conf.d" else [])
    assert check(paths, env=ENV) == []


def test_valid_message_matches_haproxy() -> None:
    assert VALID_MESSAGE == "Configuration file is valid"


# -- defaults inheritance -------------------------------------------------------------------------


def test_defaults_inherited_by_following_backend() -> None:
    cfg = load_good("inheritance.cfg")
    b1 = cfg.backends["b1"]
    assert (b1.timeouts.connect, b1.timeouts.client, b1.timeouts.server, b1.timeouts.queue) == (4, 40, 41, 7)
    assert b1.http_reuse is ReuseMode.AGGRESSIVE
    assert b1.balance == "leastconn"
    assert b1.retries == 5
    assert (b1.forwardfor, b1.forwardfor_header) == (True, "x-real-ip")
    assert b1.http_conn_mode == "http-server-close"
    assert b1.default_backend == "b1"  # inherited, meaningless on a backend, harmless


def test_default_server_and_source_inherited() -> None:
    s1, s2 = load_good("inheritance.cfg").backends["b1"].servers
    assert (s1.maxconn, s1.pool_low_conn, s1.pool_purge_delay, s1.weight) == (50, 2, 10.0, 20)
    assert s1.source == "192.0.2.1" and not s1.usesrc_clientip  # proxy-wide source from defaults
    assert s2.weight == 5 and s2.source == "192.0.2.9:0"  # its own source wins
    assert s1.where == Where(str(GOOD / "inheritance.cfg"), 18)


def test_section_overrides_inherited_values() -> None:
    b2 = load_good("inheritance.cfg").backends["b2"]
    assert b2.timeouts.server == 60.0 and b2.timeouts.connect == 4.0
    assert b2.http_reuse is ReuseMode.NEVER
    assert b2.balance == "first"
    assert (b2.forwardfor, b2.forwardfor_header) == (False, "x-forwarded-for")
    assert b2.http_conn_mode == "keep-alive"
    (s3,) = b2.servers
    assert (s3.maxconn, s3.pool_low_conn, s3.weight) == (10, 2, 20)


def test_unnamed_defaults_resets_and_applies_to_what_follows() -> None:
    fe = load_good("inheritance.cfg").frontends["fe"]
    assert fe.timeouts.client == 5.0
    assert fe.timeouts.connect is None
    assert not fe.forwardfor
    assert fe.default_backend == "b1"


def test_from_named_defaults() -> None:
    cfg = load_good("inheritance.cfg")
    fe2 = cfg.frontends["fe2"]
    assert fe2.timeouts.client == 40.0 and fe2.forwardfor and fe2.default_backend == "b1"
    b3 = cfg.backends["b3"]
    assert b3.timeouts.server == 2.0 and b3.timeouts.connect == 4.0  # chained: base, then its own
    assert [s.disabled for s in b3.servers] == [True, False]  # default-server disabled, then enabled


def test_defaults_do_not_become_proxies() -> None:
    cfg = load_good("inheritance.cfg")
    assert sorted(cfg.backends) == ["b1", "b2", "b3"]
    assert sorted(cfg.frontends) == ["fe", "fe2"]


# -- global, listen, binds, options -----------------------------------------------------------------


def test_global_section() -> None:
    g = load_good("listen.cfg").global_
    assert (g.nbthread, g.maxconn, g.daemon, g.pidfile) == (2, 5000, True, "/run/poolproxy.pid")
    assert (g.h1_engine, g.bufsize, g.maxhdr) == ("h11", 32768, 200)
    assert g.logs == ["stderr", "127.0.0.1:514"]
    second = g.log_targets[1]
    assert (second.length, second.format, second.facility, second.level, second.minlevel) == (
        1024, "rfc5424", "local1", "notice", "err",
    )  # fmt: skip
    assert g.stats_sockets == [StatsSocket("/run/poolproxy.sock", 0o600, "admin")]


def test_global_defaults_when_absent(tmp_path: Path) -> None:
    cfg = load([write(tmp_path, "backend b\n    server s 127.0.0.1:1\n")])
    g = cfg.global_
    assert (g.nbthread, g.maxconn, g.h1_engine, g.bufsize, g.maxhdr, g.daemon) == (
        0,
        0,
        h1.DEFAULT,  # native where built, else llhttp
        16384,
        101,
        False,
    )


def test_listen_is_frontend_and_backend() -> None:
    cfg = load_good("listen.cfg")
    app = cfg.frontends["app"]
    assert cfg.backends["app"] is app
    assert app.cap == Cap.FRONTEND | Cap.BACKEND
    assert [(b.host, b.port) for b in app.binds] == [
        ("", 8080), ("::1", 8081), ("127.0.0.1", 8100), ("127.0.0.1", 8101), ("127.0.0.1", 8102),
        ("0.0.0.0", 8200),
    ]  # fmt: skip
    t = app.timeouts
    assert (t.client, t.server, t.connect, t.http_request, t.http_keep_alive) == (10, 20, 1.5, 5, 2)
    assert app.httplog and app.dontlognull and app.http_conn_mode == "httpclose"


def test_listen_servers() -> None:
    a1, a2 = load_good("listen.cfg").backends["app"].servers
    assert (a1.host, a1.port, a1.maxqueue, a1.strict_maxconn, a1.pool_max_conn) == (
        "localhost",
        80,
        20,
        True,
        0,
    )
    assert (a2.host, a2.port, a2.source, a2.usesrc_clientip) == ("2001:db8::2", 80, "0.0.0.0", True)


def test_acl_declarations_with_one_name_are_merged() -> None:
    app = load_good("listen.cfg").frontends["app"]
    acl = app.acls["is_static"]
    assert (acl.fetch, acl.patterns) == ("path_beg", ["/static/", "/img/"])
    assert [(m.fetch, m.patterns) for m in acl.more] == [("path_end", [".css", ".js"])]
    (rule,) = app.use_backends
    assert rule.backend == "static" and rule.cond is not None and rule.cond.terms_or[0][0].acl is acl


# -- files and directories --------------------------------------------------------------------------


def test_directory_reads_cfg_files_in_order_and_sections_span_files() -> None:
    cfg = load([str(GOOD / "conf.d"), str(GOOD / "extra.cfg")])
    assert [Path(f).name for f in cfg.files] == [
        "10-global.cfg", "20-defaults.cfg", "30-backends.cfg", "40-frontends.cfg", "extra.cfg",
    ]  # fmt: skip
    assert cfg.global_.nbthread == 3
    fe = cfg.frontends["fe"]
    assert (fe.timeouts.client, fe.default_backend) == (11.0, "web")
    assert cfg.backends["web"].timeouts.server == 12.0
    assert fe.where == Where(str(GOOD / "conf.d" / "40-frontends.cfg"), 2)
    assert "extra" in cfg.backends


def test_errors_from_several_files_are_all_reported(tmp_path: Path) -> None:
    a = write(tmp_path, "global\n    nbthread x\n", "a.cfg")
    b = write(tmp_path, "backend b\n    server s 1.2.3.4\n    balance nope\n", "b.cfg")
    with pytest.raises(ConfigError) as err:
        load([a, b])
    assert [m.split(" : ")[1] for m in err.value.messages] == [
        f"parsing [{a}:2]", f"parsing [{b}:2]", f"parsing [{b}:3]",
    ]  # fmt: skip


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.cfg"
    assert check([str(missing)]) == [
        f"[ALERT] config : cannot open configuration file '{missing}': No such file or directory"
    ]
    (tmp_path / "empty").mkdir()
    (msg,) = check([str(tmp_path / "empty")])
    assert "no configuration file found" in msg


def test_config_error_carries_every_message(tmp_path: Path) -> None:
    path = write(tmp_path, "frontend fe\n    bind :1\n    tiemout client 1s\n    mode tcp\n")
    with pytest.raises(ConfigError) as err:
        load([path])
    assert len(err.value.messages) == 2
    assert str(err.value) == "\n".join(err.value.messages)
    assert all(m.startswith("[ALERT] config : parsing [") for m in err.value.messages)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.cfg"
    path.write_bytes(b"global\n    pidfile /run/\xff\n")
    assert check([str(path)]) == [f"[ALERT] config : parsing [{path}:2] : the file is not valid UTF-8"]


def test_timeout_zero_means_unset(tmp_path: Path) -> None:
    text = "defaults\n    timeout client 30s\nfrontend fe\n    bind :1\n    timeout client 0\n"
    assert load([write(tmp_path, text)]).frontends["fe"].timeouts.client is None


def test_time_without_unit_is_milliseconds(tmp_path: Path) -> None:
    text = "backend b\n    timeout server 2500\n    timeout connect 10us\n    timeout queue 2h\n"
    t = load([write(tmp_path, text)]).backends["b"].timeouts
    assert (t.server, t.connect, t.queue) == (2.5, 1e-05, 7200.0)


# -- environment and quoting ------------------------------------------------------------------------


def test_environment_expansion() -> None:
    fe = load_good("env_quoting.cfg").frontends["fe"]
    assert [(b.host, b.port) for b in fe.binds] == [("", 8088), ("127.0.0.1", 8088), ("127.0.0.2", 9090)]
    assert fe.acls["prefixes"].patterns == ["/a", "/b"]  # ${VAR[*]} gives one word per value
    first = returns_of(fe)[0]
    assert (first.status, first.content_type, first.body) == (
        200,
        "text/plain; charset=utf-8",
        b"hello world\n",
    )


def test_quoting_and_escapes() -> None:
    acls = load_good("env_quoting.cfg").frontends["fe"].acls
    assert acls["spaced"].patterns == ["/with space", "/single $NOT_A_VAR"]
    assert acls["hashed"].patterns == ["/x#y", "/in#quotes"]
    assert acls["escaped"].patterns == ["/a b", "prefix  xpost"]
    assert acls["versioned"].patterns == [r"^/v[0-9]+\.json$"]
    assert acls["dollar"].patterns == ["/cost$5"]


def test_http_request_return_variants() -> None:
    fe = load_good("env_quoting.cfg").frontends["fe"]
    line_rule, busy, from_file, fallback = returns_of(fe)[1:]
    assert line_rule.cond is not None and line_rule.cond.terms_or[0][0].acl.patterns == ["/line-14"]
    assert (line_rule.status, line_rule.content_type, line_rule.body) == (204, None, b"")
    assert busy.body == b"100% busy"
    assert from_file.body == b"from a file\n" and from_file.content_type == "text/plain"
    assert fallback.cond is not None and fallback.cond.unless
    assert [[t.acl.name for t in group] for group in fallback.cond.terms_or] == [
        ["spaced"], ["hashed", "escaped"], ["versioned"], ["dollar"],
    ]  # fmt: skip


def test_default_environment_is_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLPROXY_T_NB", "7")
    assert load([write(tmp_path, 'global\n    nbthread "${POOLPROXY_T_NB}"\n')]).global_.nbthread == 7


@pytest.mark.parametrize(
    ("lines", "mode"),
    [
        ([], "keep-alive"),
        (["option httpclose"], "httpclose"),
        (["option http-server-close"], "http-server-close"),
        (["option httpclose", "option http-keep-alive"], "keep-alive"),
        (["option httpclose", "no option httpclose"], "keep-alive"),
        # HAProxy: "no option X" only falls back to keep-alive when X is the mode in force
        (["option httpclose", "no option http-server-close"], "httpclose"),
        (["option http-server-close", "no option http-keep-alive"], "http-server-close"),
    ],
)
def test_connection_mode_options(tmp_path: Path, lines: list[str], mode: str) -> None:
    text = "backend b\n" + "".join(f"    {line}\n" for line in lines)
    assert load([write(tmp_path, text)]).backends["b"].http_conn_mode == mode


def test_keyword_family_alone_lists_its_members(tmp_path: Path) -> None:
    (message,) = check([write(tmp_path, "backend b\n    timeout\n")])
    assert "unknown keyword 'timeout' in 'backend' section (supported 'timeout' keywords here:" in message
    assert "connect, http-keep-alive, http-request, queue, server, tunnel)" in message


def returns_of(px: Proxy) -> list[HttpReturn]:
    """The ``http-request return`` rules' responses, in order."""
    return [r.ret for r in px.http_request if r.ret is not None]


def test_log_target_host_names_prefer_ipv4(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost`` may resolve to ::1 first, where a syslog daemon bound to 127.0.0.1 would lose
    every line: without a ``udp6@``/``ipv6@`` prefix the IPv4 address wins."""
    import socket

    from proxy.config.address import parse_log_address

    def both(host: str, port: int, family: int, kind: int) -> list[tuple[object, ...]]:
        v6 = (socket.AF_INET6, kind, 17, "", ("::1", port, 0, 0))
        return [v6, (socket.AF_INET, kind, 17, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", both)
    assert parse_log_address("localhost:514") == ("udp", socket.AF_INET, ("127.0.0.1", 514))
