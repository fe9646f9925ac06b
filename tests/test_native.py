"""``proxy.native``: the mypyc-compiled hot path and its Python fallback.

- A build that compiled the modules runs them compiled (a silently missing extension would put every
  worker on the fallback, twice as slow); ``POOLPROXY_PURE=1`` runs every one of them from source.
- ``setup.py`` compiles exactly ``COMPILED``, from a copy whose ``__slots__`` it removes.
- check.sh runs the unit tests once more under ``POOLPROXY_PURE=1`` (the fallback is tested, like the
  atomics' one); ``test_pure_proxy_serves`` runs a real proxy on the fallback here.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import RUNS_COMPILED, MakeProxy, Origin, free_port, http_get, proxy_config

from proxy import native

ROOT = Path(__file__).resolve().parent.parent


def _setup_module() -> object:
    spec = importlib.util.spec_from_file_location("poolproxy_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # setup.py calls setup() at import: give it a harmless command line and stop it there.
    argv, sys.argv = sys.argv, ["setup.py", "--name"]
    try:
        spec.loader.exec_module(module)
    finally:
        sys.argv = argv
    return module


def _imported(env: dict[str, str]) -> list[str]:
    code = (
        "import importlib, json\n"
        "from proxy import native\n"
        "for n in native.COMPILED: importlib.import_module(n)\n"
        "print(json.dumps(native.compiled()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return list(ast.literal_eval(out.stdout.strip()))


def _built() -> bool:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return any(p.name.endswith(suffixes) for p in (ROOT / "proxy").glob("stream.*"))


def test_setup_compiles_exactly_the_listed_modules() -> None:
    setup = _setup_module()
    assert setup.compiled_modules() == list(native.COMPILED)  # type: ignore[attr-defined]
    for name in native.COMPILED:
        assert (ROOT.joinpath(*name.split(".")).with_suffix(".py")).exists(), name


def test_slots_are_removed_from_the_compiled_copy_only_in_class_bodies() -> None:
    setup = _setup_module()
    source = (
        "class A:\n"
        "    __slots__ = (\n        'a',\n        'b',\n    )\n\n"
        "    def f(self) -> None:\n        __slots__ = 1\n\n"
        "class B(A):\n    __slots__ = ()\n    x = 1\n"
    )
    out = setup.without_slots(source)  # type: ignore[attr-defined]
    tree = ast.parse(out)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert [type(st).__name__ for st in classes[0].body] == ["Pass", "FunctionDef"]
    assert [type(st).__name__ for st in classes[1].body] == ["Pass", "Assign"]
    assert "__slots__ = 1" in out  # a local variable inside a method is not a class body


@pytest.mark.skipif(
    not _built() or os.environ.get("POOLPROXY_NO_EXT", "") not in ("", "0"),
    reason="the compiled modules are not built here (POOLPROXY_NO_EXT)",
)
def test_a_build_runs_every_listed_module_compiled() -> None:
    assert sorted(_imported({native.PURE_ENV: ""})) == sorted(native.COMPILED)


def test_pure_runs_every_listed_module_from_source() -> None:
    assert _imported({native.PURE_ENV: "1"}) == []


def test_this_test_process_says_how_it_runs() -> None:
    assert (_built() and not native.pure_requested()) == RUNS_COMPILED


@pytest.mark.e2e
def test_pure_proxy_serves(make_proxy: MakeProxy, origin: Origin) -> None:
    """A real proxy, master and worker, on the Python source (``POOLPROXY_PURE=1``): it serves, and
    ``-vv`` says which path it runs."""
    port = free_port()
    proxy = make_proxy(proxy_config(port, origin.port), ports=[port], workers=1, env={native.PURE_ENV: "1"})
    for _ in range(3):  # a fresh connection, then pooled ones
        assert http_get(port, "/").status == 200
    proxy.stop()
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "-vv"],
        env={**os.environ, native.PURE_ENV: "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "Hot path (proxy.native): Python source (POOLPROXY_PURE=1" in out.stdout, out.stdout
