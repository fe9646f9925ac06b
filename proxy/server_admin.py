"""A server's runtime-settable state in the shared table: admin state, weight, maxconn.

The runtime API (``proxy.cli``) changes these words of a server's row (``proxy.shm``); every worker
reads them on each decision (``ServerRuntime.pickable``/``usable``, the balancer's weights, the
``maxconn`` slots), so a change reaches all workers at once, without a message.

Semantics follow HAProxy 2.6 (``set server``, ``set weight``, ``set maxconn server``):

- ``ready`` clears FMAINT and FDRAIN; ``drain`` sets FDRAIN and clears FMAINT (no new request picks
  the server by balancing; sessions already on it may go on using it); ``maint`` sets FMAINT and
  clears FDRAIN (nothing is sent to it; each worker's sweep closes its idle connections). The
  operational state follows what HAProxy shows without health checks: STOPPED in maintenance,
  RUNNING otherwise (a health checker, when configured, owns it instead).
- ``weight N`` is absolute (0..256), ``N%`` relative to the configured (initial) weight, capped at
  256. A static algorithm (``source``) only accepts ``0%`` and ``100%``.
- ``maxconn N`` replaces the server's limit (0 = none).

Every function answers HAProxy's text: an empty string on success, else the refusal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from proxy.config.model import Config, Server
from proxy.shm import R_ADMIN_STATE, R_MAXCONN, R_OPER_STATE, R_WEIGHT, AdminState, OperState, ShmTable

MAX_WEIGHT = 256
STATIC_ALGOS = frozenset({"source"})  # HAProxy's map-based (non-dynamic) algorithms among ours
STATES = ("ready", "drain", "maint")


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved ``<backend>/<server>``: the row index and the configured server."""

    index: int
    backend: str
    cfg: Server


def resolve(config: Config, table: ShmTable | None, name: str) -> Target | str:
    """``backend/server`` to a target, or HAProxy's refusal text."""
    be, _, srv = name.partition("/")
    if not srv:
        return "Require 'backend/server'.\n"
    proxy = config.backends.get(be)
    if proxy is None:
        return "No such backend.\n"
    cfg = next((s for s in proxy.servers if s.name == srv), None)
    if cfg is None or table is None:
        return "No such server.\n"
    return Target(table.server_index(be, srv), be, cfg)


def set_state(table: ShmTable, target: Target, state: str) -> str:
    if state not in STATES:
        return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"
    row = table.row(target.index)
    before = AdminState(row.admin_state)
    admin = before & ~(AdminState.FMAINT | AdminState.FDRAIN)
    admin |= {"ready": AdminState.READY, "drain": AdminState.FDRAIN, "maint": AdminState.FMAINT}[state]
    row.store(R_ADMIN_STATE, admin)
    if admin != before:  # HAProxy's lastchg / srv_time_since_last_change restart
        table.check(target.index).changed(time.time_ns())
    maint = bool(admin & (AdminState.FMAINT | AdminState.CMAINT))
    row.store(R_OPER_STATE, OperState.STOPPED if maint else OperState.RUNNING)
    return ""


def parse_weight(text: str, initial: int, static: bool) -> int | str:
    """``N`` or ``N%`` to an absolute weight, or HAProxy's refusal text."""
    relative = text.endswith("%")
    digits = text[:-1] if relative else text
    if not text:
        return "Require <weight> or <weight%>.\n"
    try:
        w = int(digits)
    except ValueError:
        return "Empty weight string empty or preceded by garbage"
    if relative:
        if w < 0:
            return "Relative weight must be positive.\n"
        w = min(initial * w // 100, MAX_WEIGHT)
    elif not 0 <= w <= MAX_WEIGHT:
        return "Absolute weight can only be between 0 and 256 inclusive.\n"
    if static and w not in (0, initial):
        return "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'.\n"
    return w


def set_weight(table: ShmTable, config: Config, target: Target, text: str) -> str:
    static = config.backends[target.backend].balance in STATIC_ALGOS
    w = parse_weight(text, target.cfg.weight, static)
    if isinstance(w, str):
        return w
    table.row(target.index).store(R_WEIGHT, w)
    table.bump_runtime_version()
    return ""


def get_weight(table: ShmTable, target: Target) -> str:
    return f"{table.row(target.index).weight} (initial {target.cfg.weight})\n"


def set_maxconn(table: ShmTable, target: Target, text: str) -> str:
    if not text:
        return "Require <maxconn>.\n"
    try:
        n = int(text)
    except ValueError:
        return "maxconn string empty or preceded by garbage"
    table.row(target.index).store(R_MAXCONN, max(n, 0))
    table.bump_runtime_version()
    return ""
