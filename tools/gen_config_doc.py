"""Regenerate the reference part of docs/configuration.md from the keyword registry.

The page is a hand-written introduction, then a marker line, then the reference, which this tool
renders from ``proxy.config.keywords`` (keywords, server parameters, ACL criteria, what is not
supported). Everything above the marker is kept as it is.

    python tools/gen_config_doc.py            # rewrite docs/configuration.md
    python tools/gen_config_doc.py --check    # exit 1 if the committed page is out of date

tests/test_config_doc.py runs the check, so a keyword change without the page fails the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proxy.config.acl_syntax import MATCH_METHODS, PREDEFINED  # noqa: E402
from proxy.config.keywords import (  # noqa: E402
    CRITERIA,
    FAMILIES,
    REGISTRY,
    SERVER_PARAMS,
    UNSUPPORTED_SECTIONS,
    Family,
)
from proxy.config.kwtypes import Keyword, Section  # noqa: E402
from proxy.logformat import ALIASES, CONVERTERS, FETCHES, Stage  # noqa: E402

DOC = ROOT / "docs" / "configuration.md"
MARKER = "<!-- generated reference below: tools/gen_config_doc.py writes it from proxy/config/keywords.py -->"
PROXY_COLUMNS = (Section.DEFAULTS, Section.FRONTEND, Section.LISTEN, Section.BACKEND)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_cell(text)}`" if text else ""


def _keyword_rows(keywords: list[Keyword], with_matrix: bool) -> list[str]:
    head = "| keyword | arguments |"
    rule = "|---|---|"
    if with_matrix:
        head += " defaults | frontend | listen | backend |"
        rule += ":-:|:-:|:-:|:-:|"
    head += " `no` | default | description |"
    rule += ":-:|---|---|"
    rows = [head, rule]
    for kw in sorted(keywords, key=lambda k: k.name):
        row = f"| `{kw.name}` | {_code(kw.synopsis)} |"
        if with_matrix:
            row += "".join(f" {'X' if s in kw.sections else '-'} |" for s in PROXY_COLUMNS)
        row += f" {'X' if kw.negatable else ''} | {_cell(kw.default)} | {_cell(kw.doc)} |"
        rows.append(row)
    return rows


def _sections(kw: Keyword) -> str:
    if kw.sections == {Section.GLOBAL}:
        return "global"
    return "defaults" if kw.sections == {Section.DEFAULTS} else "proxies"


def _family_row(family: Family) -> str:
    """One row of the compatibility table: the status is counted from the registry."""
    supported: list[str] = []
    ignored: list[str] = []
    refused: list[str] = []
    for kw in REGISTRY:
        if not family.has(kw.name) or (kw.sections == {Section.DEFAULTS} and not kw.supported):
            continue  # "not in defaults yet" declarations are not a feature of their own
        (refused if not kw.supported else ignored if kw.ignored is not None else supported).append(kw.name)
    for name in family.params:
        param = SERVER_PARAMS[name]
        kind = refused if param.unsupported else ignored if param.ignored else supported
        kind.append(f"{name} (server)")
    refused += [f"{name} (section)" for name in family.sections]
    if supported and not (ignored or refused):
        status = "supported"
    elif supported:
        status = "partial"
    elif ignored and not refused:
        status = "ignored (warning)"
    else:
        status = "refused"
    not_supported = sorted(set(refused))
    detail = ""
    if not_supported and supported:
        shown = ", ".join(f"`{n}`" for n in not_supported[:8])
        detail = f" Refused: {shown}{', ...' if len(not_supported) > 8 else ''}."
    if ignored and supported:
        detail += f" Ignored with a warning: {', '.join(f'`{n}`' for n in sorted(set(ignored))[:6])}."
    counts = f"{len(set(supported))} / {len(set(ignored))} / {len(not_supported)}"
    return f"| {family.label} | {status} | {counts} | {_cell(family.note + detail)} |"


def render_compatibility() -> list[str]:
    out = ["## Compatibility", ""]
    out += [
        "HAProxy's keyword families and what poolproxy does with them, counted from the keyword registry",
        "(keywords and server parameters supported / accepted but ignored with a warning / refused with the",
        "reason given in the reference below). A keyword HAProxy has that appears nowhere on this page is",
        "refused as unknown.",
        "",
        "| family | status | supported / ignored / refused | notes |",
        "|---|---|:-:|---|",
    ]
    out += [_family_row(family) for family in FAMILIES]
    return [*out, ""]


def render_reference() -> str:
    supported = [kw for kw in REGISTRY if kw.supported and kw.ignored is None]
    ignored = [kw for kw in REGISTRY if kw.ignored is not None]
    refused = [kw for kw in REGISTRY if not kw.supported]
    out: list[str] = [MARKER, "", *render_compatibility(), "## Reference", ""]

    out += ["### `global` section", ""]
    out += _keyword_rows([kw for kw in supported if Section.GLOBAL in kw.sections], with_matrix=False)
    out += ["", "### Proxy sections", ""]
    out += [
        "An `X` marks the sections that accept the keyword (HAProxy's keyword matrix); `defaults`",
        "values are inherited by the sections that follow. `no` marks the keywords that accept the",
        "`no` prefix.",
        "",
    ]
    out += _keyword_rows([kw for kw in supported if kw.sections & set(PROXY_COLUMNS)], with_matrix=True)

    out += ["", "### `http-errors` section", ""]
    out += ["`http-errors <name>` holds pages that `errorfiles <name>` imports into proxies.", ""]
    out += _keyword_rows([kw for kw in supported if Section.HTTP_ERRORS in kw.sections], with_matrix=False)

    out += ["", "### Server parameters", ""]
    out += ["Written after `server <name> <host>:<port>` or after `default-server`.", ""]
    out += ["| parameter | arguments | default | description |", "|---|---|---|---|"]
    for param in sorted(SERVER_PARAMS.values(), key=lambda p: p.name):
        if param.unsupported is None and param.ignored is None:
            out.append(
                f"| `{param.name}` | {_code(param.synopsis)} | {_cell(param.default)} | {_cell(param.doc)} |"
            )

    out += ["", "### ACLs", ""]
    out += ["`acl <name> <criterion> [flags] <pattern>...`; conditions: `if|unless` followed by ACL names,"]
    out += ["`!name`, anonymous ACLs `{ <criterion> [flags] <pattern>... }`, `||` or `or`.", ""]
    out += ["| criterion | default match | argument | description |", "|---|---|---|---|"]
    for crit in CRITERIA.values():
        arg = "`(<header>)`" if crit.needs_arg else ""
        out.append(f"| `{crit.name}` | {crit.match} | {arg} | {_cell(crit.doc)} |")
    out += ["", "Flags: `-i` (ignore case), `-m <method>` (matching method), `--` (end of flags).", ""]
    out += ["| sample kind | matching methods (`-m`) |", "|---|---|"]
    for kind, methods in MATCH_METHODS.items():
        out.append(f"| {kind} | {', '.join(sorted(methods))} |")
    out += ["", "Predefined ACLs:", ""]
    out += ["| name | equivalent |", "|---|---|"]
    for name, (fetch, patterns) in PREDEFINED.items():
        out.append(f"| `{name}` | `{' '.join((fetch, *patterns))}` |")

    out += ["", "### Log-format expressions", ""]
    out += [
        "Values of `http-request`/`http-response` rules, `unique-id-format`, `lf-string`: text with",
        "`%<alias>`, `%[<fetch>(<args>),<converter>...]`, `%%`; flags `%{+Q}` (quote), `%{+X}`",
        "(hexadecimal), `%{+X}o` for all that follows.",
        "",
        "| fetch | arguments | usable in | value |",
        "|---|---|---|---|",
    ]
    for sample in FETCHES.values():
        args = "" if not sample.max_args else ("`<name>[,<occ>]`" if sample.max_args == 2 else "`<text>`")
        where = {Stage.REQUEST: "requests", Stage.RESPONSE: "responses"}.get(sample.stage, "everywhere")
        out.append(f"| `{sample.name}` | {args} | {where} | {_cell(sample.doc)} |")
    out += ["", "`hdr(<name>)` is `req.hdr` in request rules and `res.hdr` in response rules.", ""]
    out += ["| alias | value |", "|---|---|"]
    out += [f"| `%{name}` | {_cell(doc)} |" for name, (_, doc) in ALIASES.items()]
    out += ["", f"Converters: {', '.join(f'`{name}`' for name in CONVERTERS)}.", ""]

    out += ["", "### Accepted and ignored, with a warning", ""]
    out += [
        "These change nothing a configuration relies on in poolproxy; each is accepted with a `[WARNING]`",
        "saying why (so `zero-warning` and `-dW` refuse them).",
        "",
    ]
    out += ["| keyword | sections | why |", "|---|---|---|"]
    for kw in sorted(ignored, key=lambda k: (k.name, sorted(s.value for s in k.sections))):
        out.append(f"| `{kw.name}` | {_sections(kw)} | {_cell(kw.ignored or '')} |")
    for param in sorted(SERVER_PARAMS.values(), key=lambda p: p.name):
        if param.ignored is not None:
            out.append(f"| `{param.name}` | server parameter | {_cell(param.ignored)} |")

    out += ["", "### Not supported", ""]
    out += [
        "Each of these is refused with an error naming it (never ignored). A keyword absent from this page",
        "is refused too, as unknown, with the closest known keyword suggested.",
        "",
    ]
    out += ["| keyword | sections | why |", "|---|---|---|"]
    for kw in sorted(refused, key=lambda k: (k.name, sorted(s.value for s in k.sections))):
        out.append(f"| `{kw.name}` | {_sections(kw)} | {_cell(kw.unsupported or '')} |")
    out += ["", "Server parameters:", ""]
    out += ["| parameter | why |", "|---|---|"]
    for param in sorted(SERVER_PARAMS.values(), key=lambda p: p.name):
        if param.unsupported is not None:
            out.append(f"| `{param.name}` | {_cell(param.unsupported)} |")
    out += ["", f"Sections: {', '.join(f'`{name}`' for name in sorted(UNSUPPORTED_SECTIONS))}.", ""]
    return "\n".join(out)


def render(existing: str) -> str:
    """``existing`` with everything from the marker on replaced by the current reference."""
    intro = existing.split(MARKER, 1)[0] if MARKER in existing else existing.rstrip("\n") + "\n\n"
    return intro + render_reference()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    ap.add_argument("path", nargs="?", default=str(DOC))
    args = ap.parse_args(argv)
    path = Path(args.path)
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    wanted = render(current)
    if args.check:
        if current != wanted:
            print(f"{path} is out of date: run python tools/gen_config_doc.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
