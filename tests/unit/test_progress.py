"""Progress counters and the maths shown to users (``core/progress.py``)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alluxiojob.core.progress import (
    Counters,
    Progress,
    RateWindow,
    TaskRecord,
    TaskStatus,
    average_rate,
    eta_seconds,
    failure_ratio,
    should_fail_early,
)
from alluxiojob.store.records import pack_record, unpack_record

HYPOTHESIS = settings(max_examples=150, deadline=None, database=None)
COUNTER_FIELDS = [f.name for f in dataclasses.fields(Counters)]

counts = st.integers(0, 2**62)
counters = st.builds(Counters, *[counts for _ in COUNTER_FIELDS])
finite = st.floats(0, 1e12, allow_nan=False)
progresses = st.builds(
    Progress,
    live=counters,
    committed=counters,
    checkpoint=st.lists(st.text(), max_size=6).map(tuple),
    listing_done=st.booleans(),
    active_seconds=finite,
    recent_rate=finite,
    verify_passes=st.integers(0, 100),
    files_repaired=counts,
    workers=st.lists(st.text(max_size=30), max_size=5).map(tuple),
    tasks=st.lists(st.builds(
        TaskRecord, task=st.integers(0, 2**40), worker=st.text(max_size=20),
        status=st.sampled_from(TaskStatus), files=st.integers(0, 10_000),
        started_at=finite, ended_at=finite, files_failed=st.integers(0, 10_000),
        error=st.text(max_size=40)), max_size=4).map(tuple),
)


# ------------------------------------------------------------------------ Counters


def test_counter_fields() -> None:
    assert COUNTER_FIELDS == [
        "files_listed", "bytes_listed", "files_processed", "bytes_processed",
        "files_skipped", "bytes_skipped", "files_failed", "subtasks_failed",
    ]
    assert all(value == 0 for value in dataclasses.astuple(Counters()))


def test_counters_add_fieldwise() -> None:
    a = Counters(1, 2, 3, 4, 5, 6, 7, 8)
    b = Counters(10, 20, 30, 40, 50, 60, 70, 80)
    assert a + b == Counters(11, 22, 33, 44, 55, 66, 77, 88)
    assert a == Counters(1, 2, 3, 4, 5, 6, 7, 8)  # operands untouched


@HYPOTHESIS
@given(counters, counters, counters)
def test_counters_addition_laws(a: Counters, b: Counters, c: Counters) -> None:
    assert a + Counters() == a == Counters() + a
    assert a + b == b + a
    assert (a + b) + c == a + (b + c)
    total = a + b
    for name in COUNTER_FIELDS:
        assert getattr(total, name) == getattr(a, name) + getattr(b, name)
    assert total.files_done == a.files_done + b.files_done


def test_sum_of_counters() -> None:
    batches = [Counters(files_processed=1, bytes_processed=100) for _ in range(5)]
    assert sum(batches, Counters()) == Counters(files_processed=5, bytes_processed=500)


def test_files_done() -> None:
    c = Counters(files_listed=100, files_processed=5, files_skipped=3, files_failed=2,
                 subtasks_failed=9)
    assert c.files_done == 10


@HYPOTHESIS
@given(counters)
def test_counters_wire_round_trip(c: Counters) -> None:
    wire = c.to_wire()
    assert set(wire) == set(COUNTER_FIELDS)
    assert Counters.from_wire(wire) == c
    assert Counters.from_wire(unpack_record(pack_record(wire))) == c


def test_counters_from_wire_tolerates_missing_and_unknown_fields() -> None:
    assert Counters.from_wire({}) == Counters()
    assert Counters.from_wire({"files_failed": 3, "bytes_failed": 99}) == Counters(files_failed=3)


def test_counters_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Counters().files_listed = 1  # type: ignore[misc]


# ------------------------------------------------------------------------ Progress


@HYPOTHESIS
@given(progresses)
def test_progress_wire_round_trip(progress: Progress) -> None:
    assert Progress.from_wire(progress.to_wire()) == progress
    # what the store does with it: msgpack turns tuples into lists
    assert Progress.from_wire(unpack_record(pack_record(progress.to_wire()))) == progress


def test_progress_from_empty_wire_is_default() -> None:
    assert Progress.from_wire({}) == Progress()
    assert Progress.from_wire({"live": None, "committed": None, "checkpoint": None}) == Progress()


def test_settled_progress_shows_running_tasks_as_interrupted() -> None:
    tasks = (TaskRecord(0, "w1", TaskStatus.COMPLETED, 2, 1.0, 2.0),
             TaskRecord(1, "w2", TaskStatus.RUNNING, 2, 1.5))
    settled = Progress(tasks=tasks).settled()
    assert [t.status for t in settled.tasks] == [TaskStatus.COMPLETED, TaskStatus.INTERRUPTED]
    assert settled.tasks[1].started_at == 1.5


def test_task_records_round_trip_and_tolerate_unknown_status() -> None:
    record = TaskRecord(3, "w", TaskStatus.FAILED, 7, 1.0, 2.0, 7, "WORKER_LOST: gone")
    wire = unpack_record(pack_record(Progress(tasks=(record,)).to_wire()))
    assert Progress.from_wire(wire).tasks == (record,)
    wire["tasks"][0]["status"] = "EXPLODED"
    assert Progress.from_wire(wire).tasks[0].status is TaskStatus.INTERRUPTED


@HYPOTHESIS
@given(counters, counters)
def test_envelope_covers_both(a: Counters, b: Counters) -> None:
    both = a.envelope(b)
    assert both.covers(a)
    assert both.covers(b)
    assert both == b.envelope(a)
    assert both.envelope(a) == both


# ------------------------------------------------------------------------ eta


def _progress(listed: int, processed: int, skipped: int = 0, *, rate: float = 0.0,
              seconds: float = 0.0, done: bool = True) -> Progress:
    return Progress(
        live=Counters(bytes_listed=listed, bytes_processed=processed, bytes_skipped=skipped),
        listing_done=done,
        recent_rate=rate,
        active_seconds=seconds,
    )


def test_eta_unknown_until_listing_done() -> None:
    assert eta_seconds(_progress(1000, 10, rate=100.0, done=False)) is None
    assert eta_seconds(_progress(1000, 1000, rate=100.0, done=False)) is None


def test_eta_zero_when_nothing_remains() -> None:
    assert eta_seconds(_progress(1000, 1000, rate=100.0)) == 0.0
    assert eta_seconds(_progress(1000, 600, 400)) == 0.0
    assert eta_seconds(_progress(0, 0)) == 0.0
    assert eta_seconds(_progress(1000, 1200, rate=5.0)) == 0.0  # over-count never goes negative


def test_eta_from_recent_rate() -> None:
    assert eta_seconds(_progress(1000, 200, 300, rate=50.0, seconds=1.0)) == 10.0


def test_eta_falls_back_to_average_rate() -> None:
    # 200 bytes in 4 s = 50 B/s; 800 bytes left
    assert eta_seconds(_progress(1000, 200, rate=0.0, seconds=4.0)) == 16.0


def test_eta_unknown_without_any_rate() -> None:
    assert eta_seconds(_progress(1000, 0, rate=0.0, seconds=0.0)) is None
    assert eta_seconds(_progress(1000, 0, rate=0.0, seconds=10.0)) is None


@HYPOTHESIS
@given(counts, counts, counts, st.floats(0.001, 1e9, allow_nan=False))
def test_eta_is_remaining_over_rate(listed: int, processed: int, skipped: int,
                                    rate: float) -> None:
    eta = eta_seconds(_progress(listed, processed, skipped, rate=rate))
    remaining = listed - processed - skipped
    if remaining <= 0:
        assert eta == 0.0
    else:
        assert eta is not None
        assert math.isclose(eta, remaining / rate)


def test_eta_zero_when_every_file_is_done_even_with_failures() -> None:
    progress = Progress(
        live=Counters(files_listed=2, bytes_listed=200, files_processed=1, bytes_processed=100,
                      files_failed=1),
        listing_done=True,
        recent_rate=10.0,
    )
    assert progress.live.files_done == progress.live.files_listed
    assert eta_seconds(progress) == 0.0


def test_average_rate() -> None:
    assert average_rate(1000, 4.0) == 250.0
    assert average_rate(1000, 0.0) == 0.0
    assert average_rate(1000, -1.0) == 0.0
    assert average_rate(0, 3.0) == 0.0


# ------------------------------------------------------------------------ failing early


def _failures(failed: int, processed: int, skipped: int = 0) -> Counters:
    return Counters(files_processed=processed, files_skipped=skipped, files_failed=failed)


def test_failure_ratio() -> None:
    assert failure_ratio(Counters()) == 0.0
    assert failure_ratio(_failures(1, 3)) == 0.25
    assert failure_ratio(_failures(2, 4, 4)) == 0.2
    assert failure_ratio(_failures(5, 0)) == 1.0


@pytest.mark.parametrize(
    ("counters", "count", "ratio", "expected"),
    [
        (_failures(101, 100), 100, 0.05, True),  # both exceeded
        (_failures(101, 100_000), 100, 0.05, False),  # count only
        (_failures(50, 0), 100, 0.05, False),  # ratio only (100 %)
        (_failures(100, 0), 100, 0.05, False),  # count equal is not exceeded
        (_failures(101, 1919), 100, 0.05, False),  # ratio exactly 0.05 is not exceeded
        (_failures(101, 1918), 100, 0.05, True),  # just above
        (_failures(1, 0), 0, 0.0, True),
        (_failures(0, 10), 0, 0.0, False),
        (_failures(10**6, 0), -1, 0.0, False),  # negative count turns it off
        (_failures(10**6, 0), -100, 0.5, False),
        (_failures(5, 5), 1, 1.0, False),  # ratio can never exceed 1
    ],
)
def test_should_fail_early(counters: Counters, count: int, ratio: float, expected: bool) -> None:
    assert should_fail_early(counters, count, ratio) is expected


@HYPOTHESIS
@given(
    st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6),
    st.integers(-5, 10**6), st.floats(0, 1, allow_nan=False),
)
def test_should_fail_early_needs_both(
    failed: int, processed: int, skipped: int, count: int, ratio: float
) -> None:
    counters = _failures(failed, processed, skipped)
    result = should_fail_early(counters, count, ratio)
    if count < 0:
        assert result is False
    else:
        assert result is (failed > count and failure_ratio(counters) > ratio)


# ------------------------------------------------------------------------ RateWindow


def test_rate_needs_two_samples() -> None:
    window = RateWindow()
    assert window.rate() == 0.0
    window.add(1.0, 100)
    assert window.rate() == 0.0


def test_constant_rate() -> None:
    window = RateWindow(window=5.0)
    for second in range(20):
        window.add(float(second), second * 100)
        if second:
            assert window.rate() == 100.0


def test_rate_follows_recent_samples_only() -> None:
    window = RateWindow(window=5.0)
    total = 0
    for second in range(11):  # 100 B/s for 10 s
        total = second * 100
        window.add(float(second), total)
    for second in range(11, 21):  # then 1000 B/s for 10 s
        total += 1000
        window.add(float(second), total)
    assert window.rate() == 1000.0


def test_rate_window_spans_at_most_one_sample_past_the_window() -> None:
    window = RateWindow(window=5.0)
    for second in range(100):
        window.add(float(second), second)
    times = [t for t, _ in window._samples]
    assert times[-1] - times[0] <= 5.0
    assert len(times) >= 2


def test_rate_keeps_two_samples_after_a_long_gap() -> None:
    window = RateWindow(window=5.0)
    window.add(0.0, 0)
    window.add(100.0, 500)
    assert window.rate() == 5.0
    window.add(200.0, 1500)
    assert window.rate() == 10.0


def test_rate_with_equal_timestamps_is_zero() -> None:
    window = RateWindow()
    window.add(3.0, 0)
    window.add(3.0, 100)
    assert window.rate() == 0.0


def test_stalled_transfer_rate_is_zero() -> None:
    window = RateWindow(window=2.0)
    for second in range(5):
        window.add(float(second), second * 10)
    for second in range(5, 10):
        window.add(float(second), 40)
    assert window.rate() == 0.0


@HYPOTHESIS
@given(
    st.lists(st.tuples(st.floats(0.01, 10, allow_nan=False), st.integers(0, 10**9)),
             min_size=2, max_size=50),
    st.floats(0.5, 20, allow_nan=False),
)
def test_rate_is_the_slope_over_the_kept_samples(
    steps: list[tuple[float, int]], span: float
) -> None:
    window = RateWindow(window=span)
    now, total = 0.0, 0
    history = []
    for dt, nbytes in steps:
        now += dt
        total += nbytes
        window.add(now, total)
        history.append((now, total))
    kept = window._samples
    assert kept == history[-len(kept):]  # a suffix of what was added, in order
    assert len(kept) >= 2
    assert kept[1][0] > now - span or len(kept) == 2
    (t0, b0), (t1, b1) = kept[0], kept[-1]
    assert math.isclose(window.rate(), (b1 - b0) / (t1 - t0))
    assert window.rate() >= 0
