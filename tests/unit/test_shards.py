"""The pure shard logic: ranges that cover every file once, and summed progress."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alluxiojob.core.progress import Counters, Progress
from alluxiojob.core.shards import (
    HIGHEST,
    ShardRecord,
    ShardState,
    ahead_cut,
    merge,
    split,
    top_level_bound,
)

NAMES = st.text(alphabet="ab/-.0\u00e9", min_size=1, max_size=4)


def owners(ranges: list[tuple[tuple[str, ...], tuple[str, ...]]],
           parts: tuple[str, ...]) -> list[int]:
    return [i for i, (after, until) in enumerate(ranges)
            if (not after or parts > after) and (not until or parts <= until)]


@given(st.lists(NAMES.filter(lambda n: "/" not in n), max_size=20),
       st.lists(st.lists(NAMES.filter(lambda n: "/" not in n), min_size=1, max_size=3),
                max_size=30),
       st.integers(1, 10))
def test_local_ranges_cover_every_file_once(names: list[str], files: list[list[str]],
                                            target: int) -> None:
    ranges = split([top_level_bound(n, object_store=False) for n in names], target)
    assert 1 <= len(ranges) <= max(1, min(target, len(set(names))))
    for parts in map(tuple, files):
        assert len(owners(ranges, parts)) == 1
        # A file under a listed top-level entry shares a shard with that entry's others.
        if parts[0] in names:
            assert owners(ranges, parts) == owners(ranges, (parts[0],))


@given(st.lists(NAMES, max_size=20), st.lists(NAMES, max_size=30), st.integers(1, 10))
def test_object_ranges_cover_every_key_once(entries: list[str], keys: list[str],
                                            target: int) -> None:
    # Entries as a delimiter listing shows them: common prefixes end with "/".
    tops = {e.split("/")[0] + "/" if "/" in e else e for e in entries}
    ranges = split([top_level_bound(t, object_store=True) for t in tops], target)
    for key in keys:
        assert len(owners(ranges, (key,))) == 1
        prefix = key.split("/")[0] + "/"
        if "/" in key and prefix in tops:
            # Every key under one common prefix falls in one shard.
            assert owners(ranges, (key,)) == owners(ranges, (prefix,))


def test_split_groups_evenly_and_ends_open() -> None:
    bounds = [top_level_bound(n, object_store=False) for n in "abcdefgh"]
    ranges = split(bounds, 3)
    assert [until for _, until in ranges] == [("b", HIGHEST), ("e", HIGHEST), ()]
    assert ranges[0][0] == ()
    assert split([], 4) == [((), ())]
    assert len(split(bounds, 1)) == 1


def test_record_start_and_end() -> None:
    shard = ShardRecord("j", 1, after=("b", HIGHEST), until=("d", HIGHEST))
    assert shard.start(()) == ("b", HIGHEST)
    assert shard.start(("c", "x")) == ("c", "x")  # resumed after its checkpoint
    assert not shard.past_end(("d", "z", "deep"))
    assert shard.past_end(("e",))
    assert ShardRecord.from_wire(shard.to_wire()) == shard
    claimed = ShardRecord("j", 1, state=ShardState.RUNNING, owner="c", claims=3)
    assert ShardRecord.from_wire(claimed.to_wire()) == claimed
    wire = claimed.to_wire()
    del wire["claims"]  # a record written before claims were counted
    assert ShardRecord.from_wire(wire).claims == 0
    assert ShardRecord("j", 0).state is ShardState.WAITING


def test_merge_sums_counters_and_waits_for_every_listing() -> None:
    a = Progress(live=Counters(files_listed=3, files_processed=2), listing_done=True,
                 active_seconds=5.0, workers=("w1",))
    b = Progress(live=Counters(files_listed=4, files_failed=1), listing_done=False,
                 active_seconds=7.0, workers=("w2", "w1"))
    total = merge([a, b])
    assert total.live == Counters(files_listed=7, files_processed=2, files_failed=1)
    assert not total.listing_done
    assert total.active_seconds == 7.0
    assert total.workers == ("w1", "w2")
    assert merge([a]).listing_done
    assert merge([]) == Progress()


@given(st.lists(st.lists(NAMES.filter(lambda n: "/" not in n), min_size=1, max_size=3),
                min_size=1, max_size=40),
       st.data())
def test_a_cut_at_a_listed_file_keeps_every_file_in_one_shard(
        files: list[list[str]], data: st.DataObject) -> None:
    ordered = sorted({tuple(f) for f in files})
    low = data.draw(st.integers(-1, len(ordered) - 1))
    high = data.draw(st.integers(low + 1, len(ordered)))
    after = ordered[low] if low >= 0 else ()
    until = ordered[high] if high < len(ordered) else ()
    shard = ShardRecord("j", 0, after, until, state=ShardState.RUNNING, owner="c1")
    inside = [parts for parts in ordered if shard.holds(parts)]
    at = data.draw(st.sampled_from(ordered))
    cut = shard.cut(at, 7)
    if at not in inside or at == until:
        assert cut is None, "a cut outside the range, or at its end, is refused"
        return
    assert cut is not None
    mine, rest = cut
    assert (mine.index, mine.state, mine.owner, mine.after) == (0, ShardState.RUNNING, "c1",
                                                                after)
    assert (rest.index, rest.state, rest.owner, rest.until) == (7, ShardState.WAITING, "",
                                                                until)
    for parts in ordered:
        assert [mine.holds(parts), rest.holds(parts)].count(True) == (parts in inside)
    listed = inside[:inside.index(at) + 1]
    assert [p for p in inside if mine.holds(p)] == listed, "the owner keeps what it listed"
    if until:  # an open end may hold only files that appear later
        assert rest.holds(until), "the rest is not empty"


TREE = {(): ["a", "b", "c", "d"], ("b",): ["x", "y", "z"], ("b", "y"): ["1", "2", "3"]}


def test_ahead_cut_halves_what_lies_ahead_at_the_shallowest_level() -> None:
    def names(parent: tuple[str, ...]) -> list[str]:
        return TREE.get(parent, [])

    # listed up to b/y/1: at the top, c and d lie ahead: the owner keeps c, the rest d
    assert ahead_cut(("b", "y", "1"), (), names) == ("c", HIGHEST)
    # a range ending inside d: only c is wholly inside at the top; one level down, z
    # alone follows y; two levels down, 2 and 3 follow 1
    assert ahead_cut(("b", "y", "1"), ("d", "q"), names) == ("b", "y", "2", HIGHEST)
    assert ahead_cut(("d",), (), names) is None, "nothing ahead: split at the position"


@given(st.lists(st.lists(NAMES.filter(lambda n: "/" not in n), min_size=1, max_size=3),
                min_size=1, max_size=40), st.data())
def test_ahead_cut_falls_inside_the_range_past_the_position(
        files: list[list[str]], data: st.DataObject) -> None:
    ordered = sorted({tuple(f) for f in files})

    def names(parent: tuple[str, ...]) -> list[str]:
        return sorted({f[len(parent)] for f in ordered
                       if len(f) > len(parent) and f[:len(parent)] == parent})

    position = data.draw(st.sampled_from(ordered))
    until = data.draw(st.sampled_from([(), *ordered]))
    cut = ahead_cut(position, until, names)
    if cut is None:
        return
    shard = ShardRecord("j", 0, (), until)
    assert cut > position
    assert shard.cut(cut, 1) is not None, "a cut the store takes"
    kept = [f for f in ordered if position < f <= cut]
    given_away = [f for f in ordered if cut < f and shard.holds(f)]
    assert kept, "the owner keeps something ahead"
    assert given_away, "the new shard gets something"
