"""The HTTP/2 connection engines of the client side (``tune.h2-engine native|h2``), one interface.

``Engine`` is what ``proxy.mux_h2`` asks of a server-role HTTP/2 state machine; ``make_engine``
builds the one a ``proxy.h2.Settings`` names:

- ``native``: ``proxy.h2.conn.ServerConn``, compiled by mypyc (the default where it is compiled:
  ``proxy.config.model.DEFAULT_H2_ENGINE``);
- ``h2``: ``LibConn``, the ``h2`` library's ``H2Connection`` behind the same interface: its events
  become ``proxy.h2.conn.Event``s, its ``ProtocolError``s ``H2Error``s with their codes, and the
  settings it announces and the ones it enforces are set as the mux needs (``HARD_STREAMS``).

Both use ``proxy.h2.hpack_codec``'s codec (``new_codec``: compiled, with the ``hpack`` library's
interface and exceptions), without Huffman coding on our side and without a dynamic table for what
we send (HAProxy's encoder neither: responses carry values that change every time).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Protocol

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    UnknownFrameReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError as H2ProtocolError
from h2.settings import SettingCodes, Settings as H2Settings
from hyperframe.frame import GoAwayFrame

from proxy.h2 import conn as c
from proxy.h2.hpack_codec import Decoder, Encoder

if TYPE_CHECKING:
    from proxy.h2 import Settings

ENGINES = ("native", "h2")
# Streams the library lets a client open at once; ours is Settings.max_concurrent_streams, and the
# ones beyond it are refused one by one by the mux (and counted: a client that keeps trying is cut).
HARD_STREAMS = 2**31 - 1


class Engine(Protocol):
    """A server-role HTTP/2 connection without I/O (``proxy.h2.conn.ServerConn``'s interface)."""

    @property
    def highest_inbound_stream_id(self) -> int: ...

    @property
    def max_outbound_frame_size(self) -> int: ...

    def initiate_connection(self) -> None: ...

    def increment_flow_control_window(self, increment: int) -> None: ...

    def receive_data(self, data: bytes) -> list[c.Event]: ...

    def data_to_send(self) -> bytes: ...

    def close_connection(self, code: int) -> None: ...

    def send_goaway(self, last_sid: int, code: int) -> None: ...

    def send_headers(self, sid: int, headers: c.Fields, end_stream: bool = False) -> None: ...

    def local_flow_control_window(self, sid: int) -> int: ...

    def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> None: ...

    def end_stream(self, sid: int) -> None: ...

    def reset_stream(self, sid: int, code: int) -> None: ...

    def acknowledge_received_data(self, size: int, sid: int) -> None: ...


def new_codec() -> tuple[Encoder, Decoder]:
    """An HPACK encoder and decoder for one connection: the encoder never Huffman-codes (HAProxy's
    sends literals too: the coding costs CPU for a few bytes saved on a LAN), the decoder returns
    plain tuples (neither engine needs ``HeaderTuple``s)."""
    encoder, decoder = Encoder(), Decoder()
    encoder.huffman = False
    decoder.header_tuples = False
    return encoder, decoder


def make_engine(settings: Settings) -> Engine:
    """The engine ``settings.engine`` names (ValueError for another name)."""
    encoder, decoder = new_codec()
    if settings.engine == "native":
        return c.ServerConn(settings, encoder, decoder)
    if settings.engine == "h2":
        return LibConn(settings, encoder, decoder)
    raise ValueError(f"unknown HTTP/2 engine {settings.engine!r} (expected {' or '.join(ENGINES)})")


class LibConn:
    """The ``h2`` library's server-role connection as an ``Engine``."""

    __slots__ = ("conn", "extra", "settings")

    def __init__(self, settings: Settings, encoder: Encoder, decoder: Decoder) -> None:
        self.settings = settings
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            # proxy.h2.translate checks every request block in the pass that translates it (the
            # library's checks cost a fifth of a request); the library still checks the framing,
            # the stream states and content-length against the DATA received
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            # what we send is built from validated heads (lower-case names, no connection-specific
            # field, values the HTTP/1 parser or the rules checked): checking it again costs ~10%
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = self.conn = H2Connection(config)
        conn.encoder = encoder  # type: ignore[assignment]
        conn.decoder = decoder  # type: ignore[assignment]
        # Our limits apply from the first frame (not only once the client acknowledged them):
        # they are the initial values the library enforces, and the ones it announces.
        conn.local_settings = H2Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                SettingCodes.HEADER_TABLE_SIZE: settings.header_table_size,
                SettingCodes.INITIAL_WINDOW_SIZE: settings.initial_window_size,
                SettingCodes.MAX_FRAME_SIZE: settings.max_frame_size,
                SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
            },
        )
        conn.max_inbound_frame_size = settings.max_frame_size
        # Our encoder keeps no dynamic table (HAProxy's does not either): responses carry values
        # that change every time (dates, ids), whose insertion and linear table search cost more
        # than the bytes they would save on a loopback or LAN.
        encoder.header_table_size = 0
        decoder.max_allowed_table_size = settings.header_table_size
        decoder.max_header_list_size = settings.decoder_limit
        self.extra = b""  # frames written past the library (a graceful GOAWAY), after its own

    @property
    def highest_inbound_stream_id(self) -> int:
        return int(self.conn.highest_inbound_stream_id)

    @property
    def max_outbound_frame_size(self) -> int:
        return int(self.conn.max_outbound_frame_size)

    def initiate_connection(self) -> None:
        conn = self.conn
        conn.initiate_connection()
        # Announced above: our limit. Enforced by the library: far more, so that a stream beyond
        # our limit reaches the mux and is refused there (RST_STREAM REFUSED_STREAM, RFC 9113
        # §5.1.2: a stream error) instead of the library ending the whole connection. The library
        # has no public way to announce one value and enforce another: this sets the value it
        # reads, once its SETTINGS frame with ours is written.
        conn.local_settings._settings[SettingCodes.MAX_CONCURRENT_STREAMS] = collections.deque([HARD_STREAMS])

    def increment_flow_control_window(self, increment: int) -> None:
        self.conn.increment_flow_control_window(increment)

    def data_to_send(self) -> bytes:
        data = self.conn.data_to_send()
        if self.extra:
            data, self.extra = self.extra + data, b""
        return data

    def close_connection(self, code: int) -> None:
        try:
            self.conn.close_connection(code)
        except Exception:  # the library's state machine refuses: the frame written past it
            self.send_goaway(self.highest_inbound_stream_id, code)

    def send_goaway(self, last_sid: int, code: int) -> None:
        frame = GoAwayFrame(0, last_stream_id=last_sid, error_code=code)
        self.extra += self.conn.data_to_send() + frame.serialize()  # what the library prepared goes first

    def receive_data(self, data: bytes) -> list[c.Event]:
        try:
            events = self.conn.receive_data(data)
        except H2ProtocolError as exc:
            raise c.H2Error(int(getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)), str(exc)) from None
        out: list[c.Event] = []
        for ev in events:
            if isinstance(ev, DataReceived):
                ended = ev.stream_ended is not None
                flow = ev.flow_controlled_length or 0
                out.append(c.Event(c.DATA, ev.stream_id or 0, data=ev.data or b"", flow=flow, ended=ended))
            elif isinstance(ev, RequestReceived):
                fields = list(ev.headers or ())
                ended = ev.stream_ended is not None
                out.append(c.Event(c.REQUEST, ev.stream_id or 0, headers=fields, ended=ended))
            elif isinstance(ev, StreamEnded):
                out.append(c.Event(c.ENDED, ev.stream_id or 0))
            elif isinstance(ev, WindowUpdated):
                out.append(c.Event(c.WINDOW, ev.stream_id or 0))
            elif isinstance(ev, TrailersReceived):
                fields = list(ev.headers or ())
                out.append(c.Event(c.TRAILERS, ev.stream_id or 0, headers=fields, ended=True))
            elif isinstance(ev, StreamReset):
                out.append(c.Event(c.RESET, ev.stream_id or 0, code=int(ev.error_code or 0)))
            elif isinstance(ev, RemoteSettingsChanged):
                if self.conn.encoder.header_table_size:  # the library applied the client's size: none
                    self.conn.encoder.header_table_size = 0
                changed = SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings
                out.append(c.Event(c.SETTINGS, 0, window_changed=changed))
            elif isinstance(ev, PingReceived):
                out.append(c.Event(c.PING, 0))
            elif isinstance(ev, ConnectionTerminated):
                out.append(c.Event(c.GOAWAY, ev.last_stream_id or 0, code=int(ev.error_code or 0)))
            elif isinstance(ev, UnknownFrameReceived):
                out.append(c.Event(c.UNKNOWN, 0))
        return out

    def send_headers(self, sid: int, headers: c.Fields, end_stream: bool = False) -> None:
        try:
            self.conn.send_headers(sid, headers, end_stream=end_stream)
        except Exception as exc:  # a closed stream, or a header the library's validation rejects
            raise c.H2Error(ErrorCodes.STREAM_CLOSED, str(exc)) from None

    def local_flow_control_window(self, sid: int) -> int:
        try:
            return int(self.conn.local_flow_control_window(sid))
        except H2ProtocolError as exc:
            raise c.H2Error(ErrorCodes.STREAM_CLOSED, str(exc)) from None

    def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        try:
            self.conn.send_data(sid, data, end_stream=end_stream)
        except H2ProtocolError as exc:
            raise c.H2Error(int(getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)), str(exc)) from None

    def end_stream(self, sid: int) -> None:
        try:
            self.conn.end_stream(sid)
        except H2ProtocolError as exc:
            raise c.H2Error(ErrorCodes.STREAM_CLOSED, str(exc)) from None

    def reset_stream(self, sid: int, code: int) -> None:
        try:
            self.conn.reset_stream(sid, code)
        except H2ProtocolError as exc:
            raise c.H2Error(ErrorCodes.STREAM_CLOSED, str(exc)) from None

    def acknowledge_received_data(self, size: int, sid: int) -> None:
        self.conn.acknowledge_received_data(size, sid)
