"""The master CLI (HAProxy's ``-S`` socket): processes, reload, and routing to the runtime API.

``-S PATH[,mode,M][,level,L]...`` (``unix@PATH`` too) binds a Unix stream socket served by the master's
``selectors`` loop, at level admin unless ``level`` says otherwise (below admin, ``reload`` and
``_getsocks`` are refused and routed commands run at that level). HAProxy's line protocol: one
command line per connection (``;`` separates commands), or ``prompt`` mode with a ``master> `` prompt
until ``quit``. Commands:

- ``show proc``: HAProxy's table (``#<PID> <type> <reloads> <uptime> <version>``, each column padded
  to 15): the master with its reload count and ``[failed: N]``, ``# workers`` (the current generation,
  one line per worker), ``# old workers`` (earlier generations still draining; ``reloads`` is how many
  reloads a worker has lived through), ``# programs`` (none), then, after a failed reload,
  ``# last reload failed:`` and its error lines;
- ``reload``: reload as SIGUSR2 does; the answer waits for the outcome: ``Success=1`` once the new
  generation accepts, or ``Success=0``, ``--`` and the reason (the configuration's errors); the
  running generation keeps serving either way;
- ``@N <command>`` / ``@!PID <command>`` / ``@master <command>``: one runtime API command (``show
  info``, ``show stat``, ...) for worker N of the current generation (1-based: ``show proc``'s order),
  any worker by pid (old ones included), or the master itself. poolproxy's runtime API is served by
  the master from the shared table, so a routed command is answered from the table and configuration
  of **that worker's generation**: an old worker's view is its old generation's;
- ``_getsocks``: the listening sockets, passed with SCM_RIGHTS, for ``-x`` (``receive_listeners`` is
  the client side): one datagram-like message whose data is the JSON list of their addresses;
- ``help``, ``prompt``, ``quit``.

No event loop, no HTTP code: the master implements ``Host`` and drives the sockets.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from proxy import __version__
from proxy.cli import MAX_FDS, send_listeners, split_commands

PROMPT = b"master> "
TIMEOUT = 60.0  # an idle master CLI connection is closed after this


@dataclass(frozen=True, slots=True)
class MasterSocketSpec:
    path: str
    mode: int | None = None
    level: str = "admin"


def parse_master_socket(arg: str) -> MasterSocketSpec:
    """``-S``'s argument: ``[unix@]PATH`` then ``,``-separated ``option,value`` pairs."""
    parts = arg.split(",")
    path = parts[0].removeprefix("unix@")
    if not path or "@" in parts[0].removeprefix("unix@").split("/", 1)[0]:
        raise ValueError(f"-S {arg}: only a Unix socket path is supported (PATH or unix@PATH)")
    mode: int | None = None
    level = "admin"
    opts = parts[1:]
    i = 0
    while i < len(opts):
        key = opts[i]
        if i + 1 >= len(opts):
            raise ValueError(f"-S {arg}: '{key}' expects a value")
        value = opts[i + 1]
        if key == "mode":
            try:
                mode = int(value, 8)
            except ValueError:
                raise ValueError(f"-S {arg}: mode expects an octal number, not '{value}'") from None
        elif key == "level":
            if value not in ("user", "operator", "admin"):
                raise ValueError(f"-S {arg}: unknown level '{value}'")
            level = value
        elif key not in ("user", "group", "uid", "gid"):
            raise ValueError(f"-S {arg}: unknown option '{key}'")
        i += 2
    return MasterSocketSpec(path, mode, level)


@dataclass(frozen=True, slots=True)
class ProcLine:
    """One process in ``show proc``."""

    pid: int
    kind: str  # "master" | "worker"
    reloads: int
    started: float  # time.time() at its start
    old: bool = False
    failed: int = 0  # the master's failed reloads


class Host(Protocol):
    """What the master offers its CLI."""

    def processes(self) -> list[ProcLine]: ...

    def reload_error(self) -> str: ...

    def request_reload(self, done: Callable[[bool, str], None]) -> None: ...

    def route(self, target: str, words: list[str], level: str) -> str: ...

    def listening_sockets(self) -> list[socket.socket]: ...


def uptime(seconds: float) -> str:
    up = max(0, int(seconds))
    d, rem = divmod(up, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{d}d{h:02d}h{m:02d}m{s:02d}s"


def _cols(*values: object) -> str:
    return " ".join(f"{v!s:<15}" for v in values)


def show_proc(procs: list[ProcLine], reload_error: str = "", now: float | None = None) -> str:
    """HAProxy 2.6's ``show proc`` table from plain data."""
    now = time.time() if now is None else now
    out = [_cols("#<PID>", "<type>", "<reloads>", "<uptime>", "<version>")]
    for p in procs:
        if p.kind == "master":
            out.append(_cols(p.pid, "master", f"{p.reloads} [failed: {p.failed}]", uptime(now - p.started),
                             __version__))  # fmt: skip
    out.append("# workers")
    out += [_cols(p.pid, "worker", p.reloads, uptime(now - p.started), __version__)
            for p in procs if p.kind == "worker" and not p.old]  # fmt: skip
    old = [p for p in procs if p.kind == "worker" and p.old]
    if old:
        out.append("# old workers")
        out += [_cols(p.pid, "worker", p.reloads, uptime(now - p.started), __version__) for p in old]
    out.append("# programs")
    if reload_error:
        out.append("# last reload failed:")
        out += [f"#   {line}" for line in reload_error.splitlines()]
    return "\n".join(out) + "\n"


COMMANDS = (
    ("@!<pid>", "send a command to the <pid> process"),
    ("@<relative pid>", "send a command to the <relative pid> process"),
    ("@master", "send a command to the master process"),
    ("reload", "reload poolproxy (check the configuration, start a new generation of workers)"),
    ("show proc", "show processes status"),
    ("show version", "show version of the current process"),
    ("help [<command>]", "list matching or all commands"),
    ("prompt", "toggle interactive mode with prompt"),
    ("quit", "disconnect"),
)


def help_text() -> str:
    lines = ["The following commands are valid at this level:"]
    lines += [f"  {usage:<39} : {text}" for usage, text in COMMANDS]
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class MasterSession:
    sock: socket.socket
    deadline: float
    buf: bytes = b""
    prompt: bool = False
    level: str = "admin"
    waiting: bool = False  # a reload answer is pending: input waits in ``buf``
    closing: bool = False
    out: bytearray = field(default_factory=bytearray)


class MasterCli:
    """The ``-S`` sockets and their sessions. ``closer`` is called for a session the CLI ends by
    itself (after a deferred reload answer); the master unregisters and closes it."""

    def __init__(self, specs: list[MasterSocketSpec], host: Host) -> None:
        self.specs = specs
        self.host = host
        self.listeners: list[socket.socket] = []
        self.sessions: dict[int, MasterSession] = {}
        self.closer: Callable[[MasterSession], None] = self.close_session

    def bind(self) -> None:
        for spec in self.specs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spec.path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(spec.path)
                if spec.mode is not None:
                    os.chmod(spec.path, spec.mode)
                s.listen(16)
            except OSError as exc:
                s.close()
                raise OSError(exc.errno, f"{spec.path}: {exc.strerror}") from exc
            s.setblocking(False)
            self.listeners.append(s)

    def accept(self, lsock: socket.socket) -> MasterSession | None:
        try:
            conn, _ = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.setblocking(False)
        spec = next((sp for s, sp in zip(self.listeners, self.specs, strict=False) if s is lsock), None)
        sess = MasterSession(conn, time.monotonic() + TIMEOUT, level=spec.level if spec else "admin")
        self.sessions[conn.fileno()] = sess
        return sess

    def readable(self, sess: MasterSession) -> bool:
        """Read and answer; False when the session is over (the caller unregisters and closes it)."""
        try:
            data = sess.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            return sess.waiting  # a half-closed client still gets its reload answer
        sess.buf += data
        sess.deadline = time.monotonic() + TIMEOUT
        self._process(sess)
        self._flush(sess)
        return not sess.closing

    def _process(self, sess: MasterSession) -> None:
        while not sess.waiting and not sess.closing and b"\n" in sess.buf:
            raw, sess.buf = sess.buf.split(b"\n", 1)
            line = raw.decode("utf-8", "replace").rstrip("\r")
            for words in split_commands(line):
                if words == ["prompt"]:
                    sess.prompt = not sess.prompt
                    continue
                if words == ["quit"]:
                    sess.closing = True
                    return
                if words in (["_getsocks"], ["reload"]) and sess.level != "admin":
                    sess.out += b"Permission denied\n\n"
                    continue
                if words == ["_getsocks"]:
                    self._send_sockets(sess)
                    sess.closing = True
                    return
                if words == ["reload"]:
                    sess.waiting = True
                    self.host.request_reload(functools.partial(self._reloaded, sess))
                    return  # the commands after it run once it is answered
                sess.out += self.execute(words, sess.level).encode() + b"\n"
            if not sess.prompt:
                sess.closing = True
                return
            sess.out += PROMPT

    def _reloaded(self, sess: MasterSession, ok: bool, why: str) -> None:
        if sess.sock.fileno() < 0:
            return
        sess.waiting = False
        sess.out += b"Success=1\n" if ok else f"Success=0\n--\n{why.rstrip()}\n".encode()
        sess.out += b"\n"
        if not sess.prompt:
            sess.closing = True
        else:
            sess.out += PROMPT
            self._process(sess)
        self._flush(sess)
        if sess.closing:
            self.closer(sess)

    def execute(self, words: list[str], level: str = "admin") -> str:
        head = words[0]
        if head.startswith("@"):
            target = head[1:]
            rest = words[1:]
            if not rest:
                return "Missing command after the target.\n"
            if target == "master":
                return self.execute(rest, level)
            try:
                return self.host.route(target, rest, level)
            except LookupError:
                return f"Can't find the target PID matching the prefix '{head}'\n"
        if words == ["show", "proc"]:
            return show_proc(self.host.processes(), self.host.reload_error())
        if words == ["show", "version"]:
            return f"{__version__}\n"
        if head == "help":
            return help_text()
        return "Unknown command: '" + " ".join(words) + "'\n" + help_text()

    def _send_sockets(self, sess: MasterSession) -> None:
        send_listeners(sess.sock, self.host.listening_sockets())

    def _flush(self, sess: MasterSession) -> None:
        if not sess.out:
            return
        sess.sock.setblocking(True)
        sess.sock.settimeout(5.0)
        with contextlib.suppress(OSError):
            sess.sock.sendall(bytes(sess.out))
        sess.out.clear()
        sess.sock.setblocking(False)

    def expired(self, now: float) -> list[MasterSession]:
        return [s for s in self.sessions.values() if now >= s.deadline and not s.waiting]

    def close_session(self, sess: MasterSession) -> None:
        self.sessions.pop(sess.sock.fileno(), None)
        sess.sock.close()

    def close(self) -> None:
        for sess in list(self.sessions.values()):
            self.close_session(sess)
        for s, spec in zip(self.listeners, self.specs, strict=False):
            s.close()
            with contextlib.suppress(OSError):
                os.unlink(spec.path)
        self.listeners.clear()


def receive_listeners(path: str, timeout: float = 5.0) -> list[socket.socket]:
    """``-x PATH``: the listening sockets of the process whose master CLI is at ``path``.
    Raises OSError (or ValueError on a garbled answer) with the reason."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"_getsocks\n")
        data, fds, _, _ = socket.recv_fds(s, 65536, MAX_FDS)
    socks = [socket.socket(fileno=fd) for fd in fds]
    try:
        addrs = json.loads(data.decode() or "null")
    except ValueError:
        addrs = None
    if not isinstance(addrs, list) or len(addrs) != len(socks):
        for sock in socks:
            sock.close()
        raise ValueError(f"{path}: no listening sockets in the answer (is it a poolproxy master CLI?)")
    out = []
    for sock in socks:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            sock.close()
            continue
        out.append(sock)
    return out
