"""The under-file-system interface: what the coordinator lists and workers read.

A UFS is addressed by URI (``file:///data/x``, later ``s3://bucket/key``). Listing is a
stream in a total order (path components compared as tuples, i.e. a sorted depth-first
walk), so that a job can resume after the last file it committed without listing from
the beginning, and so that memory stays flat whatever the file count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class UfsFile:
    uri: str
    parts: tuple[str, ...]  # path components relative to the listed root, for ordering
    length: int
    mtime_ns: int


def printable(text: str) -> str:
    """A name that is not UTF-8, shown with its odd bytes escaped (``\\xff``)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class UfsError(Exception):
    """A UFS operation failed; ``reason`` is the failure code shown to users."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnderFileSystem(Protocol):
    scheme: str

    def normalize(self, path: str) -> str:
        """Canonical URI of ``path``; raises ``UfsError`` for a malformed path."""
        ...

    def exists(self, uri: str) -> bool: ...

    def walk(
        self,
        uri: str,
        after: tuple[str, ...] = (),
        follow_link: Callable[[str], bool] | None = None,
    ) -> Iterator[UfsFile]:
        """Files under ``uri`` (or ``uri`` itself if a file) in order, strictly after ``after``.

        A symlink met on the way is followed only if ``follow_link(its path)`` says so
        (path confinement); stores without symlinks ignore it. Blocking: call it from a
        worker thread.
        """
        ...
