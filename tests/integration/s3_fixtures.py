"""A LOADed dataset behind two real workers serving the S3 API, for the S3 tests.

``loaded`` starts a coordinator and two workers (S3 API on, STATIC membership with each
worker's S3 port in the list), builds a local dataset, mounts it as bucket ``data`` and
LOADs it, so that each file is cached on the worker the ring gives it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.cluster import Cluster, cached_files, wait_for

BUCKET = "data"


def make_dataset(root: Path) -> dict[str, bytes]:
    """Key -> content: nested keys, odd names, an empty file, a multi-chunk file."""
    files: dict[str, bytes] = {}
    for i in range(40):
        files[f"small/part-{i:03d}.bin"] = hashlib.sha256(str(i).encode()).digest() * (i + 1)
    files["nested/deep/er/leaf.txt"] = b"leaf\n"
    files["nested/one.txt"] = b"one\n"
    files["odd names/a b+c.txt"] = b"space and plus\n"
    files["odd names/\u00e9t\u00e9.txt"] = "\u00e9t\u00e9\n".encode()
    files["empty.bin"] = b""
    files["big.bin"] = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB, not chunk-aligned
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@dataclass
class Loaded:
    cluster: Cluster
    root: Path  # the dataset, mounted as bucket "data"
    files: dict[str, bytes]
    owners: dict[str, int]  # key -> index of the worker that cached it

    def endpoint(self, worker: int = 0, https: bool = False) -> str:
        service = self.cluster.workers[worker]
        if https:
            return f"https://127.0.0.1:{service.s3_https_port}"  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{service.s3_port}"  # type: ignore[attr-defined]

    def owned_by(self, worker: int) -> list[str]:
        return sorted(k for k, w in self.owners.items() if w == worker)

    def metrics(self, worker: int = 0) -> dict[str, float]:
        service = self.cluster.workers[worker]
        text = httpx.get(f"http://127.0.0.1:{service.web_port}/metrics",  # type: ignore[attr-defined]
                         timeout=10).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


def owners_of(cluster: Cluster, root: Path) -> dict[str, int]:
    owners: dict[str, int] = {}
    for source, copies in cached_files(cluster).items():
        path = Path(source)
        if root in path.parents:
            worker = next(i for i, w in enumerate(cluster.workers)
                          if str(w.cache_dir) in str(copies[0]))  # type: ignore[attr-defined]
            owners[str(path.relative_to(root))] = worker
    return owners


def s3_membership(log: str) -> int:
    """How many workers a worker's S3 API last said its ring holds (0: not said yet)."""
    seen = 0
    for line in log.splitlines():
        if "S3 API membership" in line:
            try:
                seen = int(json.loads(line)["workers"])
            except (ValueError, KeyError, TypeError):
                continue
    return seen


def wait_s3_membership(cluster: Cluster) -> None:
    """Wait until every worker's S3 API places paths on the ring of all the workers, as
    the coordinator does: a worker reads the worker list every 2 s, and one started
    before the others would otherwise answer for paths it does not own."""
    count = len(cluster.workers)
    wait_for(lambda: all(s3_membership(w.log()) == count for w in cluster.workers), 30,
             f"every worker's S3 API to know all {count} workers")


def start_loaded(cluster_factory: Callable[..., Cluster], tmp_path: Path,
                 worker_props: dict[str, str] | None = None, **properties: str) -> Loaded:
    root = tmp_path / "dataset"
    make_dataset(root)  # beside any file already there
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    props = {"alluxio.job.path.allowlist": str(tmp_path),
             "alluxio.worker.s3.bucket.mounts": f"{BUCKET}=file://{root}",
             **properties}
    cluster = cluster_factory(**props)
    for _ in range(2):
        cluster.add_worker(s3=True, **(worker_props or {}))
    wait_s3_membership(cluster)
    cluster.add_coordinator()
    result = cluster.cli("job", "load", "--path", str(root), "--wait")
    assert "SUCCEEDED" in result.stdout, result.stdout
    owners = owners_of(cluster, root)
    assert set(owners) == set(files), "the LOAD cached every file"
    assert {0, 1} <= set(owners.values()), "both workers own part of the dataset"
    return Loaded(cluster, root, files, owners)


@pytest.fixture
def loaded(cluster_factory: Callable[..., Cluster], tmp_path: Path) -> Loaded:
    return start_loaded(cluster_factory, tmp_path)


def boto3_client(endpoint: str, key: str = "anyone", secret: str = "anything",
                 **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      signature_version="s3v4",
                                      retries={"max_attempts": 1}, **config))
