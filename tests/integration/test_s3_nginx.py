"""The bench's fast S3 server (nginx + Lua, ``alluxiojob.testing.s3_nginx``) is a real S3
for readers: alluxiojob's LOAD and ``rclone copy`` get every object byte for byte, and its
listings answer as moto's do for the same keys. Skipped where nginx or its Lua module is
not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alluxiojob.testing.s3 import S3Server
from alluxiojob.testing.s3_nginx import NginxS3Server, available
from tests.integration.cluster import Cluster, assert_cached_once, cached_under, digest, sha256
from tests.integration.test_s3 import encoded

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(available() is not None, reason=str(available()))]

KIB = 1024
BUCKET = "fast"


# Under ``data/``: nested, odd names, empty, and one over several 1 MiB partitions.
OBJECTS = {
    "data/d0/f0.bin": os.urandom(4 * KIB),
    "data/d0/f1.bin": os.urandom(4 * KIB + 1),
    "data/d1/deeper/f2.bin": os.urandom(100),
    "data/with space/ünïcødé.dat": os.urandom(3000),
    "data/pct/100%.txt": b"percent",
    "data/zero": b"",
    "data/large": os.urandom(3 * 1024 * KIB + 17),
}


INDEX_ONLY = ["a&b<c>/'q\"", "a/1", "a/2", "b"]  # a listing-only bucket's keys, sorted


def listing_keys() -> list[str]:
    """Keys that exercise delimiters, prefixes that are also keys' starts, and paging."""
    keys = ["l/a/1", "l/a/2", "l/b", "l/b0", "l/b0x/y", "l/c/d/e", "l/c/x", "l/d",
            "l/sp ace/k", "l/ü/k", "m/outside"]
    keys += [f"l/p/{i:02d}" for i in range(25)]
    return keys


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxS3Server]:
    nginx = NginxS3Server(tmp_path_factory.mktemp("nginx-s3"))
    data = OBJECTS
    for key, value in data.items():
        nginx.put(BUCKET, key, value)
    for key in listing_keys():
        nginx.put("listing", key, key.encode())
    nginx.put_listing("index", [(k, len(k), 1_700_000_000 + i)
                                for i, k in enumerate(reversed(INDEX_ONLY))])
    with nginx:
        yield nginx


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = tmp_path_factory.mktemp("moto") / "s3.log"
    with S3Server(log_path=str(log)) as server:
        server.create_bucket("listing")
        server.put_many("listing", {key: key.encode() for key in listing_keys()})
        yield server


def test_load_from_the_nginx_server_is_byte_identical(cluster_factory: Any,
                                                        server: NginxS3Server) -> None:
    cluster: Cluster = cluster_factory(**{
        **server.properties(),
        "alluxio.worker.load.file.partition.size": "1MiB",
        "alluxio.underfs.object.store.multi.range.chunk.size": "1MiB",
    })
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    result = cluster.cli("job", "load", "--path", f"s3://{BUCKET}/data", "--wait")
    assert "SUCCEEDED" in result.stdout
    assert_cached_once(cached_under(cluster, f"s3/{BUCKET}"), OBJECTS, encoded)


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed")
def test_rclone_copy_from_the_nginx_server_is_byte_identical(server: NginxS3Server,
                                                              tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update({"RCLONE_CONFIG": os.devnull, **server.rclone_env("fast")})
    out = tmp_path / "out"
    subprocess.run(["rclone", "copy", "--transfers", "8", f"fast:{BUCKET}/data", str(out)],
                   env=env, check=True, capture_output=True, timeout=120)
    copied = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    expected = {key.removeprefix("data/"): value for key, value in OBJECTS.items()}
    assert copied == set(expected)
    for rel, value in expected.items():
        assert sha256(out / rel) == digest(value), rel


def test_object_reads_answer_as_s3_does(server: NginxS3Server) -> None:
    from botocore.exceptions import ClientError

    s3 = server.client()
    large = OBJECTS["data/large"]
    head = s3.head_object(Bucket=BUCKET, Key="data/large")
    assert head["ContentLength"] == len(large)
    assert head["AcceptRanges"] == "bytes"
    assert head["ETag"][0] == head["ETag"][-1] == '"'
    part = s3.get_object(Bucket=BUCKET, Key="data/large", Range="bytes=5-9", IfMatch=head["ETag"])
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == f"bytes 5-9/{len(large)}"
    assert part["Body"].read() == large[5:10]
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="data/large")["Contents"]
    assert [(o["Key"], o["ETag"], o["Size"], o["LastModified"]) for o in listed] == [
        ("data/large", head["ETag"], len(large), head["LastModified"])]
    for call, status in [
        (lambda: s3.get_object(Bucket=BUCKET, Key="data/large", Range="bytes=99999999-"), 416),
        (lambda: s3.get_object(Bucket=BUCKET, Key="data/large", IfMatch='"other"'), 412),
        (lambda: s3.get_object(Bucket=BUCKET, Key="data/missing"), 404),
        (lambda: s3.get_object(Bucket=BUCKET, Key="data/d0"), 404),  # a directory
        (lambda: s3.head_object(Bucket=BUCKET, Key="data/missing"), 404),
        (lambda: s3.list_objects_v2(Bucket="no-such-bucket"), 404),
        (lambda: s3.put_object(Bucket=BUCKET, Key="data/new", Body=b"x"), 405),
    ]:
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert s3.head_bucket(Bucket=BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200


def _pages(s3: Any, v2: bool, **params: Any) -> list[dict[str, Any]]:
    """Every page of a listing, reduced to what a client reads (the tokens are opaque)."""
    pages = []
    while True:
        if v2:
            answer = s3.list_objects_v2(Bucket="listing", **params)
        else:
            answer = s3.list_objects(Bucket="listing", **params)
        pages.append({
            "keys": [(o["Key"], o["Size"]) for o in answer.get("Contents", [])],
            "prefixes": [p["Prefix"] for p in answer.get("CommonPrefixes", [])],
            "truncated": answer["IsTruncated"],
            "count": answer.get("KeyCount"),
        })
        if not answer["IsTruncated"]:
            return pages
        if v2:
            params = {**params, "ContinuationToken": answer["NextContinuationToken"]}
            params.pop("StartAfter", None)
        else:
            last = answer.get("NextMarker") or answer["Contents"][-1]["Key"]
            params = {**params, "Marker": last}


@pytest.mark.parametrize("params", [
    {},
    {"Prefix": "l/"},
    {"Prefix": "l/", "Delimiter": "/"},
    {"Prefix": "l/", "Delimiter": "/", "MaxKeys": 2},
    {"Prefix": "l/b", "Delimiter": "/"},
    {"Prefix": "l/p/", "MaxKeys": 7},
    {"Prefix": "l/", "MaxKeys": 5, "StartAfter": "l/b0"},
    {"Prefix": "l/", "Delimiter": "/", "StartAfter": "l/c/x"},
    {"StartAfter": "l/p/20", "MaxKeys": 3},
    {"Delimiter": "/"},
    {"Delimiter": "p/", "Prefix": "l/"},
    {"Prefix": "nothing/"},
    {"Prefix": "l/", "EncodingType": "url", "Delimiter": "/"},
])
def test_listing_v2_answers_as_moto_does(server: NginxS3Server, moto: S3Server,
                                         params: dict[str, Any]) -> None:
    ours = _pages(server.client(), True, **params)
    assert ours == _pages(moto.client(), True, **params)
    assert any(p["keys"] or p["prefixes"] for p in ours) or params.get("Prefix") == "nothing/"


@pytest.mark.parametrize("params", [
    {"Prefix": "l/", "MaxKeys": 4},
    {"Prefix": "l/", "Delimiter": "/", "MaxKeys": 3},
    {"Marker": "l/c", "Delimiter": "/"},
])
def test_listing_v1_answers_as_moto_does(server: NginxS3Server, moto: S3Server,
                                         params: dict[str, Any]) -> None:
    """moto answers a v1 listing with a delimiter in one page whatever MaxKeys says, so
    the pages are compared joined together."""
    def joined(pages: list[dict[str, Any]]) -> tuple[list[Any], list[str]]:
        return ([k for p in pages for k in p["keys"]],
                [c for p in pages for c in p["prefixes"]])

    ours = _pages(server.client(), False, **params)
    assert joined(ours) == joined(_pages(moto.client(), False, **params))
    if "MaxKeys" in params:
        assert all(len(p["keys"]) + len(p["prefixes"]) <= params["MaxKeys"] for p in ours)
        assert len(ours) > 1


def test_a_listing_only_bucket_lists_its_keys_and_has_no_objects(
        server: NginxS3Server) -> None:
    from botocore.exceptions import ClientError

    s3 = server.client()
    page = s3.list_objects_v2(Bucket="index", MaxKeys=3)
    assert [o["Key"] for o in page["Contents"]] == INDEX_ONLY[:3]
    assert [o["Size"] for o in page["Contents"]] == [len(k) for k in INDEX_ONLY[:3]]
    # nginx's ETag form from each row's own mtime (the rows were given in reverse)
    assert page["Contents"][0]["ETag"] == f'"{1_700_000_003:x}-{len(INDEX_ONLY[0]):x}"'
    assert page["Contents"][1]["ETag"] == f'"{1_700_000_002:x}-3"'
    rest = s3.list_objects_v2(Bucket="index", ContinuationToken=page["NextContinuationToken"])
    assert [o["Key"] for o in rest["Contents"]] == INDEX_ONLY[3:]
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket="index", Key="a/1")
    assert error.value.response["Error"]["Code"] == "NoSuchKey"


def test_a_bad_listing_request_is_a_clear_400(server: NginxS3Server) -> None:
    from botocore.exceptions import ClientError

    s3 = server.client()
    with pytest.raises(ClientError) as caught:
        s3.list_objects_v2(Bucket="listing", ContinuationToken="***")
    assert caught.value.response["Error"]["Code"] == "InvalidArgument"
    assert "continuation token" in caught.value.response["Error"]["Message"]


def test_latency_setting_and_request_count(server: NginxS3Server) -> None:
    server.set_latency(0.001)
    try:
        assert server._control("") == "0.001"
    finally:
        server.set_latency(0.0)
    assert server._control("") == "0"
    before = server.request_count()
    server.client().head_object(Bucket=BUCKET, Key="data/zero")
    assert server.request_count() == before + 2  # the HEAD and the second count
    assert len(server.pids()) >= 2, "the master and its worker"
