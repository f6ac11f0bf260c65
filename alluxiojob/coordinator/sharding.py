"""Sharded jobs: planning a job's shards when it is claimed, and running one shard.

Theory of operation
-------------------
When a coordinator claims a job (``scheduler.py``), ``prepare`` decides whether it runs
sharded. A job that already has shards (resumed, reclaimed, rerun) puts every shard
back in the queue, each keeping its checkpoint and counters. A new job is split if
``alluxio.job.shard.count`` allows it and its path's top level has several entries
(one delimiter listing of an object store, one directory read of a local tree), or,
when the top level is a single directory, the first level below it that has. A
manifest or template job is split into ranges of its positions instead: template
indices by arithmetic; index-file lines and inventory rows (by data file and row) at
cuts placed in one pass over the manifest, which also counts each shard's files (and
bytes), so the job's total is known before its first file is sent
(``core/manifest.py``, ``sources.source_shards``). A job with ``--verify`` or
``--bandwidth``, or one that already ran unsharded, is not split. The split is stored
once, in one transaction fenced by the claim (``store/shards.py``).

After that the job record only waits for its final state. Every coordinator, the
claimer included, claims waiting shards (``alluxio.job.shard.concurrency`` at once)
and runs each in a ``ShardRunner``: a ``JobRunner`` whose walk is bounded to the
shard's range and whose progress, checkpoint and end go to the shard record. Whoever
finishes the last shard writes the job's final state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace

import obstore
import structlog
import trio

from alluxiojob.config import Config, Keys
from alluxiojob.coordinator.membership import Membership
from alluxiojob.coordinator.metrics import CoordinatorMetrics
from alluxiojob.coordinator.runner import JobRunner
from alluxiojob.coordinator.sources import source_shards
from alluxiojob.core.errors import Fenced, describe_error, leaves
from alluxiojob.core.ledger import Decision
from alluxiojob.core.progress import FailureRecord, Progress
from alluxiojob.core.shards import ahead_cut, split, top_level_bound
from alluxiojob.core.text import printable
from alluxiojob.store.jobs import JobStore, OwnedJob
from alluxiojob.store.shards import MAX_SHARDS, OwnedShard, ShardStore
from alluxiojob.ufs import is_local, ufs_for
from alluxiojob.ufs.base import UfsFile
from alluxiojob.ufs.local import to_local_path
from alluxiojob.ufs.objects import ObjectStoreUfs
from alluxiojob.ufs.settings import UfsSettings

log = structlog.get_logger("alluxiojob.coordinator")

AUTO_SHARDS = 8  # shards of a job when alluxio.job.shard.count is 0 (choose)
TOP_LEVEL_MAX = 100_000  # top-level entries read to place the boundaries
DESCENT_MAX = 8  # single directories descended into to find entries to cut between


def outcome(total: Progress) -> str:
    """Why a sharded job failed, from its shards' summed progress, or "" (success)."""
    failed = total.committed.files_failed
    return f"{failed} files failed; see --progress --file-status FAILURE" if failed else ""


def target_shards(config: Config) -> int:
    wanted = config[Keys.JOB_SHARD_COUNT]
    return min(MAX_SHARDS, AUTO_SHARDS if wanted == 0 else wanted)


def top_level(path: str, config: Config) -> list[tuple[str, ...]]:
    """The bounds of the entries under ``path`` to cut shards between (blocking: run in a
    thread): its top level, or, while that holds a single directory (or common prefix)
    and nothing else, the level below it, down to ``DESCENT_MAX`` levels. A bucket that
    holds one ``dataset/`` prefix is thus split inside it, not run whole."""
    ufs = ufs_for(path, UfsSettings.from_config(config))
    if isinstance(ufs, ObjectStoreUfs):
        store, key = ufs._locate(path)
        base = key.rstrip("/") + "/" if key else ""
        under = ""  # the single prefixes descended into, relative to the job's path
        for _ in range(DESCENT_MAX):
            listed = obstore.list_with_delimiter(store, prefix=base + under or None)
            skip = len(base)
            prefixes = [p[skip:] + "/" for p in listed["common_prefixes"]]
            objects = [o["path"][skip:] for o in listed["objects"]]
            objects = [name for name in objects if name and name != under]  # its marker
            if len(prefixes) == 1 and not objects:
                under = prefixes[0]
                continue
            names = prefixes + objects
            return [top_level_bound(n, object_store=True) for n in names[:TOP_LEVEL_MAX]]
        return []
    root = to_local_path(path)
    parents: tuple[str, ...] = ()
    for _ in range(DESCENT_MAX):
        folder = os.path.join(root, *parents)
        if not os.path.isdir(folder):
            return []
        with os.scandir(folder) as entries:
            found = sorted((entry.name, entry.is_dir(follow_symlinks=False))
                           for entry in entries)
        if len(found) == 1 and found[0][1]:
            parents += (found[0][0],)
            continue
        return [(*parents, *top_level_bound(name, object_store=False))
                for name, _ in found[:TOP_LEVEL_MAX]]
    return []


async def prepare(owned: OwnedJob, store: JobStore, shards: ShardStore,
                  config: Config) -> bool:
    """Called on claiming ``owned``: True if it runs as shards (now queued)."""
    requeued = await shards.requeue_all(owned)
    if requeued:
        log.info("job resumes as shards", job_id=owned.job.id, shards=requeued)
        return True
    job = owned.job
    target = target_shards(config)
    # --verify passes and a --bandwidth limit are the whole job's: such jobs run whole.
    stored = await store.get_progress(job.id)
    if target <= 1 or job.options.verify or job.options.bandwidth or stored.checkpoint:
        return False
    totals: list[tuple[int, int]] = []
    try:
        if job.options.source:  # a manifest or template: ranges of lines or indices
            parts = await trio.to_thread.run_sync(source_shards, job, config, target)
            ranges = [(part.after, part.until) for part in parts]
            totals = [(part.files, part.bytes) for part in parts]
        else:
            bounds = await trio.to_thread.run_sync(top_level, job.path, config)
            ranges = split(bounds, target)
    except Exception as exc:  # whatever it is, the job's own listing reports it, as before
        log.info("not sharding the job: its files cannot be read", job_id=job.id,
                 error=describe_error(exc))
        return False
    if len(ranges) <= 1:
        if totals and totals[0][0]:  # counted already: the job's runner need not again
            files, nbytes = totals[0]
            await store.save_progress(owned, replace(stored, files_total=files,
                                                     bytes_total=nbytes))
        return False
    if not await shards.plan(owned, ranges, totals):
        await shards.requeue_all(owned)
    log.info("job split into shards", job_id=job.id, shards=len(ranges))
    return True


class ShardRunner(JobRunner):
    """A ``JobRunner`` over one shard's range, writing to the shard's record.

    A worker cancels a job's tasks by job, for the coordinator that asks. A shard that
    ends on an error of its own (the store failed at its end) therefore cancels nothing
    while ``siblings_running()`` says other shards of its job run here: their tasks
    would fail as CANCELLED. A stop, a fence or a shutdown ends them all alike.
    """

    def __init__(self, owned: OwnedShard, shards: ShardStore, store: JobStore,
                 membership: Membership, config: Config,
                 metrics: CoordinatorMetrics | None = None,
                 siblings_running: Callable[[], bool] = lambda: False) -> None:
        super().__init__(owned.owned_job, store, membership, config, metrics)
        self.owned_shard = owned
        self.shards = shards
        self.siblings_running = siblings_running
        self._failed_alone = False
        self.split_every = config[Keys.JOB_SHARD_SPLIT_KEYS]
        self._listed_since_split = 0
        if self.split_every:  # a split falls between pages: no page runs far past it
            self.page_size = min(self.page_size, self.split_every)

    async def _run(self) -> None:
        try:
            await super()._run()
        except BaseException as exc:
            self._failed_alone = not any(isinstance(leaf, (Fenced, trio.Cancelled))
                                         for leaf in leaves(exc))
            raise

    async def _cancel_tasks(self, decisions: Sequence[Decision]) -> None:
        if self._failed_alone and self.siblings_running():
            log.info("not cancelling tasks: other shards of the job run here")
            return
        await super()._cancel_tasks(decisions)

    async def run(self) -> None:
        with structlog.contextvars.bound_contextvars(shard=self.owned_shard.shard.index):
            await super().run()

    async def _stored_progress(self) -> Progress:
        return self.owned_shard.shard.progress

    async def _listed(self, files: Sequence[UfsFile]) -> None:
        """Past ``alluxio.job.shard.split.keys`` files listed, split after the last one.

        The walk is between pages here, so nothing after ``files[-1]`` was taken in: the
        next page stops at the new end, and the new shard starts right after it. A
        manifest's or template's shards (cut evenly at their plan) are not split."""
        self._listed_since_split += len(files)
        if (not files or not self.split_every or self.job.options.source
                or self._listed_since_split < self.split_every):
            return
        at = files[-1].parts
        if is_local(self.job.path):
            cut = await trio.to_thread.run_sync(self._ahead, at)
            at = cut or at
        try:
            async with self._store_writes:
                split = await self.shards.split(self.owned_shard, at)
        except Fenced:
            raise
        except Exception as exc:  # the store is unreachable: try again a page later
            log.warning("cannot split the shard now", error=describe_error(exc))
            return
        if split is not None:
            self.owned_shard = split
            self._listed_since_split = 0
            log.info("shard split", job_id=self.job.id, at=printable("/".join(at)),
                     listed=self.ledger.live.files_listed)

    def _ahead(self, position: tuple[str, ...]) -> tuple[str, ...] | None:
        """Blocking: a cut that halves what lies ahead of ``position`` (local trees)."""
        root = to_local_path(self.job.path)

        def names(parent: tuple[str, ...]) -> list[str]:
            """A directory's names; none for one past TOP_LEVEL_MAX entries (each split
            would reread it whole: the walk's own read of it is enough)."""
            found: list[str] = []
            try:
                with os.scandir(os.path.join(root, *parent)) as entries:
                    for entry in entries:
                        found.append(entry.name)
                        if len(found) > TOP_LEVEL_MAX:
                            return []
            except OSError:  # a file, or gone: nothing ahead here
                return []
            return found

        return ahead_cut(position, self.owned_shard.shard.until, names)

    def _walk_start(self, after: tuple[str, ...]) -> tuple[str, ...]:
        return self.owned_shard.shard.start(after)

    def _past_end(self, parts: tuple[str, ...]) -> bool:
        return self.owned_shard.shard.past_end(parts)

    def _walk_until(self) -> tuple[str, ...]:
        return self.owned_shard.shard.until

    async def _write_progress(self, progress: Progress,
                              failures: Sequence[FailureRecord]) -> None:
        self.owned_shard = await self.shards.save(self.owned_shard, progress, failures)

    async def _write_final(self, error: str) -> tuple[str, str]:
        """The shard's end; also the job's when it is the last (or ``error`` fails it)."""
        final = await self.shards.finish(self.owned_shard, self._snapshot(), outcome,
                                         error=error)
        return ("", error) if final is None else (final.state.value, final.error)
