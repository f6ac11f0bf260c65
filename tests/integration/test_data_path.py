"""The worker data path end to end, on real processes.

Skip-if-exists, verify passes, replicas, a cache smaller than the dataset (CACHE_FULL,
LRU eviction), failure thresholds, bandwidth pacing, sharding of large files, reading
the cache over HTTP, and a worker restart that keeps its cache.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alluxiojob.config import Keys
from tests.integration.cluster import (
    SETTLED_STATES,
    Cluster,
    Service,
    cached_files,
    make_tree,
    sha256,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

KiB = 1024
MiB = 1024 * KiB
SIZES = "alluxio.worker.page.store.sizes"
PIN_KEY = getattr(Keys, "WORKER_PIN_TIME", None)  # alluxio.worker.job.cache.pin.time
PIN_TIME = PIN_KEY.name if PIN_KEY is not None else "alluxio.worker.job.cache.pin.time"


# ---------------------------------------------------------------------- helpers
def write_files(root: Path, count: int, size: int, prefix: str = "f") -> dict[str, int]:
    """``count`` files of ``size`` random bytes, named so that they sort in order."""
    root.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for i in range(count):
        path = root / f"{prefix}{i:03d}.bin"
        path.write_bytes(os.urandom(size))
        sizes[str(path)] = size
    return sizes


def holders(cluster: Cluster, source: str) -> list[Service]:
    """The workers whose data/ holds a copy of ``source``."""
    rel = source.lstrip("/")
    return [w for w in cluster.workers if (w.cache_dir / "data" / rel).is_file()]  # type: ignore[attr-defined]


def assert_cached_identical(cluster: Cluster, sizes: dict[str, int], copies: int = 1) -> None:
    """Every source file has exactly ``copies`` cache copies, all byte-identical."""
    cached = cached_files(cluster)
    missing = sorted(set(sizes) - set(cached))
    assert not missing, f"{len(missing)} files not cached, e.g. {missing[:3]}"
    for source in sizes:
        assert len(cached[source]) == copies, f"{source}: {len(cached[source])} copies"
        want = sha256(Path(source))
        for copy in cached[source]:
            assert sha256(copy) == want, f"{copy} differs from {source}"


def tmp_debris(cluster: Cluster) -> list[Path]:
    found: list[Path] = []
    for worker in cluster.workers:
        tmp = worker.cache_dir / "tmp"  # type: ignore[attr-defined]
        if tmp.exists():
            found += [p for p in tmp.rglob("*") if p.is_file()]
    return found


def data_bytes(worker: Service) -> tuple[int, int]:
    """(files, bytes) in a worker's data/ directory, counted on disk."""
    files = total = 0
    for dirpath, _dirs, names in os.walk(worker.cache_dir / "data"):  # type: ignore[attr-defined]
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return files, total


def worker_report(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The coordinator's view of each worker (``report`` route), keyed by rpc port."""
    workers = cluster.api("GET", "/api/v1/master/report").json()["workers"]
    return {w["worker"].rsplit(":", 1)[1]: w for w in workers}


def web(worker: Service, route: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{worker.web_port}{route}", timeout=30, **kwargs)  # type: ignore[attr-defined]


def failed_paths_from_text(text: str) -> dict[str, str]:
    """``--progress --file-status FAILURE`` text: local path -> the failure line."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "\tReason: " in line:
            uri = line.strip().split("\tReason: ")[0]
            assert uri.startswith("file://"), line
            out[uri[len("file://"):]] = line
    return out


# ---------------------------------------------------------------------- 1. skip-if-exists
def test_skip_if_exists_skips_cached_files_and_reloads_changed_ones(
    cluster: Cluster, tmp_path: Path
) -> None:
    src = tmp_path / "dataset"
    sizes = make_tree(src, 60)
    total = sum(sizes.values())
    first = cluster.submit("load", str(src))
    report = cluster.wait_state(first["id"], "SUCCEEDED")
    assert report["files"]["processed"] == len(sizes)

    again = cluster.submit("load", str(src), skip_if_exists=True)
    assert again["outcome"] == "CREATED"
    report = cluster.wait_state(again["id"], "SUCCEEDED")
    assert report["files"]["skipped"] == len(sizes)
    assert report["bytes"]["skipped"] == total
    assert report["files"]["processed"] == 0
    assert report["bytes"]["processed"] == 0
    assert report["files"]["failed"] == 0
    text = cluster.cli("job", "load", "--path", str(src), "--progress").stdout
    assert f"Files Skipped: {len(sizes)}" in text

    candidates = sorted(p for p, size in sizes.items() if size > 0)
    # A new length (and content, and mtime).
    grown = candidates[0]
    before = os.stat(grown)
    new_content = os.urandom(sizes[grown] + 100)
    Path(grown).write_bytes(new_content)
    os.utime(grown, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
    job = cluster.submit("load", str(src), skip_if_exists=True)
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    assert report["files"]["processed"] == 1
    assert report["bytes"]["processed"] == len(new_content)
    assert report["files"]["skipped"] == len(sizes) - 1
    assert report["bytes"]["skipped"] == total - sizes[grown]
    [copy] = cached_files(cluster)[grown]
    assert copy.read_bytes() == new_content
    sizes[grown] = len(new_content)

    # The same length, new content: only the bumped mtime tells it apart.
    touched = candidates[1]
    before = os.stat(touched)
    same_length = os.urandom(sizes[touched])
    Path(touched).write_bytes(same_length)
    os.utime(touched, ns=(before.st_atime_ns, before.st_mtime_ns + 7_000_000_000))
    job = cluster.submit("load", str(src), skip_if_exists=True)
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    assert report["files"]["processed"] == 1
    assert report["files"]["skipped"] == len(sizes) - 1
    [copy] = cached_files(cluster)[touched]
    assert sha256(copy) == sha256(Path(touched))
    assert_cached_identical(cluster, sizes)


# ---------------------------------------------------------------------- 2. verify
def test_verify_with_skip_if_exists_repairs_hand_damage(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    sizes = make_tree(src, 40)
    job = cluster.submit("load", str(src))
    cluster.wait_state(job["id"], "SUCCEEDED")

    candidates = sorted(p for p, size in sizes.items() if size > 0)
    lost, changed = candidates[0], candidates[1]
    [lost_copy] = cached_files(cluster)[lost]
    lost_copy.unlink()  # gone from data/, still in the index
    before = os.stat(changed)
    Path(changed).write_bytes(os.urandom(sizes[changed] + 7))
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 3_000_000_000))
    sizes[changed] += 7

    job = cluster.submit("load", str(src), verify=True, skip_if_exists=True)
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    # The load pass reloads both; the verify pass then finds nothing left to repair.
    assert report["files"]["processed"] == 2
    assert report["files"]["skipped"] == len(sizes) - 2
    assert report["files"]["failed"] == 0
    assert report["verify_passes"] == 1
    assert report["files_repaired"] == 0
    text = cluster.cli("job", "load", "--path", str(src), "--progress").stdout
    assert "Verify Passes: 1, Files Repaired: 0" in text
    assert_cached_identical(cluster, sizes)


@pytest.fixture(scope="module")
def repaired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A verify LOAD whose cache loses a file during the load pass (before verifying)."""
    root = tmp_path_factory.mktemp("repair")
    cluster = Cluster(root / "cluster")
    try:
        cluster.add_worker()
        cluster.add_coordinator()
        src = root / "dataset"
        sizes = write_files(src, 12, 64 * KiB)
        # 768KiB at 256KiB/s: the load pass takes about 3 s, time to damage the cache.
        job = cluster.submit("load", str(src), verify=True, batch_size=2, bandwidth=256 * KiB)

        def first_copy() -> Path | None:
            for copies in cached_files(cluster).values():
                return copies[0]
            return None

        copy = wait_for(first_copy, 60, "a first file in the cache")
        copy.unlink()
        during = cluster.progress(job["id"])
        report = cluster.wait_state(job["id"], "SUCCEEDED")
        yield {"cluster": cluster, "sizes": sizes, "during": during, "report": report}
    finally:
        cluster.stop_all()


def test_verify_repairs_a_file_lost_during_the_load_pass(repaired: dict[str, Any]) -> None:
    during, report = repaired["during"], repaired["report"]
    sizes: dict[str, int] = repaired["sizes"]
    # The verify pass starts only after the job is VERIFYING in the store; RUNNING after
    # the unlink means the verify pass had not looked at the cache yet.
    assert during["job"]["state"] == "RUNNING", during["job"]
    assert during["verify_passes"] == 0
    assert during["files"]["done"] < len(sizes)

    assert report["verify_passes"] == 2, "one pass repaired the file, the next found no damage"
    assert report["files_repaired"] == 1
    assert report["files"]["failed"] == 0
    assert report["files"]["listed"] == len(sizes)
    assert report["eta_seconds"] is None
    assert_cached_identical(repaired["cluster"], sizes)


def test_verify_repairs_do_not_count_files_twice(repaired: dict[str, Any]) -> None:
    report = repaired["report"]
    assert report["files"]["done"] <= report["files"]["listed"], report["files"]
    assert report["bytes"]["processed"] <= report["bytes"]["listed"], report["bytes"]


# ---------------------------------------------------------------------- 3. replicas
@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three workers, a tree loaded with replicas=2; the report is taken at the end."""
    root = tmp_path_factory.mktemp("replicas")
    cluster = Cluster(root / "cluster")
    try:
        for _ in range(3):
            cluster.add_worker()
        cluster.add_coordinator()
        src = root / "dataset"
        sizes = make_tree(src, 90)
        job = cluster.submit("load", str(src), replicas=2)
        report = cluster.wait_state(job["id"], "SUCCEEDED")
        yield {"cluster": cluster, "src": src, "sizes": sizes, "report": report}
    finally:
        cluster.stop_all()


def test_replicas_on_distinct_workers_and_free_removes_every_copy(
    replicated: dict[str, Any],
) -> None:
    cluster: Cluster = replicated["cluster"]
    sizes: dict[str, int] = replicated["sizes"]
    report = replicated["report"]
    assert report["files"]["processed"] == len(sizes), "file counters follow the primary"
    assert report["files"]["listed"] == len(sizes)
    assert report["files"]["failed"] == 0

    assert set(cached_files(cluster)) == set(sizes)
    assert_cached_identical(cluster, sizes, copies=2)
    for source in sizes:
        assert len(holders(cluster, source)) == 2, f"{source} is not on 2 distinct workers"
    workers = worker_report(cluster)
    assert sum(w["cached_files"] for w in workers.values()) == 2 * len(sizes)
    assert all(w["cached_files"] > 0 for w in workers.values()), workers
    assert sum(w["cache_used"] for w in workers.values()) == 2 * sum(sizes.values())

    free = cluster.submit("free", str(replicated["src"]))
    cluster.wait_state(free["id"], "SUCCEEDED")
    assert cached_files(cluster) == {}
    workers = worker_report(cluster)
    assert all(w["cached_files"] == 0 and w["cache_used"] == 0 for w in workers.values()), workers


def test_replicated_load_reports_bytes_like_files(replicated: dict[str, Any]) -> None:
    report = replicated["report"]
    total = sum(replicated["sizes"].values())
    assert report["bytes"]["listed"] == total
    assert report["bytes"]["processed"] == report["bytes"]["listed"], report["bytes"]


# ---------------------------------------------------------------------- 4. a small cache
def test_dataset_bigger_than_the_cache_fails_with_cache_full(
    cluster_factory, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    cluster: Cluster = cluster_factory()
    capacity = 200 * KiB
    for _ in range(2):
        cluster.add_worker(**{SIZES: "200KiB"})
    cluster.add_coordinator()
    src = tmp_path / "dataset"
    sizes = write_files(src, 60, 10 * KiB)  # 600KiB for 400KiB of cache
    job = cluster.submit("load", str(src))
    report = cluster.wait_state(job["id"], "FAILED")
    files = report["files"]
    assert files["failed"] >= len(sizes) - 40
    assert files["processed"] + files["failed"] == len(sizes)
    assert f"{files['failed']} files failed" in report["job"]["error"]

    text = cluster.cli("job", "load", "--path", str(src), "--progress",
                       "--file-status", "FAILURE").stdout
    failed = failed_paths_from_text(text)
    assert len(failed) == files["failed"], text
    assert all("Reason: CACHE_FULL" in line for line in failed.values()), text

    assert all(w.alive for w in [*cluster.workers, *cluster.coordinators])
    cached = cached_files(cluster)
    assert set(cached).isdisjoint(failed), "a failed file left a copy behind"
    assert set(cached) | set(failed) == set(sizes)
    for source, copies in cached.items():
        assert len(copies) == 1
        assert sha256(copies[0]) == sha256(Path(source)), f"{source}: partial copy"
    assert tmp_debris(cluster) == []

    workers = worker_report(cluster)
    for worker in cluster.workers:
        status = workers[str(worker.rpc_port)]  # type: ignore[attr-defined]
        assert status["cache_capacity"] == capacity
        assert status["cache_used"] <= capacity, status
        assert (status["cached_files"], status["cache_used"]) == data_bytes(worker)


@pytest.mark.skipif(PIN_KEY is None,
                    reason=f"{PIN_TIME} does not exist: eviction only after 10 minutes")
@pytest.mark.parametrize("pin", ["0s", "10min"])
def test_lru_eviction_of_an_older_job(cluster_factory, tmp_path: Path, pin: str) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory()
    capacity = 200 * KiB
    worker = cluster.add_worker(**{SIZES: "200KiB", PIN_TIME: pin})
    cluster.add_coordinator()
    old = write_files(tmp_path / "old", 10, 10 * KiB)
    new = write_files(tmp_path / "new", 15, 10 * KiB)  # 250KiB in all: 5 files too many
    first = cluster.submit("load", str(tmp_path / "old"))
    cluster.wait_state(first["id"], "SUCCEEDED")
    # Reading a file over HTTP makes it recently used: these five are evicted last.
    recent = sorted(old)[:5]
    for source in recent:
        response = web(worker, "/api/v1/files", params={"path": source})
        assert response.status_code == 200

    second = cluster.submit("load", str(tmp_path / "new"))
    cached: dict[str, list[Path]]
    if pin == "0s":
        report = cluster.wait_state(second["id"], "SUCCEEDED")
        assert report["files"]["processed"] == len(new)
        cached = cached_files(cluster)
        assert set(new) <= set(cached)
        assert {s for s in old if s in cached} == set(recent), "the LRU files went first"
        location = web(worker, "/api/v1/location", params={"path": str(tmp_path / "old")})
        assert location.json()["files"] == len(recent), "the evicted files left the index"
    else:
        report = cluster.wait_state(second["id"], "FAILED")
        assert report["files"]["processed"] == 10
        assert report["files"]["failed"] == 5
        failures = cluster.progress(second["id"], file_status="FAILURE")["failures"]
        assert [f["reason"] for f in failures] == ["CACHE_FULL"] * 5
        cached = cached_files(cluster)
        assert set(old) <= set(cached), "the older job's files are pinned"
    for source, copies in cached.items():
        assert sha256(copies[0]) == sha256(Path(source))
    status = web(worker, "/api/v1/worker/status").json()
    assert status["cache_used"] <= capacity
    assert (status["cached_files"], status["cache_used"]) == data_bytes(worker)


# ---------------------------------------------------------------------- 5. thresholds
@pytest.fixture(scope="module")
def failed_early(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Thresholds at 0 and a 32KiB cache for 300 files of 8KiB: the job fails early."""
    root = tmp_path_factory.mktemp("thresholds")
    cluster = Cluster(root / "cluster", {
        "alluxio.job.failure.count.threshold": "0",
        "alluxio.job.failure.ratio.threshold": "0",
    })
    try:
        cluster.add_worker(**{SIZES: "32KiB"})
        cluster.add_coordinator()
        src = root / "dataset"
        sizes = write_files(src, 300, 8 * KiB)  # 4 files fit
        job = cluster.submit("load", str(src), batch_size=10)
        report = cluster.wait_state(job["id"], "FAILED")
        yield {"cluster": cluster, "src": src, "sizes": sizes, "report": report}
    finally:
        cluster.stop_all()


def test_failure_thresholds_fail_the_job_early(failed_early: dict[str, Any]) -> None:
    cluster: Cluster = failed_early["cluster"]
    report = failed_early["report"]
    assert report["files"]["failed"] >= 1
    assert report["files"]["done"] < len(failed_early["sizes"]), "the job stopped early"
    assert report["job"]["error"]
    assert all(s.alive for s in [*cluster.workers, *cluster.coordinators])
    plain = json.loads(cluster.cli("job", "load", "--path", str(failed_early["src"]),
                                   "--progress", "--format", "JSON").stdout)
    assert plain["job"]["state"] == "FAILED"
    assert "failures" not in plain, "failures are listed only with --file-status FAILURE"


def test_early_failure_error_names_both_thresholds(failed_early: dict[str, Any]) -> None:
    error = failed_early["report"]["job"]["error"]
    assert "alluxio.job.failure.count.threshold=0" in error, error
    assert "alluxio.job.failure.ratio.threshold=0" in error, error
    text = failed_early["cluster"].cli("job", "load", "--path", str(failed_early["src"]),
                                       "--progress").stdout
    assert "alluxio.job.failure.count.threshold" in text


def test_early_failure_lists_the_failed_files(failed_early: dict[str, Any]) -> None:
    cluster: Cluster = failed_early["cluster"]
    src = failed_early["src"]
    listed = json.loads(cluster.cli("job", "load", "--path", str(src), "--progress",
                                    "--format", "JSON", "--file-status", "FAILURE").stdout)
    assert listed["files"]["failed"] == failed_early["report"]["files"]["failed"] >= 1
    assert len(listed["failures"]) == listed["files"]["failed"], listed["failures"]
    for failure in listed["failures"]:
        assert failure["reason"] == "CACHE_FULL"
        assert "no room for" in failure["message"]
        assert failure["path"].startswith(f"file://{src}/")


def test_progress_json_lists_failures_with_reason_and_message(
    cluster_factory, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    cluster: Cluster = cluster_factory()
    cluster.add_worker(**{SIZES: "32KiB"})
    cluster.add_coordinator()
    src = tmp_path / "dataset"
    write_files(src, 10, 8 * KiB)  # 4 fit, 6 fail, below the default thresholds
    job = cluster.submit("load", str(src))
    report = cluster.wait_state(job["id"], "FAILED")
    assert report["files"]["failed"] == 6
    listed = json.loads(cluster.cli("job", "load", "--path", str(src), "--progress",
                                    "--format", "JSON", "--file-status", "FAILURE").stdout)
    assert len(listed["failures"]) == 6
    for failure in listed["failures"]:
        assert failure["reason"] == "CACHE_FULL"
        assert "no room for 8192 bytes" in failure["message"]
        assert failure["path"].startswith(f"file://{src}/")
    assert {f["path"][len("file://"):] for f in listed["failures"]}.isdisjoint(
        cached_files(cluster))


def test_a_listing_error_fails_the_job_with_its_reason(
    cluster_factory, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    cluster: Cluster = cluster_factory(**{
        "alluxio.coordinator.scheduler.running.job.capacity": "1"})
    cluster.add_worker()
    coordinator = cluster.add_coordinator()
    busy = write_files(tmp_path / "busy", 20, 8 * KiB)
    assert busy
    gone = tmp_path / "gone"
    write_files(gone, 3, 100)
    first = cluster.submit("load", str(tmp_path / "busy"), batch_size=1, bandwidth=4096)
    cluster.wait_state(first["id"], "RUNNING")
    second = cluster.submit("load", str(gone))
    assert cluster.progress(second["id"])["job"]["state"] == "WAITING"
    shutil.rmtree(gone)  # the root vanishes before the job lists it
    cluster.api("POST", "/api/v1/master/stop_job/load", json={"path": str(tmp_path / "busy")})
    cluster.wait_state(first["id"], "STOPPED")

    def settled() -> bool:
        state = cluster.progress(second["id"])["job"]["state"]
        return state in SETTLED_STATES or "job runner interrupted" in coordinator.log()

    wait_for(settled, 60, "the second job to end or its runner to crash")
    report = cluster.progress(second["id"])
    assert report["job"]["state"] == "FAILED", (report["job"], coordinator.log()[-2000:])
    assert "UFS_NOT_FOUND" in report["job"]["error"]
    assert str(gone) in report["job"]["error"]


# ---------------------------------------------------------------------- 6. bandwidth
def test_bandwidth_limit_paces_the_load(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory()
    cluster.add_worker()
    cluster.add_coordinator()
    src = tmp_path / "dataset"
    sizes = write_files(src, 4, 256 * KiB)
    limit = 256 * KiB
    limited = cluster.submit("load", str(src), bandwidth=limit)
    slow = cluster.wait_state(limited["id"], "SUCCEEDED")
    assert slow["bytes"]["processed"] == MiB
    assert slow["job"]["options"]["bandwidth"] == limit
    # 1MiB at 256KiB/s is 4 s: a lower bound only, with some slack for rounding.
    assert slow["elapsed_seconds"] >= 3.5, slow["elapsed_seconds"]

    unlimited = cluster.submit("load", str(src))
    fast = cluster.wait_state(unlimited["id"], "SUCCEEDED")
    assert fast["bytes"]["processed"] == MiB
    assert fast["throughput_avg"] > limit, fast
    assert fast["elapsed_seconds"] < slow["elapsed_seconds"]
    assert_cached_identical(cluster, sizes)


# ---------------------------------------------------------------------- 7. sharding
def test_large_files_are_sharded_and_published_whole(cluster: Cluster, tmp_path: Path) -> None:
    # The ``cluster`` fixture sets alluxio.worker.load.file.partition.size=1MiB.
    src = tmp_path / "dataset"
    src.mkdir()
    sizes = {}
    for name, size in [("big file.bin", 4 * MiB + 13), ("exact.bin", MiB),
                       ("one more.bin", MiB + 1), ("two parts.bin", 2 * MiB)]:
        (src / name).write_bytes(os.urandom(size))
        sizes[str(src / name)] = size
    job = cluster.submit("load", str(src))
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    assert report["files"]["processed"] == len(sizes)
    assert report["bytes"]["processed"] == sum(sizes.values())
    assert_cached_identical(cluster, sizes)
    for source, size in sizes.items():
        [copy] = cached_files(cluster)[source]
        assert copy.stat().st_size == size
    assert tmp_debris(cluster) == []


# ---------------------------------------------------------------------- 8. HTTP reads
def test_reading_the_cache_over_http(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "reads"
    sizes = make_tree(src, 30)
    elsewhere = tmp_path / "not loaded.bin"
    elsewhere.write_bytes(os.urandom(100))
    job = cluster.submit("load", str(src))
    cluster.wait_state(job["id"], "SUCCEEDED")

    source = max(sizes, key=lambda p: sizes[p])  # a name with spaces or non-ASCII
    data = Path(source).read_bytes()
    size = len(data)
    [holder] = holders(cluster, source)
    [other] = [w for w in cluster.workers if w is not holder]
    files = "/api/v1/files"

    whole = web(holder, files, params={"path": source})
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["content-length"] == str(size)
    assert whole.headers["x-alluxio-cached"] == "true"

    part = web(holder, files, params={"path": source}, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{size}"
    assert part.headers["content-length"] == "10"

    suffix = web(holder, files, params={"path": source}, headers={"Range": "bytes=-5"})
    assert suffix.status_code == 206
    assert suffix.content == data[-5:]
    assert suffix.headers["content-range"] == f"bytes {size - 5}-{size - 1}/{size}"

    open_ended = web(holder, files, params={"path": source},
                     headers={"Range": f"bytes={size - 3}-"})
    assert open_ended.status_code == 206
    assert open_ended.content == data[-3:]

    beyond = web(holder, files, params={"path": source}, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"

    empty = next(p for p, s in sizes.items() if s == 0)
    [empty_holder] = holders(cluster, empty)
    zero = web(empty_holder, files, params={"path": empty})
    assert zero.status_code == 200
    assert zero.content == b""
    assert zero.headers["content-length"] == "0"

    miss = web(other, files, params={"path": source})
    assert miss.status_code == 404
    assert miss.json()["error"] == "NOT_CACHED"
    assert source in miss.json()["message"]
    never = web(holder, files, params={"path": str(elsewhere)})
    assert never.status_code == 404
    assert str(elsewhere) in never.json()["message"]

    through = web(other, files, params={"path": source, "read_through": "true"})
    assert through.status_code == 200
    assert through.content == data
    assert through.headers["x-alluxio-cached"] == "false"
    ranged = web(other, files, params={"path": source, "read_through": "true"},
                 headers={"Range": "bytes=0-0"})
    assert ranged.status_code == 206
    assert ranged.content == data[:1]
    assert holders(cluster, source) == [holder], "a read-through does not cache the file"
    gone = web(other, files, params={"path": str(tmp_path / "nope"), "read_through": "true"})
    assert gone.status_code == 404

    counts = [web(w, "/api/v1/location", params={"path": str(src)}).json()
              for w in cluster.workers]
    assert sum(c["files"] for c in counts) == len(sizes)
    assert sum(c["bytes"] for c in counts) == sum(sizes.values())
    for worker, count in zip(cluster.workers, counts, strict=True):
        assert count["files"] == data_bytes(worker)[0]
    single = web(holder, "/api/v1/location", params={"path": source}).json()
    assert (single["files"], single["bytes"]) == (1, size)


# ---------------------------------------------------------------------- 9. restart
def test_worker_restart_keeps_its_cache(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    sizes = make_tree(src, 50)
    job = cluster.submit("load", str(src))
    cluster.wait_state(job["id"], "SUCCEEDED")

    worker = cluster.workers[0]
    held_before = data_bytes(worker)
    assert held_before[0] > 0
    worker.stop()
    assert not worker.alive
    stray = worker.cache_dir / "data" / "stray" / "x"  # type: ignore[attr-defined]
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not in the index")
    debris = worker.cache_dir / "tmp" / "half-written"  # type: ignore[attr-defined]
    debris.write_bytes(b"partial")
    worker.start()

    assert not stray.exists(), "an unindexed file in data/ is removed at startup"
    assert not debris.exists(), "tmp/ is emptied at startup"
    assert data_bytes(worker) == held_before
    recovered = [json.loads(line) for line in worker.log().splitlines()
                 if '"cache recovered"' in line]
    assert recovered[-1]["files"] == held_before[0]
    assert recovered[-1]["removed_unindexed"] == 1
    status = web(worker, "/api/v1/worker/status").json()
    assert (status["cached_files"], status["cache_used"]) == held_before

    wait_for(lambda: all(w.get("connected") for w in worker_report(cluster).values()), 30,
             "the coordinator to reconnect to the restarted worker")
    again = cluster.submit("load", str(src), skip_if_exists=True)
    report = cluster.wait_state(again["id"], "SUCCEEDED")
    assert report["files"]["skipped"] == len(sizes)
    assert report["files"]["processed"] == 0
    assert report["bytes"]["skipped"] == sum(sizes.values())
    assert_cached_identical(cluster, sizes)
