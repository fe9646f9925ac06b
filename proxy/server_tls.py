"""TLS to servers: the client context of an ``ssl`` server, and a handshake whose ALPN answer picks
the protocol object that gets the connection.

The context (``client_context``) is built once per server from its line (``verify``, ``ca-file``,
``alpn``) and the ``global`` defaults (``ssl-server-verify``, ``ssl-default-server-ciphers``,
``ssl-default-server-options``). Verification follows HAProxy: the server's own ``verify`` wins,
else ``ssl-server-verify`` (default ``required``, which the configuration refuses without a
``ca-file``); when verifying and an SNI is sent, the certificate must name it.

``open_tls`` runs the handshake on a connected socket and then calls ``choose(alpn)`` with the
protocol the server selected (None when it selected none): that factory returns the protocol object
(an HTTP/1 ``ServerConn`` or an HTTP/2 connection) which is then given the transport, before any
byte of the server's can be read. The TLS state lives in this process: such a connection can never
be handed to another worker (its ``shareable`` is False), it is only pooled here.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.config.model import Global, Server

_VERSIONS = {
    "TLSv1.0": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_NO_VERSION = {
    "no-tlsv10": ssl.OP_NO_TLSv1,
    "no-tlsv11": ssl.OP_NO_TLSv1_1,
    "no-tlsv12": ssl.OP_NO_TLSv1_2,
    "no-tlsv13": ssl.OP_NO_TLSv1_3,
}


def verifies(srv: Server, glob: Global) -> bool:
    return (srv.verify or glob.ssl_server_verify) == "required"


def client_context(srv: Server, glob: Global) -> ssl.SSLContext:
    """The TLS client context of ``ssl`` server ``srv``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verifies(srv, glob):
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = srv.sni is not None  # the name checked is the SNI sent (HAProxy's rule)
        if srv.ca_file:
            ca_file = srv.ca_file
            if glob.ca_base and not ca_file.startswith("/"):
                ca_file = glob.ca_base.rstrip("/") + "/" + ca_file
            ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if glob.ssl_default_server_ciphers:
        ctx.set_ciphers(glob.ssl_default_server_ciphers)
    opts = glob.ssl_default_server_options
    for i, word in enumerate(opts):
        if word in _NO_VERSION:
            ctx.options |= _NO_VERSION[word]
        elif word == "no-tls-tickets":
            ctx.options |= ssl.OP_NO_TICKET
        elif word == "ssl-min-ver":
            ctx.minimum_version = _VERSIONS[opts[i + 1]]
        elif word == "ssl-max-ver":
            ctx.maximum_version = _VERSIONS[opts[i + 1]]
    if srv.alpn:
        ctx.set_alpn_protocols(list(srv.alpn))
    return ctx


class _Chooser(asyncio.Protocol):
    """Stands in until the handshake ends, then hands the transport to the chosen protocol."""

    def __init__(self, choose: Callable[[str | None], asyncio.Protocol]) -> None:
        self.choose = choose
        self.chosen: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        proto = self.chosen = self.choose(alpn)
        transport.set_protocol(proto)
        proto.connection_made(transport)


async def open_tls(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    ctx: ssl.SSLContext,
    sni: str | None,
    choose: Callable[[str | None], asyncio.Protocol],
    timeout: float,
) -> asyncio.Protocol:
    """TLS handshake on the connected ``sock``; returns the protocol ``choose`` made. Raises
    OSError (``ssl.SSLError`` included) or TimeoutError; the socket is closed on failure."""
    chooser = _Chooser(choose)
    try:
        if ctx.check_hostname and not sni:
            raise OSError("certificate verification needs a server name, and the SNI is empty")
        await loop.create_connection(
            lambda: chooser, sock=sock, ssl=ctx, server_hostname=sni or "",  # "": no SNI sent
            ssl_handshake_timeout=max(timeout, 0.001),
        )  # fmt: skip
    except BaseException:
        if chooser.chosen is None:
            sock.close()
        raise
    assert chooser.chosen is not None
    return chooser.chosen
