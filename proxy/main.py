"""Command line: ``poolproxy`` / ``python -m proxy``, with HAProxy's flags.

``-f FILE|DIR`` (repeatable), ``-c`` (check the configuration and exit 0/1), ``-d`` (foreground,
debug: event lines on stderr), ``-p PIDFILE``, ``-q`` (quiet), ``-dW`` (zero-warning: a warning is
fatal), ``-v`` (version). Configuration warnings go to stderr as ``[WARNING]`` lines; with ``-c``
a configuration with warnings prints "Warnings were found." before "Configuration file is valid"
(HAProxy's output), both on stdout. ``-q`` or ``quiet`` silence warnings and the valid line (and
the master's start-up notices unless ``-d``); alerts are always printed. Without ``-d`` the master still
runs in the foreground (use systemd or a supervisor to daemonize; ``daemon`` in ``global`` is honoured
by forking once). Exit codes: 0 success, 1 configuration or start-up error.
"""

from __future__ import annotations

import argparse
import os
import sys

from proxy import __version__
from proxy.config import ConfigError, load
from proxy.log import set_quiet


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="poolproxy", description="HTTP reverse proxy with shared server-side pooling"
    )
    p.add_argument("-f", dest="files", action="append", default=[], metavar="FILE|DIR", help="configuration")
    p.add_argument("-c", dest="check", action="store_true", help="check the configuration and exit")
    p.add_argument("-d", dest="debug", action="store_true", help="foreground, debug output")
    p.add_argument("-D", dest="daemon", action="store_true", help="daemonize")
    p.add_argument("-p", dest="pidfile", metavar="PIDFILE", help="write the master's pid here")
    p.add_argument("-q", dest="quiet", action="store_true", help="quiet mode (with -c: print nothing)")
    p.add_argument("-dW", dest="zero_warning", action="store_true", help="zero-warning: warnings are fatal")
    p.add_argument("-v", "--version", action="version", version=f"poolproxy version {__version__}")
    p.add_argument("-vv", dest="build_info", action="store_true", help="version and build/run-time options")
    return p


def build_info() -> str:
    """``-vv``: what this build and this machine offer (HAProxy's ``-vv`` in spirit)."""
    from proxy import atomics, pidfd
    from proxy.h1 import bodies

    why = pidfd.probe_from_child()
    scope = pidfd.ptrace_scope()
    steal = (
        "pidfd_getfd (workers take idle connections directly)"
        if why is None
        else (f"SCM_RIGHTS channel ({why})")
    )
    lines = [
        f"poolproxy version {__version__}",
        f"Python {sys.version.split()[0]}; atomics backend: {atomics.BACKEND}"
        f" (available: {', '.join(atomics.AVAILABLE)}); chunked scanner: {bodies.CHUNK_BACKEND}",
        f"Idle connection stealing: {steal}; Yama ptrace_scope: {'none' if scope is None else scope};"
        f" {pidfd.ENV_VAR}={os.environ.get(pidfd.ENV_VAR, 'auto')}",
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
    if quiet and not args.debug:
        set_quiet()
    if (args.daemon or config.global_.daemon) and not args.debug:
        if os.fork() > 0:
            return 0
        os.setsid()
    from proxy.master import Master

    return Master(config, pidfile=args.pidfile).run()


if __name__ == "__main__":
    sys.exit(main())
