"""Configuration errors: how a problem found while loading a configuration is worded and carried.

Contract:

- Every message is one line, worded after HAProxy's own alerts so that people who know HAProxy
  recognise them, and names the file and line (``[conf/x.cfg:12]``) and the keyword, quoted, that it
  is about. A message about a directive reads
  ``[ALERT] config : parsing [conf/x.cfg:12] : 'timeout client': invalid time unit 'sx' in '10sx' ...``;
  a message found after parsing (a dangling backend reference) names the line of the directive that
  made the reference.
- Loading collects every error it can find (it goes on parsing after a bad line) and raises one
  ``ConfigError`` carrying all of them, in file order; ``ConfigError.messages`` is what ``poolproxy -c``
  prints, one per line.
- ``DirectiveError`` is internal: a keyword's parse function raises it with the text after the
  location; the parser adds the location and collects it.
"""

from __future__ import annotations

from proxy.config.model import Where

ALERT = "[ALERT] config : "


class ConfigError(Exception):
    """The configuration cannot be used. ``messages`` lists every problem, one line each."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))

    def __repr__(self) -> str:
        return f"<ConfigError {len(self.messages)} error(s)>"


class DirectiveError(Exception):
    """Raised by a keyword's parse function; ``text`` is the message without its location."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)


def at_line(where: Where, text: str) -> str:
    """An alert about the directive written at ``where``."""
    return f"{ALERT}parsing [{where}] : {text}"


def after_parse(where: Where | None, text: str) -> str:
    """An alert found once every file was read; ``where`` is the directive that caused it."""
    if where is None:
        return f"{ALERT}{text}"
    return f"{ALERT}[{where}] : {text}"


def general(text: str) -> str:
    """An alert with no line to point at (a file that cannot be read, no file at all)."""
    return f"{ALERT}{text}"


class Diagnostics:
    """Collects alerts while loading; ``raise_if_any`` turns them into one ``ConfigError``."""

    __slots__ = ("messages",)

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __repr__(self) -> str:
        return f"<Diagnostics errors={len(self.messages)}>"

    def __bool__(self) -> bool:
        return bool(self.messages)

    def add(self, message: str) -> None:
        self.messages.append(message)

    def raise_if_any(self) -> None:
        if self.messages:
            raise ConfigError(self.messages)
