"""Job persistence, written once over the ``KVStore`` protocol for both backends.

Key layout under the job prefix (``alluxio.coordinator.scheduler.job.etcd.path``):

==============================  ==========================================================
``job/<uuid>``                  msgpack ``JobRecord``
``key/<identity>``              uuid of the current job for (type, path)
``waiting/<seq>/<uuid>``        FIFO index of WAITING jobs (seq: submit time, ns); its
                                value is the job record written in the same transaction
``meta/waiting-added``          rewritten by every transaction that adds to the index
``progress/<uuid>``             msgpack ``Progress``: counters and the resume checkpoint
``failures/<uuid>/<path>``      msgpack ``{reason, message, time}``, bounded per job
==============================  ==========================================================

Fencing: an owner holds the job's revision from its claim. Every write it makes (state,
progress, failures) compares that revision, so after a reclaim, a stop or a rerun has
changed the job, the old owner's writes fail with ``Fenced`` and it abandons the job.

Claims in one transaction: a waiting entry is always written in the same transaction
as its job, so while the job is unchanged both keys carry the same modification
revision and the entry's value is the job's record. A claim is then a single compare
of both keys at that revision, with no read of the job; a batch of claims is one
``txn_each``, where a claim lost to a peer fails alone.

Spreading coordinators over the queue: the claim reads the oldest entries (a window a
few batches long). While no peer takes entries from under it, a coordinator claims
them strictly oldest first. After a lost claim it orders the window by position plus
an offset drawn from a hash of (its id, the entry), below two batch sizes: peers then
mostly pick different entries, and an entry is never passed over by one more than two
batches younger, so no job starves. That bounded reordering is the FIFO given up.

Exact waiting capacity: a submission reads ``meta/waiting-added``, then counts the
index, and writes its job only if that key is unchanged, rewriting it in the same
transaction. Any addition since the count makes the write fail and the submission
counts again; removals (claims, stops) only lower the count, so they need no
coordination. Concurrent submissions are therefore serialized, which is what an exact
limit costs; claims never contend with them.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import trio

from alluxiojob.core.backoff import backoff_delay
from alluxiojob.core.errors import (
    CapacityExceeded,
    Fenced,
    JobServiceError,
    NotFound,
    Unavailable,
    WrongState,
)
from alluxiojob.core.job import JobOptions, JobRecord, JobType, job_identity
from alluxiojob.core.progress import FailureRecord, Progress
from alluxiojob.core.reasons import Reason
from alluxiojob.core.shards import ShardRecord, merge
from alluxiojob.core.states import ACTIVE_STATES, OWNED_STATES, JobEvent, JobState
from alluxiojob.store.kv import Compare, Delete, Entry, KVStore, Op, Put, Txn
from alluxiojob.store.records import pack_record, unpack_record

_CAS_ATTEMPTS = 16
_SUBMIT_PATIENCE = 10.0  # seconds a submission keeps retrying against concurrent ones
_MAX_TXN_OPS = 100  # below etcd's default --max-txn-ops of 128
_CLAIM_BATCH = 50  # claims per transaction (each a nested txn; etcd allows 128 per level)
_CLAIM_WINDOW = 4  # the window read per round, in batches
_CLAIM_ROUNDS = 16  # rounds per claim_waiting call before the scheduler polls again
_CONTENDED_FOR = 5.0  # seconds to keep spreading after a claim lost to a peer


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
class _Admission:
    """A count of the queue, and the compare that keeps it true until the write."""

    compare: Compare
    waiting: int
    capacity: int

    def check(self) -> None:
        if self.waiting >= self.capacity:
            raise CapacityExceeded(
                f"the waiting queue is full: {self.waiting} jobs waiting, "
                f"alluxio.coordinator.scheduler.waiting.job.capacity={self.capacity}"
            )


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
        self._contended_until = 0.0  # spread claims over the queue until then

    def _seq(self) -> int:
        """A waiting job's place in the FIFO: its queueing time in ns, from the clock."""
        return int(self._clock() * 1e9)

    # ------------------------------------------------------------------ keys
    def _k(self, *parts: str) -> bytes:
        return self._prefix + "/".join(parts).encode()

    def _job_key(self, job_id: str) -> bytes:
        return self._k("job", job_id)

    def _identity_key(self, identity: str) -> bytes:
        return self._k("key", identity)

    def _waiting_key(self, job: JobRecord) -> bytes:
        return self._k("waiting", f"{job.seq:020d}", job.id)

    def _added_key(self) -> bytes:
        return self._k("meta", "waiting-added")

    def _enqueue(self, job: JobRecord, packed: bytes) -> list[Op]:
        """The puts that (re)queue ``job`` whose record is ``packed``: see the docstring."""
        return [
            Put(self._job_key(job.id), packed),
            Put(self._waiting_key(job), packed),
            Put(self._added_key(), job.id.encode()),
        ]

    def _progress_key(self, job_id: str) -> bytes:
        return self._k("progress", job_id)

    def _failures_prefix(self, job_id: str) -> bytes:
        return self._k("failures", job_id, "")

    def _shard_deletes(self, job_id: str) -> list[Op]:
        """A job's shard records and queue entries (``store/shards.py``)."""
        return [Delete(self._k("shard", job_id, ""), prefix=True),
                Delete(self._k("shardq", job_id, ""), prefix=True)]

    @staticmethod
    def _decode_job(entry: Entry) -> JobRecord:
        try:
            return JobRecord.from_wire(unpack_record(entry.value))
        except Exception as exc:
            raise JobServiceError(
                f"the job record at {entry.key!r} is unreadable: {exc}"
            ) from None

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
        return await self.get(_job_id(pointer))

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
        """The job's progress; a sharded job's sums its shards' (``store/shards.py``)."""
        entry = await self.kv.get(self._progress_key(job_id))
        shards = await self.kv.scan(self._k("shard", job_id, ""))
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
        prefix = self._failures_prefix(job_id)
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
        deadline = time.monotonic() + _SUBMIT_PATIENCE
        attempt = 0
        while True:
            if attempt:
                if time.monotonic() > deadline:
                    raise Unavailable("the job queue is busy with concurrent submissions "
                                      "for too long; try again")
                # Full jitter, growing to at most 50 ms: contending submitters spread out.
                await trio.sleep(backoff_delay(attempt, first=0.002, cap=0.025, jitter=1.0))
            attempt += 1
            now = self._clock()
            pointer, current, room = await self._read_for_submit(identity_key)
            admission = _Admission(*room, waiting_capacity)
            if current is not None:
                job = self._decode_job(current)
                if job.state in ACTIVE_STATES:
                    return job, SubmitOutcome.ALREADY_RUNNING
                if job.state is JobState.STOPPED:
                    admission.check()
                    resumed = replace(job.apply(JobEvent.RESUME, now), seq=self._seq())
                    ok = await self.kv.txn(
                        [Compare(current.key, current.revision), admission.compare],
                        self._enqueue(resumed, pack_record(resumed.to_wire())),
                    )
                    if ok is not None:
                        return resumed, SubmitOutcome.RESUMED
                    continue
            admission.check()
            job = replace(JobRecord.new(job_type, path, dst, options, now), seq=self._seq())
            ok = await self.kv.txn(
                [Compare(identity_key, 0 if pointer is None else pointer.revision),
                 admission.compare],
                [*self._enqueue(job, pack_record(job.to_wire())),
                 Put(identity_key, job.id.encode())],
            )
            if ok is not None:
                return job, SubmitOutcome.CREATED

    async def _read_for_submit(
        self, identity_key: bytes
    ) -> tuple[Entry | None, Entry | None, tuple[Compare, int]]:
        """The identity pointer, its job, and the room in the queue, read side by side.

        Errors are raised as themselves (the store's own family), not as a group.
        """
        pointer: Entry | None = None
        current: Entry | None = None
        room: tuple[Compare, int] | None = None
        errors: list[Exception] = []

        async def read_current() -> None:
            nonlocal current, pointer
            try:
                pointer = await self.kv.get(identity_key)
                if pointer is not None:
                    current = await self.kv.get(self._job_key(_job_id(pointer)))
            except Exception as exc:
                errors.append(exc)

        async def read_room() -> None:
            nonlocal room
            try:
                room = await self._room()
            except Exception as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_current)
            nursery.start_soon(read_room)
        if errors:
            raise errors[0]
        assert room is not None
        return pointer, current, room

    async def _room(self) -> tuple[Compare, int]:
        """(the compare that keeps a count true until the write, the count).

        ``meta/waiting-added`` is read before counting: if anything is queued after that
        read, the submission's compare on it fails and it counts again.
        """
        added = await self.kv.get(self._added_key())
        waiting = await self.waiting_count()
        return Compare(self._added_key(), 0 if added is None else added.revision), waiting

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
            if pointer is not None and _job_id(pointer) != job.id:
                raise WrongState(
                    f"job {job.id} was superseded by job {_job_id(pointer)} for "
                    f"the same {job.type.value} path; rerun that one instead"
                )
            rerun = replace(job.apply(JobEvent.RERUN, self._clock()), seq=self._seq())
            compares = [Compare(self._job_key(job.id), owned.revision)]
            if pointer is not None:  # and no submit replaced it meanwhile
                compares.append(Compare(pointer.key, pointer.revision))
            ops = self._enqueue(rerun, pack_record(rerun.to_wire()))
            if job.state is JobState.FAILED:
                # A failed job starts over, so that its failed files are tried again.
                ops += [Delete(self._progress_key(job.id)),
                        Delete(self._failures_prefix(job.id), prefix=True),
                        *self._shard_deletes(job.id)]
            if await self.kv.txn(compares, ops):
                return rerun
        raise Fenced("the job kept changing during rerun; try again")

    # ------------------------------------------------------------------ owner side
    async def claim_waiting(self, owner: str, limit: int) -> list[OwnedJob]:
        """Claim up to ``limit`` waiting jobs, oldest first (see the module docstring)."""
        claimed: list[tuple[bytes, OwnedJob]] = []
        lost: set[tuple[bytes, int]] = set()  # (entry, job revision) claims that failed
        for _ in range(_CLAIM_ROUNDS):
            want = min(limit - len(claimed), _CLAIM_BATCH)
            if want <= 0:
                break
            window = want * _CLAIM_WINDOW
            page = await self.kv.scan(self._k("waiting", ""), limit=window)
            if not page:
                break
            picks = await self._pick(page, owner, want, lost)
            if not picks:
                if len(page) < window:
                    break  # everything in the queue is being taken by peers
                continue
            now = self._clock()
            txns: list[Txn] = []
            jobs: list[JobRecord] = []
            for waiting, record, revision in picks:
                job = record.apply(JobEvent.CLAIM, now, owner=owner)
                jobs.append(job)
                txns.append((
                    [Compare(self._job_key(job.id), revision),
                     Compare(waiting.key, waiting.revision)],
                    [Put(self._job_key(job.id), pack_record(job.to_wire())),
                     Delete(waiting.key)],
                ))
            results = await self.kv.txn_each(txns)
            for (waiting, _, revision), job, applied in zip(picks, jobs, results, strict=True):
                if applied is None:
                    lost.add((waiting.key, revision))
                    self._contended_until = time.monotonic() + _CONTENDED_FOR
                else:
                    claimed.append((waiting.key, OwnedJob(job, applied)))
            if len(page) < window and all(r is not None for r in results):
                break  # the whole queue was in view and every claim held
        claimed.sort(key=lambda item: item[0])  # queue order
        return [owned for _, owned in claimed]

    async def _pick(
        self, page: list[Entry], owner: str, want: int, lost: set[tuple[bytes, int]]
    ) -> list[tuple[Entry, JobRecord, int]]:
        """Up to ``want`` entries of ``page`` to claim: (entry, job, the job's revision)."""
        spread = 2 * want if time.monotonic() < self._contended_until else 0
        order = claim_order([entry.key for entry in page], owner, spread)
        picks: list[tuple[Entry, JobRecord, int]] = []
        for i in order:
            if len(picks) >= want:
                break
            waiting = page[i]
            if waiting.value and (waiting.key, waiting.revision) not in lost:
                picks.append((waiting, self._decode_job(waiting), waiting.revision))
                continue
            # An entry without the record (written before records were kept in the index),
            # or one whose claim already failed unchanged: read the job itself.
            job_id = _job_id(waiting, waiting.key.rsplit(b"/", 1)[-1])
            entry = await self.kv.get(self._job_key(job_id))
            job = self._decode_job(entry) if entry is not None else None
            if job is None or job.state is not JobState.WAITING or (
                    job.seq and self._waiting_key(job) != waiting.key):
                # Its job is gone or no longer waits under this entry: drop the entry.
                await self.kv.txn([Compare(waiting.key, waiting.revision)],
                                  [Delete(waiting.key)])
                continue
            if entry is not None and (waiting.key, entry.revision) not in lost:
                picks.append((waiting, job, entry.revision))
        return picks

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
        packed = pack_record(job.to_wire())
        ops: list[Op] = (
            self._enqueue(job, packed) if job.state is JobState.WAITING
            else [Put(self._job_key(job.id), packed)]
        )
        if progress is not None:
            ops.append(Put(self._progress_key(job.id), self._pack_progress(owned, progress)))
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
        fence = [Compare(self._job_key(owned.job.id), owned.revision)]
        *chunks, ops = self.failure_chunks(owned.job.id, failures, cleared)
        for chunk in chunks:
            if await self.kv.txn(fence, chunk) is None:
                raise Fenced(f"job {owned.job.id} changed under its owner; abandoning it")
        ops.append(Put(self._progress_key(owned.job.id), self._pack_progress(owned, progress)))
        if await self.kv.txn(fence, ops) is None:
            raise Fenced(f"job {owned.job.id} changed under its owner; abandoning it")

    def failure_chunks(self, job_id: str, failures: Iterable[FailureRecord],
                       cleared: Iterable[str] = ()) -> list[list[Op]]:
        """The writes of new and resolved failures, in chunks a transaction takes with
        one more op; the last chunk (always there, maybe empty) is for that op."""
        changes: dict[bytes, Op] = {}
        for failure in failures:
            key = self._failures_prefix(job_id) + _path_bytes(failure.path)
            changes[key] = Put(
                key,
                pack_record(
                    {"reason": failure.reason.value, "message": failure.message,
                     "time": failure.time}
                ),
            )
        for path in cleared:
            key = self._failures_prefix(job_id) + _path_bytes(path)
            changes[key] = Delete(key)
        ops = list(changes.values())
        size = _MAX_TXN_OPS - 1
        return [ops[i:i + size] for i in range(0, len(ops), size)] or [[]]

    @staticmethod
    def _pack_progress(owned: OwnedJob, progress: Progress) -> bytes:
        """Progress signed with its writer: an audit of the store's history (the chaos
        run's double-owner check) can then tell whether the writer owned the job."""
        return pack_record(replace(progress, writer=owned.job.owner).to_wire())

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
                    self._enqueue(back, pack_record(back.to_wire())),
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
                *self._shard_deletes(job.id),
            ]
            compares = [Compare(entry.key, entry.revision)]
            pointer = await self.kv.get(self._identity_key(job.identity))
            if pointer is not None and _job_id(pointer) == job.id:
                ops.append(Delete(pointer.key))
                compares.append(Compare(pointer.key, pointer.revision))
            if await self.kv.txn(compares, ops) is not None:
                removed += 1
        return removed


def _job_id(entry: Entry, raw: bytes | None = None) -> str:
    """The job id an identity pointer (or a waiting key's last part) holds."""
    try:
        return (entry.value if raw is None else raw).decode("ascii")
    except UnicodeDecodeError:
        raise JobServiceError(f"the job store entry {entry.key!r} is unreadable") from None


def _path_bytes(path: str) -> bytes:
    """A file path as a key part; names that are not UTF-8 round-trip as they came."""
    return path.encode("utf-8", "surrogateescape")


def claim_order(keys: Sequence[bytes], owner: str, spread: int) -> list[int]:
    """The order in which ``owner`` tries the waiting entries ``keys`` (oldest first).

    Each entry's position is pushed back by a stable pseudo-random offset in
    ``[0, spread)`` drawn from (owner, key): coordinators prefer different entries, and
    no entry is tried after one that is ``spread`` or more positions younger.
    ``spread`` 0 is strict FIFO.
    """
    if spread <= 1:
        return list(range(len(keys)))

    def offset(key: bytes) -> int:
        digest = hashlib.blake2b(owner.encode() + b"\0" + key, digest_size=8).digest()
        return int.from_bytes(digest, "big") % spread

    return sorted(range(len(keys)), key=lambda i: (i + offset(keys[i]), i))




__all__: Sequence[str] = [
    "claim_order",
    "FailureRecord",
    "JobStore",
    "OwnedJob",
    "SubmitOutcome",
]
