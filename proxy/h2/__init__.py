"""HTTP/2 without I/O: the translation between HTTP/2 header blocks and the neutral message model
(``proxy.h2.translate``) and the connection's protections (``proxy.h2.guard``), for the client mux
``proxy.mux_h2``, which drives the ``h2`` library's state machine over a transport.

``Settings`` gathers what the configuration says about the client side of HTTP/2 (HAProxy's
``tune.h2.*`` keywords, plus ``tune.bufsize`` and ``tune.http.maxhdr`` for header blocks, and
``tune.h2-engine``: the connection's state machine, ``proxy.h2.engine``).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.model import DEFAULT_H2_ENGINE
from proxy.h2.translate import (
    PREFACE,
    RequestError,
    interim_fields,
    reply_fields,
    request_head,
    response_fields,
    trailer_fields,
)

__all__ = [
    "PREFACE",
    "RequestError",
    "Settings",
    "interim_fields",
    "reply_fields",
    "request_head",
    "response_fields",
    "trailer_fields",
]

MAX_WINDOW = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Settings:
    """One frontend connection's HTTP/2 limits (the defaults are HAProxy's)."""

    max_concurrent_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS we announce
    header_table_size: int = 4096  # SETTINGS_HEADER_TABLE_SIZE: the HPACK table we keep for the client
    initial_window_size: int = 65535  # SETTINGS_INITIAL_WINDOW_SIZE: request body bytes per stream in flight
    max_frame_size: int = 16384  # SETTINGS_MAX_FRAME_SIZE: the largest frame we accept
    max_total_streams: int = 0  # streams per connection before a graceful GOAWAY (0: no limit)
    glitches_threshold: int = 0  # protocol glitches before the connection is killed (0: no limit)
    max_head: int = 16384  # tune.bufsize: the largest header list accepted (431 beyond)
    max_headers: int = 101  # tune.http.maxhdr: the most header fields accepted (431 beyond)
    engine: str = DEFAULT_H2_ENGINE  # tune.h2-engine: native (proxy.h2.conn) or h2 (the library)

    @property
    def max_header_list_size(self) -> int:
        """SETTINGS_MAX_HEADER_LIST_SIZE we announce: ``max_head`` counted as RFC 9113 counts it
        (32 bytes of overhead per field)."""
        return self.max_head + 32 * self.max_headers

    @property
    def decoder_limit(self) -> int:
        """What HPACK may decode before the connection is cut (ENHANCE_YOUR_CALM): twice what we
        announce, so that a client slightly over gets a 431 on its stream rather than a GOAWAY."""
        return 2 * self.max_header_list_size

    @property
    def connection_window(self) -> int:
        """The connection's receive window: every stream's window at once, so one stream that
        waits never blocks the others (memory stays bounded by the per-stream windows)."""
        return min(MAX_WINDOW, self.initial_window_size * max(1, self.max_concurrent_streams))
