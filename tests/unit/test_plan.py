"""The LOAD planner (``worker/plan.py``) is pure: for any mix of files, sizes, pool and
throttle, every byte of every file is in exactly one piece, every piece in exactly one
shard, and the files it was given are left as they were."""

from __future__ import annotations

import copy
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from alluxiojob.protocol.codec import FileEntry
from alluxiojob.worker.copier import LocalCopy
from alluxiojob.worker.plan import PlannedFile, Sizes, plan_shards


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[PlannedFile], int, Sizes]:
    sizes = Sizes(partition_size=draw(st.integers(1, 64)), read_size=draw(st.integers(1, 64)),
                  pool_size=draw(st.integers(1, 6)))
    files = []
    for i in range(draw(st.integers(0, 12))):
        local = draw(st.booleans())
        length = draw(st.integers(0, 300))
        uri = f"/data/f{i}" if local else f"s3://b/f{i}"
        planned = PlannedFile(FileEntry(uri, length, 7), uri, f"/cache/data/f{i}", local)
        if sizes.is_large(planned):
            planned.tmp = f"/cache/tmp/large{i}"
        files.append(planned)
    piece = draw(st.sampled_from([0, 0, 1, 5, 50]))
    return files, piece, sizes


@given(workloads())
@settings(max_examples=300, deadline=None)
def test_every_byte_in_one_piece_and_every_piece_in_one_shard(
        workload: tuple[list[PlannedFile], int, Sizes]) -> None:
    files, piece, sizes = workload
    before = copy.deepcopy(files)
    counter = itertools.count()
    plan = plan_shards(files, piece, sizes, lambda p: f"/cache/tmp/{p.entry.path}-{next(counter)}")

    assert files == before  # nothing given is mutated
    in_shards = [work for shard in plan.shards for work in shard.work]
    assert len(in_shards) == len({id(w) for w in in_shards})
    assert sorted(map(id, in_shards)) == sorted(
        id(w) for pieces in plan.pieces.values() for w in pieces)
    for shard in plan.shards:
        assert shard.work
        assert shard.nbytes == sum(
            w.length if w.length >= 0 else by_final(files, w.final).entry.length
            for w in shard.work)
    whole_tmps = set()
    for planned in files:
        pieces = plan.pieces[planned.entry.path]
        assert all(isinstance(w, LocalCopy) == planned.local for w in pieces)
        if sizes.is_large(planned):
            spans = [(w.offset, w.length) for w in pieces]
            assert all(w.tmp == planned.tmp and not w.final for w in pieces)
            assert sum(length for _, length in spans) == planned.entry.length
            assert [o for o, _ in spans] == list(range(0, planned.entry.length,
                                                       sizes.piece(planned)))
        else:
            [whole] = pieces
            assert whole.final == planned.final
            assert whole.length == -1
            whole_tmps.add(whole.tmp)
    assert plan.tmps == whole_tmps  # unique names, all returned
    assert len(whole_tmps) == sum(not sizes.is_large(p) for p in files)


@given(workloads())
@settings(max_examples=200, deadline=None)
def test_unthrottled_objects_go_to_at_most_one_shard_per_process(
        workload: tuple[list[PlannedFile], int, Sizes]) -> None:
    files, _piece, sizes = workload
    plan = plan_shards(files, 0, sizes, lambda p: f"/cache/tmp/{p.entry.path}")
    object_shards = [s for s in plan.shards if not isinstance(s.work[0], LocalCopy)]
    assert len(object_shards) <= sizes.pool_size
    small_local = [s for s in plan.shards
                   if isinstance(s.work[0], LocalCopy) and s.work[0].final]
    assert len(small_local) <= sum(p.local and not sizes.is_large(p) for p in files)


def by_final(files: list[PlannedFile], final: str) -> PlannedFile:
    [planned] = [p for p in files if p.final == final]
    return planned
