"""An unreadable source file fails with PERMISSION_DENIED and shows in the failure list."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, cached_files, sha256

pytestmark = pytest.mark.timeout(300)


def _without_root_file_access() -> tuple[str, ...]:
    """Root reads any file; a worker without the DAC capabilities does not."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--")


def test_unreadable_source_file(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory()
    worker = cluster.add_worker(prefix=_without_root_file_access())
    cluster.add_coordinator()

    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"ok-{i}.bin").write_bytes(os.urandom(1000 + i))
    secret = src / "secret.bin"
    secret.write_bytes(b"top secret")
    secret.chmod(0)

    failed = cluster.cli("job", "load", "--path", str(src), "--wait", check=False)
    assert failed.returncode == 4, failed.stdout + failed.stderr
    report = cluster.cli("job", "load", "--path", str(src), "--progress",
                         "--file-status", "FAILURE").stdout
    assert "Files Failed: 1" in report
    line = next(line for line in report.splitlines() if "secret.bin" in line)
    assert "Reason: PERMISSION_DENIED" in line
    assert "Permission denied" in line

    data = json.loads(cluster.cli("job", "load", "--path", str(src), "--progress",
                                  "--format", "JSON", "--file-status", "FAILURE").stdout)
    assert data["job"]["state"] == "FAILED"
    assert "1 files failed" in data["job"]["error"]
    assert [f["reason"] for f in data["failures"]] == ["PERMISSION_DENIED"]

    cached = cached_files(cluster)
    assert str(secret) not in cached
    assert len(cached) == 20
    for source, copies in cached.items():
        assert sha256(copies[0]) == sha256(Path(source))
    assert worker.alive


def test_an_unwritable_cache_names_the_cache_file(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{"alluxio.job.retry.max.attempts": "1"})
    worker = cluster.add_worker(prefix=_without_root_file_access())
    cluster.add_coordinator()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"part-{i}.bin").write_bytes(os.urandom(1000))
    tmp = worker.cache_dir / "tmp"  # type: ignore[attr-defined]
    tmp.chmod(0o555)  # the cache's side refuses the write, the sources are fine
    try:
        job = cluster.submit("load", str(src))
        report = cluster.wait_state(job["id"], "FAILED")
    finally:
        tmp.chmod(0o755)
    assert report["files"]["failed"] == 3
    failures = cluster.progress(job["id"], file_status="FAILURE")["failures"]
    for failure in failures:
        assert failure["reason"] == "PERMISSION_DENIED"
        assert failure["message"].startswith(f"cache file {tmp}/"), failure["message"]
        assert "(caching " in failure["message"]
    assert worker.alive
