"""Turns one TaskBatch into file copies on the process pool and index updates.

Each file is resolved once: its UFS (local or an object store), its cache path. Local
small files are grouped into shards of at most ``partition_size`` bytes (and split
further so every pool process gets work); a file larger than ``partition_size`` is
preallocated in ``tmp/`` and each of its partitions is a job of its own, written in
place at its offset. Objects are split evenly over the pool processes, each of which
keeps many requests in flight (``fetch.py``); an object larger than one GET's read size
(``UfsSettings.read_size``, not the partition size) is first HEADed for the ETag its
ranges are pinned to. Index entries for a batch are written in one WriteBatch.

Jobs share the pool fairly (``slots.FairSlots``: a free process goes to the waiting
jobs in turn). A job with ``--bandwidth`` is paced here, in the trio parent, between
small shards (``slots.Pacer``): a throttled job never holds a pool process while it
waits for its rate.

A pool process that dies mid-shard (killed, out of memory) fails that shard's files
(``IO_ERROR``, retried by the coordinator); its tmp files are removed at once, and the
next task sweeps ``tmp/`` of anything no task in flight owns.

Pins: the files of a job that sent a task here within
``alluxio.worker.job.cache.pin.time`` are not evicted. The time of each job's last task
is kept in the cache index too, so a restarted worker keeps the pins of running jobs.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import structlog
import trio
import trio_parallel

from alluxiojob.core.reasons import Reason
from alluxiojob.protocol.codec import (
    FileEntry,
    FileResult,
    FileStatus,
    TaskBatch,
    TaskOp,
    TaskResult,
)
from alluxiojob.security.paths import PathAllowlist
from alluxiojob.ufs import is_local, ufs_for
from alluxiojob.ufs.base import UfsError
from alluxiojob.ufs.local import make_dirs, reason_for, to_local_path
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.ufs.tmpnames import TmpName, TmpOwner, retarget
from alluxiojob.ufs.uploads import UploadJournal
from alluxiojob.worker.cache import Cache, IndexEntry, MetadataRecord, cache_relpath
from alluxiojob.worker.checksum import read_back
from alluxiojob.worker.copier import (
    CACHE_DIR_MODE,
    CopyOutcome,
    LocalCopy,
    copy_shard,
    preallocate,
    transfer_shard,
)
from alluxiojob.worker.fetch import ObjectFetch, fetch_shard
from alluxiojob.worker.scrub import cached_as_listed, content_intact
from alluxiojob.worker.slots import FairSlots, Pacer, piece_size
from alluxiojob.worker.transfer import ObjectTransfer, transfer_objects_shard

PoolWork = LocalCopy | ObjectFetch  # what a pool process does for a LOAD, one file or range

log = structlog.get_logger("alluxiojob.worker")


@dataclass
class _PlannedFile:
    """One file of a LOAD task on its way into the cache: where it comes from and goes,
    and the pool work (``pieces``: the whole file, or its byte ranges) that copies it."""

    entry: FileEntry
    src: str  # a local path, or the object's URI
    final: str
    local: bool
    pieces: list[PoolWork] = field(default_factory=list)
    tmp: str = ""  # large files: the shared tmp file
    version: str = ""  # large objects: the ETag their ranges are pinned to
    reserved: int = 0
    checksum: str = ""  # large files: read back once every range is written


@dataclass
class _Shard:
    """Work that runs together in one pool process, and the bytes it copies."""

    work: list[PoolWork]
    nbytes: int


@dataclass
class ExecutorStats:
    unfinished_tasks: int = 0
    active_shards: int = 0
    files_loaded: int = 0
    bytes_loaded: int = 0
    files_failed: int = 0
    files_freed: int = 0


def _pool_died(exc: BaseException) -> CopyOutcome:
    return CopyOutcome(False, reason="IO_ERROR",
                       message=f"a pool process died while copying this file ({exc}); "
                       "it will be retried")


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class TaskExecutor:
    def __init__(
        self,
        cache: Cache,
        partition_size: int,
        pool_size: int,
        pin_seconds: float = 600.0,
        clock: Callable[[], float] = time.time,
        allowlist: PathAllowlist | None = None,
        ufs_settings: UfsSettings | None = None,
    ) -> None:
        self.ufs_settings = ufs_settings or UfsSettings()
        self.pin_seconds = pin_seconds
        self.allowlist = allowlist or PathAllowlist(())
        self.cache = cache
        self.partition_size = partition_size
        self.pool_size = pool_size
        self.slots = FairSlots(pool_size)
        # trio_parallel's own limiter; FairSlots lets at most pool_size through, so it
        # never makes anyone wait.
        self.limiter = trio.CapacityLimiter(pool_size)
        self.stats = ExecutorStats()
        self._clock = clock
        self._pins: dict[str, float] = {}  # job id -> time of its last task here
        self._pacers: dict[str, Pacer] = {}
        self._tmp_in_use: set[str] = set()  # tmp files of the loads in flight
        self._writing: Counter[str] = Counter()  # data/ paths of the loads in flight
        self._sweep_tmp = False
        # Whose hidden temp files COPY/MOVE writes beside local destinations: this worker
        # (its cache dir's tag) in this run; earlier runs' are swept as they are met.
        self.tmp_owner = TmpOwner.new_run(cache.worker_tag)
        # The multipart uploads this run begins; a dead run's unfinished ones are aborted
        # when the worker starts again (sweep_uploads).
        self.uploads = UploadJournal(cache.dirs[0].root / "uploads",
                                     f"{self.tmp_owner.worker}-{self.tmp_owner.run}")
        self._started = datetime.now(UTC)

    async def warm_up(self) -> None:
        """Start every pool process now rather than during the first task."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.pool_size):
                nursery.start_soon(
                    lambda: trio_parallel.run_sync(os.getpid, limiter=self.limiter))

    async def sweep_uploads(self) -> None:
        """Abort the multipart uploads earlier runs of this worker left unfinished."""
        def sweep() -> int:
            self.uploads.directory.mkdir(mode=0o700, exist_ok=True)
            return self.uploads.sweep(self.ufs_settings, self._started)

        aborted = await trio.to_thread.run_sync(sweep)
        if aborted:
            log.info("aborted multipart uploads a killed run left", uploads=aborted)

    # ------------------------------------------------------------------ pins
    async def restore_pins(self) -> int:
        """Pins saved before a restart; returns how many are still in force."""
        saved = await trio.to_thread.run_sync(self.cache.load_pins, limiter=self.cache.limiter)
        for job_id, when in saved.items():
            self._pins[job_id] = max(when, self._pins.get(job_id, 0.0))
        return len(self.pinned_jobs())

    def pinned_jobs(self) -> set[str]:
        cutoff = self._clock() - self.pin_seconds
        return {job_id for job_id, seen in self._pins.items() if seen >= cutoff}

    async def _pin(self, job_id: str) -> None:
        """Record that ``job_id`` is active now, in memory and in the index."""
        now = self._clock()
        self._pins[job_id] = now
        expired = [j for j, seen in self._pins.items() if seen < now - self.pin_seconds]
        for j in expired:
            del self._pins[j]

        def save() -> None:
            self.cache.save_pins({job_id: now})
            if expired:
                self.cache.drop_pins(expired)

        await trio.to_thread.run_sync(save, limiter=self.cache.limiter)

    # ------------------------------------------------------------------ tasks
    async def run(self, batch: TaskBatch) -> TaskResult:
        self.stats.unfinished_tasks += 1
        try:
            await self._pin(batch.job_id)
            if self._sweep_tmp:
                await self._sweep()
            refused = await self._outside_allowlist(batch)
            if refused:
                batch = replace(batch, files=tuple(f for f in batch.files
                                                   if f.path not in refused))
            if not batch.files:
                results = []
            elif batch.op is TaskOp.FREE:
                results = await self._free(batch)
            elif batch.op is TaskOp.LOAD:
                results = await self._load(batch)
            elif batch.op in (TaskOp.COPY, TaskOp.MOVE):
                results = await self._transfer(batch)
            else:
                results = [
                    FileResult(f.path, FileStatus.FAILED, 0, Reason.UNSUPPORTED,
                               f"operation {batch.op.value} is not supported by this worker")
                    for f in batch.files
                ]
        finally:
            self.stats.unfinished_tasks -= 1
        return TaskResult(batch.task_id, (*refused.values(), *results))

    async def _outside_allowlist(self, batch: TaskBatch) -> dict[str, FileResult]:
        """Files whose source or destination lies outside ``alluxio.job.path.allowlist``.

        The coordinator checked the job's paths at submit; the worker checks every file
        again against its own configuration, because anyone holding the token can send
        tasks. FREE only touches the cache, so it is not confined.
        """
        if not self.allowlist.enabled or batch.op is TaskOp.FREE:
            return {}

        def check() -> dict[str, FileResult]:
            refused: dict[str, FileResult] = {}
            for f in batch.files:
                for uri, what in ((f.path, "source"), (f.dst, "destination")):
                    if not uri and what == "destination":
                        continue
                    try:
                        self.allowlist.check(uri, what)
                    except UfsError as exc:
                        refused[f.path] = FileResult(f.path, FileStatus.FAILED, 0,
                                                     Reason.PERMISSION_DENIED, str(exc))
                        break
            return refused

        return await trio.to_thread.run_sync(check)

    async def _run_in_pool(self, job_id: str, function: Callable[..., list[CopyOutcome]],
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

    async def _sweep(self) -> None:
        """Remove tmp files that no load in flight owns (left by a pool process that
        died mid-write)."""
        self._sweep_tmp = False

        def sweep() -> int:
            removed = 0
            for d in self.cache.dirs:
                with os.scandir(d.tmp) as it:
                    for entry in it:
                        if entry.path not in self._tmp_in_use:
                            _unlink_quiet(entry.path)
                            removed += 1
            return removed

        removed = await trio.to_thread.run_sync(sweep)
        if removed:
            log.info("removed tmp files no load owns", files=removed)

    # ------------------------------------------------------------------ FREE
    async def _free(self, batch: TaskBatch) -> list[FileResult]:
        results: list[FileResult] = []
        by_dir: dict[int, list[str]] = {}
        for f in batch.files:
            try:
                self.cache.dir_for(f.path).data_path(f.path)
            except UfsError as exc:
                results.append(FileResult(f.path, FileStatus.FAILED, 0, Reason(exc.reason),
                                          str(exc)))
                continue
            by_dir.setdefault(self.cache.dirs.index(self.cache.dir_for(f.path)), []).append(
                f.path
            )
        freed: dict[str, int] = {}
        for index, uris in by_dir.items():
            removed = await trio.to_thread.run_sync(
                self.cache.dirs[index].remove, uris, limiter=self.cache.limiter
            )
            freed.update(removed)
        for f in batch.files:
            if f.path in freed:
                results.append(FileResult(f.path, FileStatus.OK, freed[f.path]))
            elif not any(r.path == f.path for r in results):
                results.append(FileResult(f.path, FileStatus.SKIPPED, 0))
        self.stats.files_freed += len(freed)
        return results

    # ------------------------------------------------------------------ COPY / MOVE
    async def _transfer(self, batch: TaskBatch) -> list[FileResult]:
        results: dict[str, FileResult] = {}
        jobs: list[tuple[FileEntry, LocalCopy | ObjectTransfer]] = []
        for f in batch.files:
            if not f.dst:
                results[f.path] = FileResult(f.path, FileStatus.FAILED, 0, Reason.INVALID_PATH,
                                             "no destination given")
                continue
            try:
                cache_relpath(f.dst)  # rejects '..' and empty components
                if is_local(f.path) and is_local(f.dst):
                    src, dst = to_local_path(f.path), to_local_path(f.dst)
                    tmp = TmpName.new(self.tmp_owner).beside(dst)
                    jobs.append((f, LocalCopy(src, tmp, dst)))
                else:
                    ufs_for(f.path).normalize(f.path)
                    ufs_for(f.dst).normalize(f.dst)
                    jobs.append((f, ObjectTransfer(f.path, f.dst)))
            except UfsError as exc:
                results[f.path] = FileResult(f.path, FileStatus.FAILED, 0, Reason(exc.reason),
                                             str(exc))
        local = [pair for pair in jobs if isinstance(pair[1], LocalCopy)]
        remote = [pair for pair in jobs if not isinstance(pair[1], LocalCopy)]
        shards: list[list[tuple[FileEntry, LocalCopy | ObjectTransfer]]] = []
        for group in (local, remote):
            per_shard = max(1, math.ceil(len(group) / max(1, min(self.pool_size,
                                                                  len(group) or 1))))
            shards += [group[i:i + per_shard] for i in range(0, len(group), per_shard)]
        move = batch.op is TaskOp.MOVE
        overwrite = batch.options.overwrite

        async def run_shard(shard: list[tuple[FileEntry, LocalCopy | ObjectTransfer]]) -> None:
            try:
                if isinstance(shard[0][1], LocalCopy):
                    done = await self._run_in_pool(
                        batch.job_id, transfer_shard, [job for _, job in shard], move,
                        overwrite, self.tmp_owner)
                else:
                    done = await self._run_in_pool(
                        batch.job_id, transfer_objects_shard, [job for _, job in shard], move,
                        overwrite, self.ufs_settings, self.tmp_owner, self.uploads)
            except trio_parallel.BrokenWorkerError as exc:
                await trio.to_thread.run_sync(self._discard_transfer_tmps,
                                              [job for _, job in shard])
                done = [_pool_died(exc) for _ in shard]
            for (entry, _job), outcome in zip(shard, done, strict=True):
                if outcome.ok:
                    results[entry.path] = FileResult(entry.path, FileStatus.OK, outcome.bytes)
                elif outcome.reason == "EXISTS":
                    results[entry.path] = FileResult(entry.path, FileStatus.SKIPPED,
                                                     entry.length, None, outcome.message)
                else:
                    results[entry.path] = FileResult(entry.path, FileStatus.FAILED, 0,
                                                     Reason(outcome.reason), outcome.message)

        async with trio.open_nursery() as nursery:
            for shard in shards:
                nursery.start_soon(run_shard, shard)
        return [results[f.path] for f in batch.files if f.path in results]

    @staticmethod
    def _discard_transfer_tmps(jobs: list[LocalCopy | ObjectTransfer]) -> None:
        """Blocking: the hidden file a dead pool process may have left beside a local
        destination (or inside it, when the destination is a directory)."""
        for job in jobs:
            if isinstance(job, LocalCopy):
                _unlink_quiet(job.tmp)
                inside = os.path.join(job.final, os.path.basename(job.src))
                _unlink_quiet(retarget(job.tmp, inside))

    # ------------------------------------------------------------------ LOAD
    def writing(self, data_path: str) -> bool:
        """Is a load in flight writing this ``data/`` path (a scrub leaves it alone)?"""
        return data_path in self._writing

    async def _hits(self, files: list[FileEntry], verify: bool) -> set[str]:
        """Which files are cached as listed (and, in a verify pass, with their content
        intact); those become the most recently used."""
        found = await trio.to_thread.run_sync(cached_as_listed, self.cache, files,
                                              limiter=self.cache.limiter)
        hits = ([f for f, _ in found] if not verify  # a verify pass reads: no index lock
                else await trio.to_thread.run_sync(content_intact, self.cache, found))
        by_dir: dict[int, list[str]] = {}
        for f in hits:
            by_dir.setdefault(self.cache.dirs.index(self.cache.dir_for(f.path)), []).append(
                f.path)

        def touch() -> None:
            for index, uris in by_dir.items():
                self.cache.dirs[index].touch(uris)

        await trio.to_thread.run_sync(touch, limiter=self.cache.limiter)
        return {f.path for f in hits}

    async def _load(self, batch: TaskBatch) -> list[FileResult]:
        results: dict[str, FileResult] = {}
        todo: list[_PlannedFile] = []
        for f in batch.files:
            try:
                local = is_local(f.path)
                src = to_local_path(f.path) if local else ufs_for(f.path).normalize(f.path)
                final = self.cache.dir_for(f.path).data_path(f.path)
            except UfsError as exc:
                results[f.path] = FileResult(f.path, FileStatus.FAILED, 0, Reason(exc.reason),
                                             str(exc))
                continue
            todo.append(_PlannedFile(f, src, final, local))
        if batch.options.metadata_only:
            await self._record_metadata(batch, todo, results)
            return [results[f.path] for f in batch.files if f.path in results]
        if batch.options.skip_if_exists and todo:
            hits = await self._hits([p.entry for p in todo], batch.options.verify)
            for planned in todo:
                if planned.entry.path in hits:
                    results[planned.entry.path] = FileResult(planned.entry.path,
                                                             FileStatus.SKIPPED,
                                                             planned.entry.length)
            todo = [p for p in todo if p.entry.path not in hits]

        pinned = self.pinned_jobs()
        ready: list[_PlannedFile] = []
        try:
            for planned in todo:
                f = planned.entry
                refusal = await self.cache.reserve(f.path, f.length, pinned)
                if refusal is None:
                    planned.reserved = f.length
                    ready.append(planned)
                    self._writing[planned.final] += 1
                else:
                    results[f.path] = FileResult(f.path, FileStatus.FAILED, 0,
                                                 Reason.CACHE_FULL, refusal)
            outcomes = await self._copy(batch, ready, results)
            await self._commit(batch.job_id, ready, outcomes, results)
        finally:
            for planned in ready:
                if planned.reserved:
                    self.cache.release(planned.entry.path, planned.reserved)
                self._writing[planned.final] -= 1
                if not self._writing[planned.final]:
                    del self._writing[planned.final]
                self._tmp_in_use.discard(planned.tmp)
                for job in planned.pieces:
                    self._tmp_in_use.discard(job.tmp)
        return [results[f.path] for f in batch.files if f.path in results]

    async def _record_metadata(self, batch: TaskBatch, todo: list[_PlannedFile],
                               results: dict[str, FileResult]) -> None:
        """``--metadata-only``: record each file as listed (length, mtime, ETag), copy
        nothing. The records are apart from cached data: no read, skip or eviction
        takes one for a cached file. With skip-if-exists (and in verify passes), a file
        already recorded as it is listed now is skipped."""
        now = self._clock()

        def record() -> None:
            by_dir: dict[int, list[tuple[str, MetadataRecord]]] = {}
            for planned in todo:
                f = planned.entry
                d = self.cache.dir_for(f.path)
                if batch.options.skip_if_exists:
                    known = d.metadata(f.path)
                    if known is not None and known.matches(f.length, f.mtime_ns, f.version):
                        results[f.path] = FileResult(f.path, FileStatus.SKIPPED, 0)
                        continue
                by_dir.setdefault(self.cache.dirs.index(d), []).append(
                    (f.path, MetadataRecord(f.length, f.mtime_ns, f.version, batch.job_id,
                                            now)))
                results[f.path] = FileResult(f.path, FileStatus.OK, 0)
            for index, records in by_dir.items():
                self.cache.dirs[index].record_metadata(records)

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(record, limiter=self.cache.limiter)

    def _plan_shards(self, ready: list[_PlannedFile], piece: int) -> list[_Shard]:
        """Shards for the pool. ``piece`` (a throttled job): small files are grouped into
        shards of about that many bytes; large files keep their partitions, which the
        runner copies a piece at a time."""
        shards: list[_Shard] = []
        small = [p for p in ready if p.local and p.entry.length <= self.partition_size]
        if small:
            per_shard = max(1, math.ceil(len(small) / max(1, min(self.pool_size, len(small)))))
            limit = piece or self.partition_size
            current: list[PoolWork] = []
            current_bytes = 0
            for planned in small:
                d = self.cache.dir_for(planned.entry.path)
                job = LocalCopy(planned.src, d.tmp_path(planned.entry.path), planned.final,
                              expect_length=planned.entry.length,
                              expect_mtime_ns=planned.entry.mtime_ns)
                self._tmp_in_use.add(job.tmp)
                planned.pieces.append(job)
                current.append(job)
                current_bytes += planned.entry.length
                if len(current) >= per_shard or current_bytes >= limit:
                    shards.append(_Shard(current, current_bytes))
                    current, current_bytes = [], 0
            if current:
                shards.append(_Shard(current, current_bytes))
        fetches: list[tuple[ObjectFetch, int]] = []
        for planned in ready:
            length = planned.entry.length
            piece = self._piece(planned)
            if length <= piece:
                if not planned.local:
                    d = self.cache.dir_for(planned.entry.path)
                    fetch = ObjectFetch(planned.src, d.tmp_path(planned.entry.path), planned.final)
                    self._tmp_in_use.add(fetch.tmp)
                    planned.pieces.append(fetch)
                    fetches.append((fetch, length))
                continue
            for offset in range(0, length, piece):
                span = min(piece, length - offset)
                if planned.local:
                    job = LocalCopy(planned.src, planned.tmp, "", offset, span)
                    planned.pieces.append(job)
                    shards.append(_Shard([job], span))
                else:
                    fetch = ObjectFetch(planned.src, planned.tmp, "", offset, span,
                                     planned.version)
                    planned.pieces.append(fetch)
                    if piece:
                        shards.append(_Shard([fetch], span))
                    else:
                        fetches.append((fetch, span))
        if fetches and piece:
            # Throttled: shards of about a piece each, paid for one by one.
            current_fetches: list[PoolWork] = []
            current_bytes = 0
            for fetch, nbytes in fetches:
                current_fetches.append(fetch)
                current_bytes += nbytes
                if current_bytes >= piece:
                    shards.append(_Shard(current_fetches, current_bytes))
                    current_fetches, current_bytes = [], 0
            if current_fetches:
                shards.append(_Shard(current_fetches, current_bytes))
        elif fetches:
            # Objects are latency-bound: spread them evenly, every process keeps many
            # requests in flight whatever their sizes.
            count = min(self.pool_size, len(fetches))
            for i in range(count):
                part = fetches[i::count]
                shards.append(_Shard([f for f, _ in part], sum(n for _, n in part)))
        return shards

    def _piece(self, planned: _PlannedFile) -> int:
        """Largest piece of a file copied as one: a partition, or one GET of an object."""
        return self.partition_size if planned.local else self.ufs_settings.read_size

    def _head(self, planned: _PlannedFile) -> CopyOutcome | None:
        """Blocking: a large object's current ETag, which its ranges are pinned to."""
        try:
            info = ufs_for(planned.src, self.ufs_settings).stat(planned.src)
        except UfsError as exc:
            return CopyOutcome(False, reason=exc.reason, message=str(exc))
        if info.length != planned.entry.length:
            return CopyOutcome(False, reason="UFS_CHANGED", message=(
                f"{planned.src} is {info.length} bytes, not the {planned.entry.length} "
                "listed; it changed since the listing"))
        planned.version = info.version
        return None

    def _pacer(self, job_id: str, rate: int) -> Pacer:
        pacer = self._pacers.get(job_id)
        if pacer is None:
            pacer = self._pacers[job_id] = Pacer(rate)
        pacer.rate = rate
        pacer.users += 1
        return pacer

    def _done_with_pacer(self, job_id: str, pacer: Pacer) -> None:
        pacer.users -= 1
        if not pacer.users:
            self._pacers.pop(job_id, None)

    async def _copy(
        self, batch: TaskBatch, ready: list[_PlannedFile], results: dict[str, FileResult]
    ) -> dict[PoolWork, CopyOutcome]:
        large = [p for p in ready if p.entry.length > self._piece(p)]
        outcomes: dict[PoolWork, CopyOutcome] = {}
        failed: set[str] = set()
        for planned in large:
            planned.tmp = self.cache.dir_for(planned.entry.path).tmp_path(planned.entry.path)
            self._tmp_in_use.add(planned.tmp)
            if not planned.local:
                problem = await trio.to_thread.run_sync(self._head, planned)
                if problem is not None:
                    results[planned.entry.path] = FileResult(
                        planned.entry.path, FileStatus.FAILED, 0, Reason(problem.reason),
                        problem.message)
                    failed.add(planned.entry.path)
                    continue
            try:
                await trio.to_thread.run_sync(preallocate, planned.tmp, planned.entry.length)
            except OSError as exc:
                results[planned.entry.path] = FileResult(
                    planned.entry.path, FileStatus.FAILED, 0, Reason(reason_for(exc)),
                    f"cache file {planned.tmp}: {exc.strerror} (caching {planned.src})")
                failed.add(planned.entry.path)
        rate = batch.options.bandwidth
        piece = piece_size(rate, self.partition_size) if rate else 0
        shards = self._plan_shards([p for p in ready if p.entry.path not in failed], piece)
        pacer = self._pacer(batch.job_id, rate) if rate else None
        # Shards start as they get a turn, not all at once: a huge file's thousands of
        # partitions are never thousands of waiting tasks.
        running = trio.Semaphore(2 * self.pool_size)

        async def run_shard(shard: _Shard) -> None:
            try:
                if pacer is not None and len(shard.work) == 1 and not shard.work[0].final \
                        and shard.nbytes > piece:
                    done = [await self._run_range_in_pieces(batch.job_id, shard.work[0], piece,
                                                            pacer)]
                else:
                    if pacer is not None:
                        await pacer.pay(shard.nbytes)
                    done = await self._run_work(batch.job_id, shard.work)
            except trio_parallel.BrokenWorkerError as exc:
                self._sweep_tmp = True
                shared = {j.final for j in shard.work if self._writing[j.final] > 1}
                await trio.to_thread.run_sync(self._discard_broken, shard.work, shared)
                done = [_pool_died(exc) for _ in shard.work]
            finally:
                running.release()
            outcomes.update(zip(shard.work, done, strict=True))

        try:
            async with trio.open_nursery() as nursery:
                for shard in shards:
                    await running.acquire()
                    nursery.start_soon(run_shard, shard)
        finally:
            if pacer is not None:
                self._done_with_pacer(batch.job_id, pacer)
        return outcomes

    async def _run_work(self, job_id: str, jobs: list[PoolWork]) -> list[CopyOutcome]:
        if isinstance(jobs[0], ObjectFetch):
            fetches = [j for j in jobs if isinstance(j, ObjectFetch)]
            return await self._run_in_pool(job_id, fetch_shard, fetches, self.ufs_settings)
        copies = [j for j in jobs if isinstance(j, LocalCopy)]
        return await self._run_in_pool(job_id, copy_shard, copies)

    async def _run_range_in_pieces(self, job_id: str, job: PoolWork, piece: int,
                                   pacer: Pacer) -> CopyOutcome:
        """A throttled job's partition, a paid-for piece at a time."""
        end = job.offset + job.length
        copied = 0
        last = CopyOutcome(True)
        for offset in range(job.offset, end, piece):
            part = replace(job, offset=offset, length=min(piece, end - offset))
            await pacer.pay(part.length)
            [last] = await self._run_work(job_id, [part])
            if not last.ok:
                return last
            copied += last.bytes
        return replace(last, bytes=copied)

    def _discard_broken(self, jobs: list[PoolWork], shared: set[str]) -> None:
        """Blocking: after a pool process died mid-shard, remove what its whole-file jobs
        may have left: the tmp file, and a file renamed into data/ but never indexed
        (unless another load in flight writes the same path: ``shared``). Ranges share
        their file's tmp, which the file's failure removes."""
        for job in jobs:
            if not job.final:
                continue
            _unlink_quiet(job.tmp)
            uri = job.uri if isinstance(job, ObjectFetch) else "file://" + job.src
            if job.final not in shared and os.path.lexists(job.final) \
                    and self.cache.dir_for(uri).lookup(uri) is None:
                _unlink_quiet(job.final)

    async def _commit(
        self,
        job_id: str,
        ready: list[_PlannedFile],
        outcomes: dict[PoolWork, CopyOutcome],
        results: dict[str, FileResult],
    ) -> None:
        commits: dict[int, list[tuple[str, IndexEntry, int]]] = {}
        finished = await self._finish_all_large(ready, outcomes, results)
        for planned in ready:
            path = planned.entry.path
            if path in results:
                continue
            done = [outcomes[j] for j in planned.pieces]
            failed = next((o for o in done if not o.ok), None)
            entry_mtime = done[0].mtime_ns if done else 0
            version = done[0].version if done else ""
            checksum = done[0].checksum if done else ""
            if failed is None and planned.tmp:
                failed = finished[path]
                entry_mtime, version = planned.entry.mtime_ns, planned.version
                checksum = planned.checksum
            if failed is not None:
                if planned.tmp:
                    await trio.to_thread.run_sync(_unlink_quiet, planned.tmp)
                results[path] = FileResult(path, FileStatus.FAILED, 0, Reason(failed.reason),
                                           failed.message)
                self.stats.files_failed += 1
                continue
            length = sum(o.bytes for o in done)
            index = self.cache.dirs.index(self.cache.dir_for(path))
            reserved = planned.reserved if self.cache.dirs[index].capacity else 0
            commits.setdefault(index, []).append(
                (path, IndexEntry(length, entry_mtime, job_id, version, checksum=checksum),
                 reserved)
            )
            results[path] = FileResult(path, FileStatus.OK, length)
            self.stats.files_loaded += 1
            self.stats.bytes_loaded += length
        # The files are in data/ already: the index must learn about them even if the
        # task is being cancelled, or they would hold space outside the accounting.
        with trio.CancelScope(shield=True):
            for index, entries in commits.items():
                await trio.to_thread.run_sync(
                    self.cache.dirs[index].commit, entries, limiter=self.cache.limiter
                )
        for planned in ready:
            if planned.entry.path in results and results[planned.entry.path].status is (
                FileStatus.OK
            ):
                planned.reserved = 0  # the commit turned the reservation into used space

    async def _finish_all_large(
        self, ready: list[_PlannedFile], outcomes: dict[PoolWork, CopyOutcome],
        results: dict[str, FileResult],
    ) -> dict[str, CopyOutcome | None]:
        """Publish the large files whose ranges all succeeded, a pool's worth at a time:
        each is read back whole for its checksum, which is CPU and I/O to spread."""
        finished: dict[str, CopyOutcome | None] = {}
        limiter = trio.CapacityLimiter(self.pool_size)

        async def finish(planned: _PlannedFile) -> None:
            finished[planned.entry.path] = await trio.to_thread.run_sync(
                self._finish_large, planned, limiter=limiter)

        async with trio.open_nursery() as nursery:
            for planned in ready:
                if (planned.tmp and planned.entry.path not in results
                        and all(outcomes[j].ok for j in planned.pieces)):
                    nursery.start_soon(finish, planned)
        return finished

    @staticmethod
    def _finish_large(planned: _PlannedFile) -> CopyOutcome | None:
        """All ranges of a large file are written: check the source, read the file back
        for its checksum (and an object's MD5 against a single-part ETag), publish it.

        An object needs no other check: every range was pinned to its ETag.
        """
        if planned.local:
            try:
                info = os.stat(planned.src)
            except OSError as exc:
                return CopyOutcome(False, reason=reason_for(exc),
                                   message=f"{planned.src}: {exc.strerror}")
            if (info.st_size != planned.entry.length
                    or info.st_mtime_ns != planned.entry.mtime_ns):
                return CopyOutcome(False, reason="UFS_CHANGED",
                                   message=f"{planned.src} changed while it was loaded")
        try:
            planned.checksum, mismatch = read_back(planned.tmp, planned.entry.length,
                                                   "" if planned.local else planned.version,
                                                   planned.src)
        except OSError as exc:
            return CopyOutcome(False, reason=reason_for(exc), message=(
                f"cache file {planned.tmp}: {exc.strerror} (caching {planned.src})"))
        if mismatch is not None:
            return CopyOutcome(False, reason="IO_ERROR", message=mismatch)
        try:
            make_dirs(os.path.dirname(planned.final), CACHE_DIR_MODE)
            os.rename(planned.tmp, planned.final)
        except OSError as exc:
            return CopyOutcome(False, reason=reason_for(exc), message=(
                f"cache file {planned.final}: {exc.strerror} (publishing {planned.tmp}, "
                f"caching {planned.src})"))
        return None
