"""Alluxio 2.x command names against a real cluster, and shell completion in real bash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, cached_files, make_tree, sha256

pytestmark = pytest.mark.timeout(300)


def _jobs(cluster: Cluster) -> list[dict[str, object]]:
    jobs: list[dict[str, object]] = json.loads(
        cluster.cli("job", "list", "--format", "JSON").stdout)["jobs"]
    return jobs


def test_distributed_load_with_2x_flags(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    sizes = make_tree(src, 30)
    result = cluster.cli("fs", "distributedLoad", "--replication", "2", "--batch-size", "7",
                         "--active-jobs", "10", str(src))
    assert "Job State: SUCCEEDED" in result.stdout, "2.x waits for the job by default"
    [job] = _jobs(cluster)
    assert job["type"] == "LOAD"
    assert job["options"]["replicas"] == 2  # type: ignore[index]
    assert job["options"]["batch_size"] == 7  # type: ignore[index]
    copies = cached_files(cluster)
    assert all(len(copies[path]) == 2 for path in sizes)

    refused = cluster.cli("fs", "distributedLoad", "--hosts", "w1,w2", str(src), check=False)
    assert refused.returncode == 2
    assert "--hosts not supported" in refused.stderr
    assert len(_jobs(cluster)) == 1, "a refused command submits nothing"


def test_distributed_load_of_an_index_file(cluster: Cluster, tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    make_tree(first, 5)
    make_tree(second, 6)
    index = tmp_path / "paths.txt"
    index.write_text(f"{first}\n\n{second}\n")
    result = cluster.cli("fs", "distributedLoad", "--index", "--async", str(index))
    assert result.stdout.count("Submitted LOAD job") == 2
    jobs = {job["path"]: job["id"] for job in _jobs(cluster)}
    assert set(jobs) == {first.as_uri(), second.as_uri()}
    for job_id in jobs.values():
        cluster.wait_state(str(job_id), "SUCCEEDED")

    missing = cluster.cli("fs", "distributedLoad", "--index", str(tmp_path / "nope.txt"),
                          check=False)
    assert missing.returncode == 2
    assert "cannot read the index file" in missing.stderr


def test_distributed_cp_overwrites_by_default_and_mv_moves(cluster: Cluster,
                                                          tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(3000))
    (src / "sub" / "b.bin").write_bytes(os.urandom(5000))
    dst = tmp_path / "dst"
    (dst / "sub").mkdir(parents=True)
    (dst / "sub" / "b.bin").write_bytes(b"stale")
    kept = tmp_path / "kept"
    (kept / "sub").mkdir(parents=True)
    (kept / "sub" / "b.bin").write_bytes(b"keep me")

    cluster.cli("fs", "distributedCp", str(src), str(dst))
    assert sha256(dst / "sub" / "b.bin") == sha256(src / "sub" / "b.bin"), \
        "2.x's distributedCp overwrites by default"
    cluster.cli("fs", "distributedCp", "--overwrite", "false", str(src), str(kept))
    assert (kept / "sub" / "b.bin").read_bytes() == b"keep me"
    assert sha256(kept / "a.bin") == sha256(src / "a.bin")
    bad = cluster.cli("fs", "distributedCp", "--overwrite", "maybe", str(src), str(kept),
                      check=False)
    assert bad.returncode == 2
    assert "--overwrite must be true or false" in bad.stderr

    digests = {p.name: sha256(p) for p in src.rglob("*.bin")}
    moved = tmp_path / "moved"
    cluster.cli("fs", "distributedMv", str(src), str(moved))
    assert {p.name: sha256(p) for p in moved.rglob("*.bin")} == digests
    assert not list(src.rglob("*.bin")), "distributedMv removes the sources"


def test_fsadmin_report_jobservice_is_report_jobservice(cluster: Cluster,
                                                        tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    make_tree(src, 4)
    cluster.cli("job", "load", "--path", str(src), "--wait")
    ours = json.loads(cluster.cli("report", "jobservice", "--format", "JSON").stdout)
    theirs = json.loads(cluster.cli("fsadmin", "report", "jobservice", "--format",
                                    "JSON").stdout)
    assert theirs["counts"] == ours["counts"]
    assert theirs["counts"]["SUCCEEDED"] == 1
    text = cluster.cli("fsadmin", "report", "jobservice").stdout
    assert "Status: SUCCEEDED  Count: 1" in text
    assert text.count("Worker: ") == 2


def test_bash_completion_installs_and_completes(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    home = tmp_path / "home"
    home.mkdir()
    bindir = Path(sys.executable).parent
    env = dict(os.environ, HOME=str(home), PATH=f"{bindir}:{os.environ['PATH']}")
    assert (bindir / "alluxiojob").exists(), "the alluxiojob entry point is installed"
    # Typed in bash: the command's parent is the shell it detects. (A lone command
    # would be exec'd by "bash -c", leaving no shell to detect, hence the "; true".)
    installed = subprocess.run([bash, "-c", "alluxiojob --install-completion; true"],
                               env=env, capture_output=True, text=True, timeout=60)
    assert "bash completion installed" in installed.stdout, installed.stdout + installed.stderr
    assert "completion" in (home / ".bashrc").read_text()

    def complete(*words: str) -> list[str]:
        script = ("source ~/.bashrc; COMP_WORDS=(" + " ".join(f"'{w}'" for w in words)
                  + f"); COMP_CWORD={len(words) - 1}; _alluxiojob_completion alluxiojob; "
                  'printf "%s\\n" "${COMPREPLY[@]}"')
        done = subprocess.run([bash, "-c", script], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("alluxiojob", "fs", "distributed") == [
        "distributedLoad", "distributedCp", "distributedMv"]
    assert complete("alluxiojob", "fsadmin", "report", "j") == ["jobservice"]
    assert "--wait" in complete("alluxiojob", "job", "load", "--wa")
