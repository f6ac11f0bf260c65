"""Who may read through the S3 API: SigV4 for real, protected mode, SIMPLE mode only
when acknowledged, redirect mode and TLS; real worker processes and real clients."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from alluxiojob.core.ring import HashRing
from tests.integration.cluster import Cluster, Service
from tests.integration.s3_fixtures import BUCKET, boto3_client, make_dataset, wait_s3_membership
from tests.integration.security_fixtures import outside_address, tls_files

pytestmark = pytest.mark.timeout(300)
__all__ = ["outside_address"]

KEY, SECRET = "AKIAALLUXIOJOBTEST", "s3cr3t-" + "x" * 33


def credentials_file(root: Path, mode: int = 0o600) -> Path:
    path = root / "s3-credentials.json"
    path.write_text(json.dumps({KEY: SECRET}))
    path.chmod(mode)
    return path


def s3_workers(cluster_factory: Callable[..., Cluster], tmp_path: Path, count: int = 1,
               **props: str) -> tuple[Cluster, Path, dict[str, bytes]]:
    root = tmp_path / "dataset"
    files = make_dataset(root)
    cluster = cluster_factory(**{"alluxio.job.path.allowlist": str(tmp_path),
                                 "alluxio.worker.s3.bucket.mounts": f"{BUCKET}=file://{root}",
                                 **props})
    for _ in range(count):
        cluster.add_worker(s3=True)
    wait_s3_membership(cluster)
    return cluster, root, files


def endpoint(worker: Service, https: bool = False) -> str:
    if https:
        return f"https://127.0.0.1:{worker.s3_https_port}"  # type: ignore[attr-defined]
    return f"http://127.0.0.1:{worker.s3_port}"  # type: ignore[attr-defined]


def skewed(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The client's clock (botocore's signer) runs ``seconds`` off."""
    import botocore.auth

    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda: real() + datetime.timedelta(seconds=seconds))


def test_sigv4_is_checked_for_real(cluster_factory: Callable[..., Cluster], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, _, files = s3_workers(cluster_factory, tmp_path, **{
        "alluxio.worker.s3.credentials.file": str(credentials_file(tmp_path))})
    worker = cluster.workers[0]
    url = endpoint(worker)
    good = boto3_client(url, KEY, SECRET)
    assert good.get_object(Bucket=BUCKET, Key="big.bin")["Body"].read() == files["big.bin"]
    assert len(good.list_objects_v2(Bucket=BUCKET)["Contents"]) == len(files)

    for client, code in ((boto3_client(url, KEY, "wrong-secret"), "SignatureDoesNotMatch"),
                         (boto3_client(url, "AKIAUNKNOWN", SECRET), "InvalidAccessKeyId")):
        with pytest.raises(ClientError) as error:
            client.get_object(Bucket=BUCKET, Key="big.bin")
        assert error.value.response["Error"]["Code"] == code
        assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unsigned = httpx.get(f"{url}/{BUCKET}/big.bin", timeout=10)
    assert unsigned.status_code == 403
    assert b"<Code>AccessDenied</Code>" in unsigned.content

    presigned = good.generate_presigned_url("get_object", Params={"Bucket": BUCKET,
                                                                  "Key": "nested/one.txt"},
                                            ExpiresIn=300)
    assert httpx.get(presigned, timeout=10).content == b"one\n"
    assert httpx.get(presigned.replace("one.txt", "big.bin"), timeout=10).status_code == 403

    skewed(monkeypatch, -3600)
    expired = good.generate_presigned_url("get_object", Params={"Bucket": BUCKET,
                                                                "Key": "nested/one.txt"},
                                          ExpiresIn=60)
    answer = httpx.get(expired, timeout=10)
    assert answer.status_code == 403
    assert b"Request has expired" in answer.content
    with pytest.raises(ClientError) as stale:
        boto3_client(url, KEY, SECRET).get_object(Bucket=BUCKET, Key="nested/one.txt")
    assert stale.value.response["Error"]["Code"] == "RequestTimeTooSkewed"

    metrics = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics",  # type: ignore[attr-defined]
                        timeout=10).text
    for text in (worker.log(), metrics):
        assert SECRET not in text


def test_a_credentials_file_others_can_read_is_refused(
        cluster_factory: Callable[..., Cluster], tmp_path: Path) -> None:
    cluster, _, _ = s3_workers(cluster_factory, tmp_path, count=0, **{
        "alluxio.worker.s3.credentials.file": str(credentials_file(tmp_path, 0o644))})
    worker = cluster.add_worker(start=False, s3=True)
    worker.start(wait=False)
    assert worker.proc is not None
    assert worker.proc.wait(60) == 2
    assert "chmod 600" in worker.log()
    assert SECRET not in worker.log()


def test_without_keys_only_loopback_and_never_a_cross_site_browser(
        cluster_factory: Callable[..., Cluster], tmp_path: Path,
        outside_address: str) -> None:  # noqa: F811
    cluster, _, files = s3_workers(cluster_factory, tmp_path, count=0)
    worker = cluster.add_worker(s3=True, **{"alluxio.worker.hostname": "0.0.0.0",
                                            "alluxio.worker.id": "127.0.0.1:0"})
    assert "accepts loopback peers only (protected mode)" in worker.log()
    port = worker.s3_port  # type: ignore[attr-defined]
    inside = f"http://127.0.0.1:{port}/{BUCKET}/nested/one.txt"
    assert httpx.get(inside, timeout=10).content == b"one\n"
    outside = httpx.get(f"http://{outside_address}:{port}/{BUCKET}/nested/one.txt",
                        timeout=10)
    assert outside.status_code == 403
    assert b"protected mode" in outside.content
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Host": "evil.example"}):
        refused = httpx.get(inside, headers=headers, timeout=10)
        assert refused.status_code == 403, headers
        assert b"<Code>AccessDenied</Code>" in refused.content
    assert boto3_client(f"http://127.0.0.1:{port}").get_object(
        Bucket=BUCKET, Key="big.bin")["Body"].read() == files["big.bin"]


def test_simple_mode_only_when_acknowledged(cluster_factory: Callable[..., Cluster],
                                            tmp_path: Path) -> None:
    cluster, _, files = s3_workers(cluster_factory, tmp_path, count=0, **{
        "alluxio.worker.s3.credentials.file": str(credentials_file(tmp_path)),
        "alluxio.worker.s3.signature.validation.enabled": "false"})
    refused = cluster.add_worker(start=False, s3=True)
    refused.start(wait=False)
    assert refused.proc is not None
    assert refused.proc.wait(60) == 2
    assert "alluxio.worker.s3.simple.auth.acknowledged" in refused.log()
    cluster.workers.pop()
    worker = cluster.add_worker(s3=True, **{"alluxio.worker.s3.simple.auth.acknowledged":
                                            "true"})
    assert "SIMPLE mode" in worker.log()
    anyone = boto3_client(endpoint(worker), "whoever", "not-the-secret")
    assert anyone.get_object(Bucket=BUCKET, Key="big.bin")["Body"].read() == files["big.bin"]


def owner_index(cluster: Cluster, root: Path, key: str) -> int:
    """The worker the ring (as the coordinators build it) gives ``key`` of the dataset."""
    ids = [f"127.0.0.1:{w.rpc_port}" for w in cluster.workers]  # type: ignore[attr-defined]
    return ids.index(HashRing(ids).owner(f"file://{root}/{key}"))


def test_redirect_mode_sends_clients_to_the_owner(cluster_factory: Callable[..., Cluster],
                                                  tmp_path: Path) -> None:
    cluster, root, files = s3_workers(cluster_factory, tmp_path, count=2, **{
        "alluxio.worker.s3.credentials.file": str(credentials_file(tmp_path)),
        "alluxio.worker.s3.redirect.enabled": "true"})
    key = next(k for k in sorted(files) if files[k] and owner_index(cluster, root, k) == 1)
    client = boto3_client(endpoint(cluster.workers[0]), KEY, SECRET)
    presigned = client.generate_presigned_url("get_object",
                                              Params={"Bucket": BUCKET, "Key": key})
    moved = httpx.get(presigned, timeout=10)
    assert moved.status_code == 307, "a non-owner answers with the owner, not the bytes"
    location = moved.headers["location"]
    assert location.startswith(endpoint(cluster.workers[1]) + "/")
    assert "x-alluxiojob-from=" in location
    assert httpx.get(location, timeout=10).content == files[key], "the owner serves it"
    assert httpx.get(presigned, timeout=10, follow_redirects=True).content == files[key]
    tampered = location.replace("x-alluxiojob-from=127.0.0.1", "x-alluxiojob-from=10.0.0.9")
    assert httpx.get(tampered, timeout=10).status_code == 403, "a marker names a member only"
    # The owner never redirects a marked request, even one it does not own.
    mine = next(k for k in sorted(files) if files[k] and owner_index(cluster, root, k) == 0)
    here = boto3_client(endpoint(cluster.workers[1]), KEY, SECRET).generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": mine})
    port = cluster.workers[1].s3_port  # type: ignore[attr-defined]
    marked = httpx.get(here + f"&x-alluxiojob-from=127.0.0.1%3A{port}", timeout=10)
    assert marked.status_code == 200
    assert marked.content == files[mine]


def test_tls_port_with_the_cluster_certificate(cluster_factory: Callable[..., Cluster],
                                               tmp_path: Path) -> None:
    tls = tls_files(tmp_path)
    cluster, _, files = s3_workers(cluster_factory, tmp_path, **tls, **{
        "alluxio.worker.s3.credentials.file": str(credentials_file(tmp_path)),
        "alluxio.worker.s3.only.https.access": "true"})
    worker = cluster.workers[0]
    secure = boto3.client("s3", endpoint_url=endpoint(worker, https=True),
                          aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                          region_name="us-east-1", verify=tls["alluxio.job.tls.ca.file"])
    assert secure.get_object(Bucket=BUCKET, Key="big.bin")["Body"].read() == files["big.bin"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(endpoint(worker) + f"/{BUCKET}/big.bin", timeout=5)

