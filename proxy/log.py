"""HAProxy-style logging: the ``option httplog`` line, and where log lines go.

The line reads like HAProxy's HTTP log format::

    127.0.0.1:41234 [26/Nov/2026:10:00:00.123] fe be/s1 0/0/1/2/3 200 135 - - ---- \
        1/1/0/0/0 0/0 "GET / HTTP/1.1"

fields: client ip:port, accept date, frontend, backend/server, Tq/Tw/Tc/Tr/Ta (ms; -1 when the phase
did not happen), status, bytes sent to the client, captured cookies (-), termination state (2
letters + 2 cookie letters), actconn/feconn/beconn/srv_conn/retries, srv_queue/backend_queue, and
the request line. Targets follow HAProxy's ``log`` keyword: ``stdout``/``stderr``, ``/path`` (a Unix
datagram syslog socket), ``host[:port]`` (UDP syslog, default port 514), each with its facility,
levels and format (``LogSink``).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass

from proxy.config.address import parse_log_address
from proxy.config.model import LogTarget

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


FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2", "ftp", "ntp",
    "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip  (the index is the syslog facility code)
LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")  # index: severity


@dataclass(slots=True)
class _Target:
    """One ``log`` line of ``global``, ready to send: where, how (``format``), what (levels)."""

    fd: int  # stdout/stderr: 1 or 2; -1 for a socket
    sock: socket.socket | None
    addr: str | tuple[str, int] | None
    facility: int
    max_level: int  # messages less severe than this are not sent (HAProxy's <max level>)
    min_level: int  # messages more severe than this are capped to this level (<min level>)
    format: str
    length: int


class LogSink:
    """Sends finished lines to every configured target (HAProxy's ``log`` lines of ``global``); never
    raises on the hot path.

    Each message has a level (request lines: ``info``). A target whose ``<max level>`` is more
    severe drops it (Debian's stock ``log /dev/log local1 notice`` gets no request lines); one
    with a ``<min level>`` sends a more severe message at that level instead. The header follows
    the target's ``format``: ``local`` (the default: RFC 3164 without a host name), ``rfc3164``
    (the default when ``log-send-hostname`` is set), ``rfc5424``, ``priority`` (``<PRI>``),
    ``short`` (``<severity>``), ``timed`` and ``iso`` (with an ISO date), ``raw`` (the line
    alone); ``len`` truncates."""

    def __init__(
        self, targets: list[LogTarget | str], tag: str = "poolproxy", hostname: str | None = None
    ) -> None:
        self.tag = tag
        self.hostname = hostname
        self.targets: list[_Target] = []
        for spec in targets:
            if isinstance(spec, str):
                spec = LogTarget(target=spec)
            kind, family, where = spec.address or parse_log_address(spec.target)
            fd, sock, addr_ = -1, None, None
            if kind == "fd":
                fd = where
            else:
                try:
                    sock, addr_ = socket.socket(family, socket.SOCK_DGRAM), where
                except OSError as exc:  # e.g. IPv6 disabled on the host: this target only is lost
                    warning(f"log target '{spec.target}' unusable: {exc}")
                    continue
                sock.setblocking(False)
            self.targets.append(_Target(
                fd, sock, addr_, FACILITIES.index(spec.facility or "local0"),
                LEVELS.index(spec.level or "debug"), LEVELS.index(spec.minlevel or "emerg"),
                spec.format or ("rfc3164" if hostname else "local"), spec.length or 1024,
            ))  # fmt: skip

    @property
    def enabled(self) -> bool:
        return bool(self.targets)

    def wants(self, level: str) -> bool:
        """Whether any target takes a message of ``level`` (to skip formatting one nobody takes)."""
        sev = LEVELS.index(level)
        return any(sev <= t.max_level for t in self.targets)

    def _frame(self, t: _Target, sev: int, line: str) -> str:
        pri = t.facility * 8 + sev
        fmt = t.format
        if fmt == "raw":
            return line
        if fmt == "short":
            return f"<{sev}>{line}"
        if fmt == "priority":
            return f"<{pri}>{line}"
        if fmt in ("timed", "iso", "rfc5424"):
            iso = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            iso = iso[:-2] + ":" + iso[-2:]
            if fmt == "timed":
                return f"<{sev}>{iso} {line}"
            if fmt == "iso":
                return f"{iso} {line}"
            return f"<{pri}>1 {iso} {self.hostname or '-'} {self.tag} {os.getpid()} - - {line}"
        host = f"{self.hostname} " if fmt == "rfc3164" and self.hostname else ""
        return f"<{pri}>{time.strftime('%b %e %H:%M:%S')} {host}{self.tag}[{os.getpid()}]: {line}"

    def emit(self, line: str, level: str = "info") -> None:
        sev = LEVELS.index(level)
        for t in self.targets:
            if sev > t.max_level:
                continue
            msg = self._frame(t, max(sev, t.min_level), line)[: t.length]
            try:
                if t.fd >= 0:
                    os.write(t.fd, (msg + "\n").encode())
                elif t.sock is not None and t.addr is not None:
                    t.sock.sendto(msg.encode(), t.addr)
            except Exception:  # a log line must never break the request that made it
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
