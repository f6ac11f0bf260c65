"""Consistent-hash placement of UFS paths on workers.

Each worker gets ``virtual_nodes`` points on a 32-bit ring at murmur3(identity + index),
as Alluxio does. A path is owned by the first point clockwise of murmur3(path); replicas
are the next distinct workers. The ring is rebuilt only when membership changes, so a
lookup is one hash and one bisect.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import mmh3

DEFAULT_VIRTUAL_NODES = 2000


def _hash(text: str) -> int:
    # Bytes, not str, unless ASCII: a file name that is not UTF-8 arrives with
    # surrogates, which the hash must take as they are (mmh3 hashes a str as its UTF-8
    # bytes, and crashes on a surrogate). An ASCII str skips building the bytes.
    if text.isascii():
        return mmh3.hash(text, signed=False)
    return mmh3.hash(text.encode("utf-8", "surrogateescape"), signed=False)


class HashRing:
    def __init__(self, workers: Iterable[str], virtual_nodes: int = DEFAULT_VIRTUAL_NODES) -> None:
        self.workers: tuple[str, ...] = tuple(sorted(set(workers)))
        points: list[tuple[int, str]] = []
        for worker in self.workers:
            points.extend((_hash(f"{worker}{index}"), worker) for index in range(virtual_nodes))
        points.sort()
        self._hashes = [point for point, _ in points]
        self._owners = [owner for _, owner in points]

    def __len__(self) -> int:
        return len(self.workers)

    def owners(self, key: str, replicas: int = 1) -> list[str]:
        """The ``replicas`` distinct workers that own ``key``, primary first."""
        if not self._hashes or replicas < 1:
            return []
        wanted = min(replicas, len(self.workers))
        start = bisect.bisect_left(self._hashes, _hash(key))
        if wanted == 1:  # the common case: the first point's owner
            return [self._owners[start % len(self._owners)]]
        found: list[str] = []
        total = len(self._owners)
        for offset in range(total):
            owner = self._owners[(start + offset) % total]
            if owner not in found:
                found.append(owner)
                if len(found) == wanted:
                    break
        return found

    def primary(self, key: str) -> str:
        """``owners(key, 1)[0]`` without the list, for a ring with workers (the listing
        calls it once per file)."""
        owners = self._owners
        return owners[bisect.bisect_left(self._hashes, _hash(key)) % len(owners)]

    def owner(self, key: str) -> str:
        owners = self.owners(key, 1)
        if not owners:
            raise LookupError("the hash ring has no workers")
        return owners[0]
