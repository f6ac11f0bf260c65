"""LOAD: files into the cache: plan, reserve, copy, commit (and ``--metadata-only``).

Each file is resolved once: its UFS (local or an object store), its cache path. The
planner (``plan.py``) turns the files into shards for the pool; a large file is
preallocated in ``tmp/`` and each of its ranges is written in place at its offset; a
large object (larger than one GET's read size, ``UfsSettings.read_size``) is first
HEADed for the ETag its ranges are pinned to. Index entries for a batch are written in
one WriteBatch.

A job with ``--bandwidth`` is paced here, in the trio parent, between small shards
(``slots.Pacer``): a throttled job never holds a pool process while it waits for its
rate.

A pool process that dies mid-shard (killed, out of memory) fails that shard's files
(``IO_ERROR``, retried by the coordinator); its tmp files are removed at once, and the
next task sweeps ``tmp/`` of anything no task in flight owns (``sweep_tmp``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import structlog
import trio
import trio_parallel

from alluxiojob.core.reasons import Reason
from alluxiojob.core.rows import FileEntry, FileResult, FileStatus
from alluxiojob.protocol.codec import TaskBatch
from alluxiojob.ufs import ufs_for
from alluxiojob.ufs.base import UfsError
from alluxiojob.ufs.local import make_dirs, reason_for
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.ufs.uri import parse_uri
from alluxiojob.worker.cache import Cache, IndexEntry, MetadataRecord
from alluxiojob.worker.checksum import read_back
from alluxiojob.worker.copier import CACHE_DIR_MODE, CopyOutcome, LocalCopy, preallocate
from alluxiojob.worker.fetch import ObjectFetch, fetch_shard
from alluxiojob.worker.layout import cache_name
from alluxiojob.worker.pins import Pins
from alluxiojob.worker.plan import PlannedFile, PoolWork, Shard, Sizes, plan_shards
from alluxiojob.worker.pool import Pool, pool_died, unlink_quiet
from alluxiojob.worker.scrub import cached_as_listed, content_intact
from alluxiojob.worker.slots import Pacer, piece_size
from alluxiojob.worker.smallcopy import copy_shard

log = structlog.get_logger("alluxiojob.worker")


class Loader:
    def __init__(self, cache: Cache, pool: Pool, pins: Pins, sizes: Sizes,
                 ufs_settings: UfsSettings, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.pool = pool
        self.pins = pins
        self.sizes = sizes
        self.partition_size = sizes.partition_size
        self.ufs_settings = ufs_settings
        self.stats = pool.stats
        self._clock = clock
        self._pacers: dict[str, Pacer] = {}
        self._tmp_in_use: set[str] = set()  # tmp files of the loads in flight
        self._writing: Counter[str] = Counter()  # data/ paths of the loads in flight
        self.sweep_tmp_wanted = False  # a pool process died: tmp/ may hold orphans

    async def sweep_tmp(self) -> None:
        """Remove tmp files that no load in flight owns (left by a pool process that
        died mid-write)."""
        self.sweep_tmp_wanted = False

        def sweep() -> int:
            removed = 0
            for d in self.cache.dirs:
                with os.scandir(d.tmp) as it:
                    for entry in it:
                        if entry.path not in self._tmp_in_use:
                            unlink_quiet(entry.path)
                            removed += 1
            return removed

        removed = await trio.to_thread.run_sync(sweep)
        if removed:
            log.info("removed tmp files no load owns", files=removed)

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

    def _tmp_for(self, planned: PlannedFile) -> str:
        return self.cache.dirs[planned.dir_index].tmp_path(planned.entry.path)

    async def load(self, batch: TaskBatch) -> list[FileResult]:
        results: dict[str, FileResult] = {}
        todo: list[PlannedFile] = []
        for f in batch.files:
            # The worker's edge: each file's URI is parsed here, once, and its cache
            # name computed once; everything after carries them.
            try:
                uri = parse_uri(f.path)
                src = uri.local_path if uri.local else ufs_for(uri).normalize(uri)
                name = cache_name(f.path)
            except UfsError as exc:
                results[f.path] = FileResult(f.path, FileStatus.FAILED, 0, exc.reason,
                                             str(exc))
                continue
            index = self.cache.dir_index(name.key)
            todo.append(PlannedFile(f, src, self.cache.dirs[index].path_of(name.relpath),
                                    uri.local, key=name.key, dir_index=index))
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

        pinned = self.pins.jobs()
        ready: list[PlannedFile] = []
        try:
            for planned in todo:
                f = planned.entry
                refusal = await self.cache.reserve(self.cache.dirs[planned.dir_index],
                                                   f.length, pinned)
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
                    self.cache.release(self.cache.dirs[planned.dir_index], planned.reserved)
                self._writing[planned.final] -= 1
                if not self._writing[planned.final]:
                    del self._writing[planned.final]
                self._tmp_in_use.discard(planned.tmp)
                for job in planned.pieces:
                    self._tmp_in_use.discard(job.tmp)
        return [results[f.path] for f in batch.files if f.path in results]

    async def _record_metadata(self, batch: TaskBatch, todo: list[PlannedFile],
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

    def _head(self, planned: PlannedFile) -> CopyOutcome | None:
        """Blocking: a large object's current ETag, which its ranges are pinned to."""
        try:
            info = ufs_for(planned.src, self.ufs_settings).stat(planned.src)
        except UfsError as exc:
            return CopyOutcome(False, reason=exc.reason, message=str(exc))
        if info.length != planned.entry.length:
            return CopyOutcome(False, reason=Reason.UFS_CHANGED, message=(
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
        self, batch: TaskBatch, ready: list[PlannedFile], results: dict[str, FileResult]
    ) -> dict[PoolWork, CopyOutcome]:
        large = [p for p in ready if self.sizes.is_large(p)]
        outcomes: dict[PoolWork, CopyOutcome] = {}
        failed: set[str] = set()
        for planned in large:
            planned.tmp = self._tmp_for(planned)
            self._tmp_in_use.add(planned.tmp)
            if not planned.local:
                problem = await trio.to_thread.run_sync(self._head, planned)
                if problem is not None:
                    results[planned.entry.path] = FileResult(
                        planned.entry.path, FileStatus.FAILED, 0, problem.reason or Reason.IO_ERROR,
                        problem.message)
                    failed.add(planned.entry.path)
                    continue
            try:
                await trio.to_thread.run_sync(preallocate, planned.tmp, planned.entry.length)
            except OSError as exc:
                results[planned.entry.path] = FileResult(
                    planned.entry.path, FileStatus.FAILED, 0, reason_for(exc),
                    f"cache file {planned.tmp}: {exc.strerror} (caching {planned.src})")
                failed.add(planned.entry.path)
        rate = batch.options.bandwidth
        piece = piece_size(rate, self.partition_size) if rate else 0
        planned_ok = [p for p in ready if p.entry.path not in failed]
        plan = plan_shards(planned_ok, piece, self.sizes, self._tmp_for)
        self._tmp_in_use |= plan.tmps
        for planned in planned_ok:
            planned.pieces = plan.pieces[planned.entry.path]
        shards = plan.shards
        pacer = self._pacer(batch.job_id, rate) if rate else None
        # Shards start as they get a turn, not all at once: a huge file's thousands of
        # partitions are never thousands of waiting tasks.
        running = trio.Semaphore(2 * self.pool.size)

        async def run_shard(shard: Shard) -> None:
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
                self.sweep_tmp_wanted = True
                shared = {j.final for j in shard.work if self._writing[j.final] > 1}
                await trio.to_thread.run_sync(self._discard_broken, shard.work, shared)
                done = [pool_died(exc) for _ in shard.work]
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
            return await self.pool.run(job_id, fetch_shard, fetches, self.ufs_settings)
        copies = [j for j in jobs if isinstance(j, LocalCopy)]
        return await self.pool.run(job_id, copy_shard, copies)

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
            unlink_quiet(job.tmp)
            uri = job.uri if isinstance(job, ObjectFetch) else "file://" + job.src
            if job.final not in shared and os.path.lexists(job.final) \
                    and self.cache.dir_for(uri).lookup(uri) is None:
                unlink_quiet(job.final)

    async def _commit(
        self,
        job_id: str,
        ready: list[PlannedFile],
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
                    await trio.to_thread.run_sync(unlink_quiet, planned.tmp)
                results[path] = FileResult(path, FileStatus.FAILED, 0,
                                           failed.reason or Reason.IO_ERROR, failed.message)
                self.stats.files_failed += 1
                continue
            length = sum(o.bytes for o in done)
            index = planned.dir_index
            reserved = planned.reserved if self.cache.dirs[index].capacity else 0
            commits.setdefault(index, []).append(
                (planned.key, IndexEntry(length, entry_mtime, job_id, version, checksum=checksum),
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
                    self.cache.dirs[index].commit_keys, entries, limiter=self.cache.limiter
                )
        for planned in ready:
            if planned.entry.path in results and results[planned.entry.path].status is (
                FileStatus.OK
            ):
                planned.reserved = 0  # the commit turned the reservation into used space

    async def _finish_all_large(
        self, ready: list[PlannedFile], outcomes: dict[PoolWork, CopyOutcome],
        results: dict[str, FileResult],
    ) -> dict[str, CopyOutcome | None]:
        """Publish the large files whose ranges all succeeded, a pool's worth at a time:
        each is read back whole for its checksum, which is CPU and I/O to spread."""
        finished: dict[str, CopyOutcome | None] = {}
        limiter = trio.CapacityLimiter(self.pool.size)

        async def finish(planned: PlannedFile) -> None:
            finished[planned.entry.path] = await trio.to_thread.run_sync(
                self._finish_large, planned, limiter=limiter)

        async with trio.open_nursery() as nursery:
            for planned in ready:
                if (planned.tmp and planned.entry.path not in results
                        and all(outcomes[j].ok for j in planned.pieces)):
                    nursery.start_soon(finish, planned)
        return finished

    @staticmethod
    def _finish_large(planned: PlannedFile) -> CopyOutcome | None:
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
                return CopyOutcome(False, reason=Reason.UFS_CHANGED,
                                   message=f"{planned.src} changed while it was loaded")
        try:
            planned.checksum, mismatch = read_back(planned.tmp, planned.entry.length,
                                                   "" if planned.local else planned.version,
                                                   planned.src)
        except OSError as exc:
            return CopyOutcome(False, reason=reason_for(exc), message=(
                f"cache file {planned.tmp}: {exc.strerror} (caching {planned.src})"))
        if mismatch is not None:
            return CopyOutcome(False, reason=Reason.IO_ERROR, message=mismatch)
        try:
            make_dirs(os.path.dirname(planned.final), CACHE_DIR_MODE)
            os.rename(planned.tmp, planned.final)
        except OSError as exc:
            return CopyOutcome(False, reason=reason_for(exc), message=(
                f"cache file {planned.final}: {exc.strerror} (publishing {planned.tmp}, "
                f"caching {planned.src})"))
        return None
