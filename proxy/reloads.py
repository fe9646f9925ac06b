"""Reload bookkeeping: how many reloads succeeded and failed, the last error, who waits for an
outcome, and the one reload that may wait behind the running one.

A reload asked for while another is in progress is queued (once: several asks merge into one,
read from the files when it starts, so an edit made meanwhile is not lost); its askers are answered
by its own outcome, not by the running one's. Plain data, no I/O: the master carries it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Done = Callable[[bool, str], None]  # done(ok, why): the outcome of the reload one asked for


@dataclass(slots=True)
class Reloads:
    done: int = 0
    failed: int = 0
    last_error: str = ""  # the last reload's error ("" once one succeeds)
    waiters: list[Done] = field(default_factory=list)  # answered by the running reload's outcome
    queued: bool = False
    queued_waiters: list[Done] = field(default_factory=list)  # answered by the queued one's

    def ask(self, done: Done | None, in_progress: bool) -> bool:
        """Someone asks for a reload: True if it starts now, False if it is queued."""
        if in_progress:
            self.queued = True
            if done is not None:
                self.queued_waiters.append(done)
            return False
        if done is not None:
            self.waiters.append(done)
        return True

    def succeeded(self) -> None:
        self.done += 1
        self.last_error = ""

    def failed_with(self, why: str) -> None:
        self.failed += 1
        self.last_error = why

    def answer(self, ok: bool, why: str) -> bool:
        """Tell the waiters; True if a queued reload must start now (its waiters are next)."""
        waiters, self.waiters = self.waiters, []
        for done in waiters:
            done(ok, why)
        if not self.queued:
            return False
        self.queued = False
        self.waiters, self.queued_waiters = self.queued_waiters, []
        return True
