"""The waiting queue: submissions admitted against an exact capacity, and claims.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import trio

from alluxiojob.core.backoff import backoff_delay
from alluxiojob.core.errors import CapacityExceeded, Unavailable
from alluxiojob.core.job import JobOptions, JobRecord, JobType, job_identity
from alluxiojob.core.states import ACTIVE_STATES, JobEvent, JobState
from alluxiojob.store.job_keys import JobKeys, OwnedJob, decode_job, job_id_of
from alluxiojob.store.kv import Compare, Delete, Entry, KVStore, Put, Txn
from alluxiojob.store.records import pack_record

_SUBMIT_PATIENCE = 10.0  # seconds a submission keeps retrying against concurrent ones
_CLAIM_BATCH = 50  # claims per transaction (each a nested txn; etcd allows 128 per level)
_CLAIM_WINDOW = 4  # the window read per round, in batches
_CLAIM_ROUNDS = 16  # rounds per claim_waiting call before the scheduler polls again
_CONTENDED_FOR = 5.0  # seconds to keep spreading after a claim lost to a peer


class SubmitOutcome(enum.StrEnum):
    CREATED = "CREATED"
    ALREADY_RUNNING = "ALREADY_RUNNING"
    RESUMED = "RESUMED"


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


class JobQueue:
    """The ``waiting/`` index of one job store: what enters it and who takes from it."""

    def __init__(self, kv: KVStore, keys: JobKeys, clock: Callable[[], float]) -> None:
        self.kv = kv
        self.keys = keys
        self.clock = clock
        self._contended_until = 0.0  # spread claims over the queue until then

    def seq(self) -> int:
        """A waiting job's place in the FIFO: its queueing time in ns, from the clock."""
        return int(self.clock() * 1e9)

    async def waiting_count(self) -> int:
        return await self.kv.count(self.keys.k("waiting", ""))

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
        identity_key = self.keys.identity(job_identity(job_type, path, dst))
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
            now = self.clock()
            pointer, current, room = await self._read_for_submit(identity_key)
            admission = _Admission(*room, waiting_capacity)
            if current is not None:
                job = decode_job(current)
                if job.state in ACTIVE_STATES:
                    return job, SubmitOutcome.ALREADY_RUNNING
                if job.state is JobState.STOPPED:
                    admission.check()
                    resumed = replace(job.apply(JobEvent.RESUME, now), seq=self.seq())
                    ok = await self.kv.txn(
                        [Compare(current.key, current.revision), admission.compare],
                        self.keys.enqueue(resumed, pack_record(resumed.to_wire())),
                    )
                    if ok is not None:
                        return resumed, SubmitOutcome.RESUMED
                    continue
            admission.check()
            job = replace(JobRecord.new(job_type, path, dst, options, now), seq=self.seq())
            ok = await self.kv.txn(
                [Compare(identity_key, 0 if pointer is None else pointer.revision),
                 admission.compare],
                [*self.keys.enqueue(job, pack_record(job.to_wire())),
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
                    current = await self.kv.get(self.keys.job(job_id_of(pointer)))
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
        added = await self.kv.get(self.keys.added())
        waiting = await self.waiting_count()
        return Compare(self.keys.added(), 0 if added is None else added.revision), waiting

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
            page = await self.kv.scan(self.keys.k("waiting", ""), limit=window)
            if not page:
                break
            picks = await self._pick(page, owner, want, lost)
            if not picks:
                if len(page) < window:
                    break  # everything in the queue is being taken by peers
                continue
            now = self.clock()
            txns: list[Txn] = []
            jobs: list[JobRecord] = []
            for waiting, record, revision in picks:
                job = record.apply(JobEvent.CLAIM, now, owner=owner)
                jobs.append(job)
                txns.append((
                    [Compare(self.keys.job(job.id), revision),
                     Compare(waiting.key, waiting.revision)],
                    [Put(self.keys.job(job.id), pack_record(job.to_wire())),
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
                picks.append((waiting, decode_job(waiting), waiting.revision))
                continue
            # An entry without the record (written before records were kept in the index),
            # or one whose claim already failed unchanged: read the job itself.
            job_id = job_id_of(waiting, waiting.key.rsplit(b"/", 1)[-1])
            entry = await self.kv.get(self.keys.job(job_id))
            job = decode_job(entry) if entry is not None else None
            if job is None or job.state is not JobState.WAITING or (
                    job.seq and self.keys.waiting(job) != waiting.key):
                # Its job is gone or no longer waits under this entry: drop the entry.
                await self.kv.txn([Compare(waiting.key, waiting.revision)],
                                  [Delete(waiting.key)])
                continue
            if entry is not None and (waiting.key, entry.revision) not in lost:
                picks.append((waiting, job, entry.revision))
        return picks

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



