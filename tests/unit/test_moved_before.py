"""A MOVE sent again finds its source gone: the file is done only if its destination
holds a verified copy (``transfer.moved_before``). Real files in a temp dir."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.worker.transfer import moved_before

DATA = b"moved bytes " * 100


def _check(tmp_path: Path, etag: str, length: int = len(DATA)) -> bool:
    outcome = moved_before(f"file://{tmp_path / 'src'}", f"file://{tmp_path / 'dst'}",
                           length, etag, UfsSettings())
    return outcome is not None and outcome.ok and outcome.bytes == length


def test_a_copy_of_the_listed_length_and_md5_counts_as_moved(tmp_path: Path) -> None:
    (tmp_path / "dst").write_bytes(DATA)
    md5 = hashlib.md5(DATA, usedforsecurity=False).hexdigest()
    assert _check(tmp_path, f'"{md5}"')
    assert _check(tmp_path, "")  # a local source: its length is what can be checked
    assert _check(tmp_path, '"abc-3"')  # a multipart ETag stands for no MD5


def test_anything_else_is_not_a_move_done(tmp_path: Path) -> None:
    assert not _check(tmp_path, "")  # neither source nor destination
    (tmp_path / "dst").write_bytes(DATA)
    assert not _check(tmp_path, "", length=len(DATA) + 1)  # another length
    other = hashlib.md5(b"x" * len(DATA), usedforsecurity=False).hexdigest()
    assert not _check(tmp_path, f'"{other}"')  # same length, other bytes
    (tmp_path / "src").write_bytes(DATA)
    assert not _check(tmp_path, "")  # the source is still there: not moved
    os.unlink(tmp_path / "src")
    os.rename(tmp_path / "dst", tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "dst")
    assert not _check(tmp_path, "")  # a symlink is no copy
