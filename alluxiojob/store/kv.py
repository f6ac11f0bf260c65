"""The small transactional key-value interface both job-store backends implement.

Theory of operation
-------------------
The job logic (``alluxiojob.store.jobs``) is written once, against this protocol. A
backend only has to offer what etcd offers natively: point reads, ordered prefix scans,
per-key modification revisions, and an atomic transaction of "if these keys still have
these revisions, apply these puts and deletes". RocksDB emulates revisions with a
counter kept in the same database. Revision 0 in a ``Compare`` means "the key must not
exist". Leases (for liveness keys) exist only where several coordinators share a store.

``txn_each`` sends several independent transactions in one atomic step (etcd's nested
transactions): each applies if its own compares hold, so a batch of claims costs one
round trip and one fsync, and a claim lost to a peer does not undo the others.

Every backend raises only the ``alluxiojob.core.errors`` family: ``Unavailable`` when
the store cannot be reached or cannot write, ``NotFound`` for a lease that is gone, a
plain ``JobServiceError`` for a request the store rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Entry:
    key: bytes
    value: bytes
    revision: int  # modification revision of this key


@dataclass(frozen=True)
class Compare:
    key: bytes
    revision: int  # expected modification revision; 0 = key absent


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: bytes
    prefix: bool = False  # delete every key starting with ``key``


Op = Put | Delete
Txn = tuple[Sequence[Compare], Sequence[Op]]
"""``(compares, ops)``: apply ``ops`` if every compare holds."""


class KVStore(Protocol):
    """Async, transactional, revisioned key-value storage."""

    supports_leases: bool

    async def get(self, key: bytes) -> Entry | None: ...

    async def scan(
        self, prefix: bytes, *, start_after: bytes | None = None, limit: int = 0
    ) -> list[Entry]:
        """Entries whose key starts with ``prefix``, in key order, after ``start_after``."""
        ...

    async def count(self, prefix: bytes) -> int: ...

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        """Apply ``ops`` atomically if every compare holds; return the new revision or None."""
        ...

    async def txn_each(self, txns: Sequence[Txn]) -> list[int | None]:
        """Apply each transaction whose compares hold, all in one atomic step.

        Compares are evaluated before any of the batch is applied, and the transactions
        must write disjoint keys. Returns, per transaction, the revision of the batch or
        None where the compares failed.
        """
        ...

    async def probe(self) -> None:
        """Raise ``Unavailable`` naming the problem if the store cannot take writes now."""
        ...

    async def grant_lease(self, ttl: float) -> int: ...

    async def keep_alive(self, lease: int) -> bool:
        """Refresh ``lease``; False once it has expired."""
        ...

    async def revoke(self, lease: int) -> None: ...

    async def aclose(self) -> None: ...


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key that starts with ``prefix`` (None: no end)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
