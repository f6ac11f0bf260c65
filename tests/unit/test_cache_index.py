"""The cache index on a real rocksdict directory: LRU order, totals, pins and metadata
records live in it, survive a reopen, and startup checks data/ against it."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest
from rocksdict import Options, Rdict

from alluxiojob.worker.cache import Cache, CacheDir, IndexEntry, MetadataRecord

KiB = 1024


def _put(d: CacheDir, uri: str, size: int, job: str = "job-a") -> None:
    """A file as a load leaves it: data in place, then the index entry."""
    path = d.data_path(uri)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_bytes(b"x" * size)
    d.commit([(uri, IndexEntry(size, 1, job), 0)])


def _reopen(d: CacheDir) -> CacheDir:
    d.close()
    again = CacheDir(d.root, d.capacity)
    again.recover()
    return again


def test_lru_order_totals_and_pins_survive_a_reopen(tmp_path: Path) -> None:
    d = CacheDir(tmp_path / "c", 0)
    d.recover()
    for name in ("a", "b", "c"):
        _put(d, f"file:///src/{name}", KiB)
    d.touch(["file:///src/a"])  # now b is the least recently used, then c, then a
    d.index.save_pins({"job-a": 1234.5})
    d = _reopen(d)
    assert (d.files, d.used) == (3, 3 * KiB)
    victims = d.index.victims(2 * KiB, set())
    assert victims is not None
    assert [v.key for v in victims] == ["file:///src/b", "file:///src/c"]
    assert d.index.pins() == {"job-a": 1234.5}
    assert d.evict(victims) == 2 * KiB
    d = _reopen(d)
    assert (d.files, d.used) == (1, KiB)
    assert not os.path.exists(d.data_path("file:///src/b"))
    assert d.lookup("file:///src/a") is not None


def test_pinned_jobs_are_never_victims(tmp_path: Path) -> None:
    d = CacheDir(tmp_path / "c", 0)
    d.recover()
    _put(d, "file:///old/1", KiB, job="running")
    _put(d, "file:///old/2", KiB, job="done")
    victims = d.index.victims(KiB, {"running"})
    assert victims is not None
    assert [v.key for v in victims] == ["file:///old/2"]
    assert d.index.victims(2 * KiB, {"running"}) is None


def test_committing_a_file_again_replaces_it(tmp_path: Path) -> None:
    d = CacheDir(tmp_path / "c", 0)
    d.recover()
    _put(d, "file:///f", KiB)
    _put(d, "/f", 2 * KiB)  # the same file under another spelling
    assert (d.files, d.used) == (1, 2 * KiB)
    victims = d.index.victims(1, set())
    assert victims is not None
    assert [v.key for v in victims] == ["file:///f"], "one access entry"


def test_startup_removes_unindexed_files_and_symlinks(tmp_path: Path) -> None:
    d = CacheDir(tmp_path / "c", 0)
    d.recover()
    _put(d, "file:///keep/me", KiB)
    _put(d, "s3://bucket/dir/obj", KiB)
    _put(d, "file:///linked", KiB)
    stray = d.data / "stray" / "file"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"?")
    odd = d.data / "s3" / "bucket" / "not%encoded"
    odd.write_bytes(b"?")
    os.unlink(d.data_path("file:///linked"))
    os.symlink("/etc/passwd", d.data_path("file:///linked"))
    (d.tmp / "half").write_bytes(b"partial")
    d.close()
    again = CacheDir(d.root, 0)
    files, removed, links = again.recover()
    assert (files, removed) == (2, 2)
    assert links == [again.data_path("file:///linked")]
    assert not stray.exists()
    assert not odd.exists()
    assert not list(again.tmp.iterdir())
    assert again.lookup("file:///linked") is None, "a symlink's entry goes with it"
    assert again.lookup("s3://bucket/dir/obj") is not None
    assert (again.files, again.used) == (2, 2 * KiB)


def test_metadata_records_are_not_cached_files(tmp_path: Path) -> None:
    d = CacheDir(tmp_path / "c", 0)
    d.recover()
    _put(d, "file:///data/cached", KiB)
    d.record_metadata([("file:///data/listed", MetadataRecord(5 * KiB, 7, "", "job-m", 1.0))])
    assert d.lookup("file:///data/listed") is None
    assert (d.files, d.used) == (1, KiB)
    assert [k for k, _ in d.under("file:///data")] == ["file:///data/cached"]
    assert list(d.metadata_under("file:///data")) == [("file:///data/listed", 5 * KiB)]
    d = _reopen(d)
    record = d.metadata("file:///data/listed")
    assert record is not None
    assert record.matches(5 * KiB, 7, "")
    assert d.remove(["file:///data/listed"]) == [], "no cached data was freed"
    assert d.metadata("file:///data/listed") is None, "FREE drops the record"


def test_under_is_a_path_prefix_not_a_string_prefix(tmp_path: Path) -> None:
    d = CacheDir(tmp_path / "c", 0)
    d.recover()
    for uri in ("s3://k/a/b", "s3://k/a/b/c", "s3://k/a/b-c", "s3://k/a/bc",
                "s3://k/a/b/d/e"):
        _put(d, uri, 1)  # an object store holds a key beside keys under it
    assert sorted(k for k, _ in d.under("s3://k/a/b")) == [
        "s3://k/a/b", "s3://k/a/b/c", "s3://k/a/b/d/e"]
    assert [k for k, _ in d.under("s3://k/a/b/c")] == ["s3://k/a/b/c"]


def test_under_goes_on_after_a_key(tmp_path: Path) -> None:
    """A page of ``/api/v1/location`` starts past the last key of the one before."""
    d = CacheDir(tmp_path / "c", 0)
    d.recover()
    for uri in ("s3://k/a/b", "s3://k/a/b/c", "s3://k/a/b-c", "s3://k/a/b/d/e"):
        _put(d, uri, 1)

    def after(key: str) -> list[str]:
        return [k for k, _ in d.under("s3://k/a/b", key)]

    assert after("") == ["s3://k/a/b", "s3://k/a/b/c", "s3://k/a/b/d/e"]
    assert after("s3://k/a/b") == ["s3://k/a/b/c", "s3://k/a/b/d/e"]
    assert after("s3://k/a/b/c") == ["s3://k/a/b/d/e"]
    assert after("s3://k/a/b/cz") == ["s3://k/a/b/d/e"]  # a key that is not there
    assert after("s3://k/a/b/d/e") == []
    assert after("s3://k/a/a") == ["s3://k/a/b", "s3://k/a/b/c", "s3://k/a/b/d/e"]
    assert after("s3://z") == []


def test_entries_of_the_old_format_are_converted_in_access_order(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "index").mkdir(parents=True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    old = Rdict(str(root / "index"), options=options)
    for name, last_access in (("new", 300.0), ("old", 100.0), ("mid", 200.0)):
        old[f"file:///d/{name}".encode()] = msgpack.packb([KiB, 5, last_access, "j", ""])
        path = root / "data" / "d" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * KiB)
    old.close()
    d = CacheDir(root, 0)
    files, removed, _ = d.recover()
    assert (files, removed, d.used) == (3, 0, 3 * KiB)
    victims = d.index.victims(3 * KiB, set())
    assert victims is not None
    assert [v.key for v in victims] == ["file:///d/old", "file:///d/mid", "file:///d/new"]
    entry = d.lookup("file:///d/mid")
    assert entry is not None
    assert entry.matches(KiB, 5, "")


@pytest.mark.parametrize("reserved_first", [True, False])
async def test_cache_full_counts_and_names_reservations(tmp_path: Path,
                                                        reserved_first: bool) -> None:
    cache = Cache([tmp_path / "c"], [10 * KiB])
    await cache.recover()
    d = cache.dirs[0]
    _put(d, "file:///pinned", 4 * KiB, job="running")
    assert await cache.reserve("file:///in-flight", 4 * KiB, {"running"}) is None
    refusal = await cache.reserve("file:///late", 4 * KiB, {"running"})
    assert refusal is not None
    assert f"no room for {4 * KiB} bytes in {d.root}" in refusal
    assert f"{4 * KiB} bytes cached + {4 * KiB} reserved by loads in flight, of {10 * KiB}" \
        in refusal
    cache.release("file:///in-flight", 4 * KiB)
    assert await cache.reserve("file:///late", 4 * KiB, {"running"}) is None
    cache.close()


async def test_eviction_makes_room_from_the_least_recently_used(tmp_path: Path) -> None:
    cache = Cache([tmp_path / "c"], [10 * KiB])
    await cache.recover()
    d = cache.dirs[0]
    for name in ("1", "2", "3"):
        _put(d, f"file:///f/{name}", 3 * KiB, job="old")
    assert await cache.reserve("file:///g", 5 * KiB, set()) is None
    assert d.lookup("file:///f/1") is None
    assert d.lookup("file:///f/2") is None
    assert d.lookup("file:///f/3") is not None
    assert (d.files, d.used, d.reserved) == (1, 3 * KiB, 5 * KiB)
    cache.close()
