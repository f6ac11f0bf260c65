"""A shard's owner whose write landed in etcd while its answer was lost keeps the shard.

A shard's progress lives in the shard record, and every write of its owner compares the
record's revision. When etcd applies a checkpoint but its answer never reaches the owner
(etcd paused past the write timeout, a connection cut), the owner still holds the old
revision; its next write must not take its own late write for a peer's claim. A real
etcd behind a TCP proxy that holds its answers makes exactly that happen.
"""

from __future__ import annotations

import uuid

import pytest
import trio

from alluxiojob.core.errors import Fenced, Unavailable
from alluxiojob.core.job import JobOptions, JobType
from alluxiojob.core.progress import Counters, Progress
from alluxiojob.core.shards import ShardState
from alluxiojob.store.etcd import EtcdKVStore
from alluxiojob.store.jobs import JobStore
from alluxiojob.store.shards import ShardStore
from alluxiojob.testing.etcd import EtcdServer
from tests.store.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(120)
RANGES = [((), ("b", "\U0010ffff")), (("b", "\U0010ffff"), ())]


def listed(files: int) -> Progress:
    return Progress(live=Counters(files_listed=files, files_processed=files))


async def landed(shards: ShardStore, job_id: str, files: int) -> None:
    """Until the first shard's record shows ``files`` processed: the write did land."""
    while True:
        [(stored, _), *_] = await shards.of_job(job_id)
        if stored.progress.live.files_processed == files:
            return
        await trio.sleep(0.05)


async def reconnected(kv: EtcdKVStore) -> None:
    """Until the client behind the cut proxy gets answers again. gRPC notices the closed
    socket on its own time; a call made before that fails with UNAVAILABLE, which a
    client with no retries (as here) passes on instead of retrying."""
    while True:
        try:
            await kv.get(b"/probe")
            return
        except Unavailable:
            await trio.sleep(0.05)


async def test_a_checkpoint_whose_answer_was_lost_does_not_fence_its_owner(
        etcd_server: EtcdServer) -> None:
    host, port = etcd_server.url.removeprefix("http://").split(":")
    prefix = f"/t/{uuid.uuid4().hex}/"
    direct = JobStore(EtcdKVStore([etcd_server.url], read_timeout=5, write_timeout=5),
                      prefix=prefix)
    with TcpProxy(host, int(port)) as proxy:
        kv = EtcdKVStore([proxy.url], read_timeout=1, write_timeout=1, max_retries=0)
        jobs = JobStore(kv, prefix=prefix)
        shards = ShardStore(jobs)
        try:
            with trio.fail_after(60):
                await jobs.submit(JobType.LOAD, "/data", "", JobOptions(), 100)
                [owned_job] = await jobs.claim_waiting("coord-a", 1)
                assert await shards.plan(owned_job, RANGES)
                [mine] = await shards.claim("coord-a", 1)
                mine = await shards.save(mine, listed(1))

                proxy.hold_answers()  # etcd applies the next write; its answer is lost
                with pytest.raises(Unavailable):
                    await shards.save(mine, listed(2))
                proxy.cut()
                await landed(ShardStore(direct), owned_job.job.id, 2)
                await reconnected(kv)

                mine = await shards.save(mine, listed(3))  # still the owner
                [(stored, _), _] = await ShardStore(direct).of_job(owned_job.job.id)
                assert (stored.state, stored.owner) == (ShardState.RUNNING, "coord-a")
                assert stored.progress.live.files_processed == 3

                # A claim taken since (even by the same coordinator) fences it off.
                assert await ShardStore(direct).reclaim_orphans(lambda _: True) == 1
                [again] = await ShardStore(direct).claim("coord-a", 1)
                assert again.shard.index == mine.shard.index
                with pytest.raises(Fenced):
                    await shards.save(mine, listed(4))
                with pytest.raises(Fenced):
                    await shards.finish(mine, listed(4), lambda _: "")
                again = await ShardStore(direct).save(again, listed(5))
                [(stored, _), _] = await ShardStore(direct).of_job(owned_job.job.id)
                assert stored.progress.live.files_processed == 5
        finally:
            await kv.aclose()
            await direct.kv.aclose()


async def test_a_finish_after_a_lost_answer_still_ends_the_job(etcd_server: EtcdServer) -> None:
    host, port = etcd_server.url.removeprefix("http://").split(":")
    prefix = f"/t/{uuid.uuid4().hex}/"
    with TcpProxy(host, int(port)) as proxy:
        kv = EtcdKVStore([proxy.url], read_timeout=1, write_timeout=1, max_retries=0)
        jobs = JobStore(kv, prefix=prefix)
        shards = ShardStore(jobs)
        try:
            with trio.fail_after(60):
                await jobs.submit(JobType.LOAD, "/data", "", JobOptions(), 100)
                [owned_job] = await jobs.claim_waiting("coord-a", 1)
                assert await shards.plan(owned_job, RANGES)
                first, second = await shards.claim("coord-a", 2)
                assert await shards.finish(first, listed(1), lambda _: "") is None
                proxy.hold_answers()
                with pytest.raises(Unavailable):
                    await shards.save(second, listed(1))
                proxy.cut()
                await reconnected(kv)
                final = await shards.finish(second, listed(2), lambda _: "")
                assert final is not None
                assert final.state.value == "SUCCEEDED"
                assert (await jobs.get_progress(owned_job.job.id)).live.files_processed == 3
        finally:
            await kv.aclose()


async def test_a_shard_given_back_after_a_lost_answer_waits_again(
        etcd_server: EtcdServer) -> None:
    """The scheduler gives a shard back when the store failed at its end; a checkpoint
    that landed unanswered before must not make that a silent no-op."""
    host, port = etcd_server.url.removeprefix("http://").split(":")
    prefix = f"/t/{uuid.uuid4().hex}/"
    direct = ShardStore(JobStore(EtcdKVStore([etcd_server.url], read_timeout=5,
                                             write_timeout=5), prefix=prefix))
    with TcpProxy(host, int(port)) as proxy:
        kv = EtcdKVStore([proxy.url], read_timeout=1, write_timeout=1, max_retries=0)
        jobs = JobStore(kv, prefix=prefix)
        shards = ShardStore(jobs)
        try:
            with trio.fail_after(60):
                await jobs.submit(JobType.LOAD, "/data", "", JobOptions(), 100)
                [owned_job] = await jobs.claim_waiting("coord-a", 1)
                assert await shards.plan(owned_job, RANGES)
                [mine] = await shards.claim("coord-a", 1)
                proxy.hold_answers()
                with pytest.raises(Unavailable):
                    await shards.save(mine, listed(1))
                proxy.cut()
                await landed(direct, owned_job.job.id, 1)
                await reconnected(kv)
                await shards.release(mine)
                [(stored, _), _] = await shards.of_job(owned_job.job.id)
                assert (stored.state, stored.owner) == (ShardState.WAITING, "")
                [again] = await shards.claim("coord-b", 1)
                assert again.shard.index == mine.shard.index
                assert again.shard.progress.live.files_processed == 1  # its checkpoint kept
        finally:
            await kv.aclose()
            await direct.kv.aclose()
