"""One HTTP/2 stream's client end: ``H2Side`` is the ``proxy.sides.ClientSide`` a stream talks to.

The HTTP/2 client mux (``proxy.mux_h2``) makes one per stream; it frames what the stream sends back
through the mux (``Mux``, the part of ``H2ClientConn`` a side uses): the response head and the
proxy's own answers as header blocks (``proxy.h2.translate``), body bytes queued until the client's
window takes them (``out``), the end (trailers) once nothing waits, an RST_STREAM when the stream is
aborted. It keeps the per-stream flow-control state the mux reads: request bytes received but not
acknowledged yet (``unacked``; acknowledged only while the stream does not ask to pause), and what
the stream was last told about the client being writable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from proxy.h2 import frames as f, interim_fields, reply_fields, response_fields, trailer_fields
from proxy.replies import error_reply

if TYPE_CHECKING:
    from proxy.config.model import Proxy
    from proxy.h2 import Settings
    from proxy.message import Headers, ResponseHead
    from proxy.replies import Reply
    from proxy.session import Session
    from proxy.sides import ClientEnv, StreamHandle


class Mux(Protocol):
    """What an ``H2Side`` asks of its connection (``proxy.mux_h2.H2ClientConn``)."""

    session: Session
    settings: Settings
    write_paused: bool
    last_io: float
    env: ClientEnv
    cfg: Proxy
    corked: int

    def local_address(self) -> tuple[str, int]: ...

    def want(self, deadline: float) -> None: ...

    def write_out(self, *, force: bool = False) -> None: ...

    def send_headers(self, side: H2Side, fields: Headers, *, end: bool) -> bool: ...

    def schedule(self, side: H2Side) -> None: ...

    def flush_stream(self, side: H2Side) -> None: ...

    def reset_stream(self, side: H2Side, code: int) -> None: ...

    def acknowledge(self, side: H2Side) -> None: ...

    def settle(self, side: H2Side) -> None: ...


class H2Side:
    """One stream's client end (``proxy.sides.ClientSide``): frames what its stream sends back."""

    __slots__ = (
        "body_allowed",
        "bytes_sent",
        "dirty",
        "end_pending",
        "handle",
        "handle_done",
        "head_only",
        "mux",
        "out",
        "paused_notified",
        "req_ended",
        "req_paused",
        "reset",
        "resp_started",
        "sent_end",
        "sid",
        "trailers",
        "unacked",
    )

    def __init__(self, mux: Mux, sid: int, head_only: bool) -> None:
        self.mux = mux
        self.sid = sid
        self.handle: StreamHandle | None = None
        self.handle_done = False  # the stream ended (stream_done), or never existed (a rejected request)
        self.head_only = head_only  # a HEAD request: no response body
        self.out = bytearray()  # response body bytes waiting for the client's window
        self.end_pending: Headers | None = None  # the end (trailers) to send once ``out`` is empty
        self.sent_end = False  # END_STREAM sent
        self.reset = False  # RST_STREAM sent or received: nothing more goes out
        self.resp_started = False
        self.body_allowed = False
        self.req_ended = False  # the client's END_STREAM came
        self.req_paused = False  # the stream asked not to get more request body now
        self.unacked = 0  # request bytes received and not acknowledged yet (flow-controlled size)
        self.trailers: Headers = []
        self.paused_notified = False  # what the stream was last told: the client is not writable
        self.dirty = False  # in the mux's list of streams to flush when it uncorks
        # What the log's bytes field counts for this stream: the response's header fields (name,
        # value and 4 bytes each, as an HTTP/1 line would take) and its body bytes
        self.bytes_sent = 0

    def __repr__(self) -> str:
        state = "reset" if self.reset else ("ended" if self.sent_end else "open")
        return f"<H2Side {self.sid} {state} out={len(self.out)} unacked={self.unacked}>"

    # -- ClientSide: what the mux knows -----------------------------------------------------------
    @property
    def session(self) -> Session:
        return self.mux.session

    @property
    def write_paused(self) -> bool:
        return self.mux.write_paused or len(self.out) >= self.mux.settings.max_head

    @property
    def last_io(self) -> float:
        return self.mux.last_io

    def keep_alive_allowed(self) -> bool:
        return not self.mux.env.stopping

    def local_address(self) -> tuple[str, int]:
        return self.mux.local_address()

    def deadline_hint(self, when: float) -> None:
        self.mux.want(when)

    def cork(self) -> None:
        self.mux.corked += 1

    def uncork(self) -> None:
        mux = self.mux
        mux.corked -= 1
        if mux.corked <= 0:
            mux.corked = 0
            mux.write_out()

    # -- the response -------------------------------------------------------------------------------
    def send_interim(self, resp: ResponseHead) -> None:
        if self.reset or self.resp_started:
            return
        self.mux.send_headers(self, interim_fields(resp), end=False)

    def send_response_head(self, resp: ResponseHead, *, keep_alive: bool, request_done: bool) -> bool:
        if self.reset:
            return True
        fields, ends = response_fields(resp, head_only=self.head_only)
        if not self.mux.send_headers(self, fields, end=ends):
            # Not a valid HTTP/2 block (a value the library refuses): 502 instead, as HTTP/1 does.
            self.send_reply(error_reply(502, self.mux.cfg.errorfiles.get(502)), keep_alive=False)
            return True
        self.resp_started = True
        self.body_allowed = not ends
        self.bytes_sent += _fields_size(fields)
        return True

    def send_data(self, data: bytes) -> None:
        if self.body_allowed and data and not self.reset:
            self.out += data
            self.bytes_sent += len(data)
            self.mux.schedule(self)

    def send_end(self, trailers: Headers) -> None:
        if self.body_allowed and not self.reset and self.end_pending is None:
            self.end_pending = trailer_fields(trailers) if trailers else []
            self.mux.schedule(self)

    def send_reply(self, reply: Reply, *, keep_alive: bool) -> bool:
        if self.reset:
            return True
        if reply.silent:  # an empty errorfile: no answer on this stream
            self.mux.reset_stream(self, f.CANCEL)
            return True
        fields, body = reply_fields(reply, head_only=self.head_only)
        if not self.mux.send_headers(self, fields, end=not body):
            fallback = error_reply(500, self.mux.cfg.errorfiles.get(500))
            fields, body = reply_fields(fallback, head_only=self.head_only)
            if not self.mux.send_headers(self, fields, end=not body):
                self.mux.reset_stream(self, f.INTERNAL_ERROR)
                return True
        self.resp_started = True
        self.bytes_sent += _fields_size(fields) + len(body)
        if body:
            self.body_allowed = True
            self.out += body
            self.end_pending = []
            self.mux.flush_stream(self)
        return True

    def abort(self) -> None:
        self.mux.reset_stream(self, f.INTERNAL_ERROR)

    # -- request flow control -------------------------------------------------------------------
    def pause_request(self) -> None:
        self.req_paused = True

    def resume_request(self) -> None:
        self.req_paused = False
        if self.unacked:
            self.mux.acknowledge(self)

    # -- tunnels: HTTP/2 requests never ask for an upgrade (their heads have none) ---------------
    def start_tunnel(self, stream: StreamHandle, resp: ResponseHead) -> bytes:
        self.abort()
        return b""

    def tunnel_send(self, data: bytes) -> None:
        return None

    def tunnel_send_eof(self) -> None:
        return None

    def stream_done(self, stream: StreamHandle, keep_alive: bool) -> None:
        """The stream ended. The connection goes on whatever ``keep_alive`` says (it is HTTP/1's
        business); what is still queued for this stream goes out as the window allows."""
        self.handle_done = True
        if not self.resp_started and not self.reset:
            self.mux.reset_stream(self, f.INTERNAL_ERROR)  # ended without any answer
        else:
            self.mux.session.requests_done += 1
        self.mux.settle(self)


def _fields_size(fields: Headers) -> int:
    return sum(len(name) + len(value) + 4 for name, value in fields)
