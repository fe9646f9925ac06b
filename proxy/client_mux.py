"""Which client mux serves a new connection: HTTP/1 (``mux_h1``) or HTTP/2 (``mux_h2``).

One ``MuxFactory`` per listener makes the protocol object the event loop asks for on each accept:

- a plain ``bind``: ``mux_h1.ClientConn``, which hands the connection to ``mux_h2`` if its first
  bytes are the HTTP/2 preface (h2c with prior knowledge; HAProxy does not do the h2c Upgrade and
  neither do we);
- ``bind ... proto h2``: ``mux_h2.H2ClientConn`` at once (``proto h1``: HTTP/1, no sniffing);
- a TLS ``bind`` (``ssl crt ...``): an ``AlpnChooser``. The event loop calls its
  ``connection_made`` once the handshake is done, when the protocol chosen by ALPN is known: ``h2``
  makes an ``H2ClientConn``, anything else (``http/1.1``, no ALPN) a ``ClientConn``; the transport
  is then given to it (``set_protocol``) and the chooser is out of the way.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.mux_h1 import ClientConn
from proxy.mux_h2 import H2ClientConn

if TYPE_CHECKING:
    from proxy.h2 import Settings
    from proxy.sides import ClientEnv

ClientMux = ClientConn | H2ClientConn


class MuxFactory:
    __slots__ = ("env", "loop", "proto", "settings", "tls")

    def __init__(self, env: ClientEnv, settings: Settings, *, proto: str = "", tls: bool = False) -> None:
        self.env = env
        self.settings = settings
        self.proto = proto  # "h2", "h1" or "" (HTTP/1 unless the client says HTTP/2)
        self.tls = tls
        self.loop: asyncio.AbstractEventLoop | None = None  # the running one, once called

    def __repr__(self) -> str:
        return f"<MuxFactory fe={self.env.cfg.name} proto={self.proto or 'auto'}{' tls' if self.tls else ''}>"

    def __call__(self) -> asyncio.Protocol:
        if self.proto == "h2":
            return H2ClientConn(self.env, self.settings)
        if self.tls:
            return AlpnChooser(self)
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        if self.proto == "h1":
            return ClientConn(self.env, loop=loop)
        return ClientConn(self.env, sniff=self.to_h2, loop=loop)

    def to_h2(self, transport: asyncio.Transport, data: bytes) -> None:
        """A plain connection opened with the HTTP/2 preface: ``mux_h2`` takes it from here."""
        mux = H2ClientConn(self.env, self.settings)
        transport.set_protocol(mux)
        mux.connection_made(transport)
        mux.data_received(data)

    def by_alpn(self, alpn: str | None) -> ClientMux:
        return H2ClientConn(self.env, self.settings) if alpn == "h2" else ClientConn(self.env)


class AlpnChooser(asyncio.Protocol):
    """Stands in until the TLS handshake is done, then hands the transport to the mux ALPN chose."""

    __slots__ = ("factory",)

    def __init__(self, factory: MuxFactory) -> None:
        self.factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        mux = self.factory.by_alpn(alpn)
        transport.set_protocol(mux)
        mux.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        return None  # only before connection_made (a failed handshake): nothing was opened
