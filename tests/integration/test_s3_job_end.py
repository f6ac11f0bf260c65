"""How a job on an object store ends: what a crash left behind, and a bucket gone mid-job.

Against a real S3 API server (moto, ``alluxiojob/testing/s3.py``) and real coordinator and
worker processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from alluxiojob.testing.s3 import S3Server
from tests.integration.cluster import Cluster, Service, wait_for

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


def submit_move(cluster: Cluster, src: str, dst: str, job_type: str = "move") -> str:
    response = cluster.api("POST", f"/api/v1/master/submit_job/{job_type}",
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


def incomplete_uploads(s3: S3Server, bucket: str) -> list[str]:
    answer = s3.client().list_multipart_uploads(Bucket=bucket)
    return sorted(upload["Key"] for upload in answer.get("Uploads", []))


def leave_an_upload(s3: S3Server, bucket: str, key: str) -> None:
    """What a worker killed in the middle of a multipart upload leaves: begun, one part."""
    client = s3.client()
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                       Body=os.urandom(5 * MiB))


def kill_with_its_pool(worker: Service) -> None:
    """SIGKILL a worker and its pool processes at once, as a container's end or the
    out-of-memory killer does (a pool process left alone finishes its upload)."""
    assert worker.proc is not None
    doomed, todo = [], [worker.proc.pid]
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            todo += [int(child) for child in children.read_text().split()]
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.kill()


def test_a_retried_upload_aborts_what_its_killed_attempt_left(
        s3_cluster: Cluster, s3: S3Server, tmp_path: Path) -> None:
    s3.create_bucket("uploads-retried")
    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom(17 * MiB)  # past the multipart threshold
    (src / "big").write_bytes(big)
    (src / "small").write_bytes(b"one PUT")
    leave_an_upload(s3, "uploads-retried", "up/big")
    leave_an_upload(s3, "uploads-retried", "elsewhere/big")  # not this job's: kept
    job = submit_move(s3_cluster, str(src), "s3://uploads-retried/up", "copy")
    s3_cluster.wait_state(job, "SUCCEEDED")
    assert s3.get("uploads-retried", "up/big") == big
    assert incomplete_uploads(s3, "uploads-retried") == ["elsewhere/big"]


def test_a_restarted_worker_aborts_the_uploads_its_killed_run_left(
        cluster_factory, s3: S3Server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**s3.properties())
    worker = cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("uploads-swept")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"big{i}").write_bytes(os.urandom(17 * MiB))
    s3.set_latency(0.3)  # slow parts: the worker is killed with uploads in flight
    try:
        submit_move(cluster, str(src), "s3://uploads-swept/up", "copy")
        wait_for(lambda: incomplete_uploads(s3, "uploads-swept") or None, 120,
                 "a multipart upload to begin")
        kill_with_its_pool(worker)
        # Stopped, the job retries nothing: only the restarted worker's sweep can help.
        stopped = cluster.api("POST", "/api/v1/master/stop_job/copy",
                              json={"path": str(src), "dst": "s3://uploads-swept/up"})
        assert stopped.status_code == 200, stopped.text
    finally:
        s3.set_latency(0.0)
    left = incomplete_uploads(s3, "uploads-swept")
    assert left, "the kill left no upload behind; the test proves nothing"
    worker.start()
    wait_for(lambda: not incomplete_uploads(s3, "uploads-swept"), 120,
             f"the restarted worker to abort {left}")
    wait_for(lambda: "aborted multipart uploads a killed run left" in worker.log(), 30,
             "the sweep to be logged")
