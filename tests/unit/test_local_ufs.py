"""The local UFS walk: order, resume point, depth, and loops through symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alluxiojob.ufs.base import UfsError, UfsFile, listed_file
from alluxiojob.ufs.local import LocalUfs, fsync_dir
from tests.deep_trees import make_chain, removed_after


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


def test_a_walked_file_is_the_ufs_file_of_its_uri_parts_and_stat(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("12345")
    (tmp_path / "g").write_text("1")
    ufs = LocalUfs()
    uri = ufs.normalize(str(tmp_path))
    walked = list(ufs.walk(uri))
    expected = [UfsFile(f"{uri.rstrip('/')}/{'/'.join(parts)}", parts, size,
                        os.stat(tmp_path.joinpath(*parts)).st_mtime_ns)
                for parts, size in ((("a", "b", "f"), 5), (("g",), 1))]
    assert walked == expected
    assert [type(f) for f in walked] == [UfsFile, UfsFile]
    assert [hash(f) for f in walked] == [hash(f) for f in expected]
    assert [repr(f) for f in walked] == [repr(f) for f in expected]


def test_listed_file_is_a_frozen_ufs_file() -> None:
    made = listed_file("file:///x/y", ("y",), 3, 4, "v")
    assert made == UfsFile("file:///x/y", ("y",), 3, 4, "v")
    assert listed_file("file:///x/y", ("y",), 3, 4) == UfsFile("file:///x/y", ("y",), 3, 4)
    with pytest.raises(AttributeError):
        made.length = 5  # type: ignore[misc]


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


def test_a_deep_chain_is_walked_and_resumed(tmp_path: Path) -> None:
    with removed_after(tmp_path / "d"):
        make_chain(tmp_path, 1500)  # deeper than Python's recursion limit
        (tmp_path / "e").write_text("after the chain")
        ufs = LocalUfs()
        uri = ufs.normalize(str(tmp_path))
        files = list(ufs.walk(uri))
        assert [f.parts for f in files] == [("d",) * 1500 + ("leaf",), ("e",)]
        assert Path(files[0].uri.removeprefix("file://")).read_bytes() == b"deep"
        assert [f.parts for f in ufs.walk(uri, files[0].parts)] == [("e",)]
        assert [f.parts for f in ufs.walk(uri, ("d",) * 700)] == [f.parts for f in files]


def test_a_tree_deeper_than_any_path_fails_by_name(tmp_path: Path) -> None:
    with removed_after(tmp_path / "d"):
        make_chain(tmp_path, 5000)  # 10,000 bytes of path: past PATH_MAX
        ufs = LocalUfs()
        with pytest.raises(UfsError, match="name too long") as info:
            list(ufs.walk(ufs.normalize(str(tmp_path))))
        assert info.value.reason == "IO_ERROR"


names = st.sampled_from(["a", "a-b", "b", "b.c", "é", "z"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(names, min_size=1, max_size=4).map(tuple), max_size=12))
def test_walk_order_is_the_order_of_parts(tmp_path_factory: pytest.TempPathFactory,
                                          paths: list[tuple[str, ...]]) -> None:
    root = tmp_path_factory.mktemp("tree")
    made: list[tuple[str, ...]] = []
    for parts in paths:
        # A tree cannot hold a file and a directory of one name: first come, first kept.
        if any(p[: len(parts)] == parts or parts[: len(p)] == p for p in made):
            continue
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("/".join(parts))
        made.append(parts)
    ufs = LocalUfs()
    uri = ufs.normalize(str(root))
    listed = [f.parts for f in ufs.walk(uri)]
    assert listed == sorted(made)
    for i, after in enumerate(listed):
        assert [f.parts for f in ufs.walk(uri, after)] == listed[i + 1:]
