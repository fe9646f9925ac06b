"""Dropping privileges: HAProxy's ``chroot``, ``user``/``uid`` and ``group``/``gid``, done by each worker.

Theory of operation. As in HAProxy's master-worker mode, the master keeps the privileges it was started
with (it binds, forks and respawns workers, cleans the shared memory up), and each **worker** gives
them up once it has everything it needs and before it serves a single request: after its event loop,
listeners and takeover channel exist, ``drop`` runs ``chroot`` + ``chdir("/")``, then
``setgroups([gid])`` (no supplementary group left), ``setgid``, ``setuid``. Only what differs from
the current ids is changed, so a process already running as the configured user needs no privilege
for it. A failure is fatal to the worker (the master respawns it, and says why in the log).

What a chrooted worker still needs from the file system is taken before: every module is imported
(the worker's imports happen at start), the time zone is loaded (``warm_up``), and the servers' host
names are resolved by the master before forking (``resolve_servers``: /etc/hosts and resolv.conf are
outside the jail; HAProxy resolves them at start-up too). Log targets that are Unix socket paths are
looked up inside the jail, as in HAProxy (Debian's rsyslog provides /var/lib/haproxy/dev/log).

``preflight`` is the master's check before it binds: a chroot directory that does not exist, or ids
to change when the process is not root, refuse the start with HAProxy's message.

After ``setuid`` the worker can no longer bind privileged ports for ``source``, nor set
``IP_TRANSPARENT`` for ``usesrc clientip`` (HAProxy keeps the network capabilities; poolproxy does
not yet).
"""

from __future__ import annotations

import os
import time

from proxy.config.address import resolve_server_host
from proxy.config.model import Config, Global


def wanted(g: Global) -> bool:
    return bool(g.chroot) or g.uid is not None or g.gid is not None


def preflight(g: Global) -> str | None:
    """Why the workers could not drop privileges as configured (None: they can)."""
    if g.chroot and not os.path.isdir(g.chroot):
        return f"[haproxy.main()] Cannot chroot({g.chroot})."
    if os.geteuid() == 0:
        return None
    if g.chroot:
        return f"[haproxy.main()] Cannot chroot({g.chroot}) (not running as root)."
    if g.gid is not None and g.gid != os.getgid():
        return f"[haproxy.main()] Cannot set gid {g.gid}."
    if g.uid is not None and g.uid != os.getuid():
        return f"[haproxy.main()] Cannot set uid {g.uid}."
    return None


def resolve_servers(config: Config) -> str | None:
    """Replace every server host name by its first address (for a chroot); the error, if any."""
    for backend in config.backends.values():
        for srv in backend.servers:
            try:
                srv.host = resolve_server_host(srv.host, srv.port)
            except (OSError, UnicodeError) as exc:
                return f"backend '{backend.name}': server '{srv.name}': could not resolve '{srv.host}': {exc}"
    return None


def warm_up() -> None:
    """Load what would be read from the file system later: the time zone (libc), and the IDNA codec
    that the event loop's resolver imports lazily on a connect (a worker running as another user can
    no longer read the interpreter's own directory when it was installed under /root)."""
    time.localtime()
    time.strftime("%b %d %H:%M:%S")
    "localhost".encode("idna")


def drop(g: Global) -> None:
    """chroot, then group, then user, as configured; raises OSError when refused."""
    warm_up()
    if g.chroot:
        os.chroot(g.chroot)
        os.chdir("/")
    if g.gid is not None and (g.gid != os.getgid() or os.getgroups() not in ([], [g.gid])):
        os.setgroups([g.gid])
        os.setgid(g.gid)
    if g.uid is not None and g.uid != os.getuid():
        os.setuid(g.uid)
