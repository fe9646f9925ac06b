"""proxy.worker.tune_gc: what a worker does to the cyclic collector before it serves."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import gc, sys
from proxy.worker import tune_gc
before = gc.get_threshold()
tune_gc(sys.argv[1])
print(gc.get_threshold()[0], gc.get_freeze_count() > 0, before[0])
"""


@pytest.mark.parametrize(
    ("mode", "gen0", "frozen"),
    [("", 10_000, True), ("freeze", 700, True), ("2500", 2500, True), ("default", 700, False)],
)
def test_worker_freezes_what_it_built_and_collects_less_often(mode: str, gen0: int, frozen: bool) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == [str(gen0), str(frozen), "700"]
