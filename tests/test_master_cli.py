"""The master CLI (proxy.master_cli) with a fake host: ``-S`` parsing, ``show proc``'s format, reload
answers (immediate and deferred), ``@N``/``@!PID`` routing, prompt mode, ``_getsocks`` over a real
Unix socket."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy import __version__
from proxy.master_cli import (
    MasterCli,
    MasterSocketSpec,
    ProcLine,
    parse_master_socket,
    receive_listeners,
    show_proc,
    uptime,
)


class FakeHost:
    def __init__(self) -> None:
        self.reloads: list[Callable[[bool, str], None]] = []
        self.routed: list[tuple[str, list[str], str]] = []
        self.error = ""
        self.socks: list[socket.socket] = []

    def processes(self) -> list[ProcLine]:
        return [ProcLine(100, "master", 2, 0.0, failed=1), ProcLine(101, "worker", 0, 0.0),
                ProcLine(99, "worker", 1, 0.0, old=True)]  # fmt: skip

    def reload_error(self) -> str:
        return self.error

    def request_reload(self, done: Callable[[bool, str], None]) -> None:
        self.reloads.append(done)

    def route(self, target: str, words: list[str], level: str) -> str:
        if target not in ("1", "!101"):
            raise LookupError(target)
        self.routed.append((target, words, level))
        return "routed\n"

    def listening_sockets(self) -> list[socket.socket]:
        return self.socks


def test_parse_master_socket_follows_haproxys_comma_syntax() -> None:
    assert parse_master_socket("/run/m.sock") == MasterSocketSpec("/run/m.sock", None, "admin")
    assert parse_master_socket("unix@/run/m.sock,mode,600,level,operator") == MasterSocketSpec(
        "/run/m.sock", 0o600, "operator"
    )
    for bad in ("/x,mode", "/x,mode,9z", "/x,level,root", "/x,bogus,1", "ipv4@127.0.0.1:9999"):
        with pytest.raises(ValueError):
            parse_master_socket(bad)


def test_show_proc_has_haproxys_columns_and_sections() -> None:
    text = show_proc(FakeHost().processes(), "[ALERT] config : bad\nFatal errors", now=3661.0)
    lines = text.splitlines()
    # HAProxy 2.6: every column padded to 15 characters, separated by one space
    assert lines[0] == "#<PID>          <type>          <reloads>       <uptime>        <version>      "
    assert lines[1].split() == ["100", "master", "2", "[failed:", "1]", "0d01h01m01s", __version__]
    assert lines[1].startswith("100             master          2 [failed: 1]   0d01h01m01s")
    assert lines[2:7] == [
        "# workers",
        f"{'101':<15} {'worker':<15} {'0':<15} {'0d01h01m01s':<15} {__version__:<15}",
        "# old workers",
        f"{'99':<15} {'worker':<15} {'1':<15} {'0d01h01m01s':<15} {__version__:<15}",
        "# programs",
    ]
    assert lines[7:] == ["# last reload failed:", "#   [ALERT] config : bad", "#   Fatal errors"]
    assert "# old workers" not in show_proc(FakeHost().processes()[:2])
    assert uptime(90061) == "1d01h01m01s"


def serve(tmp_path: Path, host: FakeHost) -> tuple[MasterCli, socket.socket]:
    cli = MasterCli([MasterSocketSpec(str(tmp_path / "m.sock"), 0o600)], host)
    cli.bind()
    assert os.stat(tmp_path / "m.sock").st_mode & 0o777 == 0o600
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "m.sock"))
    return cli, client


def pump(cli: MasterCli, client: socket.socket, data: bytes) -> tuple[bool, bytes]:
    """Send ``data``, let the CLI handle it, return (session kept, what came back so far)."""
    client.sendall(data)
    sess = None
    deadline = time.monotonic() + 5
    while sess is None and time.monotonic() < deadline:
        sess = cli.accept(cli.listeners[0]) if not cli.sessions else next(iter(cli.sessions.values()))
    assert sess is not None
    keep = cli.readable(sess)
    client.settimeout(0.5)
    out = b""
    try:
        while chunk := client.recv(65536):
            out += chunk
    except TimeoutError:
        pass
    return keep, out


def test_one_shot_commands_answer_and_close(tmp_path: Path) -> None:
    host = FakeHost()
    cli, client = serve(tmp_path, host)
    keep, out = pump(cli, client, b"show proc\n")
    assert not keep and out.startswith(b"#<PID>") and b"# old workers" in out
    cli.close()
    assert not (tmp_path / "m.sock").exists()


def test_routing_to_a_worker_and_unknown_targets(tmp_path: Path) -> None:
    host = FakeHost()
    cli, client = serve(tmp_path, host)
    _, out = pump(cli, client, b"@1 show info; @!101 show stat; @7 show info; @master show version\n")
    assert host.routed == [("1", ["show", "info"], "admin"), ("!101", ["show", "stat"], "admin")]
    assert out.decode().split("\n\n")[:4] == [
        "routed", "routed", "Can't find the target PID matching the prefix '@7'", __version__
    ]
    cli.close()


def test_reload_answer_waits_for_the_outcome_in_prompt_mode(tmp_path: Path) -> None:
    host = FakeHost()
    cli, client = serve(tmp_path, host)
    keep, out = pump(cli, client, b"prompt\nreload\nshow version\n")
    assert keep and out == b"master> "  # the reload's answer is pending; "show version" waits behind it
    assert len(host.reloads) == 1
    host.reloads[0](False, "[ALERT] config : parsing [x.cfg:3] : unknown keyword 'bogus'")
    client.settimeout(2)
    got = b""
    while not got.endswith(b"master> ") or got.count(b"master> ") < 2:
        got += client.recv(65536)
    assert got == (b"Success=0\n--\n[ALERT] config : parsing [x.cfg:3] : unknown keyword 'bogus'\n\n"
                   b"master> " + __version__.encode() + b"\n\nmaster> ")  # fmt: skip
    cli.close()


def test_reload_success_closes_a_one_shot_session(tmp_path: Path) -> None:
    host = FakeHost()
    cli, client = serve(tmp_path, host)
    closed: list[object] = []
    cli.closer = closed.append
    keep, out = pump(cli, client, b"reload\n")
    assert keep and out == b""
    host.reloads[0](True, "")
    assert client.recv(100) == b"Success=1\n\n"
    assert len(closed) == 1
    cli.close()


def test_getsocks_passes_the_listening_sockets(tmp_path: Path) -> None:
    host = FakeHost()
    lsock = socket.create_server(("127.0.0.1", 0))
    host.socks = [lsock]
    cli = MasterCli([MasterSocketSpec(str(tmp_path / "m.sock"))], host)
    cli.bind()
    path = str(tmp_path / "m.sock")

    def answer() -> None:
        deadline = time.monotonic() + 5
        sess = None
        while sess is None and time.monotonic() < deadline:
            sess = cli.accept(cli.listeners[0])
        # the command may not have arrived yet when accepted: read until the session is answered
        while sess is not None and cli.readable(sess) and time.monotonic() < deadline:
            time.sleep(0.01)

    t = threading.Thread(target=answer)
    t.start()
    got = receive_listeners(path)
    t.join(5)
    assert [s.getsockname() for s in got] == [lsock.getsockname()]
    assert os.fstat(got[0].fileno()).st_ino == os.fstat(lsock.fileno()).st_ino  # the same socket
    for s in [*got, lsock]:
        s.close()
    cli.close()


def test_receive_listeners_refuses_a_socket_that_is_not_a_master_cli(tmp_path: Path) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp_path / "other.sock"))
    srv.listen(1)
    def answer() -> None:
        conn, _ = srv.accept()
        conn.recv(100)
        conn.sendall(b"Unknown command\n")
        conn.close()

    t = threading.Thread(target=answer)
    t.start()
    with pytest.raises(ValueError, match="no listening sockets"):
        receive_listeners(str(tmp_path / "other.sock"))
    t.join(5)
    srv.close()
    with pytest.raises(OSError):
        receive_listeners(str(tmp_path / "missing.sock"))



def test_below_admin_reload_and_getsocks_are_refused_and_routing_keeps_the_level(tmp_path: Path) -> None:
    host = FakeHost()
    cli = MasterCli([MasterSocketSpec(str(tmp_path / "m.sock"), None, "operator")], host)
    cli.bind()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "m.sock"))
    _, out = pump(cli, client, b"reload; _getsocks; @1 clear counters\n")
    assert out.decode().split("\n\n")[:3] == ["Permission denied", "Permission denied", "routed"]
    assert host.reloads == [] and host.routed == [("1", ["clear", "counters"], "operator")]
    cli.close()
