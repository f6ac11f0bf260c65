"""The pure parsing of manifest sources: templates, index lines, S3 Inventory, splits."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alluxiojob.core.manifest import (
    ManifestError,
    is_inventory_manifest,
    parse_index_line,
    parse_inventory_manifest,
    parse_inventory_row,
    parse_template,
    split_ranges,
)
from alluxiojob.core.progress import Counters, Progress, eta_seconds

pytestmark = pytest.mark.fast


def test_template_keeps_zero_padding_and_multiplies_ranges() -> None:
    template = parse_template("s3://b/train/shard-{000000..099999}.tar")
    assert template.total == 100_000
    assert template.name(0) == "s3://b/train/shard-000000.tar"
    assert template.name(99_999) == "s3://b/train/shard-099999.tar"
    two = parse_template("/data/d{0..2}/x-{00..99}.bin")
    assert two.total == 300
    names = [name for _, name in two.names()]
    assert names[:2] == ["/data/d0/x-00.bin", "/data/d0/x-01.bin"]
    assert names[100] == "/data/d1/x-00.bin"
    assert names[-1] == "/data/d2/x-99.bin"
    assert len(set(names)) == 300


def test_template_step_and_resume_by_index() -> None:
    template = parse_template("/d/f{0..100..10}")
    assert [n for _, n in template.names()] == [f"/d/f{i}" for i in range(0, 101, 10)]
    assert list(template.names(9)) == [(9, "/d/f90"), (10, "/d/f100")]
    assert list(template.names(2, 4)) == [(2, "/d/f20"), (3, "/d/f30")]


def test_a_huge_template_is_never_materialised() -> None:
    template = parse_template("s3://b/{000000..999999}/{000000..999999}")
    assert template.total == 10**12
    assert template.name(10**12 - 1) == "s3://b/999999/999999"
    first = template.names(5)
    assert next(first) == (5, "s3://b/000000/000005")


@pytest.mark.parametrize(("text", "says"), [
    ("/data/x.bin", "no {START..END} range"),
    ("/data/{9..1}", "counts down"),
    ("/data/{0..9..0}", "step"),
    ("/data/{a,b}/{0..9}", "only numeric ranges"),
    ("/data/{0..9}/../../etc/passwd", "'..'"),
    ("/d/{0..999999}{0..999999}{0..9}", "at most"),
])
def test_bad_templates_are_named(text: str, says: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_template(text)
    assert says in str(caught.value)


@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(1, 40))
def test_split_ranges_cover_in_order_without_gaps(start: int, length: int, parts: int) -> None:
    ranges = split_ranges(start, start + length, parts)
    assert len(ranges) == min(parts, length)
    position = start
    for low, high in ranges:
        assert low == position
        assert high > low
        position = high
    assert position == start + length or not ranges
    sizes = [high - low for low, high in ranges]
    assert not sizes or max(sizes) - min(sizes) <= 1


def test_split_ranges_refuses_zero_parts() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_ranges(0, 10, 0)


def test_index_lines() -> None:
    assert parse_index_line(b"  s3://b/k ey \r", 1) == "s3://b/k ey"
    assert parse_index_line(b"/data/a", 2) == "/data/a"
    assert parse_index_line(b"relative/p", 3) == "relative/p"  # resolved later
    assert parse_index_line(b"", 4) is None
    assert parse_index_line(b"   # a comment", 5) is None
    with pytest.raises(ManifestError, match="line 6: not valid UTF-8"):
        parse_index_line(b"/data/\xff", 6)
    with pytest.raises(ManifestError, match="line 7: .* not a path or a URI"):
        parse_index_line(b"://nothing", 7)
    with pytest.raises(ManifestError, match="line 8: holds a control character"):
        parse_index_line(b"/data/a\x00b", 8)


MANIFEST = {
    "sourceBucket": "photos",
    "destinationBucket": "arn:aws:s3:::inventory",
    "fileFormat": "CSV",
    "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
    "files": [{"key": "inv/photos/cfg/data/a.csv.gz", "size": 10, "MD5checksum": "x"}],
}


def test_inventory_manifest_and_rows() -> None:
    manifest = parse_inventory_manifest(json.dumps(MANIFEST).encode())
    assert manifest.columns == ("Bucket", "Key", "Size", "LastModifiedDate", "ETag")
    assert manifest.files == ("inv/photos/cfg/data/a.csv.gz",)
    assert manifest.destination_bucket == "inventory"
    row = parse_inventory_row(["photos", "a+b/c%2Bd%C3%A9.jpg", "123",
                               "2026-01-02T03:04:05.500Z", "abc"], manifest.columns, "s3", "r1")
    assert row is not None
    assert row.uri == "s3://photos/a b/c+dé.jpg"
    assert (row.length, row.version) == (123, '"abc"')
    assert row.mtime_ns == 1767323045_500_000_000
    assert parse_inventory_row(["photos", "dir/", "0", "", ""], manifest.columns, "s3",
                               "r2") is None
    assert is_inventory_manifest("s3://inventory/x/manifest.json")
    assert not is_inventory_manifest("s3://inventory/x/list.txt")


def test_inventory_skips_old_versions_and_delete_markers() -> None:
    columns = ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size")
    assert parse_inventory_row(["b", "k", "v1", "false", "false", "1"], columns, "s3",
                               "r") is None
    assert parse_inventory_row(["b", "k", "v2", "true", "true", "0"], columns, "s3",
                               "r") is None
    assert parse_inventory_row(["b", "k", "v3", "true", "false", "1"], columns, "s3",
                               "r") is not None


@pytest.mark.parametrize(("change", "says"), [
    ({"fileFormat": "ORC"}, "fileFormat 'ORC' is not supported"),
    ({"fileSchema": "Key, Size"}, "no Bucket column"),
    ({"files": [{"size": 1}]}, "files must be a list"),
])
def test_bad_inventory_manifests_are_named(change: dict[str, object], says: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_inventory_manifest(json.dumps({**MANIFEST, **change}).encode())
    assert says in str(caught.value)
    with pytest.raises(ManifestError, match="not JSON"):
        parse_inventory_manifest(b"{")


def test_bad_inventory_rows_are_named() -> None:
    columns = ("Bucket", "Key", "Size")
    with pytest.raises(ManifestError, match="data.csv row 3: 2 fields"):
        parse_inventory_row(["b", "k"], columns, "s3", "data.csv row 3")
    with pytest.raises(ManifestError, match="Size 'many' is not a number"):
        parse_inventory_row(["b", "k", "many"], columns, "s3", "row 4")


def test_eta_from_a_known_file_total_before_the_listing_ends() -> None:
    progress = Progress(live=Counters(files_listed=10, files_processed=10),
                        files_total=100, active_seconds=10.0)
    assert eta_seconds(progress) == pytest.approx(90.0)
    assert eta_seconds(Progress(live=Counters(files_listed=10, files_processed=10),
                                active_seconds=10.0)) is None
    sized = Progress(live=Counters(files_listed=1, files_processed=1, bytes_listed=10,
                                   bytes_processed=10), files_total=10, bytes_total=100,
                     active_seconds=1.0)
    assert eta_seconds(sized) == pytest.approx(9.0)
