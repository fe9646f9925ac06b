"""Command line: ``poolproxy`` / ``python -m proxy``, with HAProxy's flags.

``-f FILE|DIR`` (repeatable), ``-c`` (check the configuration and exit 0/1), ``-d`` (foreground,
debug: event lines on stderr), ``-db`` (foreground: no daemon whatever ``daemon`` says), ``-D``
(daemon), ``-W`` (master-worker: always the case), ``-Ws`` (master-worker with systemd's notify
protocol), ``-S PATH[,mode,M,...]`` (master CLI socket, repeatable), ``-sf PID...`` / ``-st PID...``
(take over from an old process: once our workers accept, it is told to soft-stop (SIGUSR1) or to
stop (SIGTERM); these take every argument after them, as in HAProxy), ``-x SOCKET`` (receive the
old process's listening sockets from its master CLI socket instead of binding them again),
``-p PIDFILE``, ``-q`` (quiet), ``-dW`` (zero-warning: a warning is fatal), ``-v`` (version),
``-vv`` (version and build facts).

Configuration warnings go to stderr as ``[WARNING]`` lines; with ``-c`` a configuration with
warnings prints "Warnings were found." before "Configuration file is valid" (HAProxy's output),
both on stdout. ``-q`` or ``quiet`` silence warnings and the valid line (and the master's start-up
notices unless ``-d``); alerts are always printed. ``-D`` (or ``daemon``, unless ``-d``/``-db``/``-Ws``)
forks once: the parent returns only when the master has bound its listeners (exit 0) or failed
(exit 1, its ``[ALERT]`` line printed), and the master then leaves the terminal (``setsid``, stdio on
/dev/null). Exit codes: 0 success, 1 configuration or start-up error (one ``[ALERT]`` line, never a
traceback), including a bad command line.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from importlib import metadata
from typing import NoReturn

from proxy import __version__
from proxy.config import ConfigError, load
from proxy.daemon import Detacher
from proxy.log import alert, set_quiet, warning
from proxy.master import Options


class _Parser(argparse.ArgumentParser):
    """HAProxy exits 1 on a bad command line, with an alert, rather than argparse's 2."""

    def error(self, message: str) -> NoReturn:
        print(f"[ALERT] {message} (usage: poolproxy -f FILE [options], see -h)", file=sys.stderr)
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="poolproxy", description="HTTP reverse proxy with shared server-side pooling", allow_abbrev=False
    )
    p.add_argument("-f", dest="files", action="append", default=[], metavar="FILE|DIR", help="configuration")
    p.add_argument("-c", dest="check", action="store_true", help="check the configuration and exit")
    p.add_argument("-d", dest="debug", action="store_true", help="foreground, debug output")
    p.add_argument("-db", dest="no_daemon", action="store_true", help="foreground, whatever 'daemon' says")
    p.add_argument("-D", dest="daemon", action="store_true", help="daemonize once the listeners are bound")
    p.add_argument("-W", dest="master_worker", action="store_true", help="master-worker mode (always on)")
    p.add_argument("-Ws", dest="systemd", action="store_true", help="master-worker with systemd notify")
    p.add_argument("-S", dest="master_sockets", action="append", default=[], metavar="PATH[,opt,val...]",
                   help="master CLI socket")  # fmt: skip
    p.add_argument("-sf", dest="soft_pids", nargs="*", type=int, metavar="PID",
                   help="soft-stop these old processes once ready")  # fmt: skip
    p.add_argument("-st", dest="hard_pids", nargs="*", type=int, metavar="PID",
                   help="stop these old processes once ready")  # fmt: skip
    p.add_argument("-x", dest="sockets_from", metavar="SOCKET",
                   help="get the listening sockets from an old process's master CLI socket")  # fmt: skip
    p.add_argument("-p", dest="pidfile", metavar="PIDFILE", help="write the master's pid here")
    p.add_argument("-q", dest="quiet", action="store_true", help="quiet mode (with -c: print nothing)")
    p.add_argument("-dW", dest="zero_warning", action="store_true", help="zero-warning: warnings are fatal")
    p.add_argument("-v", "--version", action="version", version=f"poolproxy version {__version__}")
    p.add_argument("-vv", dest="build_info", action="store_true", help="version and build/run-time options")
    return p


def _version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def build_info() -> str:
    """``-vv``: what this build and this machine offer (HAProxy's ``-vv`` in spirit)."""
    import importlib

    from proxy import atomics, h1, native, pidfd
    from proxy.h1 import bodies

    for name in native.COMPILED:
        importlib.import_module(name)
    fast = len(native.compiled())
    if fast == len(native.COMPILED):
        hot = f"compiled by mypyc ({fast} modules)"
    else:
        reason = f"{native.PURE_ENV}=1" if native.pure_requested() else "not built"
        hot = f"Python source ({reason}; {fast} of {len(native.COMPILED)} modules compiled)"

    why = pidfd.probe_from_child()
    scope = pidfd.ptrace_scope()
    steal = (
        "pidfd_getfd (workers take idle connections directly)"
        if why is None
        else (f"SCM_RIGHTS channel ({why})")
    )
    libs = ", ".join(f"{d} {_version_of(d)}" for d in ("uvloop", "h2", "httptools", "h11", "posix_ipc"))
    lines = [
        f"poolproxy version {__version__}",
        f"Running on: Python {sys.version.split()[0]} ({sys.implementation.name}), {os.uname().sysname}"
        f" {os.uname().release} {os.uname().machine}",
        f"Libraries: {libs}",
        f"Shared table: atomics backend: {atomics.BACKEND} (available: {', '.join(atomics.AVAILABLE)});"
        f" chunked scanner: {bodies.CHUNK_BACKEND}",
        f"Hot path (proxy.native): {hot}",
        f"Available HTTP/1 engines (tune.h1-engine): {', '.join(h1.ENGINES)} (default {h1.DEFAULT})",
        f"Idle connection stealing: {steal}; Yama ptrace_scope: {'none' if scope is None else scope};"
        f" {pidfd.ENV_VAR}={os.environ.get(pidfd.ENV_VAR, 'auto')}",
        "Master-worker: always; systemd notify (-Ws): built in, no dependency;"
        f" SO_REUSEPORT: {'available' if hasattr(socket, 'SO_REUSEPORT') else 'missing'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.build_info:
        print(build_info())
        return 0
    if not args.files:
        print("[ALERT] no configuration file given (use -f FILE|DIR)", file=sys.stderr)
        return 1
    try:
        config = load(args.files, zero_warning=args.zero_warning)
    except ConfigError as exc:
        for msg in exc.lines:
            print(msg, file=sys.stderr)
        print("[ALERT] config: Fatal errors found in configuration.", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"[ALERT] config: cannot open configuration: {exc}", file=sys.stderr)
        return 1
    quiet = args.quiet or config.global_.quiet
    if not quiet:
        for msg in config.warnings:
            print(msg, file=sys.stderr)
    if args.check:
        if not quiet:
            if config.warnings:
                print("Warnings were found.")
            print("Configuration file is valid")
        return 0
    try:
        options = _options(args)
    except ValueError as exc:
        alert(str(exc))
        return 1
    if quiet and not args.debug:
        set_quiet()
    daemon = (args.daemon or config.global_.daemon) and not (args.debug or args.no_daemon or args.systemd)
    detacher = Detacher() if daemon else None
    if detacher is not None:
        code = detacher.fork()
        if code is not None:
            return code  # the parent: the master bound its listeners (0) or failed (1)
        options.started = detacher.detach
    from proxy.master import Master

    return Master(config, options=options).run()


def _options(args: argparse.Namespace) -> Options:
    """The master's options from the command line; ValueError (an alert) on a bad one."""
    from proxy.master_cli import parse_master_socket, receive_listeners

    opts = Options(files=args.files, zero_warning=args.zero_warning, pidfile=args.pidfile,
                   systemd=args.systemd)  # fmt: skip
    opts.master_sockets = [parse_master_socket(a) for a in args.master_sockets]
    if args.soft_pids and args.hard_pids:
        raise ValueError("-sf and -st are exclusive")
    opts.takeover_pids = [p for p in (args.soft_pids or args.hard_pids or []) if p != os.getpid()]
    opts.takeover_signal = signal.SIGTERM if args.hard_pids else signal.SIGUSR1
    if args.sockets_from:
        try:
            opts.inherited = receive_listeners(args.sockets_from)
        except (OSError, ValueError) as exc:  # HAProxy goes on and binds them itself
            warning(f"Failed to get the sockets from the old process ({args.sockets_from}): {exc}")
    return opts


if __name__ == "__main__":
    sys.exit(main())
