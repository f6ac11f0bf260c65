"""Consistent-hash placement (``core/ring.py``)."""

from __future__ import annotations

from collections import Counter

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alluxiojob.core.ring import DEFAULT_VIRTUAL_NODES, HashRing, _hash

WORKERS = ["worker-a:29999", "worker-b:29999", "worker-c:29999"]
NEW_WORKER = "worker-d:29999"
KEYS = [f"s3://bucket/dataset/part-{i:05d}.parquet" for i in range(30_000)]


@pytest.fixture(scope="module")
def ring3() -> HashRing:
    return HashRing(WORKERS)


@pytest.fixture(scope="module")
def placement3(ring3: HashRing) -> dict[str, str]:
    return {key: ring3.owner(key) for key in KEYS}


def test_default_virtual_nodes() -> None:
    assert DEFAULT_VIRTUAL_NODES == 2000


def test_distribution_is_within_15_percent(placement3: dict[str, str]) -> None:
    counts = Counter(placement3.values())
    assert set(counts) == set(WORKERS)
    even = len(KEYS) / len(WORKERS)
    for worker, count in counts.items():
        assert 0.85 * even <= count <= 1.15 * even, (worker, count)


def test_placement_is_deterministic(ring3: HashRing, placement3: dict[str, str]) -> None:
    for order in (list(reversed(WORKERS)), [WORKERS[1], WORKERS[2], WORKERS[0]]):
        other = HashRing(order)
        assert other.workers == ring3.workers
        for key in KEYS[:3000]:
            assert other.owner(key) == placement3[key]
            assert other.owners(key, 3) == ring3.owners(key, 3)


def test_duplicate_workers_are_collapsed(ring3: HashRing) -> None:
    ring = HashRing(WORKERS + WORKERS[:2])
    assert len(ring) == 3
    assert ring.workers == tuple(sorted(WORKERS))
    for key in KEYS[:1000]:
        assert ring.owners(key, 3) == ring3.owners(key, 3)


def test_replicas_are_distinct_and_primary_first(ring3: HashRing) -> None:
    for key in KEYS[:2000]:
        owners = ring3.owners(key, 2)
        assert len(owners) == 2
        assert len(set(owners)) == 2
        assert owners[0] == ring3.owner(key)
        assert ring3.owners(key, 1) == owners[:1]
        assert ring3.owners(key, 3)[:2] == owners


def test_more_replicas_than_workers_returns_every_worker(ring3: HashRing) -> None:
    for key in KEYS[:500]:
        owners = ring3.owners(key, 5)
        assert len(owners) == 3
        assert set(owners) == set(WORKERS)
        assert owners[0] == ring3.owner(key)


def test_replicas_spread_over_every_worker(ring3: HashRing) -> None:
    seconds = Counter(ring3.owners(key, 2)[1] for key in KEYS[:6000])
    assert set(seconds) == set(WORKERS)


def test_adding_a_worker_moves_about_a_quarter_only_to_it(placement3: dict[str, str]) -> None:
    ring4 = HashRing([*WORKERS, NEW_WORKER])
    moved = 0
    for key, before in placement3.items():
        after = ring4.owner(key)
        if after != before:
            moved += 1
            assert after == NEW_WORKER, key
    assert 0.15 <= moved / len(KEYS) <= 0.35


def test_removing_a_worker_moves_only_its_keys(placement3: dict[str, str]) -> None:
    gone = WORKERS[1]
    ring2 = HashRing([w for w in WORKERS if w != gone])
    moved = 0
    for key, before in placement3.items():
        after = ring2.owner(key)
        assert after != gone
        if before != gone:
            assert after == before, key
        else:
            moved += 1
    assert moved == sum(1 for owner in placement3.values() if owner == gone)


def test_removing_a_worker_promotes_its_first_replica(ring3: HashRing) -> None:
    gone = WORKERS[0]
    ring2 = HashRing(WORKERS[1:])
    for key in KEYS[:3000]:
        owners = ring3.owners(key, 3)
        expected = [w for w in owners if w != gone]
        assert ring2.owners(key, 2) == expected


def test_single_worker_owns_everything() -> None:
    ring = HashRing(["only:29999"])
    assert len(ring) == 1
    for key in KEYS[:100]:
        assert ring.owner(key) == "only:29999"
        assert ring.owners(key, 3) == ["only:29999"]


def test_empty_ring() -> None:
    ring = HashRing([])
    assert len(ring) == 0
    assert ring.owners("/any", 3) == []
    with pytest.raises(LookupError):
        ring.owner("/any")


def test_empty_key_and_unicode_keys(ring3: HashRing) -> None:
    for key in ["", "/", "日本語/ファイル", "\x00"]:
        assert ring3.owner(key) in WORKERS


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=40))
def test_a_key_hashes_as_its_utf8_bytes(key: str) -> None:
    """ASCII keys take a shorter way to the same hash; a name that is not UTF-8 (with
    surrogates) hashes as its escaped bytes."""
    assert _hash(key) == mmh3.hash(key.encode("utf-8", "surrogateescape"), signed=False)
    odd = key + "\udcff"
    assert _hash(odd) == mmh3.hash(odd.encode("utf-8", "surrogateescape"), signed=False)


def test_zero_replicas_returns_no_owner(ring3: HashRing) -> None:
    assert ring3.owners(KEYS[0], 0) == []


worker_names = st.text(
    alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20
)


@settings(max_examples=40, deadline=None, database=None)
@given(
    workers=st.lists(worker_names, min_size=1, max_size=6, unique=True),
    keys=st.lists(st.text(max_size=40), min_size=1, max_size=20),
    replicas=st.integers(1, 8),
    virtual_nodes=st.integers(1, 64),
)
def test_owners_properties(
    workers: list[str], keys: list[str], replicas: int, virtual_nodes: int
) -> None:
    ring = HashRing(workers, virtual_nodes=virtual_nodes)
    shuffled = HashRing(list(reversed(workers)), virtual_nodes=virtual_nodes)
    for key in keys:
        owners = ring.owners(key, replicas)
        assert len(owners) == min(replicas, len(workers))
        assert len(set(owners)) == len(owners)
        assert set(owners) <= set(workers)
        assert owners[0] == ring.owner(key)
        assert owners == ring.owners(key, replicas + 1)[: len(owners)]
        assert shuffled.owners(key, replicas) == owners
