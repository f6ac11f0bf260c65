"""Shard records (``store/shards.py``) on every backend: RocksDB, etcd and memory.

Part of the store conformance suite: the ``jobs`` fixture (``conftest.py``) runs each
test once per backend.
"""

from __future__ import annotations

import pytest
import trio

from alluxiojob.coordinator.sharding import outcome
from alluxiojob.core.errors import Fenced
from alluxiojob.core.job import JobOptions, JobType
from alluxiojob.core.progress import Counters, FailureRecord, Progress
from alluxiojob.core.reasons import Reason
from alluxiojob.core.shards import ShardState
from alluxiojob.core.states import JobState
from alluxiojob.store.jobs import JobStore, OwnedJob
from alluxiojob.store.shards import OwnedShard, ShardStore

TEST_TIMEOUT = 30.0
RANGES = [((), ("b", "\U0010ffff")), (("b", "\U0010ffff"), ("d", "\U0010ffff")),
          (("d", "\U0010ffff"), ())]


async def sharded_job(jobs: JobStore, path: str = "/data") -> tuple[OwnedJob, ShardStore]:
    await jobs.submit(JobType.LOAD, path, "", JobOptions(), 100)
    [owned] = await jobs.claim_waiting("coord-a", 1)
    shards = ShardStore(jobs)
    assert await shards.plan(owned, RANGES)
    return owned, shards


def done(files: int, failed: int = 0) -> Progress:
    counters = Counters(files_listed=files + failed, files_processed=files,
                        files_failed=failed)
    return Progress(live=counters, committed=counters, listing_done=True)


async def test_plan_once_and_claim_each_shard_once(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owned, shards = await sharded_job(jobs)
        assert not await shards.plan(owned, RANGES)  # stored once
        a = await shards.claim("coord-a", 2)
        b = await shards.claim("coord-b", 5)
        assert [s.shard.index for s in a] == [0, 1]
        assert [s.shard.index for s in b] == [2]
        assert await shards.claim("coord-c", 5) == []
        stored = await shards.of_job(owned.job.id)
        assert [(s.after, s.until, s.state, s.owner) for s, _ in stored] == [
            (*RANGES[0], ShardState.RUNNING, "coord-a"),
            (*RANGES[1], ShardState.RUNNING, "coord-a"),
            (*RANGES[2], ShardState.RUNNING, "coord-b"),
        ]


async def test_last_shard_makes_the_final_transition_once(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owned, shards = await sharded_job(jobs)
        claimed = await shards.claim("coord-a", 1) + await shards.claim("coord-b", 2)
        saved = [await shards.save(s, done(i + 1)) for i, s in enumerate(claimed)]
        assert (await jobs.get_progress(owned.job.id)).live.files_processed == 1 + 2 + 3
        assert await shards.finish(saved[2], done(3), outcome) is None
        assert await shards.finish(saved[0], done(1), outcome) is None
        assert (await jobs.get(owned.job.id)).job.state is JobState.RUNNING
        final = await shards.finish(saved[1], done(2), outcome)
        assert final is not None
        assert final.state is JobState.SUCCEEDED
        job = (await jobs.get(owned.job.id)).job
        assert (job.state, job.error) == (JobState.SUCCEEDED, "")
        assert (await jobs.get_progress(owned.job.id)).committed.files_processed == 6
        with pytest.raises(Fenced):  # a shard finished twice: the job changed since
            await shards.finish(saved[1], done(2), outcome)


async def test_failed_files_fail_the_job_at_the_end(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owned, shards = await sharded_job(jobs)
        claimed = await shards.claim("coord-a", 3)
        bad = FailureRecord("/data/c/x", Reason.IO_ERROR, "boom", 1.0)
        claimed[1] = await shards.save(claimed[1], done(1, failed=1), [bad])
        for s in claimed[:2]:
            assert await shards.finish(s, s.shard.progress if s is claimed[1] else done(2),
                                       outcome) is None
        final = await shards.finish(claimed[2], done(3), outcome)
        assert final is not None
        assert final.state is JobState.FAILED
        assert "1 files failed" in final.error
        assert [f.path for f in await jobs.list_failures(owned.job.id)] == ["/data/c/x"]


async def test_an_error_fails_the_job_and_fences_the_other_shards(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owned, shards = await sharded_job(jobs)
        first, second, _ = await shards.claim("coord-a", 3)
        final = await shards.finish(first, done(1), outcome, error="too many failures")
        assert final is not None
        assert final.state is JobState.FAILED
        with pytest.raises(Fenced):
            await shards.save(second, done(2))
        assert (await jobs.get(owned.job.id)).job.error == "too many failures"


async def test_reclaimed_shard_fences_its_old_owner(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owned, shards = await sharded_job(jobs)
        [old] = await shards.claim("coord-b", 1)
        checkpointed = Progress(live=Counters(files_processed=4),
                                committed=Counters(files_processed=4), checkpoint=("a", "f4"))
        old = await shards.save(old, checkpointed)
        assert await shards.reclaim_orphans(lambda shard: shard.owner == "coord-b") == 1
        [new] = await shards.claim("coord-c", 1)
        assert new.shard.index == old.shard.index
        assert new.shard.progress.checkpoint == ("a", "f4")  # resumes where it was
        with pytest.raises(Fenced):
            await shards.save(old, done(9))
        await shards.save(new, done(5))
        assert (await jobs.get_progress(owned.job.id)).live.files_processed == 5


async def test_stop_fences_shards_and_a_resume_requeues_them(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owned, shards = await sharded_job(jobs)
        claimed = await shards.claim("coord-a", 2)
        claimed[0] = await shards.save(claimed[0], done(2))
        await jobs.stop(JobType.LOAD, "/data")
        with pytest.raises(Fenced):
            await shards.save(claimed[1], done(1))
        assert await shards.claim("coord-b", 5) == []  # the stopped job's entries go
        assert (await jobs.get_progress(owned.job.id)).live.files_processed == 2
        await jobs.submit(JobType.LOAD, "/data", "", JobOptions(), 100)  # resume
        [again] = await jobs.claim_waiting("coord-b", 1)
        assert await shards.requeue_all(again) == 3
        with pytest.raises(Fenced):
            await shards.save(claimed[0], done(3))
        reclaimed = await shards.claim("coord-b", 5)
        assert [s.shard.index for s in reclaimed] == [0, 1, 2]
        assert reclaimed[0].shard.progress.live.files_processed == 2


async def test_rerun_of_a_failed_job_forgets_its_shards(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owned, shards = await sharded_job(jobs)
        [first, *_] = await shards.claim("coord-a", 3)
        await shards.finish(first, done(1), outcome, error="boom")
        await jobs.rerun(owned.job.id)
        assert await shards.of_job(owned.job.id) == []
        assert await shards.claim("coord-a", 3) == []
        assert await jobs.get_progress(owned.job.id) == Progress()


async def test_expired_jobs_lose_their_shards(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owned, shards = await sharded_job(jobs)
        claimed: list[OwnedShard] = await shards.claim("coord-a", 3)
        for s in claimed:
            await shards.finish(s, done(1), outcome)
        assert (await jobs.get(owned.job.id)).job.state is JobState.SUCCEEDED
        await trio.sleep(0.01)
        assert await jobs.delete_expired(0.0) == 1
        assert await shards.of_job(owned.job.id) == []


async def test_a_split_queues_the_rest_and_holds_the_job_open(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owned, shards = await sharded_job(jobs)
        a, b, c = await shards.claim("coord-a", 3)
        at = ("c", "f")
        split_b = await shards.split(b, at)
        assert split_b is not None
        assert split_b.shard.until == at
        with pytest.raises(Fenced):  # b's old revision: its record changed since
            await shards.split(b, ("c", "g"))
        stored = {s.index: s for s, _ in await shards.of_job(owned.job.id)}
        assert stored[1].until == at
        assert (stored[3].after, stored[3].until, stored[3].state) == (
            at, RANGES[1][1], ShardState.WAITING)
        split_c = await shards.split(c, ("e",))
        assert split_c is not None
        assert sorted(s.index for s, _ in await shards.of_job(owned.job.id)) == [0, 1, 2, 3, 4]
        assert await shards.split(a, ("c",)) is None, "outside its range: refused"
        # The job ends only once the new shards are done too.
        for mine in (a, split_b):
            assert await shards.finish(mine, done(1), outcome) is None
        rest = await shards.claim("coord-b", 5)
        assert sorted(s.shard.index for s in rest) == [3, 4]
        for mine in rest:
            assert await shards.finish(mine, done(1), outcome) is None
        assert (await jobs.get(owned.job.id)).job.state is JobState.RUNNING
        final = await shards.finish(split_c, done(1), outcome)
        assert final is not None
        assert final.state is JobState.SUCCEEDED
        assert (await jobs.get_progress(owned.job.id)).committed.files_processed == 5


async def test_a_split_by_a_fenced_owner_fails(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        owned, shards = await sharded_job(jobs)
        [first] = await shards.claim("coord-a", 1)
        await shards.reclaim_orphans(lambda shard: True)
        with pytest.raises(Fenced):
            await shards.split(first, ("a",))
        assert len(await shards.of_job(owned.job.id)) == 3, "nothing was added"


async def test_plan_stores_each_shards_known_totals(jobs: JobStore) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        await jobs.submit(JobType.LOAD, "/list.txt", "", JobOptions(), 100)
        [owned] = await jobs.claim_waiting("coord-a", 1)
        shards = ShardStore(jobs)
        assert await shards.plan(owned, RANGES, [(10, 100), (20, 0), (5, 7)])
        total = await jobs.get_progress(owned.job.id)
        assert (total.files_total, total.bytes_total) == (35, 107)
