"""Odd names, an interrupted MOVE, an HA restart under the same id."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from alluxiojob.testing.etcd import EtcdServer
from tests.integration.cluster import Cluster, cached_files, make_tree, sha256, wait_for

pytestmark = pytest.mark.timeout(300)


def test_a_name_that_is_not_utf8_fails_alone(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    sizes = make_tree(src, 30)
    with open(os.path.join(os.fsencode(src), b"bad-\xff.bin"), "wb") as f:
        f.write(b"odd name")
    result = cluster.cli("job", "load", "--path", str(src), "--wait", check=False)
    assert result.returncode == 4
    report = json.loads(cluster.cli("job", "load", "--path", str(src), "--progress",
                                    "--format", "JSON", "--file-status", "FAILURE").stdout)
    assert report["files"]["failed"] == 1
    assert report["files"]["processed"] == len(sizes)
    [failure] = report["failures"]
    assert failure["reason"] == "INVALID_PATH"
    assert failure["path"].endswith("bad-\\xff.bin")
    assert all(s.alive for s in [*cluster.coordinators, *cluster.workers])
    assert set(cached_files(cluster)) == set(sizes)


def test_move_finishes_what_an_interrupted_move_began(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 20)
    dst = tmp_path / "dst"
    digests = {str(p.relative_to(src)): sha256(p) for p in src.rglob("*") if p.is_file()}
    # As if a MOVE had copied one file and died before removing its source.
    first = next(iter(sorted(digests)))
    (dst / first).parent.mkdir(parents=True, exist_ok=True)
    (dst / first).write_bytes((src / first).read_bytes())
    cluster.cli("job", "move", "--src", str(src), "--dst", str(dst), "--wait")
    assert {str(p.relative_to(dst)): sha256(p) for p in dst.rglob("*") if p.is_file()} == digests
    assert not [p for p in src.rglob("*") if p.is_file()]

    # A file moved onto an existing directory lands inside it.
    single = tmp_path / "single.txt"
    single.write_text("one")
    cluster.cli("job", "move", "--src", str(single), "--dst", str(dst), "--wait")
    assert (dst / "single.txt").read_text() == "one"
    assert not single.exists()


def test_ha_restart_under_the_same_id_resumes_its_jobs(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with EtcdServer(data_dir=tmp_path / "etcd") as etcd:
        cluster: Cluster = cluster_factory(**{
            "alluxio.coordinator.job.meta.store.type": "ETCD",
            "alluxio.etcd.endpoints": etcd.url,
            "alluxio.coordinator.failure.detection.timeout": "30s",
        })
        cluster.add_worker()
        coordinator = cluster.add_coordinator(**{"alluxio.coordinator.id": "coordinator-a"})
        src = tmp_path / "src"
        sizes = make_tree(src, 400)
        job = cluster.submit("load", str(src), batch_size=10, bandwidth=1024 * 1024)
        wait_for(lambda: cluster.progress(job["id"])["progress"]["committed"][
            "files_processed"] > 40, 60, "the job to make progress")
        coordinator.kill()
        # Back within the 30 s lease, under the same id: no peer would reclaim the job.
        again = cluster.add_coordinator(port=coordinator.port,  # type: ignore[attr-defined]
                                        **{"alluxio.coordinator.id": "coordinator-a"})
        cluster.coordinators.remove(coordinator)
        assert again is cluster.coordinators[0]
        final = cluster.wait_state(job["id"], "SUCCEEDED", timeout=120)
        assert final["job"]["claims"] == 2
        assert final["files"]["processed"] == len(sizes)
        cluster.stop_all()
