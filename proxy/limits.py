"""The file descriptor limit (RLIMIT_NOFILE): how many the configuration needs, and raising it.

HAProxy computes the descriptors it needs from ``maxconn`` and raises its limit to that at start-up;
``ulimit-n`` gives the number explicitly. poolproxy does the same in the master, before it forks
(the workers inherit the limit): ``needed_fds`` is the pure rule, ``raise_fd_limit`` carries it out.

Each client connection may hold a server connection too, and a worker may also hold idle server
connections taken from the others, so the need is counted for ``maxconn`` whole in every worker
(rather than for its share): two descriptors per connection, plus the listeners, plus a margin for
the worker's own sockets (control, takeover channel, log targets). Without ``maxconn`` nor
``ulimit-n`` the limit is left as it is.

When the limit cannot be raised that far (the hard limit is lower and the process may not raise
it), ``strict-limits`` (on by default, as in HAProxy 2.6) makes that fatal; ``no strict-limits``
turns it into a warning and the limit is raised as far as the hard limit allows.
"""

from __future__ import annotations

import resource

from proxy.config.model import Global

MARGIN = 64  # the worker's own sockets: control, takeover channel, log targets, a few spare


def needed_fds(g: Global, nlisteners: int) -> int:
    """The RLIMIT_NOFILE the configuration asks for; 0 when it asks for nothing."""
    if g.ulimit_n:
        return g.ulimit_n
    if not g.maxconn:
        return 0
    return 2 * g.maxconn + nlisteners + MARGIN


def raise_fd_limit(need: int) -> str | None:
    """Raise the soft (and, if needed and allowed, the hard) RLIMIT_NOFILE to ``need``. Returns None
    when the limit is at least ``need`` now, else HAProxy's message saying how far it went."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need <= 0 or soft == resource.RLIM_INFINITY or soft >= need:
        return None  # never lowered: a larger limit does no harm
    try:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= need else need
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, new_hard))
        return None
    except (ValueError, OSError):
        pass
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return f"[haproxy.main()] Cannot raise FD limit to {need}, limit is {now}."
