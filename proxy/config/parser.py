"""Reading configuration files into a ``model.Config``: sections, inheritance, dispatch, checks.

Theory of operation. Files are read in the order given (a directory contributes its ``*.cfg`` files in
lexical order, as ``haproxy -f DIR`` does). Each line is split into words by ``lexer``; a line whose
first word names a section (``global``, ``defaults``, ``frontend``, ``backend``, ``listen``) opens it,
and every other line is a directive of the open section, looked up in ``keywords.REGISTRY`` and handed
to that keyword's parse function. A file starts outside any section; ``defaults`` sections carry over
from one file to the next.

Inheritance follows HAProxy: a proxy section starts as a copy of the latest ``defaults`` section read
before it (named or not), or of the one it names with ``from <name>``; a ``defaults`` section starts
from scratch, or from the one it names with ``from``. What a ``defaults`` section holds (timeouts,
options, ``balance``, ``http-reuse``, ``retries``, ``default_backend``, ``default-server`` parameters,
``source``) is therefore what a later section starts with and may override.

Errors never stop the reading: each bad line adds a message and the next line is read, so one run
reports every problem of every file. Checks that need the whole configuration (a ``default_backend``
or ``use_backend`` naming a backend that does not exist, a frontend without ``bind``) run only when
every line parsed, as in HAProxy, and name the line of the directive at fault; so do HAProxy's
whole-configuration warnings (a proxy without its timeouts, ``option httplog`` with nowhere to log).
With ``zero-warning`` (or ``-dW``), any warning refuses the configuration, as in HAProxy.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping

from proxy.config import errorfile
from proxy.config.acl_syntax import NAME_RE
from proxy.config.errors import (
    WARNING,
    ZERO_WARNING,
    Diagnostics,
    DirectiveError,
    after_parse,
    at_line,
    general,
)
from proxy.config.keywords import REGISTRY, UNSUPPORTED_SECTIONS
from proxy.config.kw_global import base_dir
from proxy.config.kw_server import apply_proxy_source
from proxy.config.kwtypes import Directive, Keyword, Section, SectionState
from proxy.config.lexer import iter_lines, split_words
from proxy.config.model import Cap, Config, Global, Proxy, Server, Where

SECTION_WORDS = {s.value: s for s in Section}
_MISSING_TIMEOUTS = (
    "missing timeouts for {kind} '{name}'.\n"
    "   | While not properly invalid, you will certainly encounter various problems\n"
    "   | with such a configuration. To fix this, please ensure that all following\n"
    "   | timeouts are set to a non-zero value: 'client', 'connect', 'server'."
)
_CAPS = {
    Section.FRONTEND: Cap.FRONTEND,
    Section.BACKEND: Cap.BACKEND,
    Section.LISTEN: Cap.FRONTEND | Cap.BACKEND,
}


def config_files(paths: list[str], diag: Diagnostics) -> list[str]:
    """The files to read, in order: each path itself, or a directory's ``*.cfg`` files sorted."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                diag.add(general(f"cannot read configuration directory '{path}': {exc.strerror}"))
                continue
            files.extend(
                os.path.join(path, n)
                for n in names
                if n.endswith(".cfg") and os.path.isfile(os.path.join(path, n))
            )
        else:
            files.append(path)
    if not files and not diag:
        diag.add(general(f"no configuration file found in {', '.join(repr(p) for p in paths) or 'no path'}"))
    return files


class Parser:
    """Reads files into one ``Config``; ``finish`` runs the whole-configuration checks."""

    __slots__ = (
        "cfg", "defaults", "diag", "env", "http_errors", "last_defaults", "names", "proxies", "skipping",
        "state",
    )  # fmt: skip

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.cfg = Config()
        self.diag = Diagnostics()
        self.state: SectionState | None = None
        self.skipping: str | None = None  # the unsupported section whose body is being skipped
        self.last_defaults: SectionState | None = None
        self.defaults: dict[str, list[SectionState]] = {}
        self.names: dict[str, Where] = {}
        self.proxies: list[SectionState] = []
        self.http_errors: dict[str, Where] = {}  # http-errors section name -> where declared

    def __repr__(self) -> str:
        section = self.state.section.value if self.state else None
        counts = f"files={len(self.cfg.files)} proxies={len(self.names)} errors={len(self.diag.messages)}"
        return f"<Parser {counts} section={section}>"

    # -- reading -----------------------------------------------------------------------------------

    def read_file(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            self.diag.add(general(f"cannot open configuration file '{path}': {exc.strerror}"))
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            lineno = raw.count(b"\n", 0, exc.start) + 1
            self.diag.add(at_line(Where(path, lineno), "the file is not valid UTF-8"))
            return
        self.cfg.files.append(path)
        for lineno, line in iter_lines(text):
            self.feed(Where(path, lineno), line)
        self.end_section()

    def feed(self, where: Where, line: str) -> None:
        section = self.state.section.value if self.state else ""
        try:
            words = split_words(line, self.env, where.file, where.line, section)
        except DirectiveError as exc:
            first = line.split()[0] if line.split() else ""
            self.diag.add(
                at_line(
                    where,
                    f"'{first}': {exc.text}" if first and not first.startswith(("'", '"')) else exc.text,
                )
            )
            return
        if not words:
            return
        try:
            if words[0] in SECTION_WORDS or words[0] in UNSUPPORTED_SECTIONS:
                try:
                    self.open_section(words, where)
                finally:
                    if self.state is not None:
                        self.state.base_dir = base_dir(self.cfg.global_.default_path, where.file)
            elif self.skipping is None:
                self.directive(words, where)
        except DirectiveError as exc:
            self.diag.add(at_line(where, exc.text))
        finally:
            st = self.state
            if st is not None and st.warnings:
                for text in st.warnings:
                    self.diag.warn(at_line(where, text, WARNING))
                st.warnings.clear()

    # -- sections ----------------------------------------------------------------------------------

    def end_section(self) -> None:
        st, self.state, self.skipping = self.state, None, None
        if st is None:
            return
        apply_proxy_source(st)
        if st.section is Section.DEFAULTS:
            self.last_defaults = st
            if st.px.name:
                self.defaults.setdefault(st.px.name, []).append(st)

    def open_section(self, words: list[str], where: Where) -> None:
        self.end_section()
        keyword, args = words[0], words[1:]
        if keyword in UNSUPPORTED_SECTIONS:
            self.skipping = keyword
            raise DirectiveError(
                f"section '{keyword}' is {UNSUPPORTED_SECTIONS[keyword]}; its lines are skipped"
            )
        section = SECTION_WORDS[keyword]
        if section is Section.GLOBAL:
            if args:
                self.skipping = keyword
                raise DirectiveError(f"'global' takes no argument (found '{args[0]}')")
            self.state = SectionState(Section.GLOBAL, where, self.cfg.global_)
            return
        if section is Section.HTTP_ERRORS:
            st = SectionState(section, where, self.cfg.global_, http_errors={})
            self.state = st  # before the checks: a broken header's lines are still read, and dropped
            if len(args) > 1:
                raise DirectiveError(f"'http-errors': unexpected '{' '.join(args[1:])}'")
            name = args[0] if args else ""
            st.http_errors = errorfile.open_http_errors(self.cfg, name, where, self.http_errors)
            return
        try:
            name, base = self.section_header(section, args, where)
        except DirectiveError:
            # Read the body into a throwaway proxy, so that its lines are still checked (and do not
            # land in the previous section) without the broken section being registered.
            self.state = SectionState(
                section, where, self.cfg.global_, Proxy(name="", cap=_CAPS.get(section, Cap(0)))
            )
            raise
        proxy = copy.deepcopy(base.proxy) if base and base.proxy else Proxy(name="", cap=Cap(0))
        proxy.name, proxy.where = name, where
        proxy.cap = _CAPS.get(section, Cap(0))
        st = SectionState(section, where, self.cfg.global_, proxy)
        if base is not None:
            st.server_template = copy.deepcopy(base.server_template)
            st.source = base.source
            st.refs = dict(base.refs)
        self.state = st
        if section is Section.DEFAULTS:
            return
        self.proxies.append(st)
        if Cap.FRONTEND in proxy.cap:
            self.cfg.frontends[name] = proxy
        if Cap.BACKEND in proxy.cap:
            self.cfg.backends[name] = proxy

    def section_header(
        self, section: Section, args: list[str], where: Where
    ) -> tuple[str, SectionState | None]:
        """The section's name and the ``defaults`` it starts from; registers proxy names."""
        kind = section.value
        name = ""
        if args and args[0] != "from":
            name, args = args[0], args[1:]
        base = self.last_defaults if section is not Section.DEFAULTS else None
        if args:
            if args[0] != "from" or len(args) != 2:
                raise DirectiveError(
                    f"'{kind}': unexpected '{' '.join(args)}' (expected: {kind} <name> [from <defaults>])"
                )
            base = self.named_defaults(kind, name, args[1])
        if section is Section.DEFAULTS:
            if name and not NAME_RE.match(name):
                raise DirectiveError(
                    f"'defaults {name}': invalid name (allowed: letters, digits, '-', '_', '.', ':')"
                )
            return name, base
        if not name:
            raise DirectiveError(f"'{kind}' needs a name: {kind} <name> [from <defaults>]")
        if not NAME_RE.match(name):
            raise DirectiveError(
                f"'{kind} {name}': invalid name (allowed: letters, digits, '-', '_', '.', ':')"
            )
        other = self.names.get(name)
        if other is not None:
            raise DirectiveError(
                f"'{kind} {name}': a proxy with this name was already declared at {other}"
                " (proxy names must be unique, whatever their sections)"
            )
        self.names[name] = where
        return name, base

    def named_defaults(self, kind: str, name: str, wanted: str) -> SectionState:
        found = self.defaults.get(wanted, [])
        label = f"{kind} {name}".strip()
        if not found:
            raise DirectiveError(f"'{label}': no defaults section named '{wanted}' before this line")
        if len(found) > 1:
            places = ", ".join(str(st.where) for st in found)
            raise DirectiveError(
                f"'{label}': defaults section name '{wanted}' is ambiguous (declared at {places})"
            )
        return found[0]

    # -- directives --------------------------------------------------------------------------------

    def directive(self, words: list[str], where: Where) -> None:
        st = self.state
        if words[0].startswith("."):
            raise DirectiveError(f"'{words[0]}': conditional blocks and dot directives are not supported")
        if st is None:
            raise DirectiveError(
                f"'{words[0]}' appears outside any section (open one with global, defaults,"
                " frontend, backend or listen)"
            )
        negated = False
        if words[0] == "default" and len(words) > 1:
            raise DirectiveError(f"'default {words[1]}': the 'default' prefix is not supported")
        if words[0] == "no" and len(words) > 1:
            negated, words = True, words[1:]
        found = REGISTRY.match(words, st.section)
        if found is None:
            raise DirectiveError(self.unknown(words, st.section, negated))
        kw, count = found
        if st.section not in kw.sections:
            if not kw.supported:  # only an unsupported declaration elsewhere: as good as unknown here
                raise DirectiveError(self.unknown(words, st.section, negated))
            if self.other_capability(kw, st):
                return
            allowed = ", ".join(s.value for s in Section if s in kw.sections)
            raise DirectiveError(
                f"'{kw.name}' is not allowed in '{st.section.value}' section (allowed in: {allowed})"
            )
        if kw.unsupported is not None:
            # "stats uri" is refused as a whole family ("stats"): show the word the user wrote too
            shown = (
                " ".join(words[: count + 1])
                if REGISTRY.is_family(kw.name) and len(words) > count
                else kw.name
            )
            raise DirectiveError(f"'{shown}' is {kw.unsupported}")
        if negated and not kw.negatable:
            raise DirectiveError(f"'no {kw.name}': '{kw.name}' cannot be negated with 'no'")
        directive = Directive(kw.name, words[count:], where, st.section, negated)
        if kw.ignored is not None:
            if kw.parse is not None:
                kw.parse(st, directive)  # checks the arguments only
            st.warn(f"'{'no ' if negated else ''}{kw.name}' is ignored: {kw.ignored}")
            return
        assert kw.parse is not None
        kw.parse(st, directive)

    @staticmethod
    def other_capability(kw: Keyword, st: SectionState) -> bool:
        """A keyword of the other proxy capability (``balance`` in a frontend, ``timeout client`` in a
        backend): HAProxy ignores it with a warning, or refuses it (``other_cap_fatal``). True when it
        was handled here (warned about); False when it is not such a keyword."""
        if st.section is Section.FRONTEND:
            have, lacks = "frontend", "backend"
        elif st.section is Section.BACKEND:
            have, lacks = "backend", "frontend"
        else:
            return False
        if Section.LISTEN not in kw.sections:
            return False
        name = st.px.name
        if kw.other_cap_fatal:
            raise DirectiveError(
                f"'{kw.name}' not allowed because {have} '{name}' has no {lacks} capability."
            )
        if kw.name.startswith("timeout "):  # HAProxy words these differently
            st.warn(f"'{kw.name}' will be ignored because {have} '{name}' has no {lacks} capability")
        else:
            st.warn(f"'{kw.name}' ignored because {have} '{name}' has no {lacks} capability.")
        return True

    @staticmethod
    def unknown(words: list[str], section: Section, negated: bool) -> str:
        family = REGISTRY.is_family(words[0])
        shown = " ".join(words[:2]) if family else words[0]
        text = f"unknown keyword '{'no ' if negated else ''}{shown}' in '{section.value}' section"
        guess = REGISTRY.suggest(words, section)
        if guess and guess != words[0]:
            return f"{text}; did you mean '{guess}'?"
        if family:
            members = sorted(
                kw.name.split(" ", 1)[1]
                for kw in REGISTRY
                if kw.supported and section in kw.sections and kw.name.startswith(words[0] + " ")
            )
            if members:
                return f"{text} (supported '{words[0]}' keywords here: {', '.join(members)})"
            return f"{text} (no '{words[0]}' keyword is supported in this section)"
        return text

    # -- whole-configuration checks ----------------------------------------------------------------

    def finish(self, zero_warning: bool = False) -> Config:
        """The ``Config``, or ``ConfigError`` with every message collected. ``zero_warning``
        (``-dW``), or ``zero-warning`` in ``global``, makes any warning an error."""
        self.end_section()
        if not self.diag:
            for st in self.proxies:
                self.check_proxy(st)
                self.warn_proxy(st)
                alerts, warnings = errorfile.resolve(self.cfg, st.px)
                for text in alerts:
                    self.diag.add(after_parse(None, text))
                for text in warnings:
                    self.diag.warn(after_parse(None, text, WARNING))
        if self.diag.warnings and (zero_warning or self.cfg.global_.zero_warning):
            self.diag.add(ZERO_WARNING)
        self.diag.raise_if_any()
        self.cfg.warnings = list(self.diag.warnings)
        return self.cfg

    def warn_proxy(self, st: SectionState) -> None:
        """HAProxy's whole-configuration warnings about one proxy."""
        px = st.px
        kind = st.section.value
        t = px.timeouts
        front = Cap.FRONTEND in px.cap
        back = Cap.BACKEND in px.cap and px.servers
        if (front and not t.client) or (back and not (t.connect and t.server)):
            self.diag.warn(after_parse(px.where, _MISSING_TIMEOUTS.format(kind=kind, name=px.name), WARNING))
        if front and px.httplog and not (px.log_global and self.cfg.global_.log_targets):
            text = f"log format ignored for {kind} '{px.name}' since it has no log address."
            self.diag.warn(after_parse(px.where, text, WARNING))

    def check_proxy(self, st: SectionState) -> None:
        px = st.px
        kind = st.section.value
        if st.section is Section.FRONTEND and not px.binds:
            self.diag.add(
                after_parse(px.where, f"frontend '{px.name}' has no 'bind' line: it would accept nothing")
            )
        for srv in px.servers:
            for text in tls_problems(srv, self.cfg.global_):
                self.diag.add(after_parse(srv.where, f"{kind} '{px.name}', server '{srv.name}': {text}"))
        if Cap.FRONTEND not in px.cap:
            return
        refs = (
            [("default_backend", px.default_backend, st.refs.get("default_backend"))]
            if px.default_backend
            else []
        )
        refs += [("use_backend", u.backend, u.where) for u in px.use_backends]
        for keyword, name, where in refs:
            assert name is not None
            target = self.cfg.backends.get(name)
            if target is not None:
                continue
            if name in self.cfg.frontends:
                problem = f"'{name}' is a frontend, it cannot serve as a backend"
            else:
                problem = f"no backend named '{name}' (declare it with 'backend {name}' or 'listen {name}')"
            self.diag.add(after_parse(where, f"{kind} '{px.name}': '{keyword}': {problem}"))


def tls_problems(srv: Server, glob: Global) -> list[str]:
    """What makes an ``ssl`` server unusable, in HAProxy's terms (its start-up alerts)."""
    if not srv.ssl:
        return []
    problems = []
    verify = srv.verify or glob.ssl_server_verify
    if verify == "required" and not srv.ca_file:
        problems.append(
            "verify is enabled by default but no CA file specified. If you're running on a LAN where"
            " you're certain to trust the server's certificate, please set an explicit 'verify none'"
            " statement on the 'server' line, or use 'ssl-server-verify none' in the global section"
            " to disable server-side verifications by default."
        )
    if srv.ca_file and not os.path.isfile(srv.ca_file):
        problems.append(f"unable to load CA file '{srv.ca_file}'")
    return problems


def parse_files(paths: list[str], env: Mapping[str, str], zero_warning: bool = False) -> Config:
    """Read ``paths`` (files or directories) into a validated ``Config``; ``ConfigError`` otherwise.
    ``zero_warning`` (the command line's ``-dW``) refuses a configuration with warnings."""
    parser = Parser(env)
    files = config_files(paths, parser.diag)
    for path in files:
        parser.read_file(path)
    return parser.finish(zero_warning)

