"""Turns one TaskBatch into file copies on the process pool and index updates.

Each file is resolved once: its UFS (local or an object store), its cache path. Local
small files are grouped into shards of at most ``partition_size`` bytes (and split
further so every pool process gets work); a file larger than ``partition_size`` is
preallocated in ``tmp/`` and each of its partitions is a job of its own, written in
place at its offset. Objects are split evenly over the pool processes, each of which
keeps many requests in flight (``fetch.py``); an object larger than one GET's read size
(``UfsSettings.read_size``, not the partition size) is first HEADed for the ETag its
ranges are pinned to. Index entries for a batch are written in one WriteBatch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

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
from alluxiojob.ufs.local import reason_for, to_local_path
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.worker.cache import Cache, IndexEntry, cache_relpath
from alluxiojob.worker.copier import (
    CopyJob,
    CopyOutcome,
    copy_shard,
    preallocate,
    transfer_shard,
)
from alluxiojob.worker.fetch import FetchJob, fetch_shard
from alluxiojob.worker.transfer import TransferJob, transfer_objects_shard

Job = CopyJob | FetchJob

log = structlog.get_logger("alluxiojob.worker")



@dataclass
class _Planned:
    entry: FileEntry
    src: str  # a local path, or the object's URI
    final: str
    local: bool
    jobs: list[Job] = field(default_factory=list)
    tmp: str = ""  # large files: the shared tmp file
    version: str = ""  # large objects: the ETag their ranges are pinned to
    reserved: int = 0


@dataclass
class ExecutorStats:
    unfinished_tasks: int = 0
    active_shards: int = 0
    files_loaded: int = 0
    bytes_loaded: int = 0
    files_failed: int = 0
    files_freed: int = 0


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
        self.limiter = trio.CapacityLimiter(pool_size)
        self.stats = ExecutorStats()
        self._clock = clock
        self._job_seen: dict[str, float] = {}
        self._bandwidth_locks: dict[str, trio.Lock] = {}

    async def warm_up(self) -> None:
        """Start every pool process now rather than during the first task."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.pool_size):
                nursery.start_soon(
                    lambda: trio_parallel.run_sync(os.getpid, limiter=self.limiter))

    def pinned_jobs(self) -> set[str]:
        cutoff = self._clock() - self.pin_seconds
        for job_id in [j for j, seen in self._job_seen.items() if seen < cutoff]:
            del self._job_seen[job_id]
        return set(self._job_seen)

    async def run(self, batch: TaskBatch) -> TaskResult:
        self.stats.unfinished_tasks += 1
        self._job_seen[batch.job_id] = self._clock()
        try:
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
        jobs: list[tuple[FileEntry, CopyJob | TransferJob]] = []
        for f in batch.files:
            if not f.dst:
                results[f.path] = FileResult(f.path, FileStatus.FAILED, 0, Reason.INVALID_PATH,
                                             "no destination given")
                continue
            try:
                cache_relpath(f.dst)  # rejects '..' and empty components
                if is_local(f.path) and is_local(f.dst):
                    src, dst = to_local_path(f.path), to_local_path(f.dst)
                    head, tail = os.path.split(dst)
                    tmp = os.path.join(head,
                                       f".{tail}.alluxiojob-{os.getpid()}-{batch.task_id}")
                    jobs.append((f, CopyJob(src, tmp, dst)))
                else:
                    ufs_for(f.path).normalize(f.path)
                    ufs_for(f.dst).normalize(f.dst)
                    jobs.append((f, TransferJob(f.path, f.dst)))
            except UfsError as exc:
                results[f.path] = FileResult(f.path, FileStatus.FAILED, 0, Reason(exc.reason),
                                             str(exc))
        local = [pair for pair in jobs if isinstance(pair[1], CopyJob)]
        remote = [pair for pair in jobs if not isinstance(pair[1], CopyJob)]
        shards: list[list[tuple[FileEntry, CopyJob | TransferJob]]] = []
        for group in (local, remote):
            per_shard = max(1, math.ceil(len(group) / max(1, min(self.pool_size,
                                                                  len(group) or 1))))
            shards += [group[i:i + per_shard] for i in range(0, len(group), per_shard)]
        move = batch.op is TaskOp.MOVE
        overwrite = batch.options.overwrite

        async def run_shard(shard: list[tuple[FileEntry, CopyJob | TransferJob]]) -> None:
            self.stats.active_shards += 1
            try:
                if isinstance(shard[0][1], CopyJob):
                    done = await trio_parallel.run_sync(
                        transfer_shard, [job for _, job in shard], move, overwrite,
                        kill_on_cancel=True, limiter=self.limiter)
                else:
                    done = await trio_parallel.run_sync(
                        transfer_objects_shard, [job for _, job in shard], move, overwrite,
                        self.ufs_settings, kill_on_cancel=True, limiter=self.limiter)
            except trio_parallel.BrokenWorkerError as exc:
                done = [CopyOutcome(False, reason="IO_ERROR", message=f"pool process died: {exc}")
                        for _ in shard]
            finally:
                self.stats.active_shards -= 1
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

    # ------------------------------------------------------------------ LOAD
    def _check_cached(self, files: list[FileEntry]) -> set[str]:
        """Blocking: which files are fully cached with the listed length and mtime."""
        hits: set[str] = set()
        for f in files:
            d = self.cache.dir_for(f.path)
            entry = d.lookup(f.path)
            if entry is None or not entry.matches(f.length, f.mtime_ns, f.version):
                continue
            try:
                if os.stat(d.data_path(f.path)).st_size == f.length:
                    hits.add(f.path)
                    d.touch(f.path)
            except OSError:
                continue
        return hits

    async def _load(self, batch: TaskBatch) -> list[FileResult]:
        results: dict[str, FileResult] = {}
        todo: list[_Planned] = []
        candidates: list[FileEntry] = []
        for f in batch.files:
            try:
                local = is_local(f.path)
                src = to_local_path(f.path) if local else ufs_for(f.path).normalize(f.path)
                final = self.cache.dir_for(f.path).data_path(f.path)
            except UfsError as exc:
                results[f.path] = FileResult(f.path, FileStatus.FAILED, 0, Reason(exc.reason),
                                             str(exc))
                continue
            candidates.append(f)
            todo.append(_Planned(f, src, final, local))
        if batch.options.skip_if_exists and candidates:
            hits = await trio.to_thread.run_sync(
                self._check_cached, candidates, limiter=self.cache.limiter
            )
            for f in candidates:
                if f.path in hits:
                    results[f.path] = FileResult(f.path, FileStatus.SKIPPED, f.length)
            todo = [p for p in todo if p.entry.path not in hits]

        pinned = self.pinned_jobs()
        ready: list[_Planned] = []
        for planned in todo:
            f = planned.entry
            if await self.cache.reserve(f.path, f.length, pinned):
                planned.reserved = f.length
                ready.append(planned)
            else:
                d = self.cache.dir_for(f.path)
                results[f.path] = FileResult(
                    f.path, FileStatus.FAILED, 0, Reason.CACHE_FULL,
                    f"no room for {f.length} bytes in {d.root}: {d.used} of {d.capacity} "
                    "bytes used by files that running jobs still need",
                )
        try:
            outcomes = await self._copy(batch, ready, results)
            await self._commit(batch.job_id, ready, outcomes, results)
        finally:
            for planned in ready:
                if planned.reserved:
                    self.cache.release(planned.entry.path, planned.reserved)
        return [results[f.path] for f in batch.files if f.path in results]

    def _plan_shards(self, ready: list[_Planned]) -> list[list[Job]]:
        shards: list[list[Job]] = []
        small = [p for p in ready if p.local and p.entry.length <= self.partition_size]
        if small:
            per_shard = max(1, math.ceil(len(small) / max(1, min(self.pool_size, len(small)))))
            current: list[Job] = []
            current_bytes = 0
            for planned in small:
                d = self.cache.dir_for(planned.entry.path)
                job = CopyJob(planned.src, d.tmp_path(planned.entry.path), planned.final,
                              expect_length=planned.entry.length,
                              expect_mtime_ns=planned.entry.mtime_ns)
                planned.jobs.append(job)
                current.append(job)
                current_bytes += planned.entry.length
                if len(current) >= per_shard or current_bytes >= self.partition_size:
                    shards.append(current)
                    current, current_bytes = [], 0
            if current:
                shards.append(current)
        fetches: list[Job] = []
        for planned in ready:
            length = planned.entry.length
            piece = self._piece(planned)
            if length <= piece:
                if not planned.local:
                    d = self.cache.dir_for(planned.entry.path)
                    fetch = FetchJob(planned.src, d.tmp_path(planned.entry.path), planned.final)
                    planned.jobs.append(fetch)
                    fetches.append(fetch)
                continue
            for offset in range(0, length, piece):
                span = min(piece, length - offset)
                if planned.local:
                    job = CopyJob(planned.src, planned.tmp, "", offset, span)
                    planned.jobs.append(job)
                    shards.append([job])
                else:
                    fetch = FetchJob(planned.src, planned.tmp, "", offset, span,
                                     planned.version)
                    planned.jobs.append(fetch)
                    fetches.append(fetch)
        if fetches:
            # Objects are latency-bound: spread them evenly, every process keeps many
            # requests in flight whatever their sizes.
            count = min(self.pool_size, len(fetches))
            shards += [fetches[i::count] for i in range(count)]
        return shards

    def _piece(self, planned: _Planned) -> int:
        """Largest piece of a file copied as one: a partition, or one GET of an object."""
        return self.partition_size if planned.local else self.ufs_settings.read_size

    def _head(self, planned: _Planned) -> CopyOutcome | None:
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

    async def _copy(
        self, batch: TaskBatch, ready: list[_Planned], results: dict[str, FileResult]
    ) -> dict[Job, CopyOutcome]:
        large = [p for p in ready if p.entry.length > self._piece(p)]
        outcomes: dict[Job, CopyOutcome] = {}
        failed: set[str] = set()
        for planned in large:
            planned.tmp = self.cache.dir_for(planned.entry.path).tmp_path(planned.entry.path)
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
                    f"{planned.tmp}: {exc.strerror}")
                failed.add(planned.entry.path)
        shards = self._plan_shards([p for p in ready if p.entry.path not in failed])
        rate = batch.options.bandwidth
        lock = self._bandwidth_locks.setdefault(batch.job_id, trio.Lock()) if rate else None

        async def run_shard(jobs: list[Job]) -> None:
            self.stats.active_shards += 1
            try:
                if lock is not None:
                    async with lock:
                        done = await self._run_jobs(jobs, rate)
                else:
                    done = await self._run_jobs(jobs, rate)
            except trio_parallel.BrokenWorkerError as exc:
                done = [CopyOutcome(False, reason="IO_ERROR", message=f"pool process died: {exc}")
                        for _ in jobs]
            finally:
                self.stats.active_shards -= 1
            outcomes.update(zip(jobs, done, strict=True))

        async with trio.open_nursery() as nursery:
            for shard in shards:
                nursery.start_soon(run_shard, shard)
        return outcomes

    async def _run_jobs(self, jobs: list[Job], rate: int) -> list[CopyOutcome]:
        if isinstance(jobs[0], FetchJob):
            fetches = [j for j in jobs if isinstance(j, FetchJob)]
            done: list[CopyOutcome] = await trio_parallel.run_sync(
                fetch_shard, fetches, self.ufs_settings, rate, kill_on_cancel=True,
                limiter=self.limiter)
            return done
        copies = [j for j in jobs if isinstance(j, CopyJob)]
        done = await trio_parallel.run_sync(copy_shard, copies, rate, kill_on_cancel=True,
                                            limiter=self.limiter)
        return done

    async def _commit(
        self,
        job_id: str,
        ready: list[_Planned],
        outcomes: dict[Job, CopyOutcome],
        results: dict[str, FileResult],
    ) -> None:
        now = self._clock()
        commits: dict[int, list[tuple[str, IndexEntry, int]]] = {}
        for planned in ready:
            path = planned.entry.path
            if path in results:
                continue
            done = [outcomes[j] for j in planned.jobs]
            failed = next((o for o in done if not o.ok), None)
            entry_mtime = done[0].mtime_ns if done else 0
            version = done[0].version if done else ""
            if failed is None and planned.tmp:
                failed = await trio.to_thread.run_sync(self._finish_large, planned)
                entry_mtime, version = planned.entry.mtime_ns, planned.version
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
                (path, IndexEntry(length, entry_mtime, now, job_id, version), reserved)
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

    @staticmethod
    def _finish_large(planned: _Planned) -> CopyOutcome | None:
        """All ranges of a large file are written: check the source, then publish it.

        An object needs no check here: every range was pinned to its ETag.
        """
        if planned.local:
            try:
                info = os.stat(planned.src)
            except OSError as exc:
                return CopyOutcome(False, reason=reason_for(exc), message=str(exc))
            if (info.st_size != planned.entry.length
                    or info.st_mtime_ns != planned.entry.mtime_ns):
                return CopyOutcome(False, reason="UFS_CHANGED",
                                   message=f"{planned.src} changed while it was loaded")
        try:
            os.makedirs(os.path.dirname(planned.final), exist_ok=True)
            os.rename(planned.tmp, planned.final)
        except OSError as exc:
            return CopyOutcome(False, reason=reason_for(exc), message=str(exc))
        return None


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
