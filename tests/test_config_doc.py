"""The keyword registry is complete and consistent, and docs/configuration.md is generated from it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from proxy.config.keywords import CRITERIA, REGISTRY, SERVER_PARAMS, Section

ROOT = Path(__file__).resolve().parent.parent


def gen_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_doc", ROOT / "tools" / "gen_config_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_config_doc", module)
    spec.loader.exec_module(module)
    return module


def test_committed_reference_is_up_to_date() -> None:
    gen = gen_module()
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert gen.MARKER in doc, "the hand-written introduction must end with the marker line"
    assert doc == gen.render(doc), "docs/configuration.md is stale: run python tools/gen_config_doc.py"


def test_render_keeps_the_introduction() -> None:
    gen = gen_module()
    page = gen.render("# Intro\n\nhand-written\n")
    assert page.startswith("# Intro\n\nhand-written\n\n" + gen.MARKER)
    assert gen.render(page) == page


def test_check_mode(tmp_path: Path) -> None:
    gen = gen_module()
    page = tmp_path / "c.md"
    page.write_text("# Intro\n")
    assert gen.main(["--check", str(page)]) == 1
    assert gen.main([str(page)]) == 0
    assert gen.main(["--check", str(page)]) == 0


@pytest.mark.parametrize("kw", [kw for kw in REGISTRY if kw.supported], ids=lambda kw: kw.name)
def test_supported_keywords_are_documented(kw: object) -> None:
    from proxy.config.kwtypes import Keyword

    assert isinstance(kw, Keyword)
    assert (kw.parse is not None or kw.ignored is not None) and kw.doc and kw.sections
    assert kw.doc.endswith(".") and len(kw.doc) < 120


def test_unsupported_keywords_say_why() -> None:
    for kw in REGISTRY:
        if not kw.supported:
            assert kw.parse is None and kw.unsupported and kw.unsupported.startswith("not supported"), kw.name


def test_brief_keywords_are_registered() -> None:
    wanted = {
        Section.GLOBAL: ["nbthread", "maxconn", "log", "stats socket", "daemon", "pidfile", "tune.h1-engine",
                         "tune.bufsize", "tune.http.maxhdr"],
        Section.FRONTEND: ["bind", "mode", "default_backend", "use_backend", "acl", "http-request return",
                           "option forwardfor", "option http-server-close", "option httpclose",
                           "option http-keep-alive", "timeout client", "timeout http-request",
                           "timeout http-keep-alive", "log", "option httplog", "option dontlognull"],
        Section.BACKEND: ["timeout server", "timeout connect", "timeout queue", "retries", "balance",
                          "server", "default-server", "source", "http-reuse"],
    }  # fmt: skip
    for section, names in wanted.items():
        for name in names:
            kw = REGISTRY.get(name, section)
            assert kw is not None and kw.supported, (section, name)


def test_server_params_and_criteria_documented() -> None:
    for param in SERVER_PARAMS.values():
        refused_or_ignored = param.unsupported is not None or param.ignored is not None
        assert (param.apply is None) == refused_or_ignored, param.name
        if not refused_or_ignored:
            assert param.doc and param.default, param.name
    for crit in CRITERIA.values():
        assert crit.doc


def test_every_keyword_is_in_a_compatibility_family() -> None:
    """The compatibility table covers everything the registry knows."""
    from proxy.config.keywords import FAMILIES, UNSUPPORTED_SECTIONS, family_of

    assert [kw.name for kw in REGISTRY if family_of(kw.name) is None] == []
    params = [p for f in FAMILIES for p in f.params]
    assert sorted(params) == sorted(SERVER_PARAMS), "each server parameter in exactly one family"
    assert sorted(s for f in FAMILIES for s in f.sections) == sorted(UNSUPPORTED_SECTIONS)
