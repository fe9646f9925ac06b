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

On a platform without a C compiler, set ``POOLPROXY_NO_EXT=1`` to install the pure-Python package
only.

    pip install -e .                    # development (builds proxy/_*.so in place)
    python setup.py build_ext --inplace # rebuild the extensions alone after editing ext/*.c
"""

from __future__ import annotations

import os
import re
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
        for name in ("atomic", "chunked", "h1head")
    ]


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
    ext_modules=extensions(),
    install_requires=[
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
