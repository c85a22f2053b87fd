"""The operator's reconcile workers: at most N reconciles under way at once, and the waiting ones of rollouts
with a change out first.

As controller-runtime's MaxConcurrentReconciles, a due reconcile waits for one of the workers. Unlike its
work queue, the wait is not first come, first served across all rollouts: a rollout whose canary is out
(a wave, a promotion, a rollback: `Stage.active`) is served before one that is pending, held by a gate or
ended. At N = 1,000 a due reconcile waited up to 90 s, and the one release that was bad waited behind a
thousand gate checks and idle re-checks for its rollback (issue 11). Within each of the two, first come,
first served.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator


class Workers:
    """`size` slots; `slot(urgent)` waits for one, urgent waiters before the others, each in order of arrival."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def busy(self) -> int:
        return self.size - self._free

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiting if not f.done())

    @contextlib.asynccontextmanager
    async def slot(self, urgent: bool = False) -> AsyncIterator[None]:
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (0 if urgent else 1, next(self._order), handed))
        try:
            await handed
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled():
                self._release()  # a slot was handed over as the waiter was cancelled: it goes to the next one
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, handed = heapq.heappop(self._waiting)
            if not handed.done():  # a cancelled waiter's future is done: passed over
                handed.set_result(None)
                return
        self._free += 1
