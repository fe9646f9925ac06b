"""A stand-in for ``python -m proxy`` whose workers of generation 2 and later die before READY while
the file named by ``$FAIL_NEW_WORKERS`` exists (tests/test_reload.py: a reload whose new workers
cannot start is aborted, the running generation keeps serving). Everything else is the real proxy."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from proxy import main as real_main


def worker(slot: int, config: Any, listeners: Any, ctl: socket.socket, ppid: int, table: Any) -> None:
    marker = os.environ.get("FAIL_NEW_WORKERS", "")
    if table.generation >= 2 and marker and os.path.exists(marker):
        os._exit(3)
    from proxy.worker import run

    run(slot, config, listeners, ctl, ppid, table)


if __name__ == "__main__":
    import proxy.master

    original = proxy.master.Master.__init__

    def init(self: proxy.master.Master, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.worker_entry = "tests.ops_failing_worker:worker"

    proxy.master.Master.__init__ = init  # type: ignore[method-assign]
    sys.exit(real_main.main())
