"""A frontend's request counters in one worker's cell of the shared table, counted frame-free.

``FrontCounter(fetch_add, cell)``: ``cell`` is the offset of the frontend's cell of this worker
(``ShmTable.front_cell``), ``fetch_add`` the table's atomic add (``Atomics.fetch_add``, or a
recording function in tests). ``request(status, bytes_out)`` counts one ended exchange: the total,
the bytes sent to the client, and the status class (``hrsp_1xx`` .. ``hrsp_5xx``, ``hrsp_other``
for anything else), the ``F_*`` words of ``proxy.shm``. Only the worker owning the cell counts in it.

Compiled with the hot path (``proxy.native``): the stream's environment counts every request through
it, three atomic adds and no Python frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from proxy.shm import F_BYTES_OUT, F_HRSP, F_REQUESTS_TOTAL

_TOTAL: Final = F_REQUESTS_TOTAL
_BYTES: Final = F_BYTES_OUT
_HRSP: Final = F_HRSP


class FrontCounter:
    __slots__ = ("cell", "fetch_add")

    def __init__(self, fetch_add: Callable[[int, int], int], cell: int) -> None:
        self.fetch_add = fetch_add
        self.cell = cell

    def request(self, status: int, bytes_out: int) -> None:
        add, cell = self.fetch_add, self.cell
        add(cell + _TOTAL, 1)
        add(cell + _BYTES, bytes_out)
        cls = status // 100
        add(cell + _HRSP + 8 * ((cls - 1) if 1 <= cls <= 5 else 5), 1)
