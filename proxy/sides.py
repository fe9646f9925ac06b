"""The interfaces between the wire and the exchange: what a mux and a stream say to each other.

HAProxy's split, in Python protocols. A **mux** owns one connection's wire format (``mux_h1`` now,
``mux_h2`` next): it parses and serialises, applies its protocol's framing rules, and turns them into
neutral calls. A **stream** (``proxy.stream.Stream``) carries one request/response exchange and knows
no protocol. The three interfaces here are the whole surface between them; this module is pure (it
imports no event loop and no other layer), so an adapter can depend on it without depending on the
orchestration that implements it.

- ``ClientSide``: what a stream asks of the client mux it belongs to (answer, body bytes, flow
  control, tunnel). One object per stream: an HTTP/1 mux hands out itself for its current stream;
  an HTTP/2 mux a per-stream endpoint.
- ``StreamHandle``: what the client mux tells the stream (request body, end, client conditions).
- ``ClientEnv``: what a client mux needs from its worker — its frontend's settings and a stream for
  each new request head — without importing the stream (``proxy.env.StreamEnv`` implements it).
- ``ServerPeer``: what a server connection tells the stream attached to it (response events,
  failures, flow control).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.config.model import Proxy
    from proxy.h1 import Limits, ProtocolError
    from proxy.message import Event, Headers, RequestHead, ResponseHead
    from proxy.replies import Reply
    from proxy.session import Session


class ClientSide(Protocol):
    """The client end of one stream, as the stream sees it."""

    @property
    def session(self) -> Session:
        """The client session (address, private server connections, first-request state)."""
        ...

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the client so far on this connection (heads, bodies, framing)."""
        ...

    @property
    def write_paused(self) -> bool:
        """True while the client does not take what is sent (its transport buffer is full)."""
        ...

    @property
    def last_io(self) -> float:
        """When the client last sent or received bytes (monotonic clock)."""
        ...

    def keep_alive_allowed(self) -> bool:
        """Whether the client connection may outlive this exchange (mode, soft stop)."""
        ...

    def local_address(self) -> tuple[str, int]:
        """The address and port the client connected to (asked only when a rule needs them)."""
        ...

    def send_interim(self, resp: ResponseHead) -> None:
        """A 1xx response (not 101): forwarded when the client's protocol can carry it."""
        ...

    def send_response_head(self, resp: ResponseHead, *, keep_alive: bool, request_done: bool) -> bool:
        """Send the final response head; the mux chooses the framing its protocol needs.

        ``keep_alive``: the exchange would allow the client connection to go on; ``request_done``:
        the request was read to its end (an early response cannot be followed by another request on
        HTTP/1). Returns whether the client connection stays alive after this response."""
        ...

    def send_data(self, data: bytes) -> None: ...

    def send_end(self, trailers: Headers) -> None: ...

    def send_reply(self, reply: Reply, *, keep_alive: bool) -> bool:
        """A complete response made by the proxy (an error page, an errorfile, ``http-request
        return``, a redirect), framed by the mux; a ``silent`` reply closes without answering.
        Returns whether the connection stays alive after it."""
        ...

    def cork(self) -> None:
        """Collect what is sent until ``uncork`` (one write, one syscall)."""
        ...

    def uncork(self) -> None: ...

    def pause_request(self) -> None:
        """Stop reading the request body (the other side cannot take it now)."""
        ...

    def resume_request(self) -> None: ...

    def abort(self) -> None:
        """Cut the client connection (a failure after the response head went out)."""
        ...

    def deadline_hint(self, when: float) -> None:
        """Call the stream's ``check_timeouts`` no later than ``when`` (``time.monotonic()``)."""
        ...

    def start_tunnel(self, stream: StreamHandle, resp: ResponseHead) -> bytes:
        """The exchange became a tunnel: send the 101 ``resp``, then raw bytes both ways from now on.
        Returns the client's bytes already read past the request."""
        ...

    def tunnel_send(self, data: bytes) -> None: ...

    def tunnel_send_eof(self) -> None: ...

    def stream_done(self, stream: StreamHandle, keep_alive: bool) -> None:
        """The stream ended; ``keep_alive`` says whether the client connection may go on."""
        ...


class StreamHandle(Protocol):
    """A stream, as its client mux sees it."""

    @property
    def server_last_io(self) -> float: ...

    @property
    def tunnel(self) -> bool: ...

    @property
    def waiting_for_server(self) -> bool:
        """The request is sent and no response head came yet (the server timeout's business)."""
        ...

    @property
    def response_started(self) -> bool: ...

    def start(self) -> None: ...

    def on_request_data(self, data: bytes) -> None: ...

    def on_request_end(self, trailers: Headers) -> None: ...

    def on_request_error(self, status: int) -> None:
        """The request body was invalid (the mux's parser said so): the exchange fails."""
        ...

    def on_client_closed(self) -> None: ...

    def on_client_writable(self, writable: bool) -> None: ...

    def on_client_timeout(self) -> None:
        """``timeout client`` expired while this stream ran (``timeout tunnel``, in a tunnel)."""
        ...

    def on_client_shutdown(self) -> None:
        """The client half-closed (FIN) after its request; the stream may abort (abortonclose)."""
        ...

    @property
    def tunnel_timeout(self) -> float | None:
        """``timeout tunnel`` of the backend (None: the mux uses its ``timeout client``)."""
        ...

    def check_timeouts(self, now: float) -> float | None:
        """Act on the stream's own expired timeouts (``timeout server``); return when to look
        again, None when there is nothing to watch."""
        ...

    def tunnel_from_client(self, data: bytes) -> None: ...

    def tunnel_client_eof(self) -> None: ...


class ClientEnv(Protocol):
    """What a client mux needs from its worker: its frontend's settings and a stream per request
    head (the worker builds one per frontend: ``proxy.env.StreamEnv``)."""

    @property
    def cfg(self) -> Proxy:
        """The frontend's configuration (timeouts, connection mode)."""
        ...

    @property
    def engine_name(self) -> str: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def stopping(self) -> bool:
        """Soft stop: no client connection outlives its current exchange."""
        ...

    def open_stream(self, side: ClientSide, head: RequestHead, t_start: float) -> StreamHandle: ...

    def log_error(self, side: ClientSide, status: int, term: str, ta: int = 0) -> None:
        """A request the mux rejected before any stream existed (``<BADREQ>``); ``ta``: the
        milliseconds it waited for it (the log's Ta)."""
        ...

    def client_opened(self, side: object) -> None: ...

    def client_closed(self, side: object) -> None: ...


class ServerPeer(Protocol):
    """What a server connection tells the stream attached to it."""

    def on_server_events(self, events: list[Event]) -> None: ...

    def on_server_error(self, exc: ProtocolError) -> None: ...

    def on_server_closed(self) -> None: ...

    def on_tunnel_data(self, data: bytes) -> None: ...

    def on_tunnel_eof(self) -> None: ...

    def on_server_writable(self, writable: bool) -> None: ...
