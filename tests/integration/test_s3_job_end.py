"""How a job on an object store ends: what a crash left behind, and a bucket gone mid-job.

Against a real S3 API server (moto, ``alluxiojob/testing/s3.py``) and real coordinator and
worker processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from alluxiojob.testing.s3 import S3Server
from tests.integration.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(300)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = tmp_path_factory.mktemp("s3") / "s3.log"
    with S3Server(log_path=str(log)) as server:
        yield server


@pytest.fixture
def s3_cluster(cluster_factory, s3: S3Server) -> Cluster:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{**s3.properties(),
                                          "alluxio.worker.load.file.partition.size": "1MiB"})
    cluster.add_worker()
    cluster.add_coordinator()
    return cluster


def submit_move(cluster: Cluster, src: str, dst: str) -> str:
    response = cluster.api("POST", "/api/v1/master/submit_job/move",
                           json={"path": src, "dst": dst})
    assert response.status_code == 200, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_a_resumed_move_from_s3_removes_sources_already_in_place(
        s3_cluster: Cluster, s3: S3Server, tmp_path: Path) -> None:
    """What a crash leaves: every object already copied to its destination, none removed.
    Sizes cover empty, one chunk, and several chunks of the streamed comparison."""
    objects = {"src/empty": b"", "src/small": b"the same bytes", "src/d/one": os.urandom(1000),
               "src/d/chunks": os.urandom(3 * MiB + 17)}
    s3.create_bucket("move-resume")
    s3.put_many("move-resume", objects)
    dst = tmp_path / "dst"
    for key, data in objects.items():
        path = dst / key.removeprefix("src/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    job = submit_move(s3_cluster, "s3://move-resume/src", str(dst))
    report = s3_cluster.wait_state(job, "SUCCEEDED")
    assert s3.keys("move-resume", "src/") == [], "a MOVE that succeeds leaves no source"
    assert report["files"]["failed"] == 0
    for key, data in objects.items():
        assert (dst / key.removeprefix("src/")).read_bytes() == data

    # One object onto one file, as `job move --src s3://b/m --dst FILE` after a crash.
    s3.put("move-resume", "m", b"moved once")
    (tmp_path / "m").write_bytes(b"moved once")
    job = submit_move(s3_cluster, "s3://move-resume/m", str(tmp_path / "m"))
    s3_cluster.wait_state(job, "SUCCEEDED")
    assert s3.keys("move-resume", "m") == []

    # A destination with other bytes is never taken for the source: without --overwrite
    # it is skipped, and the object stays.
    s3.put("move-resume", "n", b"the source")
    (tmp_path / "n").write_bytes(b"the other!")
    job = submit_move(s3_cluster, "s3://move-resume/n", str(tmp_path / "n"))
    report = s3_cluster.wait_state(job, "SUCCEEDED")
    assert report["files"]["skipped"] == 1
    assert s3.keys("move-resume", "n") == ["n"]
    assert (tmp_path / "n").read_bytes() == b"the other!"


def test_a_bucket_deleted_mid_job_fails_it_at_once_naming_the_bucket(
        s3_cluster: Cluster, s3: S3Server) -> None:
    s3.create_bucket("vanishing")
    objects = {f"set/obj-{i:03d}": os.urandom(2000) for i in range(124)}
    s3.put_many("vanishing", objects)
    job = s3_cluster.submit("load", "s3://vanishing/set", batch_size=5, bandwidth=20_000)
    wait_for(lambda: s3_cluster.progress(job["id"])["files"]["processed"] >= 10, 120,
             "ten objects loaded")
    client = s3.client()
    client.delete_objects(Bucket="vanishing",
                          Delete={"Objects": [{"Key": key} for key in objects]})
    client.delete_bucket(Bucket="vanishing")
    report = s3_cluster.wait_state(job["id"], "FAILED")
    assert report["files"]["processed"] < len(objects), "the bucket went mid-job"
    error = report["job"]["error"]
    assert "bucket 'vanishing' does not exist" in error, error
    assert "threshold" not in error
