"""The S3 API's pure parts: bucket mounts and keys, conditional requests, and listings
of a local tree in S3's order (a real directory, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alluxiojob.config import ConfigError
from alluxiojob.worker.s3.buckets import BucketTable
from alluxiojob.worker.s3.errors import S3Error
from alluxiojob.worker.s3.listing import list_bucket
from alluxiojob.worker.s3.objects import check_conditions, etag_of

KEYS = ["a-1/x", "a/b/c", "a/b/d", "a/e", "a.txt", "b", "z/\u00e9"]


@pytest.fixture
def bucket(tmp_path: Path):  # type: ignore[no-untyped-def]
    for key in KEYS:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text(key)
    return BucketTable([f"data=file://{tmp_path}"]).resolve("data")


def keys(bucket, prefix: str = "", delimiter: str = "", after: str = "",  # type: ignore[no-untyped-def]
         max_keys: int = 1000) -> tuple[list[str], list[str], bool]:
    page = list_bucket(bucket, prefix, delimiter, after, max_keys, None, lambda _: True)
    return [o.key for o in page.objects], page.prefixes, page.truncated


def test_keys_come_in_byte_order(bucket) -> None:  # type: ignore[no-untyped-def]
    assert keys(bucket)[0] == sorted(KEYS)  # "a-1/x" < "a.txt" < "a/b/c": not tree order


def test_pages_resume_after_their_last_key_or_prefix(bucket) -> None:  # type: ignore[no-untyped-def]
    for delimiter in ("", "/"):
        seen: list[str] = []
        after = ""
        while True:
            page = list_bucket(bucket, "", delimiter, after, 2, None, lambda _: True)
            seen += [o.key for o in page.objects] + page.prefixes
            if not page.truncated:
                break
            after = page.last
        whole = keys(bucket, delimiter=delimiter)
        assert sorted(seen) == sorted(whole[0] + whole[1])
        assert len(seen) == len(set(seen))


def test_delimiter_and_prefix(bucket) -> None:  # type: ignore[no-untyped-def]
    assert keys(bucket, delimiter="/") == (["a.txt", "b"], ["a-1/", "a/", "z/"], False)
    assert keys(bucket, prefix="a/", delimiter="/") == (["a/e"], ["a/b/"], False)
    assert keys(bucket, prefix="a/b") == (["a/b/c", "a/b/d"], [], False)
    assert keys(bucket, after="a/b/c")[0] == [k for k in sorted(KEYS) if k > "a/b/c"]
    assert keys(bucket, delimiter="/", after="a/")[1] == ["z/"], "a prefix is not repeated"
    assert keys(bucket, max_keys=0) == ([], [], True)


def test_mounts_keys_and_locate(tmp_path: Path) -> None:
    table = BucketTable([f"data=file://{tmp_path}", "deep=s3://b/deep/prefix"])
    assert table.resolve("deep").uri("x/y") == "s3://b/deep/prefix/x/y"
    assert table.resolve("other").root == "s3://other"
    assert table.locate("s3://b/deep/prefix/x") == (table.resolve("deep"), "x")
    located = table.locate("s3://other/k/ey")
    assert located is not None
    assert (located[0].name, located[1]) == ("other", "k/ey")
    assert table.locate("gs://x/y") is None
    for key in ("../x", "a/../../x", "a//b", "./a", "", "a\x00b"):
        with pytest.raises(S3Error):
            table.resolve("data").uri(key)
    for bad in (["noequals"], ["UPPER=s3://x"], ["data=s3://a", "data=s3://b"],
                ["x1=relative/path"]):
        with pytest.raises(ConfigError):
            BucketTable(bad)
    with pytest.raises(S3Error) as error:
        table.resolve("Bad_Name!")
    assert error.value.code == "InvalidBucketName"


def test_conditions() -> None:
    etag = etag_of("", 1_700_000_000_000_000_000, 10)
    assert etag == etag_of("", 1_700_000_000_000_000_000, 10), "stable"
    assert etag_of('"abc"', 0, 1) == '"abc"'
    assert check_conditions({}, etag, 1_700_000_000 * 10**9, "/r") is None
    assert check_conditions({"if-none-match": etag}, etag, 0, "/r") == 304
    assert check_conditions({"if-none-match": '"other"'}, etag, 0, "/r") is None
    assert check_conditions({"if-modified-since": "Tue, 14 Nov 2023 22:13:20 GMT"}, etag,
                            1_700_000_000 * 10**9, "/r") == 304
    assert check_conditions({"if-modified-since": "Tue, 14 Nov 2023 22:13:19 GMT"}, etag,
                            1_700_000_000 * 10**9, "/r") is None
    with pytest.raises(S3Error) as failed:
        check_conditions({"if-match": '"other"'}, etag, 0, "/r")
    assert failed.value.status == 412
    assert check_conditions({"if-match": "*"}, etag, 0, "/r") is None
