"""Layers import downward only (STYLE.md habit 3): checked on a fresh interpreter per module.

From the bottom up:

- **core** — config, message model, HTTP/1 parsers and writer, pool policy and pool, balancing,
  ACLs, shm layout, the mux/stream interfaces: imports no event loop and no module above it;
- **state** — a server's runtime and accounting, a client session: no event loop, nothing above;
- **adapters** — the I/O edges: listeners, the muxes, the takeover channel and donor: nothing of the
  orchestration;
- **orchestration** — stream, backend, frontend, queue, environment, worker, master.

And the master imports no HTTP code (it runs no event loop; workers import theirs after the fork).
Plus a static check over the whole package: no import cycle, counting the imports made for type
checking too (a cycle there is still two modules that each need the other to be understood).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "proxy"

CORE = [
    "proxy.config",
    "proxy.message",
    "proxy.native",
    "proxy.h1",
    "proxy.h1.writer",
    "proxy.pool",
    "proxy.pool_policy",
    "proxy.balance",
    "proxy.acl",
    "proxy.shm",
    "proxy.health",
    "proxy.retry",
    "proxy.sides",
    "proxy.log",
    "proxy.atomics",
    "proxy.slots",
    "proxy.slot_array",
    "proxy.front_counter",
    "proxy.limits",
    "proxy.privileges",
    "proxy.replies",
    "proxy.logformat",
    "proxy.rules",
    "proxy.admission",
    "proxy.stats",
    "proxy.stat_typed",
    "proxy.server_admin",
    "proxy.shmdump",
    "proxy.prometheus",
    "proxy.stats_page",
    "proxy.cli",
    "proxy.master_cli",
    "proxy.daemon",
    "proxy.server_h2_msg",
    "proxy.h2_handover",
    "proxy.h2",
    "proxy.h2.translate",
    "proxy.h2.guard",
    "proxy.h2.huffman",
    "proxy.h2.hpack_codec",
    "proxy.h2.frames",
    "proxy.h2.conn",
    "proxy.h2.engine",
    "proxy.tls",
    "proxy.reloads",
]
STATE = ["proxy.server", "proxy.session"]
ADAPTERS = [
    "proxy.acceptor",
    "proxy.listener",
    "proxy.mux_h1",
    "proxy.mux_h2",
    "proxy.h2_side",
    "proxy.client_mux",
    "proxy.server_conn",
    "proxy.server_h2",
    "proxy.server_tls",
    "proxy.takeover",
    "proxy.donor",
    "proxy.pidfd",
    "proxy.steal",
    "proxy.checks",
    "proxy.sdnotify",
    "proxy.control",
]
ORCHESTRATION = [
    "proxy.stream",
    "proxy.stream_rules",
    "proxy.backend",
    "proxy.backend_h2",
    "proxy.frontend",
    "proxy.queue",
    "proxy.env",
    "proxy.services",
    "proxy.worker",
    "proxy.generation",
    "proxy.purge",
    "proxy.master",
]
EVENT_LOOP = {"asyncio", "uvloop"}
HTTP = {
    "proxy.h1",
    "proxy.mux_h1",
    "proxy.mux_h2",
    "proxy.client_mux",
    "proxy.h2",
    "proxy.stream",
    "proxy.server_conn",
    "proxy.server_h2",
    "proxy.server_h2_msg",
    "proxy.backend",
    "proxy.backend_h2",
    "proxy.frontend",
    "proxy.donor",
    "uvloop",
}


def imported_by(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", CORE)
def test_core_imports_no_event_loop_and_nothing_above(module: str) -> None:
    above = EVENT_LOOP | set(STATE) | set(ADAPTERS) | set(ORCHESTRATION)
    assert not (imported_by(module) & above)


@pytest.mark.parametrize("module", STATE)
def test_state_imports_no_event_loop_and_nothing_above(module: str) -> None:
    assert not (imported_by(module) & (EVENT_LOOP | set(ADAPTERS) | set(ORCHESTRATION)))


@pytest.mark.parametrize("module", ADAPTERS)
def test_adapters_import_no_orchestration(module: str) -> None:
    assert not (imported_by(module) & set(ORCHESTRATION))


def test_master_imports_no_http_code() -> None:
    assert not (imported_by("proxy.master") & HTTP)


def test_every_module_has_a_layer() -> None:
    """A new module must be placed in a layer (and so be checked by the tests above).

    Regression: the package itself was listed as "outside" with its submodules, which placed every
    module (``proxy.x`` starts with ``proxy.``); packages are now matched with their submodules,
    the entry points only by name."""
    placed = set(CORE) | set(STATE) | set(ADAPTERS) | set(ORCHESTRATION)
    outside = {"proxy", "proxy.main", "proxy.__main__", "proxy._atomic", "proxy._chunked"}  # entry points, C
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        # (outside names are exact: "proxy" itself must not place every proxy.* module)
        if name in outside or any(name == p or name.startswith(p + ".") for p in placed):
            continue
        pytest.fail(f"{name} is in no layer of tests/test_layers.py")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The ``proxy.*`` modules a file imports, those under ``if TYPE_CHECKING:`` included
    (``from package import submodule`` counts as importing the submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("proxy"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("proxy"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def test_no_import_cycles() -> None:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    known = set(paths)
    graph = {name: {m for m in imports_of(path, known) if m != name} for name, path in paths.items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state and dep in graph:
                walk(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
