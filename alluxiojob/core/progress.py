"""Job progress counters, the resume checkpoint, and the maths shown to users. No I/O.

``Counters`` is what a batch of results adds. The runner keeps two sums of them:
``live`` (everything finished so far, shown by ``--progress``) and ``committed`` (only
files up to the checkpoint, the point before which every file is finished). Only
``committed`` and the checkpoint survive a coordinator restart: files past the checkpoint
are loaded again, which is safe because loads are idempotent, and nothing is counted
twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


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

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(Counters))
        )

    @property
    def files_done(self) -> int:
        return self.files_processed + self.files_skipped + self.files_failed

    def to_wire(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Counters:
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Progress:
    """What the store keeps under ``progress/<job id>``."""

    live: Counters = field(default_factory=Counters)
    committed: Counters = field(default_factory=Counters)
    checkpoint: tuple[str, ...] = ()  # path components of the last committed file
    listing_done: bool = False
    active_seconds: float = 0.0  # running time summed over every claim of the job
    recent_rate: float = 0.0  # bytes/s over the last few seconds
    verify_passes: int = 0
    files_repaired: int = 0
    workers: tuple[str, ...] = ()  # workers that took part
    # The coordinator that wrote the record (set by the store from the fenced owner), so
    # the store's history can be audited. Metadata, not part of the value: not compared.
    writer: str = field(default="", compare=False)

    def to_wire(self) -> dict[str, Any]:
        return {
            "live": self.live.to_wire(),
            "committed": self.committed.to_wire(),
            "checkpoint": list(self.checkpoint),
            "listing_done": self.listing_done,
            "active_seconds": self.active_seconds,
            "recent_rate": self.recent_rate,
            "verify_passes": self.verify_passes,
            "files_repaired": self.files_repaired,
            "workers": list(self.workers),
            "writer": self.writer,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Progress:
        return cls(
            live=Counters.from_wire(data.get("live") or {}),
            committed=Counters.from_wire(data.get("committed") or {}),
            checkpoint=tuple(data.get("checkpoint") or ()),
            listing_done=bool(data.get("listing_done", False)),
            active_seconds=float(data.get("active_seconds", 0.0)),
            recent_rate=float(data.get("recent_rate", 0.0)),
            verify_passes=int(data.get("verify_passes", 0)),
            files_repaired=int(data.get("files_repaired", 0)),
            workers=tuple(data.get("workers") or ()),
            writer=str(data.get("writer", "")),
        )

    def resumed(self) -> Progress:
        """The progress a new owner starts from: the committed part only."""
        return replace(self, live=self.committed, listing_done=False, recent_rate=0.0)


def average_rate(num_bytes: int, seconds: float) -> float:
    return num_bytes / seconds if seconds > 0 else 0.0


def eta_seconds(progress: Progress) -> float | None:
    """Seconds left, from the recent rate; None while the total is unknown or rate is 0."""
    if not progress.listing_done:
        return None
    live = progress.live
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
