"""Content checksums of cached files, and the UFS's own checksums to compare them with.

A cached file's checksum is CRC32C (hardware-accelerated by the ``crc32c`` library), the
checksum S3 and GCS compute themselves; it is written ``"crc32c:1a2b3c4d"`` so that an
index entry names its algorithm. An entry with no checksum (written by an older version)
is *unverified*, never corrupt.

An object store's ETag is the MD5 of the content when the object was written in one
PUT (a plain 32-digit hex string); a multipart upload's ETag holds a ``-`` and says
nothing about the bytes. ``Md5Check`` computes the MD5 only for the former.

This module is loaded by every pool process: it must stay cheap to import.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator

import crc32c

from alluxiojob.core.reasons import Reason
from alluxiojob.ufs.base import UfsError

ALGORITHM = "crc32c"
_READ = 4 * 1024 * 1024
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')


def render(value: int) -> str:
    return f"{ALGORITHM}:{value:08x}"


def bytes_checksum(data: bytes | memoryview) -> str:
    """The checksum of bytes in hand (a small file read whole)."""
    return render(crc32c.crc32c(data))


class Checksum:
    """A running CRC32C over bytes as they pass through the process."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self.value = crc32c.crc32c(chunk, self.value)

    def hexdigest(self) -> str:
        return render(self.value)


def md5_of_etag(etag: str) -> str | None:
    """The content MD5 a single-part ETag stands for (lower-case hex); None for a
    multipart ETag (``…-N``), an Azure or GCS ETag, or none."""
    match = _MD5_ETAG.match(etag.strip())
    return match.group(1).lower() if match else None


class Md5Check:
    """The MD5 of bytes as they pass, when the object's ETag is a content MD5."""

    def __init__(self, etag: str) -> None:
        self.expected = md5_of_etag(etag)
        self._md5 = hashlib.md5(usedforsecurity=False) if self.expected else None

    def update(self, chunk: bytes | memoryview) -> None:
        if self._md5 is not None:
            self._md5.update(chunk)

    def mismatch(self, uri: str) -> str | None:
        """Why the bytes are not the object's (a message naming ``uri``), or None."""
        if self._md5 is None or self.expected is None:
            return None
        got = self._md5.hexdigest()
        if got == self.expected:
            return None
        return (f"the bytes read from {uri} do not match its ETag: their MD5 is {got}, the "
                f"store's is {self.expected}; it will be retried")


def checked_against_etag(chunks: Iterable[bytes], etag: str, uri: str) -> Iterator[bytes]:
    """``chunks`` as they are, then ``UfsError(IO_ERROR)`` if their MD5 is not the one a
    single-part ``etag`` stands for: a writer consuming them fails before it publishes."""
    md5 = Md5Check(etag)
    for chunk in chunks:
        md5.update(chunk)
        yield chunk
    mismatch = md5.mismatch(uri)
    if mismatch is not None:
        raise UfsError(Reason.IO_ERROR, mismatch)


def fd_checksum(fd: int, length: int, md5: Md5Check | None = None) -> tuple[str, int]:
    """Read back ``length`` bytes of an open file from its start: (checksum, bytes read).

    For copies the kernel made (copy_file_range), whose bytes never passed through us.
    Fewer bytes than ``length`` means the file is shorter than it should be.
    """
    running = Checksum()
    position = 0
    while position < length:
        chunk = os.pread(fd, min(_READ, length - position), position)
        if not chunk:
            break
        running.update(chunk)
        if md5 is not None:
            md5.update(chunk)
        position += len(chunk)
    return running.hexdigest(), position


def file_checksum(path: str) -> tuple[str, int]:
    """Blocking: (checksum, length) of the whole file at ``path``, symlinks not followed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        size = os.fstat(fd).st_size
        digest, read = fd_checksum(fd, size)
        if read != size:
            raise OSError(f"{path} shrank while it was read")
        return digest, read
    finally:
        os.close(fd)


def read_back(path: str, length: int, etag: str, uri: str) -> tuple[str, str | None]:
    """Blocking: (checksum of the file at ``path``, why its bytes are not ``uri``'s or
    None): the file must hold ``length`` bytes, and their MD5 must match a single-part
    ``etag`` (pass "" for a local source)."""
    md5 = Md5Check(etag)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        digest, read = fd_checksum(fd, length, md5)
        extra = os.fstat(fd).st_size - length
    finally:
        os.close(fd)
    if read != length or extra:
        return digest, (f"the cache file of {uri} holds {read + max(extra, 0)} bytes after "
                        f"writing {length}; it will be retried")
    return digest, md5.mismatch(uri)
