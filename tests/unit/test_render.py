"""Text renderings of REST answers (``core/report.py``)."""

from __future__ import annotations

from typing import Any

from alluxiojob.core.job import JobOptions, JobRecord, JobType
from alluxiojob.core.progress import Counters, Progress, TaskRecord, TaskStatus
from alluxiojob.core.report import job_stat_text, progress_text
from alluxiojob.core.states import JobState


def _job(state: JobState = JobState.RUNNING) -> dict[str, Any]:
    job = JobRecord.new(JobType.LOAD, "file:///data", "", JobOptions(), 1_700_000_000.0)
    return {**job.to_wire(), "state": state.value}


def _report(tasks: tuple[TaskRecord, ...] = (), failures: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    progress = Progress(live=Counters(files_listed=4, files_processed=3, files_failed=1),
                        workers=("10.0.0.1:29999", "10.0.0.2:29999"), tasks=tasks)
    report: dict[str, Any] = {
        "job": _job(), "progress": progress.to_wire(),
        "files": {"listed": 4, "processed": 3, "skipped": 0, "failed": 1, "done": 4},
        "bytes": {"listed": 40, "processed": 30, "skipped": 0},
        "total_known": True, "elapsed_seconds": 3.0, "throughput_avg": 10.0,
        "throughput_recent": 10.0, "eta_seconds": None, "file_failure_ratio": 0.25,
        "subtask_failures": 2, "verify_passes": 0, "files_repaired": 0,
        "workers": list(progress.workers), "tasks": progress.to_wire()["tasks"],
    }
    if failures is not None:
        report["failures"] = failures
    return report


def test_job_stat_verbose_lists_each_task_with_its_worker_and_status() -> None:
    tasks = (
        TaskRecord(0, "10.0.0.1:29999", TaskStatus.COMPLETED, 2, 1_700_000_001.0,
                   1_700_000_001.25),
        TaskRecord(1, "10.0.0.2:29999", TaskStatus.FAILED, 2, 1_700_000_002.0,
                   1_700_000_003.0, files_failed=2, error="WORKER_LOST: connection dropped"),
        TaskRecord(2, "10.0.0.1:29999", TaskStatus.RUNNING, 1, 1_700_000_004.0),
    )
    text = job_stat_text(_job(), _report(tasks), verbose=True)
    assert "Workers: 10.0.0.1:29999, 10.0.0.2:29999" in text
    assert "Task 0\n\tWorker: 10.0.0.1:29999\n\tStatus: COMPLETED\n\tFiles: 2\n" in text
    assert "Took: 250ms" in text
    assert "Task 1\n\tWorker: 10.0.0.2:29999\n\tStatus: FAILED\n\tFiles: 2 (2 failed)" in text
    assert "\tError: WORKER_LOST: connection dropped" in text
    assert "Task 2\n\tWorker: 10.0.0.1:29999\n\tStatus: RUNNING" in text
    assert "Took" not in text.split("Task 2")[1], "a running task has no end yet"


def test_job_stat_without_verbose_has_no_tasks() -> None:
    tasks = (TaskRecord(0, "w", TaskStatus.COMPLETED, 2, 1.0, 2.0),)
    assert "Task 0" not in job_stat_text(_job(), _report(tasks), verbose=False)


def test_failures_are_summed_up_by_reason() -> None:
    failures = [
        {"path": "/a", "reason": "IO_ERROR", "message": "eio", "time": 1.0},
        {"path": "/b", "reason": "CACHE_FULL", "message": "full", "time": 1.0},
        {"path": "/c", "reason": "IO_ERROR", "message": "eio", "time": 1.0},
        {"path": "/d", "reason": "SOMETHING_NEW", "message": "?", "time": 1.0},
    ]
    text = progress_text(_report(failures=failures))
    assert "Failure Reasons: CACHE_FULL 1, IO_ERROR 2 (retried), SOMETHING_NEW 1" in text
    assert "/c\tReason: IO_ERROR, message: eio" in text
