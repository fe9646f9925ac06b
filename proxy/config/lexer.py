"""Splitting one configuration line into words, with HAProxy's quoting, escaping and ``${ENV}`` rules.

Theory of operation. A line is read left to right by a small state machine (outside quotes, inside
double quotes, inside single quotes) that emits characters into the current word:

- Blanks (space, tab) separate words outside quotes. ``#`` outside quotes ends the line, even in the
  middle of a word (``\\#`` is a literal ``#``).
- ``"..."`` keeps blanks and ``#``; backslash escapes and ``$`` variables are still interpreted.
  ``'...'`` keeps everything literally (no escape, no variable). Quotes may start or stop inside a
  word (``pre"fix  x"post`` is one word); ``""`` is an empty word.
- Outside single quotes a backslash escapes ``\\ `` (space), ``\\\\``, ``\\#``, ``\\'``, ``\\"``,
  ``\\t``, ``\\n``, ``\\r`` and ``\\xHH`` (the character U+00HH); ``\\$`` is a literal ``$`` inside
  double quotes. Any other backslash is kept as it is, so regular expressions such as ``\\.`` or
  ``\\d`` survive unquoted.
- Environment variables are expanded inside double quotes: ``$NAME``, ``${NAME}``,
  ``${NAME-default}`` (the default replaces a variable that is not set, not an empty one) and
  ``${NAME[*]}`` (the value split on blanks into several words). ``${.FILE}``, ``${.LINE}`` and
  ``${.SECTION}`` name the current file, line and section. A variable that is not set expands to
  nothing, as in HAProxy.
- Extension to HAProxy: the brace form ``${NAME}`` (with its ``-default`` and ``[*]`` variants) is
  also expanded outside quotes, where HAProxy would keep it literally. A ``$`` that does not start
  ``${<letter or _>`` stays literal there, so regular expressions ending in ``$`` are unaffected.

Errors (each raised as ``DirectiveError``): an unmatched quote or brace, a bad ``\\xHH``, a ``$``
inside double quotes that does not start a variable name, a trailing backslash (HAProxy has no line
continuation; the backslashes in its documentation only wrap long examples), and, as HAProxy does,
any empty word: an empty word would silently end the argument list, which is how an unset variable
turns into a wrong configuration, so it is refused with a hint naming the variable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from proxy.config.errors import DirectiveError

_HEX = "0123456789abcdefABCDEF"
_SIMPLE_ESCAPES = {" ": " ", "\\": "\\", "t": "\t", "n": "\n", "r": "\r", "#": "#", "'": "'", '"': '"'}


def iter_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for each line of a file, 1-based, without its line ending."""
    for lineno, line in enumerate(text.split("\n"), start=1):
        yield lineno, line.rstrip("\r")


def _name_start(c: str) -> bool:
    return c.isascii() and (c.isalpha() or c == "_")


def _name_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


class _Splitter:
    """One line's state machine; ``run`` returns the words. Used once per line."""

    __slots__ = (
        "cur",
        "dquote",
        "env",
        "file",
        "in_arg",
        "line",
        "lineno",
        "pos",
        "quote_empty",
        "section",
        "unset_vars",
        "words",
    )

    def __init__(self, line: str, env: Mapping[str, str], file: str, lineno: int, section: str) -> None:
        self.line = line
        self.env = env
        self.file = file
        self.lineno = lineno
        self.section = section
        self.words: list[str] = []
        self.cur: list[str] = []
        self.in_arg = False
        self.dquote = False
        self.quote_empty = False  # a quote was opened and nothing emitted since
        self.pos = 0
        self.unset_vars: list[tuple[int, str]] = []  # (word index, name) of unset variables

    def emit(self, text: str) -> None:
        self.cur.append(text)
        self.in_arg = True
        self.quote_empty = False

    def end_word(self) -> None:
        if self.in_arg:
            self.words.append("".join(self.cur))
        self.cur = []
        self.in_arg = False

    def run(self) -> list[str]:
        line, n = self.line, len(self.line)
        while self.pos < n:
            c = line[self.pos]
            if c == "'" and not self.dquote:
                self.single_quoted()
            elif c == '"':
                self.dquote = not self.dquote
                if self.dquote:
                    self.quote_empty = True
                elif self.quote_empty:
                    self.in_arg = True  # "" is an (empty) word
                self.pos += 1
            elif c == "\\":
                self.escape()
            elif c in " \t" and not self.dquote:
                self.end_word()
                self.pos += 1
            elif c == "#" and not self.dquote:
                break
            elif c == "$" and (self.dquote or line.startswith("${", self.pos)):
                self.variable()
            else:
                self.emit(c)
                self.pos += 1
        if self.dquote:
            raise DirectiveError("unmatched double quote")
        self.end_word()
        self.check_empty()
        return self.words

    def single_quoted(self) -> None:
        end = self.line.find("'", self.pos + 1)
        if end < 0:
            raise DirectiveError("unmatched single quote")
        self.in_arg = True  # '' is an (empty) word
        if end > self.pos + 1:
            self.emit(self.line[self.pos + 1 : end])
        self.pos = end + 1

    def escape(self) -> None:
        line, i = self.line, self.pos
        if i + 1 >= len(line):
            raise DirectiveError("trailing backslash: a configuration line cannot continue on the next line")
        nxt = line[i + 1]
        if nxt in _SIMPLE_ESCAPES:
            self.emit(_SIMPLE_ESCAPES[nxt])
            self.pos = i + 2
        elif nxt == "x":
            hexa = line[i + 2 : i + 4]
            if len(hexa) != 2 or any(h not in _HEX for h in hexa):
                raise DirectiveError(f"invalid hexadecimal escape '{line[i : i + 4]}' (expected \\xHH)")
            self.emit(chr(int(hexa, 16)))
            self.pos = i + 4
        elif nxt == "$":
            # Inside double quotes "\$" is a dollar; outside, HAProxy keeps both characters.
            self.emit("$" if self.dquote else "\\$")
            self.pos = i + 2
        else:
            self.emit("\\")  # not an escape sequence (\1, \d, \. ...): kept as is
            self.pos = i + 1

    def variable(self) -> None:
        line, start = self.line, self.pos
        i = start + 1
        brace = i < len(line) and line[i] == "{"
        if brace:
            i += 1
        if i >= len(line) or not (_name_start(line[i]) or line[i] == "."):
            if not self.dquote:  # outside quotes only "${<name>" expands: anything else is literal
                self.emit("$")
                self.pos = start + 1
                return
            raise DirectiveError(
                f"invalid environment variable name at '{line[start : i + 1]}'"
                " (write \\$ for a literal dollar inside double quotes)"
            )
        name_start = i
        i += 1
        while i < len(line) and _name_char(line[i]):
            i += 1
        name = line[name_start:i]
        value = self.lookup(name)
        expand_words = False
        if brace:
            if line.startswith("[*]", i):
                expand_words = True
                i += 3
            elif i < len(line) and line[i] == "[":
                raise DirectiveError(f"invalid word expansion in '{line[start : i + 4]}' (expected [*])")
            if i < len(line) and line[i] == "-":
                close = line.find("}", i)
                if close < 0:
                    raise DirectiveError(f"unmatched brace in '{line[start:]}'")
                if value is None:
                    value = line[i + 1 : close]
                i = close
            if i >= len(line) or line[i] != "}":
                raise DirectiveError(f"unmatched brace in '{line[start:]}'")
            i += 1
        self.pos = i
        if expand_words:
            self.quote_empty = False  # "${UNSET[*]}" makes no word at all, not an empty one
        if value is None:
            self.unset_vars.append((len(self.words), name))
            if not expand_words:
                self.in_arg = True  # an unset variable still counts as a (possibly empty) word
            return
        if not expand_words:
            if value:
                self.emit(value)
            else:
                self.in_arg = True
            return
        if value[:1].isspace():
            self.end_word()
        for k, part in enumerate(value.split()):
            if k:
                self.end_word()
            self.emit(part)
        if value[-1:].isspace():
            self.end_word()

    def lookup(self, name: str) -> str | None:
        if name.startswith("."):
            if name == ".FILE":
                return self.file
            if name == ".LINE":
                return str(self.lineno)
            if name == ".SECTION":
                return self.section
            raise DirectiveError(f"unknown internal variable '{name}' (known: .FILE, .LINE, .SECTION)")
        return self.env.get(name)

    def check_empty(self) -> None:
        for index, word in enumerate(self.words):
            if word:
                continue
            hint = ""
            unset = [name for k, name in self.unset_vars if k == index]
            if unset:
                hint = (
                    f" because environment variable '{unset[0]}' is not set"
                    f' (give it a value, or a default: "${{{unset[0]}-value}}")'
                )
            raise DirectiveError(
                f"argument {index + 1} is empty{hint}; an empty word would end the argument list"
            )


def split_words(
    line: str, env: Mapping[str, str], file: str = "", lineno: int = 0, section: str = ""
) -> list[str]:
    """The words of one line (an empty list for a blank or comment line).

    ``env`` supplies the environment variables; ``file``, ``lineno`` and ``section`` feed
    ``${.FILE}``, ``${.LINE}`` and ``${.SECTION}``. Raises ``DirectiveError`` on a lexical error.
    """
    return _Splitter(line, env, file, lineno, section).run()
