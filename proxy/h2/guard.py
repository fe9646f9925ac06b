"""Protections of one HTTP/2 client connection against floods that the protocol allows: pure counters.

The connection engine (``proxy.h2.conn``, or the ``h2`` library) enforces what RFC 9113 makes an
error (bad preface, stream-id reuse, window overflow, frames over SETTINGS_MAX_FRAME_SIZE,
CONTINUATION without end: at most 64 of them, and HPACK's decoded size is capped): the mux answers
those with GOAWAY and the engine's code.
What is legal frame by frame but costly in bulk is counted here, and the mux ends the connection
with GOAWAY ENHANCE_YOUR_CALM when a ``Guard`` says so:

- **rapid reset** (CVE-2023-44487): streams the client opens and cancels (RST_STREAM) before their
  response ended; each one started work on a server. More than ``resets`` in one ``PERIOD`` is an
  attack (a browser cancels a handful when a page changes, not hundreds per second);
- **SETTINGS and PING floods**: each one makes us write an acknowledgement; more than ``control``
  in one ``PERIOD`` is a flood (what the client does not read stays bounded anyway: reading pauses
  while our transport's buffer is full);
- **glitches** (HAProxy's ``tune.h2.fe.glitches-threshold``): every suspicious but legal event
  (a cancelled stream, an empty DATA frame without END_STREAM, a refused stream, a header block over
  the limits) counts one; past the threshold (0: no limit) the connection ends.

Counting is by fixed periods of ``PERIOD`` seconds, the caller passing the clock, so that tests
drive it without sleeping. Compiled by mypyc (``proxy.native.COMPILED``).
"""

from __future__ import annotations

from typing import Final

PERIOD: Final = 1.0
RESETS_MIN: Final = 100  # cancelled streams per period tolerated at least (the budget grows with max streams)
CONTROL_MAX: Final = 100  # SETTINGS + PING frames per period


class Budget:
    """At most ``limit`` events per ``PERIOD``; ``spend`` says False once the limit is passed."""

    __slots__ = ("limit", "period_start", "used")

    def __init__(self, limit: int, period_start: float = 0.0, used: int = 0) -> None:
        self.limit = limit
        self.period_start = period_start
        self.used = used

    def spend(self, now: float, n: int = 1) -> bool:
        if now - self.period_start >= PERIOD:
            self.period_start = now
            self.used = 0
        self.used += n
        return self.used <= self.limit


class Guard:
    """One connection's counters; each method returns the reason to end it, or None."""

    __slots__ = ("control", "glitches", "glitches_threshold", "max_streams", "resets")

    def __init__(self, max_streams: int, glitches_threshold: int = 0) -> None:
        self.max_streams = max_streams
        self.glitches_threshold = glitches_threshold
        self.resets = Budget(max(RESETS_MIN, 2 * max_streams))
        self.control = Budget(CONTROL_MAX)
        self.glitches = 0

    def cancelled(self, now: float) -> str | None:
        """The client reset a stream whose response had not ended."""
        if not self.resets.spend(now):
            return "rapid reset: too many streams cancelled by the client"
        return self.glitch()

    def control_frame(self, now: float) -> str | None:
        """A SETTINGS or PING frame that needs an acknowledgement."""
        if not self.control.spend(now):
            return "SETTINGS/PING flood"
        return None

    def glitch(self, n: int = 1) -> str | None:
        self.glitches += n
        if self.glitches_threshold and self.glitches > self.glitches_threshold:
            return f"{self.glitches} glitches (tune.h2.fe.glitches-threshold {self.glitches_threshold})"
        return None
