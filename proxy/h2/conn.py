"""A server-role HTTP/2 connection without I/O (``tune.h2-engine native``): bytes in, events out.

``ServerConn`` is the state machine of one client connection, as ``h2.connection.H2Connection``
is for ``tune.h2-engine h2`` (``proxy.h2.engine`` wraps that one behind the same interface). The
mux (``proxy.mux_h2``) feeds it what it read (``receive_data`` returns ``Event``s or raises
``H2Error``, a connection error: GOAWAY with its code), asks it to frame responses (``send_headers``,
``send_data``, ``end_stream``, ``reset_stream``, ``acknowledge_received_data``) and writes what
``data_to_send`` returns. Compiled by mypyc (``proxy.native.COMPILED``).

What it enforces (RFC 9113), as the ``h2`` library does for the mux:

- the preface, then a SETTINGS frame first; frames over our SETTINGS_MAX_FRAME_SIZE
  (FRAME_SIZE_ERROR); frame lengths fixed by their type (FRAME_SIZE_ERROR); frames on stream 0
  that need a stream, or on a stream that need none (PROTOCOL_ERROR); PUSH_PROMISE from a client
  (PROTOCOL_ERROR); unknown frame types are ignored and reported (``UNKNOWN``, a glitch);
- stream ids: a new stream is odd and above every one before (PROTOCOL_ERROR: a header block on a
  closed stream or a lower id), unless we reset that stream ourselves (then the block is decoded,
  to keep HPACK in step, and dropped); a header block on a stream whose request ended is a stream
  error (RST_STREAM STREAM_CLOSED, reported as ``RESET``); DATA, WINDOW_UPDATE or RST_STREAM on an idle stream
  (PROTOCOL_ERROR); DATA after the stream's END_STREAM is a stream error (RST_STREAM STREAM_CLOSED,
  reported as ``RESET``); DATA on a closed stream is dropped, its window given back;
- header blocks: HEADERS + CONTINUATION with nothing in between (PROTOCOL_ERROR), at most
  ``MAX_CONTINUATIONS`` frames (PROTOCOL_ERROR, as the library) and the decoder's limit in bytes
  (ENHANCE_YOUR_CALM): a CONTINUATION flood is cut; HPACK errors (COMPRESSION_ERROR), a decoded
  list over the decoder's limit (ENHANCE_YOUR_CALM: an HPACK bomb); trailers must end the stream
  (PROTOCOL_ERROR);
- a request's content-length against the DATA received (PROTOCOL_ERROR, as the library does);
- flow control both ways: DATA beyond the connection's or the stream's receive window, a window
  past 2^31-1 after WINDOW_UPDATE or SETTINGS_INITIAL_WINDOW_SIZE (FLOW_CONTROL_ERROR; a stream's
  WINDOW_UPDATE past it is a stream error: RST_STREAM, reported as ``RESET``), a zero increment
  (PROTOCOL_ERROR); what we send never exceeds the client's windows or frame size;
- SETTINGS values (ENABLE_PUSH 0|1, INITIAL_WINDOW_SIZE <= 2^31-1, MAX_FRAME_SIZE in range),
  PING and SETTINGS acknowledged, PRIORITY validated (length, stream, self-dependency) and ignored.

What it announces is ``proxy.h2.Settings``; it enforces them from the first frame. It does not refuse
streams over SETTINGS_MAX_CONCURRENT_STREAMS itself: the mux does (RST_STREAM REFUSED_STREAM, a
stream error, and counted by ``proxy.h2.guard``). HPACK is ``proxy.h2.hpack_codec``'s (compiled
with this module: native calls; it raises the ``hpack`` library's exceptions). Our encoder
keeps no dynamic table and no Huffman coding (HAProxy's does neither): the client's
SETTINGS_HEADER_TABLE_SIZE changes nothing.
"""

from __future__ import annotations

from typing import Final

from hpack.exceptions import HPACKError, OversizedHeaderListError

from proxy.h2 import Settings, frames as f
from proxy.h2.hpack_codec import Decoder, Encoder

MAX_CONTINUATIONS: Final = 64  # CONTINUATION frames in one header block (the h2 library's figure)
RESET_MEMORY: Final = 1024  # streams we reset whose late frames are still recognised as such

# Event kinds
REQUEST: Final = 1  # a request's header block: headers, ended (END_STREAM with it)
DATA: Final = 2  # request body: data, flow (flow-controlled size, padding included), ended
ENDED: Final = 3  # the client's END_STREAM (after REQUEST, DATA or TRAILERS with ended)
TRAILERS: Final = 4  # headers
WINDOW: Final = 5  # a WINDOW_UPDATE (sid 0: the connection's)
RESET: Final = 6  # the stream was reset (by the client: code; or by us for its fault)
SETTINGS: Final = 7  # the client's SETTINGS applied: window_changed
PING: Final = 8
GOAWAY: Final = 9  # code, sid: the last stream the client processes
UNKNOWN: Final = 10  # an unknown frame type (ignored)

Fields = list[tuple[bytes, bytes]]


class H2Error(Exception):
    """A connection error: the connection ends with GOAWAY ``code``; or, raised by a send method, a
    stream that can take no more (the caller drops what it wanted to send)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Event:
    """What ``receive_data`` reports; which fields mean something depends on ``kind``."""

    def __init__(
        self,
        kind: int,
        sid: int,
        *,
        headers: Fields | None = None,
        data: bytes = b"",
        flow: int = 0,
        ended: bool = False,
        code: int = 0,
        window_changed: bool = False,
    ) -> None:
        self.kind = kind
        self.sid = sid
        self.headers: Fields = headers if headers is not None else []
        self.data = data
        self.flow = flow
        self.ended = ended
        self.code = code
        self.window_changed = window_changed

    def __repr__(self) -> str:
        return f"<Event {self.kind} sid={self.sid} flow={self.flow} ended={self.ended} code={self.code}>"


class _Stream:
    """One stream's state: what each side closed, the windows, the content-length check."""

    def __init__(self, sid: int, send_window: int, recv_window: int) -> None:
        self.sid = sid
        self.send_window = send_window  # what we may still send (the client's window)
        self.recv_window = recv_window  # what the client may still send us
        self.recv_unacked = 0  # consumed and not given back yet
        self.recv_closed = False  # the client's END_STREAM came
        self.send_closed = False  # our END_STREAM went out
        self.expected = -1  # the request's content-length (-1: none)
        self.received = 0  # request body bytes received


class ServerConn:
    """One client connection's HTTP/2 state (see the module docstring)."""

    def __init__(self, settings: Settings, encoder: Encoder, decoder: Decoder) -> None:
        self.settings = settings
        self.encoder = encoder
        self.decoder = decoder
        encoder.header_table_size = 0
        decoder.max_allowed_table_size = settings.header_table_size
        decoder.max_header_list_size = settings.decoder_limit
        self.max_inbound_frame_size = settings.max_frame_size
        self.initial_recv_window = settings.initial_window_size
        self.max_outbound_frame_size = f.MIN_FRAME_SIZE  # the client's SETTINGS_MAX_FRAME_SIZE
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.send_window = f.DEFAULT_WINDOW  # the connection's, what we may send
        self.recv_window = f.DEFAULT_WINDOW  # the connection's, what the client may send
        self.recv_max = f.DEFAULT_WINDOW  # what recv_window is brought back to
        self.recv_unacked = 0
        self.streams: dict[int, _Stream] = {}
        self.highest_inbound_stream_id = 0
        self.reset_sids: set[int] = set()  # streams we reset while the client could still send
        self.inbuf = b""
        self.out = bytearray()
        self.preface_ok = False
        self.settings_seen = False
        self.closed = False
        # the header block being received (HEADERS without END_HEADERS, then CONTINUATION)
        self.block_sid = 0
        self.block_flags = 0
        self.block = bytearray()
        self.block_frames = 0

    def __repr__(self) -> str:
        return (
            f"<ServerConn streams={len(self.streams)} highest={self.highest_inbound_stream_id}"
            f" send_window={self.send_window} recv_window={self.recv_window}>"
        )

    # -- the connection ---------------------------------------------------------------------------
    def initiate_connection(self) -> None:
        """Our SETTINGS: the server's preface (§3.4)."""
        s = self.settings
        self.out += f.settings(
            [
                (f.HEADER_TABLE_SIZE, s.header_table_size),
                (f.ENABLE_PUSH, 0),
                (f.MAX_CONCURRENT_STREAMS, s.max_concurrent_streams),
                (f.INITIAL_WINDOW_SIZE, s.initial_window_size),
                (f.MAX_FRAME_SIZE, s.max_frame_size),
                (f.MAX_HEADER_LIST_SIZE, s.max_header_list_size),
            ]
        )

    def increment_flow_control_window(self, increment: int) -> None:
        """Open the connection's receive window by ``increment`` (beyond the default 65535)."""
        if increment <= 0 or self.recv_window + increment > f.MAX_WINDOW:
            raise H2Error(f.FLOW_CONTROL_ERROR, f"bad connection window increment {increment}")
        self.recv_window += increment
        self.recv_max += increment
        self.out += f.window_update(0, increment)

    def data_to_send(self) -> bytes:
        if not self.out:
            return b""
        data = bytes(self.out)
        self.out = bytearray()
        return data

    def close_connection(self, code: int) -> None:
        """A final GOAWAY ``code`` (the last stream: the highest the client opened)."""
        self.out += f.goaway(self.highest_inbound_stream_id, code)
        self.closed = True

    def send_goaway(self, last_sid: int, code: int) -> None:
        """A GOAWAY that ends nothing yet (a graceful one: streams up to ``last_sid`` go on)."""
        self.out += f.goaway(last_sid, code)

    # -- receiving ----------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        """The events in ``data`` (and what came before it unparsed); H2Error: a connection error."""
        events: list[Event] = []
        if self.closed:
            return events
        buf = self.inbuf + data if self.inbuf else data
        pos = 0
        if not self.preface_ok:
            n = min(len(buf), len(f.PREFACE))
            if buf[:n] != f.PREFACE[:n]:
                raise H2Error(f.PROTOCOL_ERROR, "invalid connection preface")
            if n < len(f.PREFACE):
                self.inbuf = buf
                return events
            self.preface_ok = True
            pos = n
        size = len(buf)
        while size - pos >= 9:
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if length > self.max_inbound_frame_size:
                raise H2Error(f.FRAME_SIZE_ERROR, f"frame of {length} bytes over our max frame size")
            end = pos + 9 + length
            if end > size:
                break
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            sid = f.u32(buf, pos + 5) & f.MAX_WINDOW
            payload = buf[pos + 9 : end]
            pos = end
            self._frame(kind, flags, sid, payload, events)
            if self.closed:
                break
        self.inbuf = buf[pos:] if pos < size else b""
        return events

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if self.block_sid and kind != f.CONTINUATION:
            raise H2Error(f.PROTOCOL_ERROR, "a frame inside a header block")
        if not self.settings_seen:
            if kind != f.SETTINGS or flags & f.ACK:
                raise H2Error(f.PROTOCOL_ERROR, "the client's preface does not start with SETTINGS")
            self.settings_seen = True
        if kind == f.DATA:
            self._data(flags, sid, payload, events)
        elif kind == f.HEADERS:
            self._headers_frame(flags, sid, payload, events)
        elif kind == f.CONTINUATION:
            self._continuation(flags, sid, payload, events)
        elif kind == f.WINDOW_UPDATE:
            self._window_update(sid, payload, events)
        elif kind == f.RST_STREAM:
            self._rst_stream(sid, payload, events)
        elif kind == f.SETTINGS:
            self._settings(flags, sid, payload, events)
        elif kind == f.PING:
            if sid:
                raise H2Error(f.PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise H2Error(f.FRAME_SIZE_ERROR, "PING of a size other than 8")
            if not flags & f.ACK:
                self.out += f.ping_ack(payload)
                events.append(Event(PING, 0))
        elif kind == f.PRIORITY:
            if not sid:
                raise H2Error(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise H2Error(f.FRAME_SIZE_ERROR, "PRIORITY of a size other than 5")
            if f.u32(payload, 0) & f.MAX_WINDOW == sid:
                raise H2Error(f.PROTOCOL_ERROR, "a stream depending on itself")
        elif kind == f.GOAWAY:
            if sid:
                raise H2Error(f.PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise H2Error(f.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            last = f.u32(payload, 0) & f.MAX_WINDOW
            events.append(Event(GOAWAY, last, code=f.u32(payload, 4)))
        elif kind == f.PUSH_PROMISE:
            raise H2Error(f.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        else:
            events.append(Event(UNKNOWN, sid, code=kind))

    def _idle(self, sid: int) -> bool:
        return sid > self.highest_inbound_stream_id or not sid & 1

    def _data(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if not sid:
            raise H2Error(f.PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        body = payload
        if flags & f.PADDED:
            if not payload or payload[0] >= len(payload):
                raise H2Error(f.PROTOCOL_ERROR, "DATA padding beyond the frame")
            body = payload[1 : len(payload) - payload[0]]
        if flow > self.recv_window:
            raise H2Error(f.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window -= flow
        st = self.streams.get(sid)
        if st is None:
            if self._idle(sid):
                raise H2Error(f.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            self._give_back(flow)  # a closed stream: dropped, the window goes back
            return
        if st.recv_closed:
            # §5.1 half-closed (remote): a stream error STREAM_CLOSED
            self._give_back(flow)
            self._reset(st, f.STREAM_CLOSED)
            events.append(Event(RESET, sid, code=f.STREAM_CLOSED))
            return
        if flow > st.recv_window:
            raise H2Error(f.FLOW_CONTROL_ERROR, f"DATA beyond stream {sid}'s window")
        st.recv_window -= flow
        end = bool(flags & f.END_STREAM)
        st.received += len(body)
        if st.expected >= 0 and (st.received > st.expected or (end and st.received != st.expected)):
            raise H2Error(f.PROTOCOL_ERROR, f"stream {sid}: body length differs from content-length")
        events.append(Event(DATA, sid, data=body, flow=flow, ended=end))
        if end:
            self._remote_end(st, events)

    def _remote_end(self, st: _Stream, events: list[Event]) -> None:
        st.recv_closed = True
        events.append(Event(ENDED, st.sid))
        if st.send_closed:
            del self.streams[st.sid]

    def _headers_frame(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if not sid:
            raise H2Error(f.PROTOCOL_ERROR, "HEADERS on stream 0")
        start = 0
        pad = 0
        if flags & f.PADDED:
            if not payload:
                raise H2Error(f.FRAME_SIZE_ERROR, "HEADERS too short for its padding")
            pad = payload[0]
            start = 1
        if flags & f.PRIORITY_FLAG:
            if len(payload) < start + 5:
                raise H2Error(f.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if f.u32(payload, start) & f.MAX_WINDOW == sid:
                raise H2Error(f.PROTOCOL_ERROR, "a stream depending on itself")
            start += 5
        if pad > len(payload) - start:
            raise H2Error(f.PROTOCOL_ERROR, "HEADERS padding beyond the frame")
        block = payload[start : len(payload) - pad]
        if flags & f.END_HEADERS:
            self._header_block(flags, sid, block, events)
            return
        if len(block) > self.decoder.max_header_list_size:
            raise H2Error(f.ENHANCE_YOUR_CALM, "header block over the limit")
        self.block_sid = sid
        self.block_flags = flags
        self.block = bytearray(block)
        self.block_frames = 1

    def _continuation(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if not self.block_sid or sid != self.block_sid:
            raise H2Error(f.PROTOCOL_ERROR, "CONTINUATION without a header block in progress")
        self.block += payload
        self.block_frames += 1
        if self.block_frames > MAX_CONTINUATIONS:
            raise H2Error(f.PROTOCOL_ERROR, "CONTINUATION flood: too many frames in one header block")
        if len(self.block) > self.decoder.max_header_list_size:
            raise H2Error(f.ENHANCE_YOUR_CALM, "CONTINUATION flood: header block too long")
        if flags & f.END_HEADERS:
            block = bytes(self.block)
            self.block_sid = 0
            self.block = bytearray()
            self._header_block(self.block_flags, sid, block, events)

    def _decode(self, block: bytes) -> Fields:
        try:
            decoded = self.decoder.decode(block, raw=True)
        except OversizedHeaderListError as exc:
            raise H2Error(f.ENHANCE_YOUR_CALM, f"header list over the limit: {exc}") from None
        except (HPACKError, IndexError, TypeError, ValueError) as exc:
            raise H2Error(f.COMPRESSION_ERROR, f"HPACK: {exc}") from None
        return [(bytes(n), bytes(v)) for n, v in decoded]

    def _header_block(self, flags: int, sid: int, block: bytes, events: list[Event]) -> None:
        end = bool(flags & f.END_STREAM)
        st = self.streams.get(sid)
        if st is None:
            if not sid & 1:
                raise H2Error(f.PROTOCOL_ERROR, f"stream {sid}: even ids are the server's")
            if sid <= self.highest_inbound_stream_id:
                self._decode(block)  # HPACK stays in step whatever follows
                if sid in self.reset_sids:
                    return  # trailers of a stream we reset: dropped
                raise H2Error(f.PROTOCOL_ERROR, f"stream {sid} reused or lower than the last (ids must grow)")
            self.highest_inbound_stream_id = sid
            fields = self._decode(block)
            st = _Stream(sid, self.peer_initial_window, self.initial_recv_window)
            st.expected = _content_length(fields)
            self.streams[sid] = st
            events.append(Event(REQUEST, sid, headers=fields, ended=end))
            if end:
                if st.expected > 0:
                    raise H2Error(f.PROTOCOL_ERROR, f"stream {sid}: body length differs from content-length")
                self._remote_end(st, events)
            return
        fields = self._decode(block)
        if st.recv_closed:
            self._reset(st, f.STREAM_CLOSED)
            events.append(Event(RESET, sid, code=f.STREAM_CLOSED))
            return
        if not end:
            raise H2Error(f.PROTOCOL_ERROR, f"stream {sid}: trailers without END_STREAM")
        if st.expected >= 0 and st.received != st.expected:
            raise H2Error(f.PROTOCOL_ERROR, f"stream {sid}: body length differs from content-length")
        events.append(Event(TRAILERS, sid, headers=fields, ended=True))
        self._remote_end(st, events)

    def _window_update(self, sid: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise H2Error(f.FRAME_SIZE_ERROR, "WINDOW_UPDATE of a size other than 4")
        increment = f.u32(payload, 0) & f.MAX_WINDOW
        if not sid:
            if not increment:
                raise H2Error(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise H2Error(f.FLOW_CONTROL_ERROR, "connection window past 2^31-1")
            events.append(Event(WINDOW, 0))
            return
        st = self.streams.get(sid)
        if st is None:
            if self._idle(sid):
                raise H2Error(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # a closed stream: nothing to send any more
        if not increment:
            raise H2Error(f.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        st.send_window += increment
        if st.send_window > f.MAX_WINDOW:  # §6.9.1: a stream error
            self._reset(st, f.FLOW_CONTROL_ERROR)
            events.append(Event(RESET, sid, code=f.FLOW_CONTROL_ERROR))
            return
        events.append(Event(WINDOW, sid))

    def _rst_stream(self, sid: int, payload: bytes, events: list[Event]) -> None:
        if not sid:
            raise H2Error(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2Error(f.FRAME_SIZE_ERROR, "RST_STREAM of a size other than 4")
        if self._idle(sid):
            raise H2Error(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        st = self.streams.pop(sid, None)
        if st is not None:
            events.append(Event(RESET, sid, code=f.u32(payload, 0)))

    def _settings(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if sid:
            raise H2Error(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise H2Error(f.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise H2Error(f.FRAME_SIZE_ERROR, "SETTINGS of a size not a multiple of 6")
        window_changed = False
        for at in range(0, len(payload), 6):
            ident = (payload[at] << 8) | payload[at + 1]
            value = f.u32(payload, at + 2)
            if ident == f.ENABLE_PUSH:
                if value > 1:
                    raise H2Error(f.PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            elif ident == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise H2Error(f.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                if delta:
                    window_changed = True
                    for st in self.streams.values():
                        st.send_window += delta
                        if st.send_window > f.MAX_WINDOW:
                            raise H2Error(f.FLOW_CONTROL_ERROR, f"stream {st.sid}'s window past 2^31-1")
            elif ident == f.MAX_FRAME_SIZE:
                if value < f.MIN_FRAME_SIZE or value > f.MAX_FRAME_SIZE_LIMIT:
                    raise H2Error(f.PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.max_outbound_frame_size = value
            # HEADER_TABLE_SIZE: our encoder keeps no table; the others are the client's own business
        self.out += f.settings_ack()
        events.append(Event(SETTINGS, 0, window_changed=window_changed))

    # -- sending ------------------------------------------------------------------------------------
    def _open_for_sending(self, sid: int) -> _Stream:
        st = self.streams.get(sid)
        if st is None or st.send_closed:
            raise H2Error(f.STREAM_CLOSED, f"stream {sid} is closed")
        return st

    def _local_end(self, st: _Stream) -> None:
        st.send_closed = True
        if st.recv_closed:
            del self.streams[st.sid]

    def send_headers(self, sid: int, headers: Fields, end_stream: bool = False) -> None:
        st = self._open_for_sending(sid)
        block = self.encoder.encode(headers, huffman=False)
        self.out += f.headers(sid, block, end_stream, self.max_outbound_frame_size)
        if end_stream:
            self._local_end(st)

    def local_flow_control_window(self, sid: int) -> int:
        """What may be sent on ``sid`` now (the smaller of its window and the connection's)."""
        st = self._open_for_sending(sid)
        return min(st.send_window, self.send_window)

    def send_data(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        st = self._open_for_sending(sid)
        n = len(data)
        if n > st.send_window or n > self.send_window:
            raise H2Error(f.FLOW_CONTROL_ERROR, f"stream {sid}: {n} bytes beyond the client's window")
        if n > self.max_outbound_frame_size:
            raise H2Error(f.FRAME_SIZE_ERROR, f"stream {sid}: {n} bytes beyond the client's frame size")
        st.send_window -= n
        self.send_window -= n
        self.out += f.data(sid, data, end_stream)
        if end_stream:
            self._local_end(st)

    def end_stream(self, sid: int) -> None:
        st = self._open_for_sending(sid)
        self.out += f.data(sid, b"", True)
        self._local_end(st)

    def reset_stream(self, sid: int, code: int) -> None:
        st = self.streams.get(sid)
        if st is None:
            raise H2Error(f.STREAM_CLOSED, f"stream {sid} is closed")
        self._reset(st, code)

    def _reset(self, st: _Stream, code: int) -> None:
        del self.streams[st.sid]
        if not st.recv_closed:
            if len(self.reset_sids) >= RESET_MEMORY:
                self.reset_sids.clear()
            self.reset_sids.add(st.sid)
        self.out += f.rst_stream(st.sid, code)

    def acknowledge_received_data(self, size: int, sid: int) -> None:
        """``size`` flow-controlled bytes of ``sid`` were consumed: the client may send them again
        (a WINDOW_UPDATE once half a window is due, as the ``h2`` library does)."""
        if size <= 0:
            return
        st = self.streams.get(sid)
        if st is not None and not st.recv_closed:
            st.recv_unacked += size
            due = _due(st.recv_unacked, st.recv_window, self.initial_recv_window)
            if due:
                st.recv_unacked = 0
                st.recv_window += due
                self.out += f.window_update(sid, due)
        self._give_back(size)

    def _give_back(self, size: int) -> None:
        self.recv_unacked += size
        due = _due(self.recv_unacked, self.recv_window, self.recv_max)
        if due:
            self.recv_unacked = 0
            self.recv_window += due
            self.out += f.window_update(0, due)


def _due(unacked: int, window: int, full: int) -> int:
    """The WINDOW_UPDATE increment to send now for ``unacked`` consumed bytes (0: not yet)."""
    if unacked >= full // 2 or (window < full // 4 and unacked > min(1024, full // 4)):
        return min(unacked, full - window)
    return 0


def _content_length(fields: Fields) -> int:
    """The request's content-length, -1 if none or not one valid number (the mux's translation
    answers what is malformed)."""
    found = -1
    for name, value in fields:
        if name == b"content-length":
            if not value.isdigit():
                return -1
            n = int(value)
            if found >= 0 and n != found:
                return -1
            found = n
    return found
