"""Object storage as the UFS, against a real S3 API server (moto) on loopback.

Every check is byte for byte: an object's sha256 against its cached or copied file.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from alluxiojob.protocol.codec import FileEntry, FileStatus, TaskBatch, TaskOp
from alluxiojob.testing.s3 import S3Server
from tests.integration.cluster import (
    Cluster,
    assert_cached_once,
    cached_under,
    digest,
    make_tree,
    sha256,
    wait_for,
)
from tests.integration.test_move_safety import run_tasks

pytestmark = pytest.mark.timeout(300)

KIB = 1024
PARTITION = 1024 * KIB  # the smallest partition size allowed


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = tmp_path_factory.mktemp("s3") / "s3.log"
    with S3Server(log_path=str(log)) as server:
        yield server


@pytest.fixture
def s3_cluster(cluster_factory, s3: S3Server) -> Cluster:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{
        **s3.properties(),
        "alluxio.worker.load.file.partition.size": "1MiB",
        "alluxio.underfs.object.store.multi.range.chunk.size": "1MiB",
        "alluxio.underfs.s3.max.error.retry": "2",
    })
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    return cluster


def odd_objects() -> dict[str, bytes]:
    """Keys a file system cannot all hold as they are, with sizes around a partition."""
    return {
        "with space/file one.bin": os.urandom(3000),
        "ünïcødé/日本語 ファイル.dat": os.urandom(5000),
        "a": b"the object a",
        "a/b": os.urandom(700),
        "a/c/d": os.urandom(10),
        "a-b": b"a dash",
        "zero": b"",
        "empty dir/zero too": b"",
        "edge/exact": os.urandom(PARTITION),  # exactly on a partition boundary
        "edge/plus one": os.urandom(PARTITION + 1),
        "edge/large": os.urandom(3 * PARTITION + 17),
        "pct/100%.txt": b"percent",
        "pct/%25": b"looks encoded",
        "odd/what?#x": b"query-like",
    }


MARKERS = ["a/", "markers/", "markers/inner/", "edge/"]


def put_dataset(s3: S3Server, bucket: str, prefix: str) -> dict[str, bytes]:
    s3.create_bucket(bucket)
    objects = {f"{prefix}/{key}": data for key, data in odd_objects().items()}
    s3.put_many(bucket, objects)
    for marker in MARKERS:
        s3.put(bucket, f"{prefix}/{marker}", b"")
    return objects


def cached_objects(cluster: Cluster, bucket: str) -> dict[str, list[Path]]:
    """Cache path under ``data/s3/<bucket>/`` -> the copies found on the workers."""
    return cached_under(cluster, f"s3/{bucket}")


def encoded(key: str) -> str:
    """The documented layout: '%' -> '%25' in each component, directories end with '%'."""
    parts = [p.replace("%", "%25") for p in key.split("/")]
    return "/".join([p + "%" for p in parts[:-1]] + parts[-1:])


def test_load_skip_free_odd_keys(s3_cluster: Cluster, s3: S3Server) -> None:
    objects = put_dataset(s3, "load-odd", "data")
    cluster = s3_cluster
    result = cluster.cli("job", "load", "--path", "s3://load-odd/data", "--wait")
    assert "SUCCEEDED" in result.stdout

    cached = cached_objects(cluster, "load-odd")
    assert_cached_once(cached, objects, encoded)  # every object, no marker
    # 'a' beside 'a/...': a file and a directory side by side.
    assert "data%/a" in cached
    assert "data%/a%/b" in cached

    report = json.loads(cluster.cli("job", "load", "--path", "s3://load-odd/data", "--progress",
                                    "--format", "JSON").stdout)
    assert report["files"]["processed"] == len(objects)
    assert report["bytes"]["processed"] == sum(len(d) for d in objects.values())

    # Read back through a worker, from the cache; and read through to S3 on a miss.
    cat = cluster.cli("fs", "cat", "--path", "s3://load-odd/data/a")
    assert cat.stdout == "the object a"
    web = {w["worker"]: w["web"] for w in cluster.api(
        "GET", "/api/v1/master/workers").json()["workers"]}
    owners = cluster.api("GET", "/api/v1/master/workers",
                         params={"path": "s3://load-odd/data/edge/large"}).json()["owners"]
    got = httpx.get(f"{web[owners[0]]}/api/v1/files",
                    params={"path": "s3://load-odd/data/edge/large"}, timeout=30)
    assert got.status_code == 200
    assert got.headers["X-Alluxio-Cached"] == "true"
    assert got.content == objects["data/edge/large"]
    s3.put("load-odd", "data/later", b"not loaded")
    later_owner = cluster.api("GET", "/api/v1/master/workers",
                              params={"path": "s3://load-odd/data/later"}).json()["owners"][0]
    through = httpx.get(f"{web[later_owner]}/api/v1/files", headers={"Range": "bytes=4-"},
                        params={"path": "s3://load-odd/data/later", "read_through": "true"},
                        timeout=30)
    assert through.status_code == 206
    assert through.content == b"loaded"
    assert through.headers["X-Alluxio-Cached"] == "false"

    # Unchanged objects (same ETag and length) are skipped; a changed one is loaded again.
    s3.put("load-odd", "data/a-b", b"a dash, rewritten")
    again = cluster.submit("load", "s3://load-odd/data", skip_if_exists=True)
    report = cluster.wait_state(again["id"], "SUCCEEDED")
    assert report["files"]["processed"] == 2, "the rewritten object and the new one"
    assert report["files"]["skipped"] == len(objects) - 1
    assert sha256(cached_objects(cluster, "load-odd")[encoded("data/a-b")][0]) == digest(
        b"a dash, rewritten")

    cluster.cli("job", "free", "--path", "s3://load-odd/data", "--wait")
    assert cached_objects(cluster, "load-odd") == {}


def test_copy_s3_to_local_cannot_hold_a_beside_a_slash(s3_cluster: Cluster, s3: S3Server,
                                                         tmp_path: Path) -> None:
    objects = put_dataset(s3, "copy-out", "src")
    dst = tmp_path / "out"
    result = s3_cluster.cli("job", "copy", "--src", "s3://copy-out/src", "--dst", str(dst),
                            "--wait", check=False)
    assert result.returncode == 4, result.stdout + result.stderr
    failures = json.loads(s3_cluster.cli(
        "job", "copy", "--src", "s3://copy-out/src", "--dst", str(dst), "--progress",
        "--format", "JSON", "--file-status", "FAILURE", check=False).stdout)["failures"]
    conflicted = {"src/a", "src/a/b", "src/a/c/d"}
    failed = {f["path"].removeprefix("s3://copy-out/") for f in failures}
    assert failed, failures
    assert failed <= conflicted, failures
    for failure in failures:
        assert failure["reason"] == "INVALID_PATH", failure
        assert "cannot hold" in failure["message"], failure
    for key, data in objects.items():
        rel = key.removeprefix("src/")
        if key in failed:
            continue
        assert sha256(dst / rel) == digest(data), key
    assert set(s3.keys("copy-out")) == set(objects) | {f"src/{m}" for m in MARKERS}, \
        "COPY leaves the bucket alone"


def test_copy_local_to_s3_then_s3_to_s3_then_move(s3_cluster: Cluster, s3: S3Server,
                                                   tmp_path: Path) -> None:
    src = tmp_path / "tree"
    sizes = make_tree(src, 120, big_size=3 * PARTITION + 5)
    s3.create_bucket("copy-in")
    s3_cluster.cli("job", "copy", "--src", str(src), "--dst", "s3://copy-in/up", "--wait")
    uploaded = {k.removeprefix("up/"): s3.get("copy-in", k) for k in s3.keys("copy-in", "up/")}
    assert {str(Path(p).relative_to(src)) for p in sizes} == set(uploaded)
    for path in sizes:
        assert digest(uploaded[str(Path(path).relative_to(src))]) == sha256(Path(path))

    s3_cluster.cli("job", "copy", "--src", "s3://copy-in/up", "--dst", "s3://copy-in/second",
                   "--wait")
    second = {k.removeprefix("second/"): s3.get("copy-in", k)
              for k in s3.keys("copy-in", "second/")}
    assert second == uploaded

    objects = put_dataset(s3, "move-odd", "src")
    s3_cluster.cli("job", "move", "--src", "s3://move-odd/src", "--dst", "s3://move-odd/moved",
                   "--wait")
    moved = {k.removeprefix("moved/"): s3.get("move-odd", k)
             for k in s3.keys("move-odd", "moved/")}
    assert moved == {k.removeprefix("src/"): v for k, v in objects.items()}
    assert set(s3.keys("move-odd", "src/")) == {f"src/{m}" for m in MARKERS}, \
        "every object moved; the markers, which are not objects, stay"

    dst = tmp_path / "down"
    s3_cluster.cli("job", "move", "--src", "s3://copy-in/second", "--dst", str(dst), "--wait")
    assert {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*")
            if p.is_file()} == uploaded
    assert s3.keys("copy-in", "second/") == []


# trio-websocket's client side now and then leaves a socket for the GC when the server
# hangs up first; that is the test client, not the worker under test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_s3_move_sent_again_counts_the_objects_it_moved(s3_cluster: Cluster, s3: S3Server,
                                                            tmp_path: Path) -> None:
    """The second delivery of an s3→local MOVE finds its objects gone and their copies in
    place: each copy's bytes are checked against the listed ETag (a content MD5) before
    the object counts as moved; a copy with other bytes does not."""
    s3.create_bucket("move-again")
    data = {"a.bin": b"a" * 1000, "b.bin": b"bb" * 300}
    for name, body in data.items():
        s3.put("move-again", f"src/{name}", body)
    task = tuple(
        FileEntry(f"s3://move-again/src/{name}", len(body), 0, f"file://{tmp_path / name}",
                  f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"')
        for name, body in data.items())
    first, again = trio.run(run_tasks, s3_cluster, TaskBatch(1, "j", TaskOp.MOVE, task),
                            TaskBatch(2, "j", TaskOp.MOVE, task))
    assert [r.status for r in first.results] == [FileStatus.OK] * 2
    assert [(r.status, r.bytes) for r in again.results] == [(FileStatus.OK, 1000),
                                                             (FileStatus.OK, 600)]
    assert s3.keys("move-again", "src/") == []
    assert {name: (tmp_path / name).read_bytes() for name in data} == data

    (tmp_path / "a.bin").write_bytes(b"x" * 1000)  # the length holds, the bytes do not
    [third] = trio.run(run_tasks, s3_cluster, TaskBatch(3, "j", TaskOp.MOVE, task[:1]))
    assert third.results[0].status is not FileStatus.OK
    assert (tmp_path / "a.bin").read_bytes() == b"x" * 1000
    gc.collect()  # any socket the client left is collected here, under this test's filter


def test_submit_errors_name_the_problem(s3_cluster: Cluster, s3: S3Server) -> None:
    s3.create_bucket("submit-errors")
    s3.put("submit-errors", "here/x", b"x")
    missing = s3_cluster.cli("job", "load", "--path", "s3://submit-errors/nowhere", check=False)
    assert missing.returncode == 3, missing.stderr
    no_bucket = s3_cluster.cli("job", "load", "--path", "s3://no-such-bucket/x", check=False)
    assert no_bucket.returncode == 3
    assert "no-such-bucket" in no_bucket.stderr
    inside = s3_cluster.cli("job", "copy", "--src", "s3://submit-errors/here",
                            "--dst", "s3://submit-errors/here/again", check=False)
    assert inside.returncode == 2
    assert "inside the source" in inside.stderr
    around = s3_cluster.cli("job", "move", "--src", "s3://submit-errors/here",
                            "--dst", "s3://submit-errors", check=False)
    assert around.returncode == 2
    assert "contains the source" in around.stderr
    bad = s3_cluster.cli("job", "load", "--path", "s3://submit-errors/a/../b", check=False)
    assert bad.returncode == 2
    assert "'..'" in bad.stderr


def test_throttled_then_changed_mid_read(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{
        **s3.properties(),
        "alluxio.worker.load.file.partition.size": "1MiB",
        "alluxio.underfs.object.store.multi.range.chunk.size": "1MiB",
        "alluxio.underfs.s3.max.error.retry": "1",
        "alluxio.job.retry.max.attempts": "2",
    })
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("faults")
    s3.put("faults", "slow/one", b"throttled")
    s3.throttle(1000, method="GET", match="/faults/slow/one")
    try:
        job = cluster.submit("load", "s3://faults/slow")
        report = cluster.wait_state(job["id"], "FAILED")
    finally:
        s3.reset_faults()
    failures = cluster.progress(job["id"], file_status="FAILURE")["failures"]
    assert [f["reason"] for f in failures] == ["UFS_THROTTLED"], failures
    assert report["subtask_failures"] == 2, "retried once, as a retryable reason"

    first, second = os.urandom(4 * PARTITION), os.urandom(4 * PARTITION)
    s3.put("faults", "changing/big", first)
    s3.rewrite_before_get("faults", "changing/big", 2, second)  # between two ranges
    job = cluster.submit("load", "s3://faults/changing")
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    assert report["subtask_failures"] >= 1, "the first attempt saw the ETag change"
    cached = cached_objects(cluster, "faults")
    assert sha256(cached[encoded("changing/big")][0]) == digest(second)


def test_object_read_size_is_not_the_partition_size(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    """An object up to the read size is one GET whatever the partition size; a larger
    one is ranged GETs of the read size, written in place into one cached file."""
    cluster: Cluster = cluster_factory(**{
        **s3.properties(),
        "alluxio.worker.load.file.partition.size": "1MiB",
        "alluxio.underfs.object.store.multi.range.chunk.size": "4MiB",
    })
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("read-size")
    whole, ranged = os.urandom(4 * PARTITION), os.urandom(9 * PARTITION + 5)
    s3.put("read-size", "whole/obj", whole)
    s3.put("read-size", "ranged/obj", ranged)
    for prefix, data, gets in (("whole", whole, 1), ("ranged", ranged, 3)):
        before = s3.object_get_count()
        job = cluster.submit("load", f"s3://read-size/{prefix}")
        cluster.wait_state(job["id"], "SUCCEEDED")
        assert s3.object_get_count() - before == gets, f"{prefix}: GETs of the object"
        copies = cached_objects(cluster, "read-size")[encoded(f"{prefix}/obj")]
        assert [sha256(c) for c in copies] == [digest(data)]


def test_secrets_never_leave_the_process(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    secret = "S3cr3t-" + os.urandom(8).hex()
    cluster: Cluster = cluster_factory(**{**s3.properties(), "s3a.secretKey": secret,
                                          "alluxio.underfs.s3.max.error.retry": "0"})
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("secrets")
    s3.put("secrets", "obj", b"x")
    s3.put("secrets", "obj/under", b"y")
    answers = []
    # A listing refused at once: the job fails at once, naming the bucket.
    s3.deny_listing("secrets")
    try:
        job = cluster.submit("load", "s3://secrets/obj")
        report = cluster.wait_state(job["id"], "FAILED")
    finally:
        s3.reset_faults()
    assert "PERMISSION_DENIED" in report["job"]["error"]
    assert "secrets" in report["job"]["error"]
    answers.append(json.dumps(report))
    s3.deny("/secrets/obj")  # refused at submit
    try:
        refused = cluster.api("POST", "/api/v1/master/submit_job/load",
                              json={"path": "s3://secrets/obj"})
    finally:
        s3.reset_faults()
    assert refused.status_code == 403
    assert "secrets" in refused.json()["message"]
    answers.append(refused.text)
    s3.throttle(1000, method="GET", match="/secrets/obj")  # workers fail the file
    try:
        job = cluster.submit("load", "s3://secrets/obj", batch_size=1)
        answers.append(json.dumps(cluster.wait_state(job["id"], "FAILED")))
        answers.append(json.dumps(cluster.progress(job["id"], file_status="FAILURE")))
    finally:
        s3.reset_faults()
    assert "UFS_THROTTLED" in answers[-1]
    answers.append(cluster.cli("job", "load", "--path", "s3://no-bucket-here/x",
                               check=False).stderr)
    answers.append(cluster.api("GET", "/metrics").text)
    answers.append(cluster.api("GET", "/api/v1/master/list_job").text)
    web = cluster.api("GET", "/api/v1/master/workers").json()["workers"][0]["web"]
    answers.append(httpx.get(f"{web}/metrics", timeout=10).text)
    answers.append(httpx.get(f"{web}/api/v1/files", timeout=10, params={
        "path": "s3://secrets/missing", "read_through": "true"}).text)
    wrong = cluster.cli("job", "load", "--path", "s3://secrets/obj", check=False,
                        timeout=60)
    answers.append(wrong.stdout + wrong.stderr)
    everything = "\n".join(answers) + cluster.logs() + "".join(
        s.log() for s in [*cluster.coordinators, *cluster.workers])
    assert "PERMISSION_DENIED" in everything
    assert secret not in everything


def test_wrong_access_key_is_refused_at_submit(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{**s3.properties(), "s3a.accessKeyId": "not-a-key",
                                          "alluxio.underfs.s3.max.error.retry": "0"})
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("wrong-key")
    s3.put("wrong-key", "d/x", b"x")
    refused = cluster.cli("job", "load", "--path", "s3://wrong-key/d", check=False)
    assert refused.returncode != 0
    assert "refused" in refused.stderr
    assert "'wrong-key'" in refused.stderr
    assert s3.secret_key not in refused.stderr


def _busy_dataset(s3: S3Server, bucket: str, count: int) -> dict[str, bytes]:
    s3.create_bucket(bucket)
    objects = {f"set/d{i % 10}/obj-{i:04d}": os.urandom(512 + i % 300) for i in range(count)}
    s3.put_many(bucket, objects)
    return objects


def _assert_each_cached_once(cluster: Cluster, bucket: str, objects: dict[str, bytes]) -> None:
    cached = cached_objects(cluster, bucket)
    assert set(cached) == {encoded(k) for k in objects}
    for key, data in objects.items():
        copies = cached[encoded(key)]
        assert len(copies) == 1, f"{key} cached {len(copies)} times"
        assert sha256(copies[0]) == digest(data)


def test_coordinator_sigkill_mid_s3_load_resumes(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**s3.properties())
    cluster.add_worker()
    cluster.add_worker()
    coordinator = cluster.add_coordinator()
    objects = _busy_dataset(s3, "kill-coordinator", 800)
    s3.set_latency(0.05)
    try:
        job = cluster.submit("load", "s3://kill-coordinator/set", batch_size=10)

        def committed() -> int:
            done = cluster.progress(job["id"])["progress"]["committed"]["files_processed"]
            return done if 100 <= done < len(objects) - 200 else 0

        before = wait_for(committed, 120, "a checkpoint a hundred objects in")
        coordinator.kill()
        restarted = cluster.add_coordinator(port=coordinator.port)  # type: ignore[attr-defined]
        cluster.coordinators.remove(coordinator)
        s3.set_latency(0.0)
        report = cluster.wait_state(job["id"], "SUCCEEDED", timeout=180)
    finally:
        s3.set_latency(0.0)
    assert report["job"]["claims"] == 2
    assert report["files"]["processed"] == len(objects), "nothing counted twice or lost"
    started = [json.loads(line) for line in restarted.log().splitlines()
               if '"job started"' in line]
    assert started, restarted.log()
    # Resumed from its checkpoints (one per shard when the job runs as shards).
    assert any(line["resume_after"] is not None for line in started)
    assert sum(line["files_committed"] for line in started) >= before
    _assert_each_cached_once(cluster, "kill-coordinator", objects)


def test_worker_sigkill_mid_s3_load_succeeds(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{**s3.properties(),
                                          "alluxio.job.retry.max.attempts": "10"})
    victim = cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    objects = _busy_dataset(s3, "kill-worker", 600)
    s3.set_latency(0.05)
    try:
        job = cluster.submit("load", "s3://kill-worker/set", batch_size=10)

        def victim_busy() -> bool:
            status = json.loads(cluster.cli("report", "jobservice", "--format", "JSON").stdout)
            mine = [w for w in status["workers"]
                    if w["worker"].endswith(str(victim.rpc_port))]  # type: ignore[attr-defined]
            return bool(mine) and mine[0].get("unfinished_tasks", 0) > 0

        wait_for(victim_busy, 60, "the victim worker to be running tasks")
        victim.kill()
        wait_for(lambda: cluster.progress(job["id"])["subtask_failures"] > 0, 60,
                 "the coordinator to notice the lost worker")
        victim.start()
        s3.set_latency(0.0)
        report = cluster.wait_state(job["id"], "SUCCEEDED", timeout=240)
    finally:
        s3.set_latency(0.0)
    assert report["files"]["processed"] == len(objects)
    assert report["files"]["failed"] == 0
    _assert_each_cached_once(cluster, "kill-worker", objects)


def test_allowlist_confines_object_uris(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{**s3.properties(),
                                          "alluxio.job.path.allowlist": "s3://confined/in"})
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("confined")
    s3.put("confined", "in/x", b"inside")
    s3.put("confined", "inside/y", b"a prefix, not a component")
    s3.put("confined", "out/z", b"never-served-bytes")
    cluster.cli("job", "load", "--path", "s3://confined/in", "--wait")
    for path in ("s3://confined/inside", "s3://confined/out", "s3://confined"):
        refused = cluster.api("POST", "/api/v1/master/submit_job/load", json={"path": path})
        assert refused.status_code == 403, path
        assert "alluxio.job.path.allowlist" in refused.json()["message"]
    web = cluster.api("GET", "/api/v1/master/workers").json()["workers"][0]["web"]
    through = httpx.get(f"{web}/api/v1/files", timeout=10, params={
        "path": "s3://confined/out/z", "read_through": "true"})
    assert through.status_code == 403
    assert b"never-served-bytes" not in through.content
