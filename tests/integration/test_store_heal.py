"""A RocksDB job store on a file system that really fills up (ENOSPC), then gets room back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.cluster import Cluster, small_tmpfs, wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path, "8m") as mount:
        yield mount


def _fill(path: Path) -> None:
    """Write ``path`` until the file system has no space left."""
    chunk = b"\0" * 65536
    with open(path, "wb") as filler, contextlib.suppress(OSError):
        while True:
            filler.write(chunk)
            filler.flush()


def test_full_store_fails_clearly_and_heals_without_restart(
    cluster_factory, small_fs: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    store_dir = small_fs / "metastore"
    cluster: Cluster = cluster_factory(**{
        "alluxio.coordinator.job.meta.store.dir": str(store_dir),
        "alluxio.coordinator.scheduler.interval.time": "200ms",
    })
    coordinator = cluster.add_coordinator()  # no workers: submitted jobs stay put
    assert coordinator.proc is not None
    pid = coordinator.proc.pid

    def submit(name: str) -> httpx.Response:
        source = tmp_path / name
        source.mkdir(exist_ok=True)
        (source / "file").write_bytes(b"x")
        return cluster.api("POST", "/api/v1/master/submit_job/load",
                           json={"path": str(source)})

    acknowledged = [submit(f"before{i}").json()["id"] for i in range(3)]
    health = httpx.get(coordinator.health_url, timeout=10)
    assert health.status_code == 200
    assert health.json()["store_ok"] is True

    _fill(small_fs / "filler")
    # What RocksDB already allocated (the tail of its log) takes a few more writes.
    attempts = iter(range(200))

    def refused_submission() -> httpx.Response | None:
        answer = submit(f"during{next(attempts)}")
        if answer.status_code == 200:
            acknowledged.append(answer.json()["id"])
            return None
        return answer

    refused = wait_for(refused_submission, 60, "a submission to be refused")
    assert refused.status_code == 503
    assert refused.json()["error"] == "UNAVAILABLE"
    assert "No space left on device" in refused.json()["message"]
    assert str(store_dir) in refused.json()["message"]
    health = httpx.get(coordinator.health_url, timeout=10)
    assert health.status_code == 503
    body = health.json()
    assert (body["status"], body["store"], body["store_ok"]) == ("unavailable", "ROCKS", False)
    assert "No space left on device" in body["store_error"]
    assert str(store_dir) in body["store_error"]
    assert (body["error"], body["message"]) == ("UNAVAILABLE", body["store_error"])

    (small_fs / "filler").unlink()
    wait_for(lambda: httpx.get(coordinator.health_url, timeout=10).status_code == 200, 30,
             "the store to heal")
    after = submit("after")
    assert after.status_code == 200, after.text
    acknowledged.append(after.json()["id"])
    for job_id in acknowledged:  # nothing acknowledged was lost
        assert cluster.api("GET", f"/api/v1/master/job/{job_id}").status_code == 200
    assert coordinator.alive
    assert coordinator.proc.pid == pid, "healed without a restart"
    assert "Traceback" not in coordinator.log()
