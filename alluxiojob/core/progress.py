"""Job progress counters, the resume checkpoint, and the maths shown to users. No I/O.

``Counters`` is what a batch of results adds. The store keeps two sums of them:
``live`` (shown by ``--progress``) and ``committed`` (only files up to the checkpoint,
the point before which every file is finished). A coordinator that resumes a job
counts afresh from ``committed`` and loads the files past the checkpoint again, which
is safe because loads are idempotent; ``live`` is never lowered by that (see
``core/ledger.py``): it only moves up, across resumes, failovers and verify passes.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from alluxiojob.core.reasons import Reason

RECENT_TASKS_MAX = 32
"""Tasks kept per job in its progress record, for ``job stat -v``."""


@dataclass(frozen=True)
class Counters:
    files_listed: int = 0
    bytes_listed: int = 0
    files_processed: int = 0  # loaded, freed, copied...
    bytes_processed: int = 0
    files_skipped: int = 0
    bytes_skipped: int = 0
    files_failed: int = 0
    subtasks_failed: int = 0  # failed attempts, including ones retried later

    # Spelled out field by field: the runner adds counters for every file it finishes.
    def __add__(self, other: Counters) -> Counters:
        return Counters(
            self.files_listed + other.files_listed,
            self.bytes_listed + other.bytes_listed,
            self.files_processed + other.files_processed,
            self.bytes_processed + other.bytes_processed,
            self.files_skipped + other.files_skipped,
            self.bytes_skipped + other.bytes_skipped,
            self.files_failed + other.files_failed,
            self.subtasks_failed + other.subtasks_failed,
        )

    def envelope(self, other: Counters) -> Counters:
        """Fieldwise maximum: what a user saw before and what is true now, whichever is more."""
        return Counters(
            *(max(getattr(self, name), getattr(other, name)) for name in _COUNTER_FIELDS)
        )

    def covers(self, other: Counters) -> bool:
        """True when no field of ``self`` is below the same field of ``other``."""
        return all(getattr(self, name) >= getattr(other, name) for name in _COUNTER_FIELDS)

    @property
    def files_done(self) -> int:
        return self.files_processed + self.files_skipped + self.files_failed

    def to_wire(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Counters:
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in known})


_COUNTER_FIELDS = tuple(f.name for f in fields(Counters))


@dataclass(frozen=True)
class FailureRecord:
    """A file that failed for good: what ``--file-status FAILURE`` lists."""

    path: str
    reason: Reason
    message: str
    time: float  # wall-clock seconds


class TaskStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"  # every file answered, none failed
    FAILED = "FAILED"  # the worker failed some files, or the whole task
    CANCELLED = "CANCELLED"  # the job was stopped while it ran
    INTERRUPTED = "INTERRUPTED"  # its coordinator stopped before it answered


@dataclass(frozen=True)
class TaskRecord:
    """One task of a job (a batch of files on one worker), as ``job stat -v`` lists it."""

    task: int  # numbered per job, from 0
    worker: str
    status: TaskStatus
    files: int
    started_at: float  # wall-clock seconds
    ended_at: float = 0.0
    files_failed: int = 0
    error: str = ""  # why the whole task failed, when it did

    def to_wire(self) -> dict[str, Any]:
        return {"task": self.task, "worker": self.worker, "status": self.status.value,
                "files": self.files, "started_at": self.started_at,
                "ended_at": self.ended_at, "files_failed": self.files_failed,
                "error": self.error}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> TaskRecord:
        try:
            status = TaskStatus(str(data.get("status", "")))
        except ValueError:
            status = TaskStatus.INTERRUPTED
        return cls(
            task=int(data.get("task", 0)),
            worker=str(data.get("worker", "")),
            status=status,
            files=int(data.get("files", 0)),
            started_at=float(data.get("started_at", 0.0)),
            ended_at=float(data.get("ended_at", 0.0)),
            files_failed=int(data.get("files_failed", 0)),
            error=str(data.get("error", "")),
        )

    def settled(self) -> TaskRecord:
        """Seen when nobody drives the job any more: a RUNNING task was interrupted."""
        if self.status is TaskStatus.RUNNING:
            return replace(self, status=TaskStatus.INTERRUPTED)
        return self


@dataclass(frozen=True)
class Progress:
    """What the store keeps under ``progress/<job id>``."""

    live: Counters = field(default_factory=Counters)
    committed: Counters = field(default_factory=Counters)
    checkpoint: tuple[str, ...] = ()  # path components of the last committed file
    listing_done: bool = False
    # Known before the listing ends (a manifest or template job): files, and bytes when
    # the manifest gives sizes; 0 when not known.
    files_total: int = 0
    bytes_total: int = 0
    active_seconds: float = 0.0  # running time summed over every claim of the job
    recent_rate: float = 0.0  # bytes/s over the last few seconds
    verify_passes: int = 0
    files_repaired: int = 0
    workers: tuple[str, ...] = ()  # workers that took part
    tasks: tuple[TaskRecord, ...] = ()  # the most recent ones, oldest first
    # The coordinator that wrote the record (set by the store from the fenced owner), so
    # the store's history can be audited. Metadata, not part of the value: not compared.
    writer: str = field(default="", compare=False)

    def to_wire(self) -> dict[str, Any]:
        return {
            "live": self.live.to_wire(),
            "committed": self.committed.to_wire(),
            "checkpoint": list(self.checkpoint),
            "listing_done": self.listing_done,
            "files_total": self.files_total,
            "bytes_total": self.bytes_total,
            "active_seconds": self.active_seconds,
            "recent_rate": self.recent_rate,
            "verify_passes": self.verify_passes,
            "files_repaired": self.files_repaired,
            "workers": list(self.workers),
            "tasks": [task.to_wire() for task in self.tasks],
            "writer": self.writer,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Progress:
        return cls(
            live=Counters.from_wire(data.get("live") or {}),
            committed=Counters.from_wire(data.get("committed") or {}),
            checkpoint=tuple(data.get("checkpoint") or ()),
            listing_done=bool(data.get("listing_done", False)),
            files_total=int(data.get("files_total", 0)),
            bytes_total=int(data.get("bytes_total", 0)),
            active_seconds=float(data.get("active_seconds", 0.0)),
            recent_rate=float(data.get("recent_rate", 0.0)),
            verify_passes=int(data.get("verify_passes", 0)),
            files_repaired=int(data.get("files_repaired", 0)),
            workers=tuple(data.get("workers") or ()),
            tasks=tuple(TaskRecord.from_wire(t) for t in data.get("tasks") or ()
                        if isinstance(t, dict)),
            writer=str(data.get("writer", "")),
        )

    def settled(self) -> Progress:
        """The progress of a job nobody drives now (waiting, stopped, finished)."""
        return replace(self, tasks=tuple(task.settled() for task in self.tasks))


def average_rate(num_bytes: int, seconds: float) -> float:
    return num_bytes / seconds if seconds > 0 else 0.0


def eta_seconds(progress: Progress) -> float | None:
    """Seconds left, from the recent rate; None while the total is unknown or rate is 0."""
    live = progress.live
    if not progress.listing_done:
        if progress.files_total and not progress.bytes_total:
            # A template or index file: files are known, their sizes not yet.
            left = progress.files_total - live.files_done
            files_rate = average_rate(live.files_done, progress.active_seconds)
            if left <= 0:
                return 0.0
            return left / files_rate if files_rate > 0 else None
        if not progress.bytes_total:
            return None
        live = replace(live, bytes_listed=progress.bytes_total,
                       files_listed=max(live.files_listed, progress.files_total))
    remaining = live.bytes_listed - live.bytes_processed - live.bytes_skipped
    if remaining <= 0 or 0 < live.files_listed <= live.files_done:
        return 0.0
    rate = progress.recent_rate or average_rate(
        live.bytes_processed, progress.active_seconds
    )
    if rate <= 0:
        return None
    return remaining / rate


def failure_ratio(counters: Counters) -> float:
    done = counters.files_done
    return counters.files_failed / done if done else 0.0


def should_fail_early(counters: Counters, count_threshold: int, ratio_threshold: float) -> bool:
    """Alluxio's rule: fail once failures exceed the count *and* the ratio thresholds.

    A negative count threshold turns early failure off.
    """
    if count_threshold < 0:
        return False
    return (
        counters.files_failed > count_threshold
        and failure_ratio(counters) > ratio_threshold
    )


class RateWindow:
    """Bytes per second over a sliding window of recent samples."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: list[tuple[float, int]] = []

    def add(self, now: float, total_bytes: int) -> None:
        self._samples.append((now, total_bytes))
        cutoff = now - self.window
        while len(self._samples) > 2 and self._samples[1][0] <= cutoff:
            self._samples.pop(0)

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
