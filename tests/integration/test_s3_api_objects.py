"""The S3 API over an S3 UFS (a real S3 server, moto): with no configuration, bucket
``B`` of the API is the cached view of ``s3://B``, with the UFS's own ETags."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from alluxiojob.testing.s3 import S3Server
from tests.integration.cluster import Cluster, cached_under, wait_for
from tests.integration.s3_fixtures import boto3_client, wait_s3_membership
from tests.integration.test_s3 import put_dataset

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(log_path=str(tmp_path_factory.mktemp("s3") / "s3.log")) as server:
        yield server


def test_bucket_b_is_the_cached_view_of_s3_b(cluster_factory: Callable[..., Cluster],
                                             s3: S3Server) -> None:
    objects = put_dataset(s3, "datasets", "set")
    cluster = cluster_factory(**{**s3.properties(),
                                 "alluxio.worker.load.file.partition.size": "1MiB"})
    for _ in range(2):
        cluster.add_worker(s3=True)
    wait_s3_membership(cluster)
    cluster.add_coordinator()
    assert "SUCCEEDED" in cluster.cli("job", "load", "--path", "s3://datasets/set",
                                      "--wait").stdout
    assert cached_under(cluster, "s3/datasets"), "the LOAD cached the objects"
    port = cluster.workers[0].s3_port  # type: ignore[attr-defined]
    ours = boto3_client(f"http://127.0.0.1:{port}")
    listed = [o["Key"] for page in ours.get_paginator("list_objects_v2").paginate(
        Bucket="datasets", Prefix="set/", PaginationConfig={"PageSize": 5})
        for o in page.get("Contents", [])]
    assert listed == sorted(objects), "every object once, markers not taken for objects"
    top = ours.list_objects_v2(Bucket="datasets", Prefix="set/", Delimiter="/")
    assert "set/a/" in [p["Prefix"] for p in top["CommonPrefixes"]]
    assert "set/a" in [o["Key"] for o in top["Contents"]]

    upstream = s3.client()
    for key, data in objects.items():
        got = ours.get_object(Bucket="datasets", Key=key)
        assert got["Body"].read() == data, key
        assert got["ResponseMetadata"]["HTTPHeaders"]["x-alluxio-cached"] == "true", key
        assert got["ETag"] == upstream.head_object(Bucket="datasets", Key=key)["ETag"], key

    s3.put("datasets", "set/late.bin", b"late" * 1000)
    got = ours.get_object(Bucket="datasets", Key="set/late.bin")
    assert got["Body"].read() == b"late" * 1000
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-alluxio-cached"] == "false"
    wait_for(lambda: ours.head_object(Bucket="datasets", Key="set/late.bin")[
        "ResponseMetadata"]["HTTPHeaders"]["x-alluxio-cached"] == "true", 30,
        "the read-through object to be cached")
