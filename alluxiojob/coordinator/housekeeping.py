"""Housekeeping: the reconciler, the retention service, and the job-state gauges.

Theory of operation
-------------------
``Reconciler`` puts back in the queue the jobs (and shards of jobs) nobody drives. At
startup, before the scheduler claims anything, it requeues this coordinator's own
RUNNING jobs and shards (they were its own before a restart). In HA, every
``scheduler.interval.time`` it reads the live coordinators (one scan of their liveness
keys) and looks for orphaned jobs only when a peer has disappeared since the last look,
and otherwise once a minute as a backstop, so the job table is not scanned every
interval.

``RetentionService`` removes finished jobs past ``alluxio.job.retention.time``, once
every ``alluxio.job.cleanup.interval``.

``JobStateGauges`` fills ``alluxio_jobs{state}`` when ``/metrics`` is scraped, from at
most one scan of the job table per ``MIN_GAUGE_AGE`` seconds: the counts are as fresh as
the scrapes ask, and cost nothing when nobody looks.

Each service is started with ``nursery.start`` and reads time from trio's clock, so the
timing is tested on ``autojump_clock``.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable

import structlog
import trio

from alluxiojob.coordinator.metrics import CoordinatorMetrics
from alluxiojob.core.backoff import jittered
from alluxiojob.core.errors import describe_error
from alluxiojob.core.states import JobState
from alluxiojob.store.jobs import JobStore
from alluxiojob.store.kv import KVStore
from alluxiojob.store.liveness import LeaseRegistration, live_ids
from alluxiojob.store.shards import ShardStore

log = structlog.get_logger("alluxiojob.coordinator")

ORPHAN_SCAN_BACKSTOP = 60.0  # seconds between orphan scans when no peer disappeared
MIN_GAUGE_AGE = 5.0  # seconds a scan of job states serves scrapes
GAUGE_SCAN_TIMEOUT = 10.0


class Reconciler:
    def __init__(
        self,
        store: JobStore,
        coordinator_id: str,
        interval: float,
        metrics: CoordinatorMetrics,
        on_requeued: Callable[[], None],
        *,
        liveness: LeaseRegistration | None = None,
        kv: KVStore | None = None,
        peers_prefix: str = "",
    ) -> None:
        """``liveness``, ``kv`` and ``peers_prefix`` are for HA; without them only this
        coordinator's own jobs are requeued, at startup."""
        self.store = store
        self.coordinator_id = coordinator_id
        self.interval = interval
        self.metrics = metrics
        self.on_requeued = on_requeued
        self.liveness = liveness
        self.kv = kv
        self.peers_prefix = peers_prefix
        self._requeued_own = False
        self._last_live: set[str] | None = None
        self._next_backstop = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._step()  # before the scheduler starts claiming
        task_status.started()
        while True:
            await trio.sleep(jittered(self.interval))
            await self._step()

    async def _step(self) -> None:
        try:
            # In HA, only once this process holds its id: its jobs are its own, not
            # those of a live coordinator running under the same id.
            holds_id = self.liveness is None or self.liveness.acquired.is_set()
            if not self._requeued_own and holds_id:
                await self._requeue_own_jobs()
                self._requeued_own = True
            await self._reclaim_from_dead_peers()
        except Exception as exc:
            log.warning("reconciling failed; will retry", error=describe_error(exc))

    async def _requeue_own_jobs(self) -> None:
        """Jobs the store shows as RUNNING under this coordinator go back to the queue.

        A starting coordinator has no runner yet, so such a job was its own before a
        restart: a RocksDB store is only ever one coordinator's (RocksDB's lock sees to
        it), and in HA a quick restart under the same id lands within its old lease,
        where no peer would reclaim it. The job resumes from its checkpoint.
        """
        mine, ha = self.coordinator_id, self.liveness is not None
        resumed = await self.store.reclaim_orphans(lambda owner: ha and owner != mine)
        for job in resumed:
            log.info("resuming job after restart", job_id=job.id, path=job.path)
        shards = await ShardStore(self.store).reclaim_orphans(
            lambda shard: not ha or shard.owner == mine)
        self._requeued(len(resumed) + shards)

    async def _reclaim_from_dead_peers(self) -> None:
        """HA: jobs whose owner has no liveness key go back to the queue."""
        if self.liveness is None or self.kv is None or not self.liveness.registered:
            return  # only a coordinator that is itself live judges its peers
        live = await live_ids(self.kv, self.peers_prefix)
        live.add(self.coordinator_id)
        now = trio.current_time()
        lost = self._last_live is None or bool(self._last_live - live)
        if not lost and now < self._next_backstop:
            self._last_live = live
            return
        reclaimed = await self.store.reclaim_orphans(lambda owner: owner in live)
        shards = await ShardStore(self.store).reclaim_orphans(
            lambda shard: shard.owner not in live)
        if shards:
            log.info("reclaimed shards from a dead coordinator", shards=shards)
        self._last_live = live
        self._next_backstop = now + ORPHAN_SCAN_BACKSTOP
        for job in reclaimed:
            log.info("reclaimed job from a dead coordinator", job_id=job.id, path=job.path)
        self._requeued(len(reclaimed) + shards)

    def _requeued(self, count: int) -> None:
        if count:
            self.metrics.reclaim.inc(count)
            self.on_requeued()


class RetentionService:
    def __init__(self, store: JobStore, retention: float, cleanup_interval: float) -> None:
        self.store = store
        self.retention = retention
        self.cleanup_interval = cleanup_interval

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                removed = await self.store.delete_expired(self.retention)
                if removed:
                    log.info("removed jobs past retention", count=removed)
                await trio.sleep(self.cleanup_interval)
            except Exception as exc:
                log.warning("retention cleanup failed; will retry", error=describe_error(exc))
                await trio.sleep(min(self.cleanup_interval, 60.0))


class JobStateGauges:
    """``alluxio_jobs{state}``, counted when scraped, from at most one scan per
    ``MIN_GAUGE_AGE`` seconds."""

    def __init__(self, store: JobStore, metrics: CoordinatorMetrics) -> None:
        self.store = store
        self.metrics = metrics
        self._fresh_until = float("-inf")
        self._lock = trio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if trio.current_time() < self._fresh_until:
                return
            try:
                with trio.fail_after(GAUGE_SCAN_TIMEOUT):
                    jobs = await self.store.list_jobs()
            except Exception as exc:  # keep the last counts; the scrape still answers
                log.warning("cannot count jobs for the metrics", error=describe_error(exc))
                return
            counts = Tally(job.state for job in jobs)
            for state in JobState:
                self.metrics.jobs.labels(state=state.value).set(counts.get(state, 0))
            self._fresh_until = trio.current_time() + MIN_GAUGE_AGE
