"""COPY and MOVE between UFS locations, spread over real workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, make_tree, sha256

pytestmark = pytest.mark.timeout(300)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in root.rglob("*") if p.is_file()}


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
