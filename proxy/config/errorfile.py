"""``errorfile``, ``errorfiles`` and the ``http-errors`` section: pages that replace the proxy's own.

An error file holds a whole HTTP/1 response, as in HAProxy: a status line (``HTTP/1.x <code>
[<reason>]``), header lines, an empty line, the body. It is read and checked when the configuration
is loaded (a chroot does not matter then, nor a later change of the file) and kept as a
``model.ErrorPage``. Checks, with HAProxy's messages: the status code configured must be one HAProxy
can generate (``HANDLED``); the file must open; its head must parse (CRLF or bare LF line ends, token
header names, no line folding); a ``Content-Length`` must equal the body's size; chunked bodies are
not supported. An empty file is accepted: it means "close without answering".

Which page answers is decided per exchange by the stream (the backend's pages first, then the
frontend's: HAProxy's order); ``errorfiles <name> [<code>...]`` imports from an ``http-errors``
section, in the order written with the ``errorfile`` lines (a later line overrides an earlier one),
resolved once every file was read, since the section may be declared later.
"""

from __future__ import annotations

import re

from proxy.config.errors import DirectiveError
from proxy.config.kwtypes import ALL_PROXIES, Directive, Keyword, Section, SectionState
from proxy.config.model import Config, ErrorfilesImport, ErrorPage, Proxy, Where
from proxy.config.timeunit import parse_int

# The statuses HAProxy lets an errorfile replace (it generates those itself).
HANDLED = frozenset({200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 500, 501, 502, 503, 504})
HTTP_ERRORS = frozenset({Section.HTTP_ERRORS})
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] ([1-5][0-9][0-9])(?: (.*))?$")
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class PageError(ValueError):
    """The file is not a response HAProxy would accept; the text says why."""


def parse_page(raw: bytes, source: str = "") -> ErrorPage:
    """An ``ErrorPage`` from a file's bytes; ``PageError`` if it is not a valid HTTP/1 response."""
    if not raw:
        return ErrorPage(status=0, reason=b"", headers=(), body=b"", source=source)
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n")
    if crlf < 0 and lf < 0:
        raise PageError("unable to parse headers (no empty line after them)")
    end, size = (crlf, 4) if crlf >= 0 and (lf < 0 or crlf < lf) else (lf, 2)
    head, body = raw[:end], raw[end + size :]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    status_line = _STATUS_LINE.match(lines[0])
    if status_line is None:
        raise PageError(f"invalid status line {lines[0][:60]!r} (expected HTTP/1.x <code> [<reason>])")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise PageError(f"unable to parse headers (invalid line {line[:60]!r})")
        if b"\r" in value or b"\0" in value:
            raise PageError("unable to parse headers (CR or NUL in a value)")
        headers.append((name, value.strip(b" \t")))
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            raise PageError("chunked bodies are not supported in an error file (give a Content-Length)")
        if lower == b"content-length" and (not value.isdigit() or int(value) != len(body)):
            raise PageError(
                "payload size does not match the announced content-length"
                f" ({len(body)} != {value.decode('latin-1')})"
            )
    reason = status_line.group(2) or b""
    return ErrorPage(int(status_line.group(1)), reason.strip(), tuple(headers), body, source)


def _load(st: SectionState, d: Directive) -> tuple[int, ErrorPage]:
    if len(d.args) != 2:
        raise DirectiveError("errorfile : expects <status_code> and <file> as arguments.")
    try:
        code = parse_int(d.args[0], 100, 599)
    except ValueError:
        code = -1
    if code not in HANDLED:
        raise DirectiveError(f"errorfile : status code '{d.args[0]}' not handled.")
    path = st.path(d.args[1])
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        raise DirectiveError(f"errorfile : error opening file '{d.args[1]}'.") from None
    try:
        return code, parse_page(raw, path)
    except PageError as exc:
        raise DirectiveError(f"errorfile : '{d.args[1]}': {exc}") from None


def _errorfile(st: SectionState, d: Directive) -> None:
    st.px.error_sources.append(_load(st, d))


def _errorfiles(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail("expects <name> as argument, then optional status codes: errorfiles <name> [<code>...]")
    codes = []
    for text in d.args[1:]:
        try:
            code = parse_int(text, 100, 599)
        except ValueError:
            code = -1
        if code not in HANDLED:
            raise DirectiveError(f"errorfiles : status code '{text}' not handled.")
        codes.append(code)
    st.px.error_sources.append(ErrorfilesImport(d.args[0], codes, d.where))


def _section_errorfile(st: SectionState, d: Directive) -> None:
    assert st.http_errors is not None
    code, page = _load(st, d)
    st.http_errors[code] = page


def open_http_errors(
    cfg: Config, name: str, where: Where, declared: dict[str, Where]
) -> dict[int, ErrorPage]:
    """``http-errors <name>``: a new, empty section (its ``errorfile`` lines fill the dict)."""
    if not name:
        raise DirectiveError("'http-errors' needs a name: http-errors <name>")
    if name in declared:
        raise DirectiveError(f"http-errors section '{name}' already exists (declared at {declared[name]}).")
    declared[name] = where
    pages: dict[int, ErrorPage] = {}
    cfg.http_errors[name] = pages
    return pages


def resolve(cfg: Config, px: Proxy) -> tuple[list[str], list[str]]:
    """Fill ``px.errorfiles`` from its ``errorfile``/``errorfiles`` lines in order; returns the alerts
    and the warnings (texts with their location, HAProxy's words)."""
    alerts: list[str] = []
    warnings: list[str] = []
    pages: dict[int, ErrorPage] = {}
    for source in px.error_sources:
        if isinstance(source, ErrorfilesImport):
            section = cfg.http_errors.get(source.section)
            if section is None:
                alerts.append(
                    f"proxy '{px.name}': unknown http-errors section '{source.section}' (at {source.where})."
                )
                continue
            for code in source.codes or sorted(section):
                if code in section:
                    pages[code] = section[code]
                else:
                    warnings.append(
                        f"config: proxy '{px.name}' : status '{code}' not declared in http-errors section"
                        f" '{source.section}' (at {source.where})."
                    )
        else:
            code, page = source
            pages[code] = page
    px.errorfiles = pages
    return alerts, warnings


KEYWORDS: list[Keyword] = [
    Keyword("errorfile", ALL_PROXIES, "<code> <file>",
            "Answer with this file (a whole HTTP/1 response) instead of the proxy's own page for <code>.",
            _errorfile),
    Keyword("errorfiles", ALL_PROXIES, "<name> [<code>...]",
            "Import the pages of an http-errors section (all, or the codes listed).", _errorfiles),
    Keyword("errorfile", HTTP_ERRORS, "<code> <file>", "A page of this http-errors section.",
            _section_errorfile),
]  # fmt: skip
