"""Checksums of cached files, ETag comparison, index entries old and new, and the scrub,
on a real cache directory (rocksdict) with no worker around it."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import msgpack
import pytest

from alluxiojob.ufs.base import UfsError
from alluxiojob.worker.cache import Cache, CacheDir, IndexEntry
from alluxiojob.worker.checksum import (
    Checksum,
    Md5Check,
    checked_against_etag,
    fd_checksum,
    file_checksum,
    md5_of_etag,
    read_back,
)
from alluxiojob.worker.copier import LocalCopy, copy_one, preallocate
from alluxiojob.worker.index import FILE
from alluxiojob.worker.scrub import examine, scrub


def _no_load(_path: str) -> bool:
    return False


# ---------------------------------------------------------------------- checksums
def test_the_checksum_is_crc32c_as_s3_computes_it() -> None:
    running = Checksum()
    running.update(b"1234")
    running.update(memoryview(b"56789"))
    assert running.hexdigest() == "crc32c:e3069283"  # the CRC32C check value
    # S3's x-amz-checksum-crc32c is the same number, base64 of its 4 bytes big-endian.
    assert base64.b64encode(running.value.to_bytes(4, "big")).decode() == "4waSgw=="


@pytest.mark.parametrize(("etag", "md5"), [
    ('"9e107d9d372bb6826bd81d3542a419d6"', "9e107d9d372bb6826bd81d3542a419d6"),
    ("9E107D9D372BB6826BD81D3542A419D6", "9e107d9d372bb6826bd81d3542a419d6"),
    ('"9e107d9d372bb6826bd81d3542a419d6-3"', None),  # multipart: not a content MD5
    ('"0x8DC1A2B3C4D5E6F"', None),  # Azure
    ("", None),
    ('"abc"', None),
])
def test_only_a_single_part_etag_is_a_content_md5(etag: str, md5: str | None) -> None:
    assert md5_of_etag(etag) == md5


def test_md5_check_against_an_etag() -> None:
    data = b"the quick brown fox"
    etag = '"' + hashlib.md5(data).hexdigest() + '"'
    good = Md5Check(etag)
    good.update(data)
    assert good.mismatch("s3://b/k") is None
    bad = Md5Check(etag)
    bad.update(data[:-1] + b"X")
    message = bad.mismatch("s3://b/k")
    assert message is not None
    assert "s3://b/k" in message
    assert "do not match its ETag" in message
    multipart = Md5Check('"' + "0" * 32 + '-2"')
    multipart.update(b"anything")
    assert multipart.mismatch("s3://b/k") is None, "nothing to compare with"


def test_a_stream_is_checked_against_its_etag_at_its_end() -> None:
    data = [b"abc", b"def"]
    etag = '"' + hashlib.md5(b"abcdef").hexdigest() + '"'
    assert list(checked_against_etag(iter(data), etag, "s3://b/k")) == data
    assert list(checked_against_etag(iter(data), "", "/local")) == data
    wrong = checked_against_etag(iter([b"abc", b"dXf"]), etag, "s3://b/k")
    assert next(wrong) == b"abc"
    assert next(wrong) == b"dXf"
    with pytest.raises(UfsError, match="do not match its ETag") as caught:
        next(wrong)
    assert caught.value.reason == "IO_ERROR"


def test_read_back_finds_a_short_file_and_an_md5_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(5000)
    path.write_bytes(data)
    digest, problem = read_back(str(path), 5000, '"' + hashlib.md5(data).hexdigest() + '"',
                                "s3://b/f")
    assert problem is None
    assert (digest, 5000) == file_checksum(str(path))
    _digest, short = read_back(str(path), 6000, "", "s3://b/f")
    assert short is not None
    assert "5000 bytes after writing 6000" in short
    _digest, wrong = read_back(str(path), 5000, '"' + "0" * 32 + '"', "s3://b/f")
    assert wrong is not None
    assert "ETag" in wrong


def test_a_local_copy_is_read_back_private_and_its_checksum_right(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)
    src.chmod(0o644)
    final = tmp_path / "cache" / "data" / "src.bin"
    previous = os.umask(0)
    try:
        outcome = copy_one(LocalCopy(str(src), str(tmp_path / "tmp.bin"), str(final)))
        preallocate(str(tmp_path / "big.tmp"), 10)
    finally:
        os.umask(previous)
    assert outcome.ok, outcome.message
    expected = Checksum()
    expected.update(data)
    assert outcome.checksum == expected.hexdigest()
    assert stat.S_IMODE(final.stat().st_mode) == 0o600, "whatever the umask"
    assert stat.S_IMODE(final.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "big.tmp").stat().st_mode) == 0o600


def test_a_transfer_keeps_the_source_mode_never_wider(tmp_path: Path) -> None:
    src = tmp_path / "secret"
    src.write_bytes(b"PRIVATE KEY")
    src.chmod(0o640)
    dst = tmp_path / "out" / "secret"
    previous = os.umask(0)
    try:
        outcome = copy_one(LocalCopy(str(src), str(tmp_path / "out.tmp"), str(dst),
                                     transfer=True))
    finally:
        os.umask(previous)
    assert outcome.ok
    assert outcome.checksum == "", "a transfer is not a cached file"
    assert stat.S_IMODE(dst.stat().st_mode) == 0o640


# ---------------------------------------------------------------------- index entries
def test_an_entry_without_a_checksum_still_reads(tmp_path: Path) -> None:
    """An F record of an older version: five fields, no checksum."""
    old = msgpack.packb([300, 7, 12, "job-a", '"etag"'], use_bin_type=True)
    entry = IndexEntry.unpack(old)
    assert entry == IndexEntry(300, 7, "job-a", '"etag"', 12, "")
    new = IndexEntry(300, 7, "job-a", "", 12, "crc32c:0000abcd")
    assert IndexEntry.unpack(new.pack()) == new


def _cached(d: CacheDir, name: str, data: bytes, checksum: bool = True) -> str:
    uri = f"file:///src/{name}"
    path = d.data_path(uri)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_bytes(data)
    running = Checksum()
    running.update(data)
    d.commit([(uri, IndexEntry(len(data), 1, "job", checksum=running.hexdigest()
                               if checksum else ""), 0)])
    return uri


def test_the_scrub_reports_and_evicts_what_changed(tmp_path: Path) -> None:
    cache = Cache([tmp_path / "c"], [])
    [d] = cache.dirs
    d.recover()
    good = _cached(d, "good", b"a" * 1000)
    flipped = _cached(d, "flipped", b"b" * 1000)
    short = _cached(d, "short", b"c" * 1000)
    old = _cached(d, "old", b"d" * 1000, checksum=False)
    with open(d.data_path(flipped), "r+b") as f:
        f.write(b"X")
    os.truncate(d.data_path(short), 10)

    report = scrub(cache, "file:///src", repair=False, busy=_no_load)
    assert (report.files, report.corrupt, report.evicted, report.unverified) == (4, 2, 0, 1)
    problems = {p["path"]: p["problem"] for p in report.problems}
    assert set(problems) == {flipped, short}
    assert "checksum is crc32c:" in problems[flipped]
    assert "holds 10 bytes, the index says 1000" in problems[short]

    report = scrub(cache, "", repair=True, busy=lambda path: path == d.data_path(short))
    assert (report.corrupt, report.evicted, report.busy) == (1, 1, 1)
    assert d.lookup(flipped) is None
    assert not os.path.exists(d.data_path(flipped))
    assert d.lookup(short) is not None, "a file a load is writing is left alone"
    for uri in (good, old):
        entry = d.lookup(uri)
        assert entry is not None
        assert examine(d.data_path(uri), entry) is None
    assert d.index.files == 3
    d.close()


def test_a_cache_left_wide_by_an_older_version_is_narrowed(tmp_path: Path) -> None:
    root = tmp_path / "c"
    d = CacheDir(root, 0)
    d.recover()
    uri = _cached(d, "f", b"z" * 10)
    d.close()
    os.chmod(d.data_path(uri), 0o644)
    for sub in (root, root / "data"):
        sub.chmod(0o755)
    again = CacheDir(root, 0)
    again.recover()
    assert stat.S_IMODE(os.stat(again.data_path(uri)).st_mode) == 0o600
    for sub in (root / "data", root / "tmp", root / "index"):
        assert stat.S_IMODE(sub.stat().st_mode) == 0o700
    assert stat.S_IMODE(root.stat().st_mode) == 0o755, "an existing cache dir keeps its mode"
    raw = again.index._db.get(FILE + uri.encode())
    assert raw is not None
    again.close()


def test_fd_checksum_stops_at_the_end_of_a_short_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    fd = os.open(path, os.O_RDONLY)
    try:
        digest, read = fd_checksum(fd, 10)
    finally:
        os.close(fd)
    assert read == 3
    assert digest == file_checksum(str(path))[0]
