"""Layers import downward only (STYLE.md habit 3): checked on a fresh interpreter per module.

- the pure core (config, message model, HTTP/1 parsers, pool policy, balancing, ACLs, shm layout)
  imports no event loop and none of the I/O or orchestration modules;
- the master imports no HTTP code (it runs no event loop; workers import theirs after the fork).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = [
    "proxy.config",
    "proxy.message",
    "proxy.h1",
    "proxy.h1.writer",
    "proxy.pool",
    "proxy.pool_policy",
    "proxy.balance",
    "proxy.acl",
    "proxy.shm",
]
IO_AND_ABOVE = {
    "asyncio",
    "uvloop",
    "proxy.listener",
    "proxy.mux_h1",
    "proxy.server_conn",
    "proxy.takeover",
    "proxy.stream",
    "proxy.backend",
    "proxy.frontend",
    "proxy.worker",
    "proxy.master",
}
HTTP = {
    "proxy.h1",
    "proxy.mux_h1",
    "proxy.stream",
    "proxy.server_conn",
    "proxy.backend",
    "proxy.frontend",
    "uvloop",
}


def imported_by(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", PURE)
def test_pure_core_imports_no_io(module: str) -> None:
    assert not (imported_by(module) & IO_AND_ABOVE)


def test_master_imports_no_http_code() -> None:
    assert not (imported_by("proxy.master") & HTTP)
