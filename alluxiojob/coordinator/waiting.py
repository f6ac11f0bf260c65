"""A progress request that waits: ``wait=S`` answers once the job's state changes.

``alluxiojob job load --wait`` used to ask for the progress every 0.2 s and so learnt of
the end 0.1 s late on average, in five requests a second. With ``wait`` the coordinator
holds the request until the job's state differs from the state it had when the request
came (WAITING to RUNNING, RUNNING to SUCCEEDED, ...), or until ``S`` seconds passed,
and answers the report of that moment: the CLI learns the end at once and asks about
once a second while the job runs.

A state change this coordinator makes (it claims, runs, stops or reclaims the job) is a
write of the job's record through its store, which wakes the waiting requests at once
(``store/changes.py``); they read the record again then, and every ``tick`` (50 ms) for
a job another coordinator runs (etcd). What a waiting client may hold is bounded: at
most ``cap`` seconds per request (``alluxio.coordinator.progress.wait.max``) and at most
``limit`` requests waiting at once; beyond that a request answers at once, as without
``wait``.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from alluxiojob.core.errors import InvalidArgument
from alluxiojob.core.job import JobRecord
from alluxiojob.core.states import SETTLED_STATES
from alluxiojob.store.jobs import JobStore

WAIT_TICK = 0.05  # seconds between two reads of the job record without a write here
WAITERS_MAX = 16  # requests waiting at once, per coordinator


def wait_param(params: dict[str, Any]) -> float:
    """The ``wait`` parameter in seconds: 0 when absent."""
    raw = params.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise InvalidArgument(f"wait must be a number of seconds, got {raw!r}") from None
    if math.isnan(seconds) or seconds < 0:  # infinity is allowed: the cap bounds it
        raise InvalidArgument(f"wait must be a number of seconds, 0 or more, got {raw!r}")
    return seconds


class StateWaiter:
    """Holds progress requests until their job's state changes, within bounds."""

    def __init__(self, store: JobStore, cap: float, tick: float = WAIT_TICK,
                 limit: int = WAITERS_MAX) -> None:
        self.store = store
        self.cap = cap
        self.tick = tick
        self.limit = limit
        self.waiting = 0

    async def until_changed(self, job: JobRecord, seconds: float) -> JobRecord:
        """``job`` as it is once its state changed, or after ``seconds`` (at most
        ``cap``); at once if it has settled or ``limit`` requests wait already."""
        if seconds <= 0 or job.state in SETTLED_STATES or self.waiting >= self.limit:
            return job
        self.waiting += 1
        current = job
        try:
            with trio.move_on_after(min(seconds, self.cap)):
                while True:
                    # Taken before the read: a write after the read sets it.
                    changed = self.store.next_change()
                    current = (await self.store.get(job.id)).job
                    if current.state is not job.state:
                        break
                    with trio.move_on_after(self.tick):
                        await changed.wait()
        finally:
            self.waiting -= 1
        return current
