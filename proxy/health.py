"""A server's health: check statuses, the rise/fall counter, the shared check record, the log lines.

Pure decisions plus one shared-memory view; no sockets, no event loop (``proxy.checks`` runs the
checks in the workers and carries these decisions out).

The counter (HAProxy's ``check->health``) runs from 0 to ``rise + fall - 1``; the server is UP while
it is at least ``rise``. A passed check raises it by one (a DOWN server reaching ``rise`` goes UP and
jumps to the top); a failed check lowers it by one while it is above ``rise``, and at ``rise`` (or
below, going up) a failure drops it to 0: DOWN. A checked server starts at ``rise``: UP, and DOWN
at its first failure, as in HAProxy. So from full health ``fall`` failures in a row take a server
DOWN, and ``rise`` passes in a row bring a DOWN one back.

Which interval comes next (``interval``): ``downinter`` while fully DOWN (counter 0), ``fastinter``
while going up or down, ``inter`` at full health (each defaulting to ``inter``).

The check record (one per server, in the shared table; ``proxy.shm`` places it), 16 words::

    0 owner (worker slot + 1 that runs the check; 0 = none: the next worker to look claims it)
    1 health   2 status (CheckStatus)   3 code (HTTP status of an L7 check, 0 none)
    4 duration_ms (-1 none)   5 info (errno of an L4 failure, 0 none)   6 last_check (CLOCK_REALTIME ns)
    7 last_change (CLOCK_REALTIME ns)   8 chk_fail (failed while UP)   9 chk_down   10 down_since
    (CLOCK_REALTIME ns, 0 while UP)   11 down_total (ns)   12 enabled (1: the server has 'check')
    13..15 zero

Only the owner writes words 1..11 (single writer); the owner word moves by compare-exchange (a
worker claims a free record) or is cleared by the master when the owner died (``release``). The
operational state the balancers read is the server row's ``oper_state`` (RUNNING / STOPPED),
written by the owner on each transition, apart from the admin state (maintenance).
"""

from __future__ import annotations

import enum
import errno as errno_mod
import os
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from proxy.atomics import Atomics
from proxy.config.model import HttpCheck, Server

CHECK_SIZE: Final = 128
K_OWNER, K_HEALTH, K_STATUS, K_CODE, K_DURATION, K_INFO, K_LAST_CHECK, K_LAST_CHANGE = range(0, 64, 8)
K_CHK_FAIL, K_CHK_DOWN, K_DOWN_SINCE, K_DOWN_TOTAL, K_ENABLED = range(64, 104, 8)
CHECK_FIELDS: Final = {
    "owner": K_OWNER, "health": K_HEALTH, "status": K_STATUS, "code": K_CODE, "duration": K_DURATION,
    "info": K_INFO, "last_check": K_LAST_CHECK, "last_change": K_LAST_CHANGE, "chk_fail": K_CHK_FAIL,
    "chk_down": K_CHK_DOWN, "down_since": K_DOWN_SINCE, "down_total": K_DOWN_TOTAL, "enabled": K_ENABLED,
}  # fmt: skip

OPER_STOPPED, OPER_RUNNING = 0, 2  # proxy.shm.OperState values (the row's oper_state word)


class CheckStatus(enum.IntEnum):
    """HAProxy's check statuses (``show stat``'s check_status), each with its description; the
    values are HAProxy's ``HCHK_STATUS_*`` numbers (``show servers state``'s srv_check_status)."""

    UNK = 0
    INI = 1
    SOCKERR = 5
    L4OK = 6
    L4TOUT = 7
    L4CON = 8
    L7TOUT = 12
    L7RSP = 13
    L7OK = 15  # HAProxy's L7OKD, shown as L7OK
    L7STS = 17

    @property
    def desc(self) -> str:
        return _DESC[self]

    @property
    def passed(self) -> bool:
        return self in (CheckStatus.L4OK, CheckStatus.L7OK)

    @property
    def result(self) -> int:
        """HAProxy's ``CHK_RES_*`` (``show servers state``'s srv_check_result): 0 unknown, 2
        failed, 3 passed."""
        if self in (CheckStatus.UNK, CheckStatus.INI):
            return 0
        return 3 if self.passed else 2


_DESC: Final = {
    CheckStatus.UNK: "Unknown", CheckStatus.INI: "Initializing", CheckStatus.SOCKERR: "Socket error",
    CheckStatus.L4OK: "Layer4 check passed", CheckStatus.L4TOUT: "Layer4 timeout",
    CheckStatus.L4CON: "Layer4 connection problem", CheckStatus.L7TOUT: "Layer7 timeout",
    CheckStatus.L7RSP: "Layer7 invalid response", CheckStatus.L7OK: "Layer7 check passed",
    CheckStatus.L7STS: "Layer7 wrong status",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome: status, HTTP code (L7), errno (L4 failures), duration."""

    status: CheckStatus
    duration_ms: int
    code: int = 0
    info_errno: int = 0

    @property
    def info(self) -> str:
        return result_info(self.status, self.code, self.info_errno)


def result_info(status: CheckStatus, code: int, info_errno: int) -> str:
    """The ``info`` HAProxy shows: the connect error, or the reason phrase of a wrong status."""
    if info_errno:
        return os.strerror(info_errno)
    if status is CheckStatus.L7STS and code:
        try:
            return HTTPStatus(code).phrase
        except ValueError:
            return ""
    return ""


class Transition(enum.Enum):
    UP = "UP"
    DOWN = "DOWN"


# ---- the counter ---------------------------------------------------------------------------------


def is_up(health: int, rise: int) -> bool:
    return health >= rise


def after_check(health: int, rise: int, fall: int, passed: bool) -> tuple[int, Transition | None]:
    """The counter after one check, and the transition it caused (see the module doc)."""
    top = rise + fall - 1
    if passed:
        if health >= top:
            return top, None
        if health + 1 == rise:
            return top, Transition.UP
        return health + 1, None
    if health > rise:
        return health - 1, None
    # at rise (UP) a failure takes it DOWN; going up, a failure starts the climb again
    return 0, Transition.DOWN if health == rise else None


def status_text(health: int, rise: int, fall: int) -> str:
    """``show stat``'s status of a checked server: UP, DOWN, or the way there (``UP 1/3``: one
    more failure of three... ``DOWN 1/2``: one pass of two)."""
    top = rise + fall - 1
    if health >= rise:
        return "UP" if health >= top else f"UP {health - rise + 1}/{fall}"
    return "DOWN" if health <= 0 else f"DOWN {health}/{rise}"


def interval(srv: Server, health: int) -> float:
    """Seconds to wait before the next check of ``srv`` whose counter is ``health``."""
    if health <= 0:
        return srv.downinter or srv.inter
    if health < srv.rise + srv.fall - 1:
        return srv.fastinter or srv.inter
    return srv.inter


def first_delay(srv: Server, position: int, count: int) -> float:
    """The first check of the ``position``-th of ``count`` checked servers of a backend is spread
    over one ``inter``, so that a backend's checks never start all at once."""
    return srv.inter * position / max(count, 1)


def spread(seconds: float, percent: int, draw: float) -> float:
    """``spread-checks``: ``seconds`` moved by up to ``percent`` % either way; ``draw`` in [0, 1)."""
    return seconds * (1 + percent * (2 * draw - 1) / 100)


# ---- HTTP checks ---------------------------------------------------------------------------------


def http_request(chk: HttpCheck, host: str) -> bytes:
    """The request an HTTP check sends: ``Connection: close``, so the answer ends at the close."""
    lines = [f"{chk.method} {chk.uri} {chk.version}"]
    names = {name.lower() for name, _ in chk.headers}
    if chk.version == "HTTP/1.1" and "host" not in names:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in chk.headers]
    if "connection" not in names:
        lines.append("Connection: close")
    if chk.body:
        lines.append(f"Content-Length: {len(chk.body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + chk.body).encode("latin-1")


_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\r?\n")


def parse_status(head: bytes) -> int | None:
    """The status code of a response's first line, None if it is not an HTTP/1.x status line."""
    m = _STATUS_LINE.match(head)
    return int(m.group(1)) if m else None


def _status_in(code: int, spec: str) -> bool:
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if int(lo) <= code <= int(hi or lo):
            return True
    return False


def judge_http(chk: HttpCheck, response: bytes) -> tuple[CheckStatus, int]:
    """The verdict on an HTTP check's ``response`` (all bytes read until the close, or the cap):
    ``(status, code)``. Without ``expect``, 2xx and 3xx pass."""
    code = parse_status(response)
    if code is None:
        return CheckStatus.L7RSP, 0
    if chk.expect is None:
        return (CheckStatus.L7OK if 200 <= code < 400 else CheckStatus.L7STS), code
    kind, negated, pattern = chk.expect
    if kind in ("status", "rstatus"):
        hit = _status_in(code, pattern) if kind == "status" else bool(re.search(pattern, str(code)))
        return (CheckStatus.L7OK if hit != negated else CheckStatus.L7STS), code
    _, _, body = response.partition(b"\r\n\r\n")
    text = body.decode("latin-1")
    hit = pattern in text if kind == "string" else bool(re.search(pattern, text))
    return (CheckStatus.L7OK if hit != negated else CheckStatus.L7RSP), code


# ---- the shared record ---------------------------------------------------------------------------


class CheckRecord:
    """Server ``index``'s check record in the shared table (see the module doc)."""

    __slots__ = ("_a", "_base", "index")

    def __init__(self, a: Atomics, base: int, index: int) -> None:
        self._a = a
        self._base = base
        self.index = index

    def load(self, off: int) -> int:
        return self._a.load(self._base + off)

    def init(self, srv: Server, owner: int, now_ns: int) -> None:
        """The master, at creation: the server's counter at ``rise`` (UP), its first owner."""
        a, b = self._a, self._base
        a.store(b + K_ENABLED, 1 if srv.check else 0)
        a.store(b + K_HEALTH, srv.rise)
        a.store(b + K_STATUS, CheckStatus.INI)
        a.store(b + K_DURATION, -1)
        a.store(b + K_LAST_CHANGE, now_ns)
        a.store(b + K_OWNER, owner + 1 if srv.check else 0)

    def changed(self, now_ns: int) -> None:
        """The server's state changed by the runtime API (``lastchg`` counts from now)."""
        self._a.store(self._base + K_LAST_CHANGE, now_ns)

    @property
    def owner(self) -> int:
        """The worker slot running the check, -1 when none."""
        return self.load(K_OWNER) - 1

    def claim(self, slot: int) -> bool:
        """Take a free record (its owner died); True if ``slot`` owns it now."""
        cur = self.load(K_OWNER)
        if cur == slot + 1:
            return True
        return cur == 0 and self._a.compare_exchange(self._base + K_OWNER, 0, slot + 1)

    def release(self, slot: int) -> bool:
        """The master, after reaping ``slot``: free its record for another worker to claim."""
        return self._a.compare_exchange(self._base + K_OWNER, slot + 1, 0)

    def apply(self, srv: Server, result: CheckResult, now_ns: int) -> Transition | None:
        """The owner, after a check: counters, status and the transition (the caller moves the
        row's oper_state and logs)."""
        a, b = self._a, self._base
        before = a.load(b + K_HEALTH)
        health, change = after_check(before, srv.rise, srv.fall, result.status.passed)
        a.store(b + K_HEALTH, health)
        a.store(b + K_STATUS, result.status)
        a.store(b + K_CODE, result.code)
        a.store(b + K_DURATION, result.duration_ms)
        a.store(b + K_INFO, result.info_errno)
        a.store(b + K_LAST_CHECK, now_ns)
        if not result.status.passed and is_up(before, srv.rise):  # HAProxy counts failures while UP
            a.fetch_add(b + K_CHK_FAIL, 1)
        if change is Transition.DOWN:
            a.fetch_add(b + K_CHK_DOWN, 1)
            a.store(b + K_DOWN_SINCE, now_ns)
            a.store(b + K_LAST_CHANGE, now_ns)
        elif change is Transition.UP:
            since = a.load(b + K_DOWN_SINCE)
            if since:
                a.fetch_add(b + K_DOWN_TOTAL, now_ns - since)
            a.store(b + K_DOWN_SINCE, 0)
            a.store(b + K_LAST_CHANGE, now_ns)
        return change

    def snapshot(self) -> dict[str, int]:
        return {k: self.load(off) for k, off in CHECK_FIELDS.items()}

    def __repr__(self) -> str:
        s = self.snapshot()
        status = CheckStatus(s["status"]).name
        return f"<CheckRecord {self.index} owner={s['owner'] - 1} health={s['health']} {status}>"


# ---- log lines (HAProxy's wording) ---------------------------------------------------------------


def _reason(result: CheckResult) -> str:
    text = f"reason: {result.status.desc}"
    if result.code:
        text += f", code: {result.code}"
    info = result.info
    if info:
        text += f', info: "{info}"'
    return text + f", check duration: {result.duration_ms}ms"


def transition_line(backend: str, server: str, change: Transition, result: CheckResult,
                    active: int, backup: int, *, is_backup: bool = False, queued: int = 0,
                    sessions: int = 0) -> str:  # fmt: skip
    """``[Backup ]Server BE/SRV is DOWN|UP, reason: ..., check duration: Nms. N active and M backup
    servers left|online.[ Running on backup.] ...`` as HAProxy 2.6 logs it."""
    state = "left" if change is Transition.DOWN else "online"
    text = f"{active} active and {backup} backup servers {state}."
    if active == 0 and backup > 0:
        text += " Running on backup."
    if change is Transition.DOWN:
        text += f" {sessions} sessions active, 0 requeued, {queued} remaining in queue."
    else:
        text += f" 0 sessions requeued, {queued} total in queue."
    who = "Backup Server" if is_backup else "Server"
    return f"{who} {backend}/{server} is {change.value}, {_reason(result)}. {text}"


def check_line(backend: str, server: str, result: CheckResult, health: int, rise: int, fall: int) -> str:
    """``option log-health-checks``: ``Health check for server BE/SRV failed|succeeded, ...``."""
    verdict = "succeeded" if result.status.passed else "failed"
    up = is_up(health, rise)
    shown = health - rise + 1 if up else health
    state = f"{shown}/{fall if up else rise} {'UP' if up else 'DOWN'}"
    return f"Health check for server {backend}/{server} {verdict}, {_reason(result)}, status: {state}."


def no_server_line(backend: str, quoted: bool = False) -> str:
    """HAProxy's alert when a backend's last server went DOWN (quoted on stderr, not in the log)."""
    name = f"'{backend}'" if quoted else backend
    return f"backend {name} has no server available!"


def connect_errno(exc: BaseException) -> int:
    """The errno of a failed connect (ECONNREFUSED...), 0 if it carries none."""
    return exc.errno if isinstance(exc, OSError) and exc.errno else errno_mod.EIO
