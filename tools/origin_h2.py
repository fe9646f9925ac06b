"""The counting origin's HTTP/2 side (``python -m tools.origin --h2``, or TLS with ALPN given a
certificate): one ``h2`` server connection per TCP connection, counted in the same ``Counters`` as
HTTP/1 (``connections``, ``open``, ``max_open``, ``requests``, ``active`` — streams in progress —
and ``max_active``, the peak of concurrent streams), plus ``h2_connections`` and ``h2_max_streams``
(the most streams at once on one connection).

Independent of the proxy's code on purpose (the ``h2`` library only, never ``proxy.*``).

Routes (by ``:path``; the query is ignored): ``/`` and anything unknown 200 empty; ``/echo`` 200
JSON ``{method, target, authority, scheme, http_version: "2", headers, body_len, trailers}``;
``/size/<n>`` n pattern bytes (byte i is i % 256) with ``content-length``, sent as the flow-control
windows allow; ``/upload`` JSON ``{bytes, sha256}``; ``/delay/<ms>``; ``/status/<n>``;
``/goaway`` 200, then GOAWAY naming this stream as the last one (the connection drains);
``/bad/close`` the connection closes without an answer; ``/bad/reset`` RST_STREAM
(INTERNAL_ERROR) without an answer; ``/bad/refuse`` RST_STREAM (REFUSED_STREAM);
``/bad/half`` a 200 head with ``content-length: 1000`` and 10 bytes, then the connection closes.
A request with ``expect: 100-continue`` gets a 100 before its body is read. Every response
carries ``x-conn-id`` and ``x-req-seq`` (the n-th stream of the connection).
``--h2-max-streams N`` sets SETTINGS_MAX_CONCURRENT_STREAMS (default 100).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

if TYPE_CHECKING:
    from tools.origin import Counters

CHUNK = 16384
_PATTERN = bytes(range(256)) * 256


class H2Origin:
    """One HTTP/2 server connection over an asyncio stream pair."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counters: Counters,
        *,
        delay_s: float = 0.0,
        max_streams: int = 100,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.counters = counters
        self.delay_s = delay_s
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams}
        )
        self.conn_id = counters.connection_opened()
        counters.h2_connections += 1
        self.seq = 0
        self.streams: dict[int, dict[str, Any]] = {}
        self.windows: dict[int, asyncio.Event] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def serve(self) -> None:
        self.conn.initiate_connection()
        self.flush()
        try:
            while not self.closed:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.flush()
                    break
                for ev in events:
                    self._event(ev)
                self.flush()
                await self.writer.drain()
        finally:
            self.closed = True
            for task in list(self.tasks):
                task.cancel()
            for sid in list(self.streams):
                self._stream_over(sid)

    def _event(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            assert ev.stream_id is not None
            self.seq += 1
            self.counters.request_started()
            headers = list(ev.headers or ())
            self.streams[ev.stream_id] = {
                "headers": headers, "body": 0, "digest": hashlib.sha256(), "seq": self.seq,
                "done": asyncio.Event(), "trailers": [],
            }  # fmt: skip
            self.counters.h2_max_streams = max(self.counters.h2_max_streams, len(self.streams))
            if ev.stream_ended is not None:
                self.streams[ev.stream_id]["done"].set()
            elif (b"expect", b"100-continue") in headers:
                self.conn.send_headers(ev.stream_id, [(b":status", b"100")])  # go on with the body
            task = asyncio.get_running_loop().create_task(self._respond(ev.stream_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif isinstance(ev, h2.events.DataReceived):
            st = self.streams.get(ev.stream_id or 0)
            if st is not None and ev.data:
                st["body"] += len(ev.data)
                st["digest"].update(ev.data)
            self.conn.acknowledge_received_data(ev.flow_controlled_length or 0, ev.stream_id or 0)
        elif isinstance(ev, h2.events.TrailersReceived):
            st = self.streams.get(ev.stream_id or 0)
            if st is not None:
                st["trailers"] = [[n.decode(), v.decode()] for n, v in ev.headers or ()]
        elif isinstance(ev, h2.events.StreamEnded):
            st = self.streams.get(ev.stream_id or 0)
            if st is not None:
                st["done"].set()
        elif isinstance(ev, h2.events.StreamReset):
            self._stream_over(ev.stream_id or 0)
        elif isinstance(ev, h2.events.WindowUpdated):
            for event in self.windows.values():
                event.set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.closed = True

    def _stream_over(self, sid: int) -> None:
        st = self.streams.pop(sid, None)
        if st is not None:
            self.counters.request_finished()
            st["done"].set()  # a stream reset before its end: its task answers into nothing
        self.windows.pop(sid, None)

    async def _respond(self, sid: int) -> None:
        st = self.streams[sid]
        await st["done"].wait()
        if sid not in self.streams:
            return
        fields = {n: v for n, v in st["headers"] if n.startswith(b":")}
        path = fields.get(b":path", b"/").partition(b"?")[0].decode("latin-1")
        name, _, arg = path[1:].partition("/")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        ids = [(b"x-conn-id", b"%d" % self.conn_id), (b"x-req-seq", b"%d" % st["seq"])]
        try:
            if name == "bad":
                await self._bad(sid, arg, ids)
                return
            status, body, extra = 200, b"", [(b"content-type", b"application/json")]
            if name == "echo":
                body = json.dumps({
                    "method": fields.get(b":method", b"").decode(),
                    "target": fields.get(b":path", b"").decode(),
                    "authority": fields.get(b":authority", b"").decode(),
                    "scheme": fields.get(b":scheme", b"").decode(), "http_version": "2",
                    "headers": [[n.decode(), v.decode()] for n, v in st["headers"] if not n.startswith(b":")],
                    "body_len": st["body"], "trailers": st["trailers"],
                }).encode()  # fmt: skip
            elif name == "upload":
                body = json.dumps({"bytes": st["body"], "sha256": st["digest"].hexdigest()}).encode()
            elif name == "size" and arg.isdigit():
                await self._send_size(sid, int(arg), ids, fields.get(b":method") == b"HEAD")
                return
            elif name == "delay" and arg.isdigit():
                await asyncio.sleep(int(arg) / 1000)
                extra = []
            elif name == "status" and arg.isdigit() and 200 <= int(arg) <= 599:
                status, extra = int(arg), []
            else:
                extra = []
            head = [(b":status", b"%d" % status), *ids, *extra]
            if status not in (204, 304):
                head.append((b"content-length", b"%d" % len(body)))
            send_body = bool(body) and fields.get(b":method") != b"HEAD"
            self.conn.send_headers(sid, head, end_stream=not send_body)
            if send_body:
                await self._send(sid, body)
            self.flush()
            if name == "goaway":
                self.conn.close_connection(last_stream_id=sid)
                self.flush()
        except (h2.exceptions.StreamClosedError, KeyError):
            pass
        finally:
            self._stream_over(sid)

    async def _send_size(self, sid: int, size: int, ids: list[tuple[bytes, bytes]], head_only: bool) -> None:
        head = [(b":status", b"200"), *ids, (b"content-length", b"%d" % size)]
        self.conn.send_headers(sid, head, end_stream=head_only or size == 0)
        self.flush()
        if head_only or size == 0:
            return
        remaining = size
        while remaining:
            n = min(remaining, len(_PATTERN))
            await self._send(sid, _PATTERN[:n], end=remaining == n)
            remaining -= n

    async def _send(self, sid: int, data: bytes, end: bool = True) -> None:
        """``data`` as the windows allow (waiting for WINDOW_UPDATE), END_STREAM with the last."""
        view = memoryview(data)
        while view:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, CHUNK)
            if room <= 0:
                event = self.windows.setdefault(sid, asyncio.Event())
                event.clear()
                self.flush()
                await event.wait()
                continue
            part, view = view[:room], view[room:]
            self.conn.send_data(sid, bytes(part), end_stream=end and not view)
            self.flush()
            await self.writer.drain()
        if end and not data:
            self.conn.end_stream(sid)
            self.flush()

    async def _bad(self, sid: int, kind: str, ids: list[tuple[bytes, bytes]]) -> None:
        if kind == "close":
            self.closed = True
            self.writer.close()
        elif kind in ("reset", "refuse"):
            code = (
                h2.errors.ErrorCodes.REFUSED_STREAM
                if kind == "refuse"
                else h2.errors.ErrorCodes.INTERNAL_ERROR
            )
            self.conn.reset_stream(sid, code)
            self.flush()
        elif kind == "half":
            self.conn.send_headers(sid, [(b":status", b"200"), *ids, (b"content-length", b"1000")])
            self.conn.send_data(sid, _PATTERN[:10])
            self.flush()
            await self.writer.drain()
            self.closed = True
            self.writer.close()
        else:
            self.conn.send_headers(
                sid, [(b":status", b"400"), *ids, (b"content-length", b"0")], end_stream=True
            )
            self.flush()
