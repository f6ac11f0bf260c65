"""COPY and MOVE: files from one UFS place to another, through the pool.

Local to local is a ``LocalCopy`` into a hidden temp file beside the destination
(``tmpnames``: owned by this worker's run, so a later run sweeps it), renamed into
place; anything with an object store on either side is an ``ObjectTransfer``. Files
are spread evenly over the pool processes, local and remote apart.

A MOVE of a file whose source is gone is done, not failed, when its destination holds
a verified copy (``transfer.moved_before``): the same MOVE ran before and its answer
was lost, so the coordinator sent it again.
"""

from __future__ import annotations

import math
import os

import trio
import trio_parallel

from alluxiojob.core.job import JobType
from alluxiojob.core.reasons import Reason
from alluxiojob.core.rows import FileEntry, FileResult, FileStatus
from alluxiojob.protocol.codec import TaskBatch
from alluxiojob.ufs import ufs_for
from alluxiojob.ufs.base import UfsError
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.ufs.tmpnames import TmpName, TmpOwner, retarget
from alluxiojob.ufs.uploads import UploadJournal
from alluxiojob.ufs.uri import parse_uri
from alluxiojob.worker.copier import CopyOutcome, LocalCopy, transfer_shard
from alluxiojob.worker.layout import cache_relpath
from alluxiojob.worker.pool import Pool, pool_died, unlink_quiet
from alluxiojob.worker.transfer import ObjectTransfer, moved_before, transfer_objects_shard

_Job = tuple[FileEntry, LocalCopy | ObjectTransfer]


def _plan(files: tuple[FileEntry, ...], tmp_owner: TmpOwner, pool_size: int,
          results: dict[str, FileResult]) -> list[list[_Job]]:
    jobs: list[_Job] = []
    for f in files:
        if not f.dst:
            results[f.path] = FileResult(f.path, FileStatus.FAILED, 0, Reason.INVALID_PATH,
                                         "no destination given")
            continue
        source, destination = parse_uri(f.path), parse_uri(f.dst)
        try:
            cache_relpath(f.dst)  # rejects '..' and empty components
            if source.local and destination.local:
                src, dst = source.local_path, destination.local_path
                tmp = TmpName.new(tmp_owner).beside(dst)
                jobs.append((f, LocalCopy(src, tmp, dst)))
            else:
                ufs_for(source).normalize(source)
                ufs_for(destination).normalize(destination)
                jobs.append((f, ObjectTransfer(f.path, f.dst)))
        except UfsError as exc:
            results[f.path] = FileResult(f.path, FileStatus.FAILED, 0, exc.reason,
                                         str(exc))
    local = [pair for pair in jobs if isinstance(pair[1], LocalCopy)]
    remote = [pair for pair in jobs if not isinstance(pair[1], LocalCopy)]
    shards: list[list[_Job]] = []
    for group in (local, remote):
        per_shard = max(1, math.ceil(len(group) / max(1, min(pool_size, len(group) or 1))))
        shards += [group[i:i + per_shard] for i in range(0, len(group), per_shard)]
    return shards


async def transfer(batch: TaskBatch, pool: Pool, tmp_owner: TmpOwner,
                   uploads: UploadJournal, settings: UfsSettings) -> list[FileResult]:
    """Run a COPY or MOVE task; each file's result, in the task's order."""
    results: dict[str, FileResult] = {}
    shards = _plan(batch.files, tmp_owner, pool.size, results)
    move = batch.op is JobType.MOVE
    overwrite = batch.options.overwrite

    async def run_shard(shard: list[_Job]) -> None:
        try:
            if isinstance(shard[0][1], LocalCopy):
                done = await pool.run(batch.job_id, transfer_shard,
                                      [job for _, job in shard], move, overwrite, tmp_owner)
            else:
                done = await pool.run(batch.job_id, transfer_objects_shard,
                                      [job for _, job in shard], move, overwrite, settings,
                                      tmp_owner, uploads)
        except trio_parallel.BrokenWorkerError as exc:
            await trio.to_thread.run_sync(_discard_tmps, [job for _, job in shard])
            done = [pool_died(exc) for _ in shard]
        for (entry, _job), outcome in zip(shard, done, strict=True):
            if move and outcome.reason in (Reason.UFS_NOT_FOUND, Reason.EXISTS):
                moved = await trio.to_thread.run_sync(_moved_before, entry, settings)
                if moved is not None:
                    outcome = moved  # noqa: PLW2901 (the rerun of a MOVE that was done)
            if outcome.ok:
                results[entry.path] = FileResult(entry.path, FileStatus.OK, outcome.bytes)
            elif outcome.reason is Reason.EXISTS:
                results[entry.path] = FileResult(entry.path, FileStatus.SKIPPED,
                                                 entry.length, None, outcome.message)
            else:
                results[entry.path] = FileResult(entry.path, FileStatus.FAILED, 0,
                                                 outcome.reason or Reason.IO_ERROR, outcome.message)

    async with trio.open_nursery() as nursery:
        for shard in shards:
            nursery.start_soon(run_shard, shard)
    return [results[f.path] for f in batch.files if f.path in results]


def _moved_before(entry: FileEntry, settings: UfsSettings) -> CopyOutcome | None:
    return moved_before(entry.path, entry.dst, entry.length, entry.version, settings)


def _discard_tmps(jobs: list[LocalCopy | ObjectTransfer]) -> None:
    """Blocking: the hidden file a dead pool process may have left beside a local
    destination (or inside it, when the destination is a directory)."""
    for job in jobs:
        if isinstance(job, LocalCopy):
            unlink_quiet(job.tmp)
            inside = os.path.join(job.final, os.path.basename(job.src))
            unlink_quiet(retarget(job.tmp, inside))
