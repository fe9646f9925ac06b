"""Which modules of the request's hot path are compiled by mypyc, and the switch that runs them as Python.

``COMPILED`` names the modules ``setup.py`` compiles with mypyc (``pip install .`` builds them; it
parses this tuple rather than importing the package). They are the per-request path of an HTTP/1
keep-alive exchange: the client mux, the stream, the backend and its pool, the server runtime and the
shared table's accounting, the server connection, the native HTTP/1 engine and the message types
(``docs/performance.md``: the same code runs about twice as fast compiled). The Python source stays
the reference and the fallback: an install without a C compiler (``POOLPROXY_NO_EXT=1``) runs it,
and so does any process started with ``POOLPROXY_PURE=1`` in its environment, which imports these
modules from their ``.py`` files even where the compiled ones are built (the tests run part of the
suite so: ``tests/test_native.py``).

A compiled module is the same module with two restrictions the code honours: its classes are
native (fixed attributes, as with ``__slots__``, which the build removes from the compiled copy;
``setup.py`` strips them), and a class subclassed by interpreted code (the tests' fakes) says so with
``mypyc_attr(allow_interpreted_subclasses=True)``.

``compiled()`` says which of them this process runs compiled (``poolproxy -vv`` prints it).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

COMPILED: tuple[str, ...] = (
    "proxy.message",
    "proxy.h1.writer",
    "proxy.h1.strict",
    "proxy.h1.engine_native",
    "proxy.h2.huffman",
    "proxy.h2.hpack_codec",
    "proxy.h2.frames",
    "proxy.h2.conn",
    "proxy.h2.guard",
    "proxy.h2.translate",
    "proxy.h2_side",
    "proxy.mux_h2",
    "proxy.slots",
    "proxy.slot_array",
    "proxy.front_counter",
    "proxy.pool_policy",
    "proxy.pool",
    "proxy.queue",
    "proxy.server",
    "proxy.server_conn",
    "proxy.session",
    "proxy.backend_h2",
    "proxy.backend",
    "proxy.frontend",
    "proxy.stream_rules",
    "proxy.stream",
    "proxy.env",
    "proxy.mux_h1",
    "proxy.client_mux",
    "proxy.admission",
)

PURE_ENV = "POOLPROXY_PURE"


class _SourceOnly:
    """A meta-path finder that loads the ``COMPILED`` modules from their ``.py`` source."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in COMPILED or not path:
            return None
        leaf = name.rpartition(".")[2] + ".py"
        for entry in path:
            source = os.path.join(entry, leaf)
            if os.path.exists(source):
                return importlib.util.spec_from_file_location(name, source)
        return None


def pure_requested() -> bool:
    """``POOLPROXY_PURE`` is set (and not 0) in this process's environment."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def install_pure_finder() -> bool:
    """Under ``POOLPROXY_PURE=1``, import the compiled modules from source; True if it did."""
    if not pure_requested():
        return False
    if not any(isinstance(f, _SourceOnly) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceOnly())
    return True


def compiled() -> list[str]:
    """The ``COMPILED`` modules this process has imported from a compiled extension."""
    out = []
    for name in COMPILED:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) or ""
        if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            out.append(name)
    return out
