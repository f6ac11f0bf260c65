"""A cache on a filesystem that really fills up (ENOSPC), not just a capacity limit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, cached_files, sha256, small_tmpfs

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path, "6m") as mount:
        yield mount


def test_full_disk_fails_files_not_the_worker(cluster_factory, small_fs: Path,  # type: ignore[no-untyped-def]
                                              tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory(**{"alluxio.job.retry.max.attempts": "1"})
    worker = cluster.add_worker(**{"alluxio.worker.page.store.dirs": str(small_fs / "cache")})
    worker.cache_dir = small_fs / "cache"  # type: ignore[attr-defined]
    cluster.add_coordinator()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"part-{i:02d}.bin").write_bytes(os.urandom(1024 * 1024))

    job = cluster.submit("load", str(src), batch_size=2)
    report = cluster.wait_state(job["id"], "FAILED", timeout=120)
    assert report["files"]["failed"] > 0
    assert report["files"]["processed"] > 0
    failures = cluster.progress(job["id"], file_status="FAILURE")["failures"]
    assert failures
    assert {f["reason"] for f in failures} == {"CACHE_FULL"}
    assert any("No space left on device" in f["message"] for f in failures)
    assert worker.alive, "the worker survives a full disk"

    cached = cached_files(cluster)
    assert len(cached) == report["files"]["processed"]
    for source, copies in cached.items():
        assert sha256(copies[0]) == sha256(Path(source)), "no partial file in data/"
    assert not list((small_fs / "cache" / "tmp").iterdir()), "no partial file left in tmp/"

    # Once there is room again, the same worker loads the rest.
    cluster.cli("job", "free", "--path", str(src), "--wait")
    smaller = tmp_path / "smaller"
    smaller.mkdir()
    for i in range(3):
        (smaller / f"f{i}").write_bytes(os.urandom(512 * 1024))
    again = cluster.submit("load", str(smaller))
    cluster.wait_state(again["id"], "SUCCEEDED")
