"""The ``h11`` engine, the reference: h11 tokenizes head blocks.

Contract: ``ENGINE`` satisfies ``proxy.h1.Engine``. The message loop, the rules and the bodies are
``proxy.h1.strict``'s (with ``proxy.h1.grammar`` and ``proxy.h1.bodies``); h11 only sees one
complete head block that already passed the grammar scan. h11 is a two-sided state machine, so each
head gets a fresh ``h11.Connection``: a server-side one for a request; for a response, a client-side
one that first "sends" a request with the expected method (and an upgrade offer, so that a 101 is
legal), whose bytes are thrown away.

h11 merges repeated identical Content-Length values and lower-cases ``Transfer-Encoding: chunked``;
``proxy.h1.strict`` gives the llhttp engine the same results. Since its values are not always the
block's, its readers are not ``as_received``: its heads never carry ``wire`` (always
re-serialised). h11 also refuses an HTTP/1.1 request without Host, which the proxy accepts when
the target is in absolute-form (``strict`` decides): a block without Host is tokenized with a
stand-in Host line, left out of the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import h11

try:  # h11's head readers (h11 >= 0.14): the fast way in; the Connection below is the fallback
    from h11._readers import (
        maybe_read_from_IDLE_client as _READ_REQUEST,
        maybe_read_from_SEND_RESPONSE_server as _READ_RESPONSE,
    )
    from h11._receivebuffer import ReceiveBuffer as _ReceiveBuffer
except ImportError:  # pragma: no cover - another h11 layout
    _READ_REQUEST = _READ_RESPONSE = None  # type: ignore[assignment]

from proxy.h1.base import Limits
from proxy.h1.strict import RequestReader, ResponseReader
from proxy.message import Headers

_UPGRADE_OFFER = [(b"Host", b"upstream"), (b"Connection", b"upgrade"), (b"Upgrade", b"any")]
# A Host line in a block that passed the grammar scan (no space before a colon, no CR in values).
_HOST_LINE = re.compile(rb"\r\n[Hh][Oo][Ss][Tt]:")
_STAND_IN_HOST = b"Host: h11\r\n"


def tokenize_request(block: bytes) -> tuple[bytes, bytes, bytes, Headers]:
    if _HOST_LINE.search(block) is not None:
        return _tokenize_request(block)
    cut = block.index(b"\r\n") + 2
    method, target, version, headers = _tokenize_request(block[:cut] + _STAND_IN_HOST + block[cut:])
    return method, target, version, headers[1:]  # h11 keeps the wire order: the stand-in is first


def _read(reader: Callable[[Any], object], block: bytes) -> object:
    """h11's own head reader on ``block`` (what ``Connection.next_event`` calls for a head), without
    building a ``Connection`` per head: the state machine has nothing to add for one head whose
    framing the proxy decides itself."""
    buf = _ReceiveBuffer()
    buf += block
    try:
        return reader(buf)
    except h11.ProtocolError as exc:
        raise ValueError(str(exc)) from exc


def _tokenize_request(block: bytes) -> tuple[bytes, bytes, bytes, Headers]:
    if _READ_REQUEST is not None:
        event = _read(_READ_REQUEST, block)
    else:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(block) + 1)
        conn.receive_data(block)
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ValueError(str(exc)) from exc
    if not isinstance(event, h11.Request):
        raise ValueError(f"h11 produced {event!r}")
    return event.method, event.target, event.http_version, list(event.headers.raw_items())


def tokenize_response(block: bytes, method: bytes) -> tuple[int, bytes, bytes, Headers]:
    if _READ_RESPONSE is not None:
        event = _read(_READ_RESPONSE, block)
        if not isinstance(event, h11.Response | h11.InformationalResponse):
            raise ValueError(f"h11 produced {event!r}")
        return event.status_code, event.reason, event.http_version, list(event.headers.raw_items())
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=len(block) + 1)
    conn.send(h11.Request(method=method, target=b"/", headers=_UPGRADE_OFFER))
    conn.send(h11.EndOfMessage())
    conn.receive_data(block)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise ValueError(str(exc)) from exc
    if not isinstance(event, h11.Response | h11.InformationalResponse):
        raise ValueError(f"h11 produced {event!r}")
    headers = list(event.headers.raw_items())
    return event.status_code, event.reason, event.http_version, headers


class H11Engine:
    name = "h11"

    def request_parser(self, limits: Limits = Limits()) -> RequestReader:  # noqa: B008 (frozen)
        return RequestReader(tokenize_request, limits, self.name)

    def response_parser(self, limits: Limits = Limits()) -> ResponseReader:  # noqa: B008 (frozen)
        return ResponseReader(tokenize_response, limits, self.name)


ENGINE = H11Engine()
