"""The operator's reconcile workers: at most N reconciles under way at once, the waiting ones of pressing
rollouts served first, then those of rollouts with a change out.

As controller-runtime's MaxConcurrentReconciles, a due reconcile waits for one of the workers. Unlike its
work queue, the wait is not first come, first served across all rollouts: a rollout with a change out (its
status in a wave, a promotion or a rollback, or its canary Deployment there: `handlers.operator.changing`)
gets SHARE of every SHARE + 1 workers freed while both kinds wait; a rollout pending, held by a gate or ended
gets the rest, so it is served later but never starved. Within each kind, first come, first served. At
N = 1,000 a due reconcile waited up to 90 s, and a release under analysis waited as long as a gate check or
an idle re-check (issue 11).

Before both kinds, a pressing rollout is served first: its stable being restored (also by a rollback a replica
before this one began), a user's request not yet handled (`handlers.operator.restoring_or_asked`; a waiting
reconcile is moved up when it arrives), its canary's pods just all
Ready (`handlers.operator.canary_ready`: the next reconcile starts the wave's analysis; a reconcile already
waiting when the watch shows it is moved up, `press`), its wave's first two
judgements, or its evidence within reach of a Fail and so looked at closely every quarter second
(`core.judging.pressing`). Its next reconcile may be the rollback, and a close look that waits for a worker
behind hundreds of bakes is no longer close. At N = 335 a due reconcile waited up to 19 s (p99) for a worker,
and a bad release was rolled back 2x later than alone. Few rollouts press at once (0-5 of 1,000 healthy ones
ever come within reach of a Fail, bench/looks), and still they get PRESSING_SHARE of every PRESSING_SHARE + 1
workers freed while others wait, so a rollback that never ends or many starting at once starve no one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Hashable

# While both wait, of every SHARE + 1 workers freed, SHARE go to rollouts with a change out and one to the
# others: a rollout waiting to start is served later, never starved.
SHARE = 3
# The same bound for pressing rollouts against all the others: of every PRESSING_SHARE + 1 workers freed while
# both wait, PRESSING_SHARE go to pressing ones. A rollback whose stable never becomes Ready, or many rollouts
# pressing at once, so never starve the rest.
PRESSING_SHARE = 3


class Workers:
    """`size` slots; `slot(urgent, pressing)` waits for one: pressing waiters before the others
    (PRESSING_SHARE to 1), then urgent ones before the rest (SHARE to 1), each kind in order of arrival."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._pressing: deque[asyncio.Future[None]] = deque()
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._other: deque[asyncio.Future[None]] = deque()
        self._turn = 0
        self._pressing_turn = 0
        self._waiters: dict[Hashable, asyncio.Future[None]] = {}  # by key: whom `press` may move up

    @property
    def busy(self) -> int:
        return self.size - self._free

    @property
    def waiting(self) -> int:
        return sum(1 for f in (*self._pressing, *self._urgent, *self._other) if not f.done())

    @contextlib.asynccontextmanager
    async def slot(self, urgent: bool = False, pressing: bool = False,
                   key: Hashable | None = None) -> AsyncIterator[None]:
        await self._acquire(self._pressing if pressing else self._urgent if urgent else self._other, key)
        try:
            yield
        finally:
            self._release()

    def press(self, key: Hashable) -> bool:
        """Move the waiter of `key` (from `slot(key=...)`), if it waits and does not press yet, to the end of
        the pressing ones: its rollout became pressing while it waited (its canary's pods all Ready, seen by
        the watch). Whether it moved."""
        handed = self._waiters.get(key)
        if handed is None or handed.done():
            return False
        for queue in (self._urgent, self._other):
            if handed in queue:
                queue.remove(handed)
                self._pressing.append(handed)
                return True
        return False

    async def _acquire(self, queue: deque[asyncio.Future[None]], key: Hashable | None) -> None:
        if self._free > 0:  # a slot is freed only when no one waits for it (_release hands it over first)
            self._free -= 1
            return
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(handed)
        if key is not None:
            self._waiters[key] = handed
        try:
            await handed
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled():
                self._release()  # a slot was handed over as the waiter was cancelled: it goes to the next one
            raise
        finally:
            if key is not None and self._waiters.get(key) is handed:
                del self._waiters[key]

    def _release(self) -> None:
        for queue in (self._pressing, self._urgent, self._other):
            while queue and queue[0].done():  # cancelled waiters are passed over
                queue.popleft()
        if self._pressing:
            self._pressing_turn += 1
            others = self._urgent or self._other
            if not others or self._pressing_turn % (PRESSING_SHARE + 1):
                self._pressing.popleft().set_result(None)  # not a turn of SHARE: the others keep their order
                return
        if self._urgent and self._other:
            queue = self._other if self._turn % (SHARE + 1) == SHARE else self._urgent
        else:
            queue = self._urgent or self._other
        if not queue:
            self._free += 1
            return
        self._turn += 1
        queue.popleft().set_result(None)
