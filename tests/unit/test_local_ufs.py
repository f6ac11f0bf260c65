"""The local UFS walk: order, resume point, and loops through symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alluxiojob.ufs.local import LocalUfs, fsync_dir


def test_walk_is_sorted_and_resumes_strictly_after(tmp_path: Path) -> None:
    for name in ("b/2", "b/1", "a-c", "a/x", "a/y/z", "c"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    ufs = LocalUfs()
    uri = ufs.normalize(str(tmp_path))
    parts = [f.parts for f in ufs.walk(uri)]
    assert parts == [("a", "x"), ("a", "y", "z"), ("a-c",), ("b", "1"), ("b", "2"), ("c",)]
    for i, after in enumerate(parts):
        assert [f.parts for f in ufs.walk(uri, after)] == parts[i + 1:]


def test_symlink_loops_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "file").write_text("x")
    os.symlink("..", tmp_path / "d" / "up")
    os.symlink(".", tmp_path / "self")
    ufs = LocalUfs()
    files = list(ufs.walk(ufs.normalize(str(tmp_path))))
    assert [f.parts for f in files] == [("d", "file")]


def test_non_utf8_names_are_listed(tmp_path: Path) -> None:
    os.makedirs(tmp_path, exist_ok=True)
    with open(os.path.join(os.fsencode(tmp_path), b"\xff.bin"), "wb") as f:
        f.write(b"odd")
    ufs = LocalUfs()
    files = list(ufs.walk(ufs.normalize(str(tmp_path))))
    assert len(files) == 1
    assert files[0].parts == ("\udcff.bin",)


def test_fsync_dir_is_strict_unless_asked_for_best_effort(tmp_path: Path) -> None:
    fsync_dir(str(tmp_path))
    gone = str(tmp_path / "gone")
    with pytest.raises(FileNotFoundError):
        fsync_dir(gone)
    fsync_dir(gone, best_effort=True)  # skipped, as a local write's rename is
