"""Lease refresh timing, on trio's autojump clock (no real sleeps)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from alluxiojob.core.backoff import jittered
from alluxiojob.core.errors import Unavailable
from alluxiojob.store.kv import Compare, Entry, Op, Put
from alluxiojob.store.liveness import DuplicateId, LeaseRegistration, liveness_root


class ScriptedLeases:
    """A KV whose lease answers follow a script: pure logic, no storage."""

    supports_leases = True

    def __init__(self, keep_alive_answers: list[bool | Exception]) -> None:
        self.answers = keep_alive_answers
        self.granted: list[float] = []
        self.refreshed: list[float] = []
        self.puts: list[Put] = []
        self.fail_grants = 0

    async def grant_lease(self, ttl: float) -> int:
        if self.fail_grants:
            self.fail_grants -= 1
            raise Unavailable("etcd is unavailable at http://127.0.0.1:1")
        self.granted.append(trio.current_time())
        return len(self.granted)

    async def keep_alive(self, lease: int) -> bool:
        self.refreshed.append(trio.current_time())
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        self.puts.extend(op for op in ops if isinstance(op, Put))
        return 1

    async def get(self, key: bytes) -> Entry | None:
        raise NotImplementedError

    async def scan(self, prefix: bytes, *, start_after: bytes | None = None,
                   limit: int = 0) -> list[Entry]:
        raise NotImplementedError

    async def count(self, prefix: bytes) -> int:
        raise NotImplementedError

    async def revoke(self, lease: int) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_refreshes_every_third_of_the_ttl(autojump_clock: trio.testing.MockClock) -> None:
    kv = ScriptedLeases([True] * 10)
    registration = LeaseRegistration(kv, "/alluxio/coordinators/c1", b"c1", ttl=15.0)
    with trio.move_on_after(31):
        await registration.run()
    assert len(kv.granted) == 1
    gaps = [b - a for a, b in zip([kv.granted[0], *kv.refreshed], kv.refreshed, strict=False)]
    assert len(kv.refreshed) == 6
    assert all(abs(gap - 5.0) < 1e-6 for gap in gaps)
    assert kv.puts[0].lease == 1
    assert kv.puts[0].key == b"/alluxio/coordinators/c1"


async def test_expired_lease_registers_again(autojump_clock: trio.testing.MockClock) -> None:
    kv = ScriptedLeases([True, False, True])
    registration = LeaseRegistration(kv, "/alluxio/coordinators/c1", b"c1", ttl=3.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(registration.run)
        await trio.sleep(2.5)  # refreshed at 1s, found expired at 2s, registered again
        assert len(kv.granted) == 2, "a lost lease is replaced by a new one"
        assert [put.lease for put in kv.puts] == [1, 2]
        assert registration.registered
        nursery.cancel_scope.cancel()


async def test_unreachable_store_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    kv = ScriptedLeases([])
    kv.fail_grants = 3
    registration = LeaseRegistration(kv, "/k", b"v", ttl=3.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(registration.run)
        assert not registration.registered
        await trio.sleep(2.5)  # three failed attempts, one per second
        assert not registration.registered
        await trio.sleep(1.0)
        assert registration.registered
        assert kv.granted == [3.0]
        nursery.cancel_scope.cancel()
    assert not registration.registered


def test_jitter_stays_within_twenty_percent() -> None:
    samples = [jittered(10.0) for _ in range(2000)]
    assert min(samples) >= 8.0
    assert max(samples) <= 12.0
    assert max(samples) - min(samples) > 2.0, "jitter actually varies"


def test_liveness_keys_sit_beside_the_job_prefix() -> None:
    assert liveness_root("/alluxio/jobs/") == "/alluxio/"
    assert liveness_root("/t/abc/jobs") == "/t/abc/"
    assert liveness_root("jobs/") == "/"


class HeldKey(ScriptedLeases):
    """A KV where another instance holds the key until ``released_at`` (None: for ever)."""

    def __init__(self, released_at: float | None) -> None:
        super().__init__([])
        self.released_at = released_at
        self.revoked: list[int] = []

    def _held(self) -> bool:
        return self.released_at is None or trio.current_time() < self.released_at

    async def get(self, key: bytes) -> Entry | None:
        if self._held():
            return Entry(key, b'{"host": "other", "pid": 7}', 5)
        mine = [put for put in self.puts if put.key == key]
        return Entry(key, mine[-1].value, 9) if mine else None

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        if self._held() or any(put.key == c.key for c in compares for put in self.puts):
            return None
        return await super().txn(compares, ops)

    async def revoke(self, lease: int) -> None:
        self.revoked.append(lease)


async def test_same_id_waits_for_a_dead_holder(autojump_clock: trio.testing.MockClock) -> None:
    kv = HeldKey(released_at=10.0)  # a crashed process's key, 10 s of its lease left
    registration = LeaseRegistration(kv, "/alluxio/coordinators/c1", b"me", ttl=15.0,
                                     exclusive=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(registration.run)  # startup waits for the id
        assert 10.0 <= trio.current_time() < 11.0
        assert registration.acquired.is_set()
        assert kv.puts[-1].value == b"me"
        nursery.cancel_scope.cancel()
    assert kv.revoked == [1], "a clean stop frees the id at once"


async def test_same_id_held_by_a_live_coordinator_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kv = HeldKey(released_at=None)  # refreshed for ever by a live coordinator
    registration = LeaseRegistration(kv, "/alluxio/coordinators/c1", b"me", ttl=15.0,
                                     exclusive=True)
    with pytest.raises(DuplicateId) as info:
        await registration.run()
    assert "alluxio.coordinator.id=c1" in str(info.value)
    assert "pid 7 on other" in str(info.value)
    assert 15.0 < trio.current_time() < 20.0  # one TTL and a margin, not for ever
    assert not registration.acquired.is_set()
    assert kv.puts == []
