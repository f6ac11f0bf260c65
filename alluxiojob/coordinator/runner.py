"""JobRunner: the I/O of one claimed job, around its ``Ledger`` (``core/ledger.py``).

Theory of operation
-------------------
The ledger decides; the runner does what it decides. The runner lists the UFS (a
stream, in a worker thread, in a total order: ``listing.py``) and tells the ledger of
each file; runs one dispatcher per worker that takes the ledger's next task for it
whenever a slot of that worker (``max.tasks.per.worker``, shared by the coordinator's
jobs; a job with ``--bandwidth`` has slots of its own, ``_slots``) is free; sends the
task and hands the answer back to the ledger; sleeps before retries; follows
membership (a worker that is down or gone: its queued work moves); and about once a
second writes progress, checkpoint and new failures with one fenced write.

The listing waits while the workers of its last file have full queues, so memory stays
bounded; a worker that is down has no queue, so it never holds the listing back.

A fencing failure (``Fenced``) means someone else now decides the job (a user stopped
it, or a peer reclaimed it): the runner stops at once and writes nothing more. Whenever
the runner ends without finishing (stopped, fenced, shut down, failed early), it asks
the workers that still run its tasks to cancel them.

Time comes from trio's clock: durations directly, wall-clock timestamps (shown to
users) as the wall time at start plus trio time elapsed since.

Why this module is long: ``JobRunner`` is one object whose parts (the pass's nursery,
the dispatchers' wake events, the listing's room, the fenced store writes and the
claim's freshness) share the state of one running job, and ``ShardRunner``
(``sharding.py``) overrides its hooks; the listing, which needs none of that state,
is in ``listing.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import replace

import structlog
import trio

from alluxiojob.config import Config, Keys
from alluxiojob.coordinator.listing import (
    LIST_PAGE,
    JobFailed,
    check_roots,
    destination,
    list_pages,
)
from alluxiojob.coordinator.membership import Membership
from alluxiojob.coordinator.metrics import CoordinatorMetrics
from alluxiojob.coordinator.sources import FailedFile
from alluxiojob.coordinator.workers import WorkerClient, WorkerError
from alluxiojob.core.errors import Fenced, describe_error, leaves
from alluxiojob.core.job import JobRecord, JobType
from alluxiojob.core.ledger import (
    CancelTasks,
    Decision,
    Dispatch,
    FailEarly,
    FileFailed,
    Ledger,
    LedgerPolicy,
    PassFinished,
    PassKind,
    Placement,
    RetryAfter,
    Task,
)
from alluxiojob.core.progress import FailureRecord, Progress, RateWindow
from alluxiojob.core.reasons import Reason
from alluxiojob.core.rows import FileEntry
from alluxiojob.core.states import JobEvent, JobState
from alluxiojob.core.text import printable
from alluxiojob.protocol.codec import TaskOptions
from alluxiojob.store.jobs import JobStore, OwnedJob
from alluxiojob.ufs.base import UfsError, UfsFile

log = structlog.get_logger("alluxiojob.coordinator")

CHECKPOINT_INTERVAL = 1.0
FLUSH_BACKOFF = 0.2  # first wait before the final flush of failures is tried again
MAX_VERIFY_PASSES = 5
FILL_WAIT = 0.02  # how long a dispatcher waits to fill a task while listing goes on
ABANDON_TIMEOUT = 2.0
CLAIM_FRESHNESS = 3.0  # HA: seconds after a confirmed claim in which tasks may be sent


def policy_for(job_type: JobType, batch_size: int, replicas: int, config: Config,
               metadata_only: bool = False) -> LedgerPolicy:
    return LedgerPolicy(
        op=job_type,
        segment_size=batch_size or config[Keys.JOB_BATCH_SIZE],
        max_attempts=config[Keys.JOB_RETRY_MAX_ATTEMPTS],
        backoff=config[Keys.JOB_RETRY_BACKOFF],
        replicas=replicas,
        failure_count_threshold=config[Keys.JOB_FAILURE_COUNT_THRESHOLD],
        failure_ratio_threshold=config[Keys.JOB_FAILURE_RATIO_THRESHOLD],
        failure_list_max=config[Keys.JOB_FAILURE_LIST_MAX],
        metadata_only=metadata_only,
    )


class JobRunner:
    def __init__(
        self,
        owned: OwnedJob,
        store: JobStore,
        membership: Membership,
        config: Config,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        self.owned = owned
        self.metrics = metrics
        self.job = owned.job
        self.store = store
        self.membership = membership
        self.config = config
        self.connect_wait = config[Keys.FAILURE_DETECTION_TIMEOUT]
        self.policy = policy_for(self.job.type, self.job.options.batch_size,
                                 self.job.options.replicas, config,
                                 self.job.options.metadata_only)
        self.ledger = Ledger(self.policy)
        self.stored = Progress()
        self.rate = RateWindow()
        self._throttled_slots: dict[str, trio.Semaphore] = {}
        # Per worker, the ids of the tasks this runner sent there and has no answer to:
        # what it cancels when it ends (never a sibling shard's tasks on the same worker).
        self._sent: dict[str, set[int]] = {}
        self._started = 0.0
        self._wall_at_start = 0.0
        self._fenced = False
        # HA: a task goes out only while the claim was confirmed (a fenced store write
        # succeeded) within this many seconds. A coordinator paused past its lease (a
        # SIGSTOP, a frozen VM) may have lost the job to a peer, and its tasks would
        # then run beside the new owner's, or after a FREE of the same files.
        self.claim_freshness: float | None = (
            min(CLAIM_FRESHNESS, self.connect_wait / 2)
            if config[Keys.META_STORE_TYPE] == "ETCD" else None)
        self._confirmed_at = 0.0
        # One store write at a time, each fenced with the revision the last one left: a
        # checkpoint still in flight when the runner changes the job's state (VERIFY)
        # would compare a revision the runner itself replaced, and fence it off its job.
        self._store_writes = trio.Lock()
        self._finished = False
        self.page_size = LIST_PAGE  # files a page of the listing holds
        self._checking_roots = False
        # per pass
        self._nursery: trio.Nursery | None = None
        self._wake: dict[str, trio.Event] = {}
        self._room = trio.Event()
        self._pass_done = trio.Event()

    @property
    def finished(self) -> bool:
        """True once the runner wrote its end (the job's, or its shard's)."""
        return self._finished

    @property
    def files_processed(self) -> int:
        return self.ledger.shown.files_processed

    def _now(self) -> float:
        """Wall-clock seconds, advancing with trio's clock."""
        return self._wall_at_start + (trio.current_time() - self._started)

    # ================================================================== lifecycle
    async def run(self) -> None:
        self._started = trio.current_time()
        self._wall_at_start = time.time()
        self._confirmed_at = self._started  # the claim has just been made
        with structlog.contextvars.bound_contextvars(job_id=self.job.id,
                                                     job=self.job.identity):
            try:
                await self._run()
            except* Fenced as group:
                self._fenced = True
                log.info("job taken over elsewhere; abandoning it",
                         reason=describe_error(group))
            finally:
                if not self._finished:
                    await self._abandon()

    async def _abandon(self) -> None:
        """Stopped, fenced or shut down: cancel our tasks on the workers; unless fenced,
        keep what is done, so the next owner resumes close by."""
        with trio.move_on_after(ABANDON_TIMEOUT) as scope:
            scope.shield = True
            await self._cancel_tasks(self.ledger.stop(self._now()))
            if not self._fenced:
                try:
                    await self._save()
                except Exception as exc:
                    log.info("no final checkpoint", error=describe_error(exc))

    async def _cancel_tasks(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, CancelTasks):
                for worker in decision.workers:
                    client = self.membership.client(worker)
                    if client is not None:
                        await client.cancel(self.job.id, self._sent.get(worker, ()))
                log.info("cancelled the job's tasks on workers", workers=list(decision.workers))

    async def _stored_progress(self) -> Progress:
        return await self.store.get_progress(self.job.id)

    async def _run(self) -> None:
        stored = await self._stored_progress()
        failures_stored = 0
        if stored.checkpoint:
            failures_stored = len(
                await self.store.list_failures(self.job.id, self.policy.failure_list_max))
        self.stored = stored
        self.ledger = Ledger(self.policy, stored, failures_stored=failures_stored)
        log.info("job started", type=self.job.type.value, path=self.job.path,
                 resume_after="/".join(self.ledger.checkpoint) or None,
                 files_committed=self.ledger.committed.files_done)
        error = ""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._checkpointer)
                await self._run_pass(after=self.ledger.checkpoint)
                if self.job.options.verify and self.job.type is JobType.LOAD:
                    await self._verify()
                nursery.cancel_scope.cancel()
        except* JobFailed as group:
            error = str(leaves(group)[0])
        except* UfsError as group:
            first = leaves(group)[0]
            error = f"{getattr(first, 'reason', Reason.IO_ERROR)}: {first}"
        await self._finish(error)

    async def _finish(self, error: str) -> None:
        # A job that ends early may still have tasks running, and segments that never
        # committed: cancel the first, keep the failures of the second.
        await self._cancel_tasks(self.ledger.stop(self._now()))
        self.ledger.keep_uncommitted_failures()
        # The final transition below carries the progress itself, but not the failures it
        # counts: they are stored first, however long the store takes to answer again.
        backoff = FLUSH_BACKOFF
        while self.ledger.unsaved_failures:
            await self._save()
            if self.ledger.unsaved_failures:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, CHECKPOINT_INTERVAL * 5)
        state, error = await self._write_final(error)
        self._finished = True
        shown = self.ledger.shown
        if self.metrics is not None and state:
            self.metrics.job_finished(self.job.type.value, state)
        log.info("job finished" if state else "shard finished", state=state or None,
                 error=error or None,
                 files=shown.files_processed, bytes=shown.bytes_processed,
                 skipped=shown.files_skipped, failed=self.ledger.live.files_failed,
                 seconds=round(self._active_seconds(), 3))

    async def _write_final(self, error: str) -> tuple[str, str]:
        """The job's final transition, with its progress: (the state written, why)."""
        error = error or self.ledger.outcome()
        event = JobEvent.FAIL if error else JobEvent.SUCCEED
        self.owned = await self.store.transition(
            self.owned, event, error=error, progress=self._snapshot()
        )
        return self.owned.job.state.value, error

    # ================================================================== passes
    async def _run_pass(self, after: tuple[str, ...]) -> None:
        """List from ``after`` and dispatch every file; returns when all are committed."""
        self._pass_done = trio.Event()
        self._wake = {}
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._follow_membership)
            await self._list(after)
            self._apply(self.ledger.finish_listing())
            await self._pass_done.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    async def _verify(self) -> None:
        """Recheck every file on its owners and reload what is missing or stale."""
        if self.owned.job.state is not JobState.VERIFYING:  # not when resumed in place
            async with self._store_writes:
                started = trio.current_time()
                self.owned = await self.store.transition(
                    self.owned, JobEvent.VERIFY, progress=self._snapshot()
                )
                self._confirmed_at = max(self._confirmed_at, started)
        for passes in range(1, MAX_VERIFY_PASSES + 1):
            await self._save()  # what the previous pass found is stored first
            self.ledger.begin_pass(PassKind.VERIFY)
            await self.store.clear_failures(self.owned)
            await self._run_pass(after=())
            repaired = self.ledger.finish_pass()
            log.info("verify pass done", passes=passes, repaired=repaired,
                     failed=self.ledger.live.files_failed)
            if repaired == 0:
                return
        raise JobFailed(f"verify still found files to repair after {MAX_VERIFY_PASSES} passes")

    # ================================================================== decisions
    def _apply(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, Dispatch):
                self._wake_dispatcher(decision.worker)
            elif isinstance(decision, RetryAfter):
                assert self._nursery is not None
                self._nursery.start_soon(self._retry_later, decision.assignment,
                                         decision.delay)
            elif isinstance(decision, PassFinished):
                self._pass_done.set()
            elif isinstance(decision, FileFailed):
                if decision.reason is Reason.UFS_NOT_FOUND and not self._checking_roots:
                    assert self._nursery is not None
                    self._checking_roots = True
                    self._nursery.start_soon(self._check_roots)
                if self.metrics is not None:
                    self.metrics.file_failed(self.job.type.value, decision.reason.value)
                log.warning("file failed", path=printable(decision.path),
                            reason=decision.reason.value, message=decision.message,
                            attempts=decision.attempts, worker=decision.worker or None)
            elif isinstance(decision, FailEarly):
                raise JobFailed(decision.message)
            # CheckpointAdvanced: the checkpointer writes it within a second.

    async def _check_roots(self) -> None:
        try:
            await check_roots(self.job, self.config)
        finally:
            self._checking_roots = False

    def _wake_dispatcher(self, worker: str) -> None:
        event = self._wake.get(worker)
        if event is None:
            event = self._wake[worker] = trio.Event()
            assert self._nursery is not None
            self._nursery.start_soon(self._dispatcher, worker)
        event.set()

    async def _placement(self) -> Placement:
        while not self.membership.members:
            log.warning("no workers in the membership; waiting for one")
            await self.membership.changed.wait()
        return self.membership.placement()

    async def _follow_membership(self) -> None:
        """Workers down, back, joined or gone: queued work follows its owners."""
        while True:
            await self.membership.changed.wait()
            if self.membership.members:
                self._apply(self.ledger.placement_changed(self.membership.placement(),
                                                          self._now()))
            self._room.set()

    async def _retry_later(self, assignment: int, delay: float) -> None:
        await trio.sleep(delay)
        if not self.membership.members:
            # No worker at all: wait (up to the failure-detection timeout) rather than
            # burn the file's attempts against nobody.
            with trio.move_on_after(self.connect_wait):
                while not self.membership.members:
                    await self.membership.changed.wait()
        self._apply(self.ledger.retry_due(assignment, self.membership.placement(), self._now()))

    # ================================================================== listing
    async def _list(self, after: tuple[str, ...]) -> None:
        # aclosing: a pass cancelled mid-listing (stopped, fenced) closes the walk now,
        # not whenever the garbage collector finds it.
        async with aclosing(self._listing(after)) as pages:
            async for files in pages:
                # The page goes to the ledger in one call, which stops where the listing
                # should wait for room (or the job failed early); the rest follows then.
                listed = _rows(self.job, files)
                while listed:
                    placement = await self._placement()
                    decisions, taken = self.ledger.files_listed(listed, placement, self._now())
                    del listed[:taken]
                    self._apply(decisions)
                    while self.ledger.backlogged():
                        self._room = trio.Event()
                        await self._room.wait()
                await self._listed(files)

    async def _listed(self, files: Sequence[UfsFile]) -> None:
        """Called after each page of the listing is taken in (a shard may split here)."""

    def _listing(self, after: tuple[str, ...]) -> AsyncGenerator[list[UfsFile], None]:
        # Counted once: a resumed job, or a shard (counted at its plan), knows its total.
        return list_pages(self.job, self.config, after, walk_start=self._walk_start,
                          past_end=self._past_end, on_totals=self._source_totals,
                          walk_until=self._walk_until(), count=not self.stored.files_total,
                          page_size=self.page_size)

    def _source_totals(self, files_total: int, bytes_total: int) -> None:
        self.stored = replace(self.stored, files_total=files_total, bytes_total=bytes_total)

    def _walk_start(self, after: tuple[str, ...]) -> tuple[str, ...]:
        """Where the walk starts: after ``after`` (a shard's range may start later)."""
        return after

    def _past_end(self, parts: tuple[str, ...]) -> bool:
        """True for a file past the end of what this runner lists (a shard's range)."""
        return False

    def _walk_until(self) -> tuple[str, ...]:
        """The last place this runner lists, () for the end (a shard's range may end)."""
        return ()

    # ================================================================== dispatch
    async def _dispatcher(self, worker: str) -> None:
        while True:
            wake = self._wake[worker] = trio.Event()
            if not self.ledger.queued(worker):
                await wake.wait()
                continue
            if not self.ledger.listing_done:
                # While the listing goes on, give the queue a moment to fill a task.
                with trio.move_on_after(FILL_WAIT):
                    while (self.ledger.queued(worker) < self.policy.segment_size
                           and not self.ledger.listing_done):
                        wake = self._wake[worker] = trio.Event()
                        await wake.wait()
            client = self.membership.client(worker)
            if client is None:  # it left the membership; its work will move
                await self.membership.changed.wait()
                continue
            slots = self._slots(client)
            await slots.acquire()
            task = self.ledger.take_task(worker, self._now())
            if task is None:
                slots.release()
                continue
            self._room.set()
            assert self._nursery is not None
            self._nursery.start_soon(self._run_task, client, task)

    def _slots(self, client: WorkerClient) -> trio.Semaphore:
        """The task slots this job takes on ``client``'s worker.

        A job with ``--bandwidth`` has slots of its own: its tasks wait on the worker
        for their rate (holding no pool process there), and in the slots every job
        shares they would keep the others waiting as long as they sleep.
        """
        if not self.job.options.bandwidth:
            return client.slots
        slots = self._throttled_slots.get(client.worker_id)
        if slots is None:
            slots = self._throttled_slots[client.worker_id] = trio.Semaphore(client.max_tasks)
        return slots

    async def _run_task(self, client: WorkerClient, task: Task) -> None:
        """Run one task on ``client``, whose slot the dispatcher took for it."""
        try:
            options = TaskOptions(
                skip_if_exists=(self.job.options.skip_if_exists
                                or self.ledger.pass_kind is PassKind.VERIFY),
                bandwidth=self.job.options.bandwidth,
                overwrite=self.job.options.overwrite,
                metadata_only=self.job.options.metadata_only,
                verify=self.ledger.pass_kind is PassKind.VERIFY,
            )
            await self._claim_confirmed()
            result = await client.call(self.job.id, self.policy.op, task.entries, options,
                                       self.connect_wait,
                                       self._sent.setdefault(client.worker_id, set()))
        except WorkerError as exc:
            decisions = self.ledger.task_failed(task, exc.reason, str(exc), self._now())
        else:
            decisions = self.ledger.task_finished(task, result.results, self._now())
        finally:
            self._slots(client).release()
        self._apply(decisions)

    async def _claim_confirmed(self) -> None:
        """HA: return once the claim was confirmed lately; raise ``Fenced`` if it is lost.

        Normally the checkpointer's writes (every second) keep it fresh and this costs
        nothing. After a pause, the first write tells the runner whether the job is
        still its own, before it sends any more work.
        """
        if self.claim_freshness is None:
            return
        while trio.current_time() - self._confirmed_at > self.claim_freshness:
            await self._save()  # raises Fenced when a peer owns the job now
            if trio.current_time() - self._confirmed_at > self.claim_freshness:
                await trio.sleep(self.claim_freshness / 4)  # the store did not answer

    # ================================================================== progress
    def _active_seconds(self) -> float:
        return self.stored.active_seconds + (trio.current_time() - self._started)

    def _snapshot(self) -> Progress:
        return self.ledger.progress(self.stored, active_seconds=self._active_seconds(),
                                    recent_rate=self.rate.rate())

    async def _save(self) -> None:
        async with self._store_writes:
            failures = self.ledger.take_failures()
            started = trio.current_time()
            try:
                await self._write_progress(self._snapshot(), [_storable(f) for f in failures])
                self._confirmed_at = max(self._confirmed_at, started)
            except Fenced:
                raise
            except BaseException as exc:
                # The store is unreachable, or this save was cancelled (the checkpointer
                # is cancelled when the pass ends): keep the failures for the next save,
                # which rewrites the same keys if this one landed after all.
                self.ledger.return_failures(failures)
                if not isinstance(exc, Exception):
                    raise
                log.warning("cannot save progress; will retry", error=describe_error(exc))

    async def _write_progress(self, progress: Progress,
                              failures: Sequence[FailureRecord]) -> None:
        await self.store.save_progress(self.owned, progress, failures)

    async def _checkpointer(self) -> None:
        while True:
            await trio.sleep(CHECKPOINT_INTERVAL)
            self.rate.add(trio.current_time(), self.ledger.shown.bytes_processed)
            await self._save()


_new_tuple = tuple.__new__


def _rows(job: JobRecord, files: Sequence[UfsFile]) -> list[
        tuple[tuple[str, ...], FileEntry, tuple[Reason, str] | None]]:
    """A page of the listing as the ledger takes it: (parts, entry, failure) per file.
    Built as tuples (``FileEntry`` is one) in one pass: this runs once per file."""
    if job.dst:
        return [(f.parts, FileEntry(f.uri, f.length, f.mtime_ns, destination(job, f), f.version),
                 (Reason(f.reason), f.message) if isinstance(f, FailedFile) else None)
                for f in files]
    return [(f.parts, _new_tuple(FileEntry, (f.uri, f.length, f.mtime_ns, "", f.version)),
             (Reason(f.reason), f.message) if isinstance(f, FailedFile) else None)
            for f in files]


def _storable(failure: FailureRecord) -> FailureRecord:
    """A path that is not UTF-8 is stored, and shown, with its odd bytes escaped."""
    return replace(failure, path=printable(failure.path))
