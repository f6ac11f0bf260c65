"""The chaos run, short: a few faults with one fixed seed, and nothing may be lost.

``scripts/chaos`` runs the long version (50+ faults per seed) for the figures in docs/robustness.md.
The double-owner audit is also tested on its own here, against a real etcd, to show
that it catches a write that fencing should have refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from alluxiojob.core.errors import Fenced
from alluxiojob.core.job import JobOptions, JobType
from alluxiojob.core.progress import Counters, Progress
from alluxiojob.core.states import JobEvent
from alluxiojob.store.etcd import EtcdKVStore
from alluxiojob.store.jobs import JobStore
from alluxiojob.store.kv import Put
from alluxiojob.store.records import pack_record
from alluxiojob.store.shards import ShardStore
from alluxiojob.testing.etcd import EtcdServer
from tests.integration.chaos import (
    JOB_PREFIX,
    ChaosConfig,
    ChaosRun,
    EtcdGateway,
    audit_owner_writes,
)
from tests.integration.etcd_history import audit_job_ends

SEED = 20240607


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with EtcdServer(data_dir=tmp_path / "etcd") as server:
        yield server


@pytest.mark.timeout(60)
async def test_owner_audit_catches_a_write_fencing_should_have_refused(
        etcd: EtcdServer) -> None:
    kv = EtcdKVStore([etcd.url], read_timeout=5, write_timeout=5)
    jobs = JobStore(kv, prefix=JOB_PREFIX)
    gateway = EtcdGateway(etcd.url)
    try:
        with trio.fail_after(50):
            job, _ = await jobs.submit(JobType.LOAD, "file:///data", "", JobOptions(), 100)
            [old] = await jobs.claim_waiting("coord-a", 1)
            await jobs.save_progress(old, Progress(committed=Counters(files_processed=1)))
            await jobs.reclaim_orphans(lambda owner: owner != "coord-a")
            [new] = await jobs.claim_waiting("coord-b", 1)
            mine = Progress(committed=Counters(files_processed=5))
            await jobs.save_progress(new, mine)
            with pytest.raises(Fenced):  # the old owner is refused and leaves no trace
                await jobs.save_progress(old, Progress(committed=Counters(files_processed=9)))
            done = await jobs.transition(new, JobEvent.SUCCEED, progress=mine)
            assert done.job.state.value == "SUCCEEDED"
            history = await trio.to_thread.run_sync(gateway.history, JOB_PREFIX)
            assert audit_owner_writes(history) == []

            # What a broken fence would let through: coord-a's write after coord-b took over.
            stale = replace(mine, writer="coord-a")
            await kv.txn([], [Put(f"{JOB_PREFIX}progress/{job.id}".encode(),
                                  pack_record(stale.to_wire()))])
            history = await trio.to_thread.run_sync(gateway.history, JOB_PREFIX)
            problems = audit_owner_writes(history)
            assert len(problems) == 1, problems
            assert "written by coord-a" in problems[0], problems
            assert "SUCCEEDED" in problems[0], problems
    finally:
        await kv.aclose()


@pytest.mark.timeout(60)
async def test_owner_audit_of_shard_writes(etcd: EtcdServer) -> None:
    kv = EtcdKVStore([etcd.url], read_timeout=5, write_timeout=5)
    jobs = JobStore(kv, prefix=JOB_PREFIX)
    shards = ShardStore(jobs)
    gateway = EtcdGateway(etcd.url)
    try:
        with trio.fail_after(50):
            await jobs.submit(JobType.LOAD, "file:///shards", "", JobOptions(), 100)
            [owned] = await jobs.claim_waiting("coord-a", 1)
            assert await shards.plan(owned, [((), ("m",)), (("m",), ())])
            [old, _] = await shards.claim("coord-a", 2)
            old = await shards.save(old, Progress(committed=Counters(files_processed=1)))
            await shards.reclaim_orphans(lambda shard: shard.owner == "coord-a")
            [new, other] = await shards.claim("coord-b", 2)
            with pytest.raises(Fenced):
                await shards.save(old, Progress())
            await shards.finish(new, Progress(), lambda _: "")
            await shards.finish(other, Progress(), lambda _: "")
            history = await trio.to_thread.run_sync(gateway.history, JOB_PREFIX)
            assert audit_owner_writes(history) == []

            # What a broken fence would let through: coord-a's save after coord-b's claim.
            stale = replace(old.shard, progress=Progress())
            await kv.txn([], [Put(f"{JOB_PREFIX}shard/{owned.job.id}/0000".encode(),
                                  pack_record(stale.to_wire()))])
            history = await trio.to_thread.run_sync(gateway.history, JOB_PREFIX)
            problems = audit_owner_writes(history)
            assert len(problems) == 1, problems
            assert "by coord-a while it was DONE owned by coord-b" in problems[0], problems
    finally:
        await kv.aclose()


@pytest.mark.timeout(60)
async def test_audit_of_job_ends_counts_final_writes_and_unfinished_shards(
        etcd: EtcdServer) -> None:
    kv = EtcdKVStore([etcd.url], read_timeout=5, write_timeout=5)
    jobs = JobStore(kv, prefix=JOB_PREFIX)
    shards = ShardStore(jobs)
    gateway = EtcdGateway(etcd.url)
    try:
        with trio.fail_after(50):
            job, _ = await jobs.submit(JobType.LOAD, "file:///ends", "", JobOptions(), 100)
            [owned] = await jobs.claim_waiting("coord-a", 1)
            assert await shards.plan(owned, [((), ("m",)), (("m",), ())])
            [first] = await shards.claim("coord-a", 1)
            [second] = await shards.claim("coord-b", 1)
            assert await shards.finish(first, Progress(), lambda _: "") is None
            final = await shards.finish(second, Progress(), lambda _: "")
            assert final is not None
            history = await trio.to_thread.run_sync(gateway.history, JOB_PREFIX)
            ends = audit_job_ends(history)
            assert ends.final_writes == {job.id: 1}
            assert ends.problems == []
            assert (ends.sharded_jobs, ends.shards, ends.shard_claims, ends.spread_jobs) == (
                1, 2, 2, 1)

            # What a broken end would leave: the final state written again, and a shard
            # of the SUCCEEDED job running again.
            await kv.txn([], [Put(f"{JOB_PREFIX}job/{job.id}".encode(),
                                  pack_record(final.to_wire()))])
            again = replace(second.shard, owner="coord-c")
            await kv.txn([], [Put(f"{JOB_PREFIX}shard/{job.id}/0001".encode(),
                                  pack_record(again.to_wire()))])
            ends = audit_job_ends(await trio.to_thread.run_sync(gateway.history, JOB_PREFIX))
            assert ends.final_writes == {job.id: 2}
            assert len(ends.problems) == 1, ends.problems
            assert "shards ['0001'] were written again" in ends.problems[0], ends.problems
    finally:
        await kv.aclose()


@pytest.mark.timeout(300)
def test_short_chaos_run_loses_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    config = ChaosConfig(seed=SEED, root=tmp_path / "chaos", faults=8, duration=60,
                         grace=90, lanes=3, mean_gap=1.5, small_files=12, big_files=1,
                         log=lines.append)
    report = ChaosRun(config).run()
    text = report.render() + "\n" + "\n".join(lines)
    assert sum(report.faults.values()) == 8, text
    assert report.acknowledged, text
    assert report.history_events, text
    assert report.jobs_lost == [], text
    assert report.files_wrong == [], text
    assert report.move_lost == [], text
    assert report.double_owner == [], text
    assert report.counters_backwards == [], text
    assert report.final_not_once == [], text
    assert report.shards_unfinished == [], text
    assert report.progress_reports, text
    assert report.anomalies == [], text
    print(report.render())
