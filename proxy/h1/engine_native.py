"""The ``native`` engine, the default where built: ``proxy._h1head`` (``ext/h1head.c``) scans heads, in C.

Contract: ``ENGINE`` satisfies ``proxy.h1.Engine``; importing this module raises ImportError when the
extension is not built (``proxy.h1`` then leaves ``native`` out of the registry). The message loop,
the rules and the bodies are ``proxy.h1.strict``'s, as for the other engines; what differs is how a
head block becomes a head:

- one C call (``parse_request`` / ``parse_response``) does what the grammar scan, a tokenizer and
  ``_framing_fields`` do for the other engines: it finds the block, checks it against exactly the
  grammar of ``proxy.h1.grammar`` and the header-count limit, splits the start line and the headers
  (values without the OWS around them, as the other engines give them), and collects the framing
  headers. For a *plain* head (simple Content-Length, ``Transfer-Encoding: chunked``, a one-token
  Connection, and for a request a simple Host, an origin-form target and no Expect; the exact list
  is in ``ext/h1head.c``) it returns the three facts the framing follows from, and ``_request`` /
  ``_response`` build the head from them with no loop over the headers, by the shared rules'
  framing table (``tests/test_h1_native.py`` checks that the heads are equal); for any other head
  it returns ``_framing_fields``'s dict and the shared rules (``request_head`` /
  ``response_head``) decide, as for every engine.
- anything the scanner does not accept (an incomplete block, a grammar violation, too many lines,
  an unknown method) comes back as None and goes to the shared reader's general path
  (``RequestReader._parse`` and friends), which waits or raises the exact ProtocolError. So the C
  code never decides an error or a status.
- ``feed`` has a fast path: when nothing is buffered and a head starts the data, the head is parsed
  straight from ``data`` (no copy, no loop). When ``data`` is exactly one message (a head without
  body, or with all of its Content-Length body) the reader's state is set inline (what ``_accept``,
  ``_begin`` and ``_message_done`` would do); otherwise the message goes to ``_accept`` and what
  follows the head to the shared loop (``_run_from``). An error goes back to the general path.

``tests/test_h1_parse.py`` runs every case on all engines (fed whole and byte by byte, plus a
mutation differential); ``tests/test_h1_native.py`` holds the scanner to the grammar directly.
"""

from __future__ import annotations

from typing import Final

from proxy._h1head import parse_request, parse_response
from proxy.h1.base import Limits, ProtocolError
from proxy.h1.grammar import check_target
from proxy.h1.strict import (
    _BODY,
    _CLOSED,
    _HEAD,
    _LENGTH,
    _NONE,
    _NOTHING,
    Found,
    RequestReader,
    ResponseReader,
    plain_request,
    plain_response,
    request_head,
    response_head,
)
from proxy.message import Data, EndOfMessage, Event, Headers, RequestHead, ResponseHead

NAME: Final = "native"
_V11: Final = b"1.1"

# What the scanner returns for an accepted head: (end, method or status, target or reason, version,
# headers, found, length, chunked, connection). ``found`` is None for a plain head, and then
# ``length`` (int or None), ``chunked`` and ``connection`` (0 none, 1 close, 2 keep-alive) are
# exact; otherwise ``found`` is ``_framing_fields(headers)``.
# ``wire``: the block's bytes when the head is *bare* (relayable unchanged: ``message.RequestHead.wire``).
RequestScan = tuple[int, bytes, bytes, bytes, Headers, Found | None, int | None, bool, int, bytes | None]
ResponseScan = tuple[int, int, bytes, bytes, Headers, Found | None, int | None, bool, int, bytes | None]


def _request(scan: RequestScan) -> RequestHead:
    """The head of a scanned request block (ProtocolError from the shared rules)."""
    _, method, target, version, headers, found, length, chunked, connection, wire = scan
    if found is not None:
        if target[0] != 0x2F or method == b"CONNECT":
            check_target(method, target)
        return request_head(method, target, version, headers, found)
    return plain_request(method, target, version, headers, (length, chunked, connection), wire)


def _response(scan: ResponseScan, method: bytes) -> ResponseHead:
    """The head of a scanned response block, for a request with ``method`` (ProtocolError: 502)."""
    _, status, reason, version, headers, found, length, chunked, connection, wire = scan
    if found is not None:
        return response_head(status, reason, version, headers, method, found)
    return plain_response(status, reason, version, headers, method, (length, chunked, connection), wire)


def _tokenize_request(block: bytes) -> tuple[bytes, bytes, bytes, Headers]:
    # Only reached when the scanner refused a block that the grammar scan accepted: never, unless
    # the two disagree (which the reader then reports as "native refused the head").
    scan = parse_request(block, 0, len(block), len(block))
    if scan is None:
        raise ValueError("the native scanner refused the block")
    return scan[1], scan[2], scan[3], scan[4]


def _tokenize_response(block: bytes, method: bytes) -> tuple[int, bytes, bytes, Headers]:
    scan = parse_response(block, 0, len(block), len(block))
    if scan is None:
        raise ValueError("the native scanner refused the block")
    return scan[1], scan[2], scan[3], scan[4]


class NativeRequestReader(RequestReader):
    """``RequestReader`` whose heads come from ``parse_request``, with ``feed``'s fast path."""

    __slots__ = ("_max_head", "_max_headers")

    def __init__(self, limits: Limits) -> None:
        super().__init__(_tokenize_request, limits, NAME, as_received=True)
        self._max_head = limits.max_head
        self._max_headers = limits.max_headers

    def feed(self, data: bytes) -> list[Event]:
        if self._mode is _HEAD and not self._buf and self._error is None:
            if not data:
                return []  # nothing buffered, nothing new: nothing to find (the mux's idle check)
            scan = parse_request(data, 0, self._max_head, self._max_headers)
            if scan is not None:
                try:
                    head = _request(scan)
                except ProtocolError:
                    return super().feed(data)  # which raises it as the general path does
                end = scan[0]
                body, rest = head.body, len(data) - end
                # ``data`` is the whole message: a head without a body, or with ``rest`` as its body.
                if head.upgrade is None and (
                    (body is _NONE and not rest) or (body is _LENGTH and head.content_length == rest)
                ):
                    # ``_accept``, ``_begin`` and ``_Length`` inline (no calls).
                    self._skipped = 0
                    self._mode = self._after = _HEAD if head.keep_alive else _CLOSED
                    return [head, Data(data[end:]), EndOfMessage()] if rest else [head, EndOfMessage()]
                events: list[Event] = []
                self._accept(head, events)
                if end == len(data) and self._mode is not _BODY:  # type: ignore[comparison-overlap]  # (_accept moved it)
                    return events
                return self._run_from(data, end, events)
        return super().feed(data)

    def _parse(self, block: bytes, events: list[Event]) -> None:
        scan = parse_request(block, 0, self._max_head, self._max_headers)
        if scan is None:  # the general path says what is wrong
            super()._parse(block, events)
            return
        self._accept(_request(scan), events)


class NativeResponseReader(ResponseReader):
    """``ResponseReader`` whose heads come from ``parse_response``, with ``feed``'s fast path."""

    __slots__ = ("_max_head", "_max_headers")

    def __init__(self, limits: Limits) -> None:
        super().__init__(_tokenize_response, limits, NAME, as_received=True)
        self._max_head = limits.max_head
        self._max_headers = limits.max_headers

    def feed(self, data: bytes) -> list[Event]:
        if self._mode is _HEAD and not self._buf and self._error is None and self._methods:
            scan = parse_response(data, 0, self._max_head, self._max_headers)
            if scan is not None:
                methods = self._methods
                try:
                    head = _response(scan, methods[0])
                except ProtocolError:
                    return super().feed(data)  # which raises it as the general path does
                end = scan[0]
                body, rest = head.body, len(data) - end
                # ``data`` is the whole of a final response: without a body, or with ``rest`` as its body.
                if head.status >= 200 and (
                    (body is _NONE and not rest) or (body is _LENGTH and head.content_length == rest)
                ):
                    # ``_accept``, ``_begin``, ``_Length`` and ``_message_done`` inline (no calls).
                    self._final = True
                    self._mode = self._after = _HEAD if head.keep_alive else _CLOSED
                    methods.popleft()
                    if not methods:
                        self._first = _NOTHING
                    return [head, Data(data[end:]), EndOfMessage()] if rest else [head, EndOfMessage()]
                events: list[Event] = []
                self._accept(head, events)
                if end == len(data) and self._mode is not _BODY:  # type: ignore[comparison-overlap]  # (_accept moved it)
                    return events
                return self._run_from(data, end, events)
        return super().feed(data)

    def _parse(self, block: bytes, events: list[Event]) -> None:
        scan = parse_response(block, 0, self._max_head, self._max_headers)
        if scan is None:
            super()._parse(block, events)
            return
        self._accept(_response(scan, self._methods[0]), events)


class NativeEngine:
    name = NAME

    def request_parser(self, limits: Limits = Limits()) -> NativeRequestReader:  # noqa: B008 (frozen)
        return NativeRequestReader(limits)

    def response_parser(self, limits: Limits = Limits()) -> NativeResponseReader:  # noqa: B008 (frozen)
        return NativeResponseReader(limits)


ENGINE: Final = NativeEngine()
