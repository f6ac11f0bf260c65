"""When a MOVE may remove its source, and what one transfer does with a second name."""

from __future__ import annotations

import os
from pathlib import Path

from alluxiojob.worker.copier import LocalCopy, safe_to_remove_source, transfer_shard


def _pair(tmp_path: Path, data: bytes = b"payload") -> tuple[Path, Path]:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(data)
    dst.write_bytes(data)
    return src, dst


def test_a_verified_copy_allows_removal(tmp_path: Path) -> None:
    src, dst = _pair(tmp_path)
    assert safe_to_remove_source(str(src), str(dst), os.stat(src), written=None) is None
    info = os.stat(dst)
    written = (info.st_dev, info.st_ino)
    assert safe_to_remove_source(str(src), str(dst), os.stat(src), written=written) is None


def test_second_names_links_and_changes_keep_the_source(tmp_path: Path) -> None:
    src, dst = _pair(tmp_path)
    before = os.stat(src)
    hard = tmp_path / "hard"
    os.link(src, hard)
    link = tmp_path / "link"
    os.symlink(src, link)
    assert "same file" in str(safe_to_remove_source(str(src), str(hard), before, None))
    assert "not a regular file" in str(safe_to_remove_source(str(src), str(link), before, None))
    other = tmp_path / "other"
    other.write_bytes(b"payloaX")
    assert "differs" in str(safe_to_remove_source(str(src), str(other), before, None))
    info = os.stat(dst)
    assert "replaced" in str(safe_to_remove_source(str(src), str(dst), before,
                                                   (info.st_dev, info.st_ino + 1)))
    src.write_bytes(b"payload, longer now")
    assert "changed" in str(safe_to_remove_source(str(src), str(dst), before, None))
    assert safe_to_remove_source(str(tmp_path / "gone"), str(dst), before, None) is not None


def test_a_move_onto_its_own_second_name_changes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"only copy")
    link = tmp_path / "dst.bin"
    os.symlink(src, link)
    for overwrite in (False, True):
        [outcome] = transfer_shard([LocalCopy(str(src), str(tmp_path / ".tmp"), str(link))],
                                   move=True, overwrite=overwrite)
        assert not outcome.ok
        assert outcome.reason == "INVALID_PATH"
        assert src.read_bytes() == b"only copy"
        assert link.is_symlink()


def test_a_move_writes_syncs_renames_then_removes(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(10_000))
    data = src.read_bytes()
    dst = tmp_path / "out" / "dst.bin"
    dst.parent.mkdir()
    [outcome] = transfer_shard([LocalCopy(str(src), str(dst.parent / ".dst.tmp"), str(dst))],
                               move=True, overwrite=False)
    assert outcome.ok
    assert dst.read_bytes() == data
    assert not src.exists()
    assert not (dst.parent / ".dst.tmp").exists()
