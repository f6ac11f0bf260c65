"""The process pool the worker copies with, shared fairly between jobs.

Jobs share the pool fairly (``slots.FairSlots``: a free process goes to the waiting
jobs in turn). ``trio_parallel``'s own limiter lets at most ``pool_size`` through, which
``FairSlots`` already does, so it never makes anyone wait.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import structlog
import trio
import trio_parallel

from alluxiojob.core.reasons import Reason
from alluxiojob.worker.copier import CopyOutcome
from alluxiojob.worker.slots import FairSlots

log = structlog.get_logger("alluxiojob.worker")


@dataclass
class ExecutorStats:
    unfinished_tasks: int = 0
    active_shards: int = 0
    files_loaded: int = 0
    bytes_loaded: int = 0
    files_failed: int = 0
    files_freed: int = 0


def pool_died(exc: BaseException) -> CopyOutcome:
    return CopyOutcome(False, reason=Reason.IO_ERROR,
                       message=f"a pool process died while copying this file ({exc}); "
                       "it will be retried")


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class Pool:
    def __init__(self, pool_size: int, stats: ExecutorStats) -> None:
        self.size = pool_size
        self.slots = FairSlots(pool_size)
        self.limiter = trio.CapacityLimiter(pool_size)
        self.stats = stats

    async def warm_up(self, probe: Callable[[], object] = os.getpid) -> None:
        """Start every pool process now rather than during the first task.

        Best effort: a process that dies while it starts (killed, out of memory) is
        logged, and the next task starts another; it never stops the worker."""
        async def start_one() -> None:
            try:
                await trio_parallel.run_sync(probe, limiter=self.limiter)
            except trio_parallel.BrokenWorkerError as exc:
                log.warning("a pool process died while it started; the next task starts "
                            "another", error=str(exc))

        async with trio.open_nursery() as nursery:
            for _ in range(self.size):
                nursery.start_soon(start_one)

    async def run(self, job_id: str, function: Callable[..., list[CopyOutcome]],
                  *args: object) -> list[CopyOutcome]:
        """Run ``function(*args)`` in a pool process, in ``job_id``'s turn."""
        async with self.slots.slot(job_id):
            self.stats.active_shards += 1
            try:
                done: list[CopyOutcome] = await trio_parallel.run_sync(
                    function, *args, kill_on_cancel=True, limiter=self.limiter)
                return done
            finally:
                self.stats.active_shards -= 1
