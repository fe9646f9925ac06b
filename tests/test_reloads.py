"""Reload bookkeeping (proxy.reloads): counts, the last error, a reload queued behind the running
one, and who is answered by which outcome."""

from __future__ import annotations

from proxy.reloads import Reloads


def test_counts_and_last_error() -> None:
    book = Reloads()
    book.failed_with("[ALERT] config : bad")
    assert (book.done, book.failed, book.last_error) == (0, 1, "[ALERT] config : bad")
    book.succeeded()
    assert (book.done, book.failed, book.last_error) == (1, 1, "")


def test_asks_during_a_reload_are_queued_once_and_answered_by_their_own_outcome() -> None:
    book = Reloads()
    got: list[tuple[str, bool, str]] = []
    assert book.ask(lambda ok, why: got.append(("first", ok, why)), in_progress=False)
    # two more while it runs: one queued reload, both answered by it
    assert not book.ask(lambda ok, why: got.append(("second", ok, why)), in_progress=True)
    assert not book.ask(None, in_progress=True)  # SIGUSR2: nobody to answer
    assert not book.ask(lambda ok, why: got.append(("third", ok, why)), in_progress=True)
    assert book.answer(False, "bad config")  # the queued one must start now
    assert got == [("first", False, "bad config")]
    assert not book.answer(True, "")  # the queued one's outcome; nothing more queued
    assert got[1:] == [("second", True, ""), ("third", True, "")]
    assert not book.answer(True, "") and len(got) == 3
