"""Alluxio's own Python client, alluxiofs 1.1.17, against real workers: it finds a
file's worker with ``/v1/node``, stats with ``/v1/info``, lists with ``/v1/files`` (the
worker HTTP API) and reads ``http://<Host>:29998/<bucket>/<key>`` with ranged GETs and
no credentials. Port 29998 is fixed in alluxiofs, so each worker listens on its own
loopback address (127.x.y.z)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster, free_port
from tests.integration.s3_fixtures import BUCKET, make_dataset, owners_of
from tests.integration.test_s3_clients import client_env, need, run_client

pytestmark = pytest.mark.timeout(600)
S3_PORT = 29998  # what alluxiofs 1.1.17 reads from, whatever the cluster says


def test_alluxiofs_reads_lists_and_loads(cluster_factory: Callable[..., Cluster],
                                         tmp_path: Path) -> None:
    python = need("alluxiofs")
    root = tmp_path / "dataset"
    make_dataset(root)
    coordinator_port = free_port()  # in the site file: workers forward /v1/load to it
    cluster = cluster_factory(**{"alluxio.job.path.allowlist": str(tmp_path),
                                 "alluxio.worker.s3.bucket.mounts": f"{BUCKET}=file://{root}",
                                 "alluxio.coordinator.hostname": "127.0.0.1",
                                 "alluxio.coordinator.rest.port": str(coordinator_port)})
    base = f"127.{random.randrange(1, 255)}.{random.randrange(256)}"
    lines = []
    for index in range(2):
        ip, http = f"{base}.{index + 2}", free_port()
        worker = cluster.add_worker(start=False, s3=True, **{
            "alluxio.worker.hostname": ip, "alluxio.worker.rest.port": str(S3_PORT),
            "alluxio.worker.http.server.port": str(http),
            "alluxio.worker.http.server.enabled": "true"})
        worker.health_url = f"http://{ip}:{worker.web_port}/healthz"  # type: ignore[attr-defined]
        worker.http_port = http  # type: ignore[attr-defined]
        lines.append(f"{ip}:{worker.rpc_port} s3={S3_PORT} http={http}")  # type: ignore[attr-defined]
    cluster.workers_file.write_text("\n".join(lines) + "\n")
    for worker in cluster.workers:
        worker.start()
    cluster.add_coordinator(port=coordinator_port)
    cluster.cli("job", "load", "--path", str(root), "--wait")
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert set(owners_of(cluster, root)) == set(files)

    hosts = ",".join(f"{base}.{i + 2}:{w.http_port}"  # type: ignore[attr-defined]
                     for i, w in enumerate(cluster.workers))
    code = """
        import hashlib, json
        from alluxiofs.client import AlluxioClient
        client = AlluxioClient(worker_hosts=HOSTS)
        names = sorted(s.name for s in client.listdir("file://" + ROOT + "/nested"))
        shas, kinds = {}, {}
        for key in KEYS:
            uri = "file://" + ROOT + "/" + key
            status = client.get_file_status(uri)
            kinds[key] = [status.type, status.size]
            shas[key] = hashlib.sha256(
                client.read_file_range(uri, status.name, 0, -1) if status.size else b""
            ).hexdigest()
        part = client.read_file_range("file://" + ROOT + "/big.bin", "/" + BUCKET + "/big.bin",
                                      1000, 5000)
        try:
            client.get_file_status("file://" + ROOT + "/missing.txt")
            missing = "found"
        except FileNotFoundError:
            missing = "not found"
        loaded = client.load("file://" + ROOT + "/nested", timeout=120)
        print(json.dumps({"names": names, "shas": shas, "kinds": kinds, "missing": missing,
                          "part": hashlib.sha256(part).hexdigest(), "loaded": loaded}))
    """
    out = run_client(python, code, client_env(tmp_path), HOSTS=hosts, ROOT=str(root),
                     BUCKET=BUCKET, KEYS=sorted(files))
    assert out["names"] == [f"/{BUCKET}/nested/deep", f"/{BUCKET}/nested/one.txt"]
    assert out["shas"] == expected_of(files)
    assert out["kinds"]["big.bin"] == ["file", len(files["big.bin"])]
    assert out["missing"] == "not found"
    assert out["part"] == expected_of({"p": files["big.bin"][1000:6000]})["p"]
    assert out["loaded"] is True


def expected_of(files: dict[str, bytes]) -> dict[str, str]:
    import hashlib

    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
