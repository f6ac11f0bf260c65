"""HA mode: several real coordinators on one real etcd."""

from __future__ import annotations

import collections
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alluxiojob.testing.etcd import EtcdServer
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

DETECTION = 3.0  # failure.detection.timeout in these tests, in seconds
POLL = 0.2


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with EtcdServer(data_dir=tmp_path / "etcd") as server:
        yield server


@pytest.fixture
def ha(cluster_factory, etcd: EtcdServer) -> Cluster:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{
        "alluxio.coordinator.job.meta.store.type": "ETCD",
        "alluxio.etcd.endpoints": etcd.url,
        "alluxio.coordinator.failure.detection.timeout": f"{DETECTION}s",
        "alluxio.coordinator.scheduler.job.etcd.poll.interval": f"{POLL}s",
        "alluxio.coordinator.scheduler.interval.time": "200ms",
        "alluxio.coordinator.scheduler.etcd.read.timeout": "2s",
        "alluxio.coordinator.scheduler.etcd.write.timeout": "2s",
    })
    return cluster


def _all_cached(cluster: Cluster, sizes: dict[str, int]) -> None:
    cached = cached_files(cluster)
    assert set(sizes) <= set(cached)
    for source in sizes:
        assert sha256(cached[source][0]) == sha256(Path(source))


def test_three_coordinators_share_one_queue(ha: Cluster, tmp_path: Path) -> None:
    ha.add_worker()
    ha.add_worker()
    for _ in range(3):
        ha.add_coordinator()
    src = tmp_path / "one"
    make_tree(src, 30)
    job = ha.submit("load", str(src), coordinator=0)
    for other in (1, 2):
        seen = ha.progress(job["id"], coordinator=other)
        assert seen["job"]["id"] == job["id"]
    ha.wait_state(job["id"], "SUCCEEDED", coordinator=2)
    assert ha.progress(job["id"], coordinator=1)["job"]["state"] == "SUCCEEDED"

    # 50 jobs submitted at once, spread over the three: each is claimed exactly once.
    dirs = []
    for i in range(50):
        d = tmp_path / f"many{i}"
        make_tree(d, 2)
        dirs.append(d)
    ids = [ha.submit("load", str(d), coordinator=i % 3)["id"] for i, d in enumerate(dirs)]
    reports = [ha.wait_state(job_id, "SUCCEEDED", coordinator=(i + 1) % 3)
               for i, job_id in enumerate(ids)]
    assert all(r["job"]["claims"] == 1 for r in reports), [r["job"]["claims"] for r in reports]
    owners = collections.Counter()
    for c in range(3):
        metrics = ha.api("GET", "/metrics", coordinator=c).text
        claimed = next(float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("alluxio_scheduler_etcd_claim_total"))
        owners[c] = int(claimed)
        assert "alluxio_scheduler_etcd_latency_ms_bucket" in metrics
        assert 'alluxio_scheduler_job_access_etcd_total{type="txn"}' in metrics
    assert sum(owners.values()) == 51, owners

    # job list --coordinator shows only that coordinator's jobs.
    slow = tmp_path / "slow"
    make_tree(slow, 100)
    running = ha.submit("load", str(slow), batch_size=1, bandwidth=8192)
    report = ha.wait_state(running["id"], "RUNNING")
    owner = report["job"]["owner"]
    mine = json.loads(ha.cli("job", "list", "--coordinator", owner, "--format", "JSON").stdout)
    assert [j["id"] for j in mine["jobs"]] == [running["id"]]
    nobody = json.loads(ha.cli("job", "list", "--coordinator", "nobody:1", "--format",
                               "JSON").stdout)
    assert nobody["jobs"] == []


def _owner_once_checkpointed(ha: Cluster, job_id: str, coordinators: list[Service],
                             files: int) -> tuple[str, int]:
    """Wait until the job is RUNNING past ``files`` committed files; its owner and index."""
    report = wait_for(
        lambda: (r := ha.progress(job_id))["job"]["state"] == "RUNNING"
        and r["progress"]["committed"]["files_processed"] > files and r,
        60, "the job to be running with a checkpoint")
    owner: str = report["job"]["owner"]
    index = next(i for i, c in enumerate(coordinators) if owner.endswith(f":{c.port}"))  # type: ignore[attr-defined]
    return owner, index


def test_failover_after_sigkill(ha: Cluster, tmp_path: Path) -> None:
    ha.add_worker()
    ha.add_worker()
    coordinators = [ha.add_coordinator() for _ in range(2)]
    src = tmp_path / "data"
    sizes = make_tree(src, 800)
    job = ha.submit("load", str(src), batch_size=20, bandwidth=1024 * 1024)
    owner, victim = _owner_once_checkpointed(ha, job["id"], coordinators, 100)
    survivor = 1 - victim

    # Progress read from both coordinators all along never goes back (it went 400 -> 200).
    with ProgressSampler(ha, job["id"], [0, 1]) as sampler:
        killed_at = time.monotonic()
        coordinators[victim].kill()

        def taken_over() -> dict[str, object] | None:
            r = ha.progress(job["id"], coordinator=survivor)
            new_owner = r["job"]["owner"]
            return r if r["job"]["claims"] == 2 and new_owner and new_owner != owner else None

        wait_for(taken_over, DETECTION + 10, "a peer to take the job over", interval=0.05)
        failover = time.monotonic() - killed_at  # reported, not asserted: no timing thresholds
        final = ha.wait_state(job["id"], "SUCCEEDED", coordinator=survivor, timeout=180)
    sampler.assert_never_backward()
    assert final["files"]["processed"] == len(sizes)
    _all_cached(ha, sizes)
    metrics = ha.api("GET", "/metrics", coordinator=survivor).text
    assert "alluxio_scheduler_etcd_reclaim_total 1.0" in metrics
    print(f"failover took {failover:.2f}s with failure.detection.timeout={DETECTION}s")


def test_paused_coordinator_is_fenced(ha: Cluster, tmp_path: Path) -> None:
    ha.add_worker()
    ha.add_worker()
    coordinators = [ha.add_coordinator() for _ in range(2)]
    src = tmp_path / "data"
    sizes = make_tree(src, 600)
    job = ha.submit("load", str(src), batch_size=20, bandwidth=1024 * 1024)
    _, victim = _owner_once_checkpointed(ha, job["id"], coordinators, 50)
    survivor = 1 - victim
    coordinators[victim].signal(signal.SIGSTOP)
    try:
        wait_for(lambda: ha.progress(job["id"], coordinator=survivor)["job"]["claims"] == 2,
                 DETECTION + 15, "the peer to reclaim the job")
    finally:
        coordinators[victim].signal(signal.SIGCONT)
    # The woken coordinator notices it was fenced and writes nothing more.
    wait_for(lambda: "abandoning it" in coordinators[victim].log(), 30,
             "the paused coordinator to abandon the job")
    final = ha.wait_state(job["id"], "SUCCEEDED", coordinator=survivor, timeout=180)
    assert final["job"]["owner"] == ""
    assert final["job"]["claims"] == 2
    assert final["files"]["processed"] == len(sizes)
    finished = [line for c in coordinators for line in c.log().splitlines()
                if '"job finished"' in line]
    assert len(finished) == 1, "the job succeeded once"
    assert coordinators[victim].alive
    _all_cached(ha, sizes)


def test_etcd_outage_mid_job(ha: Cluster, etcd: EtcdServer, tmp_path: Path) -> None:
    ha.add_worker()
    ha.add_worker()
    ha.add_coordinator()
    ha.add_coordinator()
    src = tmp_path / "data"
    sizes = make_tree(src, 600)
    job = ha.submit("load", str(src), batch_size=20, bandwidth=2 * 1024 * 1024)
    wait_for(lambda: ha.progress(job["id"])["progress"]["committed"]["files_processed"] > 50,
             60, "the job to make progress")
    etcd.stop()
    try:
        other = tmp_path / "other"
        make_tree(other, 3)
        answer = ha.api("POST", "/api/v1/master/submit_job/load", json={"path": str(other)})
        assert answer.status_code == 503
        assert answer.json()["error"] == "UNAVAILABLE"
        assert "etcd is unavailable" in answer.json()["message"]
        cli = ha.cli("job", "load", "--path", str(other), check=False)
        assert cli.returncode == 5
        assert "unavailable" in cli.stderr
        for c in ha.coordinators:  # alive, and honest about the store
            health = httpx.get(c.health_url, timeout=10)
            assert health.status_code == 503
            body = health.json()
            assert (body["status"], body["store"], body["store_ok"]) == (
                "unavailable", "ETCD", False)
            assert "etcd is unavailable" in body["store_error"]
            assert etcd.url in body["store_error"]
    finally:
        etcd.start()
    final = ha.wait_state(job["id"], "SUCCEEDED", timeout=240)
    assert final["files"]["processed"] == len(sizes)
    assert all(c.alive for c in ha.coordinators)
    _all_cached(ha, sizes)


def test_second_coordinator_with_the_same_id_is_refused(ha: Cluster, tmp_path: Path) -> None:
    ha.add_worker()
    first = ha.add_coordinator(**{"alluxio.coordinator.id": "coordinator-a"})
    src = tmp_path / "data"
    sizes = make_tree(src, 200)
    job = ha.submit("load", str(src), batch_size=5, bandwidth=256 * 1024)
    ha.wait_state(job["id"], "RUNNING")

    second = ha.add_coordinator(start=False, **{"alluxio.coordinator.id": "coordinator-a"})
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(timeout=DETECTION + 30) == 2
    refusal = second.log()
    assert "alluxio.coordinator.id=coordinator-a" in refusal
    assert "another coordinator is running" in refusal
    assert "Traceback" not in refusal

    # The first one was not disturbed: its job was never requeued by the second.
    final = ha.wait_state(job["id"], "SUCCEEDED", timeout=180)
    assert final["job"]["claims"] == 1
    assert final["files"]["processed"] == len(sizes)
    assert first.alive
    assert httpx.get(first.health_url, timeout=10).json()["coordinator"] == "coordinator-a"


def test_quick_restart_under_the_same_id_takes_its_jobs_back(
    ha: Cluster, tmp_path: Path
) -> None:
    """A SIGKILLed coordinator's key outlives it by up to one TTL; a restart under the same
    id waits for it to expire, instead of refusing, and resumes its own job."""
    ha.add_worker()
    ha.add_worker()
    # The default 15 s TTL: the restart below comes well within it.
    same = {"alluxio.coordinator.id": "coordinator-a",
            "alluxio.coordinator.failure.detection.timeout": "15s"}
    first = ha.add_coordinator(**same)
    src = tmp_path / "data"
    sizes = make_tree(src, 400)  # about 1.8 MB: some 7 s at this bandwidth on 2 workers
    job = ha.submit("load", str(src), batch_size=20, bandwidth=128 * 1024)
    wait_for(lambda: ha.progress(job["id"])["progress"]["committed"]["files_processed"] > 50,
             60, "the job to make progress")
    first.kill()
    again = ha.add_coordinator(start=False, **same)
    again.start(wait=False)
    again.wait_healthy(timeout=15 + 30)
    final = ha.wait_state(job["id"], "SUCCEEDED", coordinator=1, timeout=180)
    assert final["job"]["claims"] == 2
    assert final["files"]["processed"] == len(sizes)
    assert "took over an id whose previous holder is gone" in again.log()
    _all_cached(ha, sizes)


def test_rerun_in_etcd_mode(ha: Cluster, tmp_path: Path) -> None:
    worker = ha.add_worker(start=False)  # listed, but not running yet
    ha.add_coordinator(**{"alluxio.job.retry.max.attempts": "1"})
    src = tmp_path / "data"
    sizes = make_tree(src, 40)
    job = ha.submit("load", str(src))
    failed = ha.wait_state(job["id"], "FAILED", timeout=60)
    assert failed["files"]["failed"] == len(sizes)
    failures = ha.cli("job", "load", "--path", str(src), "--progress",
                      "--file-status", "FAILURE").stdout
    assert "WORKER_NOT_REACHABLE" in failures
    worker.start()
    # With one attempt per file, the rerun must not race the coordinator's reconnection.
    wait_for(lambda: all(w["connected"] for w in
                         ha.api("GET", "/api/v1/master/workers").json()["workers"]),
             30, "the coordinator to reconnect to the started worker")
    out = ha.cli("job", "rerun", "--id", job["id"]).stdout
    assert job["id"] in out
    final = ha.wait_state(job["id"], "SUCCEEDED")
    assert final["files"]["failed"] == 0
    assert final["files"]["processed"] == len(sizes)
    _all_cached(ha, sizes)


def test_rerun_by_path_after_stop(ha: Cluster, tmp_path: Path) -> None:
    ha.add_worker()
    ha.add_coordinator()
    src = tmp_path / "data"
    make_tree(src, 100)
    job = ha.submit("load", str(src), batch_size=2, bandwidth=16384)
    ha.wait_state(job["id"], "RUNNING")
    ha.cli("job", "load", "--path", str(src), "--stop")
    ha.wait_state(job["id"], "STOPPED")
    out = ha.cli("job", "rerun", "--path", str(src), "--type", "LOAD").stdout
    assert job["id"] in out
    ha.wait_state(job["id"], {"WAITING", "RUNNING"})


def test_rerun_is_unavailable_in_rocksdb_mode(cluster: Cluster, tmp_path: Path) -> None:
    result = cluster.cli("job", "rerun", "--id", "whatever", check=False)
    assert result.returncode == 6  # a wrong state for that request (docs/using.md, exit codes)
    assert "UnavailableException: Job ETCD is not enabled" in result.stderr


def test_etcd_worker_membership(cluster_factory, etcd: EtcdServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{
        "alluxio.worker.membership.manager.type": "ETCD",
        "alluxio.etcd.endpoints": etcd.url,
        "alluxio.coordinator.failure.detection.timeout": f"{DETECTION}s",
        "alluxio.job.retry.max.attempts": "10",
    })
    first = cluster.add_worker()
    coordinator = cluster.add_coordinator()

    def members() -> list[str]:
        report = cluster.api("GET", "/api/v1/master/report").json()
        return sorted(w["worker"] for w in report["workers"])

    wait_for(lambda: members() == [f"127.0.0.1:{first.rpc_port}"], 20,  # type: ignore[attr-defined]
             "the first worker to register")
    second = cluster.add_worker()
    wait_for(lambda: len(members()) == 2, 20, "the second worker to join")
    src = tmp_path / "data"
    sizes = make_tree(src, 300)
    job = cluster.submit("load", str(src))
    cluster.wait_state(job["id"], "SUCCEEDED")
    per_worker = {w.name: sum(1 for copies in cached_files(cluster).values()
                              for c in copies if str(w.cache_dir) in str(c))  # type: ignore[attr-defined]
                  for w in cluster.workers}
    assert all(n > 0 for n in per_worker.values()), per_worker
    second.kill()
    wait_for(lambda: len(members()) == 1, DETECTION + 10, "the dead worker to leave the ring")
    again = tmp_path / "again"
    sizes = make_tree(again, 100)
    job = cluster.submit("load", str(again))
    cluster.wait_state(job["id"], "SUCCEEDED")
    cached = cached_files(cluster)
    assert all(str(first.cache_dir) in str(cached[s][0]) for s in sizes)  # type: ignore[attr-defined]
    assert coordinator.alive
