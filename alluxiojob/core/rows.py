"""One file's row in a task, and one file's outcome: the values the ledger, the worker
and the wire share. Pure values, no I/O; ``protocol/codec.py`` maps them to wire
values."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from alluxiojob.core.reasons import Reason


class FileStatus(enum.StrEnum):
    OK = "OK"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class FileEntry:
    path: str
    length: int
    mtime_ns: int
    dst: str = ""
    version: str = ""  # an object's ETag as listed; "" for local files


@dataclass(frozen=True)
class FileResult:
    path: str
    status: FileStatus
    bytes: int = 0
    reason: Reason | None = None  # set when status is FAILED
    message: str = ""
