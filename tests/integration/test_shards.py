"""Sharded jobs on real coordinators and workers: one coordinator on RocksDB, and
several on one etcd, with one killed mid-job."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from alluxiojob.testing.etcd import EtcdServer
from tests.integration.cluster import (
    Cluster,
    ProgressSampler,
    cached_files,
    sha256,
    wait_for,
)

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
    cluster.add_worker(start=False)
    cluster.add_worker(start=False)
    cluster.add_coordinator(start=False)
    cluster.start_all()
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
    cluster.add_worker(start=False)
    cluster.add_coordinator(start=False)
    cluster.start_all()
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
    cluster.add_worker(start=False)
    cluster.add_worker(start=False)
    cluster.start_all()
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
    cluster.add_worker(start=False)
    cluster.add_worker(start=False)
    cluster.add_coordinator(start=False)
    cluster.add_coordinator(start=False)
    cluster.start_all()
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
