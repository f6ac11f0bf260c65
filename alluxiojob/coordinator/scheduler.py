"""The scheduler loop: claim waiting jobs up to capacity and run each in a JobRunner.

A claimed job that runs as shards (``sharding.py``) is only split or requeued here; its
shards, like those of any peer's job, are claimed in the same loop, up to
``alluxio.job.shard.concurrency`` at once, and each runs in a ``ShardRunner``.

It polls the store every ``job.etcd.poll.interval`` with ±20% jitter, so that several
coordinators do not hit the store in step, and wakes at once when this coordinator
accepts a submission.
"""

from __future__ import annotations

import structlog
import trio

from alluxiojob.config import Config, Keys
from alluxiojob.coordinator.membership import Membership
from alluxiojob.coordinator.metrics import CoordinatorMetrics
from alluxiojob.coordinator.runner import JobRunner
from alluxiojob.coordinator.sharding import ShardRunner, prepare
from alluxiojob.core.backoff import backoff_delay, jittered
from alluxiojob.core.errors import describe_error
from alluxiojob.core.states import OWNED_STATES
from alluxiojob.store.jobs import JobStore, OwnedJob
from alluxiojob.store.shards import OwnedShard, ShardStore

log = structlog.get_logger("alluxiojob.coordinator")


OWN_SHARDS_BACKSTOP = 30.0  # seconds between looks for shards of ours nobody runs here


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
        self.shards = ShardStore(store)
        self.shard_capacity = config[Keys.JOB_SHARD_CONCURRENCY]
        self.shard_runners: dict[tuple[str, int], trio.CancelScope] = {}
        self._check_own_shards = False
        self._next_own_check = 0.0
        self._wake = trio.Event()
        self.last_error = ""

    def notify(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        scopes = [scope for (job, _), scope in self.shard_runners.items() if job == job_id]
        scope = self.runners.get(job_id)
        if scope is not None:
            scopes.append(scope)
        for scope in scopes:
            scope.cancel()
        return bool(scopes)

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
        return await self._claim_jobs(nursery) + await self._claim_shards(nursery)

    async def _claim_shards(self, nursery: trio.Nursery) -> int:
        room = self.shard_capacity - len(self.shard_runners)
        if trio.current_time() >= self._next_own_check:
            self._check_own_shards = True
        if room <= 0:
            return 0
        try:
            if self._check_own_shards:
                await self._requeue_unrun_shards()
            claimed = await self.shards.claim(self.coordinator_id, room)
        except Exception as exc:
            # A claim may have landed without its answer: look for it once the store
            # answers again.
            self._check_own_shards = True
            log.warning("cannot poll the shard queue", error=describe_error(exc))
            return 0
        for owned in claimed:
            if (owned.job.id, owned.shard.index) in self.shard_runners:
                continue  # already running here (its record was rewritten): that runner
                # is fenced by this claim and ends; the check after it requeues the shard
            scope = trio.CancelScope()
            self.shard_runners[owned.job.id, owned.shard.index] = scope
            nursery.start_soon(self._run_shard, owned, scope)
        if claimed and len(self.shard_runners) < self.shard_capacity:
            self.notify()
        return len(claimed)

    async def _run_shard(self, owned: OwnedShard, scope: trio.CancelScope) -> None:
        key = (owned.job.id, owned.shard.index)
        try:
            with scope:
                runner = ShardRunner(
                    owned, self.shards, self.store, self.membership, self.config,
                    self.metrics, siblings_running=lambda: any(
                        job == key[0] and index != key[1]
                        for job, index in self.shard_runners))
                try:
                    await runner.run()
                    self.metrics.files.inc(runner.files_processed)
                    if not runner.finished:
                        # Fenced: a peer took the shard, or the job changed. If the
                        # store still shows the shard as ours, nobody runs it: requeue it.
                        self._check_own_shards = True
                        self.notify()
                except Exception as exc:
                    # The store failed at the shard's end: give the shard back, so that
                    # this coordinator or a peer resumes it from its checkpoint.
                    log.warning("shard runner interrupted; requeueing the shard",
                                job_id=owned.job.id, shard=owned.shard.index,
                                error=describe_error(exc))
                    await self._give_back(runner.owned_shard)
        finally:
            self.shard_runners.pop(key, None)
            self.notify()

    async def _requeue_unrun_shards(self) -> None:
        """Shards the store shows as this coordinator's that no runner here runs."""
        mine = self.coordinator_id
        count = await self.shards.reclaim_orphans(
            lambda shard: shard.owner == mine
            and (shard.job_id, shard.index) not in self.shard_runners)
        self._check_own_shards = False
        self._next_own_check = trio.current_time() + OWN_SHARDS_BACKSTOP
        if count:
            log.info("requeued shards of ours that no runner here runs", shards=count)

    async def _give_back(self, owned: OwnedShard) -> None:
        """Requeue the shard (if still ours) as soon as the store takes the write."""
        attempt = 0
        while True:
            try:
                await self.shards.release(owned)
                return
            except Exception as exc:
                log.info("cannot requeue the shard yet", error=describe_error(exc))
            attempt += 1
            await trio.sleep(backoff_delay(attempt, first=0.5, cap=5.0))

    async def _claim_jobs(self, nursery: trio.Nursery) -> int:
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
                        if await prepare(owned, self.store, self.shards, self.config):
                            self.notify()  # claim its shards now
                            return
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
