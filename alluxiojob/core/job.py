"""The job record and its options: what the store keeps and the REST API returns."""

from __future__ import annotations

import enum
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from alluxiojob.core.errors import InvalidArgument
from alluxiojob.core.states import SETTLED_STATES, JobEvent, JobState, next_state


class JobType(enum.StrEnum):
    LOAD = "LOAD"
    FREE = "FREE"
    COPY = "COPY"
    MOVE = "MOVE"

    @classmethod
    def parse(cls, text: str) -> JobType:
        try:
            return cls(text.strip().upper())
        except ValueError:
            choices = ", ".join(t.value for t in cls)
            raise InvalidArgument(f"unknown job type {text!r}; expected one of {choices}") from None


MAX_BATCH_SIZE = 100_000  # files per task: a task's message must stay well under 64 MiB
MAX_REPLICAS = 1_000
MAX_BANDWIDTH = (1 << 63) - 1  # what the wire and the stores can hold
OPTION_BOUNDS = {  # inclusive; the REST API's OpenAPI document shows the same bounds
    "batch_size": (0, MAX_BATCH_SIZE),
    "replicas": (1, MAX_REPLICAS),
    "bandwidth": (0, MAX_BANDWIDTH),
}
SOURCES = ("", "index", "template")
OPTION_ALIASES = {"batchSize": "batch_size", "skipIfExists": "skip_if_exists",
                  "partialListing": "partial_listing",
                  "loadMetadataOnly": "metadata_only"}  # Alluxio's REST spellings


SOURCE_FIELDS = {"": "path", "index": "indexFile", "template": "template"}
_SOURCE_OF = {"path": "", "indexFile": "index", "index_file": "index", "template": "template"}


def source_of(params: dict[str, Any]) -> tuple[str, Any]:
    """Where a request names its files: ``path``, ``indexFile`` (Alluxio's spelling, or
    ``index_file``) or ``template``; exactly one of them. Returns (source, value)."""
    given = [name for name in _SOURCE_OF if params.get(name) not in (None, "")]
    if len(given) > 1:
        raise InvalidArgument(f"give one of path, indexFile and template, not "
                              f"{' and '.join(given)}")
    if not given:
        return "", None
    return _SOURCE_OF[given[0]], params[given[0]]


@dataclass(frozen=True)
class JobOptions:
    batch_size: int = 0  # 0: use alluxio.job.batch.size
    verify: bool = False
    skip_if_exists: bool = False
    partial_listing: bool = False
    replicas: int = 1
    bandwidth: int = 0  # bytes/s per worker, 0 = unlimited
    overwrite: bool = False
    metadata_only: bool = False  # LOAD: list and record the files, copy no data
    # Where the files come from: "" a listing of the job's path; "index" the job's path
    # is an index file (or an S3 Inventory manifest.json); "template" it is a brace
    # template. The job's identity stays (type, path). See core/manifest.py.
    source: str = ""

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobOptions:
        known = {f for f in cls.__dataclass_fields__}
        options = cls(**{k: v for k, v in data.items() if k in known})
        options.validate()
        return options

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise InvalidArgument(f"unknown source {self.source!r}; expected one of "
                                  + ", ".join(repr(s) for s in SOURCES))
        low, high = OPTION_BOUNDS["batch_size"]
        if not low <= self.batch_size <= high:
            raise InvalidArgument(
                f"batch size must be between 1 and {high}, got {self.batch_size}")
        low, high = OPTION_BOUNDS["replicas"]
        if not low <= self.replicas <= high:
            raise InvalidArgument(f"replicas must be between {low} and {high}, got {self.replicas}")
        low, high = OPTION_BOUNDS["bandwidth"]
        if not low <= self.bandwidth <= high:
            raise InvalidArgument(
                f"bandwidth must be between 0 (unlimited) and {MAX_BANDWIDTH} bytes/s, "
                f"got {self.bandwidth}")


@dataclass(frozen=True)
class JobRecord:
    id: str
    type: JobType
    path: str
    dst: str = ""
    options: JobOptions = field(default_factory=JobOptions)
    state: JobState = JobState.WAITING
    owner: str = ""
    seq: int = 0  # position in the waiting queue
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str = ""
    claims: int = 0  # how many times a coordinator took it

    @classmethod
    def new(
        cls, job_type: JobType, path: str, dst: str, options: JobOptions, now: float
    ) -> JobRecord:
        return cls(
            id=str(uuid.uuid4()),
            type=job_type,
            path=path,
            dst=dst,
            options=options,
            created_at=now,
            updated_at=now,
        )

    @property
    def identity(self) -> str:
        """The (type, path) key users address the job by."""
        return job_identity(self.type, self.path, self.dst)

    def apply(self, event: JobEvent, now: float, *, owner: str = "", error: str = "") -> JobRecord:
        """Return the record after ``event``; raises ``IllegalTransition`` if not allowed."""
        state = next_state(self.state, event)
        changes: dict[str, Any] = {"state": state, "updated_at": now}
        if state is JobState.RUNNING:
            changes.update(owner=owner, claims=self.claims + 1)
            if not self.started_at:
                changes["started_at"] = now
        elif state is JobState.WAITING:
            changes.update(owner="", error="", finished_at=0.0)
        elif state in SETTLED_STATES:
            changes.update(owner="", finished_at=now)
        if error:
            changes["error"] = error
        return replace(self, **changes)

    def to_wire(self) -> dict[str, Any]:
        data = asdict(self)
        data["type"] = self.type.value
        data["state"] = self.state.value
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> JobRecord:
        fields = dict(data)
        fields["type"] = JobType(fields["type"])
        fields["state"] = JobState(fields["state"])
        fields["options"] = JobOptions.from_wire(fields.get("options") or {})
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in fields.items() if k in known})


def job_identity(job_type: JobType, path: str, dst: str = "") -> str:
    return f"{job_type.value}/{path}" + (f" -> {dst}" if dst else "")
