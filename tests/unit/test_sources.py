"""Manifest sources over real local files: order, totals, resume positions, a local copy
of an S3 Inventory, and files that fail alone."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from alluxiojob.config.properties import load_config
from alluxiojob.coordinator.sources import FailedFile, open_source
from alluxiojob.core.job import JobOptions, JobRecord, JobType
from alluxiojob.ufs.base import UfsError


def job(path: str, source: str) -> JobRecord:
    return JobRecord.new(JobType.LOAD, path, "", JobOptions(source=source), 0.0)


def config(*defines: str):  # type: ignore[no-untyped-def]
    return load_config(None, list(defines), environ={})


def test_index_source_resumes_at_its_line_and_offset(tmp_path: Path) -> None:
    for name in "abcd":
        (tmp_path / name).write_bytes(name.encode() * 3)
    index = tmp_path / "list.txt"
    index.write_text(f"# header\n{tmp_path}/a\n\nfile://{tmp_path}/b\r\n{tmp_path}/gone\n"
                     f"{tmp_path}/c\n{tmp_path}/d")  # the last line has no newline
    source = open_source(job(f"file://{index}", "index"), config())
    assert source.files_total == 5
    entries = list(source.entries(()))
    assert [e.uri.rsplit("/", 1)[1] for e in entries] == ["a", "b", "gone", "c", "d"]
    assert [e.length for e in entries] == [3, 3, 0, 3, 3]
    assert isinstance(entries[2], FailedFile)
    assert entries[2].reason == "UFS_NOT_FOUND"
    assert [int(e.parts[0]) for e in entries] == [2, 4, 5, 6, 7]
    for i, entry in enumerate(entries):  # resumed after each: the rest, in order
        assert list(source.entries(entry.parts)) == entries[i + 1:]


def test_an_index_file_rewritten_after_its_positions_were_taken_fails_the_job(
        tmp_path: Path) -> None:
    """A stored position (a shard's range, a checkpoint) must land at a line's start; an
    index file rewritten since does not read on from the middle of a line."""
    for name in ("alpha", "beta", "gamma"):
        (tmp_path / name).write_bytes(b"x")
    index = tmp_path / "list.txt"
    index.write_text(f"{tmp_path}/alpha\n{tmp_path}/beta\n{tmp_path}/gamma\n")
    source = open_source(job(f"file://{index}", "index"), config())
    first, *_ = list(source.entries(()))
    index.write_text(f"# a header line added\n{tmp_path}/alpha\n{tmp_path}/beta\n")
    with pytest.raises(UfsError, match="changed since the job planned its reads: no line "
                                       "ends at byte") as caught:
        list(source.entries(first.parts))
    assert caught.value.reason == "UFS_CHANGED"
    index.write_text("/a\n")  # shorter than the position
    with pytest.raises(UfsError, match="changed since the job planned"):
        list(source.entries(first.parts))


def test_a_bad_line_read_by_the_job_fails_it_naming_the_line(tmp_path: Path) -> None:
    index = tmp_path / "list.txt"
    index.write_bytes(b"/a\nrelative\n")
    with pytest.raises(UfsError, match="line 2: .*relative") as caught:
        open_source(job(f"file://{index}", "index"), config())
    assert caught.value.reason == "INVALID_PATH"
    index.write_bytes(b"/a\n" + b"x" * (1 << 20))  # memory stays bounded
    with pytest.raises(UfsError, match="the line at byte 3 is longer than 65536 bytes"):
        open_source(job(f"file://{index}", "index"), config())


def test_template_source_and_the_allowlist(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"x{i}").write_bytes(b"x")
    (tmp_path / "x1").symlink_to(tmp_path / "in" / "x1")
    source = open_source(job(f"file://{tmp_path}/in/x{{0..3}}", "template"),
                         config(f"alluxio.job.path.allowlist={tmp_path}/in"))
    assert source.files_total == 4
    entries = list(source.entries(()))
    assert [e.parts for e in entries] == [(f"{i:015d}",) for i in range(4)]
    assert [type(e).__name__ for e in entries] == ["UfsFile"] * 3 + ["FailedFile"]
    assert list(source.entries(("000000000000001",))) == entries[2:]


def _inventory(tmp_path: Path) -> Path:
    data = tmp_path / "inv" / "photos" / "cfg" / "data"
    data.mkdir(parents=True)
    rows = [["photos", f"k%20{i}", str(i * 10), "2026-01-01T00:00:00Z", f"e{i}"]
            for i in range(5)]
    for number, part in enumerate((rows[:2], rows[2:])):
        text = io.StringIO()
        csv.writer(text).writerows(part)
        body = text.getvalue().encode()
        name = f"part-{number}.csv" + (".gz" if number else "")
        (data / name).write_bytes(gzip.compress(body) if number else body)
    stamp = tmp_path / "inv" / "photos" / "cfg" / "2026-01-02T00-00Z"
    stamp.mkdir()
    manifest = stamp / "manifest.json"
    manifest.write_text(json.dumps({
        "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
        "files": [{"key": "inv/photos/cfg/data/part-0.csv"},
                  {"key": "inv/photos/cfg/data/part-1.csv.gz"}]}))
    return manifest


def test_a_local_copy_of_an_s3_inventory(tmp_path: Path) -> None:
    manifest = _inventory(tmp_path)
    source = open_source(job(f"file://{manifest}", "index"), config())
    assert (source.files_total, source.bytes_total) == (5, 100)
    entries = list(source.entries(()))
    assert [e.uri for e in entries] == [f"s3://photos/k {i}" for i in range(5)]
    assert [e.version for e in entries] == [f'"e{i}"' for i in range(5)]
    assert [e.parts for e in entries][1:3] == [("000000", "000000000001"),
                                               ("000001", "000000000000")]
    for i, entry in enumerate(entries):
        assert list(source.entries(entry.parts)) == entries[i + 1:]
