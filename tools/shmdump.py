"""Kept for old command lines: ``python -m tools.shmdump`` runs ``proxy.shmdump`` (installed as the
``poolproxy-shmdump`` console script)."""

from __future__ import annotations

import sys

from proxy.shmdump import find_newest, main, open_table, render, render_json

__all__ = ["find_newest", "main", "open_table", "render", "render_json"]

if __name__ == "__main__":
    sys.exit(main())
