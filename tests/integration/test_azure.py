"""Azure Blob as the UFS, against a real Azure Blob API server (Azurite) on loopback.

Real coordinator and worker processes reach Azurite through the ``alluxio.underfs.azure.*``
and ``fs.azure.account.key`` properties; every check is byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alluxiojob.testing.azure import AzureServer, azurite_command
from tests.integration.cluster import Cluster, assert_cached_once, cached_under, digest

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(azurite_command() is None,
                       reason="azurite-blob is not installed (scripts/test installs the npm "
                              "package azurite into .azurite/)"),
]

KIB = 1024
PARTITION = 1024 * KIB  # the smallest partition size allowed
# A valid account key, but not the account's: Azurite refuses its signatures.
WRONG_KEY = base64.b64encode(hashlib.sha512(b"not the account key").digest()).decode()


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with AzureServer(log_path=str(log)) as server:
        yield server


def _cluster(cluster_factory, azure: AzureServer, **properties: str) -> Cluster:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{
        **azure.properties(),
        "alluxio.worker.load.file.partition.size": "1MiB",
        "alluxio.underfs.object.store.multi.range.chunk.size": "1MiB",
        "alluxio.underfs.s3.max.error.retry": "1",
        **properties,
    })
    cluster.add_worker()
    cluster.add_coordinator()
    return cluster


def blobs() -> dict[str, bytes]:
    """Sizes around a partition, nesting, an empty blob and a name with spaces."""
    return {
        "small.txt": b"a small blob",
        "nested/deeper/one.bin": os.urandom(3000),
        "with space/file one.dat": os.urandom(777),
        "empty": b"",
        "edge/exact": os.urandom(PARTITION),
        "edge/large": os.urandom(3 * PARTITION + 17),  # ranged reads, several partitions
    }


def put_dataset(azure: AzureServer, container: str, prefix: str) -> dict[str, bytes]:
    azure.create_container(container)
    data = {f"{prefix}/{name}": body for name, body in blobs().items()}
    azure.put_many(container, data)
    azure.put(container, "outside/not-loaded", b"beside the prefix")
    return data


def cached_blobs(cluster: Cluster, container: str) -> dict[str, list[Path]]:
    """Cache path under ``data/az/<container>/`` -> the copies found on the workers."""
    return cached_under(cluster, f"az/{container}")


def encoded(key: str) -> str:
    """The documented cache layout: a directory component ends with '%'."""
    parts = key.split("/")
    return "/".join([p + "%" for p in parts[:-1]] + parts[-1:])


def test_load_and_free_a_prefix(cluster_factory, azure: AzureServer) -> None:  # type: ignore[no-untyped-def]
    data = put_dataset(azure, "load-container", "data")
    cluster = _cluster(cluster_factory, azure)
    cluster.add_worker()
    result = cluster.cli("job", "load", "--path", "az://load-container/data", "--wait")
    assert "SUCCEEDED" in result.stdout

    assert_cached_once(cached_blobs(cluster, "load-container"), data, encoded)
    report = json.loads(cluster.cli("job", "load", "--path", "az://load-container/data",
                                    "--progress", "--format", "JSON").stdout)
    assert report["files"]["processed"] == len(data)
    assert report["bytes"]["processed"] == sum(len(b) for b in data.values())

    cat = cluster.cli("fs", "cat", "--path", "az://load-container/data/small.txt")
    assert cat.stdout == "a small blob"
    cluster.cli("job", "free", "--path", "az://load-container/data", "--wait")
    assert cached_blobs(cluster, "load-container") == {}


def test_copy_to_a_local_dir_and_back(cluster_factory, azure: AzureServer,  # type: ignore[no-untyped-def]
                                      tmp_path: Path) -> None:
    data = put_dataset(azure, "copy-container", "src")
    cluster = _cluster(cluster_factory, azure)
    dst = tmp_path / "out"
    cluster.cli("job", "copy", "--src", "az://copy-container/src", "--dst", str(dst), "--wait")
    copied = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert copied == {name.removeprefix("src/"): body for name, body in data.items()}

    # Local -> Azure, with one file above the single-PUT size (a block list upload).
    up = tmp_path / "up"
    (up / "d").mkdir(parents=True)
    uploads = {"d/small": b"up", "big": os.urandom(17 * PARTITION + 3)}
    for name, body in uploads.items():
        (up / name).write_bytes(body)
    cluster.cli("job", "copy", "--src", str(up), "--dst", "az://copy-container/up", "--wait")
    assert azure.names("copy-container", "up/") == ["up/big", "up/d/small"]
    for name, body in uploads.items():
        assert digest(azure.get("copy-container", f"up/{name}")) == digest(body), name


def test_missing_blob_or_container_is_named(cluster_factory, azure: AzureServer,  # type: ignore[no-untyped-def]
                                            tmp_path: Path) -> None:
    azure.create_container("missing-test")
    azure.put("missing-test", "here/blob", b"x")
    cluster = _cluster(cluster_factory, azure)

    no_blob = cluster.cli("job", "load", "--path", "az://missing-test/nowhere", check=False)
    assert no_blob.returncode == 3, no_blob.stderr
    assert "az://missing-test/nowhere" in no_blob.stderr
    no_container = cluster.cli("job", "load", "--path", "az://no-such-container/x",
                               check=False)
    assert no_container.returncode == 3, no_container.stderr
    assert "container 'no-such-container' does not exist" in no_container.stderr

    # A destination container that does not exist: the job runs and FAILS, naming it.
    job = cluster.api("POST", "/api/v1/master/submit_job/copy", json={
        "path": "az://missing-test/here", "dst": "az://absent-container/copy"})
    assert job.status_code == 200, job.text
    report = cluster.wait_state(job.json()["id"], "FAILED")
    failures = cluster.progress(job.json()["id"], file_status="FAILURE")["failures"]
    assert [f["reason"] for f in failures] == ["UFS_NOT_FOUND"], failures
    assert "container 'absent-container' does not exist" in failures[0]["message"], failures
    assert report["job"]["state"] == "FAILED"


def test_wrong_account_key_is_refused_without_showing_it(cluster_factory,  # type: ignore[no-untyped-def]
                                                         azure: AzureServer) -> None:
    azure.create_container("auth-test")
    azure.put("auth-test", "d/x", b"x")
    cluster = _cluster(cluster_factory, azure, **{"fs.azure.account.key": WRONG_KEY})
    refused = cluster.cli("job", "load", "--path", "az://auth-test/d", check=False)
    assert refused.returncode == 2, refused.stderr
    assert "403 Forbidden" in refused.stderr
    assert "access to container 'auth-test' refused: check its credentials" in refused.stderr
    assert "allowlist" not in refused.stderr, "not a confinement problem"

    # Read through a worker: refused too, and neither key anywhere.
    web = cluster.api("GET", "/api/v1/master/workers").json()["workers"][0]["web"]
    through = httpx.get(f"{web}/api/v1/files", timeout=30,
                        params={"path": "az://auth-test/d/x", "read_through": "true"})
    assert through.status_code == 403, through.text
    everything = refused.stdout + refused.stderr + through.text + cluster.logs() + "".join(
        s.log() for s in [*cluster.coordinators, *cluster.workers])
    assert WRONG_KEY not in everything
    assert azure.account_key not in everything
