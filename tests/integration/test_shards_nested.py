"""A job whose path holds one directory (or one S3 prefix) and nothing else is split
inside it: the shards' bounds come from the first level with several entries, on real
coordinator and worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from alluxiojob.testing.s3 import S3Server
from tests.integration.cluster import Cluster
from tests.integration.test_manifest_shards import s3  # noqa: F401  (the fixture)
from tests.integration.test_shards import assert_each_cached_once, subdir_tree

pytestmark = pytest.mark.timeout(300)


def test_a_tree_under_one_directory_still_splits(cluster_factory,  # type: ignore[no-untyped-def]
                                                 tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory(**{"alluxio.job.shard.count": "4",
                                          "alluxio.job.batch.size": "20"})
    cluster.add_worker()
    cluster.add_coordinator()
    src = tmp_path / "tree"
    sizes = subdir_tree(src / "only" / "one", 6, 20)  # two single directories on top
    report = cluster.wait_state(cluster.submit("load", str(src))["id"], "SUCCEEDED")
    assert report["files"]["processed"] == len(sizes)
    shards = report["shards"]
    assert len(shards) == 4, shards
    assert all(s["files_processed"] > 0 for s in shards), shards
    assert sum(s["files_processed"] for s in shards) == len(sizes)
    assert_each_cached_once(cluster, sizes)


def test_a_bucket_with_one_prefix_still_splits(cluster_factory,  # type: ignore[no-untyped-def]
                                               s3: S3Server) -> None:  # noqa: F811
    cluster: Cluster = cluster_factory(**s3.properties(), **{
        "alluxio.job.shard.count": "3", "alluxio.job.batch.size": "10"})
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("nested")
    objects = {f"dataset/train/part-{d}/x-{i:02d}": bytes([d, i]) * (i + 1)
               for d in range(6) for i in range(10)}
    objects["dataset/train/"] = b""  # a directory marker, as some tools write
    s3.put_many("nested", objects)
    files = len(objects) - 1  # a marker is not a file
    report = cluster.wait_state(cluster.submit("load", "s3://nested/")["id"], "SUCCEEDED")
    assert report["files"]["processed"] == files
    shards = report["shards"]
    assert len(shards) == 3, shards
    assert all(s["files_processed"] > 0 for s in shards), shards
    assert sum(s["files_processed"] for s in shards) == files
