"""LOAD and FREE end to end with a real coordinator and two real workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, cached_files, make_tree, sha256, wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.mark.fast
def test_load_then_free_a_tree(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    sizes = make_tree(src, 2000, big_size=4 * 1024 * 1024 + 17)  # > 4 partitions of 1MiB
    assert any(size == 0 for size in sizes.values())

    result = cluster.cli("job", "load", "--path", str(src), "--wait")
    assert "SUCCEEDED" in result.stdout

    cached = cached_files(cluster)
    assert set(cached) == set(sizes), "every source file, and nothing else, is cached"
    for source, copies in cached.items():
        assert len(copies) == 1, f"{source} cached {len(copies)} times"
        assert sha256(copies[0]) == sha256(Path(source)), f"{source} differs in the cache"
    # Both workers took part, as the ring spreads 2,001 files.
    per_worker = [sum(1 for c in cached.values() if str(w.cache_dir) in str(c[0]))
                  for w in cluster.workers]
    assert all(count > 500 for count in per_worker), per_worker

    report = json.loads(cluster.cli("job", "load", "--path", str(src), "--progress",
                                    "--format", "JSON").stdout)
    assert report["job"]["state"] == "SUCCEEDED"
    assert report["files"]["processed"] == len(sizes)
    assert report["files"]["failed"] == 0
    assert report["bytes"]["processed"] == sum(sizes.values())

    text = cluster.cli("job", "load", "--path", str(src), "--progress").stdout
    assert f"Files Processed: {len(sizes)} out of {len(sizes)}" in text

    cluster.cli("job", "free", "--path", str(src), "--wait")
    assert cached_files(cluster) == {}
    freed = json.loads(cluster.cli("job", "free", "--path", str(src), "--progress",
                                   "--format", "JSON").stdout)
    assert freed["files"]["processed"] == len(sizes), "each file counts once, as freed"
    assert freed["files"]["skipped"] == 0
    assert freed["bytes"]["processed"] == sum(sizes.values())
    status = cluster.api("GET", "/api/v1/master/report").json()
    assert [w["cached_files"] for w in status["workers"]] == [0, 0]
    assert all(w["cache_used"] == 0 for w in status["workers"])


def test_resubmitting_an_active_job_returns_it(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "slow"
    make_tree(src, 200)
    first = cluster.submit("load", str(src), batch_size=5, bandwidth=64 * 1024)
    second = cluster.submit("load", str(src))
    assert second["outcome"] == "ALREADY_RUNNING"
    assert second["id"] == first["id"]

    stop = cluster.cli("job", "load", "--path", str(src), "--stop")
    assert "Stopped" in stop.stdout
    cluster.wait_state(first["id"], "STOPPED")

    resumed = cluster.submit("load", str(src))
    assert resumed["outcome"] == "RESUMED"
    assert resumed["id"] == first["id"]
    # Still rate limited: stop again, then finish without the limit via a new submission
    # after it ends.
    cluster.api("POST", "/api/v1/master/stop_job/load", json={"path": str(src)})
    cluster.wait_state(first["id"], "STOPPED")
    listing = json.loads(cluster.cli("job", "list", "--job-state", "STOPPED",
                                     "--format", "JSON").stdout)
    assert [job["id"] for job in listing["jobs"]] == [first["id"]]


def test_load_after_success_creates_a_new_job(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "small"
    make_tree(src, 20)
    first = cluster.submit("load", str(src))
    cluster.wait_state(first["id"], "SUCCEEDED")
    second = cluster.submit("load", str(src))
    assert second["outcome"] == "CREATED"
    assert second["id"] != first["id"]
    cluster.wait_state(second["id"], "SUCCEEDED")
    jobs = json.loads(cluster.cli("job", "list", "--job-type", "LOAD", "--format",
                                  "JSON").stdout)["jobs"]
    assert {first["id"], second["id"]} <= {job["id"] for job in jobs}


def test_report_and_stat(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "few"
    make_tree(src, 30)
    job = cluster.submit("load", str(src))
    cluster.wait_state(job["id"], "SUCCEEDED")
    report = cluster.cli("report", "jobservice").stdout
    assert report.count("Task Pool Size") == 2
    assert "Status: SUCCEEDED  Count: 1" in report
    stat = cluster.cli("job", "stat", "-v", job["id"]).stdout
    assert f"ID: {job['id']}" in stat
    assert "Status: SUCCEEDED" in stat
    assert "Worker: 127.0.0.1:" in stat
    ls = cluster.cli("job", "ls").stdout
    assert f"{job['id']}\tLOAD\tSUCCEEDED" in ls
    metrics = cluster.api("GET", "/metrics").text
    assert "alluxio_scheduler_etcd_claim_total 1.0" in metrics
    wait_for(lambda: 'alluxio_jobs{state="SUCCEEDED"} 1.0' in cluster.api("GET", "/metrics").text,
             10, "the job gauge to count the job")


def test_fs_location_cat_and_success_list(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "read me"
    sizes = make_tree(src, 40)
    job = cluster.submit("load", str(src))
    cluster.wait_state(job["id"], "SUCCEEDED")

    location = cluster.cli("fs", "location", "--path", str(src)).stdout
    counts = [int(line.split("Files: ")[1].split()[0]) for line in location.splitlines()
              if line.startswith("Worker:")]
    assert len(counts) == 2
    assert sum(counts) == len(sizes)

    one = next(p for p, size in sizes.items() if size > 100)
    cat = subprocess.run(
        [sys.executable, "-m", "alluxiojob.cli.main", "fs", "cat", "--path", one,
         "--conf", str(cluster.conf), "-D", "alluxio.coordinator.hostname=127.0.0.1",
         "-D", f"alluxio.coordinator.rest.port={cluster.coordinators[0].port}"],  # type: ignore[attr-defined]
        capture_output=True, timeout=60)
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == Path(one).read_bytes()

    stray = tmp_path / "not loaded.txt"
    stray.write_text("fresh")
    miss = cluster.cli("fs", "cat", "--path", str(stray), check=False)
    assert miss.returncode == 3
    assert "not cached" in miss.stderr
    through = cluster.cli("fs", "cat", "--path", str(stray), "--read-through")
    assert through.stdout == "fresh"

    report = json.loads(cluster.cli("job", "load", "--path", str(src), "--progress",
                                    "--file-status", "SUCCESS", "--format", "JSON").stdout)
    listed = {item["path"] for item in report["successes"]}
    assert listed == {f"file://{p}" for p in sizes}
