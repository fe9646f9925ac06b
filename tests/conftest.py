"""Shared fixtures for the end-to-end tests, and the leak guard that applies to every test.

- ``origin``: a started ``harness.Origin`` (function scope), stopped after the test.
- ``make_proxy(config, *, ports, **kwargs) -> Proxy``: starts a ``harness.Proxy`` in its own directory
  under the test's ``tmp_path`` (proxy-0, proxy-1, ...); every proxy it started is killed at teardown,
  and its logs are printed to the captured output if the test failed. It puts ``tune.h1-engine
  <h1_engine>`` in the config (``harness.with_h1_engine``).
- ``h1_engine``: the HTTP/1 engine of the test's proxies. Every test in a ``test_e2e_*`` module that uses
  ``make_proxy`` runs once per engine in ``harness.E2E_H1_ENGINES`` (ids ``[native]``, ``[h11]``; llhttp
  where native is not built); elsewhere it is None (the proxy's default, no keyword added).
- ``h2_engine``: the HTTP/2 engine (``tune.h2-engine``) of the test's proxies. The ``test_e2e_h2*`` modules
  run each test on the pairs ``harness.E2E_ENGINE_PAIRS`` (ids ``[native-h2native]``, ``[h11-h2h2]``);
  elsewhere it is None (the default).
- ``@pytest.mark.e2e`` marks the slow tests that start real proxy processes; ``--skip-e2e`` skips them
  (``-m "not e2e"`` deselects them too).
- Leak guard: after each test, no process of a group the harness started may still be alive. A leftover
  is killed and the test errors at teardown, naming what leaked. The same check runs at session end.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# The tests import the harness as a top-level module, whether or not tests/ ever becomes a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--skip-e2e", action="store_true", help="skip tests marked e2e (real proxy processes)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: slow end-to-end test with real proxy processes")
    config.addinivalue_line(
        "markers",
        "pure_only: a unit test whose duck-typed fakes or monkeypatched methods need the Python source"
        " of the mypyc-compiled modules; skipped where they run compiled (check.sh runs it under"
        " POOLPROXY_PURE=1)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every module, engine-independent ones included: running all of them twice costs about as much again
    # as once (about a minute on 2 cores), and they all send HTTP through the engine under test. Twice, not
    # three times: native (the default) and h11 (the reference), not llhttp, to keep the suite time flat
    # (``harness.E2E_H1_ENGINES`` says why that is enough).
    name = metafunc.definition.path.name
    if "h1_engine" in metafunc.fixturenames and name.startswith("test_e2e_h2"):
        ids = [f"{h1}-h2{h2}" for h1, h2 in harness.E2E_ENGINE_PAIRS]
        metafunc.parametrize(("h1_engine", "h2_engine"), harness.E2E_ENGINE_PAIRS, indirect=True, ids=ids)
    elif "h1_engine" in metafunc.fixturenames and name.startswith("test_e2e_"):
        metafunc.parametrize("h1_engine", harness.E2E_H1_ENGINES, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if harness.RUNS_COMPILED:
        compiled = pytest.mark.skip(reason="needs the Python source (POOLPROXY_PURE=1); it runs compiled")
        for item in items:
            if "pure_only" in item.keywords:
                item.add_marker(compiled)
    if config.getoption("--skip-e2e"):
        skip = pytest.mark.skip(reason="--skip-e2e")
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report on the item, so fixtures can tell at teardown whether the test failed.
    report = yield
    setattr(item, f"report_{call.when}", report)
    return report


def _kill_leaks() -> dict[int, str]:
    """Give stopping processes a moment to go, then kill what is left; returns what was left."""
    try:
        harness.wait_for(lambda: not harness.leaked_processes(), timeout=2.0)
        return {}
    except AssertionError:
        leaked = harness.leaked_processes()
        for pgrp in set(harness.STARTED):
            harness.kill_group(pgrp)
        return leaked


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    # Autouse fixtures are set up first, so this teardown runs after origin/make_proxy have cleaned up.
    yield
    leaked = _kill_leaks()
    if leaked:
        pytest.fail(f"processes left running by this test (now killed): {leaked}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = _kill_leaks()
    if leaked:
        print(f"\nprocesses left running at session end (now killed): {leaked}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def origin() -> Iterator[harness.Origin]:
    with harness.Origin() as started:
        yield started


# What a worker or the master writes when an exception escaped a callback (asyncio's default handler,
# an uncaught error).
UNHANDLED = ("Traceback (most recent call last)", "Exception in callback", "exception was never retrieved")


@pytest.fixture
def h1_engine(request: pytest.FixtureRequest) -> str | None:
    engine: str | None = getattr(request, "param", None)
    return engine


@pytest.fixture
def h2_engine(request: pytest.FixtureRequest) -> str | None:
    engine: str | None = getattr(request, "param", None)
    return engine


@pytest.fixture
def make_proxy(
    tmp_path: Path, request: pytest.FixtureRequest, h1_engine: str | None, h2_engine: str | None
) -> Iterator[harness.MakeProxy]:
    proxies: list[harness.Proxy] = []

    def make(config: str, *, ports: list[int], **kwargs: Any) -> harness.Proxy:
        if h1_engine is not None:
            config = harness.with_h1_engine(config, h1_engine)
        if h2_engine is not None:
            config = harness.with_h2_engine(config, h2_engine)
        proxy = harness.Proxy(config, tmp_path / f"proxy-{len(proxies)}", ports=ports, **kwargs)
        proxies.append(proxy)
        return proxy.start()

    yield make
    report = getattr(request.node, "report_call", None)
    failed = report is not None and report.failed
    for proxy in proxies:
        proxy.kill()
        if failed:
            print(f"---- logs of proxy {proxy.cfg_path} ----\n{proxy.logs()}")
    if not failed:
        # An exception that escaped a callback fails the test even when every client got its
        # answer (STYLE.md habit 10).
        for proxy in proxies:
            logs = proxy.logs()
            if any(marker in logs for marker in UNHANDLED):
                pytest.fail(f"unhandled exception in the logs of {proxy.cfg_path}:\n{logs[-4000:]}")
