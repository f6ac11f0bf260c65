"""Job persistence, written once over the ``KVStore`` protocol for both backends.

Key layout under the job prefix (``alluxio.coordinator.scheduler.job.etcd.path``):

==============================  ==========================================================
``job/<uuid>``                  msgpack ``JobRecord``
``key/<identity>``              uuid of the current job for (type, path)
``waiting/<seq>/<uuid>``        FIFO index of WAITING jobs (seq: submit time, ns)
``progress/<uuid>``             msgpack ``Progress``: counters and the resume checkpoint
``failures/<uuid>/<path>``      msgpack ``{reason, message, time}``, bounded per job
==============================  ==========================================================

Fencing: an owner holds the job's revision from its claim. Every write it makes (state,
progress, failures) compares that revision, so after a reclaim, a stop or a rerun has
changed the job, the old owner's writes fail with ``Fenced`` and it abandons the job.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from alluxiojob.core.errors import CapacityExceeded, Fenced, NotFound, WrongState
from alluxiojob.core.job import JobOptions, JobRecord, JobType, job_identity
from alluxiojob.core.progress import Progress
from alluxiojob.core.states import ACTIVE_STATES, OWNED_STATES, JobEvent, JobState
from alluxiojob.protocol.codec import pack_record, unpack_record
from alluxiojob.store.kv import Compare, Delete, Entry, KVStore, Op, Put

_CAS_ATTEMPTS = 16
_MAX_TXN_OPS = 100  # below etcd's default --max-txn-ops of 128


class SubmitOutcome(enum.StrEnum):
    CREATED = "CREATED"
    ALREADY_RUNNING = "ALREADY_RUNNING"
    RESUMED = "RESUMED"


@dataclass(frozen=True)
class OwnedJob:
    """A job and the revision its owner's next write must compare against."""

    job: JobRecord
    revision: int


@dataclass(frozen=True)
class FailureRecord:
    path: str
    reason: str
    message: str
    time: float


class JobStore:
    def __init__(
        self,
        kv: KVStore,
        prefix: str = "/alluxio/jobs/",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self._prefix = prefix.encode()
        self._clock = clock

    # ------------------------------------------------------------------ keys
    def _k(self, *parts: str) -> bytes:
        return self._prefix + "/".join(parts).encode()

    def _job_key(self, job_id: str) -> bytes:
        return self._k("job", job_id)

    def _identity_key(self, identity: str) -> bytes:
        return self._k("key", identity)

    def _waiting_key(self, job: JobRecord) -> bytes:
        return self._k("waiting", f"{job.seq:020d}", job.id)

    def _progress_key(self, job_id: str) -> bytes:
        return self._k("progress", job_id)

    def _failures_prefix(self, job_id: str) -> bytes:
        return self._k("failures", job_id, "")

    @staticmethod
    def _decode_job(entry: Entry) -> JobRecord:
        return JobRecord.from_wire(unpack_record(entry.value))

    # ------------------------------------------------------------------ reads
    async def get(self, job_id: str) -> OwnedJob:
        entry = await self.kv.get(self._job_key(job_id))
        if entry is None:
            raise NotFound(f"no job with id {job_id}")
        return OwnedJob(self._decode_job(entry), entry.revision)

    async def find(self, job_type: JobType, path: str, dst: str = "") -> OwnedJob:
        identity = job_identity(job_type, path, dst)
        pointer = await self.kv.get(self._identity_key(identity))
        if pointer is None:
            raise NotFound(f"no {job_type.value} job for {path}" + (f" -> {dst}" if dst else ""))
        return await self.get(pointer.value.decode())

    async def list_jobs(
        self,
        state: JobState | None = None,
        job_type: JobType | None = None,
        owner: str | None = None,
    ) -> list[JobRecord]:
        jobs: list[JobRecord] = []
        start: bytes | None = None
        while True:
            page = await self.kv.scan(self._k("job", ""), start_after=start, limit=1000)
            for entry in page:
                job = self._decode_job(entry)
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
        return await self.kv.count(self._k("waiting", ""))

    async def get_progress(self, job_id: str) -> Progress:
        entry = await self.kv.get(self._progress_key(job_id))
        return Progress() if entry is None else Progress.from_wire(unpack_record(entry.value))

    async def list_failures(self, job_id: str, limit: int = 0) -> list[FailureRecord]:
        prefix = self._failures_prefix(job_id)
        out: list[FailureRecord] = []
        for entry in await self.kv.scan(prefix, limit=limit):
            data = unpack_record(entry.value)
            out.append(
                FailureRecord(
                    path=entry.key[len(prefix) :].decode(),
                    reason=str(data.get("reason", "")),
                    message=str(data.get("message", "")),
                    time=float(data.get("time", 0.0)),
                )
            )
        return out

    # ------------------------------------------------------------------ submit / stop
    async def submit(
        self,
        job_type: JobType,
        path: str,
        dst: str,
        options: JobOptions,
        waiting_capacity: int,
    ) -> tuple[JobRecord, SubmitOutcome]:
        """Persist a submission before acknowledging it (see the module docstring)."""
        options.validate()
        identity_key = self._identity_key(job_identity(job_type, path, dst))
        for _ in range(_CAS_ATTEMPTS):
            now = self._clock()
            pointer = await self.kv.get(identity_key)
            current: Entry | None = None
            if pointer is not None:
                current = await self.kv.get(self._job_key(pointer.value.decode()))
            if current is not None:
                job = self._decode_job(current)
                if job.state in ACTIVE_STATES:
                    return job, SubmitOutcome.ALREADY_RUNNING
                if job.state is JobState.STOPPED:
                    await self._check_capacity(waiting_capacity)
                    resumed = replace(job.apply(JobEvent.RESUME, now), seq=time.time_ns())
                    ok = await self.kv.txn(
                        [Compare(current.key, current.revision)],
                        [Put(current.key, pack_record(resumed.to_wire())),
                         Put(self._waiting_key(resumed), b"")],
                    )
                    if ok is not None:
                        return resumed, SubmitOutcome.RESUMED
                    continue
            await self._check_capacity(waiting_capacity)
            job = replace(JobRecord.new(job_type, path, dst, options, now), seq=time.time_ns())
            ok = await self.kv.txn(
                [Compare(identity_key, 0 if pointer is None else pointer.revision)],
                [
                    Put(self._job_key(job.id), pack_record(job.to_wire())),
                    Put(identity_key, job.id.encode()),
                    Put(self._waiting_key(job), b""),
                ],
            )
            if ok is not None:
                return job, SubmitOutcome.CREATED
        raise CapacityExceeded("too many concurrent submissions for this job; try again")

    async def _check_capacity(self, waiting_capacity: int) -> None:
        waiting = await self.waiting_count()
        if waiting >= waiting_capacity:
            raise CapacityExceeded(
                f"the waiting queue is full: {waiting} jobs waiting, "
                f"alluxio.coordinator.scheduler.waiting.job.capacity={waiting_capacity}"
            )

    async def stop(self, job_type: JobType, path: str, dst: str = "") -> JobRecord:
        for _ in range(_CAS_ATTEMPTS):
            owned = await self.find(job_type, path, dst)
            job = owned.job
            if job.state not in ACTIVE_STATES:
                raise WrongState(
                    f"job {job.id} is {job.state.value}; only WAITING, RUNNING or VERIFYING "
                    "jobs can be stopped"
                )
            stopped = job.apply(JobEvent.STOP, self._clock())
            ops: list[Op] = [Put(self._job_key(job.id), pack_record(stopped.to_wire()))]
            if job.state is JobState.WAITING:
                ops.append(Delete(self._waiting_key(job)))
            if await self.kv.txn([Compare(self._job_key(job.id), owned.revision)], ops):
                return stopped
        raise Fenced("the job kept changing while stopping it; try again")

    async def rerun(self, job_id: str) -> JobRecord:
        """Put a stuck, failed or stopped job back in the queue."""
        for _ in range(_CAS_ATTEMPTS):
            owned = await self.get(job_id)
            job = owned.job
            pointer = await self.kv.get(self._identity_key(job.identity))
            if pointer is not None and pointer.value.decode() != job.id:
                raise WrongState(
                    f"job {job.id} was superseded by job {pointer.value.decode()} for "
                    f"the same {job.type.value} path; rerun that one instead"
                )
            rerun = replace(job.apply(JobEvent.RERUN, self._clock()), seq=time.time_ns())
            compares = [Compare(self._job_key(job.id), owned.revision)]
            if pointer is not None:  # and no submit replaced it meanwhile
                compares.append(Compare(pointer.key, pointer.revision))
            ops: list[Op] = [
                Put(self._job_key(job.id), pack_record(rerun.to_wire())),
                Put(self._waiting_key(rerun), b""),
            ]
            if job.state is JobState.FAILED:
                # A failed job starts over, so that its failed files are tried again.
                ops += [Delete(self._progress_key(job.id)),
                        Delete(self._failures_prefix(job.id), prefix=True)]
            if await self.kv.txn(compares, ops):
                return rerun
        raise Fenced("the job kept changing during rerun; try again")

    # ------------------------------------------------------------------ owner side
    async def claim_waiting(self, owner: str, limit: int) -> list[OwnedJob]:
        """Claim up to ``limit`` waiting jobs, oldest first; each claim is one CAS."""
        claimed: list[OwnedJob] = []
        if limit <= 0:
            return claimed
        start: bytes | None = None
        while len(claimed) < limit:
            page = await self.kv.scan(self._k("waiting", ""), start_after=start, limit=limit * 2)
            if not page:
                break
            for waiting in page:
                if len(claimed) >= limit:
                    break
                job_id = waiting.key.rsplit(b"/", 1)[-1].decode()
                entry = await self.kv.get(self._job_key(job_id))
                if entry is None:
                    # An index entry whose job is gone: drop it.
                    await self.kv.txn([Compare(waiting.key, waiting.revision)],
                                      [Delete(waiting.key)])
                    continue
                if self._decode_job(entry).state is not JobState.WAITING:
                    # Claimed or stopped by someone else since the scan; that same
                    # transaction removed this index entry.
                    continue
                job = self._decode_job(entry).apply(JobEvent.CLAIM, self._clock(), owner=owner)
                revision = await self.kv.txn(
                    [Compare(entry.key, entry.revision), Compare(waiting.key, waiting.revision)],
                    [Put(entry.key, pack_record(job.to_wire())), Delete(waiting.key)],
                )
                if revision is not None:
                    claimed.append(OwnedJob(job, revision))
            start = page[-1].key
        return claimed

    async def transition(
        self,
        owned: OwnedJob,
        event: JobEvent,
        *,
        error: str = "",
        progress: Progress | None = None,
    ) -> OwnedJob:
        """A fenced state change by the job's owner, with its final progress if given."""
        job = owned.job.apply(event, self._clock(), owner=owned.job.owner, error=error)
        ops: list[Op] = [Put(self._job_key(job.id), pack_record(job.to_wire()))]
        if progress is not None:
            ops.append(Put(self._progress_key(job.id), pack_record(progress.to_wire())))
        if job.state is JobState.WAITING:
            ops.append(Put(self._waiting_key(job), b""))
        revision = await self.kv.txn([Compare(self._job_key(job.id), owned.revision)], ops)
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
        changes: dict[bytes, Op] = {}
        for failure in failures:
            key = self._failures_prefix(owned.job.id) + failure.path.encode()
            changes[key] = Put(
                key,
                pack_record(
                    {"reason": failure.reason, "message": failure.message, "time": failure.time}
                ),
            )
        for path in cleared:
            key = self._failures_prefix(owned.job.id) + path.encode()
            changes[key] = Delete(key)
        ops = list(changes.values())
        fence = [Compare(self._job_key(owned.job.id), owned.revision)]
        while len(ops) >= _MAX_TXN_OPS:
            if await self.kv.txn(fence, ops[:_MAX_TXN_OPS]) is None:
                raise Fenced(f"job {owned.job.id} changed under its owner; abandoning it")
            ops = ops[_MAX_TXN_OPS:]
        ops.append(Put(self._progress_key(owned.job.id), pack_record(progress.to_wire())))
        if await self.kv.txn(fence, ops) is None:
            raise Fenced(f"job {owned.job.id} changed under its owner; abandoning it")

    async def clear_failures(self, owned: OwnedJob) -> None:
        """Fenced removal of a job's failure list (a verify pass decides it afresh)."""
        ops: list[Op] = [Delete(self._failures_prefix(owned.job.id), prefix=True)]
        if await self.kv.txn([Compare(self._job_key(owned.job.id), owned.revision)], ops) is None:
            raise Fenced(f"job {owned.job.id} changed under its owner; abandoning it")

    # ------------------------------------------------------------------ housekeeping
    async def reclaim_orphans(self, is_alive: Callable[[str], bool]) -> list[JobRecord]:
        """Move RUNNING/VERIFYING jobs whose owner is gone back to WAITING."""
        reclaimed: list[JobRecord] = []
        for state in OWNED_STATES:
            for job in await self.list_jobs(state=state):
                if is_alive(job.owner):
                    continue
                entry = await self.kv.get(self._job_key(job.id))
                if entry is None:
                    continue
                current = self._decode_job(entry)
                if current.state not in OWNED_STATES or current.owner != job.owner:
                    continue
                back = current.apply(JobEvent.RECLAIM, self._clock())
                ok = await self.kv.txn(
                    [Compare(entry.key, entry.revision)],
                    [Put(entry.key, pack_record(back.to_wire())),
                     Put(self._waiting_key(back), b"")],
                )
                if ok is not None:
                    reclaimed.append(back)
        return reclaimed

    async def delete_expired(self, retention_seconds: float) -> int:
        """Remove finished jobs older than the retention time; returns how many."""
        cutoff = self._clock() - retention_seconds
        removed = 0
        for job in await self.list_jobs():
            if job.state in ACTIVE_STATES or not job.finished_at or job.finished_at > cutoff:
                continue
            entry = await self.kv.get(self._job_key(job.id))
            if entry is None:
                continue
            ops: list[Op] = [
                Delete(self._job_key(job.id)),
                Delete(self._progress_key(job.id)),
                Delete(self._failures_prefix(job.id), prefix=True),
            ]
            compares = [Compare(entry.key, entry.revision)]
            pointer = await self.kv.get(self._identity_key(job.identity))
            if pointer is not None and pointer.value.decode() == job.id:
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
