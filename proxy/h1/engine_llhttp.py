"""The ``llhttp`` engine (httptools), the default where ``native`` is not built: llhttp tokenizes
head blocks, in C.

Contract: ``ENGINE`` satisfies ``proxy.h1.Engine``. The message loop, the rules and the bodies are
``proxy.h1.strict``'s (with ``proxy.h1.grammar`` and ``proxy.h1.bodies``); llhttp only ever sees one
complete head block that already passed the grammar scan, so it never has to stop at a message
boundary (where httptools cannot pause) and its upgrade handling reduces to ignoring
``HttpParserUpgrade`` once the head callbacks have run.

llhttp gives header values as received (less the OWS around them: ``on_header`` strips the trailing
one), so the readers are built ``as_received`` and a bare head carries its block as ``wire``.

Cost: one Python callback per header line, for the target or reason and for the message end; a
parser is reused while heads have no body (a new one costs ~0.4 µs).
"""

from __future__ import annotations

import httptools

from proxy.h1.base import Limits
from proxy.h1.strict import RequestReader, ResponseReader
from proxy.message import Headers

_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}
_PAUSED_UPGRADE = "Pause on CONNECT/Upgrade"
_Parser = httptools.HttpRequestParser | httptools.HttpResponseParser


class _Tokenizer:
    """The llhttp protocol object: collects what the head callbacks report.

    A parser whose message llhttp saw complete (a head without body, connection kept) is reused for
    the next head; any other is dropped, since llhttp would now expect the body that the reader
    decodes instead.
    """

    __slots__ = ("complete", "headers", "parser", "text")

    def __init__(self) -> None:
        self.parser: _Parser | None = None
        self.headers: Headers = []
        self.text = b""  # the target (request) or the reason phrase (response)
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.text = url

    on_status = on_url

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp drops the OWS before a value but keeps the OWS after it.
        self.headers.append((name, value.rstrip(b" \t")))

    def on_message_complete(self) -> None:
        self.complete = True

    def _feed(self, parser: _Parser, block: bytes) -> Headers:
        self.parser = None
        headers: Headers = []
        self.headers = headers
        self.text = b""
        self.complete = False
        try:
            parser.feed_data(block)
        except httptools.HttpParserUpgrade:
            pass  # upgrade, CONNECT or 101: the head is complete and this parser done
        except httptools.HttpParserError as exc:
            # A 101 without ``Connection: upgrade`` pauses llhttp all the same, reported as an error.
            if str(exc) != _PAUSED_UPGRADE:
                raise ValueError(str(exc)) from exc
        if self.complete and parser.should_keep_alive():
            self.parser = parser
        return headers


class _RequestTokenizer(_Tokenizer):
    __slots__ = ()

    def tokenize(self, block: bytes) -> tuple[bytes, bytes, bytes, Headers]:
        parser = self.parser
        if not isinstance(parser, httptools.HttpRequestParser):
            parser = httptools.HttpRequestParser(self)
        headers = self._feed(parser, block)
        return parser.get_method(), self.text, _VERSIONS[parser.get_http_version()], headers


class _ResponseTokenizer(_Tokenizer):
    __slots__ = ()

    def tokenize(self, block: bytes, method: bytes) -> tuple[int, bytes, bytes, Headers]:
        # ``method`` does not matter: llhttp only sees the head.
        parser = self.parser
        if not isinstance(parser, httptools.HttpResponseParser):
            parser = httptools.HttpResponseParser(self)
        headers = self._feed(parser, block)
        return parser.get_status_code(), self.text, _VERSIONS[parser.get_http_version()], headers


class LlhttpEngine:
    name = "llhttp"

    def request_parser(self, limits: Limits = Limits()) -> RequestReader:  # noqa: B008 (frozen)
        return RequestReader(_RequestTokenizer().tokenize, limits, self.name, as_received=True)

    def response_parser(self, limits: Limits = Limits()) -> ResponseReader:  # noqa: B008 (frozen)
        return ResponseReader(_ResponseTokenizer().tokenize, limits, self.name, as_received=True)


ENGINE = LlhttpEngine()
