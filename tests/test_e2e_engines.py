"""End-to-end: ``tune.h1-engine`` really selects the parser the workers use.

Every e2e test runs once per engine (conftest's ``h1_engine``); this checks that the parameter reaches
the workers. On the wire the engines cannot be told apart (``proxy.h1.strict`` makes them answer
identically, and the engine's own error text, "<engine> refused the head: ...", is not logged), so the
proxy runs under a probe: ``python -m h1_probe`` wraps every registered engine's ``request_parser`` and
``response_parser`` to write a line on stderr, then runs ``proxy.main`` as ``python -m proxy`` would.
The workers are forked from that master, so they report every parser they make.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from harness import MakeProxy, Origin, free_port, http_get, proxy_config

pytestmark = pytest.mark.e2e

PROBE = """\
import sys

from proxy.h1 import ENGINES
from proxy.main import main


class Reporting:
    # the registry's engine, wrapped (a compiled engine's methods cannot be replaced on it)
    def __init__(self, name, engine):
        self.name, self.engine = name, engine

    def request_parser(self, *args, **kwargs):
        sys.stderr.write(f"h1 probe: {self.name} request parser\\n")
        return self.engine.request_parser(*args, **kwargs)

    def response_parser(self, *args, **kwargs):
        sys.stderr.write(f"h1 probe: {self.name} response parser\\n")
        return self.engine.response_parser(*args, **kwargs)


for name, engine in list(ENGINES.items()):
    ENGINES[name] = Reporting(name, engine)
sys.exit(main())
"""


def test_the_configured_engine_parses_requests_and_responses(
    make_proxy: MakeProxy, origin: Origin, h1_engine: str | None, tmp_path: Path
) -> None:
    assert h1_engine is not None  # this module's tests run once per engine
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "h1_probe.py").write_text(PROBE)
    pythonpath = os.pathsep.join(filter(None, [str(probe), os.environ.get("PYTHONPATH")]))
    port = free_port()
    proxy = make_proxy(
        proxy_config(port, origin.port),
        ports=[port],
        workers=1,
        module="h1_probe",
        env={"PYTHONPATH": pythonpath},
    )
    response = http_get(port, "/")
    assert response.status == 200, response
    # The worker made both parsers before the response left it, and stderr is unbuffered.
    made = set(re.findall(r"h1 probe: (\S+ \S+) parser", proxy.logs()))
    assert made == {f"{h1_engine} request", f"{h1_engine} response"}, proxy.logs()
