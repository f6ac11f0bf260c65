"""The runner's store writes under the interleavings the chaos run found.

Each job runs in this process against a real worker and a real RocksDB store, wrapped
so that one save waits for a chosen moment: exactly the interleaving, every time.

- ``scripts/chaos --seed 2``: a LOAD counted 7 CACHE_FULL files and listed 4. The
  checkpointer had taken 3 failures into a save still waiting on etcd when the load pass
  ended and cancelled it.
- ``scripts/chaos --seed 4242``: a LOAD ended FAILED for 4 CACHE_FULL files and listed
  none. Its final save of them met etcd down ("cannot save progress; will retry"), and
  the final transition was written anyway when etcd came back.
- ``scripts/chaos --seed 1``: a LOAD with ``verify`` stayed VERIFYING for good. A
  checkpoint in flight when the runner made the job VERIFYING landed after it, compared
  the revision the runner itself had just replaced, and fenced the runner off its job;
  its coordinator was alive, so nobody reclaimed it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import trio

from alluxiojob.config import Config, Keys, build_config
from alluxiojob.coordinator.membership import Membership
from alluxiojob.coordinator.runner import JobRunner
from alluxiojob.coordinator.workers import WorkerClient
from alluxiojob.core.job import JobOptions, JobType
from alluxiojob.core.progress import FailureRecord, Progress
from alluxiojob.core.states import JobEvent, JobState
from alluxiojob.security import Security
from alluxiojob.store.etcd import EtcdKVStore
from alluxiojob.store.jobs import JobStore, OwnedJob
from alluxiojob.store.kv import KVStore
from alluxiojob.store.rocks import RocksKVStore
from alluxiojob.testing.etcd import EtcdServer
from tests.integration.cluster import Cluster
from tests.store.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(120)


def client_factory(config: Config) -> Callable[[str, Callable[[], None]], WorkerClient]:
    """Worker clients as the coordinator makes them, for a membership of this process."""
    security = Security.from_config(config, serving=False)

    def client(worker_id: str, on_down_change: Callable[[], None]) -> WorkerClient:
        return WorkerClient(worker_id, worker_id, security.token, "test", 3,
                            config[Keys.FAILURE_DETECTION_TIMEOUT], security.tls,
                            on_down_change=on_down_change)

    return client


class FirstFailureSaveHangs(JobStore):
    """The first save that carries failures waits until it is cancelled."""

    held = False

    async def save_progress(self, owned: OwnedJob, progress: Progress,
                            failures: Iterable[FailureRecord] = (),
                            cleared: Iterable[str] = ()) -> None:
        failures = list(failures)
        if failures and not self.held:
            self.held = True
            await trio.sleep_forever()
        await super().save_progress(owned, progress, failures, cleared)


async def test_failures_of_a_cancelled_save_are_still_listed(cluster_factory,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory(**{"alluxio.worker.load.file.partition.size": "1MiB"})
    worker = cluster.add_worker(**{"alluxio.worker.page.store.sizes": "1MiB"})
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):  # first in the listing, and too big for the cache: CACHE_FULL
        (src / f"a{i}.bin").write_bytes(os.urandom(1536 * 1024))
    for i in range(40):  # then enough bandwidth-limited work for checkpoints to happen
        (src / f"b{i:02d}.bin").write_bytes(os.urandom(10_000))
    config = build_config({
        "alluxio.worker.static.config.file": str(cluster.workers_file),
        "alluxio.job.retry.max.attempts": "1",
    })
    store = FirstFailureSaveHangs(RocksKVStore(tmp_path / "rocks"))

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            membership = Membership(client_factory(config), cluster.workers_file)
            await nursery.start(membership.run)
            job, _ = await store.submit(JobType.LOAD, f"file://{src}", "",
                                        JobOptions(batch_size=5, bandwidth=100_000), 10)
            [owned] = await store.claim_waiting("test", 1)
            await JobRunner(owned, store, membership, config).run()
            nursery.cancel_scope.cancel()
    assert store.held, "the test did not cut a save short"
    final = await store.get(job.id)
    progress = await store.get_progress(job.id)
    failures = await store.list_failures(job.id)
    assert final.job.state.value == "FAILED", worker.log()[-2000:]
    assert progress.live.files_failed == 3
    assert sorted(f.path.rsplit("/", 1)[-1] for f in failures) == ["a0.bin", "a1.bin", "a2.bin"]
    assert {f.reason for f in failures} == {"CACHE_FULL"}
    await store.kv.aclose()


class EtcdUnreachableForFailures(JobStore):
    """The first ``cuts`` saves that carry failures meet etcd unreachable: ``proxy``
    drops the request, which etcd never sees (a timeout); then the connection is cut, and
    etcd answers again."""

    def __init__(self, kv: KVStore, proxy: TcpProxy, cuts: int) -> None:
        super().__init__(kv)
        self.proxy = proxy
        self.cuts = cuts
        self.failed_saves = 0

    async def save_progress(self, owned: OwnedJob, progress: Progress,
                            failures: Iterable[FailureRecord] = (),
                            cleared: Iterable[str] = ()) -> None:
        failures = list(failures)
        if failures and self.failed_saves < self.cuts:
            self.proxy.drop_requests()
            try:
                await super().save_progress(owned, progress, failures, cleared)
            except Exception:
                self.failed_saves += 1
                raise
            finally:
                self.proxy.cut()
        await super().save_progress(owned, progress, failures, cleared)


async def test_the_final_transition_waits_until_its_failures_are_stored(  # type: ignore[no-untyped-def]
        cluster_factory, tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory(**{"alluxio.worker.load.file.partition.size": "1MiB"})
    worker = cluster.add_worker(**{"alluxio.worker.page.store.sizes": "1MiB"})
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):  # too big for the cache: CACHE_FULL, all in the job's one task
        (src / f"a{i}.bin").write_bytes(os.urandom(1536 * 1024))
    with EtcdServer(data_dir=tmp_path / "etcd") as etcd:
        host, port = etcd.url.removeprefix("http://").split(":")
        with TcpProxy(host, int(port)) as proxy:
            config = build_config({
                "alluxio.worker.static.config.file": str(cluster.workers_file),
                "alluxio.job.retry.max.attempts": "1",
                "alluxio.coordinator.job.meta.store.type": "ETCD",
                "alluxio.etcd.endpoints": proxy.url,
            })
            kv = EtcdKVStore([proxy.url], read_timeout=1, write_timeout=1, max_retries=0)
            store = EtcdUnreachableForFailures(kv, proxy, cuts=2)
            try:
                with trio.fail_after(100):
                    async with trio.open_nursery() as nursery:
                        membership = Membership(client_factory(config), cluster.workers_file)
                        await nursery.start(membership.run)
                        job, _ = await store.submit(JobType.LOAD, f"file://{src}", "",
                                                    JobOptions(batch_size=5), 10)
                        [owned] = await store.claim_waiting("test", 1)
                        await JobRunner(owned, store, membership, config).run()
                        nursery.cancel_scope.cancel()
                assert store.failed_saves >= 1, "the test did not make etcd unreachable"
                final = await store.get(job.id)
                progress = await store.get_progress(job.id)
                failures = await store.list_failures(job.id)
            finally:
                await kv.aclose()
    assert final.job.state is JobState.FAILED, worker.log()[-2000:]
    assert progress.live.files_failed == 4
    assert sorted(f.path.rsplit("/", 1)[-1] for f in failures) == [
        "a0.bin", "a1.bin", "a2.bin", "a3.bin"], "every failure counted is listed"
    assert {f.reason for f in failures} == {"CACHE_FULL"}


class CheckpointOutlivesTheVerifyTransition(JobStore):
    """The first checkpoint after the listing waits until the job is VERIFYING (or 10 s)."""

    def __init__(self, kv: KVStore) -> None:
        super().__init__(kv)
        self.held = False
        self.verifying = trio.Event()

    async def transition(self, owned: OwnedJob, event: JobEvent, *, error: str = "",
                         progress: Progress | None = None) -> OwnedJob:
        done = await super().transition(owned, event, error=error, progress=progress)
        if event is JobEvent.VERIFY:
            self.verifying.set()
        return done

    async def save_progress(self, owned: OwnedJob, progress: Progress,
                            failures: Iterable[FailureRecord] = (),
                            cleared: Iterable[str] = ()) -> None:
        if not self.held and owned.job.state is JobState.RUNNING and progress.listing_done:
            self.held = True
            with trio.move_on_after(10):  # a runner that serializes its writes never gets there
                await self.verifying.wait()
        await super().save_progress(owned, progress, failures, cleared)


async def test_a_checkpoint_in_flight_does_not_fence_the_runner_off_its_job(  # type: ignore[no-untyped-def]
        cluster_factory, tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory()
    cluster.add_worker()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):  # a few seconds of bandwidth-limited work, so checkpoints happen
        (src / f"f{i:02d}.bin").write_bytes(os.urandom(10_000))
    config = build_config({"alluxio.worker.static.config.file": str(cluster.workers_file)})
    store = CheckpointOutlivesTheVerifyTransition(RocksKVStore(tmp_path / "rocks"))

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            membership = Membership(client_factory(config), cluster.workers_file)
            await nursery.start(membership.run)
            job, _ = await store.submit(
                JobType.LOAD, f"file://{src}", "",
                JobOptions(batch_size=5, bandwidth=100_000, verify=True), 10)
            [owned] = await store.claim_waiting("test", 1)
            await JobRunner(owned, store, membership, config).run()
            nursery.cancel_scope.cancel()
    assert store.held, "the test did not hold a checkpoint"
    final = (await store.get(job.id)).job
    assert final.state is JobState.SUCCEEDED, (final.state, final.error)
    assert (await store.get_progress(job.id)).live.files_processed == 40
    await store.kv.aclose()
