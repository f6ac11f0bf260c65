"""Shard records of sharded jobs, written over the ``KVStore`` protocol for both backends.

Keys under the job prefix, beside those of ``store/job_keys.py``:

==============================  ==========================================================
``shard/<uuid>/<nnnn>``         msgpack ``ShardRecord``: bounds, state, owner, progress
``shardq/<uuid>/<nnnn>``        present while the shard waits for a coordinator
==============================  ==========================================================

Fencing: a shard's owner holds the revision of its shard record and that of the job
record from its claim. Every write it makes compares both: a peer that reclaimed the
shard changes the first; a stop, a failure of another shard, a reclaim or the final
transition of the job change the second. Either way the old owner's write fails with
``Fenced`` and it abandons the shard. Progress lives in the shard record itself, so a
checkpoint is one small write; failures go under the job's ``failures/`` keys.

Since the owner's own writes change the shard record, a write of its that etcd applied
while the answer was lost (etcd paused past the write timeout, a connection cut) leaves
the owner holding an old revision. When a compare fails, the owner therefore reads the
record: if it is still RUNNING under the same claim (owner and claim count, which every
claim raises), the change was its own, and it retries once on the revision it read.

The job's final transition is made by whoever finishes its last shard: marking a shard
DONE compares the revisions of every other shard as just read, so of two shards that
finish at once one sees the other's DONE, and that one's transaction also moves the job
to its final state, with the summed progress. The job record changes only then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from alluxiojob.core.errors import Fenced, JobServiceError
from alluxiojob.core.job import JobRecord
from alluxiojob.core.progress import FailureRecord, Progress
from alluxiojob.core.shards import ShardRecord, ShardState, merge
from alluxiojob.core.states import JobEvent, JobState
from alluxiojob.store.job_keys import OwnedJob, decode_job, pack_progress
from alluxiojob.store.jobs import JobStore
from alluxiojob.store.kv import Compare, Delete, Entry, Op, Put
from alluxiojob.store.records import pack_record, unpack_record

MAX_SHARDS = 60  # a plan or reset is one transaction: two ops a shard, below etcd's 128
_FINISH_ATTEMPTS = 50  # a finish retried while other shards checkpoint meanwhile


@dataclass(frozen=True)
class OwnedShard:
    """A shard, the revision its owner's next write compares, and its claimed job."""

    shard: ShardRecord
    revision: int
    owned_job: OwnedJob

    @property
    def job(self) -> JobRecord:
        return self.owned_job.job


class ShardStore:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.kv = jobs.kv

    # ------------------------------------------------------------------ keys
    def _key(self, job_id: str, index: int) -> bytes:
        return self.jobs.keys.k("shard", job_id, f"{index:04d}")

    def _queue_key(self, job_id: str, index: int) -> bytes:
        return self.jobs.keys.k("shardq", job_id, f"{index:04d}")

    def _put(self, shard: ShardRecord) -> Put:
        return Put(self._key(shard.job_id, shard.index), pack_record(shard.to_wire()))

    def _queue(self, shard: ShardRecord) -> Put:
        return Put(self._queue_key(shard.job_id, shard.index), b"")

    @staticmethod
    def _decode(entry: Entry) -> ShardRecord:
        try:
            return ShardRecord.from_wire(unpack_record(entry.value))
        except Exception as exc:
            raise JobServiceError(f"the shard record at {entry.key!r} is unreadable: "
                                  f"{exc}") from None

    # ------------------------------------------------------------------ reads
    async def of_job(self, job_id: str) -> list[tuple[ShardRecord, int]]:
        """The shards of a job, in order, with their revisions (none: not sharded)."""
        entries = await self.kv.scan(self.jobs.keys.k("shard", job_id, ""))
        return [(self._decode(entry), entry.revision) for entry in entries]

    # ------------------------------------------------------------------ the job's claimer
    async def plan(self, owned: OwnedJob,
                   ranges: Sequence[tuple[tuple[str, ...], tuple[str, ...]]],
                   totals: Sequence[tuple[int, int]] = ()) -> bool:
        """Store the shards of a job just claimed, once: False if they exist already.
        ``totals``: each shard's (files, bytes) when known (a manifest's, a template's)."""
        if not 1 <= len(ranges) <= MAX_SHARDS:
            raise ValueError(f"a job has 1 to {MAX_SHARDS} shards, not {len(ranges)}")
        job_id = owned.job.id
        ops: list[Op] = []
        for index, (after, until) in enumerate(ranges):
            files, nbytes = totals[index] if totals else (0, 0)
            shard = ShardRecord(job_id, index, after, until,
                                progress=Progress(files_total=files, bytes_total=nbytes))
            ops += [self._put(shard), self._queue(shard)]
        compares = [Compare(self.jobs.keys.job(job_id), owned.revision),
                    Compare(self._key(job_id, 0), 0)]
        if await self.kv.txn(compares, ops) is not None:
            return True
        if (await self.jobs.get(job_id)).revision != owned.revision:
            raise Fenced(f"job {job_id} changed under its owner; abandoning it")
        return False

    async def requeue_all(self, owned: OwnedJob) -> int:
        """A job claimed again (resumed, reclaimed, rerun): every shard waits again, with
        its checkpoint and counters; the claims of their old owners are fenced off."""
        shards = await self.of_job(owned.job.id)
        ops: list[Op] = []
        for shard, _ in shards:
            back = replace(shard, state=ShardState.WAITING, owner="",
                           progress=shard.progress.settled())
            ops += [self._put(back), self._queue(back)]
        if ops and await self.kv.txn(
                [Compare(self.jobs.keys.job(owned.job.id), owned.revision)], ops) is None:
            raise Fenced(f"job {owned.job.id} changed under its owner; abandoning it")
        return len(shards)

    # ------------------------------------------------------------------ any coordinator
    async def claim(self, owner: str, limit: int) -> list[OwnedShard]:
        """Claim up to ``limit`` waiting shards of running jobs, in key order."""
        claimed: list[OwnedShard] = []
        if limit <= 0:
            return claimed
        jobs: dict[str, Entry | None] = {}
        queue = self.jobs.keys.k("shardq", "")
        for waiting in await self.kv.scan(queue, limit=limit * 4):
            if len(claimed) >= limit:
                break
            job_id, _, number = waiting.key[len(queue):].decode().partition("/")
            index = int(number)
            if job_id not in jobs:
                jobs[job_id] = await self.kv.get(self.jobs.keys.job(job_id))
            job_entry = jobs[job_id]
            job = decode_job(job_entry) if job_entry is not None else None
            if job is None or job.state not in (JobState.RUNNING, JobState.WAITING):
                # Stopped, finished or gone: the entry is stale (a resume requeues anew).
                await self.kv.txn([Compare(waiting.key, waiting.revision)],
                                  [Delete(waiting.key)])
                continue
            entry = await self.kv.get(self._key(job_id, index))
            if job.state is not JobState.RUNNING or entry is None or job_entry is None:
                continue
            shard = self._decode(entry)
            if shard.state is not ShardState.WAITING:
                continue
            mine = replace(shard, state=ShardState.RUNNING, owner=owner,
                           claims=shard.claims + 1)
            revision = await self.kv.txn(
                [Compare(job_entry.key, job_entry.revision), Compare(entry.key, entry.revision),
                 Compare(waiting.key, waiting.revision)],
                [self._put(mine), Delete(waiting.key)])
            if revision is not None:
                claimed.append(OwnedShard(mine, revision,
                                          OwnedJob(job, job_entry.revision)))
        return claimed

    # ------------------------------------------------------------------ the shard's owner
    def _fence(self, owned: OwnedShard) -> list[Compare]:
        return [Compare(self.jobs.keys.job(owned.job.id), owned.owned_job.revision),
                Compare(self._key(owned.job.id, owned.shard.index), owned.revision)]

    def _fenced(self, owned: OwnedShard) -> Fenced:
        return Fenced(f"shard {owned.shard.index} of job {owned.job.id} changed under "
                      "its owner; abandoning it")

    async def save(self, owned: OwnedShard, progress: Progress,
                   failures: Iterable[FailureRecord] = ()) -> OwnedShard:
        """Fenced write of the shard's counters and checkpoint, and of new failures
        (stored first: a checkpoint is never saved without the failures before it)."""
        *chunks, ops = self.jobs.keys.failure_chunks(owned.job.id, failures)
        for chunk in chunks:
            owned, _ = await self._fenced_txn(owned, chunk)
        shard = replace(owned.shard, progress=progress)
        owned, revision = await self._fenced_txn(owned, [*ops, self._put(shard)])
        return OwnedShard(shard, revision, owned.owned_job)

    async def _fenced_txn(self, owned: OwnedShard, ops: list[Op]) -> tuple[OwnedShard, int]:
        """``ops`` under the owner's fence, retried once on the owner's own late write."""
        revision = await self.kv.txn(self._fence(owned), ops)
        if revision is None:
            owned = await self._after_own_write(owned)
            revision = await self.kv.txn(self._fence(owned), ops)
            if revision is None:
                raise self._fenced(owned)
        return owned, revision

    async def _after_own_write(self, owned: OwnedShard) -> OwnedShard:
        """After a failed compare: ``owned`` on the record's revision if the record
        changed by a write of this same claim; ``Fenced`` otherwise."""
        entry = await self.kv.get(self._key(owned.job.id, owned.shard.index))
        if entry is None or entry.revision == owned.revision:
            raise self._fenced(owned)  # gone, or the job record changed
        if not _same_claim(self._decode(entry), owned.shard):
            raise self._fenced(owned)
        return replace(owned, revision=entry.revision)

    async def finish(self, owned: OwnedShard, progress: Progress,
                     outcome: Callable[[Progress], str], *, error: str = "") -> JobRecord | None:
        """Mark the shard DONE; if it is the last, or ``error`` fails the job, also make
        the job's final transition in the same transaction. Returns the job's final
        record when this call made it, None when shards remain."""
        job_key = self.jobs.keys.job(owned.job.id)
        mine = replace(owned.shard, state=ShardState.DONE, progress=progress)
        for _ in range(_FINISH_ATTEMPTS):
            others = [(shard, rev) for shard, rev in await self.of_job(owned.job.id)
                      if shard.index != owned.shard.index]
            compares = self._fence(owned)
            ops: list[Op] = [self._put(mine)]
            final: JobRecord | None = None
            if error or all(shard.state is ShardState.DONE for shard, _ in others):
                total = merge([mine.progress, *(shard.progress for shard, _ in others)])
                why = error or outcome(total)
                final = owned.job.apply(JobEvent.FAIL if why else JobEvent.SUCCEED,
                                        self.jobs.clock(), owner=owned.job.owner, error=why)
                ops += [Put(job_key, pack_record(final.to_wire())),
                        Put(self.jobs.keys.progress(owned.job.id),
                            pack_progress(owned.owned_job, total))]
            if not error:
                compares += [Compare(self._key(owned.job.id, shard.index), rev)
                             for shard, rev in others]
            if await self.kv.txn(compares, ops) is not None:
                return final
            current = await self.kv.get(job_key)
            if current is None or current.revision != owned.owned_job.revision:
                raise self._fenced(owned)
            mine_now = await self.kv.get(self._key(owned.job.id, owned.shard.index))
            if mine_now is None or mine_now.revision != owned.revision:
                owned = await self._after_own_write(owned)
        raise JobServiceError(f"could not finish shard {owned.shard.index} of job "
                              f"{owned.job.id}: its peers kept changing")

    async def split(self, owned: OwnedShard, at: tuple[str, ...]) -> OwnedShard | None:
        """Cut the shard after ``at``, the last file its owner listed: the owner keeps
        up to ``at``, and a new shard from there to the old end waits for any
        coordinator. Fenced like a checkpoint; also compares that the new shard's key is
        free, so two shards of a job splitting at once take distinct numbers. Returns
        the owner's shard, or None when it cannot split now (the job has
        ``MAX_SHARDS``, ``at`` is not inside the range, or a sibling took the number)."""
        shard = owned.shard
        index = max(other.index for other, _ in await self.of_job(owned.job.id)) + 1
        cut = shard.cut(at, index)
        if index >= MAX_SHARDS or cut is None:
            return None
        mine, rest = cut
        revision = await self.kv.txn(
            [*self._fence(owned), Compare(self._key(owned.job.id, index), 0)],
            [self._put(mine), self._put(rest), self._queue(rest)])
        if revision is not None:
            return OwnedShard(mine, revision, owned.owned_job)
        now = await self.kv.get(self._key(owned.job.id, shard.index))
        job_now = await self.kv.get(self.jobs.keys.job(owned.job.id))
        if (now is None or now.revision != owned.revision or job_now is None
                or job_now.revision != owned.owned_job.revision):
            raise self._fenced(owned)
        return None

    async def release(self, owned: OwnedShard) -> None:
        """Its owner gives the shard back to the queue, keeping its checkpoint."""
        key = self._key(owned.job.id, owned.shard.index)
        shard, revision = owned.shard, owned.revision
        for _ in range(2):
            back = replace(shard, state=ShardState.WAITING, owner="",
                           progress=shard.progress.settled())
            if await self.kv.txn([Compare(key, revision)],
                                 [self._put(back), self._queue(back)]) is not None:
                return
            entry = await self.kv.get(key)
            if entry is None or not _same_claim(self._decode(entry), owned.shard):
                return  # a peer's now, or gone: nothing to give back
            # Its own write landed unanswered: give back what that write stored.
            shard, revision = self._decode(entry), entry.revision

    # ------------------------------------------------------------------ housekeeping
    async def reclaim_orphans(self, is_orphan: Callable[[ShardRecord], bool]) -> int:
        """Running shards that ``is_orphan`` (their owner is gone, or runs them no more)
        wait again, keeping their checkpoints."""
        reclaimed = 0
        start: bytes | None = None
        while True:
            page = await self.kv.scan(self.jobs.keys.k("shard", ""), start_after=start, limit=1000)
            for entry in page:
                shard = self._decode(entry)
                if shard.state is not ShardState.RUNNING or not is_orphan(shard):
                    continue
                back = replace(shard, state=ShardState.WAITING, owner="",
                               progress=shard.progress.settled())
                if await self.kv.txn([Compare(entry.key, entry.revision)],
                                     [self._put(back), self._queue(back)]) is not None:
                    reclaimed += 1
            if len(page) < 1000:
                return reclaimed
            start = page[-1].key


def _same_claim(stored: ShardRecord, mine: ShardRecord) -> bool:
    """``stored`` is still RUNNING under the claim ``mine`` came from."""
    return (stored.state is ShardState.RUNNING and stored.owner == mine.owner
            and stored.claims == mine.claims)


def merged_progress(shards: Sequence[ShardRecord]) -> Progress:
    return merge([shard.progress for shard in shards])


__all__: Sequence[str] = ["MAX_SHARDS", "OwnedShard", "ShardStore", "merged_progress"]
