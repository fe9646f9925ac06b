"""The master's control sockets: the runtime API (``stats socket``) and the master CLI (``-S``).

``Control`` registers both kinds of listening sockets and their sessions in the master's
``selectors`` loop (``event`` handles what the selector reports for them; data keys are the
sessions themselves, ``(socket, StatsSocket)`` for a runtime API listener and ``("mcli", socket)``
for a master CLI one), closes idle sessions (``expire``), re-binds the runtime API when a reload
changed its ``stats socket`` lines, and closes everything in a forked worker. The runtime API is
answered from the current generation's table (``snapshot`` and ``table`` are called at each
command); ``context`` builds the one a master CLI's ``@N``/``@!PID`` routes to (another
generation's table and configuration). No event loop, no HTTP code.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from contextlib import suppress
from typing import Any, cast

from proxy import cli as runtime_api
from proxy.cli import CliServer, Session
from proxy.config.model import Config, StatsSocket
from proxy.log import alert
from proxy.master_cli import Host, MasterCli, MasterSession, MasterSocketSpec
from proxy.shm import R_MAX_CUR_CONNS, R_MAX_QUEUE, R_MAX_SERVED, ShmTable


class Control:
    def __init__(
        self,
        selector: selectors.BaseSelector,
        host: Host,
        table: Callable[[], ShmTable | None],
        master_sockets: list[MasterSocketSpec],
    ) -> None:
        self.selector = selector
        self.host = host
        self.table = table  # the current generation's table
        self.master_sockets = master_sockets
        self.cli: CliServer | None = None
        self.mcli: MasterCli | None = None

    # -- binding ------------------------------------------------------------------------------------
    def bind_runtime_api(self, config: Config) -> bool:
        """The ``stats socket`` lines of ``config``; False (alert logged) if one cannot be bound."""
        self.cli = CliServer(config, self._snapshot, self._clear_max, self.table)
        self.cli.ctx.listeners = self.host.listening_sockets  # ``_getsocks`` (``expose-fd listeners``)
        try:
            self.cli.bind()
        except OSError as exc:
            alert(f"cannot bind the stats socket '{exc.filename}': {exc.strerror or exc}")
            return False
        except (ValueError, OverflowError) as exc:  # never the master's death (a reload's switch)
            alert(f"cannot bind the stats socket: {exc}")
            return False
        for lsock, spec in self.cli.listeners:
            self.selector.register(lsock, selectors.EVENT_READ, (lsock, spec))
        return True

    def bind_master_cli(self) -> bool:
        if not self.master_sockets:
            return True
        self.mcli = MasterCli(self.master_sockets, self.host)
        self.mcli.closer = self._close_mcli_session
        try:
            self.mcli.bind()
        except OSError as exc:
            alert(f"cannot bind the master CLI socket: {exc}")  # OSError names the path
            return False
        for lsock in self.mcli.listeners:
            self.selector.register(lsock, selectors.EVENT_READ, ("mcli", lsock))
        return True

    def switch(self, config: Config, old: Config | None) -> None:
        """After a reload's switch: the runtime API answers for ``config``; its sockets are
        re-bound when the ``stats socket`` lines changed."""
        cli = self.cli
        if cli is None:
            return
        cli.ctx.config = config
        if old is not None and old.global_.stats_sockets == config.global_.stats_sockets:
            return
        for lsock, _ in cli.listeners:
            self._unregister(lsock)
        for sess in list(cli.sessions.values()):
            self._unregister(sess.sock)
        cli.close()
        if not self.bind_runtime_api(config):
            alert("the runtime API is unavailable until the next reload")

    # -- the selector's events --------------------------------------------------------------------
    def event(self, data: object) -> None:
        if isinstance(data, MasterSession):
            if self.mcli is not None and not self.mcli.readable(data):
                self._close_mcli_session(data)
            return
        if isinstance(data, tuple) and data[0] == "mcli":
            if self.mcli is not None:
                msess = self.mcli.accept(cast("socket.socket", data[1]))
                if msess is not None:
                    self.selector.register(msess.sock, selectors.EVENT_READ, msess)
            return
        cli = self.cli
        if cli is None:
            return
        if isinstance(data, Session):
            if not cli.readable(data):
                self._unregister(data.sock)
                cli.close_session(data)
            return
        lsock, spec = cast("tuple[socket.socket, StatsSocket]", data)
        sess = cli.accept(lsock, spec)
        if sess is not None:
            self.selector.register(sess.sock, selectors.EVENT_READ, sess)

    def expire(self, now: float) -> None:
        if self.cli is not None:
            for sess in self.cli.expired(now):
                self._unregister(sess.sock)
                self.cli.close_session(sess)
        if self.mcli is not None:
            for msess in self.mcli.expired(now):
                self._close_mcli_session(msess)

    def _close_mcli_session(self, sess: MasterSession) -> None:
        if sess.sock.fileno() >= 0:
            self._unregister(sess.sock)
        if self.mcli is not None:
            self.mcli.close_session(sess)

    def _unregister(self, sock: socket.socket) -> None:
        with suppress(KeyError, ValueError):
            self.selector.unregister(sock)

    # -- closing ------------------------------------------------------------------------------------
    def close(self) -> None:
        """The master exits: sessions and listeners closed, socket files removed."""
        if self.cli is not None:
            self.cli.close()
        if self.mcli is not None:
            self.mcli.close()

    def close_in_child(self) -> None:
        """In a forked worker: close the descriptors, leave the socket files (they are the master's)."""
        socks: list[socket.socket] = []
        if self.cli is not None:
            socks += [lsock for lsock, _ in self.cli.listeners]
            socks += [sess.sock for sess in self.cli.sessions.values()]
        if self.mcli is not None:
            socks += self.mcli.listeners
            socks += [msess.sock for msess in self.mcli.sessions.values()]
        for s in socks:
            s.close()

    # -- the runtime API's view ---------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        table = self.table()
        assert table is not None
        return table.snapshot()

    def _clear_max(self) -> None:
        table = self.table()
        if table is not None:
            clear_max(table)


def context(config: Config, table: ShmTable, started: float, level: str) -> runtime_api.Context:
    """A runtime API context over one generation's table and configuration (master CLI routing)."""
    return runtime_api.Context(
        config, table.snapshot, started, level=runtime_api.LEVELS[level],
        clear_max=lambda: clear_max(table), table=lambda: table,
    )  # fmt: skip


def clear_max(table: ShmTable) -> None:
    """``clear counters``: each row's peaks (smax, qmax...) back to the current values."""
    for info in table.servers:
        row = table.row(info.index)
        row.store(R_MAX_SERVED, row.served)
        row.store(R_MAX_CUR_CONNS, row.cur_conns)
        row.store(R_MAX_QUEUE, row.queue_len)
