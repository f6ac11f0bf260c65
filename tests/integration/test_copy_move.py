"""COPY and MOVE between UFS locations, spread over real workers."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, children, make_tree, sha256, wait_for

pytestmark = pytest.mark.timeout(300)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in root.rglob("*") if p.is_file()}


@pytest.mark.fast
def test_copy_then_move(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 300, big_size=2_300_000)
    before = _tree_digest(src)

    copied = tmp_path / "copy of src"
    cluster.cli("job", "copy", "--src", str(src), "--dst", str(copied), "--wait")
    assert _tree_digest(copied) == before
    assert _tree_digest(src) == before, "COPY leaves the source alone"

    # Again without --overwrite: every file exists, so every file is skipped.
    again = cluster.cli("job", "copy", "--src", str(src), "--dst", str(copied), "--wait")
    assert "SUCCEEDED" in again.stdout
    report = json.loads(cluster.cli("job", "copy", "--src", str(src), "--dst", str(copied),
                                    "--progress", "--format", "JSON").stdout)
    assert report["files"]["skipped"] == len(before)
    assert report["files"]["processed"] == 0

    moved = tmp_path / "moved"
    cluster.cli("job", "move", "--src", str(copied), "--dst", str(moved), "--wait")
    assert _tree_digest(moved) == before
    assert not [p for p in copied.rglob("*") if p.is_file()], "MOVE removes the sources"
    assert not list(moved.rglob(".*alluxiojob-*")), "no temporary files are left behind"


def test_copy_into_itself_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    inside = cluster.cli("job", "copy", "--src", str(src), "--dst", str(src / "sub"),
                         check=False)
    assert inside.returncode == 2
    assert "inside the source" in inside.stderr
    no_dst = cluster.cli("job", "move", "--src", str(src), check=False)
    assert no_dst.returncode == 2
    assert "--dst" in no_dst.stderr


def _temps(directory: Path) -> list[str]:
    try:
        return [name for name in os.listdir(directory) if ".alluxiojob-" in name]
    except FileNotFoundError:
        return []


def _runs(log: str) -> list[str]:
    """The temp file owners (worker tag and run) of each start of a worker, in order."""
    return [json.loads(line)["tmp_owner"] for line in log.splitlines()
            if '"cache recovered"' in line]


def test_temp_files_of_a_killed_worker_are_swept_when_it_writes_again(
        cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL a worker and its pool process while a COPY writes its hidden temp file:
    the restarted worker finishes the file and removes what its dead run left."""
    cluster: Cluster = cluster_factory(**{"alluxio.job.retry.max.attempts": "10"})
    worker = cluster.add_worker(**{"alluxio.worker.job.load.executor.threads.max": "1"})
    cluster.add_coordinator()
    src = tmp_path / "src"
    src.mkdir()
    block = os.urandom(1 << 20)
    with open(src / "big.bin", "wb") as f:  # 256 MiB: a copy that takes a while
        for i in range(256):
            f.write(i.to_bytes(4, "big") + block[4:])
    digest = sha256(src / "big.bin")

    for attempt in range(3):
        dst = tmp_path / f"dst{attempt}"
        answer = cluster.api("POST", "/api/v1/master/submit_job/copy",
                             json={"path": str(src), "dst": str(dst)})
        assert answer.status_code == 200, answer.text
        job_id = answer.json()["id"]
        wait_for(lambda d=dst: _temps(d), 120, "the copy's temp file", interval=0.001)
        # Stopped first, the worker cannot clean up after its pool process's death.
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGSTOP)
        for pid in children(worker.proc.pid):
            os.kill(pid, signal.SIGKILL)
        worker.kill()
        left = _temps(dst)
        if left and not (dst / "big.bin").exists():
            break
        # The copy finished before the kill: nothing was left to sweep; again.
        worker.start()
        cluster.wait_state(job_id, "SUCCEEDED", timeout=240)
    else:
        pytest.fail("every copy finished before its worker could be killed")

    [debris] = left
    tag = (worker.cache_dir / "worker-tag").read_text().strip()  # type: ignore[attr-defined]
    killed_run = _runs(worker.log())[-1]
    assert killed_run.startswith(f"{tag}-")
    assert debris.startswith(f".big.bin.alluxiojob-{killed_run}-"), debris
    worker.start()
    assert _runs(worker.log())[-1] != killed_run
    cluster.wait_state(job_id, "SUCCEEDED", timeout=240)
    assert sha256(dst / "big.bin") == digest
    assert _temps(dst) == [], "the dead run's temp file was swept"
    assert sorted(os.listdir(dst)) == ["big.bin"]
