"""The pure cutting of a manifest's or template's positions into shards: every entry in
exactly one shard, in order, with exact counts, in bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alluxiojob.core.manifest import Cuts, SourceShard, template_parts, template_shards
from alluxiojob.core.shards import ShardRecord

pytestmark = pytest.mark.fast


def owner(shards: list[SourceShard], parts: tuple[str, ...]) -> list[int]:
    """The shards whose range holds ``parts``, as a shard runner bounds its walk."""
    return [number for number, shard in enumerate(shards)
            if parts > shard.after and not ShardRecord("j", number, shard.after,
                                                       shard.until).past_end(parts)]


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=400),
       st.integers(min_value=1, max_value=12), st.integers(min_value=2, max_value=20))
def test_cuts_put_every_entry_in_one_shard_with_exact_counts(
        lengths: list[int], parts: int, keep: int) -> None:
    positions = [(f"{n // 50:06d}", f"{n % 50:012d}") for n in range(len(lengths))]
    cuts = Cuts(keep=keep)
    for position, length in zip(positions, lengths, strict=True):
        cuts.add(position, length)
    assert len(cuts.kept) <= keep, "memory stays bounded"
    shards = cuts.shards(parts)
    assert len(shards) <= parts
    if not lengths:
        assert shards == []
        return
    assert shards[0].after == ()
    assert shards[-1].until == ()
    for before, after in zip(shards, shards[1:], strict=False):
        assert before.until == after.after, "contiguous"
    counted = [0] * len(shards)
    summed = [0] * len(shards)
    for position, length in zip(positions, lengths, strict=True):
        [number] = owner(shards, position)
        counted[number] += 1
        summed[number] += length
    assert counted == [shard.files for shard in shards]
    assert summed == [shard.bytes for shard in shards]
    assert all(shard.files > 0 for shard in shards)
    if cuts.every == 1:  # every position kept: sizes within one of equal
        assert max(counted) - min(counted) <= 1


def test_cuts_of_many_entries_stay_even() -> None:
    cuts = Cuts(keep=64)
    for n in range(100_000):
        cuts.add((f"{n:012d}", str(n * 7)), 1)
    assert len(cuts.kept) <= 64
    shards = cuts.shards(8)
    assert len(shards) == 8
    assert sum(s.files for s in shards) == 100_000
    assert max(s.files for s in shards) - min(s.files for s in shards) <= 2 * cuts.every


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=70))
def test_template_shards_cover_every_index_once(total: int, parts: int) -> None:
    shards = template_shards(total, parts)
    assert sum(s.files for s in shards) == total
    assert len(shards) <= max(1, parts)
    for index in {0, total // 3, total // 2, total - 1} if total else set():
        assert len(owner(shards, template_parts(index))) == 1
    for before, after in zip(shards, shards[1:], strict=False):
        assert before.until == after.after
