"""A frontend's counters in one worker's cell of the shared table, counted frame-free.

``for_worker(table, f, slot)`` makes the ``FrontCounter`` of frontend ``f`` for worker ``slot``:
only that worker counts in its cell (``ShmTable.front_cell``); the frontend's peak of concurrent
connections (``max_conns``, the word ``ShmTable.front_peak`` names) is shared by the workers and
only ever raised (atomic max).

- ``opened()``: a client connection was accepted: current and total connections +1, and the peak
  raised to the connections open on the frontend across workers (the sum of every worker's cell);
- ``closed()``: current connections -1;
- ``request(status, bytes_out)``: an exchange ended: the total, the bytes sent to the client, and
  the status class (``hrsp_1xx`` .. ``hrsp_5xx``, ``hrsp_other`` for anything else);
- ``count(off)``: +1 on one of the cell's counters (``F_DENIED_REQ``, ``F_BAD_REQ``).

The ``F_*`` words are ``proxy.shm``'s. The atomics come as callables (the table's bound
``fetch_add``/``fetch_max``/``load``, or recording functions in tests). Compiled with the hot path
(``proxy.native``): a request or a connection counts here without a Python frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from proxy.shm import F_BYTES_OUT, F_CONNS_TOTAL, F_CUR_CONNS, F_HRSP, F_REQUESTS_TOTAL

if TYPE_CHECKING:
    from proxy.shm import ShmTable

_TOTAL: Final = F_REQUESTS_TOTAL
_BYTES: Final = F_BYTES_OUT
_HRSP: Final = F_HRSP
_CUR: Final = F_CUR_CONNS
_CONNS: Final = F_CONNS_TOTAL


class FrontCounter:
    __slots__ = ("cell", "cur_words", "fetch_add", "fetch_max", "load", "peak")

    def __init__(
        self,
        fetch_add: Callable[[int, int], int],
        cell: int,
        *,
        load: Callable[[int], int],
        fetch_max: Callable[[int, int], int],
        cur_words: tuple[int, ...],
        peak: int,
    ) -> None:
        self.fetch_add = fetch_add
        self.cell = cell
        self.load = load
        self.fetch_max = fetch_max
        self.cur_words = cur_words  # every worker's current-connections word of this frontend
        self.peak = peak

    def opened(self) -> None:
        add, cell = self.fetch_add, self.cell
        add(cell + _CUR, 1)
        add(cell + _CONNS, 1)
        load = self.load
        now = 0
        for word in self.cur_words:
            now += load(word)
        self.fetch_max(self.peak, now)

    def closed(self) -> None:
        self.fetch_add(self.cell + _CUR, -1)

    def request(self, status: int, bytes_out: int) -> None:
        add, cell = self.fetch_add, self.cell
        add(cell + _TOTAL, 1)
        add(cell + _BYTES, bytes_out)
        cls = status // 100
        add(cell + _HRSP + 8 * ((cls - 1) if 1 <= cls <= 5 else 5), 1)

    def count(self, off: int) -> None:
        self.fetch_add(self.cell + off, 1)


def for_worker(table: ShmTable, f: int, slot: int) -> FrontCounter:
    """Frontend ``f``'s counter for worker ``slot`` of ``table``."""
    a = table.atomics
    return FrontCounter(
        a.fetch_add,
        table.front_cell(f, slot),
        load=a.load,
        fetch_max=a.fetch_max,
        cur_words=tuple(table.front_cell(f, w) + F_CUR_CONNS for w in range(table.nworkers)),
        peak=table.front_peak(f),
    )
