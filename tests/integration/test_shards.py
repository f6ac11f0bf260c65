"""Sharded jobs on real coordinators and workers: one coordinator on RocksDB, and
several on one etcd, with one killed mid-job."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from alluxiojob.store.etcd import EtcdKVStore
from alluxiojob.store.jobs import JobStore
from alluxiojob.store.shards import ShardStore
from alluxiojob.testing.etcd import EtcdServer
from tests.integration.cluster import (
    Cluster,
    ProgressSampler,
    cached_files,
    sha256,
    wait_for,
)
from tests.integration.etcd_history import JOB_PREFIX
from tests.integration.test_worker_robustness import ONE_PROCESS, pool_process, stopped, web

pytestmark = pytest.mark.timeout(300)

SUBDIRS = 8


def subdir_tree(root: Path, subdirs: int, per_dir: int) -> dict[str, int]:
    """``subdirs`` top-level directories of ``per_dir`` small files each (nested a level),
    and two files at the root."""
    sizes: dict[str, int] = {}
    for d in range(subdirs):
        for i in range(per_dir):
            path = root / f"dir{d:02d}" / f"sub{i % 3}" / f"f{i:04d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes([d, i % 256]) * (i % 50 + 1))
            sizes[str(path)] = path.stat().st_size
    for name in ("a-root.txt", "z-root.txt"):
        (root / name).write_bytes(name.encode())
        sizes[str(root / name)] = len(name)
    return sizes


def assert_each_cached_once(cluster: Cluster, sizes: dict[str, int]) -> None:
    cached = cached_files(cluster)
    assert set(sizes) <= set(cached), "every file is cached"
    for source in sizes:
        copies = cached[source]
        assert len(copies) == 1, f"{source} cached {len(copies)} times"
        assert sha256(copies[0]) == sha256(Path(source))


def log_events(text: str) -> list[dict[str, object]]:
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_one_coordinator_runs_the_shards_of_a_job_at_once(cluster_factory,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory(**{"alluxio.job.shard.count": "4",
                                          "alluxio.job.shard.concurrency": "4",
                                          "alluxio.job.batch.size": "20"})
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    src = tmp_path / "tree"
    sizes = subdir_tree(src, SUBDIRS, 60)
    job = cluster.submit("load", str(src))
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    assert report["files"]["processed"] == len(sizes)
    assert report["files"]["failed"] == 0
    shards = report["shards"]
    assert [s["index"] for s in shards] == [0, 1, 2, 3]
    assert {s["state"] for s in shards} == {"DONE"}
    assert sum(s["files_processed"] for s in shards) == len(sizes)
    assert all(s["files_processed"] > 0 for s in shards), shards
    assert_each_cached_once(cluster, sizes)

    # Concurrently: every shard started before the first one finished.
    events = [e for e in log_events(cluster.coordinators[0].log())
              if e.get("job_id") == job["id"] and "shard" in e]
    names = [e["event"] for e in events]
    assert names.count("job started") == 4, names
    assert names.index("shard finished") > max(
        i for i, name in enumerate(names) if name == "job started"), names
    assert names.count("job finished") == 1, names  # the final state, written once

    text = cluster.cli("job", "stat", "-v", job["id"]).stdout
    assert "Shard 3: DONE" in text


def test_one_shard_count_keeps_a_job_whole(cluster_factory,  # type: ignore[no-untyped-def]
                                           tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory(**{"alluxio.job.shard.count": "1"})
    cluster.add_worker()
    cluster.add_coordinator()
    src = tmp_path / "tree"
    sizes = subdir_tree(src, 3, 5)
    job = cluster.submit("load", str(src))
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    assert report["files"]["processed"] == len(sizes)
    assert "shards" not in report


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with EtcdServer(data_dir=tmp_path / "etcd") as server:
        yield server


def ha_cluster(cluster_factory, etcd: EtcdServer, **props: str) -> Cluster:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{
        "alluxio.coordinator.job.meta.store.type": "ETCD",
        "alluxio.etcd.endpoints": etcd.url,
        "alluxio.coordinator.failure.detection.timeout": "3s",
        "alluxio.coordinator.scheduler.job.etcd.poll.interval": "200ms",
        "alluxio.coordinator.scheduler.interval.time": "200ms",
        **props,
    })
    return cluster


def test_coordinators_share_the_shards_of_one_job(cluster_factory,  # type: ignore[no-untyped-def]
                                                  etcd: EtcdServer, tmp_path: Path) -> None:
    cluster = ha_cluster(cluster_factory, etcd, **{"alluxio.job.shard.count": "8",
                                                   "alluxio.job.shard.concurrency": "2",
                                                   "alluxio.job.batch.size": "10"})
    cluster.add_worker()
    cluster.add_worker()
    for _ in range(3):
        cluster.add_coordinator()
    src = tmp_path / "tree"
    sizes = subdir_tree(src, SUBDIRS, 40)
    job = cluster.submit("load", str(src), coordinator=0)
    report = cluster.wait_state(job["id"], "SUCCEEDED", coordinator=1)
    assert report["files"]["processed"] == len(sizes)
    owners = {s["owner"] for s in report["shards"]}
    assert len(owners) > 1, report["shards"]
    assert_each_cached_once(cluster, sizes)


def test_kill_a_coordinator_holding_shards(cluster_factory,  # type: ignore[no-untyped-def]
                                           etcd: EtcdServer, tmp_path: Path) -> None:
    cluster = ha_cluster(cluster_factory, etcd, **{"alluxio.job.shard.count": "8",
                                                   "alluxio.job.shard.concurrency": "3",
                                                   "alluxio.job.batch.size": "5"})
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    cluster.add_coordinator()
    src = tmp_path / "tree"
    sizes = subdir_tree(src, SUBDIRS, 150)
    job = cluster.submit("load", str(src), coordinator=0)
    victim = cluster.coordinators[1]

    def victim_holds_shards() -> list[dict[str, object]] | None:
        shards = cluster.progress(job["id"], coordinator=0).get("shards") or []
        running = [s for s in shards if s["state"] == "RUNNING"
                   and str(s["owner"]).endswith(str(victim.port))]  # type: ignore[attr-defined]
        return running or None

    with ProgressSampler(cluster, job["id"], [0]) as sampler:
        held = wait_for(victim_holds_shards, 60, "the second coordinator to hold shards")
        victim.signal(signal.SIGKILL)
        report = cluster.wait_state(job["id"], "SUCCEEDED", timeout=180, coordinator=0)
    sampler.assert_never_backward()
    assert held
    assert report["files"]["processed"] == len(sizes)
    assert report["files"]["failed"] == 0
    assert_each_cached_once(cluster, sizes)
    finals = [e for e in log_events(cluster.coordinators[0].log())
              if e.get("job_id") == job["id"] and e.get("event") == "job finished"]
    assert len(finals) == 1, finals


def test_a_large_shard_splits_at_its_position(cluster_factory,  # type: ignore[no-untyped-def]
                                              tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory(**{"alluxio.job.shard.count": "2",
                                          "alluxio.job.shard.concurrency": "3",
                                          "alluxio.job.shard.split.keys": "60",
                                          "alluxio.job.batch.size": "10"})
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    src = tmp_path / "tree"
    sizes = subdir_tree(src, 2, 200)  # dir00, dir01 and two root files: two shards
    job = cluster.submit("load", str(src))
    with ProgressSampler(cluster, job["id"], [0]) as sampler:
        report = cluster.wait_state(job["id"], "SUCCEEDED")
    sampler.assert_never_backward()
    assert report["files"]["processed"] == len(sizes)
    assert report["files"]["failed"] == 0
    shards = report["shards"]
    assert len(shards) > 2, "the shards split as their listings passed 60 files"
    assert {s["state"] for s in shards} == {"DONE"}
    assert sum(s["files_processed"] for s in shards) == len(sizes)
    assert sum(1 for s in shards[2:] if s["files_processed"]) >= 2, shards
    assert_each_cached_once(cluster, sizes)
    events = [e for e in log_events(cluster.coordinators[0].log())
              if e.get("job_id") == job["id"]]
    splits = [e for e in events if e["event"] == "shard split"]
    assert len(splits) == len(shards) - 2, splits
    assert sum(1 for e in events if e["event"] == "job finished") == 1
    # A split halves what lies ahead: the shard that split lists on past its position
    # (and splits again), while the new shard lists the other half.
    first = splits[0]["shard"]
    assert shards[int(str(first))]["files_listed"] > 60, shards
    assert sum(1 for e in splits if e["shard"] == first) >= 2, splits


async def _requeue_shard(etcd: EtcdServer, job_id: str, index: int) -> None:
    """What a peer does to a shard whose owner it takes for gone: the shard waits again,
    and its owner's next write is fenced."""
    kv = EtcdKVStore([etcd.url], read_timeout=5, write_timeout=5)
    try:
        with trio.fail_after(30):
            shards = ShardStore(JobStore(kv, prefix=JOB_PREFIX))
            reclaimed = await shards.reclaim_orphans(
                lambda shard: shard.job_id == job_id and shard.index == index)
            assert reclaimed == 1
    finally:
        await kv.aclose()


def test_a_fenced_shard_cancels_only_its_own_tasks(cluster_factory,  # type: ignore[no-untyped-def]
                                                   etcd: EtcdServer, tmp_path: Path) -> None:
    """The runners of two shards of one job on one coordinator share its session with a
    worker. When one is fenced (a peer reclaimed its shard), it cancels its own task
    there, and the sibling's task, running on the same worker, goes on: no file fails."""
    cluster = ha_cluster(cluster_factory, etcd, **{"alluxio.job.shard.count": "2",
                                                   "alluxio.job.shard.concurrency": "2",
                                                   "alluxio.job.batch.size": "100"})
    worker = cluster.add_worker(**ONE_PROCESS)
    owner = cluster.add_coordinator()
    src = tmp_path / "tree"
    sizes = subdir_tree(src, 2, 4)
    pool = pool_process(worker)
    with stopped(pool):  # every task waits on the worker until the pool goes on
        job = cluster.submit("load", str(src), coordinator=0)

        def both_tasks_on_the_worker() -> bool:
            shards = cluster.progress(job["id"], coordinator=0).get("shards") or []
            running = [s for s in shards if s["state"] == "RUNNING"]
            unfinished = int(web(worker, "/api/v1/worker/status").json()["unfinished_tasks"])
            return len(running) == 2 and unfinished >= 2

        wait_for(both_tasks_on_the_worker, 60, "a task of each shard on the worker")
        cluster.add_coordinator()  # a peer, to take the requeued shard
        trio.run(_requeue_shard, etcd, job["id"], 0)
        wait_for(lambda: "job taken over elsewhere" in owner.log(), 60,
                 "the shard's old runner to be fenced")
        wait_for(lambda: "cancelling a" in worker.log(), 30, "the worker to get the cancel")
    report = cluster.wait_state(job["id"], {"SUCCEEDED", "FAILED"}, timeout=120,
                                coordinator=0)
    assert report["files"]["failed"] == 0, report.get("failures")
    assert report["job"]["state"] == "SUCCEEDED"
    assert report["files"]["processed"] == len(sizes)
    cancels = [e for e in log_events(worker.log()) if str(e.get("event", "")).startswith(
        "cancelling a")]
    assert [e["tasks"] for e in cancels] == [1], cancels  # the fenced runner's own task
    assert_each_cached_once(cluster, sizes)


def test_stopping_a_sharded_job_cancels_all_its_tasks(cluster_factory,  # type: ignore[no-untyped-def]
                                                      etcd: EtcdServer, tmp_path: Path) -> None:
    """A stop ends every shard's runner, on every coordinator; each cancels its own
    task, so none of the job's tasks is left on the worker."""
    cluster = ha_cluster(cluster_factory, etcd, **{"alluxio.job.shard.count": "2",
                                                   "alluxio.job.shard.concurrency": "1",
                                                   "alluxio.job.batch.size": "100"})
    worker = cluster.add_worker(**ONE_PROCESS)
    cluster.add_coordinator()
    cluster.add_coordinator()
    blocker, src = tmp_path / "blocker", tmp_path / "tree"
    (blocker / "only").mkdir(parents=True)
    (blocker / "only" / "one.bin").write_bytes(b"1" * 100)  # one top-level entry: one shard
    subdir_tree(src, 2, 4)
    pool = pool_process(worker)

    def tasks_left() -> int:
        return int(web(worker, "/api/v1/worker/status").json()["unfinished_tasks"])

    # The blocker's task holds the worker's one (stopped) pool process; the sharded job's
    # tasks wait behind it, so nothing but a cancel can end them.
    with stopped(pool):
        first = cluster.submit("load", str(blocker), coordinator=0)
        wait_for(lambda: tasks_left() == 1, 60, "the blocker's task on the worker")
        job = cluster.submit("load", str(src), coordinator=0)

        def both_shards_on_the_worker() -> bool:
            shards = cluster.progress(job["id"], coordinator=0).get("shards") or []
            owners = {s["owner"] for s in shards if s["state"] == "RUNNING"}
            return len(owners) == 2 and tasks_left() >= 3

        wait_for(both_shards_on_the_worker, 60, "each coordinator's shard on the worker")
        cluster.cli("job", "load", "--path", str(src), "--stop")
        cluster.wait_state(job["id"], "STOPPED")
        wait_for(lambda: tasks_left() == 1, 30, "the stopped job's tasks to be cancelled")
    cancels = [e for e in log_events(worker.log())
               if str(e.get("event", "")).startswith("cancelling a")]
    assert sorted(int(str(e["tasks"])) for e in cancels) == [1, 1], cancels
    assert {e["job_id"] for e in cancels} == {job["id"]}
    cluster.wait_state(first["id"], "SUCCEEDED")
