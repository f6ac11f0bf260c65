"""The bookkeeping of one job: what is owed, what is done, what to do next. No I/O.

Theory of operation
-------------------
A job lists its files in a total order and numbers them. The words used here:

* An *assignment* is one file on one worker: its ring owners for LOAD (``--replicas``),
  every member for FREE, one worker for COPY and MOVE. A file is *final* once each of
  its assignments has answered or failed for good.
* A *segment* is ``segment_size`` consecutive files (the job's batch size). When every
  file of a segment, and of every segment before it, is final, the segment *commits*:
  its counters join ``committed`` and its last file becomes the checkpoint. So a
  checkpoint only ever covers final files, and a job resumed after it misses nothing.
* A *task* is up to ``batch_size`` assignments queued on one worker and sent together.

The shell (``coordinator/runner.py``) does the I/O: it lists, sends tasks, sleeps and
writes the store. It feeds events in and carries out the decisions that come back:

=====================================  ===============================================
event                                  decisions
=====================================  ===============================================
``file_listed``, ``files_listed``      ``Dispatch`` (work queued on a worker)
``take_task``                          (returns the next ``Task`` for a worker)
``task_finished``, ``task_failed``     ``RetryAfter``, ``FileFailed``,
                                       ``CheckpointAdvanced``, ``FailEarly``,
                                       ``PassFinished``
``retry_due``, ``placement_changed``   ``Dispatch`` (to the file's live owner)
``stop``                               ``CancelTasks`` (the workers running its tasks)
=====================================  ===============================================

An assignment that fails for a retryable ``Reason`` is retried after
``backoff × 2^(attempt-1)`` (±20% jitter), up to ``max_attempts``, on the live owner of
its file: a worker that is down or gone leaves the ``Placement``, and what was queued
on it moves to the next live owner on the ring. Otherwise its file fails. Once failures
pass both thresholds the job fails early, as Alluxio does.

Counters shown to users never go back. A resumed ledger counts afresh from
``committed`` (the files past the checkpoint are done again), and a verify pass decides
failures afresh, so the true count may dip below what was already shown. ``shown`` is
the fieldwise maximum of what was shown before and the true count; it is what the
store keeps as ``live``. Failed attempts (``subtasks_failed``) are never re-counted:
they carry over a resume as they are.

Why this module is long
-----------------------
It is one state machine: ``Ledger`` (about 470 of its lines) and the values it takes
and gives (policy, placement, decisions, tasks). Its parts share one set of fields: a
retry moves an assignment between queues, which changes what a segment still owes,
which decides when the checkpoint advances, which decides which failures may be saved.
Split into modules, each part would reach into the others' fields and an invariant
would span files; whole, it is tested as one machine (``tests/unit/test_ledger.py``,
with Hypothesis). The per-file rows it keeps are in ``core/rows.py``, the counters in
``core/progress.py``, the retry delay in ``core/backoff.py``.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace

from alluxiojob.core.backoff import JITTER, backoff_delay
from alluxiojob.core.job import JobType
from alluxiojob.core.progress import (
    RECENT_TASKS_MAX,
    Counters,
    FailureRecord,
    Progress,
    TaskRecord,
    TaskStatus,
    should_fail_early,
)
from alluxiojob.core.reasons import Reason
from alluxiojob.core.ring import HashRing
from alluxiojob.core.rows import FileEntry, FileResult, FileStatus


class PassKind(enum.StrEnum):
    LOAD = "LOAD"  # the job's own pass (load, free, copy or move every listed file)
    VERIFY = "VERIFY"  # recheck every file on its owners and reload what is missing


@dataclass(frozen=True)
class LedgerPolicy:
    op: JobType
    segment_size: int  # files per segment, and per task at most
    max_attempts: int = 3
    backoff: float = 0.5  # seconds before the first retry; doubles per attempt
    replicas: int = 1
    failure_count_threshold: int = 100  # negative: never fail early
    failure_ratio_threshold: float = 0.05
    failure_list_max: int = 1000
    metadata_only: bool = False  # LOAD --metadata-only: files are recorded, no byte loaded

    @property
    def queue_capacity(self) -> int:
        """Assignments queued per worker before the listing waits for that worker."""
        return 2 * self.segment_size


@dataclass(frozen=True)
class Placement:
    """Where files go: the hash ring of live workers, and every member (FREE goes to all).

    ``ring`` holds every member when none is live, so that work fails as unreachable
    instead of waiting for ever.
    """

    ring: HashRing
    members: tuple[str, ...]
    everyone: HashRing | None = None  # every member, live or down (None: ``ring`` is it)

    def single_owner(self, op: JobType, replicas: int) -> Callable[[str], str] | None:
        """The function that gives a file's one worker when ``targets`` would give
        exactly one, from the live ring (COPY, MOVE, a LOAD of one replica); else None."""
        if op is JobType.FREE or (op is JobType.LOAD and replicas != 1) or not len(self.ring):
            return None
        return self.ring.primary

    def targets(self, op: JobType, path: str, replicas: int) -> list[str]:
        if op is JobType.FREE:
            return list(self.members)
        if op in (JobType.COPY, JobType.MOVE):
            return self.ring.owners(path, 1)  # any worker will do; the ring spreads them
        owners = self.ring.owners(path, replicas)
        if len(owners) < replicas and self.everyone is not None:
            # Fewer live workers than replicas: the missing replicas go to down owners,
            # where they wait (and fail as unreachable if the owner stays down). A
            # replica is never dropped, nor put beside another replica of its file.
            for worker in self.everyone.owners(path, replicas):
                if len(owners) == replicas:
                    break
                if worker not in owners:
                    owners.append(worker)
        return owners


# ------------------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class Dispatch:
    """Work is queued on ``worker``: its dispatcher should take a task."""

    worker: str


@dataclass(frozen=True)
class RetryAfter:
    """Call ``retry_due(assignment)`` after ``delay`` seconds."""

    assignment: int
    delay: float


@dataclass(frozen=True)
class CheckpointAdvanced:
    checkpoint: tuple[str, ...]


@dataclass(frozen=True)
class FailEarly:
    message: str


@dataclass(frozen=True)
class PassFinished:
    """Every listed file of the pass is final and committed."""


@dataclass(frozen=True)
class FileFailed:
    """A file failed for good (for the log; the failure list gets it with its segment)."""

    path: str
    reason: Reason
    message: str
    worker: str
    attempts: int


@dataclass(frozen=True)
class CancelTasks:
    """Tell these workers to cancel the job's tasks (the job was stopped)."""

    workers: tuple[str, ...]


Decision = (
    Dispatch | RetryAfter | CheckpointAdvanced | FailEarly | PassFinished | FileFailed
    | CancelTasks
)


# ------------------------------------------------------------------------------ records


@dataclass(slots=True)
class _File:
    index: int
    segment: int
    entry: FileEntry
    remaining: int  # assignments not final yet
    ok: int = 0
    ok_bytes: int = 0
    failed: bool = False
    workers: list[str] = field(default_factory=list)  # where each replica is placed


@dataclass(slots=True)
class Assignment:
    id: int
    file: _File
    replica: int  # 0 = primary owner
    worker: str
    attempts: int = 0

    @property
    def entry(self) -> FileEntry:
        return self.file.entry

    @property
    def index(self) -> int:
        """The file's place in the listing order of the pass."""
        return self.file.index


@dataclass
class Task:
    number: int  # per job, from 0: what ``job stat -v`` shows
    worker: str
    assignments: list[Assignment]
    started_at: float

    @property
    def entries(self) -> list[FileEntry]:
        return [a.file.entry for a in self.assignments]


# Per-file counting adds into lists of ints in the order of Counters' fields: a file
# costs a few additions, not the new Counters objects that adding them would build.
_FIELDS = tuple(f.name for f in fields(Counters))
_AT = {name: index for index, name in enumerate(_FIELDS)}
# What a file or an attempt adds: (index of its files field, of its bytes field or -1).
_LISTED = (_AT["files_listed"], _AT["bytes_listed"])
_PROCESSED = (_AT["files_processed"], _AT["bytes_processed"])
_SKIPPED = (_AT["files_skipped"], _AT["bytes_skipped"])
_FAILED = (_AT["files_failed"], -1)
_SUBTASK_FAILED = (_AT["subtasks_failed"], -1)
_FAILURES = (_FAILED, _SUBTASK_FAILED)


def _sums(counters: Counters) -> list[int]:
    return [getattr(counters, name) for name in _FIELDS]


@dataclass(slots=True)
class _Segment:
    files: int = 0
    final: int = 0
    sealed: bool = False
    last_parts: tuple[str, ...] = ()
    sums: list[int] = field(default_factory=lambda: [0] * len(_FIELDS))  # its Counters
    failures: list[FailureRecord] = field(default_factory=list)


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Ledger:
    def __init__(
        self,
        policy: LedgerPolicy,
        stored: Progress | None = None,
        *,
        failures_stored: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        """A fresh job, or one resumed from the ``stored`` progress of a former owner."""
        stored = stored or Progress()
        self.policy = policy
        self._rng = rng or random.Random()
        self.committed = stored.committed
        self.checkpoint = stored.checkpoint
        # Failed attempts happened, whoever counted them: they carry over as they are.
        self._true = replace(stored.committed, subtasks_failed=max(
            stored.live.subtasks_failed, stored.committed.subtasks_failed))
        # What was shown before. The true counts only grow, but for a verify pass's
        # reset of failures, which raises this floor first: so max(floor, true) never
        # goes back.
        self._shown_floor = stored.live
        self.verify_passes = stored.verify_passes
        self.files_repaired = stored.files_repaired
        self.workers_seen: set[str] = set(stored.workers)
        self._tasks: dict[int, TaskRecord] = {t.task: t.settled() for t in stored.tasks}
        self._next_task = max(self._tasks, default=-1) + 1
        self._failures_kept = failures_stored
        self._unsaved_failures: list[FailureRecord] = []
        self.failed_early = ""
        self.pass_kind = PassKind.LOAD
        self._reset_pass()

    def _reset_pass(self) -> None:
        self.listing_done = False
        self.pass_finished = False
        self._pass_sums = [0] * len(_FIELDS)
        self._segments: dict[int, _Segment] = {}
        self._next_commit = 0
        self._files_listed = 0
        self._next_assignment = 0
        self._queues: dict[str, deque[Assignment]] = {}
        self._retrying: dict[int, Assignment] = {}
        self._in_flight: dict[int, Task] = {}
        self._last_targets: tuple[str, ...] = ()

    # ================================================================== views
    @property
    def _true(self) -> Counters:
        return Counters(*self._true_sums)

    @_true.setter
    def _true(self, counters: Counters) -> None:
        self._true_sums = _sums(counters)

    @property
    def live(self) -> Counters:
        """The true counters of the job so far (failures: of the current pass)."""
        return self._true

    @property
    def shown(self) -> Counters:
        """What users see: never below anything they saw before."""
        return self._shown_floor.envelope(self._true)

    @property
    def pass_counters(self) -> Counters:
        """What the current verify pass found, file by file (its repairs too)."""
        return Counters(*self._pass_sums)

    @property
    def committed_files(self) -> int:
        """Files of this pass in committed segments: all final, all before the checkpoint."""
        return min(self._next_commit * self.policy.segment_size, self._files_listed)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def queued(self, worker: str) -> int:
        queue = self._queues.get(worker)
        return len(queue) if queue else 0

    def queued_assignments(self) -> Iterator[Assignment]:
        for queue in self._queues.values():
            yield from queue

    def backlogged(self) -> bool:
        """The last file's workers have full queues: the listing should wait for them."""
        capacity = self.policy.queue_capacity
        for worker in self._last_targets:
            queue = self._queues.get(worker)
            if queue is not None and len(queue) >= capacity:
                return True
        return False

    def recent_tasks(self) -> tuple[TaskRecord, ...]:
        return tuple(self._tasks[number] for number in sorted(self._tasks))

    def progress(self, base: Progress, *, active_seconds: float, recent_rate: float) -> Progress:
        """The record the store keeps for this job, from ``base`` (what it had)."""
        return replace(
            base,
            live=self.shown,
            committed=self.committed,
            checkpoint=self.checkpoint,
            listing_done=self.listing_done and self.pass_kind is PassKind.LOAD,
            active_seconds=active_seconds,
            recent_rate=recent_rate,
            verify_passes=self.verify_passes,
            files_repaired=self.files_repaired,
            workers=tuple(sorted(self.workers_seen)),
            tasks=self.recent_tasks(),
        )

    def outcome(self) -> str:
        """Why the job failed, or "" if it succeeded (call once every pass finished)."""
        if self.failed_early:
            return self.failed_early
        if self._true.files_failed:
            return (f"{self._true.files_failed} files failed; "
                    "see --progress --file-status FAILURE")
        return ""

    # ================================================================== failures
    @property
    def unsaved_failures(self) -> int:
        return len(self._unsaved_failures)

    def take_failures(self) -> list[FailureRecord]:
        """Failures of committed segments not yet in the store (the caller writes them).

        Paths are as listed: a name that is not UTF-8 still holds its surrogates.
        """
        failures, self._unsaved_failures = self._unsaved_failures, []
        return failures

    def return_failures(self, failures: Sequence[FailureRecord]) -> None:
        """The store write failed: keep these for the next one."""
        self._unsaved_failures[:0] = failures

    def keep_uncommitted_failures(self) -> None:
        """The job ends early: failures of segments that never committed are kept too."""
        for number in sorted(self._segments):
            self._keep_failures(self._segments[number].failures)
            self._segments[number].failures = []

    def _keep_failures(self, failures: list[FailureRecord]) -> None:
        room = max(0, self.policy.failure_list_max - self._failures_kept)
        kept = failures[:room]
        self._unsaved_failures.extend(kept)
        self._failures_kept += len(kept)

    # ================================================================== passes
    def begin_pass(self, kind: PassKind) -> None:
        """Start a pass. A verify pass decides afresh which files are failed (the caller
        clears the stored failure list): a file it repairs is fine."""
        self.pass_kind = kind
        self._reset_pass()
        if kind is PassKind.VERIFY:
            self._shown_floor = self.shown
            self._true = replace(self._true, files_failed=0)
            self._failures_kept = 0
            self._unsaved_failures = []

    def finish_pass(self) -> int:
        """Close a finished pass; returns the files a verify pass repaired (0 for LOAD)."""
        if self.pass_kind is not PassKind.VERIFY:
            return 0
        repaired = self._pass_sums[_AT["files_processed"]]
        self.verify_passes += 1
        self.files_repaired += repaired
        return repaired

    # ================================================================== listing
    def file_listed(
        self, parts: tuple[str, ...], entry: FileEntry, placement: Placement, now: float,
        failure: tuple[Reason, str] | None = None,
    ) -> list[Decision]:
        """The listing found ``entry`` (``parts``: its path under the job's root).

        ``failure``: the listing already knows the file fails, and why (a manifest names
        a file that does not exist): it is counted and failed here, sent to no worker.
        """
        decisions: list[Decision] = []
        self._listed_one(parts, entry, placement, now, failure, decisions, set())
        return decisions

    def files_listed(
        self, files: Sequence[tuple[tuple[str, ...], FileEntry, tuple[Reason, str] | None]],
        placement: Placement, now: float,
    ) -> tuple[list[Decision], int]:
        """``file_listed`` for each of ``files`` (parts, entry, failure) in order, up to
        the first after which the listing should wait (``backlogged``) or the job fails
        early: (the decisions, with one ``Dispatch`` per worker, how many were taken)."""
        decisions: list[Decision] = []
        woken: set[str] = set()
        taken = 0
        owner = placement.single_owner(self.policy.op, self.policy.replicas)
        if owner is None or self.pass_kind is not PassKind.LOAD:
            for parts, entry, failure in files:
                taken += 1
                self._listed_one(parts, entry, placement, now, failure, decisions, woken)
                if self.failed_early or self.backlogged():
                    break
            return decisions, taken
        # The usual file (one worker, an ASCII name, no failure known, the job's own
        # pass) is taken in here, with ``_listed_one``'s steps inlined; any other goes
        # through ``_listed_one``.
        size = self.policy.segment_size
        capacity = self.policy.queue_capacity
        queues = self._queues
        segments = self._segments
        true_sums = self._true_sums
        files_at, bytes_at = _LISTED
        for parts, entry, failure in files:
            taken += 1
            path = entry.path
            if failure is not None or not (path.isascii() and entry.dst.isascii()):
                self._listed_one(parts, entry, placement, now, failure, decisions, woken)
                if self.failed_early or self.backlogged():
                    break
                continue
            index = self._files_listed
            self._files_listed = index + 1
            number = index // size
            segment = segments.get(number)
            if segment is None:
                segment = self._open_segment(number, decisions)
            segment.files += 1
            segment.last_parts = parts
            length = entry.length
            sums = segment.sums
            sums[files_at] += 1
            sums[bytes_at] += length
            true_sums[files_at] += 1
            true_sums[bytes_at] += length
            worker = owner(path)
            self._next_assignment += 1
            queue = queues.get(worker)
            if queue is None:
                queue = queues[worker] = deque()
            queue.append(Assignment(self._next_assignment,
                                    _File(index, number, entry, 1, 0, 0, False, [worker]),
                                    0, worker))
            if worker not in woken:
                woken.add(worker)
                decisions.append(Dispatch(worker))
            self._last_targets = (worker,)
            if self.failed_early or len(queue) >= capacity:  # ``backlogged``
                break
        return decisions, taken

    def _open_segment(self, number: int, decisions: list[Decision]) -> _Segment:
        """The first file of segment ``number`` is listed: the one before is sealed (and
        may commit, its decisions into ``decisions``)."""
        if number:
            previous = self._segments.get(number - 1)
            if previous is not None:
                previous.sealed = True
                decisions += self._advance()
        segment = self._segments[number] = _Segment()
        return segment

    def _listed_one(
        self, parts: tuple[str, ...], entry: FileEntry, placement: Placement, now: float,
        failure: tuple[Reason, str] | None, decisions: list[Decision], woken: set[str],
    ) -> None:
        """One listed file; its decisions go to ``decisions``, a ``Dispatch`` only for a
        worker not yet in ``woken``."""
        index = self._files_listed
        self._files_listed += 1
        number = index // self.policy.segment_size
        segment = self._segments.get(number)
        if segment is None:
            segment = self._open_segment(number, decisions)
        segment.files += 1
        segment.last_parts = parts
        self._count(segment, _LISTED, entry.length)
        if failure is None and not _is_utf8(entry.path + entry.dst):
            # Such a name cannot travel in the protocol: fail it here, by name.
            failure = (Reason.INVALID_PATH, "the file name is not valid UTF-8")
        if failure is not None:
            listed = _File(index, number, entry, remaining=1)
            assignment = Assignment(self._new_assignment_id(), listed, 0, "")
            self._last_targets = ()
            decisions += self._fail_for_good(assignment, failure[0], failure[1], now)
            self._judged(decisions)
            return
        targets = placement.targets(self.policy.op, entry.path, self.policy.replicas)
        if not targets:
            raise ValueError("no worker to place the file on: wait for one before listing")
        listed = _File(index, number, entry, remaining=len(targets), workers=targets)
        queues = self._queues
        for replica, worker in enumerate(targets):
            self._next_assignment += 1
            queue = queues.get(worker)
            if queue is None:
                queue = queues[worker] = deque()
            queue.append(Assignment(self._next_assignment, listed, replica, worker))
            if worker not in woken:
                woken.add(worker)
                decisions.append(Dispatch(worker))
        self._last_targets = tuple(targets)

    def finish_listing(self) -> list[Decision]:
        self.listing_done = True
        if self._segments:
            self._segments[max(self._segments)].sealed = True
        return self._advance()

    def _new_assignment_id(self) -> int:
        self._next_assignment += 1
        return self._next_assignment

    # ================================================================== dispatch
    def _enqueue(self, assignment: Assignment) -> list[Decision]:
        queue = self._queues.get(assignment.worker)
        if queue is None:
            queue = self._queues[assignment.worker] = deque()
        queue.append(assignment)
        return [Dispatch(assignment.worker)]

    def take_task(self, worker: str, now: float) -> Task | None:
        """Up to ``segment_size`` assignments queued on ``worker``, as one task to send."""
        queue = self._queues.get(worker)
        if not queue:
            return None
        # Two replicas of one file may share a worker (fewer live workers than replicas):
        # they go in separate tasks, so that a task never names a file twice.
        # Taken at once, and looked at one by one only when a path is there twice.
        popleft = queue.popleft
        taken = [popleft() for _ in range(min(len(queue), self.policy.segment_size))]
        if len({a.file.entry.path for a in taken}) < len(taken):
            queue.extendleft(reversed(taken))
            taken = []
            later: list[Assignment] = []
            paths: set[str] = set()
            while queue and len(taken) < self.policy.segment_size:
                assignment = queue.popleft()
                if assignment.file.entry.path in paths:
                    later.append(assignment)
                else:
                    paths.add(assignment.file.entry.path)
                    taken.append(assignment)
            queue.extendleft(reversed(later))
        if not queue:
            del self._queues[worker]
        task = Task(self._next_task, worker, taken, now)
        self._next_task += 1
        self._in_flight[task.number] = task
        self._record(TaskRecord(task.number, worker, TaskStatus.RUNNING, len(taken), now))
        return task

    def _record(self, record: TaskRecord) -> None:
        self._tasks[record.task] = record
        while len(self._tasks) > RECENT_TASKS_MAX:
            del self._tasks[min(self._tasks)]

    def _end_record(self, task: Task, status: TaskStatus, now: float, *,
                    files_failed: int = 0, error: str = "") -> None:
        record = self._tasks.get(task.number)
        if record is not None:
            self._tasks[task.number] = replace(record, status=status, ended_at=now,
                                               files_failed=files_failed, error=error)

    # ================================================================== results
    def task_finished(
        self, task: Task, results: Sequence[FileResult], now: float
    ) -> list[Decision]:
        """The worker answered ``task`` with a result per file."""
        if self._in_flight.pop(task.number, None) is None:
            return []  # already settled (the job was stopped meanwhile)
        self.workers_seen.add(task.worker)
        by_path = {result.path: result for result in results}
        decisions: list[Decision] = []
        failed = 0
        load_pass = self.pass_kind is PassKind.LOAD
        segments = self._segments
        true_sums = self._true_sums
        ok_status, failed_status = FileStatus.OK, FileStatus.FAILED
        processed_at, processed_bytes_at = _PROCESSED
        # Bytes processed: FREE reports what was freed on every worker, and a
        # metadata-only LOAD loads nothing (as ``_file_counts``).
        reported = self.policy.op is JobType.FREE or self.policy.metadata_only
        for assignment in task.assignments:
            listed = assignment.file
            result = by_path.get(listed.entry.path)
            if (load_pass and result is not None and result.status is ok_status
                    and listed.remaining == 1 and not listed.failed and not listed.ok):
                # The usual answer: the file's one assignment is done. Its counts and
                # its segment, as ``_assignment_final`` and ``_count`` would.
                listed.remaining = 0
                listed.ok = 1
                nbytes = listed.ok_bytes = result.bytes
                if not reported:
                    nbytes = listed.entry.length
                segment = segments[listed.segment]
                for sums in (segment.sums, true_sums):
                    sums[processed_at] += 1
                    sums[processed_bytes_at] += nbytes
                segment.final += 1
                if segment.final >= segment.files:
                    decisions += self._advance()
                continue
            if result is None:
                failed += 1
                decisions += self._attempt_failed(
                    assignment, Reason.WORKER_RPC_FAILED,
                    f"worker {task.worker} returned no result for the file", now)
            elif result.status is failed_status:
                failed += 1
                decisions += self._attempt_failed(
                    assignment, result.reason or Reason.IO_ERROR, result.message, now)
            else:
                if result.status is FileStatus.OK:
                    assignment.file.ok += 1
                    assignment.file.ok_bytes += result.bytes
                decisions += self._assignment_final(assignment)
        self._end_record(task, TaskStatus.FAILED if failed else TaskStatus.COMPLETED, now,
                         files_failed=failed)
        return self._judged(decisions)

    def task_failed(self, task: Task, reason: Reason, message: str, now: float) -> list[Decision]:
        """The whole task failed: the worker was lost, unreachable, or too slow."""
        if self._in_flight.pop(task.number, None) is None:
            return []
        decisions: list[Decision] = []
        for assignment in task.assignments:
            decisions += self._attempt_failed(assignment, reason, message, now)
        self._end_record(task, TaskStatus.FAILED, now, files_failed=len(task.assignments),
                         error=f"{reason.value}: {message}")
        return self._judged(decisions)

    def _attempt_failed(
        self, assignment: Assignment, reason: Reason, message: str, now: float
    ) -> list[Decision]:
        self._count(self._segments[assignment.file.segment], _SUBTASK_FAILED)
        assignment.attempts += 1
        if reason.retryable and assignment.attempts < self.policy.max_attempts:
            delay = backoff_delay(assignment.attempts, first=self.policy.backoff,
                                  jitter=JITTER, rng=self._rng)
            self._retrying[assignment.id] = assignment
            return [RetryAfter(assignment.id, delay)]
        return self._fail_for_good(assignment, reason, message, now)

    def _fail_for_good(
        self, assignment: Assignment, reason: Reason, message: str, now: float
    ) -> list[Decision]:
        listed = assignment.file
        if not listed.failed:
            self._segments[listed.segment].failures.append(
                FailureRecord(listed.entry.path, reason, message, now))
        listed.failed = True
        decisions: list[Decision] = [FileFailed(listed.entry.path, reason, message,
                                                assignment.worker, assignment.attempts)]
        decisions += self._assignment_final(assignment)
        return decisions

    def _judged(self, decisions: list[Decision]) -> list[Decision]:
        """``decisions`` of one event, and ``FailEarly`` if the job is now past both
        thresholds. Judged once the whole event is counted: a task's answer counts as
        one, so the order of its files cannot fail a job that its sum would not."""
        count = self.policy.failure_count_threshold
        ratio = self.policy.failure_ratio_threshold
        if not self.failed_early and should_fail_early(self._true, count, ratio):
            self.failed_early = (
                f"{self._true.files_failed} of {self._true.files_done} files failed, past "
                f"alluxio.job.failure.count.threshold={count} and "
                f"alluxio.job.failure.ratio.threshold={ratio}"
            )
            decisions.append(FailEarly(self.failed_early))
        return decisions

    def _assignment_final(self, assignment: Assignment) -> list[Decision]:
        """The assignment will not be tried again; its file counts once all of its are."""
        listed = assignment.file
        listed.remaining -= 1
        if listed.remaining:
            return []
        segment = self._segments[listed.segment]
        self._count(segment, *self._file_counts(listed))
        segment.final += 1
        if segment.final < segment.files:
            return []  # its segment is not done: nothing to commit
        return self._advance()

    def _file_counts(self, listed: _File) -> tuple[tuple[int, int], int]:
        """One final file's contribution: in exactly one of processed, skipped, failed
        (what it adds, for ``_count``)."""
        if listed.failed:
            return _FAILED, 0
        free = self.policy.op is JobType.FREE
        length = listed.entry.length
        if listed.ok:
            # FREE reports what was freed on every worker, and a metadata-only LOAD
            # loads nothing; the others count the listed length once, however many
            # replicas, so totals match the listing.
            reported = free or self.policy.metadata_only
            return _PROCESSED, listed.ok_bytes if reported else length
        return _SKIPPED, 0 if free else length

    def _count(self, segment: _Segment, what: tuple[int, int], nbytes: int = 0) -> None:
        """Add one file (or failed attempt) of kind ``what`` and ``nbytes`` bytes."""
        files, byte_field = what
        if self.pass_kind is PassKind.VERIFY:
            # A verify pass lists everything again and reports repairs on their own:
            # only its failures join the job's counters.
            self._pass_sums[files] += 1
            if byte_field >= 0:
                self._pass_sums[byte_field] += nbytes
            if what not in _FAILURES:
                return
        for sums in (segment.sums, self._true_sums):
            sums[files] += 1
            if byte_field >= 0:
                sums[byte_field] += nbytes

    def _advance(self) -> list[Decision]:
        """Commit every finished segment at the head of the order."""
        decisions: list[Decision] = []
        while True:
            segment = self._segments.get(self._next_commit)
            if segment is None or not segment.sealed or segment.final < segment.files:
                break
            if self.pass_kind is PassKind.LOAD:
                self.committed = self.committed + Counters(*segment.sums)
                self.checkpoint = segment.last_parts
                decisions.append(CheckpointAdvanced(self.checkpoint))
            self._keep_failures(segment.failures)
            del self._segments[self._next_commit]
            self._next_commit += 1
        if self.listing_done and not self._segments and not self.pass_finished:
            self.pass_finished = True
            decisions.append(PassFinished())
        return decisions

    # ================================================================== placement
    def retry_due(self, assignment_id: int, placement: Placement, now: float) -> list[Decision]:
        """A retry's backoff has passed: queue it again, on a live owner of its file."""
        assignment = self._retrying.pop(assignment_id, None)
        if assignment is None:
            return []
        if self.policy.op is JobType.FREE:
            if assignment.worker not in placement.members:
                return self._judged(self._fail_for_good(
                    assignment, Reason.WORKER_LOST,
                    f"worker {assignment.worker} left the membership", now))
            return self._enqueue(assignment)
        self._place(assignment, placement)
        return self._enqueue(assignment)

    def _place(self, assignment: Assignment, placement: Placement) -> None:
        """Move ``assignment`` to the next live owner of its file on the ring that holds
        no other replica of it, when its worker is not live. With no such worker it
        stays where it is: two replicas on one worker would be one copy counted twice."""
        if assignment.worker in placement.ring.workers or not len(placement.ring):
            return
        listed = assignment.file
        others = {w for r, w in enumerate(listed.workers) if r != assignment.replica}
        owners = placement.ring.owners(listed.entry.path, len(placement.ring))
        free = [w for w in owners if w not in others]
        if not free:
            return
        assignment.worker = free[0]
        listed.workers[assignment.replica] = assignment.worker

    def placement_changed(self, placement: Placement, now: float) -> list[Decision]:
        """Workers went down, came back, joined or left: queued work follows its owners.

        FREE work stays on its member (only that worker can free its cache); work queued
        on a worker that left the membership fails as lost and is retried as usual.
        """
        decisions: list[Decision] = []
        for worker in list(self._queues):
            if worker in placement.ring.workers:
                continue
            if self.policy.op is JobType.FREE:
                if worker in placement.members:
                    continue
                queue = self._queues.pop(worker)
                for assignment in queue:
                    decisions += self._attempt_failed(
                        assignment, Reason.WORKER_LOST,
                        f"worker {worker} left the membership", now)
                continue
            queue = self._queues.pop(worker)
            for assignment in queue:
                self._place(assignment, placement)
                decisions += self._enqueue(assignment)
        return self._judged(decisions)

    # ================================================================== stop
    def stop(self, now: float) -> list[Decision]:
        """The job was stopped (or taken over): its running tasks are cancelled."""
        workers = sorted({task.worker for task in self._in_flight.values()})
        for task in self._in_flight.values():
            self._end_record(task, TaskStatus.CANCELLED, now)
        self._in_flight.clear()
        return [CancelTasks(tuple(workers))] if workers else []
