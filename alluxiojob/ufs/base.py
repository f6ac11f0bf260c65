"""The under-file-system interface: what the coordinator lists and workers read and write.

A UFS is addressed by URI (``file:///data/x``, ``s3://bucket/key``, ``gs://…``, ``az://…``).
Each UFS lists as a stream in its own total order, so that a job can resume after the
last file it committed without listing from the beginning, and memory stays flat
whatever the file count:

* a local tree is a sorted depth-first walk; ``UfsFile.parts`` are the path components
  under the listed root, compared as tuples;
* an object store lists in byte order of the full key; ``parts`` is the one-element
  tuple ``(key relative to the listed root,)``, so the same tuple comparison is key
  order and a resumed listing starts after the checkpoint key (S3's ``start-after``).

Workers read through ``stat`` and ``read`` (whole or ranged, streamed in bounded
chunks), write with ``write`` (atomic: a temporary name renamed, or an object that
appears only once complete) and remove with ``delete``. They never assume a local source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from alluxiojob.ufs.errors import UfsError
from alluxiojob.ufs.uri import UfsUri

__all__ = ["READ_CHUNK", "UfsError", "UfsFile", "UfsStat", "UfsUri", "UnderFileSystem",
           "listed_file"]

READ_CHUNK = 1 << 20  # what a read yields at a time: memory is bounded by chunks in flight


@dataclass(frozen=True)
class UfsFile:
    uri: str
    parts: tuple[str, ...]  # ordering key relative to the listed root (see the module doc)
    length: int
    mtime_ns: int
    version: str = ""  # an object's ETag; "" for local files (their mtime is the version)


_new_object = object.__new__


def listed_file(uri: str, parts: tuple[str, ...], length: int, mtime_ns: int,
                version: str = "") -> UfsFile:
    """``UfsFile(uri, parts, length, mtime_ns, version)``, for a walk's loop (once per
    file): a frozen dataclass's ``__init__`` stores each field with a checked
    ``object.__setattr__``, about a microsecond for five; this stores them in the new
    instance's ``__dict__`` at once, which is where those calls put them."""
    made = _new_object(UfsFile)
    fields = made.__dict__
    fields["uri"] = uri
    fields["parts"] = parts
    fields["length"] = length
    fields["mtime_ns"] = mtime_ns
    fields["version"] = version
    return made


@dataclass(frozen=True)
class UfsStat:
    length: int
    mtime_ns: int
    version: str = ""


class UnderFileSystem(Protocol):
    scheme: str

    def normalize(self, path: str | UfsUri) -> str:
        """Canonical URI of ``path`` (as written, or parsed already); raises
        ``UfsError`` for a malformed path."""
        ...

    def exists(self, uri: str) -> bool:
        """Blocking. A missing bucket or refused credentials raise ``UfsError``."""
        ...

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

    def stat(self, uri: str) -> UfsStat: ...

    def read(self, uri: str, offset: int = 0, length: int = -1,
             version: str = "") -> Iterator[bytes]:
        """The bytes of ``uri`` from ``offset`` (``length`` -1: to the end), in chunks of at
        most ``READ_CHUNK``. With ``version``, a changed source raises ``UFS_CHANGED``."""
        ...

    def write(self, uri: str, chunks: Iterable[bytes], length: int,
              overwrite: bool) -> UfsStat:
        """Write ``uri`` atomically: it appears only once complete. Returns what was written.

        Without ``overwrite``, an existing ``uri`` raises ``UfsError(EXISTS)``.
        """
        ...

    def delete(self, uri: str) -> None: ...
