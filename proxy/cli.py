"""The runtime API (HAProxy's CLI) on ``stats socket`` lines, served by the master.

Line protocol: one command line per connection (``;`` separates commands), or ``prompt`` mode (a
``> `` prompt, commands until ``quit``). Levels: ``user`` reads, ``operator`` may also clear
counters, ``admin`` may change state. Answers come from the shared table (``proxy.stats``); no
event loop, no HTTP code: the master's ``selectors`` loop drives the sockets.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy import server_admin, shmdump, stat_typed, stats
from proxy.config.address import SUN_PATH_MAX
from proxy.config.model import Config, StatsSocket
from proxy.shm import ShmTable

LEVELS = {"user": 0, "operator": 1, "admin": 2}


# The most descriptors one ``_getsocks`` answer passes (SCM_RIGHTS' limit is 253).
MAX_FDS = 253


def send_listeners(sock: socket.socket, listeners: list[socket.socket]) -> None:
    """``_getsocks``' answer (``-x``): the listening sockets' addresses as one JSON line, with the
    descriptors attached (SCM_RIGHTS); ``proxy.master_cli.receive_listeners`` reads it."""
    socks = listeners[:MAX_FDS]
    addrs = [list(s.getsockname()[:2]) for s in socks]
    sock.setblocking(True)
    sock.settimeout(5.0)
    with contextlib.suppress(OSError):
        socket.send_fds(sock, [json.dumps(addrs).encode() + b"\n"], [s.fileno() for s in socks])
    sock.setblocking(False)


@dataclass(frozen=True, slots=True)
class Command:
    words: tuple[str, ...]
    usage: str
    help: str
    level: int
    run: Callable[[Context, list[str]], str]


@dataclass(slots=True)
class Context:
    config: Config
    snapshot: Callable[[], dict[str, Any]]
    started: float
    level: int = 0
    clear_max: Callable[[], None] | None = None  # ``clear counters``: peaks back to current values
    table: Callable[[], ShmTable | None] = lambda: None  # the current generation's table (admin)
    listeners: Callable[[], list[socket.socket]] = list  # the listening sockets (``_getsocks``)


def _backend_arg(ctx: Context, args: list[str]) -> str | None:
    if args and args[0] not in ctx.config.backends:
        raise LookupError("Can't find backend.\n")
    return args[0] if args else None


def _servers_conn(ctx: Context, args: list[str]) -> str:
    return stats.show_servers_conn(ctx.snapshot(), ctx.config, _backend_arg(ctx, args))


def _servers_state(ctx: Context, args: list[str]) -> str:
    return stats.show_servers_state(ctx.snapshot(), ctx.config, _backend_arg(ctx, args))


_STAT_WORDS = ("json", "typed", "up", "no-maint", "desc")
# ``show stat``'s <type> bits: 1 frontends, 2 backends, 4 servers (a row's ``type``: 0, 1, 2)
_TYPE_BIT = {0: 1, 1: 2, 2: 4}


def _show_stat(ctx: Context, args: list[str]) -> str:
    """``show stat [domain proxy] [{<iid>|<proxy>} <type> <sid>] [json|typed] [desc] [up|no-maint]``
    (``desc``: accepted, no descriptions are added)."""
    rows = stats.stat_rows(ctx.snapshot(), ctx.config)
    rest = [a for a in args if a not in _STAT_WORDS]
    if rest[:2] == ["domain", "proxy"]:
        rest = rest[2:]
    if rest:
        if len(rest) != 3:
            return "Invalid arguments: expected <iid|proxy> <type> <sid>.\n"
        try:
            kind, sid = int(rest[1]), int(rest[2])
            iid = int(rest[0]) if rest[0].lstrip("-").isdigit() else None
        except ValueError:
            return "Invalid arguments: <type> and <sid> are numbers.\n"
        name = rest[0] if iid is None else None
        rows = [
            r for r in rows
            if (iid == -1 or r["iid"] == iid or r["pxname"] == name)
            and (kind == -1 or kind & _TYPE_BIT[r["type"]])
            and (sid == -1 or r["type"] != 2 or r["sid"] == sid)
        ]  # fmt: skip
    if "up" in args or "no-maint" in args:
        down = ("MAINT", "DOWN") if "up" in args else ("MAINT",)
        rows = [r for r in rows if r["type"] != 2 or r["status"] not in down]
    if "json" in args:
        return stat_typed.show_stat_json(rows)
    if "typed" in args:
        return stat_typed.show_stat_typed(rows)
    return stats.csv(rows)


def _show_info(ctx: Context, args: list[str]) -> str:
    """``show info [desc|json|typed|float]*`` (``desc`` and ``float`` change nothing here)."""
    pairs = stats.info_pairs(ctx.snapshot(), ctx.config, ctx.started)
    if "json" in args:
        return stat_typed.show_info_json(pairs)
    if "typed" in args:
        return stat_typed.show_info_typed(pairs)
    return "".join(f"{k}: {v}\n" for k, v in pairs)


def _clear_counters(ctx: Context, args: list[str]) -> str:
    if args:  # "clear counters all" resets cumulative counters too, which the workers own
        return "Not supported yet by poolproxy.\n"
    if ctx.clear_max is not None:
        ctx.clear_max()
    return ""


def _target(ctx: Context, name: str) -> server_admin.Target:
    """``backend/server`` resolved, or LookupError carrying HAProxy's refusal."""
    t = server_admin.resolve(ctx.config, ctx.table(), name)
    if isinstance(t, str):
        raise LookupError(t)
    return t


def _table(ctx: Context) -> ShmTable:
    table = ctx.table()
    if table is None:
        raise LookupError("No such server.\n")
    return table


SET_SERVER_USAGE = "usage: set server <backend>/<server> state | weight\n"


def _set_server(ctx: Context, args: list[str]) -> str:
    if not args:
        return "Require 'backend/server'.\n"
    t = _target(ctx, args[0])
    if len(args) < 2:
        return SET_SERVER_USAGE
    if args[1] == "state":
        return server_admin.set_state(_table(ctx), t, args[2] if len(args) > 2 else "")
    if args[1] == "weight":
        return server_admin.set_weight(_table(ctx), ctx.config, t, args[2] if len(args) > 2 else "")
    if args[1] in ("addr", "agent", "agent-addr", "agent-port", "agent-send", "check-addr", "check-port",
                   "fqdn", "health", "ssl"):  # fmt: skip
        return f"Not supported yet by poolproxy ('set server ... {args[1]}').\n"
    return SET_SERVER_USAGE


def _set_weight(ctx: Context, args: list[str]) -> str:
    """``set weight <bk>/<srv> <w>`` (HAProxy's deprecated spelling of ``set server ... weight``)."""
    t = _target(ctx, args[0] if args else "")
    return server_admin.set_weight(_table(ctx), ctx.config, t, args[1] if len(args) > 1 else "")


def _get_weight(ctx: Context, args: list[str]) -> str:
    t = _target(ctx, args[0] if args else "")
    return server_admin.get_weight(_table(ctx), t)


def _set_maxconn_server(ctx: Context, args: list[str]) -> str:
    t = _target(ctx, args[0] if args else "")
    return server_admin.set_maxconn(_table(ctx), t, args[1] if len(args) > 1 else "")


def _enable_server(ctx: Context, args: list[str]) -> str:
    t = _target(ctx, args[0] if args else "")
    return server_admin.set_state(_table(ctx), t, "ready")


def _disable_server(ctx: Context, args: list[str]) -> str:
    t = _target(ctx, args[0] if args else "")
    return server_admin.set_state(_table(ctx), t, "maint")


def _show_pools(ctx: Context, args: list[str]) -> str:
    return stats.show_pools(ctx.snapshot())


def _show_sess(ctx: Context, args: list[str]) -> str:
    return stats.show_sess(ctx.snapshot())


def _show_pool_table(ctx: Context, args: list[str]) -> str:
    snap = ctx.snapshot()
    return (shmdump.render_json(snap) if "json" in args else shmdump.render(snap)) + "\n"


def _show_cli_level(ctx: Context, args: list[str]) -> str:
    return {v: k for k, v in LEVELS.items()}[ctx.level] + "\n"


REGISTRY: list[Command] = [
    Command(("help",), "help [<command>]", "list all commands", 0, lambda c, a: help_text(c.level, a)),
    Command(("operator",), "operator", "lower the level of the current CLI session to operator", 0,
            lambda c, a: ""),
    Command(("user",), "user", "lower the level of the current CLI session to user", 0, lambda c, a: ""),
    Command(("prompt",), "prompt", "toggle interactive mode with prompt", 0, lambda c, a: ""),
    Command(("quit",), "quit", "disconnect", 0, lambda c, a: ""),
    Command(("show", "info"), "show info [desc|json|typed]*",
            "report information about the running process", 0, _show_info),
    Command(("show", "stat"), "show stat [{<iid>|<proxy>} <type> <sid>] [json|typed|up|no-maint]*",
            "report counters for each proxy and server", 0, _show_stat),
    Command(("show", "servers", "conn"), "show servers conn [<backend>]",
            "dump server connections status (all or for a single backend)", 0, _servers_conn),
    Command(("show", "servers", "state"), "show servers state [<backend>]",
            "dump volatile server information (all or for a single backend)", 0, _servers_state),
    Command(("show", "backend"), "show backend", "list backends in the current running config", 0,
            lambda c, a: stats.show_backend(c.config)),
    Command(("show", "pools"), "show pools", "report the idle connection pools, per server and worker",
            0, _show_pools),
    Command(("show", "sess"), "show sess", "report a summary of the current sessions, per worker", 0,
            _show_sess),
    Command(("show", "pool-table"), "show pool-table [json]",
            "dump the shared table (rows, cells, slots: shmdump)", 0, _show_pool_table),
    Command(("show", "cli", "level"), "show cli level", "display the level of the current CLI session",
            0, _show_cli_level),
    Command(("get", "weight"), "get weight <bk>/<srv>", "report a server's current weight", 0,
            _get_weight),
    Command(("clear", "counters"), "clear counters", "clear max statistics counters", 1,
            _clear_counters),
    Command(("set", "server"), "set server <bk>/<srv> [opts]", "change a server's state or weight", 2,
            _set_server),
    Command(("set", "weight"), "set weight <bk>/<srv>  (DEPRECATED)",
            "change a server's weight (use 'set server' instead)", 2, _set_weight),
    Command(("set", "maxconn", "server"), "set maxconn server <bk>/<srv>",
            "change a server's maxconn setting", 2, _set_maxconn_server),
    Command(("enable", "server"), "enable server  (DEPRECATED)",
            "enable a disabled server (use 'set server' instead)", 2, _enable_server),
    Command(("disable", "server"), "disable server (DEPRECATED)",
            "disable a server for maintenance (use 'set server' instead)", 2, _disable_server),
]  # fmt: skip


_EMPTY_LINE = "Unknown command. Please enter one of the following commands only:\n"


def help_text(level: int, words: list[str] | None = None, *, header: bool = True) -> str:
    """The commands ``level`` allows (those starting with ``words``, as ``help show`` asks)."""
    lines = ["The following commands are valid at this level:"] if header else []
    for c in REGISTRY:
        if c.level <= level and (not words or list(c.words[: len(words)]) == words):
            lines.append(f"  {c.usage:<39} : {c.help}")
    return "\n".join(lines) + "\n"


def split_commands(line: str) -> list[list[str]]:
    """One input line: ``;``-separated commands (``\\;`` escapes a semicolon), each split on blanks."""
    out: list[list[str]] = []
    cur = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            cur += line[i + 1]
            i += 2
            continue
        if ch == ";":
            out.append(cur.split())
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur.split())
    return [c for c in out if c]


def execute(ctx: Context, words: list[str]) -> str:
    """One command's answer (HAProxy's texts for unknown commands and refusals)."""
    best: Command | None = None
    for c in REGISTRY:
        if tuple(words[: len(c.words)]) == c.words and (best is None or len(c.words) > len(best.words)):
            best = c
    if best is None:
        return "Unknown command: '" + " ".join(words) + "'\n" + help_text(ctx.level)
    if best.level > ctx.level:
        return "Permission denied\n"
    try:
        return best.run(ctx, words[len(best.words):])
    except LookupError as e:
        return str(e)


@dataclass(slots=True)
class Session:
    """One CLI connection: its buffer, mode and idle deadline."""

    sock: socket.socket
    level: int
    deadline: float
    expose_fd: bool = False  # its socket says ``expose-fd listeners``
    buf: bytes = b""
    prompt: bool = False
    out: bytearray = field(default_factory=bytearray)

    def feed(self, ctx: Context, data: bytes) -> bool:
        """Consume ``data``; queue the answers; False when the connection should close."""
        self.buf += data
        while b"\n" in self.buf:
            raw, self.buf = self.buf.split(b"\n", 1)
            line = raw.decode("utf-8", "replace").rstrip("\r")
            ctx.level = self.level
            closing = not self.prompt
            commands = split_commands(line)
            if not commands:  # an empty line: HAProxy's answer
                self.out += (_EMPTY_LINE + help_text(self.level, header=False)).encode() + b"\n"
            for words in commands:
                if words in (["user"], ["operator"]):  # lower this session's level, never raise it
                    wanted = LEVELS[words[0]]
                    if wanted > self.level:
                        self.out += b"Permission denied\n\n"
                    else:
                        self.level = ctx.level = wanted
                        self.out += b"\n"
                    continue
                if words == ["prompt"]:
                    self.prompt = not self.prompt
                    closing = not self.prompt
                    continue
                if words == ["quit"]:
                    return False
                if words == ["_getsocks"]:  # ``-x``: only where ``expose-fd listeners`` allows it
                    if self.expose_fd and self.level >= LEVELS["admin"]:
                        send_listeners(self.sock, ctx.listeners())
                        return False
                    self.out += b"Permission denied\n\n"
                    continue
                self.out += execute(ctx, words).encode() + b"\n"  # HAProxy ends each answer so
            if closing:
                return False
            if self.prompt:
                self.out += b"> "
        return True


class CliServer:
    """The listening sockets and sessions; the master's selector calls ``on_*``."""

    def __init__(
        self,
        config: Config,
        snapshot: Callable[[], dict[str, Any]],
        clear_max: Callable[[], None] | None = None,
        table: Callable[[], ShmTable | None] | None = None,
    ) -> None:
        self.ctx = Context(config, snapshot, time.time(), clear_max=clear_max)
        if table is not None:
            self.ctx.table = table
        self.timeout = config.global_.stats_timeout or 10.0
        self.listeners: list[tuple[socket.socket, StatsSocket]] = []
        self.sessions: dict[int, Session] = {}

    def bind(self) -> None:
        for spec in self.ctx.config.global_.stats_sockets:
            # Bound and listening under a temporary name, then renamed into place: whoever sees the
            # path can connect (no ECONNREFUSED between bind and listen), and a socket left by a
            # previous run is replaced in one step, as HAProxy does. (Bound in place when the
            # temporary name would not fit in sun_path, 108 bytes.)
            tmp = f"{spec.path}.{os.getpid()}.tmp"
            if len(os.fsencode(tmp)) > SUN_PATH_MAX:
                tmp = spec.path
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # a leftover of ours, or (in place) the previous run's socket
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(tmp)
                if spec.mode is not None:
                    os.chmod(tmp, spec.mode)
                if spec.uid is not None or spec.gid is not None:
                    os.chown(tmp, -1 if spec.uid is None else spec.uid, -1 if spec.gid is None else spec.gid)
                s.listen(16)
                if tmp != spec.path:
                    os.rename(tmp, spec.path)
            except BaseException as exc:
                s.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                if isinstance(exc, OSError):  # named after the line's path (not the temporary one)
                    raise OSError(exc.errno, exc.strerror, spec.path) from exc
                raise
            s.setblocking(False)
            self.listeners.append((s, spec))

    def accept(self, lsock: socket.socket, spec: StatsSocket) -> Session | None:
        try:
            conn, _ = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.setblocking(False)
        sess = Session(conn, LEVELS[spec.level], time.monotonic() + self.timeout, spec.expose_fd)
        self.sessions[conn.fileno()] = sess
        return sess

    def readable(self, sess: Session) -> bool:
        """Read and answer; False when the session is over (the caller unregisters, then closes)."""
        try:
            data = sess.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        keep = bool(data) and sess.feed(self.ctx, data)
        sess.deadline = time.monotonic() + self.timeout
        self._flush(sess)
        return keep

    def _flush(self, sess: Session) -> None:
        if not sess.out:
            return
        sess.sock.setblocking(True)
        sess.sock.settimeout(self.timeout)
        with contextlib.suppress(OSError):
            sess.sock.sendall(bytes(sess.out))
        sess.out.clear()
        sess.sock.setblocking(False)

    def expired(self, now: float) -> list[Session]:
        return [s for s in self.sessions.values() if now >= s.deadline]

    def close_session(self, sess: Session) -> None:
        self.sessions.pop(sess.sock.fileno(), None)
        sess.sock.close()

    def close(self) -> None:
        for sess in list(self.sessions.values()):
            self.close_session(sess)
        for s, spec in self.listeners:
            s.close()
            with contextlib.suppress(OSError):
                os.unlink(spec.path)
        self.listeners.clear()
