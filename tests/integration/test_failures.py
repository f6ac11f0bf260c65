"""Killed processes lose nothing; bad input gets a clear error and crashes nothing."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from alluxiojob.protocol.codec import (
    ErrorMessage,
    FileEntry,
    Hello,
    TaskBatch,
    TaskOp,
    TaskResult,
    Welcome,
    decode,
    encode,
)
from tests.integration.cluster import Cluster, cached_files, make_tree, sha256, wait_for

pytestmark = pytest.mark.timeout(300)


def _assert_all_cached(cluster: Cluster, sizes: dict[str, int]) -> None:
    cached = cached_files(cluster)
    missing = set(sizes) - set(cached)
    assert not missing, f"{len(missing)} files not cached, e.g. {sorted(missing)[:3]}"
    for source in sizes:
        assert sha256(cached[source][0]) == sha256(Path(source))


def test_coordinator_sigkill_resumes_from_checkpoint(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory()
    cluster.add_worker()
    cluster.add_worker()
    coordinator = cluster.add_coordinator()
    src = tmp_path / "dataset"
    sizes = make_tree(src, 1500)
    # Small batches and a bandwidth limit keep the job running long enough to kill it.
    job = cluster.submit("load", str(src), batch_size=20, bandwidth=1024 * 1024)

    def committed() -> int:
        progress = cluster.progress(job["id"])["progress"]
        done = progress["committed"]["files_processed"]
        return done if 300 <= done < len(sizes) - 300 else 0

    before = wait_for(committed, 120, "a checkpoint a few hundred files in")
    coordinator.kill()

    restarted = cluster.add_coordinator(port=coordinator.port)  # type: ignore[attr-defined]
    cluster.coordinators.remove(coordinator)
    assert restarted is cluster.coordinators[0]
    # Lift the rate limit is not possible per job; the job keeps its options on resume.
    report = cluster.wait_state(job["id"], "SUCCEEDED", timeout=180)

    assert report["job"]["claims"] == 2, "claimed once, then resumed once after the restart"
    assert report["files"]["processed"] == len(sizes), "nothing counted twice or lost"
    assert report["files"]["listed"] == len(sizes)
    started = [json.loads(line) for line in restarted.log().splitlines()
               if '"job started"' in line]
    assert started, restarted.log()
    assert started[0]["resume_after"] is not None
    assert started[0]["files_committed"] >= before
    _assert_all_cached(cluster, sizes)


def test_worker_sigkill_mid_task_job_still_succeeds(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{"alluxio.job.retry.max.attempts": "10"})
    victim = cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    src = tmp_path / "dataset"
    sizes = make_tree(src, 1200)
    job = cluster.submit("load", str(src), batch_size=20, bandwidth=1024 * 1024)

    def victim_busy() -> bool:
        status = json.loads(cluster.cli("report", "jobservice", "--format", "JSON").stdout)
        mine = [w for w in status["workers"] if w["worker"].endswith(str(victim.rpc_port))]  # type: ignore[attr-defined]
        return bool(mine) and mine[0].get("unfinished_tasks", 0) > 0

    wait_for(victim_busy, 60, "the victim worker to be running tasks")
    victim.kill()
    wait_for(lambda: cluster.progress(job["id"])["subtask_failures"] > 0, 60,
             "the coordinator to notice the lost worker")
    victim.start()
    report = cluster.wait_state(job["id"], "SUCCEEDED", timeout=240)
    assert report["files"]["processed"] == len(sizes)
    assert report["files"]["failed"] == 0
    _assert_all_cached(cluster, sizes)


def test_waiting_capacity_rejects_with_a_clear_error(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{
        "alluxio.coordinator.scheduler.waiting.job.capacity": "2",
        "alluxio.coordinator.scheduler.running.job.capacity": "1",
    })
    cluster.add_worker()
    cluster.add_coordinator()
    dirs = []
    for i in range(4):
        d = tmp_path / f"d{i}"
        make_tree(d, 50)
        dirs.append(d)
    running = cluster.submit("load", str(dirs[0]), batch_size=1, bandwidth=4096)
    cluster.wait_state(running["id"], "RUNNING")
    cluster.submit("load", str(dirs[1]))
    cluster.submit("load", str(dirs[2]))
    rejected = cluster.cli("job", "load", "--path", str(dirs[3]), check=False)
    assert rejected.returncode != 0
    assert "waiting.job.capacity=2" in rejected.stderr
    assert "queue is full" in rejected.stderr
    assert cluster.coordinators[0].alive


def test_bad_property_flag_and_path(cluster: Cluster, tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "alluxiojob.cli.main", "coordinator",
         "-D", "alluxio.job.batch.size=lots"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "alluxio.job.batch.size" in bad.stderr
    assert "'lots'" in bad.stderr

    typo = cluster.cli("job", "list", "-D", "alluxio.job.batch.sise=10")
    assert "unknown property alluxio.job.batch.sise" in typo.stderr
    assert "did you mean alluxio.job.batch.size" in typo.stderr

    missing = cluster.cli("job", "load", "--path", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 3
    assert "path does not exist" in missing.stderr
    assert "nope" in missing.stderr

    relative = cluster.cli("job", "load", "--path", "relative/dir", check=False)
    assert relative.returncode == 2
    assert "alluxio.dora.client.ufs.root" in relative.stderr

    flag = cluster.cli("job", "load", "--path", str(tmp_path), "--batch-size", "0", check=False)
    assert flag.returncode == 2
    assert "--batch-size" in flag.stderr

    bandwidth = cluster.cli("job", "load", "--path", str(tmp_path), "--bandwidth", "fast",
                            check=False)
    assert bandwidth.returncode == 2
    assert "bandwidth" in bandwidth.stderr

    unreachable = subprocess.run(
        [sys.executable, "-m", "alluxiojob.cli.main", "job", "list",
         "-D", "alluxio.coordinator.rest.port=1"], capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == 5
    assert "cannot reach the coordinator" in unreachable.stderr
    assert all(s.alive for s in [*cluster.coordinators, *cluster.workers])


# trio-websocket's client side now and then leaves a socket for the GC when the server
# hangs up first; that is the test client, not the worker under test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_malformed_websocket_messages_get_errors(cluster: Cluster, tmp_path: Path) -> None:
    worker = cluster.workers[0]
    url = f"ws://127.0.0.1:{worker.rpc_port}/"  # type: ignore[attr-defined]
    with trio.fail_after(30):
        # Garbage instead of a hello: an error, then the worker closes the session.
        async with open_websocket_url(url) as ws:
            await ws.send_message(b"\xc1\x00garbage")
            reply = decode(await ws.get_message())
            assert isinstance(reply, ErrorMessage)
            assert "malformed hello" in reply.message

        # A valid session survives garbage, wrong shapes and text frames.
        async with open_websocket_url(url) as ws:
            await ws.send_message(encode(Hello("", "test")))
            assert isinstance(decode(await ws.get_message()), Welcome)
            for junk in (b"\x93\x01\x02\x03", b"\x81\xa1t\xa4task", b"", "text frame"):
                await ws.send_message(junk)
                reply = decode(await ws.get_message())
                assert isinstance(reply, ErrorMessage)
                assert reply.message.startswith("malformed message")
            # Path traversal is refused per file, without touching the cache.
            evil = TaskBatch(7, "job", TaskOp.LOAD, (FileEntry("file:///../../etc/passwd", 1, 1),))
            await ws.send_message(encode(evil))
            result = decode(await ws.get_message())
            assert isinstance(result, TaskResult)
            assert result.results[0].reason == "INVALID_PATH"
            # And real work still goes through on the same session.
            src = tmp_path / "ok.bin"
            src.write_bytes(b"hello")
            stat = src.stat()
            good = TaskBatch(8, "job", TaskOp.LOAD,
                             (FileEntry(f"file://{src}", stat.st_size, stat.st_mtime_ns),))
            await ws.send_message(encode(good))
            result = decode(await ws.get_message())
            assert isinstance(result, TaskResult)
            assert result.results[0].status.value == "OK"
    gc.collect()  # any socket the client left is collected here, under this test's filter
    assert worker.alive
    assert "malformed message" in worker.log()
