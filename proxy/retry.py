"""Connection retries and redispatch: what to do after a connection attempt to a server failed.

A pure decision (STYLE.md habit 1), HAProxy 2.6's rules (``retries``, ``option redispatch``):

- ``retries`` is the number of connection attempts made after the first one failed; once they are
  spent the request gets 503 ``SC``. It counts connection attempts, not requests.
- The ``n``-th retry (1-based) goes to another server ("redispatch") when ``option redispatch`` is
  on and: the server is not UP any more, or ``n`` is a multiple of a positive interval, or, for a
  negative interval ``-k`` (the default is ``-1``), ``n`` is a multiple of ``retries + 1 - k`` (the
  last retry for ``-1``), or the algorithm is of HAProxy's round-robin kind (``roundrobin``,
  ``random``) and more than one server is up: then any other server will do at once.
- After a connection *error* (refused, reset: not a timeout), before a retry on the same server (or
  with an algorithm not of the round-robin kind, or with a single server up), the worker waits
  ``min(timeout connect, 1s)``: a server that is restarting would refuse an immediate retry just the
  same. No wait after a timeout (the time was spent already) nor on a reused connection.

The retry count and whether the request was redispatched go to the access log (``%rc``: ``+N``
when redispatched, as HAProxy).
"""

from __future__ import annotations

from dataclasses import dataclass

RR_KIND = frozenset({"roundrobin", "random"})  # HAProxy's BE_LB_KIND_RR algorithms
TURNAROUND_MAX = 1.0  # seconds: the wait before a retry on the same server, at most


@dataclass(frozen=True, slots=True)
class RetryStep:
    """The next attempt: on another server (``redispatch``) or the same, after ``delay`` seconds."""

    redispatch: bool
    delay: float


def next_retry(
    *, done: int, retries: int, redispatch: int, server_up: bool, balance: str, servers_up: int,
    connect_timeout: float | None, reused: bool = False, timed_out: bool = False,
) -> RetryStep | None:  # fmt: skip
    """After a failed attempt (``timed_out``: by ``timeout connect``, else an error), ``done``
    retries made so far: the next step, or None when the retries are spent (503 ``SC``).
    ``redispatch`` is ``Proxy.redispatch`` (0: off)."""
    if done >= retries:
        return None
    n = done + 1
    move = redispatch != 0 and (
        not server_up
        or (redispatch > 0 and n % redispatch == 0)
        or (redispatch < 0 and retries + 1 + redispatch > 0 and n % (retries + 1 + redispatch) == 0)
        or (balance in RR_KIND and servers_up > 1)
    )
    wait = not timed_out and not reused and (not move or balance not in RR_KIND or servers_up <= 1)
    delay = min(connect_timeout or TURNAROUND_MAX, TURNAROUND_MAX) if wait else 0.0
    return RetryStep(move, delay)
