"""The job ledger (``core/ledger.py``): pure bookkeeping, driven by any interleaving."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from alluxiojob.core.ledger import (
    Assignment,
    CancelTasks,
    CheckpointAdvanced,
    Decision,
    Dispatch,
    FailEarly,
    FileFailed,
    Ledger,
    LedgerPolicy,
    PassFinished,
    PassKind,
    Placement,
    RetryAfter,
    Task,
)
from alluxiojob.core.progress import (
    Counters,
    Progress,
    TaskRecord,
    TaskStatus,
    should_fail_early,
)
from alluxiojob.core.reasons import Reason
from alluxiojob.core.ring import HashRing
from alluxiojob.protocol.codec import FileEntry, FileResult, FileStatus, TaskOp

WORKERS = ("w0", "w1", "w2")


@functools.cache
def _placement(live: frozenset[str], members: tuple[str, ...]) -> Placement:
    return Placement(HashRing(live or members, virtual_nodes=50), members,
                     HashRing(members, virtual_nodes=50))


def placement(live: set[str], members: tuple[str, ...] = WORKERS) -> Placement:
    return _placement(frozenset(live), members)


def entry(index: int, length: int = 10) -> tuple[tuple[str, ...], FileEntry]:
    name = f"{index:04d}"
    return (name,), FileEntry(f"/data/{name}", length, 1)


def kinds(decisions: list[Decision]) -> list[type]:
    return [type(d) for d in decisions]


# ------------------------------------------------------------------------ examples


def test_a_job_of_three_files_on_one_worker() -> None:
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=2))
    where = placement({"w0"}, ("w0",))
    for i in range(3):
        assert ledger.file_listed(*entry(i), where, now=0.0) == [Dispatch("w0")]
    assert kinds(ledger.finish_listing()) == []
    task = ledger.take_task("w0", now=1.0)
    assert task is not None
    assert len(task.assignments) == 2, "a task holds one segment at most"
    ok = [FileResult(e.path, FileStatus.OK, e.length) for e in task.entries]
    assert ledger.task_finished(task, ok, now=2.0) == [CheckpointAdvanced(("0001",))]
    assert ledger.committed == Counters(files_listed=2, bytes_listed=20, files_processed=2,
                                        bytes_processed=20)
    last = ledger.take_task("w0", now=3.0)
    assert last is not None
    skipped = [FileResult(last.entries[0].path, FileStatus.SKIPPED)]
    assert ledger.task_finished(last, skipped, now=4.0) == [
        CheckpointAdvanced(("0002",)), PassFinished()]
    assert ledger.live.files_skipped == 1
    assert ledger.live.bytes_skipped == 10
    assert ledger.outcome() == ""
    assert [(t.task, t.status, t.files) for t in ledger.recent_tasks()] == [
        (0, TaskStatus.COMPLETED, 2), (1, TaskStatus.COMPLETED, 1)]


def test_a_page_listed_in_one_call_stops_where_the_listing_waits() -> None:
    one = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=2))  # queues hold 4 per worker
    where = placement({"w0"}, ("w0",))
    page = [(*entry(i), None) for i in range(10)]
    decisions, taken = one.files_listed(page, where, now=0.0)
    assert (decisions, taken) == ([Dispatch("w0")], 4)
    assert one.backlogged()
    task = one.take_task("w0", now=1.0)
    assert task is not None
    decisions, taken = one.files_listed(page[4:], where, now=1.0)
    assert taken == 2, "up to the queue's capacity again"
    # The same files one by one leave the ledger in the same state.
    other = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=2))
    for i in range(6):
        other.file_listed(*entry(i), where, now=0.0)
        if i == 3:
            assert other.take_task("w0", now=1.0) is not None
    assert other.shown == one.shown
    assert other.queued("w0") == one.queued("w0") == 4


def test_retry_backoff_doubles_within_jitter() -> None:
    policy = LedgerPolicy(TaskOp.LOAD, segment_size=1, max_attempts=4, backoff=0.5)
    ledger = Ledger(policy, rng=random.Random(7))
    where = placement({"w0"}, ("w0",))
    ledger.file_listed(*entry(0), where, now=0.0)
    ledger.finish_listing()
    delays = []
    for attempt in range(1, 4):
        task = ledger.take_task("w0", now=0.0)
        assert task is not None
        [retry] = ledger.task_failed(task, Reason.WORKER_LOST, "gone", now=0.0)
        assert isinstance(retry, RetryAfter)
        delays.append(retry.delay)
        assert 0.8 * 0.5 * 2 ** (attempt - 1) <= retry.delay <= 1.2 * 0.5 * 2 ** (attempt - 1)
        assert ledger.retry_due(retry.assignment, where, now=0.0) == [Dispatch("w0")]
    task = ledger.take_task("w0", now=0.0)
    assert task is not None
    decisions = ledger.task_failed(task, Reason.WORKER_LOST, "gone", now=5.0)
    assert kinds(decisions) == [FileFailed, CheckpointAdvanced, PassFinished], (
        "the 4th attempt was the last")
    assert decisions[0] == FileFailed("/data/0000", Reason.WORKER_LOST, "gone", "w0", 4)
    assert ledger.live.files_failed == 1
    assert ledger.live.subtasks_failed == 4
    [failure] = ledger.take_failures()
    assert (failure.path, failure.reason, failure.time) == ("/data/0000", Reason.WORKER_LOST, 5.0)
    assert "1 files failed" in ledger.outcome()


def test_a_reason_that_is_not_retryable_fails_at_once() -> None:
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=1, max_attempts=5))
    where = placement({"w0"}, ("w0",))
    ledger.file_listed(*entry(0), where, now=0.0)
    ledger.finish_listing()
    task = ledger.take_task("w0", now=0.0)
    assert task is not None
    failed = FileResult("/data/0000", FileStatus.FAILED, 0, Reason.CACHE_FULL, "no room")
    assert kinds(ledger.task_finished(task, [failed], now=0.0)) == [
        FileFailed, CheckpointAdvanced, PassFinished]
    assert ledger.live.files_failed == 1


def test_queued_work_of_a_worker_that_goes_down_moves_to_the_next_live_owner() -> None:
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=50))
    everyone = placement(set(WORKERS))
    for i in range(60):
        ledger.file_listed(*entry(i), everyone, now=0.0)
    stuck = ledger.queued("w1")
    assert stuck > 0
    decisions = ledger.placement_changed(placement({"w0", "w2"}), now=0.0)
    assert ledger.queued("w1") == 0
    assert set(kinds(decisions)) == {Dispatch}
    assert {d.worker for d in decisions if isinstance(d, Dispatch)} <= {"w0", "w2"}
    assert ledger.queued("w0") + ledger.queued("w2") == 60
    assert not ledger.backlogged() or ledger.queued("w1") == 0


def test_a_moved_replica_avoids_the_worker_of_the_other_replica() -> None:
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=10, replicas=2))
    everyone = placement(set(WORKERS))
    ledger.file_listed(*entry(0), everyone, now=0.0)
    first, second = everyone.targets(TaskOp.LOAD, "/data/0000", 2)
    third = next(w for w in WORKERS if w not in (first, second))
    ledger.placement_changed(placement(set(WORKERS) - {first}), now=0.0)
    assert ledger.queued(second) == 1
    assert ledger.queued(third) == 1, "not a second copy on the other replica's worker"
    # With a single live worker, the other replica waits for its own worker: two
    # replicas on one worker would be one copy counted twice.
    ledger.placement_changed(placement({second}), now=0.0)
    assert ledger.queued(second) == 1
    assert ledger.queued(third) == 1


def test_replicas_are_not_dropped_when_fewer_workers_are_live() -> None:
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=10, replicas=2))
    ledger.file_listed(*entry(0), placement({"w1"}), now=0.0)
    assert ledger.queued("w1") == 1
    assert sum(ledger.queued(w) for w in WORKERS) == 2, "the second replica waits on a down owner"


def test_a_retry_goes_to_the_live_owner() -> None:
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=1, max_attempts=3))
    ledger.file_listed(*entry(0), placement({"w1"}), now=0.0)
    task = ledger.take_task("w1", now=0.0)
    assert task is not None
    [retry] = ledger.task_failed(task, Reason.WORKER_NOT_REACHABLE, "refused", now=0.0)
    assert isinstance(retry, RetryAfter)
    assert ledger.retry_due(retry.assignment, placement({"w2"}), now=0.0) == [Dispatch("w2")]


def test_free_stays_on_its_member_and_fails_on_one_that_left() -> None:
    policy = LedgerPolicy(TaskOp.FREE, segment_size=1, max_attempts=2)
    ledger = Ledger(policy)
    ledger.file_listed(*entry(0), placement({"w0"}), now=0.0)  # FREE goes to every member
    assert {ledger.queued(w) for w in WORKERS} == {1}
    ledger.placement_changed(placement({"w0"}), now=0.0)
    assert ledger.queued("w1") == 1, "a FREE for a down member waits for it"
    decisions = ledger.placement_changed(placement({"w0"}, ("w0", "w1")), now=0.0)
    assert kinds(decisions) == [RetryAfter]
    [retry] = decisions
    assert isinstance(retry, RetryAfter)
    final = ledger.retry_due(retry.assignment, placement({"w0"}, ("w0", "w1")), now=0.0)
    assert kinds(final) == [FileFailed], "the file is not final before w0 and w1 answer"
    assert ledger.live.files_failed == 0
    assert ledger.live.subtasks_failed == 1
    for worker in ("w0", "w1"):
        task = ledger.take_task(worker, now=0.0)
        assert task is not None
        ledger.task_finished(task, [FileResult(task.entries[0].path, FileStatus.OK, 10)],
                             now=0.0)
    assert ledger.live.files_failed == 1, "w2 left before it freed the file"
    assert kinds(ledger.finish_listing()) == [CheckpointAdvanced, PassFinished]
    [failure] = ledger.take_failures()
    assert failure.reason is Reason.WORKER_LOST
    assert "left the membership" in failure.message


def test_stop_cancels_on_the_workers_running_tasks() -> None:
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=1))
    for i in range(6):
        ledger.file_listed(*entry(i), placement(set(WORKERS)), now=0.0)
    running = [t for w in ("w0", "w2") if (t := ledger.take_task(w, now=1.0)) is not None]
    [decision] = ledger.stop(now=2.0)
    assert decision == CancelTasks(tuple(sorted({t.worker for t in running})))
    assert all(t.status is TaskStatus.CANCELLED for t in ledger.recent_tasks())
    assert ledger.stop(now=3.0) == []
    assert ledger.task_finished(running[0], [], now=4.0) == [], "a late answer is ignored"


def one_task(policy: LedgerPolicy, files: int) -> tuple[Ledger, Task]:
    """A ledger with ``files`` files listed on one worker, and the task that takes them."""
    ledger = Ledger(policy)
    where = placement({"w0"}, ("w0",))
    for i in range(files):
        ledger.file_listed(*entry(i), where, now=0.0)
    task = ledger.take_task("w0", now=0.0)
    assert task is not None
    return ledger, task


def test_fail_early_past_both_thresholds() -> None:
    ledger, task = one_task(LedgerPolicy(TaskOp.LOAD, segment_size=10, max_attempts=1,
                                         failure_count_threshold=2,
                                         failure_ratio_threshold=0.5), 4)
    results = [FileResult(e.path, FileStatus.FAILED, 0, Reason.UFS_NOT_FOUND, "gone")
               for e in task.entries[:3]] + [FileResult(task.entries[3].path, FileStatus.OK)]
    decisions = ledger.task_finished(task, results, now=0.0)
    [early] = [d for d in decisions if isinstance(d, FailEarly)]
    assert "3 of 4 files failed" in early.message, "judged on the whole answer"
    assert "alluxio.job.failure.count.threshold=2" in early.message
    assert ledger.outcome() == early.message


@pytest.mark.parametrize("bad", [0, 1])
def test_fail_early_does_not_depend_on_which_file_of_a_task_failed(bad: int) -> None:
    """1 failed of 2 is a ratio of 0.5, under 0.9: whether the failed file is the first
    of the task or the last (a file-by-file judgement saw 1 of 1 for the first)."""
    ledger, task = one_task(LedgerPolicy(TaskOp.LOAD, segment_size=2, max_attempts=1,
                                         failure_count_threshold=0,
                                         failure_ratio_threshold=0.9), 2)
    results = [FileResult(e.path, FileStatus.FAILED, 0, Reason.UFS_NOT_FOUND, "gone")
               if i == bad else FileResult(e.path, FileStatus.OK, e.length)
               for i, e in enumerate(task.entries)]
    decisions = ledger.task_finished(task, results, now=0.0)
    assert kinds(decisions) == [FileFailed]
    assert ledger.live.files_failed == 1
    assert ledger.outcome() == "1 files failed; see --progress --file-status FAILURE"


def test_a_name_that_is_not_utf8_fails_by_name() -> None:
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=1))
    odd = FileEntry("/data/\udcff", 3, 1)
    decisions = ledger.file_listed(("\udcff",), odd, placement(set(WORKERS)), now=9.0)
    assert kinds(decisions) == [FileFailed]  # its segment is not sealed yet
    assert kinds(ledger.finish_listing()) == [CheckpointAdvanced, PassFinished]
    [failure] = ledger.take_failures()
    assert failure.reason is Reason.INVALID_PATH
    assert failure.path == "/data/\udcff"


def test_resume_never_shows_less_than_before() -> None:
    """The reported bug: 521 files processed, then 200 after a resume."""
    stored = Progress(
        live=Counters(files_listed=600, files_processed=521, bytes_processed=5210,
                      subtasks_failed=7),
        committed=Counters(files_listed=200, files_processed=200, bytes_processed=2000,
                           subtasks_failed=2),
        checkpoint=("0199",),
        tasks=(TaskRecord(41, "w0", TaskStatus.RUNNING, 2, 1.0),),
    )
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=2), stored)
    assert ledger.shown == stored.live
    assert ledger.live.files_processed == 200, "the true count starts from committed"
    assert ledger.live.subtasks_failed == 7, "failed attempts carry over"
    assert ledger.recent_tasks()[0].status is TaskStatus.INTERRUPTED
    where = placement({"w0"}, ("w0",))
    ledger.file_listed(*entry(200), where, now=0.0)
    task = ledger.take_task("w0", now=0.0)
    assert task is not None
    assert task.number == 42, "task numbers continue"
    ledger.task_finished(task, [FileResult(task.entries[0].path, FileStatus.OK, 10)], now=0.0)
    assert ledger.shown.files_processed == 521
    snapshot = ledger.progress(stored, active_seconds=1.0, recent_rate=0.0)
    assert snapshot.live.files_processed == 521
    assert snapshot.committed.files_processed == 200, "not committed: its segment is open"


def test_a_verify_pass_counts_repairs_apart_and_never_lowers_failures() -> None:
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=2, max_attempts=1))
    where = placement({"w0"}, ("w0",))
    for i in range(2):
        ledger.file_listed(*entry(i), where, now=0.0)
    ledger.finish_listing()
    task = ledger.take_task("w0", now=0.0)
    assert task is not None
    ledger.task_finished(task, [
        FileResult(task.entries[0].path, FileStatus.OK, 10),
        FileResult(task.entries[1].path, FileStatus.FAILED, 0, Reason.IO_ERROR, "eio"),
    ], now=0.0)
    assert ledger.pass_finished
    assert ledger.finish_pass() == 0
    ledger.begin_pass(PassKind.VERIFY)
    assert ledger.live.files_failed == 0
    assert ledger.shown.files_failed == 1
    for i in range(2):
        ledger.file_listed(*entry(i), where, now=0.0)
    ledger.finish_listing()
    task = ledger.take_task("w0", now=0.0)
    assert task is not None
    decisions = ledger.task_finished(task, [
        FileResult(task.entries[0].path, FileStatus.SKIPPED),
        FileResult(task.entries[1].path, FileStatus.OK, 10),
    ], now=0.0)
    assert kinds(decisions) == [PassFinished], "a verify pass moves no checkpoint"
    assert ledger.finish_pass() == 1
    assert (ledger.verify_passes, ledger.files_repaired) == (1, 1)
    assert ledger.outcome() == "", "the failed file was repaired"
    assert ledger.live.files_listed == 2, "a verify pass does not list files twice"


def test_every_counter_of_a_mixed_job_and_of_its_verify_pass() -> None:
    """Each file adds to exactly its fields, in the job's counters and in the committed
    ones; a verify pass adds everything to its own counters and only failures to the
    job's."""
    ledger = Ledger(LedgerPolicy(TaskOp.LOAD, segment_size=4, max_attempts=2))
    where = placement({"w0"}, ("w0",))
    for i in range(4):
        ledger.file_listed(*entry(i, length=10 + i), where, now=0.0)
    ledger.finish_listing()
    task = ledger.take_task("w0", now=0.0)
    assert task is not None
    paths = [e.path for e in task.entries]
    [retry] = ledger.task_finished(task, [
        FileResult(paths[0], FileStatus.OK, 10),
        FileResult(paths[1], FileStatus.SKIPPED),
        FileResult(paths[2], FileStatus.OK, 12),
        FileResult(paths[3], FileStatus.FAILED, 0, Reason.IO_ERROR, "eio"),
    ], now=0.0)
    assert isinstance(retry, RetryAfter)
    ledger.retry_due(retry.assignment, where, now=1.0)
    again = ledger.take_task("w0", now=1.0)
    assert again is not None
    ledger.task_finished(again, [FileResult(paths[3], FileStatus.FAILED, 0, Reason.IO_ERROR,
                                            "eio")], now=2.0)
    expected = Counters(files_listed=4, bytes_listed=46, files_processed=2,
                        bytes_processed=22, files_skipped=1, bytes_skipped=11,
                        files_failed=1, subtasks_failed=2)
    assert ledger.live == expected
    assert ledger.committed == expected
    assert ledger.finish_pass() == 0

    ledger.begin_pass(PassKind.VERIFY)
    for i in range(4):
        ledger.file_listed(*entry(i, length=10 + i), where, now=3.0)
    ledger.finish_listing()
    task = ledger.take_task("w0", now=3.0)
    assert task is not None
    ledger.task_finished(task, [FileResult(p, FileStatus.SKIPPED) for p in paths[:3]]
                         + [FileResult(paths[3], FileStatus.OK, 13)], now=4.0)
    assert ledger.pass_counters == Counters(files_listed=4, bytes_listed=46,
                                            files_processed=1, bytes_processed=13,
                                            files_skipped=3, bytes_skipped=33)
    assert ledger.live == Counters(files_listed=4, bytes_listed=46, files_processed=2,
                                   bytes_processed=22, files_skipped=1, bytes_skipped=11,
                                   files_failed=0, subtasks_failed=2)
    assert ledger.committed == expected, "a verify pass commits nothing"
    assert ledger.finish_pass() == 1


# ------------------------------------------------------------------------ any interleaving

OUTCOMES = st.sampled_from([FileStatus.OK, FileStatus.OK, FileStatus.SKIPPED, FileStatus.FAILED])


@dataclass
class Model:
    """What the test knows from outside the ledger: per-assignment attempts and outcomes."""

    attempts: dict[int, int] = field(default_factory=dict)
    failed_files: set[int] = field(default_factory=set)
    ok_files: set[int] = field(default_factory=set)


class LedgerMachine(RuleBasedStateMachine):
    """Lists, dispatches, answers, fails, retries, moves workers, resumes and verifies, in
    any order Hypothesis picks, and checks what must hold whatever happened."""

    @initialize(
        op=st.sampled_from(TaskOp),
        files=st.integers(0, 24),
        segment=st.integers(1, 4),
        attempts=st.integers(1, 3),
        replicas=st.integers(1, 2),
        count=st.integers(-1, 4),
        ratio=st.sampled_from([0.0, 0.3, 0.9]),
        seed=st.integers(0, 2**16),
    )
    def setup(self, op: TaskOp, files: int, segment: int, attempts: int, replicas: int,
              count: int, ratio: float, seed: int) -> None:
        self.policy = LedgerPolicy(op, segment_size=segment, max_attempts=attempts,
                                   backoff=0.1, replicas=replicas,
                                   failure_count_threshold=count,
                                   failure_ratio_threshold=ratio, failure_list_max=5)
        self.files = files
        self.seed = seed
        self.ledger = Ledger(self.policy, rng=random.Random(seed))
        self.live_workers = set(WORKERS)
        self.next_file = 0
        self.tasks: list[Task] = []
        self.retries: dict[int, RetryAfter] = {}
        self.shown_before = Counters()
        self.base = Progress()
        self.resumed = False
        self.model = Model()
        self.failed_early = False
        self.clock = 0.0

    # ------------------------------------------------------------------ helpers
    def where(self) -> Placement:
        return placement(self.live_workers)

    def apply(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, RetryAfter):
                assert decision.assignment not in self.retries
                self.retries[decision.assignment] = decision
            elif isinstance(decision, FailEarly):
                assert not self.failed_early, "fail early is decided once"
                assert should_fail_early(self.ledger.live, self.policy.failure_count_threshold,
                                         self.policy.failure_ratio_threshold)
                self.failed_early = True
            elif isinstance(decision, PassFinished):
                self.check_pass_end()

    def check_pass_end(self) -> None:
        ledger = self.ledger
        assert not self.tasks
        assert not self.retries
        assert not list(ledger.queued_assignments())
        if ledger.pass_kind is PassKind.VERIFY:
            assert ledger.pass_counters.files_listed == self.files
            assert ledger.pass_counters.files_done == self.files
        if ledger.pass_kind is PassKind.LOAD:
            # Every listed file ends in exactly one counter.
            assert ledger.live.files_listed == self.files
            assert ledger.live.files_done == self.files
            assert ledger.committed == ledger.live or self.resumed
            if not self.resumed:
                failed = len(self.model.failed_files)
                assert ledger.live.files_failed == failed
                processed = self.model.ok_files - self.model.failed_files
                assert ledger.live.files_processed == len(processed)

    def assert_follows_live_owners(self, assignment: Assignment) -> None:
        """Work goes to a live worker, except a replica with no live worker free of its
        file's other replicas: it waits for its own (two replicas on one worker would be
        one copy counted twice)."""
        live = set(self.where().ring.workers)
        others = {w for r, w in enumerate(assignment.file.workers) if r != assignment.replica}
        assert assignment.worker in live or live <= others, (assignment.worker, live, others)
        assert assignment.worker not in others, "two replicas of a file on one worker"

    def fail_attempt(self, assignment_id: int, index: int, reason: Reason) -> bool:
        """Mirror of the retry rule: True when the ledger must retry this attempt."""
        tries = self.model.attempts.get(assignment_id, 0) + 1
        self.model.attempts[assignment_id] = tries
        retry = reason.retryable and tries < self.policy.max_attempts
        if not retry:
            self.model.failed_files.add(index)
        return retry

    # ------------------------------------------------------------------ rules
    @precondition(lambda self: not self.ledger.listing_done and self.next_file < self.files)
    @rule(odd=st.integers(0, 30))
    def list_a_file(self, odd: int) -> None:
        parts, listed = entry(self.next_file, length=self.next_file + 1)
        if odd == 0:  # now and then a name that is not UTF-8
            listed = FileEntry(listed.path + "\udcff", listed.length, 1)
            if self.ledger.pass_kind is PassKind.LOAD:
                self.model.failed_files.add(self.next_file)
        self.next_file += 1
        self.apply(self.ledger.file_listed(parts, listed, self.where(), now=self.clock))

    @precondition(lambda self: not self.ledger.listing_done and self.next_file < self.files)
    @rule(count=st.integers(1, 12), odd=st.integers(0, 40))
    def list_a_page(self, count: int, odd: int) -> None:
        """A page in one call: it stops only where the listing must wait for room. Now
        and then one of its names is not UTF-8 (taken apart from the usual files)."""
        end = min(self.files, self.next_file + count)
        page: list[tuple[tuple[str, ...], FileEntry, tuple[Reason, str] | None]] = []
        for i in range(self.next_file, end):
            parts, listed = entry(i, length=i + 1)
            if i - self.next_file == odd:
                listed = FileEntry(listed.path + "\udcff", listed.length, 1)
            page.append((parts, listed, None))
        decisions, taken = self.ledger.files_listed(page, self.where(), now=self.clock)
        if odd < taken and self.ledger.pass_kind is PassKind.LOAD:
            self.model.failed_files.add(self.next_file + odd)
        assert 1 <= taken <= len(page)
        assert taken == len(page) or self.ledger.backlogged() or self.ledger.failed_early
        woken = [d.worker for d in decisions if isinstance(d, Dispatch)]
        assert len(woken) == len(set(woken)), "one wake per worker"
        assert all(self.ledger.queued(worker) for worker in woken)
        self.next_file += taken
        self.apply(decisions)

    @precondition(lambda self: not self.ledger.listing_done and self.next_file >= self.files)
    @rule()
    def finish_listing(self) -> None:
        self.apply(self.ledger.finish_listing())

    @rule(worker=st.sampled_from(WORKERS))
    def take_a_task(self, worker: str) -> None:
        task = self.ledger.take_task(worker, now=self.clock)
        if task is None:
            assert self.ledger.queued(worker) == 0
            return
        assert 0 < len(task.assignments) <= self.policy.segment_size
        assert all(a.worker == worker for a in task.assignments)
        paths = [a.entry.path for a in task.assignments]
        assert len(paths) == len(set(paths)), "a task names each file once"
        self.tasks.append(task)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def answer_a_task(self, data: st.DataObject) -> None:
        task = self.tasks.pop(data.draw(st.integers(0, len(self.tasks) - 1)))
        results = []
        expect_retries = set()
        for assignment in task.assignments:
            status = data.draw(OUTCOMES)
            if data.draw(st.integers(0, 20)) == 0:
                reason = Reason.WORKER_RPC_FAILED  # the worker left this file out
                if self.fail_attempt(assignment.id, assignment.index, reason):
                    expect_retries.add(assignment.id)
                continue
            if status is FileStatus.FAILED:
                reason = data.draw(st.sampled_from(Reason))
                results.append(FileResult(assignment.entry.path, status, 0, reason, "x"))
                if self.fail_attempt(assignment.id, assignment.index, reason):
                    expect_retries.add(assignment.id)
            else:
                if status is FileStatus.OK:
                    self.model.ok_files.add(assignment.index)
                results.append(FileResult(assignment.entry.path, status, assignment.entry.length))
        decisions = self.ledger.task_finished(task, results, now=self.clock)
        retried = {d.assignment for d in decisions if isinstance(d, RetryAfter)}
        if self.ledger.pass_kind is PassKind.LOAD:
            assert retried == expect_retries
        self.apply(decisions)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), reason=st.sampled_from(
        [Reason.WORKER_LOST, Reason.WORKER_NOT_REACHABLE, Reason.TASK_TIMEOUT,
         Reason.CANCELLED]))
    def fail_a_task(self, data: st.DataObject, reason: Reason) -> None:
        task = self.tasks.pop(data.draw(st.integers(0, len(self.tasks) - 1)))
        expect = {a.id for a in task.assignments
                  if self.fail_attempt(a.id, a.index, reason)}
        decisions = self.ledger.task_failed(task, reason, "lost", now=self.clock)
        retries = [d for d in decisions if isinstance(d, RetryAfter)]
        assert {d.assignment for d in retries} == expect
        for retry in retries:
            tries = self.model.attempts[retry.assignment]
            assert 0.08 * 2 ** (tries - 1) <= retry.delay <= 0.12 * 2 ** (tries - 1) + 1e-9
        self.apply(decisions)

    @precondition(lambda self: self.retries)
    @rule(data=st.data())
    def a_retry_is_due(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.retries)))
        self.retries.pop(key)
        self.clock += 1.0
        decisions = self.ledger.retry_due(key, self.where(), now=self.clock)
        if self.policy.op is not TaskOp.FREE:
            [retried] = [a for a in self.ledger.queued_assignments() if a.id == key]
            assert decisions == [Dispatch(retried.worker)]
            self.assert_follows_live_owners(retried)
        self.apply(decisions)

    @rule(worker=st.sampled_from(WORKERS), up=st.booleans())
    def a_worker_goes_down_or_comes_back(self, worker: str, up: bool) -> None:
        if up:
            self.live_workers.add(worker)
        else:
            self.live_workers.discard(worker)
        self.apply(self.ledger.placement_changed(self.where(), now=self.clock))
        if self.policy.op is not TaskOp.FREE:
            for a in self.ledger.queued_assignments():
                self.assert_follows_live_owners(a)

    @precondition(lambda self: self.ledger.pass_finished and not self.failed_early)
    @rule()
    def verify(self) -> None:
        self.ledger.finish_pass()
        self.ledger.begin_pass(PassKind.VERIFY)
        self.next_file = 0
        self.model.attempts.clear()  # assignments are numbered per pass

    @rule(stop=st.booleans())
    def the_coordinator_stops_or_dies_and_another_resumes(self, stop: bool) -> None:
        """A failover or a stop and resume: the new owner starts from the stored record."""
        if stop:
            decisions = self.ledger.stop(now=self.clock)
            workers = {t.worker for t in self.tasks}
            assert decisions == ([CancelTasks(tuple(sorted(workers)))] if workers else [])
        stored = self.ledger.progress(self.base, active_seconds=0.0, recent_rate=0.0)
        self.base = stored
        self.ledger = Ledger(self.policy, stored, rng=random.Random(self.seed))
        assert stored.live.covers(self.ledger.shown)
        assert self.ledger.shown == stored.live
        self.tasks.clear()
        self.retries.clear()
        self.model.attempts.clear()
        self.resumed = True
        self.failed_early = False
        # The listing resumes strictly after the checkpoint.
        self.next_file = int(stored.checkpoint[0][:4]) + 1 if stored.checkpoint else 0

    # ------------------------------------------------------------------ invariants
    @invariant()
    def counters_shown_never_go_back(self) -> None:
        shown = self.ledger.shown
        assert shown.covers(self.shown_before), (shown, self.shown_before)
        assert shown.covers(self.ledger.live)
        self.shown_before = shown

    @invariant()
    def a_checkpoint_only_covers_final_files(self) -> None:
        boundary = self.ledger.committed_files
        outstanding = [a.index for t in self.tasks for a in t.assignments]
        outstanding += [a.index for a in self.ledger.queued_assignments()]
        assert all(index >= boundary for index in outstanding), (boundary, outstanding)
        committed = self.ledger.committed
        assert committed.files_done == committed.files_listed, committed
        if self.ledger.checkpoint and self.ledger.pass_kind is PassKind.LOAD:
            assert int(self.ledger.checkpoint[0][:4]) + 1 >= boundary

    @invariant()
    def no_file_counts_twice(self) -> None:
        live = self.ledger.live
        assert live.files_listed <= self.files
        if self.ledger.pass_kind is PassKind.LOAD:
            assert live.files_done <= live.files_listed
        else:  # a verify pass accounts for its own files; its failures replace the last
            found = self.ledger.pass_counters
            assert found.files_done <= found.files_listed <= self.files
        assert live.bytes_processed + live.bytes_skipped <= live.bytes_listed or (
            self.policy.op is TaskOp.FREE)

    @invariant()
    def a_pass_ends_once_nothing_is_left(self) -> None:
        idle = not self.tasks and not self.retries and not list(self.ledger.queued_assignments())
        if self.ledger.listing_done and idle:
            assert self.ledger.pass_finished

    @invariant()
    def tasks_are_bounded(self) -> None:
        records = self.ledger.recent_tasks()
        assert len(records) <= 32
        assert [r.task for r in records] == sorted(r.task for r in records)


LedgerMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_ledger_under_any_interleaving = pytest.mark.timeout(600)(LedgerMachine.TestCase)
