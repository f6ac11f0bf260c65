"""One file's row in a task, and one file's outcome: the values the ledger, the worker
and the wire share. Pure values, no I/O; ``protocol/codec.py`` maps them to wire
values."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from alluxiojob.core.reasons import Reason


@dataclass(frozen=True)
class FileEntry:
    """One file of a task, as listed (``dst``: its destination, for COPY and MOVE)."""

    path: str
    length: int
    mtime_ns: int
    dst: str = ""
    version: str = ""  # an object's ETag as listed; "" for local files


@dataclass(frozen=True)
class FileResult:
    """What a worker did with one file of a task."""

    path: str
    status: FileStatus
    bytes: int = 0
    reason: Reason | None = None  # set when status is FAILED
    message: str = ""


class FileStatus(enum.StrEnum):
    """What became of one file of a task."""

    OK = "OK"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
