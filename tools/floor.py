"""The floor: the least work a Python reverse proxy does per request, for ``tools.bench`` to compare with.

    python -m tools.floor --listen PORT --upstream PORT [--workers N]

uvloop + httptools. One ``asyncio.Protocol`` per client connection, which opens one upstream
connection (kept alive as long as the client's) and relays bytes both ways as they come; httptools
parses the requests and the responses only to find where a message ends (a request that is not
keep-alive: the client is closed once its response is written). Either side closing closes the other;
a full write buffer pauses reading on the other side. No routing, no pooling, no header rewriting, no
timeouts: the floor a Python proxy can approach. ``--workers`` processes are forked and accept on one
shared listening socket (as poolproxy's workers do); the parent only waits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from typing import cast

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.client.transport.is_closing():
            transport.close()
            return
        transport.writelines(self.client.pending)  # what the client sent while this connected
        self.client.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.client.transport.close()

    def on_message_complete(self) -> None:
        if not self.client.keep_alive:
            self.client.transport.close()  # after what was written

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()  # what was written goes out first

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()


class Client(asyncio.Protocol):
    upstream_addr: tuple[str, int] = ("127.0.0.1", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.parser = httptools.HttpRequestParser(self)
        self.keep_alive = True
        self.upstream = Upstream(self)
        self.pending: list[bytes] = []
        self.connecting = asyncio.get_running_loop().create_task(self.connect())  # referenced until done

    async def connect(self) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: self.upstream, *self.upstream_addr)
        except OSError:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.upstream.transport is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream.transport is not None:
            self.upstream.transport.close()

    def pause_writing(self) -> None:
        if self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream.transport is not None:
            self.upstream.transport.resume_reading()


def serve(sock: socket.socket) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    loop = uvloop.new_event_loop()
    loop.run_until_complete(loop.create_server(Client, sock=sock, backlog=1024))
    loop.run_forever()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1")
    ap.add_argument("--upstream", type=int, required=True, help="the origin's port on 127.0.0.1")
    ap.add_argument("--workers", type=int, default=1, help="worker processes")
    args = ap.parse_args()
    Client.upstream_addr = ("127.0.0.1", args.upstream)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.listen))
    sock.listen(1024)
    pids = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            serve(sock)
            os._exit(0)
        pids.append(pid)

    def stop(*_: object) -> None:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in pids:
        os.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
