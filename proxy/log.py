"""HAProxy-style logging: the ``option httplog`` line, and where log lines go.

The line reads like HAProxy's HTTP log format::

    127.0.0.1:41234 [26/Nov/2026:10:00:00.123] fe be/s1 0/0/1/2/3 200 135 - - ---- \
        1/1/0/0/0 0/0 "GET / HTTP/1.1"

fields: client ip:port, accept date, frontend, backend/server, Tq/Tw/Tc/Tr/Ta (ms; -1 when the phase
did not happen), status, bytes sent to the client, captured cookies (-), termination state (2
letters + 2 cookie letters), actconn/feconn/beconn/srv_conn/retries, srv_queue/backend_queue, and
the request line. Targets follow HAProxy's ``log`` keyword: ``stdout``/``stderr`` (raw lines),
``/path`` (a Unix datagram syslog socket), ``host[:port]`` (UDP syslog, default port 514), with an
RFC 3164 header (facility local0, level info) for syslog targets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def accept_date(ts: float) -> str:
    t = time.localtime(ts)
    ms = int((ts - int(ts)) * 1000)
    day = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}"
    return f"{day}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms:03d}"


@dataclass(slots=True)
class HttpLogRecord:
    client: str
    accept_ts: float
    frontend: str
    backend: str
    server: str
    tq: int
    tw: int
    tc: int
    tr: int
    ta: int
    status: int
    bytes_out: int
    term: str
    actconn: int
    feconn: int
    beconn: int
    srv_conn: int
    retries: int
    request_line: str
    redispatched: bool = False  # ``%rc`` shows ``+N`` when a retry went to another server (HAProxy)


def format_httplog(r: HttpLogRecord) -> str:
    retries = f"+{r.retries}" if r.redispatched else r.retries
    return (
        f"{r.client} [{accept_date(r.accept_ts)}] {r.frontend} {r.backend}/{r.server} "
        f"{r.tq}/{r.tw}/{r.tc}/{r.tr}/{r.ta} {r.status} {r.bytes_out} - - {r.term:-<4} "
        f'{r.actconn}/{r.feconn}/{r.beconn}/{r.srv_conn}/{retries} 0/0 "{r.request_line}"'
    )


class LogSink:
    """Sends finished lines to every configured target; never raises on the hot path. Syslog
    targets get an RFC 3164 header: ``<134>Mmm dd hh:mm:ss [hostname ]tag[pid]: `` (``log-tag``,
    ``log-send-hostname``)."""

    def __init__(self, targets: list[str], tag: str = "poolproxy", hostname: str | None = None) -> None:
        self.tag = tag
        self.host = f"{hostname} " if hostname else ""
        self.raw: list[int] = []
        self.dgram: list[tuple[socket.socket, str | tuple[str, int]]] = []
        for t in targets:
            if t in ("stdout", "stderr"):
                self.raw.append(1 if t == "stdout" else 2)
            elif t.startswith("/"):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                s.setblocking(False)
                self.dgram.append((s, t))
            else:
                host, _, port = t.rpartition(":") if ":" in t else (t, "", "514")
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setblocking(False)
                self.dgram.append((s, (host or t, int(port or 514))))

    @property
    def enabled(self) -> bool:
        return bool(self.raw or self.dgram)

    def emit(self, line: str) -> None:
        for fd in self.raw:
            with contextlib.suppress(OSError):
                os.write(fd, (line + "\n").encode())
        if self.dgram:
            stamp = time.strftime("%b %d %H:%M:%S")
            msg = f"<134>{stamp} {self.host}{self.tag}[{os.getpid()}]: {line}".encode()
            for s, addr in self.dgram:
                try:
                    s.sendto(msg, addr)
                except OSError:
                    pass


_QUIET = [False]


def set_quiet(quiet: bool = True) -> None:
    """``quiet``: from now on ``notice`` prints nothing in this process (and the ones it forks)."""
    _QUIET[0] = quiet


def notice(msg: str) -> None:
    """A master/worker event line on stderr, HAProxy-style: ``[NOTICE]   (pid) : message``."""
    if _QUIET[0]:
        return
    sys.stderr.write(f"[NOTICE]   ({os.getpid()}) : {msg}\n")
    sys.stderr.flush()


def warning(msg: str) -> None:
    if _QUIET[0]:
        return
    sys.stderr.write(f"[WARNING]  ({os.getpid()}) : {msg}\n")
    sys.stderr.flush()


def alert(msg: str) -> None:
    sys.stderr.write(f"[ALERT]    ({os.getpid()}) : {msg}\n")
    sys.stderr.flush()
