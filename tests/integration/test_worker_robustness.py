"""The worker under faults of its own: a source that turns into a FIFO, a pool process
killed mid-shard, a restart while a job's files are pinned, and slow jobs beside fast
ones. Real coordinator and worker processes on loopback."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.cluster import (
    Cluster,
    Service,
    cached_files,
    children,
    sha256,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

KiB = 1024
MiB = 1024 * KiB
SIZES = "alluxio.worker.page.store.sizes"
PIN_TIME = "alluxio.worker.job.cache.pin.time"
ONE_PROCESS = {"alluxio.worker.job.load.executor.threads.max": "1"}


def write_files(root: Path, count: int, size: int) -> dict[str, int]:
    root.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for i in range(count):
        path = root / f"f{i:03d}.bin"
        path.write_bytes(os.urandom(size))
        sizes[str(path)] = size
    return sizes


def web(worker: Service, route: str, **kwargs: Any) -> httpx.Response:
    port = worker.web_port  # type: ignore[attr-defined]
    return httpx.get(f"http://127.0.0.1:{port}{route}", timeout=10, **kwargs)


def pool_process(worker: Service) -> int:
    """The single pool process of a worker started with ``ONE_PROCESS``."""
    assert worker.proc is not None
    pid = worker.proc.pid

    def one() -> int | None:
        kids = [k for k in children(pid)  # not multiprocessing's resource tracker
                if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
        return kids[0] if len(kids) == 1 else None

    return wait_for(one, 30, "the worker's pool process")


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def shard_in_pool(worker: Service) -> bool:
    return int(web(worker, "/api/v1/worker/status").json()["active_tasks"]) > 0


# ---------------------------------------------------------------------- FIFO
def test_a_source_replaced_by_a_fifo_fails_alone(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{"alluxio.job.retry.max.attempts": "1"})
    worker = cluster.add_worker(**ONE_PROCESS)
    cluster.add_coordinator()
    src = tmp_path / "dataset"
    sizes = write_files(src, 5, 4 * KiB)
    victim = src / "f002.bin"
    pool = pool_process(worker)
    with stopped(pool):
        job = cluster.submit("load", str(src))
        wait_for(lambda: shard_in_pool(worker), 30, "the shard to reach the pool process")
        # Listed as a file, a FIFO by the time the pool process opens it: opened the
        # usual way, it would block for good (no writer ever comes).
        victim.unlink()
        os.mkfifo(victim)
    report = cluster.wait_state(job["id"], "FAILED", timeout=60)
    assert report["files"]["failed"] == 1
    assert report["files"]["processed"] == len(sizes) - 1
    [failure] = cluster.progress(job["id"], file_status="FAILURE")["failures"]
    assert failure["path"] == f"file://{victim}"
    assert failure["reason"] == "INVALID_PATH"  # final: no retry makes a FIFO a file
    assert "not a regular file" in failure["message"]
    cached = cached_files(cluster)
    assert set(cached) == set(sizes) - {str(victim)}
    for source, copies in cached.items():
        assert sha256(copies[0]) == sha256(Path(source))


# ---------------------------------------------------------------------- killed pool
def test_a_pool_process_killed_mid_shard_leaves_no_tmp_file(cluster_factory,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory(**{"alluxio.worker.load.file.partition.size": "1MiB"})
    worker = cluster.add_worker(**ONE_PROCESS)
    cluster.add_coordinator()
    src = tmp_path / "dataset"
    sizes = write_files(src, 1, 3 * MiB + 5)  # preallocated in tmp/, copied in ranges
    tmp = worker.cache_dir / "tmp"  # type: ignore[attr-defined]
    pool = pool_process(worker)
    with stopped(pool):
        job = cluster.submit("load", str(src))
        wait_for(lambda: shard_in_pool(worker), 30, "the shard to reach the pool process")
        assert len(list(tmp.iterdir())) == 1, "the large file's tmp file"
        # What a process killed mid-write leaves: a tmp file that no load owns.
        orphan = tmp / "0badf00d-1"
        orphan.write_bytes(b"half a file")
        os.kill(pool, signal.SIGKILL)
    report = cluster.wait_state(job["id"], "SUCCEEDED", timeout=60)
    assert report["files"]["processed"] == 1, "the file is retried on a new pool process"
    assert report["bytes"]["processed"] == sum(sizes.values())
    wait_for(lambda: not orphan.exists(), 30, "the next task to sweep tmp/")
    assert list(tmp.iterdir()) == []
    for source, copies in cached_files(cluster).items():
        assert sha256(copies[0]) == sha256(Path(source))
    assert "removed tmp files no load owns" in worker.log()


# ---------------------------------------------------------------------- pins
def test_pins_survive_a_worker_restart(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory()
    worker = cluster.add_worker(**{SIZES: "200KiB", PIN_TIME: "10min"})
    cluster.add_coordinator()
    first_files = write_files(tmp_path / "first", 10, 10 * KiB)
    second_files = write_files(tmp_path / "second", 15, 10 * KiB)  # 5 files too many
    first = cluster.submit("load", str(tmp_path / "first"))
    cluster.wait_state(first["id"], "SUCCEEDED")
    # The first job sent its last task moments ago: its files are pinned for 10 min,
    # and a restart must not forget that.
    worker.stop()
    worker.start()
    recovered = [json.loads(line) for line in worker.log().splitlines()
                 if '"cache recovered"' in line]
    assert recovered[-1]["pinned_jobs"] == 1

    second = cluster.submit("load", str(tmp_path / "second"))
    report = cluster.wait_state(second["id"], "FAILED")
    assert report["files"]["processed"] == 10
    assert report["files"]["failed"] == 5
    failures = cluster.progress(second["id"], file_status="FAILURE")["failures"]
    assert {f["reason"] for f in failures} == {"CACHE_FULL"}
    assert "reserved by loads in flight" in failures[0]["message"]
    cached = cached_files(cluster)
    assert set(first_files) <= set(cached), "the pinned job's files were not evicted"
    assert len(set(second_files) & set(cached)) == 10


# ---------------------------------------------------------------------- fair slots
def test_throttled_jobs_do_not_starve_a_third(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory()
    worker = cluster.add_worker()
    cluster.add_coordinator()
    slow = {}
    for name in ("slow-a", "slow-b"):
        write_files(tmp_path / name, 40, 4 * KiB)
        slow[str(tmp_path / name)] = cluster.submit("load", str(tmp_path / name), bandwidth=1,
                                                 batch_size=5)
    # At 1 byte/s neither ever finishes; once both hold tasks on the worker (as many as
    # the coordinator sends one worker at a time), a third job must still get through.
    wait_for(lambda: int(web(worker, "/api/v1/worker/status").json()["unfinished_tasks"]) >= 3,
             30, "the throttled jobs to hold tasks on the worker")
    fast_files = write_files(tmp_path / "fast", 20, 4 * KiB)
    fast = cluster.submit("load", str(tmp_path / "fast"))
    report = cluster.wait_state(fast["id"], "SUCCEEDED", timeout=60)
    assert report["files"]["processed"] == len(fast_files)
    for path, job in slow.items():
        assert cluster.progress(job["id"])["job"]["state"] == "RUNNING"
        cluster.api("POST", "/api/v1/master/stop_job/load",
                    json={"path": path}).raise_for_status()
    cached = cached_files(cluster)
    assert set(fast_files) <= set(cached)
