"""Manifest and template jobs split into shards by line, row or index ranges, on real
coordinator and worker processes: one coordinator on RocksDB running the shards at once,
two on one etcd sharing them (and a rerun), and an S3 Inventory cut by data file and
row. Every named file is loaded once, a missing one fails alone, and the total is known
from the first report."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from alluxiojob.testing.etcd import EtcdServer
from alluxiojob.testing.s3 import S3Server
from tests.integration.cluster import Cluster, ProgressSampler, cached_files
from tests.integration.test_shards import assert_each_cached_once, ha_cluster, log_events

pytestmark = pytest.mark.timeout(300)
SUBMIT = "/api/v1/master/submit_job/load"


def flat_files(root: Path, count: int) -> dict[str, int]:
    root.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for i in range(count):
        path = root / f"x-{i:04d}.bin"
        path.write_bytes(bytes([i % 256]) * (i % 40 + 1))
        sizes[str(path)] = i % 40 + 1
    return sizes


def totals_known_from_the_start(sampler: ProgressSampler, total: int) -> None:
    """Every report that counts a file knows the job's total, which never changes."""
    counted = [s for s in sampler.samples if s["processed"] or s["failed"]]
    assert counted, "the sampler saw the job run"
    assert {s["total"] for s in counted} == {total}, {s["total"] for s in counted}


def test_index_file_shards_run_at_once_on_one_coordinator(cluster_factory,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory(**{"alluxio.job.shard.count": "4",
                                          "alluxio.job.shard.concurrency": "4",
                                          "alluxio.job.shard.source.files": "40",
                                          "alluxio.job.batch.size": "10"})
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    sizes = flat_files(tmp_path / "data", 240)
    missing = tmp_path / "data" / "gone.bin"
    lines = ["# header"]
    for number, name in enumerate(sorted(sizes)):
        lines += [name, ""] if number % 7 else [name]
        if number == 150:
            lines.append(str(missing))
    index = tmp_path / "list.txt"
    index.write_text("\n".join(lines) + "\n")
    answer = cluster.api("POST", SUBMIT, json={"indexFile": str(index)})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["id"]
    with ProgressSampler(cluster, job_id, [0]) as sampler:
        report = cluster.wait_state(job_id, {"SUCCEEDED", "FAILED"})
    assert report["job"]["state"] == "FAILED", "a failed file fails the job at its end"
    assert "1 files failed" in report["job"]["error"]
    assert (report["files"]["processed"], report["files"]["failed"]) == (240, 1)
    assert report["progress"]["files_total"] == 241
    totals_known_from_the_start(sampler, 241)
    shards = report["shards"]
    assert len(shards) == 4, shards
    assert all(s["files_processed"] > 0 and s["state"] == "DONE" for s in shards), shards
    assert sum(s["files_processed"] + s["files_failed"] for s in shards) == 241
    [failure] = cluster.progress(job_id, file_status="FAILURE")["failures"]
    assert (failure["reason"], failure["path"]) == ("UFS_NOT_FOUND", f"file://{missing}")
    assert_each_cached_once(cluster, sizes)

    events = [e for e in log_events(cluster.coordinators[0].log())
              if e.get("job_id") == job_id and "shard" in e]
    names = [e["event"] for e in events]
    assert names.count("job started") == 4, names
    assert names.index("shard finished") > max(
        i for i, name in enumerate(names) if name == "job started"), names
    assert names.count("job finished") == 1, names


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with EtcdServer(data_dir=tmp_path / "etcd") as server:
        yield server


def test_coordinators_share_a_template_jobs_shards_and_rerun_it(  # type: ignore[no-untyped-def]
        cluster_factory, etcd: EtcdServer, tmp_path: Path) -> None:
    cluster = ha_cluster(cluster_factory, etcd, **{"alluxio.job.shard.count": "6",
                                                   "alluxio.job.shard.concurrency": "2",
                                                   "alluxio.job.shard.source.files": "20",
                                                   "alluxio.job.batch.size": "5"})
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    cluster.add_coordinator()
    sizes = flat_files(tmp_path / "data", 300)
    template = f"{tmp_path}/data/x-{{0000..0301}}.bin"  # the last two are missing
    answer = cluster.api("POST", SUBMIT, json={"template": template})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["id"]
    with ProgressSampler(cluster, job_id, [0, 1]) as sampler:
        report = cluster.wait_state(job_id, "FAILED", coordinator=1)
    totals_known_from_the_start(sampler, 302)
    assert (report["files"]["processed"], report["files"]["failed"]) == (300, 2)
    assert len(report["shards"]) == 6
    owners = {s["owner"] for s in report["shards"]}
    assert len(owners) == 2, report["shards"]
    assert_each_cached_once(cluster, sizes)

    # The missing files appear; a rerun plans the shards anew and loads them.
    sizes.update(flat_files(tmp_path / "data", 302))
    rerun = cluster.api("POST", "/api/v1/master/rerun_job", json={"id": job_id})
    assert rerun.status_code == 200, rerun.text
    again = cluster.wait_state(job_id, "SUCCEEDED", coordinator=0)
    assert again["progress"]["files_total"] == 302
    assert again["files"]["failed"] == 0
    assert len(again["shards"]) == 6
    assert_each_cached_once(cluster, sizes)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = tmp_path_factory.mktemp("s3") / "s3.log"
    with S3Server(log_path=str(log)) as server:
        yield server


def put_inventory(s3: S3Server, name: str, parts: list[list[list[str]]]) -> str:
    keys = []
    for number, rows in enumerate(parts):
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        key = f"{name}/data/part-{number}.csv.gz"
        s3.put("inventory", key, gzip.compress(text.getvalue().encode()))
        keys.append({"key": key, "size": 1, "MD5checksum": "x"})
    manifest = {"destinationBucket": "arn:aws:s3:::inventory", "fileFormat": "CSV",
                "fileSchema": "Bucket, Key, Size", "files": keys}
    s3.put("inventory", f"{name}/2026-01-02T01-00Z/manifest.json",
           json.dumps(manifest).encode())
    return f"s3://inventory/{name}/2026-01-02T01-00Z/manifest.json"


def test_inventory_shards_by_data_file_and_row(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**s3.properties(), **{
        "alluxio.job.shard.count": "4", "alluxio.job.shard.source.files": "10"})
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("data")
    s3.create_bucket("inventory")
    objects = {f"obj-{i:03d}": bytes([i]) * (i + 1) for i in range(90)}
    s3.put_many("data", objects)
    rows = [["data", key, str(len(body))] for key, body in objects.items()]
    rows.insert(40, ["data", "obj-missing", "7"])  # named, never written
    uri = put_inventory(s3, "inv", [rows[:25], rows[25:70], rows[70:]])
    answer = cluster.api("POST", SUBMIT, json={"indexFile": uri})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["id"]
    report = cluster.wait_state(job_id, {"SUCCEEDED", "FAILED"})
    assert (report["files"]["processed"], report["files"]["failed"]) == (90, 1)
    assert report["progress"]["files_total"] == 91
    assert report["progress"]["bytes_total"] == sum(map(len, objects.values())) + 7
    assert len(report["shards"]) == 4
    assert sum(s["files_processed"] for s in report["shards"]) == 90
    [failure] = cluster.progress(job_id, file_status="FAILURE")["failures"]
    assert failure["reason"] == "UFS_NOT_FOUND"
    assert len(cached_files(cluster)) == 90

    # A malformed row is found when the cuts are placed: the job runs whole and fails,
    # naming the data file and the row.
    bad = [list(row) for row in rows[:30]]
    bad[17][2] = "twelve"
    uri = put_inventory(s3, "bad", [bad[:10], bad[10:]])
    answer = cluster.api("POST", SUBMIT, json={"indexFile": uri})
    assert answer.status_code == 200, answer.text
    report = cluster.wait_state(answer.json()["id"], "FAILED")
    assert "part-1.csv.gz row 8: Size 'twelve' is not a number" in report["job"]["error"]
    assert "shards" not in report


def test_an_object_store_shard_splits_at_the_last_key_listed(cluster_factory,  # type: ignore[no-untyped-def]
                                                            s3: S3Server) -> None:
    cluster: Cluster = cluster_factory(**s3.properties(), **{
        "alluxio.job.shard.count": "2", "alluxio.job.shard.concurrency": "3",
        "alluxio.job.shard.split.keys": "50", "alluxio.job.batch.size": "10"})
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("split")
    objects = {f"big/{i % 4}/k-{i:04d}": bytes([i % 256]) * (i % 30 + 1) for i in range(240)}
    objects.update({f"small/k-{i}": b"s" * (i + 1) for i in range(5)})
    s3.put_many("split", objects)
    job = cluster.submit("load", "s3://split/")
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    assert report["files"]["processed"] == len(objects)
    assert report["bytes"]["processed"] == sum(map(len, objects.values()))
    shards = report["shards"]
    assert len(shards) > 2, "the big prefix's shard split as its listing passed 50 keys"
    assert sum(s["files_processed"] for s in shards) == len(objects)
    assert max(s["files_listed"] for s in shards) <= 50, "split at the last key listed"
    cached = cached_files(cluster)
    assert len(cached) == len(objects)
    assert all(len(copies) == 1 for copies in cached.values())
