"""The job engine on real processes: stop reaches the workers, every task has a deadline,
a dead worker stalls only its share, progress never goes back, and job stat -v."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.cluster import (
    Cluster,
    ProgressSampler,
    Service,
    cached_files,
    make_tree,
    sha256,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

KiB = 1024


def unfinished_tasks(worker: Service) -> int:
    status = httpx.get(f"http://127.0.0.1:{worker.web_port}/api/v1/worker/status",  # type: ignore[attr-defined]
                       timeout=5).json()
    return int(status["unfinished_tasks"])


def write_files(root: Path, count: int, size: int) -> dict[str, int]:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"f{i:03d}").write_bytes(bytes([i % 251]) * size)
    return {str(root / f"f{i:03d}"): size for i in range(count)}


def assert_cached(cluster: Cluster, sizes: dict[str, int]) -> None:
    cached = cached_files(cluster)
    missing = set(sizes) - set(cached)
    assert not missing, f"{len(missing)} files not cached, e.g. {sorted(missing)[:3]}"
    for source in sizes:
        assert sha256(cached[source][0]) == sha256(Path(source))


# ------------------------------------------------------------------------ 6. stop


def test_stop_reaches_the_workers_and_frees_their_pool(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two LOADs with bandwidth=1 hold every pool process of a worker; once both are
    stopped, their tasks end (killing their pool processes) and a later job runs."""
    cluster: Cluster = cluster_factory()
    worker = cluster.add_worker(**{"alluxio.worker.job.load.executor.threads.max": "2"})
    cluster.add_coordinator()
    slow = [tmp_path / "slow-a", tmp_path / "slow-b"]
    jobs = []
    for root in slow:
        write_files(root, 4, 8 * KiB)
        jobs.append(cluster.submit("load", str(root), batch_size=1, bandwidth=1))
    # Each job copies one shard at a time at 1 byte/s: two pool processes, both wedged.
    wait_for(lambda: unfinished_tasks(worker) >= 2, 60, "both slow jobs to hold the pool")
    wait_for(lambda: any(t["status"] == "RUNNING" for job in jobs
                         for t in cluster.progress(job["id"])["tasks"]),
             30, "a checkpoint that shows the running tasks")
    for root, job in zip(slow, jobs, strict=True):
        cluster.cli("job", "load", "--path", str(root), "--stop")
        cluster.wait_state(job["id"], "STOPPED")
    # The stopped jobs' tasks end: the deadline is a bound for the condition, not a timing.
    wait_for(lambda: unfinished_tasks(worker) == 0, 10, "the stopped jobs' tasks to end")
    assert "cancelling a job's tasks" in worker.log()

    later = tmp_path / "later"
    sizes = make_tree(later, 30)
    job = cluster.submit("load", str(later))
    report = cluster.wait_state(job["id"], "SUCCEEDED", timeout=60)
    assert report["files"]["processed"] == len(sizes)
    assert_cached(cluster, sizes)
    # Tasks of a stopped job are not shown as still running. (One job may have had no
    # task yet: the other can hold every slot of the worker, max.tasks.per.worker=3.)
    tasks = [t for stopped in jobs for t in cluster.progress(stopped["id"])["tasks"]]
    assert tasks
    assert all(t["status"] != "RUNNING" for t in tasks), tasks


# ------------------------------------------------------------------------ 7. deadlines


def test_every_task_has_a_deadline(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A task that cannot finish (1 byte/s) ends at alluxio.job.task.timeout with
    TASK_TIMEOUT, is retried, and the job fails instead of hanging."""
    cluster: Cluster = cluster_factory(**{
        "alluxio.job.task.timeout": "2s",
        "alluxio.job.retry.max.attempts": "2",
    })
    worker = cluster.add_worker()
    cluster.add_coordinator()
    src = tmp_path / "slow"
    sizes = write_files(src, 2, 8 * KiB)
    job = cluster.submit("load", str(src), batch_size=1, bandwidth=1)
    report = cluster.wait_state(job["id"], "FAILED", timeout=120)
    assert report["files"]["failed"] == len(sizes)
    assert report["subtask_failures"] == 2 * len(sizes), "each file tried twice"
    failures = cluster.progress(job["id"], file_status="FAILURE")["failures"]
    assert {f["reason"] for f in failures} == {"TASK_TIMEOUT"}
    assert "alluxio.job.task.timeout=2s" in failures[0]["message"]
    wait_for(lambda: unfinished_tasks(worker) == 0, 10, "the timed-out tasks to end")


# ------------------------------------------------------------------------ 8. a dead worker


def test_a_dead_worker_stalls_only_its_share(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """STATIC membership, batch size 2: a worker killed mid-job and never restarted is
    considered down after failure.detection.timeout; its share goes to the live worker."""
    cluster: Cluster = cluster_factory(**{
        "alluxio.coordinator.failure.detection.timeout": "3s",
    })
    survivor = cluster.add_worker()
    victim = cluster.add_worker()
    cluster.add_coordinator()
    src = tmp_path / "data"
    sizes = make_tree(src, 400)
    job = cluster.submit("load", str(src), batch_size=2, bandwidth=256 * KiB)
    wait_for(lambda: unfinished_tasks(victim) > 0, 60, "the victim to run tasks")
    victim.kill()  # and never restarted
    report = cluster.wait_state(job["id"], "SUCCEEDED", timeout=120)
    assert report["files"]["processed"] == len(sizes)
    assert report["files"]["failed"] == 0
    assert "worker is down" in cluster.coordinators[0].log()
    cached = cached_files(cluster)
    assert set(sizes) <= set(cached)
    survivor_dir = str(survivor.cache_dir)  # type: ignore[attr-defined]
    lost = [s for s in sizes if not any(survivor_dir in str(c) for c in cached[s])]
    victim_dir = str(victim.cache_dir)  # type: ignore[attr-defined]
    assert all(any(victim_dir in str(c) for c in cached[s]) for s in lost), (
        "every file is on the survivor, or was cached by the victim before it died")
    for source in sizes:
        assert sha256(cached[source][0]) == sha256(Path(source))


# ------------------------------------------------------------------------ 9. progress


def test_progress_never_goes_backward_across_a_restart(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The coordinator is killed while the progress shown is ahead of the checkpoint; the
    restarted one resumes from the checkpoint, redoes the files after it, and never shows
    less than was shown before.

    No timing decides what happens: the workers are paused (SIGSTOP), the held one first.
    Its tasks cannot answer, so the job cannot finish before the kill and the checkpoint
    stops at its first unanswered file, while the other worker's files are processed past
    it. Then the other is paused too, so the restarted coordinator's first save is made
    before it redoes anything: what it shows then rests on what was shown before, not on
    work done again. failure.detection.timeout outlasts the test: a paused worker is
    never declared lost.
    """
    cluster: Cluster = cluster_factory(**{"alluxio.coordinator.failure.detection.timeout": "30min"})
    other = cluster.add_worker()
    held = cluster.add_worker()
    coordinator = cluster.add_coordinator()
    src = tmp_path / "data"
    sizes = make_tree(src, 1200)
    job = cluster.submit("load", str(src), batch_size=20, bandwidth=256 * KiB)

    def report() -> dict[str, Any]:
        now = cluster.progress(job["id"])
        assert now["job"]["state"] == "RUNNING", now["job"]
        return now

    def processed(now: dict[str, Any]) -> int:
        return int(now["files"]["processed"])

    def committed(now: dict[str, Any]) -> int:
        return int(now["progress"]["committed"]["files_processed"])

    def ahead_of_checkpoint() -> dict[str, Any] | None:
        now = report()
        return now if processed(now) >= committed(now) + 20 else None

    def resumed() -> dict[str, Any] | None:
        """A save of the restarted coordinator: the tasks it found running, interrupted."""
        now = report()
        return now if any(t["status"] == "INTERRUPTED" for t in now["tasks"]) else None

    with ProgressSampler(cluster, job["id"], [0]) as sampler:
        try:
            wait_for(lambda: processed(report()) >= 200, 120, "200 files processed")
            held.signal(signal.SIGSTOP)
            ahead = wait_for(ahead_of_checkpoint, 120, "a batch processed past the checkpoint")
            other.signal(signal.SIGSTOP)
            wait_for(lambda: any(s["processed"] >= processed(ahead) for s in sampler.samples),
                     60, "the sampler to see the progress ahead of the checkpoint")
            coordinator.kill()
            shown = max(sample["processed"] for sample in sampler.samples)
            restarted = cluster.add_coordinator(port=coordinator.port)  # type: ignore[attr-defined]
            cluster.coordinators.remove(coordinator)
            assert restarted is cluster.coordinators[0]
            first = wait_for(resumed, 120, "the restarted coordinator's first save")
            assert processed(first) >= shown > committed(first)
        finally:
            for worker in (held, other):
                worker.signal(signal.SIGCONT)
        after = json.loads(cluster.cli("job", "load", "--path", str(src), "--progress",
                                       "--format", "JSON").stdout)
        assert after["files"]["processed"] >= shown
        final = cluster.wait_state(job["id"], "SUCCEEDED", timeout=180)
        marks = len(sampler.samples)
        wait_for(lambda: any(s["state"] == "SUCCEEDED" for s in sampler.samples[marks:]),
                 60, "the sampler to see the job succeed")
    sampler.assert_never_backward()
    assert final["job"]["claims"] == 2
    assert final["files"]["processed"] == len(sizes), "nothing counted twice"
    assert final["files"]["listed"] == len(sizes)
    text = cluster.cli("job", "load", "--path", str(src), "--progress").stdout
    assert f"Files Processed: {len(sizes)} out of {len(sizes)}" in text


# ------------------------------------------------------------------------ 10. job stat -v


def test_job_stat_verbose_lists_tasks_with_worker_and_status(cluster: Cluster,
                                                              tmp_path: Path) -> None:
    src = tmp_path / "data"
    make_tree(src, 40)
    job = cluster.submit("load", str(src), batch_size=5)
    cluster.wait_state(job["id"], "SUCCEEDED")
    stat = cluster.cli("job", "stat", "-v", job["id"]).stdout
    workers = {f"127.0.0.1:{w.rpc_port}" for w in cluster.workers}  # type: ignore[attr-defined]
    assert "Task 0\n\tWorker: 127.0.0.1:" in stat
    shown = {line.split("Worker: ")[1] for line in stat.splitlines()
             if line.startswith("\tWorker: ")}
    assert shown == workers
    statuses = [line.split("Status: ")[1] for line in stat.splitlines()
                if line.startswith("\tStatus: ")]
    assert len(statuses) >= 40 // 5
    assert set(statuses) == {"COMPLETED"}
    tasks = cluster.progress(job["id"])["tasks"]
    assert sum(t["files"] for t in tasks) == 40
    assert all(t["ended_at"] >= t["started_at"] > 0 for t in tasks)
