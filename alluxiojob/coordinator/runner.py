"""JobRunner: drives one claimed job from listing to its final state.

Theory of operation
-------------------
The UFS listing is streamed (in a worker thread) in a total order and numbered. Files
are grouped into *chunks* of ``batch_size`` consecutive files. Each file becomes one
*unit* per target worker (its ring owners for LOAD, every worker for FREE), queued on
that worker. A dispatcher per worker takes up to ``batch_size`` units at a time and
sends them as one task, holding one of the worker's ``max.tasks.per.worker`` slots
(a job with ``--bandwidth`` holds slots of its own instead: ``_slots``).
Queues are bounded, so a slow worker slows the listing instead of filling memory.

A unit that fails for a retryable reason (the worker was lost, the source changed...)
is queued again after a backoff, up to ``alluxio.job.retry.max.attempts``. When every
unit of a chunk is final and every earlier chunk is too, the chunk is *committed*: its
counters join ``committed`` and its last path becomes the checkpoint. About once a
second the runner writes progress, checkpoint and new failures with one fenced write.
A coordinator that restarts, or a peer that reclaims the job, resumes after the
checkpoint. Fencing failures (``Fenced``) mean someone else now decides the job: the
runner stops at once and writes nothing more.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace

import structlog
import trio

from alluxiojob.config import Config, Keys
from alluxiojob.coordinator.metrics import CoordinatorMetrics
from alluxiojob.coordinator.workers import Membership, WorkerClient, WorkerError
from alluxiojob.core.errors import Fenced, describe_error, leaves
from alluxiojob.core.job import JobType
from alluxiojob.core.progress import Counters, Progress, RateWindow, should_fail_early
from alluxiojob.core.reasons import Reason
from alluxiojob.core.states import JobEvent, JobState
from alluxiojob.protocol.codec import FileEntry, FileStatus, Op, TaskOptions
from alluxiojob.security.paths import PathAllowlist
from alluxiojob.store.jobs import FailureRecord, JobStore, OwnedJob
from alluxiojob.ufs import ufs_for
from alluxiojob.ufs.base import UfsError, UfsFile, printable
from alluxiojob.ufs.settings import UfsSettings

log = structlog.get_logger("alluxiojob.coordinator")

RETRYABLE = frozenset(reason.value for reason in Reason if reason.retryable)
CHECKPOINT_INTERVAL = 1.0
LIST_CHUNK = 1000
MAX_VERIFY_PASSES = 5
FILL_WAIT = 0.02  # how long a dispatcher waits to fill a batch while listing goes on


class JobFailed(Exception):
    pass


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class FileOutcome:
    """What the units of one file (one per target worker) found, until all are final."""

    remaining: int = 0
    ok: int = 0
    ok_bytes: int = 0
    failed: bool = False

    def counters(self, op: Op, length: int, metadata_only: bool = False) -> Counters:
        """One file's contribution, once every target answered."""
        if self.failed:
            return Counters(files_failed=1)
        if self.ok:
            # FREE reports what was freed on every worker, and a metadata-only LOAD
            # loads no bytes; the others count the listed length once, however many
            # replicas, so totals match the listing.
            nbytes = self.ok_bytes if op is Op.FREE or metadata_only else length
            return Counters(files_processed=1, bytes_processed=nbytes)
        return Counters(files_skipped=1, bytes_skipped=0 if op is Op.FREE else length)


@dataclass
class Unit:
    index: int
    chunk: int
    entry: FileEntry
    parts: tuple[str, ...]
    target: str
    replica: int  # 0 = primary
    outcome: FileOutcome
    attempts: int = 0


@dataclass
class Chunk:
    outstanding: int = 0
    sealed: bool = False
    last_parts: tuple[str, ...] = ()
    delta: Counters = field(default_factory=Counters)
    failures: list[FailureRecord] = field(default_factory=list)


class _WorkerQueue:
    def __init__(self, capacity: int) -> None:
        self.send, self.receive = trio.open_memory_channel[Unit](capacity)


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
        self.batch_size = self.job.options.batch_size or config[Keys.JOB_BATCH_SIZE]
        self.max_attempts = config[Keys.JOB_RETRY_MAX_ATTEMPTS]
        self.backoff = config[Keys.JOB_RETRY_BACKOFF]
        self.connect_wait = config[Keys.FAILURE_DETECTION_TIMEOUT]
        self.failure_list_max = config[Keys.JOB_FAILURE_LIST_MAX]
        self.progress = Progress()
        self.live = Counters()
        self.committed = Counters()
        self.checkpoint: tuple[str, ...] = ()
        self.listing_done = False
        self.rate = RateWindow()
        self.started = time.monotonic()
        self.base_seconds = 0.0
        self.failures_stored = 0
        self._unsaved_failures: list[FailureRecord] = []
        self._chunks: dict[int, Chunk] = {}
        self._next_commit = 0
        self._queues: dict[str, _WorkerQueue] = {}
        self._throttled_slots: dict[str, trio.Semaphore] = {}
        self._in_flight = 0
        self._idle = trio.Event()
        self._verify_counters: Counters | None = None
        self._workers_seen: set[str] = set()
        self._pass_op = Op(self.job.type.value)
        self._pass_skip = self.job.options.skip_if_exists
        self._fenced = False
        # One store write at a time, each fenced with the revision the last one left: a
        # checkpoint still in flight when the runner changes the job's state (VERIFY)
        # would compare a revision the runner itself replaced, and fence it off its job.
        self._store_writes = trio.Lock()
        self._finished = False

    # ================================================================== lifecycle
    async def run(self) -> None:
        with structlog.contextvars.bound_contextvars(job_id=self.job.id,
                                                     job=self.job.identity):
            try:
                await self._run()
            except* Fenced as group:
                self._fenced = True
                log.info("job taken over elsewhere; abandoning it",
                         reason=describe_error(group))
            finally:
                if not self._fenced and not self._finished:
                    await self._last_checkpoint()

    async def _last_checkpoint(self) -> None:
        """Interrupted (shutdown): keep what is done, so the next owner resumes close by."""
        with trio.move_on_after(2) as scope:
            scope.shield = True
            try:
                await self._save()
            except Exception as exc:
                log.info("no final checkpoint", error=describe_error(exc))

    async def _run(self) -> None:
        stored = await self.store.get_progress(self.job.id)
        self.progress = stored.resumed()
        self.live = self.committed = stored.committed
        self.checkpoint = stored.checkpoint
        self.base_seconds = stored.active_seconds
        self._workers_seen = set(stored.workers)
        if stored.checkpoint:
            self.failures_stored = len(
                await self.store.list_failures(self.job.id, self.failure_list_max)
            )
        log.info("job started", type=self.job.type.value, path=self.job.path,
                 resume_after="/".join(self.checkpoint) or None,
                 files_committed=self.committed.files_done)
        error = ""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._checkpointer)
                await self._load_pass(after=self.checkpoint)
                if self.job.options.verify and self.job.type is JobType.LOAD:
                    await self._verify()
                nursery.cancel_scope.cancel()
        except* JobFailed as group:
            error = str(leaves(group)[0])
        except* UfsError as group:
            first = leaves(group)[0]
            error = f"{getattr(first, 'reason', 'IO_ERROR')}: {first}"
        await self._finish(error)

    async def _finish(self, error: str) -> None:
        # A job that ends early has chunks that never committed: keep their failures too.
        for chunk_id in sorted(self._chunks):
            self._keep_failures(self._chunks[chunk_id].failures)
        self._chunks.clear()
        if self._unsaved_failures:
            await self._save()  # the final transition below carries the progress itself
        if not error and self.live.files_failed:
            error = (f"{self.live.files_failed} files failed; "
                     "see --progress --file-status FAILURE")
        event = JobEvent.FAIL if error else JobEvent.SUCCEED
        self.owned = await self.store.transition(
            self.owned, event, error=error, progress=self._snapshot()
        )
        self._finished = True
        if self.metrics is not None:
            self.metrics.job_finished(self.job.type.value, self.owned.job.state.value)
        log.info("job finished", state=self.owned.job.state.value, error=error or None,
                 files=self.live.files_processed, bytes=self.live.bytes_processed,
                 skipped=self.live.files_skipped, failed=self.live.files_failed,
                 seconds=round(self._active_seconds(), 3))

    # ================================================================== passes
    async def _load_pass(self, after: tuple[str, ...]) -> None:
        """List from ``after`` and dispatch every file; returns when all are final."""
        self._chunks.clear()
        self._next_commit = 0
        self.listing_done = False
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._list_and_enqueue(after)
            self.listing_done = True
            self._seal_last_chunk()
            self._advance()
            # Done when every chunk has committed (each unit answered or failed for good)
            # and no retry is pending.
            while self._in_flight or self._chunks:
                self._idle = trio.Event()
                await self._idle.wait()
            for queue in self._queues.values():
                queue.send.close()
            self._queues.clear()
            nursery.cancel_scope.cancel()

    async def _verify(self) -> None:
        """Recheck every file on its owners and reload what is missing or stale."""
        if self.owned.job.state is not JobState.VERIFYING:  # not when resumed in place
            async with self._store_writes:
                self.owned = await self.store.transition(
                    self.owned, JobEvent.VERIFY, progress=self._snapshot()
                )
        self._pass_skip = True
        for passes in range(1, MAX_VERIFY_PASSES + 1):
            self._verify_counters = Counters()
            # Each pass decides afresh which files are failed: a file repaired now is fine.
            await self._save()
            self.live = replace(self.live, files_failed=0)
            self.committed = replace(self.committed, files_failed=0)
            self.failures_stored = 0
            await self.store.clear_failures(self.owned)
            await self._load_pass(after=())
            repaired = self._verify_counters.files_processed
            self.progress = replace(self.progress, verify_passes=passes,
                                    files_repaired=self.progress.files_repaired + repaired)
            log.info("verify pass done", passes=passes, repaired=repaired,
                     failed=self._verify_counters.files_failed)
            if repaired == 0:
                return
        raise JobFailed(f"verify still found files to repair after {MAX_VERIFY_PASSES} passes")

    # ================================================================== listing
    async def _list_and_enqueue(self, after: tuple[str, ...]) -> None:
        index = 0
        chunk_id = 0
        async for files in self._listing(after):
            for ufs_file in files:
                chunk_id = index // self.batch_size
                chunk = self._chunks.get(chunk_id)
                if chunk is None:
                    if chunk_id:
                        self._chunks[chunk_id - 1].sealed = True
                        self._advance()
                    chunk = self._chunks[chunk_id] = Chunk()
                entry = FileEntry(ufs_file.uri, ufs_file.length, ufs_file.mtime_ns,
                                  self._destination(ufs_file), ufs_file.version)
                chunk.last_parts = ufs_file.parts
                self._count(chunk, Counters(files_listed=1, bytes_listed=ufs_file.length))
                if not _is_utf8(entry.path + entry.dst):
                    # Such a name cannot travel in the protocol: fail it here, by name.
                    chunk.outstanding += 1
                    unit = Unit(index, chunk_id, entry, ufs_file.parts, "", 0,
                                FileOutcome(remaining=1))
                    self._fail_for_good(unit, "INVALID_PATH",
                                        "the file name is not valid UTF-8")
                    index += 1
                    continue
                targets = await self._targets(entry.path)
                chunk.outstanding += len(targets)
                outcome = FileOutcome(remaining=len(targets))
                for replica, target in enumerate(targets):
                    unit = Unit(index, chunk_id, entry, ufs_file.parts, target, replica,
                                outcome)
                    await self._enqueue(unit)
                index += 1

    async def _listing(self, after: tuple[str, ...]) -> AsyncIterator[list[UfsFile]]:
        ufs = ufs_for(self.job.path, UfsSettings.from_config(self.config))
        allowlist = PathAllowlist.from_config(self.config)

        def follow_link(path: str) -> bool:
            """Walks never follow a symlink out of alluxio.job.path.allowlist."""
            if allowlist.admits(path):
                return True
            log.warning("not following a symlink that leads outside the allowlist",
                        path=path, allowlist=allowlist.describe())
            return False

        walker: Iterator[UfsFile] = ufs.walk(
            self.job.path, after, follow_link if allowlist.enabled else None)

        def next_chunk() -> list[UfsFile]:
            out: list[UfsFile] = []
            for item in walker:
                out.append(item)
                if len(out) >= LIST_CHUNK:
                    break
            return out

        while True:
            files = await trio.to_thread.run_sync(next_chunk)
            if not files:
                return
            yield files

    def _destination(self, ufs_file: UfsFile) -> str:
        """COPY/MOVE: the file's place under the destination, mirroring the source tree."""
        if not self.job.dst:
            return ""
        if not ufs_file.parts:  # the job's path is a single file
            return self.job.dst
        return self.job.dst.rstrip("/") + "/" + "/".join(ufs_file.parts)

    def _seal_last_chunk(self) -> None:
        if self._chunks:
            self._chunks[max(self._chunks)].sealed = True

    async def _targets(self, path: str) -> list[str]:
        while True:
            ring = self.membership.ring
            if len(ring):
                if self._pass_op is Op.FREE:
                    return list(ring.workers)
                if self._pass_op in (Op.COPY, Op.MOVE):
                    return ring.owners(path, 1)  # any worker will do; the ring spreads them
                return ring.owners(path, self.job.options.replicas)
            log.warning("no workers in the membership; waiting for one")
            await self.membership.changed.wait()

    # ================================================================== dispatch
    async def _enqueue(self, unit: Unit) -> None:
        queue = self._queues.get(unit.target)
        if queue is None:
            queue = self._queues[unit.target] = _WorkerQueue(self.batch_size * 2)
            self._nursery.start_soon(self._dispatcher, unit.target, queue)
        await queue.send.send(unit)

    async def _dispatcher(self, worker_id: str, queue: _WorkerQueue) -> None:
        async for first in queue.receive:
            units = [first]
            with trio.move_on_after(FILL_WAIT if not self.listing_done else 0):
                while len(units) < self.batch_size:
                    try:
                        units.append(queue.receive.receive_nowait())
                    except trio.WouldBlock:
                        if self.listing_done:
                            break
                        units.append(await queue.receive.receive())
                    except trio.EndOfChannel:
                        break
            client = self.membership.client(worker_id)
            if client is None:
                for unit in units:
                    self._on_failure(unit, "WORKER_LOST",
                                     f"worker {worker_id} left the membership")
                continue
            self._in_flight += 1
            await self._slots(client).acquire()
            self._nursery.start_soon(self._run_task, worker_id, client, units)

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

    async def _run_task(self, worker_id: str, client: WorkerClient, units: list[Unit]) -> None:
        """Run one task on ``client``, whose slot the dispatcher holds for it."""
        try:
            options = TaskOptions(skip_if_exists=self._pass_skip,
                                  bandwidth=self.job.options.bandwidth,
                                  overwrite=self.job.options.overwrite,
                                  metadata_only=self.job.options.metadata_only)
            result = await client.call(self.job.id, self._pass_op,
                                       [u.entry for u in units], options, self.connect_wait)
        except WorkerError as exc:
            for unit in units:
                self._on_failure(unit, exc.reason, str(exc))
        else:
            self._workers_seen.add(worker_id)
            by_path = {r.path: r for r in result.results}
            for unit in units:
                r = by_path.get(unit.entry.path)
                if r is None:
                    self._on_failure(unit, "WORKER_RPC_FAILED",
                                     f"worker {worker_id} returned no result for the file")
                elif r.status is FileStatus.FAILED:
                    self._on_failure(unit, r.reason or "IO_ERROR", r.message)
                else:
                    if r.status is not FileStatus.SKIPPED:
                        unit.outcome.ok += 1
                        unit.outcome.ok_bytes += r.bytes
                    self._unit_final(unit)
        finally:
            self._slots(client).release()
            self._in_flight -= 1
            self._idle.set()

    # ================================================================== results
    def _count(self, chunk: Chunk, delta: Counters) -> None:
        if self._verify_counters is not None:
            # A verify pass only reports repairs and failures; it lists everything again.
            self._verify_counters = self._verify_counters + delta
            delta = Counters(files_failed=delta.files_failed,
                             subtasks_failed=delta.subtasks_failed)
        chunk.delta = chunk.delta + delta
        self.live = self.live + delta

    def _unit_final(self, unit: Unit) -> None:
        """A unit will not be tried again; the file counts once all its units are final."""
        chunk = self._chunks[unit.chunk]
        outcome = unit.outcome
        outcome.remaining -= 1
        if outcome.remaining == 0:
            self._count(chunk, outcome.counters(self._pass_op, unit.entry.length,
                                                self.job.options.metadata_only))
        chunk.outstanding -= 1
        self._advance()

    def _on_failure(self, unit: Unit, reason: str, message: str) -> None:
        chunk = self._chunks[unit.chunk]
        self._count(chunk, Counters(subtasks_failed=1))
        unit.attempts += 1
        if reason in RETRYABLE and unit.attempts < self.max_attempts:
            delay = self.backoff * (2 ** (unit.attempts - 1)) * random.uniform(0.8, 1.2)
            log.debug("retrying file", path=unit.entry.path, reason=reason,
                      attempt=unit.attempts, delay=round(delay, 3))
            self._in_flight += 1
            self._nursery.start_soon(self._retry_later, unit, delay)
            return
        self._fail_for_good(unit, reason, message)

    def _fail_for_good(self, unit: Unit, reason: str, message: str) -> None:
        chunk = self._chunks[unit.chunk]
        log.warning("file failed", path=unit.entry.path, reason=reason, message=message,
                    attempts=unit.attempts, worker=unit.target)
        if not unit.outcome.failed:
            if self.metrics is not None:
                self.metrics.file_failed(self.job.type.value, reason)
            chunk.failures.append(
                FailureRecord(printable(unit.entry.path), reason, message, time.time())
            )
        unit.outcome.failed = True
        self._unit_final(unit)
        self._check_thresholds()

    async def _retry_later(self, unit: Unit, delay: float) -> None:
        try:
            await trio.sleep(delay)
            if unit.target not in self.membership.ring.workers:
                # The worker left: its file goes to the current owners. With no worker
                # at all, wait (up to the failure-detection timeout) rather than burn the
                # file's attempts against nobody.
                with trio.move_on_after(self.connect_wait):
                    while not len(self.membership.ring):
                        await self.membership.changed.wait()
                if len(self.membership.ring):
                    owners = await self._targets(unit.entry.path)
                    unit.target = owners[min(unit.replica, len(owners) - 1)]
            await self._enqueue(unit)
        finally:
            self._in_flight -= 1
            self._idle.set()

    def _check_thresholds(self) -> None:
        count = self.config[Keys.JOB_FAILURE_COUNT_THRESHOLD]
        ratio = self.config[Keys.JOB_FAILURE_RATIO_THRESHOLD]
        if should_fail_early(self.live, count, ratio):
            raise JobFailed(
                f"{self.live.files_failed} of {self.live.files_done} files failed, past "
                f"alluxio.job.failure.count.threshold={count} and "
                f"alluxio.job.failure.ratio.threshold={ratio}"
            )

    def _advance(self) -> None:
        """Commit every finished chunk at the head of the order."""
        while True:
            chunk = self._chunks.get(self._next_commit)
            if chunk is None or not chunk.sealed or chunk.outstanding:
                break
            if self._verify_counters is None:
                self.committed = self.committed + chunk.delta
                self.checkpoint = chunk.last_parts
            else:
                # A verify pass only adds failures; repairs are reported as such.
                self.committed = self.committed + chunk.delta
            self._keep_failures(chunk.failures)
            del self._chunks[self._next_commit]
            self._next_commit += 1
        self._idle.set()

    def _keep_failures(self, failures: list[FailureRecord]) -> None:
        """Queue failures for the store, up to ``alluxio.job.failure.list.max`` per job."""
        room = max(0, self.failure_list_max - self.failures_stored)
        kept = failures[:room]
        self._unsaved_failures.extend(kept)
        self.failures_stored += len(kept)

    # ================================================================== progress
    def _active_seconds(self) -> float:
        return self.base_seconds + (time.monotonic() - self.started)

    def _snapshot(self) -> Progress:
        return replace(
            self.progress,
            live=self.live,
            committed=self.committed,
            checkpoint=self.checkpoint,
            listing_done=self.listing_done and self._verify_counters is None,
            active_seconds=self._active_seconds(),
            recent_rate=self.rate.rate(),
            workers=tuple(sorted(self._workers_seen)),
        )

    async def _save(self) -> None:
        async with self._store_writes:
            failures, self._unsaved_failures = self._unsaved_failures, []
            try:
                await self.store.save_progress(self.owned, self._snapshot(), failures)
            except Fenced:
                raise
            except BaseException as exc:
                # The store is unreachable, or this save was cancelled (the checkpointer
                # is cancelled when the pass ends): keep the failures for the next save,
                # which rewrites the same keys if this one landed after all.
                self._unsaved_failures = failures + self._unsaved_failures
                if not isinstance(exc, Exception):
                    raise
                log.warning("cannot save progress; will retry", error=describe_error(exc))

    async def _checkpointer(self) -> None:
        while True:
            await trio.sleep(CHECKPOINT_INTERVAL)
            self.rate.add(time.monotonic(), self.live.bytes_processed)
            await self._save()

