"""A job store's writes of job records, as an event this process can wait on.

A progress request with ``wait`` (``coordinator/waiting.py``) answers when its job's
state changes. Every state change of a job this coordinator runs, stops, claims or
reclaims is a write of the job's record through its ``JobStore``; ``WatchedKV`` stands
between the store and its backend and, after each write that touched a job record,
sets the event of the moment and starts a new one. A waiter takes the event *before*
it reads the record, so a change between its read and its wait is never missed.

A job another coordinator runs (etcd) changes without a write here: waiters still read
the record on a timer for those.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import trio

from alluxiojob.store.kv import Compare, Entry, KVStore, Op, Txn


class WatchedKV:
    """``kv``, with an event set after every write under ``prefix`` (the job records)."""

    def __init__(self, kv: KVStore, prefix: bytes) -> None:
        self.inner = kv
        self.prefix = prefix
        self.supports_leases = kv.supports_leases
        self._changed = trio.Event()

    def next_change(self) -> trio.Event:
        """Set at the next write of a job record (by this process) from now on."""
        return self._changed

    def _wrote(self, ops: Iterable[Op]) -> None:
        if any(op.key.startswith(self.prefix) for op in ops):
            self._changed.set()
            self._changed = trio.Event()

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        revision = await self.inner.txn(compares, ops)
        if revision is not None:
            self._wrote(ops)
        return revision

    async def txn_each(self, txns: Sequence[Txn]) -> list[int | None]:
        results = await self.inner.txn_each(txns)
        self._wrote(op for (_, ops), revision in zip(txns, results, strict=True)
                    if revision is not None for op in ops)
        return results

    async def get(self, key: bytes) -> Entry | None:
        return await self.inner.get(key)

    async def scan(self, prefix: bytes, *, start_after: bytes | None = None, limit: int = 0
                   ) -> list[Entry]:
        return await self.inner.scan(prefix, start_after=start_after, limit=limit)

    async def count(self, prefix: bytes) -> int:
        return await self.inner.count(prefix)

    async def probe(self) -> None:
        await self.inner.probe()

    async def grant_lease(self, ttl: float) -> int:
        return await self.inner.grant_lease(ttl)

    async def keep_alive(self, lease: int) -> bool:
        return await self.inner.keep_alive(lease)

    async def revoke(self, lease: int) -> None:
        await self.inner.revoke(lease)

    async def aclose(self) -> None:
        await self.inner.aclose()
