"""The scheduler loop: claim waiting jobs up to capacity and run each in a JobRunner.

It polls the store every ``job.etcd.poll.interval`` with ±20% jitter, so that several
coordinators do not hit the store in step, and wakes at once when this coordinator
accepts a submission.
"""

from __future__ import annotations

import structlog
import trio

from alluxiojob.config import Config, Keys
from alluxiojob.coordinator.metrics import CoordinatorMetrics
from alluxiojob.coordinator.runner import JobRunner
from alluxiojob.coordinator.workers import Membership
from alluxiojob.core.backoff import backoff_delay, jittered
from alluxiojob.core.errors import describe_error
from alluxiojob.core.states import OWNED_STATES
from alluxiojob.store.jobs import JobStore, OwnedJob

log = structlog.get_logger("alluxiojob.coordinator")




class Scheduler:
    def __init__(
        self,
        coordinator_id: str,
        store: JobStore,
        membership: Membership,
        config: Config,
        metrics: CoordinatorMetrics,
        *,
        ready: trio.Event | None = None,
    ) -> None:
        self.coordinator_id = coordinator_id
        self.ready = ready  # claims wait for it (HA: until this process holds its id)
        self.store = store
        self.membership = membership
        self.config = config
        self.metrics = metrics
        self.capacity = config[Keys.RUNNING_JOB_CAPACITY]
        self.poll_interval = config[Keys.JOB_ETCD_POLL_INTERVAL]
        self.runners: dict[str, trio.CancelScope] = {}
        self._wake = trio.Event()
        self.last_error = ""

    def notify(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        scope = self.runners.get(job_id)
        if scope is None:
            return False
        scope.cancel()
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            if self.ready is not None:
                await self.ready.wait()
            while True:
                await self.claim_once(nursery)
                with trio.move_on_after(jittered(self.poll_interval)):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def claim_once(self, nursery: trio.Nursery) -> int:
        room = self.capacity - len(self.runners)
        if room <= 0:
            return 0
        self.metrics.poll.inc()
        try:
            claimed = await self.store.claim_waiting(self.coordinator_id, room)
        except Exception as exc:
            message = describe_error(exc)
            if message != self.last_error:
                log.warning("cannot poll the job queue", error=message)
            self.last_error = message
            return 0
        if self.last_error:
            log.info("job queue reachable again")
            self.last_error = ""
        for owned in claimed:
            self.metrics.claim.inc()
            scope = trio.CancelScope()
            self.runners[owned.job.id] = scope
            nursery.start_soon(self._run_job, owned, scope)
        self.metrics.running_jobs.set(len(self.runners))
        if claimed and len(self.runners) < self.capacity:
            self.notify()  # there may be more waiting than one call claims: look again now
        return len(claimed)

    async def _run_job(self, owned: OwnedJob, scope: trio.CancelScope) -> None:
        job_id = owned.job.id
        attempt = 0
        try:
            with scope:
                while True:
                    try:
                        runner = JobRunner(owned, self.store, self.membership, self.config,
                                           self.metrics)
                        await runner.run()
                        self.metrics.files.inc(runner.files_processed)
                        return
                    except Exception as exc:
                        # Typically the store is unreachable at a final write. Resume the
                        # job from its checkpoint once the store answers, if still ours.
                        log.warning("job runner interrupted; will resume", job_id=job_id,
                                    error=describe_error(exc))
                    while True:
                        attempt += 1
                        await trio.sleep(backoff_delay(attempt, first=0.5, cap=5.0))
                        try:
                            owned = await self.store.get(job_id)
                            break
                        except Exception:
                            continue
                    if owned.job.owner != self.coordinator_id or owned.job.state not in (
                        OWNED_STATES
                    ):
                        return
        finally:
            self.runners.pop(job_id, None)
            self.metrics.running_jobs.set(len(self.runners))
            self.notify()
