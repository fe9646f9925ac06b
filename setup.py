"""Build and packaging metadata for poolproxy (the one place it is declared; pyproject.toml only
names the build backend and configures the tools).

The C extensions are built by default, and a failure to build one fails the install: a silently
missing extension would put every worker on a slower pure-Python fallback.

- ``proxy._atomic`` (``ext/atomic.c``): shared-memory atomics; fallback: the lock-guarded backend of
  ``proxy.atomics``.
- ``proxy._chunked`` (``ext/chunked.c``): the chunked-body scanner of ``proxy.h1.bodies``; fallback:
  ``scan_chunks_python`` there.
- ``proxy._h1head`` (``ext/h1head.c``): the head scanner of the ``native`` HTTP/1 engine
  (``proxy.h1.engine_native``); fallback: the ``llhttp`` engine becomes the default.
- ``proxy._peek`` (``ext/peek.c``): the ``MSG_PEEK`` look at a parked connection (``proxy.pidfd``);
  fallback: the same call through ctypes.

- The hot path's Python modules (``proxy.native.COMPILED``) compiled by mypyc (from the mypy
  package, a build requirement): the same source, about twice as fast; fallback: the ``.py`` files,
  also run by any process started with ``POOLPROXY_PURE=1``. mypyc classes cannot declare
  ``__slots__`` (they are fixed-layout already), so the build compiles a copy of the package with
  them removed (``build/mypyc-src``).

On a platform without a C compiler, set ``POOLPROXY_NO_EXT=1`` to install the pure-Python package
only.

    pip install -e .                    # development (builds proxy/_*.so in place)
    python setup.py build_ext --inplace # rebuild the extensions alone after editing ext/*.c
"""

from __future__ import annotations

import ast
import os
import re
import shutil
from pathlib import Path

from setuptools import Extension, find_namespace_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """``__version__`` from proxy/__init__.py, parsed rather than imported (the package need not
    be importable while it is being built)."""
    text = (HERE / "proxy" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("proxy/__init__.py does not define __version__")
    return match.group(1)


def extensions() -> list[Extension]:
    if os.environ.get("POOLPROXY_NO_EXT", "") not in ("", "0"):
        return []
    return [
        Extension(f"proxy._{name}", sources=[f"ext/{name}.c"], extra_compile_args=["-Wall", "-Wextra"])
        for name in ("atomic", "chunked", "h1head", "peek")
    ]


def compiled_modules() -> list[str]:
    """``COMPILED`` from proxy/native.py, parsed (the package is not imported while it is built)."""
    tree = ast.parse((HERE / "proxy" / "native.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "COMPILED":
            return list(ast.literal_eval(node.value))  # type: ignore[arg-type]
    raise RuntimeError("proxy/native.py does not define COMPILED")


def without_slots(source: str) -> str:
    """``source`` with every class-level ``__slots__ = ...`` statement replaced by ``pass``."""
    lines = source.splitlines(keepends=True)
    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for st in node.body:
                targets = st.targets if isinstance(st, ast.Assign) else []
                if any(isinstance(t, ast.Name) and t.id == "__slots__" for t in targets):
                    spans.append((st.lineno, st.end_lineno or st.lineno))
    for first, last in sorted(spans, reverse=True):
        line = lines[first - 1]
        lines[first - 1 : last] = [line[: len(line) - len(line.lstrip())] + "pass\n"]
    return "".join(lines)


def mypyc_extensions() -> list[Extension]:
    """The ``COMPILED`` modules built by mypyc from a slot-free copy of the package."""
    if os.environ.get("POOLPROXY_NO_EXT", "") not in ("", "0"):
        return []
    from mypyc.build import mypycify  # a build requirement (pyproject.toml)

    src = HERE / "build" / "mypyc-src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(HERE / "proxy", src / "proxy", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    paths = []
    for module in compiled_modules():
        path = src.joinpath(*module.split(".")).with_suffix(".py")
        path.write_text(without_slots(path.read_text(encoding="utf-8")), encoding="utf-8")
        paths.append(str(path.relative_to(HERE)))
    # group_name: the runtime library they share is the submodule proxy._mypyc__mypyc.
    return list(mypycify(paths, opt_level="3", group_name="proxy._mypyc"))


readme = HERE / "README.md"

setup(
    name="poolproxy",
    version=read_version(),
    description="Multi-process HTTP reverse proxy with HAProxy-style server-side connection pooling",
    long_description=readme.read_text(encoding="utf-8") if readme.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # Namespace-aware, so a subpackage without __init__.py is not silently left out of a wheel.
    packages=find_namespace_packages(include=["proxy", "proxy.*"], exclude=["*.__pycache__"]),
    package_data={"proxy": ["*.pyi", "py.typed"]},
    ext_modules=[*extensions(), *mypyc_extensions()],
    install_requires=[
        "mypy_extensions>=1.0",  # mypyc_attr, a no-op decorator at run time
        "uvloop>=0.19",
        "httptools>=0.6",
        "h11>=0.16",
        "h2>=4.1",
        "posix_ipc>=1.1",
        "prometheus_client>=0.16",  # the /metrics text format (proxy.prometheus)
    ],
    extras_require={"test": ["pytest", "pytest-timeout", "ruff", "mypy", "py-spy"]},
    entry_points={
        "console_scripts": ["poolproxy=proxy.main:main", "poolproxy-shmdump=proxy.shmdump:main"]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: C",
        "Operating System :: POSIX :: Linux",
        "Topic :: Internet :: Proxy Servers",
    ],
    zip_safe=False,
)
