"""Pins: the files of a job that sent a task here within
``alluxio.worker.job.cache.pin.time`` are not evicted. The time of each job's last task
is kept in the cache index too, so a restarted worker keeps the pins of running jobs.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from alluxiojob.worker.cache import Cache


class Pins:
    def __init__(self, cache: Cache, pin_seconds: float, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.pin_seconds = pin_seconds
        self._clock = clock
        self._seen: dict[str, float] = {}  # job id -> time of its last task here

    async def restore(self) -> int:
        """Pins saved before a restart; returns how many are still in force."""
        saved = await trio.to_thread.run_sync(self.cache.load_pins, limiter=self.cache.limiter)
        for job_id, when in saved.items():
            self._seen[job_id] = max(when, self._seen.get(job_id, 0.0))
        return len(self.jobs())

    def jobs(self) -> set[str]:
        """The jobs pinned now."""
        cutoff = self._clock() - self.pin_seconds
        return {job_id for job_id, seen in self._seen.items() if seen >= cutoff}

    async def pin(self, job_id: str) -> None:
        """Record that ``job_id`` is active now, in memory and in the index."""
        now = self._clock()
        self._seen[job_id] = now
        expired = [j for j, seen in self._seen.items() if seen < now - self.pin_seconds]
        for j in expired:
            del self._seen[j]

        def save() -> None:
            self.cache.save_pins({job_id: now})
            if expired:
                self.cache.drop_pins(expired)

        await trio.to_thread.run_sync(save, limiter=self.cache.limiter)
