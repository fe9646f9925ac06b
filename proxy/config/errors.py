"""Configuration errors: how a problem found while loading a configuration is worded and carried.

Contract:

- Two levels, as in HAProxy: an ``[ALERT]`` is an error (the configuration is refused, exit 1); a
  ``[WARNING]`` says that something is accepted but ignored or probably wrong (a keyword with no effect
  in its section, a proxy without timeouts...). Warnings do not refuse the configuration unless
  ``zero-warning`` is set in ``global`` or ``-dW`` is given on the command line.
- Every alert is one line, worded after HAProxy's own alerts so that people who know HAProxy
  recognise them, and names the file and line (``[conf/x.cfg:12]``) and the keyword, quoted, that it
  is about. A message about a directive reads
  ``[ALERT] config : parsing [conf/x.cfg:12] : 'timeout client': invalid time unit 'sx' in '10sx' ...``;
  a message found after parsing (a dangling backend reference) names the line of the directive that
  made the reference.
- Loading collects every error it can find (it goes on parsing after a bad line) and raises one
  ``ConfigError`` carrying all of them, in file order; ``ConfigError.messages`` are the alerts,
  ``ConfigError.warnings`` the warnings, ``ConfigError.lines`` both in the order found (what
  ``poolproxy -c`` prints). A warning may span several lines (HAProxy's "missing timeouts" does: its
  continuation lines start with ``   | ``); a loaded ``Config`` keeps its warnings in ``warnings``.
- ``DirectiveError`` is internal: a keyword's parse function raises it with the text after the
  location; the parser adds the location and collects it.
"""

from __future__ import annotations

from proxy.config.model import Where

ALERT = "[ALERT] config : "
WARNING = "[WARNING] config : "
ZERO_WARNING = f"{ALERT}Some warnings were found and 'zero-warning' is set. Aborting."


class ConfigError(Exception):
    """The configuration cannot be used. ``messages`` lists every problem, one line each;
    ``warnings`` the warnings found too, ``lines`` alerts and warnings in the order found."""

    def __init__(
        self, messages: list[str], warnings: list[str] | None = None, lines: list[str] | None = None
    ) -> None:
        self.messages = list(messages)
        self.warnings = list(warnings or [])
        self.lines = list(lines) if lines is not None else [*self.warnings, *self.messages]
        super().__init__("\n".join(self.messages))

    def __repr__(self) -> str:
        return f"<ConfigError {len(self.messages)} error(s) {len(self.warnings)} warning(s)>"


class DirectiveError(Exception):
    """Raised by a keyword's parse function; ``text`` is the message without its location."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)


def at_line(where: Where, text: str, level: str = ALERT) -> str:
    """An alert (or, with ``level=WARNING``, a warning) about the directive written at ``where``."""
    return f"{level}parsing [{where}] : {text}"


def after_parse(where: Where | None, text: str, level: str = ALERT) -> str:
    """An alert (or warning) found once every file was read; ``where`` is the directive (or the
    section) that caused it."""
    if where is None:
        return f"{level}{text}"
    return f"{level}[{where}] : {text}"


def general(text: str) -> str:
    """An alert with no line to point at (a file that cannot be read, no file at all)."""
    return f"{ALERT}{text}"


class Diagnostics:
    """Collects alerts and warnings while loading; ``raise_if_any`` turns the alerts into one
    ``ConfigError``. True when there is an alert (warnings alone do not count)."""

    __slots__ = ("lines", "messages", "warnings")

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.warnings: list[str] = []
        self.lines: list[str] = []

    def __repr__(self) -> str:
        return f"<Diagnostics errors={len(self.messages)} warnings={len(self.warnings)}>"

    def __bool__(self) -> bool:
        return bool(self.messages)

    def add(self, message: str) -> None:
        self.messages.append(message)
        self.lines.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.lines.append(message)

    def raise_if_any(self) -> None:
        if self.messages:
            raise ConfigError(self.messages, self.warnings, self.lines)
