"""COPY/MOVE temp file names, and the sweep of those a dead run of the same worker left:
exact names only, regular files only, never another worker's, the current run's or a
live writer's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from alluxiojob.ufs import tmpnames
from alluxiojob.ufs.local import LocalUfs
from alluxiojob.ufs.tmpnames import TmpName, TmpOwner, parse, retarget, sweep, worker_tag

pytestmark = pytest.mark.timeout(60)

WORKER = "0123abcd"


def _temp(directory: Path, final: str, owner: TmpOwner, data: bytes = b"half") -> Path:
    path = Path(TmpName.new(owner).beside(str(directory / final)))
    path.write_bytes(data)
    return path


@contextmanager
def _held_by_another_process(path: Path) -> Iterator[None]:
    """A live writer: a real process holding the temp file's lock until it is told to go."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys\n"
         "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n",
         str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
        assert holder.stdout is not None
        holder.stdout.close()


def test_names_are_built_and_recognised_by_one_helper(tmp_path: Path) -> None:
    owner = TmpOwner.new_run(WORKER)
    name = TmpName.new(owner)
    path = name.beside(str(tmp_path / "a.b.bin"))
    assert os.path.dirname(path) == str(tmp_path)
    base = os.path.basename(path)
    assert base.startswith(f".a.b.bin.alluxiojob-{WORKER}-{owner.run}-{os.getpid()}-")
    assert parse(base) == name
    assert TmpName.new(owner) != name, "every write of a process gets its own name"
    moved = retarget(path, str(tmp_path / "sub" / "other.bin"))
    assert moved == name.beside(str(tmp_path / "sub" / "other.bin"))
    assert parse(os.path.basename(moved)) == name

    # A name too long for the file system keeps the start of the file's name.
    long_final = str(tmp_path / ("é" * 120 + ".bin"))  # 244 bytes
    long_tmp = os.path.basename(name.beside(long_final))
    assert len(os.fsencode(long_tmp)) == tmpnames.NAME_MAX
    assert parse(long_tmp) == name
    Path(tmp_path / long_tmp).write_bytes(b"fits")

    for foreign in (
        "a.bin",
        ".a.bin.alluxiojob-1234-17",  # an older version's name
        f"a.bin.alluxiojob-{WORKER}-{owner.run}-12-1",  # not hidden
        f"..alluxiojob-{WORKER}-{owner.run}-12-1",  # no file name
        f".a.bin.alluxiojob-{WORKER}-{owner.run}-012-1",  # a leading zero
        f".a.bin.alluxiojob-{WORKER}-{owner.run}-12-01",
        f".a.bin.alluxiojob-{WORKER.upper()}-{owner.run}-12-1",
        f".a.bin.alluxiojob-{WORKER}-{owner.run}-12-1.part",
        f".a.bin.alluxiojob-{WORKER}-{owner.run}-12",
    ):
        assert parse(foreign) is None, foreign
    with pytest.raises(ValueError, match="not a temp file name"):
        retarget(str(tmp_path / ".a.bin.tmp"), str(tmp_path / "b.bin"))
    with pytest.raises(ValueError, match="8 hex digits"):
        TmpOwner("xyz", owner.run)


def test_the_sweep_removes_only_a_dead_run_of_this_workers_temp_files(tmp_path: Path) -> None:
    earlier = TmpOwner.new_run(WORKER)
    now = TmpOwner.new_run(WORKER)
    assert now.run != earlier.run
    (tmp_path / "d.bin").write_bytes(b"the destination")
    dead = _temp(tmp_path, "d.bin", earlier)
    dead_other_file = _temp(tmp_path, "e.bin", earlier)
    live = _temp(tmp_path, "d.bin", earlier)
    current = _temp(tmp_path, "d.bin", now)
    other_host = _temp(tmp_path, "d.bin", TmpOwner.new_run("fedc9876"))
    old_format = tmp_path / ".d.bin.alluxiojob-4242-7"
    old_format.write_bytes(b"old")
    near_miss = tmp_path / (os.path.basename(TmpName.new(earlier).beside("d.bin")) + "~")
    near_miss.write_bytes(b"near")
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"not ours")
    link = Path(TmpName.new(earlier).beside(str(tmp_path / "d.bin")))
    os.symlink(target, link)
    a_dir = Path(TmpName.new(earlier).beside(str(tmp_path / "d.bin")))
    a_dir.mkdir()

    with _held_by_another_process(live):
        removed = sweep(str(tmp_path), now)
        assert live.exists(), "a temp file whose writer lives is kept"
    assert sorted(removed) == sorted([str(dead), str(dead_other_file)])
    assert not dead.exists()
    for kept in (current, other_host, old_format, near_miss, a_dir, tmp_path / "d.bin"):
        assert kept.exists(), kept
    assert link.is_symlink()
    assert target.read_bytes() == b"not ours"

    # Its writer gone, the live one is dead too; this process swept here already, so
    # it takes the next run (a restarted worker) to find it, with the run before.
    assert sweep(str(tmp_path), now) == []
    later = TmpOwner.new_run(WORKER)
    assert sorted(sweep(str(tmp_path), later)) == sorted([str(live), str(current)])
    assert other_host.exists()
    assert old_format.exists()
    assert sweep(str(tmp_path / "missing"), later) == []


def test_a_local_write_sweeps_its_directory_first(tmp_path: Path) -> None:
    earlier = TmpOwner.new_run(WORKER)
    dead = _temp(tmp_path, "f.bin", earlier)
    stranger = _temp(tmp_path, "f.bin", TmpOwner.new_run("fedc9876"))
    ufs = LocalUfs()
    written = ufs.write(f"file://{tmp_path}/f.bin", [b"abc", b"def"], 6, overwrite=False,
                        tmp_owner=TmpOwner.new_run(WORKER))
    assert written.length == 6
    assert (tmp_path / "f.bin").read_bytes() == b"abcdef"
    assert not dead.exists()
    assert stranger.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["f.bin", stranger.name])


def test_the_worker_tag_is_kept_in_the_cache_dir(tmp_path: Path) -> None:
    tag = worker_tag(str(tmp_path))
    assert (tmp_path / "worker-tag").read_text() == tag + "\n"
    assert worker_tag(str(tmp_path)) == tag
    TmpOwner.new_run(tag)  # a valid owner
    (tmp_path / "worker-tag").write_text("garbage\n")
    fresh = worker_tag(str(tmp_path))
    assert fresh != "garbage"
    assert worker_tag(str(tmp_path)) == fresh
