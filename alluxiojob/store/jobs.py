"""Job persistence, written once over the ``KVStore`` protocol for both backends.

``JobStore`` reads jobs, stops and reruns them, and makes its owners' fenced writes;
the key layout is in ``job_keys.py`` and the waiting queue (submissions and claims,
with its exact capacity) in ``job_queue.py``.

Fencing: an owner holds the job's revision from its claim. Every write it makes (state,
progress, failures) compares that revision, so after a reclaim, a stop or a rerun has
changed the job, the old owner's writes fail with ``Fenced`` and it abandons the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import trio

from alluxiojob.core.errors import Fenced, JobServiceError, NotFound, WrongState
from alluxiojob.core.job import JobOptions, JobRecord, JobType, job_identity
from alluxiojob.core.progress import FailureRecord, Progress
from alluxiojob.core.reasons import Reason
from alluxiojob.core.shards import ShardRecord, merge
from alluxiojob.core.states import ACTIVE_STATES, OWNED_STATES, JobEvent, JobState
from alluxiojob.store.changes import WatchedKV
from alluxiojob.store.job_keys import (
    JobKeys,
    OwnedJob,
    decode_job,
    job_id_of,
    pack_progress,
)
from alluxiojob.store.job_queue import JobQueue, SubmitOutcome
from alluxiojob.store.kv import Compare, Delete, KVStore, Op, Put
from alluxiojob.store.records import pack_record, unpack_record

_CAS_ATTEMPTS = 16


class JobStore:
    def __init__(
        self,
        kv: KVStore,
        prefix: str = "/alluxio/jobs/",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = JobKeys(prefix)
        # Every write (the queue's and the shards' too) goes through it: a job record's
        # write wakes the requests waiting for a state change (``changes.py``).
        self.kv = WatchedKV(kv, self.keys.job(""))
        self.clock = clock
        self.queue = JobQueue(self.kv, self.keys, clock)

    def next_change(self) -> trio.Event:
        """Set at this process's next write of a job record; take it before reading."""
        return self.kv.next_change()

    # ------------------------------------------------------------------ reads
    async def get(self, job_id: str) -> OwnedJob:
        entry = await self.kv.get(self.keys.job(job_id))
        if entry is None:
            raise NotFound(f"no job with id {job_id}")
        return OwnedJob(decode_job(entry), entry.revision)

    async def find(self, job_type: JobType, path: str, dst: str = "") -> OwnedJob:
        identity = job_identity(job_type, path, dst)
        pointer = await self.kv.get(self.keys.identity(identity))
        if pointer is None:
            raise NotFound(f"no {job_type.value} job for {path}" + (f" -> {dst}" if dst else ""))
        return await self.get(job_id_of(pointer))

    async def list_jobs(
        self,
        state: JobState | None = None,
        job_type: JobType | None = None,
        owner: str | None = None,
    ) -> list[JobRecord]:
        jobs: list[JobRecord] = []
        start: bytes | None = None
        while True:
            page = await self.kv.scan(self.keys.k("job", ""), start_after=start, limit=1000)
            for entry in page:
                job = decode_job(entry)
                if state is not None and job.state is not state:
                    continue
                if job_type is not None and job.type is not job_type:
                    continue
                if owner is not None and job.owner != owner:
                    continue
                jobs.append(job)
            if len(page) < 1000:
                break
            start = page[-1].key
        jobs.sort(key=lambda job: job.created_at)
        return jobs

    async def waiting_count(self) -> int:
        return await self.queue.waiting_count()

    async def get_progress(self, job_id: str) -> Progress:
        """The job's progress; a sharded job's sums its shards' (``store/shards.py``)."""
        entry = await self.kv.get(self.keys.progress(job_id))
        shards = await self.kv.scan(self.keys.k("shard", job_id, ""))
        try:
            stored = Progress() if entry is None else Progress.from_wire(
                unpack_record(entry.value))
            if not shards:
                return stored
            total = merge([ShardRecord.from_wire(unpack_record(shard.value)).progress
                           for shard in shards])
        except Exception as exc:
            raise JobServiceError(f"the progress of job {job_id} is unreadable: {exc}") from None
        # The final transition stores the sum; a report never shows less than it did.
        return replace(total, live=total.live.envelope(stored.live))

    async def list_failures(self, job_id: str, limit: int = 0) -> list[FailureRecord]:
        prefix = self.keys.failures(job_id)
        out: list[FailureRecord] = []
        for entry in await self.kv.scan(prefix, limit=limit):
            try:
                data = unpack_record(entry.value)
            except Exception as exc:
                raise JobServiceError(f"a failure record of job {job_id} is unreadable: "
                                      f"{exc}") from None
            message = str(data.get("message", ""))
            try:
                reason = Reason.parse(str(data.get("reason", "")))
            except ValueError:  # written by a version that knew other reasons
                reason = Reason.IO_ERROR
                message = f"{data.get('reason')}: {message}"
            out.append(
                FailureRecord(
                    path=entry.key[len(prefix) :].decode("utf-8", "surrogateescape"),
                    reason=reason,
                    message=message,
                    time=float(data.get("time", 0.0)),
                )
            )
        return out

    async def submit(
        self,
        job_type: JobType,
        path: str,
        dst: str,
        options: JobOptions,
        waiting_capacity: int,
    ) -> tuple[JobRecord, SubmitOutcome]:
        """Persist a submission before acknowledging it (``job_queue.py``)."""
        return await self.queue.submit(job_type, path, dst, options, waiting_capacity)

    async def stop(self, job_type: JobType, path: str, dst: str = "") -> JobRecord:
        for _ in range(_CAS_ATTEMPTS):
            owned = await self.find(job_type, path, dst)
            job = owned.job
            if job.state not in ACTIVE_STATES:
                raise WrongState(
                    f"job {job.id} is {job.state.value}; only WAITING, RUNNING or VERIFYING "
                    "jobs can be stopped"
                )
            stopped = job.apply(JobEvent.STOP, self.clock())
            ops: list[Op] = [Put(self.keys.job(job.id), pack_record(stopped.to_wire()))]
            if job.state is JobState.WAITING:
                ops.append(Delete(self.keys.waiting(job)))
            if await self.kv.txn([Compare(self.keys.job(job.id), owned.revision)], ops):
                return stopped
        raise Fenced("the job kept changing while stopping it; try again")

    async def rerun(self, job_id: str) -> JobRecord:
        """Put a stuck, failed or stopped job back in the queue."""
        for _ in range(_CAS_ATTEMPTS):
            owned = await self.get(job_id)
            job = owned.job
            pointer = await self.kv.get(self.keys.identity(job.identity))
            if pointer is not None and job_id_of(pointer) != job.id:
                raise WrongState(
                    f"job {job.id} was superseded by job {job_id_of(pointer)} for "
                    f"the same {job.type.value} path; rerun that one instead"
                )
            rerun = replace(job.apply(JobEvent.RERUN, self.clock()), seq=self.queue.seq())
            compares = [Compare(self.keys.job(job.id), owned.revision)]
            if pointer is not None:  # and no submit replaced it meanwhile
                compares.append(Compare(pointer.key, pointer.revision))
            ops = self.keys.enqueue(rerun, pack_record(rerun.to_wire()))
            if job.state is JobState.FAILED:
                # A failed job starts over, so that its failed files are tried again.
                ops += [Delete(self.keys.progress(job.id)),
                        Delete(self.keys.failures(job.id), prefix=True),
                        *self.keys.shard_deletes(job.id)]
            if await self.kv.txn(compares, ops):
                return rerun
        raise Fenced("the job kept changing during rerun; try again")

    # ------------------------------------------------------------------ owner side
    async def claim_waiting(self, owner: str, limit: int) -> list[OwnedJob]:
        """Claim up to ``limit`` waiting jobs, oldest first (``job_queue.py``)."""
        return await self.queue.claim_waiting(owner, limit)

    async def transition(
        self,
        owned: OwnedJob,
        event: JobEvent,
        *,
        error: str = "",
        progress: Progress | None = None,
    ) -> OwnedJob:
        """A fenced state change by the job's owner, with its final progress if given."""
        job = owned.job.apply(event, self.clock(), owner=owned.job.owner, error=error)
        packed = pack_record(job.to_wire())
        ops: list[Op] = (
            self.keys.enqueue(job, packed) if job.state is JobState.WAITING
            else [Put(self.keys.job(job.id), packed)]
        )
        if progress is not None:
            ops.append(Put(self.keys.progress(job.id), pack_progress(owned, progress)))
        revision = await self.kv.txn([Compare(self.keys.job(job.id), owned.revision)], ops)
        if revision is None:
            raise Fenced(f"job {job.id} changed under its owner; abandoning it")
        return OwnedJob(job, revision)

    async def save_progress(
        self,
        owned: OwnedJob,
        progress: Progress,
        failures: Iterable[FailureRecord] = (),
        cleared: Iterable[str] = (),
    ) -> None:
        """Fenced write of counters, checkpoint, new failures and failures now resolved.

        etcd takes at most 128 operations per transaction (``--max-txn-ops``) and no key
        twice, so failures go one op per key, in fenced chunks, and the progress (with
        its checkpoint) last: a checkpoint is never saved without the failures before it.
        """
        fence = [Compare(self.keys.job(owned.job.id), owned.revision)]
        *chunks, ops = self.keys.failure_chunks(owned.job.id, failures, cleared)
        for chunk in chunks:
            if await self.kv.txn(fence, chunk) is None:
                raise Fenced(f"job {owned.job.id} changed under its owner; abandoning it")
        ops.append(Put(self.keys.progress(owned.job.id), pack_progress(owned, progress)))
        if await self.kv.txn(fence, ops) is None:
            raise Fenced(f"job {owned.job.id} changed under its owner; abandoning it")


    async def clear_failures(self, owned: OwnedJob) -> None:
        """Fenced removal of a job's failure list (a verify pass decides it afresh)."""
        ops: list[Op] = [Delete(self.keys.failures(owned.job.id), prefix=True)]
        if await self.kv.txn([Compare(self.keys.job(owned.job.id), owned.revision)], ops) is None:
            raise Fenced(f"job {owned.job.id} changed under its owner; abandoning it")

    # ------------------------------------------------------------------ housekeeping
    async def reclaim_orphans(self, is_alive: Callable[[str], bool]) -> list[JobRecord]:
        """Move RUNNING/VERIFYING jobs whose owner is gone back to WAITING."""
        reclaimed: list[JobRecord] = []
        for state in OWNED_STATES:
            for job in await self.list_jobs(state=state):
                if is_alive(job.owner):
                    continue
                entry = await self.kv.get(self.keys.job(job.id))
                if entry is None:
                    continue
                current = decode_job(entry)
                if current.state not in OWNED_STATES or current.owner != job.owner:
                    continue
                back = current.apply(JobEvent.RECLAIM, self.clock())
                ok = await self.kv.txn(
                    [Compare(entry.key, entry.revision)],
                    self.keys.enqueue(back, pack_record(back.to_wire())),
                )
                if ok is not None:
                    reclaimed.append(back)
        return reclaimed

    async def delete_expired(self, retention_seconds: float) -> int:
        """Remove finished jobs older than the retention time; returns how many."""
        cutoff = self.clock() - retention_seconds
        removed = 0
        for job in await self.list_jobs():
            if job.state in ACTIVE_STATES or not job.finished_at or job.finished_at > cutoff:
                continue
            entry = await self.kv.get(self.keys.job(job.id))
            if entry is None:
                continue
            ops: list[Op] = [
                Delete(self.keys.job(job.id)),
                Delete(self.keys.progress(job.id)),
                Delete(self.keys.failures(job.id), prefix=True),
                *self.keys.shard_deletes(job.id),
            ]
            compares = [Compare(entry.key, entry.revision)]
            pointer = await self.kv.get(self.keys.identity(job.identity))
            if pointer is not None and job_id_of(pointer) == job.id:
                ops.append(Delete(pointer.key))
                compares.append(Compare(pointer.key, pointer.revision))
            if await self.kv.txn(compares, ops) is not None:
                removed += 1
        return removed



__all__: Sequence[str] = [
    "FailureRecord",
    "JobStore",
    "OwnedJob",
    "SubmitOutcome",
]
