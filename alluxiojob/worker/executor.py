"""Turns one TaskBatch into file results: checks the allowlist, then dispatches by
operation. The rooms of the data path:

- ``plan.py``: the pure planner (shards, pieces, tmp names);
- ``pool.py``: the process pool, shared fairly between jobs;
- ``pins.py``: the jobs whose files are not evicted;
- ``load.py``: LOAD (reserve, copy, commit; ``--metadata-only``) and the tmp sweep;
- ``free.py``: FREE;
- ``copymove.py``: COPY and MOVE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import structlog
import trio

from alluxiojob.core.job import JobType
from alluxiojob.core.reasons import Reason
from alluxiojob.core.rows import FileResult, FileStatus
from alluxiojob.protocol.codec import TaskBatch, TaskResult
from alluxiojob.security.paths import PathAllowlist
from alluxiojob.ufs.base import UfsError
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.ufs.tmpnames import TmpOwner
from alluxiojob.ufs.uploads import UploadJournal
from alluxiojob.worker.cache import Cache
from alluxiojob.worker.copymove import transfer
from alluxiojob.worker.free import free
from alluxiojob.worker.load import Loader
from alluxiojob.worker.pins import Pins
from alluxiojob.worker.plan import Sizes
from alluxiojob.worker.pool import ExecutorStats, Pool

log = structlog.get_logger("alluxiojob.worker")

__all__ = ["ExecutorStats", "TaskExecutor"]


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
        self.allowlist = allowlist or PathAllowlist(())
        self.cache = cache
        self.partition_size = partition_size
        self.pool_size = pool_size
        self.stats = ExecutorStats()
        self.pool = Pool(pool_size, self.stats)
        self.pins = Pins(cache, pin_seconds, clock)
        self.loader = Loader(cache, self.pool, self.pins,
                             Sizes(partition_size, self.ufs_settings.read_size, pool_size),
                             self.ufs_settings, clock)
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
        await self.pool.warm_up()

    async def sweep_uploads(self) -> None:
        """Abort the multipart uploads earlier runs of this worker left unfinished."""
        def sweep() -> int:
            self.uploads.directory.mkdir(mode=0o700, exist_ok=True)
            return self.uploads.sweep(self.ufs_settings, self._started)

        aborted = await trio.to_thread.run_sync(sweep)
        if aborted:
            log.info("aborted multipart uploads a killed run left", uploads=aborted)

    async def restore_pins(self) -> int:
        """Pins saved before a restart; returns how many are still in force."""
        return await self.pins.restore()

    def pinned_jobs(self) -> set[str]:
        return self.pins.jobs()

    def writing(self, data_path: str) -> bool:
        """Is a load in flight writing this ``data/`` path (a scrub leaves it alone)?"""
        return self.loader.writing(data_path)

    async def run(self, batch: TaskBatch) -> TaskResult:
        self.stats.unfinished_tasks += 1
        try:
            await self.pins.pin(batch.job_id)
            if self.loader.sweep_tmp_wanted:
                await self.loader.sweep_tmp()
            refused = await self._outside_allowlist(batch)
            if refused:
                batch = replace(batch, files=tuple(f for f in batch.files
                                                   if f.path not in refused))
            results: list[FileResult]
            if not batch.files:
                results = []
            elif batch.op is JobType.FREE:
                results, freed = await free(self.cache, batch.files)
                self.stats.files_freed += freed
            elif batch.op is JobType.LOAD:
                results = await self.loader.load(batch)
            elif batch.op in (JobType.COPY, JobType.MOVE):
                results = await transfer(batch, self.pool, self.tmp_owner, self.uploads,
                                         self.ufs_settings)
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
        if not self.allowlist.enabled or batch.op is JobType.FREE:
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
