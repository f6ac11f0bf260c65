"""Sharing the worker's pool processes fairly between jobs, and pacing a job's bandwidth.

``FairSlots`` hands a free pool process to the jobs waiting for one in turn (round
robin by job), so a job with thousands of shards queued cannot make a job that arrives
later wait behind all of them.

``Pacer`` enforces a job's ``--bandwidth`` on this worker without holding a pool
process: a shard pays for its bytes (sleeps in the trio parent, which costs nothing)
before it asks for a slot, and a throttled job's shards are small
(``piece_size``), so the pool only ever copies at full speed, briefly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

MIN_PIECE = 64 * 1024


def piece_size(rate: int, partition_size: int) -> int:
    """Bytes a throttled job copies per shard: about a quarter second of its rate."""
    return max(MIN_PIECE, min(partition_size, rate // 4))


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.granted = False


class FairSlots:
    """``size`` slots, granted round robin among the jobs that wait for one."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._waiting: dict[str, deque[_Waiter]] = {}  # insertion order is the turn order

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @asynccontextmanager
    async def slot(self, job_id: str) -> AsyncIterator[None]:
        await self._acquire(job_id)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, job_id: str) -> None:
        if self.free and not self._waiting:
            await trio.lowlevel.checkpoint_if_cancelled()
            self.free -= 1
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter()
        self._waiting.setdefault(job_id, deque()).append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self._release()  # granted as we were cancelled: pass it on
            else:
                queue = self._waiting.get(job_id)
                if queue is not None:
                    queue.remove(waiter)
                    if not queue:
                        del self._waiting[job_id]
            raise

    def _release(self) -> None:
        if not self._waiting:
            self.free += 1
            return
        job_id = next(iter(self._waiting))
        queue = self._waiting.pop(job_id)
        waiter = queue.popleft()
        if queue:
            self._waiting[job_id] = queue  # to the back of the turn order
        waiter.granted = True
        waiter.event.set()


class Pacer:
    """One job's bandwidth on this worker, shared by all of its tasks here.

    Bytes are paid for before they are copied: ``pay(n)`` returns once ``n`` more bytes
    fit in ``rate`` bytes/s since the job's first byte here, so any run of shards stays
    under the rate, whatever their sizes and however many run at once.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.users = 0
        self._paid_until = 0.0

    async def pay(self, nbytes: int) -> None:
        start = max(trio.current_time(), self._paid_until)
        until = self._paid_until = start + nbytes / self.rate
        try:
            await trio.sleep_until(until)
        except BaseException:
            # Cancelled (a stopped job, a task deadline): those bytes are never copied,
            # so they must not delay the next shard; unless a later one paid after them.
            if self._paid_until == until:
                self._paid_until = start
            raise
