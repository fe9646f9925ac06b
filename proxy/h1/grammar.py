"""The HTTP/1 head grammar: what a head block, a header line or a chunk line may look like.

Contract. Everything here is pure and stateless: regular expressions compiled once, constants, and
functions over bytes that either answer or raise ``ProtocolError`` with the ``status`` they are
given (400 for a request, 502 for a response). Nothing here decides framing or keeps a connection's
state: ``proxy.h1.strict`` applies the semantic rules and runs the message loop, and
``proxy.h1.bodies`` decodes bodies; both scan with the expressions below, so a head, a chunk line
and a trailer section are held to one grammar whichever engine tokenizes the head. The ``native``
engine's scanner (``ext/h1head.c``) implements ``_REQUEST_HEAD``/``_RESPONSE_HEAD``, the value
stripping of ``_FIELD`` and ``KNOWN_METHODS`` in C; ``tests/test_h1_native.py`` holds it to them.

- ``_REQUEST_HEAD`` / ``_RESPONSE_HEAD``: the *grammar scan* of a whole head block (start line
  through the empty line, CRLF only), one regular expression each; a block that passes is handed to
  an engine, whose sole job is to turn it into fields. ``_REQUEST_LINE_RE`` / ``_STATUS_LINE_RE``
  and ``_explain`` (error path only) say what is wrong with a block that does not pass.
- ``_FIELDS_RE`` / ``_FIELD``: header (and trailer) lines, then the empty line; one field.
- ``_CHUNK_LINE``: a chunk-size line (``proxy._chunked`` in ``ext/chunked.c`` implements exactly it).
- ``KNOWN_METHODS``: the methods llhttp knows, so all engines accept the same set (others: 501).
- ``check_target``: the request-target form must suit the method (405 for a well-formed CONNECT).
- ``_bare_lf``: whether a range holds an LF that is not part of a CRLF.
- ``canonical_head``: the equivalent block to retry an engine with after it refused one, and
  ``_content_length_value``, the one value of the Content-Length headers (1*15DIGIT), it relies on.

Choices where HAProxy or the RFCs leave room (``tests/data/h1`` pins each one):

- bare LF anywhere in a head, chunk line or trailer section, and obs-fold: rejected, never repaired;
- a value may hold SP, HT, VCHAR and obs-text; OWS around it is not part of it, so
  ``Transfer-Encoding:<HT>chunked<SP>`` is ``chunked`` (the proxy re-serializes it anyway);
- Content-Length is 1*15DIGIT; a list or repeated headers collapse when every element is the same
  string (``5, 5``) and are rejected otherwise (``5, 05`` too, as h11 does);
- targets: origin-form; ``*`` for OPTIONS only; absolute-form for ``http``/``https`` without
  userinfo; authority-form for CONNECT only. ``#``, ``<``, ``>``, ``\\``, ``^``, backtick, ``{``,
  ``}``, ``|`` and bytes outside VCHAR are rejected;
- chunk sizes: 1-15 hex digits, no prefix, optional BWS before CRLF; extensions must be well formed
  (token or quoted-string values) and are dropped.
"""

from __future__ import annotations

import re

from proxy.h1.base import ProtocolError

_TCHAR = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"
# VCHAR minus the characters HAProxy refuses in a request target (fragment, and issue #2906's list).
_TARGET_CHAR = rb"[!\"$-;=?-\[\]_a-z~]"
_REQUEST_LINE = rb"(" + _TCHAR + rb"+) (" + _TARGET_CHAR + rb"+) HTTP/1\.[01]\r\n"
_STATUS_LINE = rb"HTTP/1\.[01] [1-9][0-9][0-9](?: [\t \x21-\x7e\x80-\xff]*)?\r\n"
# Header lines then the empty line. A value excludes CTLs other than HT, so CR, LF and NUL too.
_FIELDS = rb"(?:" + _TCHAR + rb"+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*\r\n"
_REQUEST_HEAD = re.compile(_REQUEST_LINE + _FIELDS)
_RESPONSE_HEAD = re.compile(_STATUS_LINE + _FIELDS)
_REQUEST_LINE_RE = re.compile(_REQUEST_LINE)
_STATUS_LINE_RE = re.compile(_STATUS_LINE)
_FIELDS_RE = re.compile(_FIELDS)
_FIELD = re.compile(rb"(" + _TCHAR + rb"+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*\r\n")
_IP_LITERAL = rb"\[[0-9A-Fa-f:.]+\]"
_HOST = re.compile(rb"(?:" + _IP_LITERAL + rb"|[-A-Za-z0-9._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_AUTHORITY = rb"(?:" + _IP_LITERAL + rb"|[-A-Za-z0-9._~!$&'()*+,;=%]+)"
# Groups: scheme, host, port (None without a colon; b"" for an empty one).
_ABSOLUTE_FORM = re.compile(
    rb"([hH][tT][tT][pP][sS]?)://(" + _AUTHORITY + rb")(?::([0-9]*))?(?:[/?].*)?", re.S
)
_DEFAULT_PORT = {b"http": b"80", b"https": b"443"}
_AUTHORITY_FORM = re.compile(_AUTHORITY + rb":[0-9]+")
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,15}")
# What the native scanner calls a simple Host (a subset of ``_HOST``: no IP literal), and the
# Connection line a bare head is relayed without (names are tokens: no space before the colon).
_SIMPLE_HOST = re.compile(rb"[-A-Za-z0-9._~!$&'()*+,;=%]*(?::[0-9]*)?")
_CONNECTION_LINE = re.compile(rb"(?<=\r\n)[Cc][Oo][Nn][Nn][Ee][Cc][Tt][Ii][Oo][Nn]:[^\r]*\r\n")
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[ \t]*" + _TCHAR + rb"+(?:[ \t]*=[ \t]*(?:" + _TCHAR + rb"+|"
    + _QUOTED + rb"))?)*[ \t]*"
)  # fmt: skip

# The methods llhttp knows (it refuses any other token), so both engines accept the same set.
KNOWN_METHODS = frozenset(
    b"GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH PURGE QUERY ACL BIND CHECKOUT COPY LINK "
    b"LOCK MERGE MKACTIVITY MKCALENDAR MKCOL MOVE PROPFIND PROPPATCH REBIND REPORT SEARCH UNBIND "
    b"UNLINK UNLOCK".split()
)
_TCHAR_BYTES = frozenset(b"-!#$%&'*+.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def check_target(method: bytes, target: bytes) -> None:
    """The request-target form must suit the method (RFC 9112 §3.2, HAProxy's table)."""
    if target[0] == 0x2F:  # origin-form
        if method == b"CONNECT":
            raise ProtocolError("CONNECT needs an authority-form target")
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise ProtocolError("asterisk-form is for OPTIONS only")
        return
    if method == b"CONNECT":
        if _AUTHORITY_FORM.fullmatch(target):
            raise ProtocolError("CONNECT is not supported", 405)
        raise ProtocolError("CONNECT needs an authority-form target host:port")
    if _ABSOLUTE_FORM.fullmatch(target) is None:
        raise ProtocolError(f"invalid request target {target[:64]!r}")


def _bare_lf(buf: bytes, start: int, stop: int) -> bool:
    return buf.count(b"\n", start, stop) != buf.count(b"\r\n", start, stop)


def _explain(block: bytes, start: int, status: int) -> ProtocolError:
    """Error path only: what is wrong with the header (or trailer) lines of ``block[start:]``."""
    if _bare_lf(block, 0, len(block)):
        return ProtocolError("bare LF", status)
    for line in block[start:].split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            return ProtocolError("obs-fold (a line starting with whitespace)", status)
        if line and _FIELDS_RE.fullmatch(line + b"\r\n\r\n") is None:
            return ProtocolError(f"invalid header line {line[:64]!r}", status)
    return ProtocolError("invalid header section", status)


def canonical_head(block: bytes, status: int) -> bytes | None:
    """``block`` with trailing OWS dropped from values and identical Content-Lengths merged.

    Both are legal and mean the same, but llhttp refuses ``5, 5``, repeated Content-Length headers
    and ``Transfer-Encoding: chunked<HT>``, where h11 accepts them (merging Content-Length the same
    way). So when an engine refuses a block, the reader retries once with this form (None: it is
    the same block). Conflicting or invalid Content-Length values raise ProtocolError.
    """
    lines = block.split(b"\r\n")
    seen: bytes | None = None
    changed = False
    out = [lines[0]]
    for line in lines[1:-2]:
        name, _, value = line.partition(b":")
        if name.lower() != b"content-length":
            stripped = value.rstrip(b" \t")
            changed |= stripped != value
            out.append(name + b":" + stripped)
            continue
        digits = _content_length_value([value], status)
        if seen is None:
            seen = digits
            changed |= value.strip(b" \t") != digits
            out.append(name + b": " + digits)
        elif seen != digits:
            raise ProtocolError("conflicting Content-Length", status)
        else:
            changed = True
    return b"\r\n".join([*out, b"", b""]) if changed else None


def _content_length_value(values: list[bytes], status: int) -> bytes:
    """The one value of the Content-Length headers ``values`` (a list of one string collapses)."""
    if len(values) == 1 and len(values[0]) <= 15 and values[0].isdigit():  # the usual case, at once
        return values[0]  # (``bytes.isdigit``: ASCII digits only, and False when empty)
    elements = {e.strip(b" \t") for v in values for e in v.split(b",")}
    if len(elements) != 1:
        raise ProtocolError("conflicting Content-Length", status)
    digits = elements.pop()
    if _CONTENT_LENGTH.fullmatch(digits) is None:
        raise ProtocolError(f"invalid Content-Length {digits[:32]!r}", status)
    return digits
