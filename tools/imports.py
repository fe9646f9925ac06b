"""The import graph among the ``proxy.*`` modules, its cycles and the modules' sizes, read statically.

    python -m tools.imports [--package DIR] [--json]

Every ``*.py`` file under the package is parsed (``ast``, nothing is imported or run). Each
``import proxy.x`` / ``from proxy.x import y`` / relative import of a package module becomes an edge,
classified by where the statement sits:

- runtime: executed when the module is imported: at module level, also inside module-level ``try``,
  ``with``, ``for``, class bodies, any ``if`` other than ``if TYPE_CHECKING:`` (its ``else`` counts);
- TYPE_CHECKING: under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): only type checkers follow it;
- deferred: inside a function body: runs when the function is first called, not at import.

``from pkg import name`` is an edge to ``pkg.name`` when that is a module (or a compiled extension,
shown as ``(native)``), otherwise to ``pkg``. The implicit import of a module's parent packages
(``import proxy.h1.writer`` runs ``proxy/h1/__init__.py`` first) is not an edge: a package importing
its own submodules would otherwise always look like a cycle.

Printed: per module its line count (physical lines) and its imports of each kind, plus who imports it
at runtime; then the cycles: strongly connected components of more than one module (Tarjan), first
over the runtime edges only, then runtime + TYPE_CHECKING, then with the deferred edges too, each
component with one shortest cycle through it and the line of every import on it. Exit status 1 if a
runtime cycle exists, else 0.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("runtime", "TYPE_CHECKING", "deferred")


@dataclass
class Module:
    name: str
    path: Path | None  # None: a compiled extension
    lines: int = 0
    # kind -> imported module -> line numbers of the import statements
    imports: dict[str, dict[str, list[int]]] = field(default_factory=lambda: {k: {} for k in KINDS})


def discover(package_dir: Path) -> dict[str, Module]:
    """Every module of the package (``.py`` files, and compiled extensions as native modules)."""
    root_name = package_dir.name
    modules: dict[str, Module] = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(package_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        with open(path, "rb") as f:
            lines = sum(1 for _ in f)
        modules[name] = Module(name, path, lines)
    for pattern in ("*.so", "*.pyi"):
        for path in package_dir.rglob(pattern):
            rel = path.relative_to(package_dir.parent)
            parts = [*rel.parts[:-1], path.name.split(".", 1)[0]]
            name = ".".join(parts)
            if name not in modules and name.startswith(root_name):
                modules[name] = Module(name, None)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _resolve(base: str, modules: dict[str, Module]) -> str | None:
    """`base` if it is a module of the package, else its longest prefix that is; None if outside."""
    parts = base.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: Module, modules: dict[str, Module]) -> Iterable[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            found = _resolve(alias.name, modules)
            if found is not None:
                yield found
        return
    if node.level:  # relative: from the module's package (a package's own __init__ is its package)
        assert module.path is not None
        pkg = module.name.split(".")
        if module.path.name != "__init__.py":
            pkg.pop()
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join([*pkg, node.module] if node.module else pkg)
    else:
        base = node.module or ""
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in modules:
            yield sub
        else:
            found = _resolve(base, modules)
            if found is not None:
                yield found


def scan(module: Module, modules: dict[str, Module]) -> None:
    """Fill module.imports from its source."""
    assert module.path is not None
    tree = ast.parse(module.path.read_bytes(), str(module.path))

    def visit(node: ast.AST, kind: str) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _targets(node, module, modules):
                if target != module.name:
                    module.imports[kind].setdefault(target, []).append(node.lineno)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, "TYPE_CHECKING")
            for stmt in node.orelse:
                visit(stmt, kind)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and kind == "runtime":
            kind = "deferred"
        for child in ast.iter_child_nodes(node):
            visit(child, kind)

    visit(tree, "runtime")


def sccs(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative), each sorted; only those of 2+ nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = []
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work.append((root, iter(sorted(edges.get(root, ())))))
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def shortest_cycle(comp: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through comp[0] inside the component (BFS), as a node list ending where it starts."""
    inside = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(edges.get(node, ())):
            if nxt not in inside:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return [start]


def edge_map(modules: dict[str, Module], kinds: tuple[str, ...]) -> dict[str, set[str]]:
    return {name: {t for k in kinds for t in m.imports[k]} for name, m in modules.items()}


def _where(modules: dict[str, Module], src: str, dst: str, kinds: tuple[str, ...]) -> str:
    for kind in kinds:
        lines = modules[src].imports[kind].get(dst)
        if lines:
            tag = "" if kind == "runtime" else f" ({kind})"
            return f"{src}:{lines[0]}{tag}"
    return src


def report(modules: dict[str, Module]) -> tuple[str, bool]:
    """The printed report, and whether a runtime cycle exists."""
    out: list[str] = []
    names = sorted(modules)
    total = sum(m.lines for m in modules.values())
    out.append(f"{len(names)} modules, {total} lines (static, from the AST)")
    out.append("")
    importers: dict[str, list[str]] = {n: [] for n in names}
    for m in modules.values():
        for target in m.imports["runtime"]:
            importers[target].append(m.name)
    width = max(len(n) for n in names)
    for name in names:
        m = modules[name]
        size = "(native)" if m.path is None else f"{m.lines} lines"
        out.append(f"{name:{width}}  {size}")
        for kind in KINDS:
            if m.imports[kind]:
                out.append(f"    {kind + ':':15}{', '.join(sorted(m.imports[kind]))}")
        if importers[name]:
            out.append(f"    {'imported by:':15}{', '.join(sorted(importers[name]))}")
    out.append("")
    out.append("lines per package (its __init__ and direct modules):")
    packages: dict[str, int] = {}
    for m in modules.values():
        pkg = m.name if m.path is not None and m.path.name == "__init__.py" else m.name.rpartition(".")[0]
        packages[pkg] = packages.get(pkg, 0) + m.lines
    for pkg in sorted(packages):
        out.append(f"    {pkg:{width}}  {packages[pkg]}")
    out.append("")
    runtime_cycle = False
    tiers = (("runtime",), ("runtime", "TYPE_CHECKING"), KINDS)
    for kinds in tiers:
        edges = edge_map(modules, kinds)
        comps = sccs(names, edges)
        label = " + ".join(kinds)
        out.append(f"cycles over {label} imports: {len(comps) or 'none'}")
        for comp in comps:
            cycle = shortest_cycle(comp, edges)
            hops = [_where(modules, a, b, kinds) for a, b in itertools.pairwise(cycle)]
            out.append(f"  component of {len(comp)}: {', '.join(comp)}")
            out.append(f"    e.g. {' -> '.join(hops)} -> {cycle[-1]}")
        if kinds == ("runtime",) and comps:
            runtime_cycle = True
    return "\n".join(out), runtime_cycle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--package", type=Path, default=ROOT / "proxy", help="package directory (default: proxy/)"
    )
    ap.add_argument("--json", action="store_true", help="print the graph as JSON instead")
    args = ap.parse_args()
    modules = discover(args.package.resolve())
    for m in modules.values():
        if m.path is not None:
            scan(m, modules)
    text, runtime_cycle = report(modules)
    if args.json:
        names = sorted(modules)
        data = {
            "modules": {
                n: {"lines": modules[n].lines, "native": modules[n].path is None, **modules[n].imports}
                for n in names
            },
            "cycles": {
                "+".join(kinds): sccs(names, edge_map(modules, kinds))
                for kinds in (("runtime",), ("runtime", "TYPE_CHECKING"), KINDS)
            },
        }
        print(json.dumps(data, indent=1, sort_keys=True))
    else:
        print(text)
    return 1 if runtime_cycle else 0


if __name__ == "__main__":
    sys.exit(main())
