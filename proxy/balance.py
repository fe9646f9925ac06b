"""Load-balancing algorithms (``balance <name>`` in a backend): which server takes a request.

Pure decisions (STYLE.md habits 1 and 4): an algorithm is built once per backend per worker from the
configured servers (``make_balancer``) and answers ``pick(client_ip=..., usable=..., load=...)`` with a
server index into that sequence, or None when no server can be chosen (the caller answers 503, or
queues at backend level). It performs no I/O and reads no clock; it keeps only its own rotation state.

Contract of the callbacks, supplied by the caller from live state:

- ``usable(i)``: server ``i`` may receive traffic — operationally up and not in maintenance. A
  ``disabled`` server (``Server.disabled``) is never usable: the caller's ``usable`` must say so; the
  balancer does not read ``disabled`` itself, since the runtime API may enable it later.
- ``load(i)``: the requests server ``i`` is serving now (``served``), queued ones included where the
  caller wants them counted. Read by ``leastconn`` and ``first``.

A server with weight 0 is never picked by any algorithm (HAProxy: it takes no new traffic).

Algorithms, registered by name (``balancer_names()``); a new one is a class with ``@register``:

- ``roundrobin`` — smooth weighted round robin (the nginx scheme): over any window of
  ``sum(weights)`` picks with a stable usable set, each server gets exactly its weight, interleaved.
- ``leastconn`` — the usable server with the least ``load(i) / weight``; ties go in round-robin order.
- ``first`` — the first usable server (configuration order) whose load is under its ``maxconn``
  (0 = unlimited); when all are full, the first usable one (the request will queue there).
- ``source`` — a hash of the client IP over the usable servers, weighted; the same IP gets the same
  server while the usable set is unchanged, in every worker and across restarts.
- ``random`` — HAProxy's ``random(2)``, "power of two choices": two servers drawn at random (weighted),
  the one with the lower ``load / weight`` wins (the first drawn on a tie).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from typing import Protocol

from proxy.config.model import Server

__all__ = ["Balancer", "balancer_names", "make_balancer", "register"]


class Balancer(Protocol):
    def pick(
        self, *, client_ip: str, usable: Callable[[int], bool], load: Callable[[int], int]
    ) -> int | None:
        """The index of the server to use, None when no server is usable."""
        ...


BalancerFactory = Callable[[Sequence[Server]], Balancer]

_REGISTRY: dict[str, BalancerFactory] = {}


def register(name: str) -> Callable[[BalancerFactory], BalancerFactory]:
    """Class decorator: make the algorithm available as ``balance <name>``."""

    def deco(factory: BalancerFactory) -> BalancerFactory:
        if name in _REGISTRY:
            raise ValueError(f"balance algorithm {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def balancer_names() -> frozenset[str]:
    """The names ``make_balancer`` accepts (for config validation)."""
    return frozenset(_REGISTRY)


def make_balancer(name: str, servers: Sequence[Server]) -> Balancer:
    """The algorithm ``name`` over ``servers`` (indices returned by ``pick`` index this sequence)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown balance algorithm {name!r} (supported: {known})") from None
    return factory(servers)


@register("roundrobin")
class RoundRobin:
    """Smooth weighted round robin: each pick adds every candidate's weight to its running score,
    takes the highest score (lowest index on a tie) and takes the candidates' total weight off it.
    Unusable servers sit out without accumulating score."""

    __slots__ = ("_current", "_weights")

    def __init__(self, servers: Sequence[Server]) -> None:
        self._weights = [max(s.weight, 0) for s in servers]
        self._current = [0] * len(servers)

    def pick(
        self, *, client_ip: str, usable: Callable[[int], bool], load: Callable[[int], int]
    ) -> int | None:
        current = self._current
        best = -1
        total = 0
        for i, weight in enumerate(self._weights):
            if weight <= 0 or not usable(i):
                continue
            current[i] += weight
            total += weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return best


@register("leastconn")
class LeastConn:
    """The least ``load / weight``; among equals, the first at or after a pointer that moves past
    each pick, so equally loaded servers take turns."""

    __slots__ = ("_next", "_weights")

    def __init__(self, servers: Sequence[Server]) -> None:
        self._weights = [max(s.weight, 0) for s in servers]
        self._next = 0

    def pick(
        self, *, client_ip: str, usable: Callable[[int], bool], load: Callable[[int], int]
    ) -> int | None:
        weights = self._weights
        n = len(weights)
        best = -1
        best_load = 0
        for step in range(n):
            i = (self._next + step) % n
            weight = weights[i]
            if weight <= 0 or not usable(i):
                continue
            cur = load(i)
            # cur / weight < best_load / weights[best], without floats
            if best < 0 or cur * weights[best] < best_load * weight:
                best, best_load = i, cur
        if best < 0:
            return None
        self._next = (best + 1) % n
        return best


@register("first")
class First:
    """The first usable server with room (``load < maxconn``, maxconn 0 = no limit), in configuration
    order; when every usable server is full, the first usable one."""

    __slots__ = ("_maxconn", "_weights")

    def __init__(self, servers: Sequence[Server]) -> None:
        self._weights = [max(s.weight, 0) for s in servers]
        self._maxconn = [s.maxconn for s in servers]

    def pick(
        self, *, client_ip: str, usable: Callable[[int], bool], load: Callable[[int], int]
    ) -> int | None:
        fallback: int | None = None
        for i, weight in enumerate(self._weights):
            if weight <= 0 or not usable(i):
                continue
            maxconn = self._maxconn[i]
            if maxconn <= 0 or load(i) < maxconn:
                return i
            if fallback is None:
                fallback = i
        return fallback


def _ip_hash(client_ip: str) -> int:
    # A stable hash (CRC-32), never Python's salted hash(): every worker, and the next process after a
    # reload, must send the same client to the same server.
    return zlib.crc32(client_ip.encode("ascii", "surrogateescape"))


@register("source")
class Source:
    """``crc32(client_ip) % total_weight`` over the usable servers laid out by weight, in
    configuration order (HAProxy's map-based ``source``: a change of the usable set remaps clients)."""

    __slots__ = ("_weights",)

    def __init__(self, servers: Sequence[Server]) -> None:
        self._weights = [max(s.weight, 0) for s in servers]

    def pick(
        self, *, client_ip: str, usable: Callable[[int], bool], load: Callable[[int], int]
    ) -> int | None:
        candidates = [(i, w) for i, w in enumerate(self._weights) if w > 0 and usable(i)]
        if not candidates:
            return None
        point = _ip_hash(client_ip) % sum(w for _, w in candidates)
        for i, weight in candidates:
            if point < weight:
                return i
            point -= weight
        raise AssertionError("unreachable: point < total weight")


@register("random")
class Random:
    """Two weighted random draws among the usable servers; the less loaded (per weight) wins. The
    only randomness in the module: a private generator, so tests may seed ``_rng``."""

    __slots__ = ("_rng", "_weights")

    def __init__(self, servers: Sequence[Server]) -> None:
        self._weights = [max(s.weight, 0) for s in servers]
        self._rng = random.Random()

    def pick(
        self, *, client_ip: str, usable: Callable[[int], bool], load: Callable[[int], int]
    ) -> int | None:
        candidates = [i for i, w in enumerate(self._weights) if w > 0 and usable(i)]
        if not candidates:
            return None
        weights = [self._weights[i] for i in candidates]
        a, b = self._rng.choices(candidates, weights, k=2)
        wa, wb = self._weights[a], self._weights[b]
        return b if load(b) * wa < load(a) * wb else a
