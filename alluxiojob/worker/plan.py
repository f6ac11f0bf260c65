"""How a LOAD's files become pool work: pure decisions, no I/O, nothing mutated.

Local small files are grouped into shards of at most ``partition_size`` bytes (and split
further so every pool process gets work); a file larger than its piece (a partition for
a local file, one GET's read size for an object) is copied in ranges into one shared tmp
file, each range a shard of its own. Objects are split evenly over the pool processes,
each of which keeps many requests in flight (``fetch.py``). A throttled job (``piece``
set) gets shards of about a piece each, paid for one by one.

``plan_shards`` returns the shards, each file's pieces and every tmp name it chose; the
caller records them (``load.py``). Tmp names come from ``tmp_for`` (the cache dir's,
which are unique per call).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from alluxiojob.core.rows import FileEntry
from alluxiojob.worker.copier import LocalCopy
from alluxiojob.worker.fetch import ObjectFetch

PoolWork = LocalCopy | ObjectFetch  # what a pool process does for a LOAD, one file or range


@dataclass
class PlannedFile:
    """One file of a LOAD task on its way into the cache: where it comes from and goes,
    and the pool work (``pieces``: the whole file, or its byte ranges) that copies it."""

    entry: FileEntry
    src: str  # a local path, or the object's URI
    final: str
    local: bool
    pieces: list[PoolWork] = field(default_factory=list)
    tmp: str = ""  # large files: the shared tmp file
    version: str = ""  # large objects: the ETag their ranges are pinned to
    reserved: int = 0
    checksum: str = ""  # large files: read back once every range is written
    key: str = ""  # its index key (``layout.cache_name``)
    dir_index: int = 0  # which cache dir holds it


@dataclass
class Shard:
    """Work that runs together in one pool process, and the bytes it copies."""

    work: list[PoolWork]
    nbytes: int


@dataclass(frozen=True)
class Plan:
    shards: list[Shard]
    pieces: dict[str, list[PoolWork]]  # each file's pool work, by its URI
    tmps: frozenset[str]  # the tmp names the plan chose for whole files


@dataclass(frozen=True)
class Sizes:
    partition_size: int
    read_size: int  # one GET of an object
    pool_size: int

    def piece(self, planned: PlannedFile) -> int:
        """Largest piece of a file copied as one: a partition, or one GET of an object."""
        return self.partition_size if planned.local else self.read_size

    def is_large(self, planned: PlannedFile) -> bool:
        return planned.entry.length > self.piece(planned)


def plan_shards(ready: list[PlannedFile], piece: int, sizes: Sizes,
                tmp_for: Callable[[PlannedFile], str]) -> Plan:
    """Shards for the pool. ``piece`` (a throttled job): small files are grouped into
    shards of about that many bytes; large files keep their partitions, which the
    runner copies a piece at a time. A large file's ``tmp`` must be set already."""
    shards: list[Shard] = []
    pieces: dict[str, list[PoolWork]] = {p.entry.path: [] for p in ready}
    tmps: set[str] = set()
    small = [p for p in ready if p.local and p.entry.length <= sizes.partition_size]
    if small:
        per_shard = max(1, math.ceil(len(small) / max(1, min(sizes.pool_size, len(small)))))
        limit = piece or sizes.partition_size
        current: list[PoolWork] = []
        current_bytes = 0
        for planned in small:
            job = LocalCopy(planned.src, tmp_for(planned), planned.final,
                            expect_length=planned.entry.length,
                            expect_mtime_ns=planned.entry.mtime_ns)
            tmps.add(job.tmp)
            pieces[planned.entry.path].append(job)
            current.append(job)
            current_bytes += planned.entry.length
            if len(current) >= per_shard or current_bytes >= limit:
                shards.append(Shard(current, current_bytes))
                current, current_bytes = [], 0
        if current:
            shards.append(Shard(current, current_bytes))
    fetches: list[tuple[ObjectFetch, int]] = []
    for planned in ready:
        length = planned.entry.length
        size = sizes.piece(planned)
        if length <= size:
            if not planned.local:
                fetch = ObjectFetch(planned.src, tmp_for(planned), planned.final)
                tmps.add(fetch.tmp)
                pieces[planned.entry.path].append(fetch)
                fetches.append((fetch, length))
            continue
        for offset in range(0, length, size):
            span = min(size, length - offset)
            if planned.local:
                job = LocalCopy(planned.src, planned.tmp, "", offset, span)
                pieces[planned.entry.path].append(job)
                shards.append(Shard([job], span))
            else:
                fetch = ObjectFetch(planned.src, planned.tmp, "", offset, span,
                                    planned.version)
                pieces[planned.entry.path].append(fetch)
                if piece:
                    shards.append(Shard([fetch], span))
                else:
                    fetches.append((fetch, span))
    if fetches and piece:
        # Throttled: shards of about a piece each, paid for one by one.
        current_fetches: list[PoolWork] = []
        current_bytes = 0
        for fetch, nbytes in fetches:
            current_fetches.append(fetch)
            current_bytes += nbytes
            if current_bytes >= piece:
                shards.append(Shard(current_fetches, current_bytes))
                current_fetches, current_bytes = [], 0
        if current_fetches:
            shards.append(Shard(current_fetches, current_bytes))
    elif fetches:
        # Objects are latency-bound: spread them evenly, every process keeps many
        # requests in flight whatever their sizes.
        count = min(sizes.pool_size, len(fetches))
        for i in range(count):
            part = fetches[i::count]
            shards.append(Shard([f for f, _ in part], sum(n for _, n in part)))
    return Plan(shards, pieces, frozenset(tmps))
