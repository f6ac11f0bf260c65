"""One file's row in a task, and one file's outcome: the values the ledger, the worker
and the wire share. Pure values, no I/O; ``protocol/codec.py`` maps them to wire
values.

Both are named tuples, not frozen dataclasses: a job makes one of each per file, and a
frozen dataclass costs about a microsecond to build (a checked ``object.__setattr__``
per field), a tuple a tenth of that. They stay immutable and compare by value; a row
also packs as the wire's array as it is (``FileEntry``'s fields are in wire order)."""

from __future__ import annotations

import enum
from typing import NamedTuple

from alluxiojob.core.reasons import Reason


class FileStatus(enum.StrEnum):
    """What became of one file of a task."""

    OK = "OK"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"


class FileEntry(NamedTuple):
    """One file of a task, as listed (``dst``: its destination, for COPY and MOVE)."""

    path: str
    length: int
    mtime_ns: int
    dst: str = ""
    version: str = ""  # an object's ETag as listed; "" for local files


class FileResult(NamedTuple):
    """What a worker did with one file of a task."""

    path: str
    status: FileStatus
    bytes: int = 0
    reason: Reason | None = None  # set when status is FAILED
    message: str = ""

