"""The copier's LOAD path in a pool process, run in this process on real files: small
files copied through memory with the checksum of the bytes read, sources opened and read
ahead by ``copy_shard``, each file still checked against what its open saw."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from alluxiojob.core.reasons import Reason
from alluxiojob.worker.checksum import Checksum, file_checksum
from alluxiojob.worker.copier import LocalCopy
from alluxiojob.worker.smallcopy import AHEAD, SMALL, _prefetch, copy_piece, copy_shard

pytestmark = pytest.mark.timeout(60)


def _job(tmp_path: Path, name: str) -> LocalCopy:
    return LocalCopy(str(tmp_path / "src" / name), str(tmp_path / "cache" / "tmp" / name),
                     str(tmp_path / "cache" / "data" / "d" / name))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_shard_of_files_of_every_size_is_cached_whole_private_and_checksummed(
        tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    sizes = [0, 1, 4096, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL]
    contents = {}
    for i, size in enumerate(sizes):
        contents[f"f{i}"] = os.urandom(size)
        (tmp_path / "src" / f"f{i}").write_bytes(contents[f"f{i}"])
    jobs = [_job(tmp_path, name) for name in contents]
    outcomes = copy_shard(jobs)
    for job, outcome, (name, data) in zip(jobs, outcomes, contents.items(), strict=True):
        assert outcome.ok, outcome.message
        assert (outcome.bytes, outcome.length) == (len(data), len(data))
        final = Path(job.final)
        assert final.read_bytes() == data, name
        expected = Checksum()
        expected.update(data)
        assert outcome.checksum == expected.hexdigest() == file_checksum(job.final)[0]
        assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "cache" / "data" / "d").stat().st_mode) == 0o700
    assert os.listdir(tmp_path / "cache" / "tmp") == [], "every tmp file was renamed"


def test_a_bad_source_in_a_long_shard_fails_alone_and_no_descriptor_leaks(
        tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    names = [f"f{i:03d}" for i in range(3 * AHEAD)]
    for name in names:
        (tmp_path / "src" / name).write_bytes(name.encode() * 100)
    (tmp_path / "src" / names[5]).unlink()
    os.unlink(tmp_path / "src" / names[AHEAD + 1])
    os.mkfifo(tmp_path / "src" / names[AHEAD + 1])  # opened ahead: must never block
    before = _open_fds()
    outcomes = copy_shard([_job(tmp_path, name) for name in names])
    assert _open_fds() == before
    assert len(outcomes) == len(names)
    for name, outcome in zip(names, outcomes, strict=True):
        if name == names[5]:
            assert (outcome.ok, outcome.reason) == (False, Reason.UFS_NOT_FOUND)
        elif name == names[AHEAD + 1]:
            assert (outcome.ok, outcome.reason) == (False, Reason.INVALID_PATH)
        else:
            assert outcome.ok, outcome.message
            assert (tmp_path / "cache" / "data" / "d" / name).read_bytes() == \
                name.encode() * 100


def _grow(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"more")


def _shrink(path: Path) -> None:
    os.truncate(path, 10)


def _rewrite_same_size(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(bytes(reversed(data)))
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize("change", [_grow, _shrink, _rewrite_same_size])
def test_a_source_that_changes_after_it_was_opened_ahead_is_not_cached(
        tmp_path: Path, change: Callable[[Path], None]) -> None:
    (tmp_path / "src").mkdir()
    src = tmp_path / "src" / "f"
    src.write_bytes(os.urandom(4096))
    job = _job(tmp_path, "f")
    opened = _prefetch(job)
    change(src)
    outcome = copy_piece(job, opened)
    assert (outcome.ok, outcome.reason) == (False, Reason.UFS_CHANGED)
    assert not os.path.lexists(job.final)
    assert not os.path.lexists(job.tmp)
