"""The vocabulary of the keyword registry: sections, directives, keyword declarations, parse state.

A ``Keyword`` is declared once, in one of the ``kw_*`` modules, with everything the rest of the
configuration machinery needs: its name (possibly several words, ``timeout client``), the sections
that accept it, a synopsis of its arguments, its default, a one-line doc, whether HAProxy's ``no``
prefix applies, and the function that parses its arguments into the model. A keyword HAProxy has but
poolproxy does not support is declared too, with ``unsupported`` saying why, so that using it gives a
clear error (never silence) and the reference lists it. A keyword whose effect poolproxy does not have
but which changes nothing a user relies on (a tuning of HAProxy's own poller, say) is declared with
``ignored`` saying why: it is accepted with a ``[WARNING]`` (so ``zero-warning`` refuses it).

A proxy keyword written in a proxy of the other capability (``timeout client`` in a ``backend``,
``balance`` in a ``frontend``) is ignored with HAProxy's warning ("... ignored because backend 'be'
has no frontend capability"), except the few that HAProxy refuses there (``other_cap_fatal``:
``server``, ``default-server``).

A parse function receives the ``SectionState`` of the section being read and the ``Directive`` (the
words after the keyword, where they were written, whether ``no`` preceded it); it stores into the
model objects of the state, and raises ``DirectiveError`` for a bad argument, or calls
``SectionState.warn`` for a warning (the parser adds the location). It never reads files
other than the one it is told to, never looks at other sections (cross-section checks run after every
file was read), and keeps no state of its own.
"""

from __future__ import annotations

import difflib
import enum
import os.path
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from proxy.config.errors import DirectiveError
from proxy.config.model import ErrorPage, Global, Proxy, Server, Where


class Section(enum.Enum):
    GLOBAL = "global"
    DEFAULTS = "defaults"
    FRONTEND = "frontend"
    LISTEN = "listen"
    BACKEND = "backend"
    HTTP_ERRORS = "http-errors"


# The section sets that HAProxy's keyword matrix uses, spelled once.
GLOBAL = frozenset({Section.GLOBAL})
ALL_PROXIES = frozenset({Section.DEFAULTS, Section.FRONTEND, Section.LISTEN, Section.BACKEND})
FRONT = frozenset({Section.DEFAULTS, Section.FRONTEND, Section.LISTEN})  # frontend capability
BACK = frozenset({Section.DEFAULTS, Section.LISTEN, Section.BACKEND})  # backend capability
FRONT_ONLY = frozenset({Section.FRONTEND, Section.LISTEN})  # not inheritable from defaults
BACK_ONLY = frozenset({Section.LISTEN, Section.BACKEND})
RULES = frozenset({Section.FRONTEND, Section.LISTEN, Section.BACKEND})
EVERYWHERE = GLOBAL | ALL_PROXIES


@dataclass(frozen=True, slots=True)
class Directive:
    """One configuration line, split: ``args`` are the words after the keyword's own words."""

    keyword: str
    args: list[str]
    where: Where
    section: Section
    negated: bool = False

    def fail(self, text: str) -> DirectiveError:
        """An error about this directive: ``'<keyword>': <text>`` (raise it)."""
        return DirectiveError(f"'{self.keyword}': {text}")

    def expect(self, count: int, synopsis: str) -> None:
        """Exactly ``count`` arguments, else an error that shows the expected form."""
        if len(self.args) != count:
            want = "no argument" if count == 0 else f"{count} argument{'s' * (count > 1)}"
            raise self.fail(f"expects {want}: {self.keyword} {synopsis}".rstrip())


@dataclass(slots=True)
class SectionState:
    """What the parser knows about the section being read; the parse functions write into it.

    For proxy sections ``proxy`` is the model object (for ``defaults`` too: a template that later
    proxies copy), ``server_template`` holds the ``default-server`` parameters that later ``server``
    lines start from, and ``source`` the proxy-wide ``source`` (applied once the section is complete to
    servers that have none of their own). ``refs`` remembers where reference-making directives were
    written, so that a check after parsing can point at them.
    """

    section: Section
    where: Where
    global_: Global
    proxy: Proxy | None = None
    server_template: Server = field(default_factory=lambda: Server(name="", host="", port=0))
    source: tuple[str, bool] | None = None  # (address[:port], usesrc clientip)
    refs: dict[str, Where] = field(default_factory=dict)  # "default_backend" -> where it was set
    warnings: list[str] = field(default_factory=list)  # the current directive's, without location
    http_errors: dict[int, ErrorPage] | None = None  # an http-errors section's pages
    base_dir: str = ""  # the directory relative file names are read from ("default-path")

    def path(self, name: str) -> str:
        """A file name from the configuration, resolved as ``default-path`` says."""
        if self.base_dir and not os.path.isabs(name):
            return os.path.join(self.base_dir, name)
        return name

    def warn(self, text: str) -> None:
        """A warning about the directive being parsed (the parser prefixes its location)."""
        self.warnings.append(text)

    @property
    def px(self) -> Proxy:
        """The proxy being read (only called by keywords declared for proxy sections)."""
        assert self.proxy is not None, "a proxy keyword ran outside a proxy section"
        return self.proxy


ParseFn = Callable[[SectionState, Directive], None]


@dataclass(frozen=True, slots=True)
class Keyword:
    name: str
    sections: frozenset[Section]
    synopsis: str
    doc: str
    parse: ParseFn | None = None
    default: str = ""
    negatable: bool = False  # accepts HAProxy's "no" prefix
    unsupported: str | None = None  # why poolproxy refuses it (parse is None then)
    ignored: str | None = None  # accepted with a [WARNING] saying why it has no effect
    other_cap_fatal: bool = False  # refused (not HAProxy's warning) in a proxy of the other capability

    @property
    def supported(self) -> bool:
        return self.unsupported is None


def unsupported(name: str, why: str, sections: frozenset[Section] = ALL_PROXIES) -> Keyword:
    """A keyword HAProxy knows that poolproxy refuses, with the reason shown to the user."""
    return Keyword(name=name, sections=sections, synopsis="", doc="", unsupported=why)


def ignored(
    name: str,
    why: str,
    sections: frozenset[Section] = ALL_PROXIES,
    synopsis: str = "",
    parse: ParseFn | None = None,
) -> Keyword:
    """A keyword accepted with a ``[WARNING]`` that it is ignored, ``why`` saying why that is harmless;
    ``parse`` (optional) only checks its arguments."""
    return Keyword(name=name, sections=sections, synopsis=synopsis, doc=f"Ignored: {why}", parse=parse,
                   ignored=why, negatable=True)  # fmt: skip


class Registry:
    """Every keyword by name; finds the keyword a line starts with and suggests one for a typo.

    A name may be declared more than once for disjoint sections (``log`` in ``global`` takes a
    target, in a proxy only ``global``); ``match`` picks the declaration for the section at hand.
    """

    __slots__ = ("_by_name", "_families", "_max_words")

    def __init__(self, keywords: Iterable[Keyword]) -> None:
        self._by_name: dict[str, list[Keyword]] = {}
        for kw in keywords:
            same = self._by_name.setdefault(kw.name, [])
            if any(other.sections & kw.sections for other in same):
                raise ValueError(f"keyword {kw.name!r} declared twice for the same section")
            same.append(kw)
        # first words of multi-word keywords ("timeout", "option", "stats", "http-request")
        self._families = {name.split()[0] for name in self._by_name if " " in name}
        self._max_words = max(len(name.split()) for name in self._by_name)

    def __repr__(self) -> str:
        return f"<Registry keywords={len(self)}>"

    def __iter__(self) -> Iterator[Keyword]:
        for same in self._by_name.values():
            yield from same

    def __len__(self) -> int:
        return sum(len(same) for same in self._by_name.values())

    def get(self, name: str, section: Section) -> Keyword | None:
        """The declaration of ``name`` for ``section``, or None."""
        for kw in self._by_name.get(name, ()):
            if section in kw.sections:
                return kw
        return None

    def is_family(self, word: str) -> bool:
        return word in self._families

    def match(self, words: list[str], section: Section) -> tuple[Keyword, int] | None:
        """The longest keyword that ``words`` start with, and how many words it took.

        The declaration allowed in ``section`` is preferred; when none is, another declaration is
        returned so that the caller can say where the keyword belongs.
        """
        for count in range(min(self._max_words, len(words)), 0, -1):
            same = self._by_name.get(" ".join(words[:count]))
            if same:
                allowed = [kw for kw in same if section in kw.sections]
                return (allowed or same)[0], count
        return None

    def suggest(self, words: list[str], section: Section) -> str | None:
        """The closest supported keyword allowed in ``section``, for an unknown one."""
        candidates = [kw.name for kw in self if kw.supported and section in kw.sections]
        if self.is_family(words[0]) and len(words) > 1:
            prefix = words[0] + " "
            family = [c[len(prefix) :] for c in candidates if c.startswith(prefix)]
            found = difflib.get_close_matches(words[1], family, n=1, cutoff=0.6)
            if found:
                return prefix + found[0]
        firsts = sorted({c.split()[0] for c in candidates})
        found = difflib.get_close_matches(words[0], firsts, n=1, cutoff=0.6)
        return found[0] if found else None
