"""Where a UFS file lives under a cache's ``data/``: deterministic, one to one, contained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alluxiojob.ufs.base import UfsError
from alluxiojob.worker.cache import CacheDir, IndexEntry
from alluxiojob.worker.layout import cache_name, cache_relpath, index_key, uri_of_relpath


def test_documented_examples() -> None:
    assert cache_relpath("s3://b/a") == "s3/b/a"
    assert cache_relpath("s3://b/a/x") == "s3/b/a%/x"
    assert cache_relpath("s3://b/a/x%y") == "s3/b/a%/x%25y"
    assert cache_relpath("s3://b/d/..") == "s3/b/d%/%2E%2E"
    assert cache_relpath("gs://b/.") == "gs/b/%2E"
    assert cache_relpath("file:///data/x") == "data/x"
    assert cache_relpath("/s3/x") == "s3%/x", "a local /s3 never meets the objects"
    assert cache_relpath("/s3%/x") == "s3%%/x"


def test_a_key_beside_keys_under_it() -> None:
    leaf, under = cache_relpath("s3://b/a"), cache_relpath("s3://b/a/b")
    assert not under.startswith(leaf + "/"), "the leaf 'a' is not the directory of 'a/b'"


def test_markers_and_escapes_are_refused() -> None:
    for uri in ("s3://b/a/", "s3://b", "s3:///k", "/a/../b", "file:///", "s3://../k"):
        with pytest.raises(UfsError) as caught:
            cache_relpath(uri)
        assert caught.value.reason == "INVALID_PATH"


def test_a_component_too_long_names_the_key() -> None:
    key = "d/" + "x" * 256
    with pytest.raises(UfsError) as caught:
        cache_relpath(f"s3://b/{key}")
    assert caught.value.reason == "INVALID_PATH"
    assert key in str(caught.value)


keys = st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/"),
                        min_size=1, max_size=8), min_size=1, max_size=4).map("/".join)


@given(keys, keys)
def test_distinct_keys_get_distinct_paths_and_never_nest_in_a_leaf(a: str, b: str) -> None:
    path_a, path_b = cache_relpath(f"s3://bk/{a}"), cache_relpath(f"s3://bk/{b}")
    assert (path_a == path_b) == (a == b)
    assert not path_b.startswith(path_a + "/"), "a cached file is never a directory"
    for part in path_a.split("/"):
        assert part not in ("", ".", "..")


def test_index_entries_compare_etag_for_objects_and_mtime_for_files() -> None:
    obj = IndexEntry(10, 1, "job", '"etag"', seq=7)
    assert obj.matches(10, 999, '"etag"'), "an object's mtime does not matter"
    assert not obj.matches(10, 1, '"other"')
    assert not obj.matches(11, 1, '"etag"')
    local = IndexEntry(10, 5, "job")
    assert local.matches(10, 5, "")
    assert not local.matches(10, 6, "")
    assert IndexEntry.unpack(obj.pack()) == obj


def test_the_layout_inverts_on_the_documented_examples() -> None:
    for uri in ("s3://b/a", "s3://b/a/x", "s3://b/a/x%y", "s3://b/d/..", "gs://b/.",
                "file:///data/x", "file:///s3/x", "file:///s3%/x", "file:///s3",
                "az://c/%00/%25/%2E", "s3://b/a\x00b/c"):
        assert uri_of_relpath(cache_relpath(uri)) == uri


def test_index_keys_are_canonical() -> None:
    assert index_key("/a//b/") == index_key("file:///a/b") == "file:///a/b"
    assert index_key("/s3/x") == "file:///s3/x"
    assert index_key("s3://b/k") == "s3://b/k"


@pytest.mark.parametrize("relpath", ["s3/b", "s3/b/a/x", "s3/b/a%/x%", "s3/b/x%41",
                                     "a//b", "x/../y", "s3%/.."])
def test_names_the_cache_never_gives_have_no_uri(relpath: str) -> None:
    with pytest.raises(ValueError, match=r"empty component|names no object|lacks its|not an "
                       r"encoded key|ends with a directory|'\.' or '\.\.'"):
        uri_of_relpath(relpath)


@given(keys)
def test_every_object_key_round_trips(key: str) -> None:
    uri = f"s3://bk/{key}"
    try:
        relpath = cache_relpath(uri)
    except UfsError:
        return  # a trailing '/', or a component too long: refused, never cached
    assert uri_of_relpath(relpath) == uri


local_names = st.lists(st.text(st.characters(blacklist_categories=("Cs",),
                                             blacklist_characters="/\x00"),
                               min_size=1, max_size=8).filter(lambda p: p not in (".", "..")),
                       min_size=1, max_size=4)


@given(local_names)
def test_every_local_path_round_trips(parts: list[str]) -> None:
    uri = "file:///" + "/".join(parts)
    assert uri_of_relpath(cache_relpath(uri)) == uri == index_key(uri)


def test_a_cached_file_is_opened_only_from_inside_data(tmp_path: Path) -> None:
    """The opened descriptor's path is checked: a symlinked directory planted in
    ``data/`` (or a linked file) is refused, though the names look right."""
    cache = CacheDir(tmp_path / "cache", 0)
    uri = "s3://bucket/dir/key.bin"
    path = Path(cache.data_path(uri))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"cached")
    fd, size = cache.open_cached(uri)
    os.close(fd)
    assert size == 6
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / path.name).write_bytes(b"secret")
    path.unlink()
    path.parent.rmdir()
    path.parent.symlink_to(outside)
    with pytest.raises(UfsError, match="resolves outside"):
        cache.open_cached(uri)
    path.parent.unlink()
    path.parent.mkdir()
    path.symlink_to(outside / path.name)
    with pytest.raises(OSError, match="symbolic links"):  # O_NOFOLLOW: ELOOP
        cache.open_cached(uri)


@given(st.sampled_from(["s3", "gs", "az", "file", "S3", "wasb", ""]),
       st.text(alphabet="ab.%/\x00", max_size=6), st.text(alphabet="ab.%/\x00 ", max_size=12))
@settings(max_examples=500, deadline=None)
def test_cache_name_is_cache_relpath_and_index_key_at_once(scheme: str, bucket: str,
                                                           key: str) -> None:
    """The worker computes both once per file (``cache_name``); they must be what
    ``cache_relpath`` and ``index_key`` say, or fail as they do."""
    uri = f"{scheme}://{bucket}/{key}" if scheme else f"/{bucket}/{key}"
    try:
        expected = (cache_relpath(uri), index_key(uri))
    except (UfsError, ValueError) as exc:
        with pytest.raises(type(exc)):
            cache_name(uri)
        return
    assert (cache_name(uri).relpath, cache_name(uri).key) == expected
