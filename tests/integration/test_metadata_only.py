"""LOAD --metadata-only (Alluxio's ``loadMetadataOnly``): the files are listed and recorded
on their owner workers, with no data copied, from local files and from S3."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alluxiojob.testing.s3 import S3Server
from tests.integration.cluster import Cluster, cached_files, make_tree

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = tmp_path_factory.mktemp("s3") / "s3.log"
    with S3Server(log_path=str(log)) as server:
        yield server


def locations(cluster: Cluster, path: str) -> list[dict[str, Any]]:
    """Every worker's answer to its location route for ``path``."""
    answers = []
    for worker in cluster.workers:
        port = worker.web_port  # type: ignore[attr-defined]
        reply = httpx.get(f"http://127.0.0.1:{port}/api/v1/location",
                          params={"path": path, "list": "1000"}, timeout=10)
        assert reply.status_code == 200, reply.text
        answers.append(reply.json())
    return answers


def assert_recorded_not_cached(cluster: Cluster, path: str, lengths: dict[str, int]) -> None:
    answers = locations(cluster, path)
    assert sum(a["files"] for a in answers) == 0, "no file counts as cached"
    assert sum(a["bytes"] for a in answers) == 0
    assert sum(a["metadata_files"] for a in answers) == len(lengths)
    assert sum(a["metadata_bytes"] for a in answers) == sum(lengths.values())
    recorded = {item["path"]: item["length"] for a in answers for item in a["metadata_list"]}
    assert recorded == lengths


def test_metadata_only_load_of_local_files(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    sizes = make_tree(src, 12)
    job = cluster.submit("load", str(src), loadMetadataOnly="true")  # Alluxio's spelling
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    assert report["job"]["options"]["metadata_only"] is True
    assert report["files"]["processed"] == len(sizes)
    assert report["bytes"]["processed"] == 0, "nothing was copied"
    assert cached_files(cluster) == {}
    assert_recorded_not_cached(cluster, str(src), {f"file://{p}": n for p, n in sizes.items()})

    text = cluster.cli("job", "load", "--path", str(src), "--progress").stdout
    assert "metadata-only: true" in text
    where = cluster.cli("fs", "location", "--path", str(src)).stdout
    assert "Metadata only:" in where, where

    # A record is no cached file: skip-if-exists loads every file for real.
    full = cluster.submit("load", str(src), skip_if_exists=True)
    report = cluster.wait_state(full["id"], "SUCCEEDED")
    assert report["files"]["skipped"] == 0
    assert report["files"]["processed"] == len(sizes)
    assert report["bytes"]["processed"] == sum(sizes.values())
    assert set(cached_files(cluster)) == set(sizes)

    # The CLI flag, and a refusal where it means nothing.
    again = cluster.cli("job", "load", "--path", str(src), "--metadata-only", "--wait")
    assert "SUCCEEDED" in again.stdout, again.stdout
    refused = cluster.api("POST", "/api/v1/master/submit_job/copy", json={
        "path": str(src), "dst": str(tmp_path / "out"), "options": {"metadata_only": True}})
    assert refused.status_code == 400
    assert "LOAD option" in refused.json()["message"]


def test_metadata_only_load_from_s3(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**s3.properties())
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("meta")
    objects = {f"data/part-{i:02d}": os.urandom(100 + i) for i in range(15)}
    s3.put_many("meta", objects)
    job = cluster.submit("load", "s3://meta/data", metadata_only=True)
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    assert report["files"]["processed"] == len(objects)
    assert report["bytes"]["processed"] == 0
    for worker in cluster.workers:
        data = worker.cache_dir / "data"  # type: ignore[attr-defined]
        assert not any(p.is_file() for p in data.rglob("*")), "no object was fetched"
    assert_recorded_not_cached(cluster, "s3://meta/data",
                               {f"s3://meta/{k}": len(v) for k, v in objects.items()})
    progress = json.loads(cluster.cli("job", "load", "--path", "s3://meta/data", "--progress",
                                      "--format", "JSON").stdout)
    assert progress["job"]["options"]["metadata_only"] is True
