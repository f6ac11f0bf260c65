"""The S3 API on real workers: reads of a LOADed dataset, listings, ranges, conditions,
read-through, errors and load shedding, with boto3 and plain HTTP."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.integration.cluster import Cluster, wait_for
from tests.integration.s3_fixtures import BUCKET, Loaded, boto3_client, loaded, start_loaded

pytestmark = pytest.mark.timeout(300)
__all__ = ["loaded"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_boto3_reads_every_file_through_one_worker_from_the_caches(loaded: Loaded) -> None:
    s3 = boto3_client(loaded.endpoint(0))
    paginator = s3.get_paginator("list_objects_v2")
    listed = [o["Key"] for page in paginator.paginate(Bucket=BUCKET,
                                                      PaginationConfig={"PageSize": 7})
              for o in page.get("Contents", [])]
    assert listed == sorted(loaded.files), "every key, once, in S3 order, across pages"
    sizes = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert sizes == {k: len(v) for k, v in loaded.files.items()}

    top = s3.list_objects_v2(Bucket=BUCKET, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["nested/", "odd names/", "small/"]
    assert [o["Key"] for o in top["Contents"]] == ["big.bin", "empty.bin"]
    nested = s3.list_objects_v2(Bucket=BUCKET, Prefix="nested/", Delimiter="/")
    assert [p["Prefix"] for p in nested["CommonPrefixes"]] == ["nested/deep/"]
    assert [o["Key"] for o in nested["Contents"]] == ["nested/one.txt"]
    v1 = s3.list_objects(Bucket=BUCKET, Prefix="small/part-00", MaxKeys=3)
    assert [o["Key"] for o in v1["Contents"]] == [f"small/part-00{i}.bin" for i in range(3)]
    assert v1["IsTruncated"] is True
    after = s3.list_objects_v2(Bucket=BUCKET, StartAfter="small/part-038.bin")
    assert [o["Key"] for o in after["Contents"]] == ["small/part-039.bin"]

    # Hits never touch the UFS: with the dataset gone, every byte still comes back,
    # from its owner's cache (the other worker's through the proxy).
    shutil.rmtree(loaded.root)
    for key, data in loaded.files.items():
        response = s3.get_object(Bucket=BUCKET, Key=key)
        assert sha(response["Body"].read()) == sha(data), key
        assert response["ResponseMetadata"]["HTTPHeaders"]["x-alluxio-cached"] == "true", key
    assert loaded.owned_by(1), "some files were read from the other worker"
    forwarded = loaded.metrics(0)['alluxio_worker_s3_forwarded_total{how="proxy"}']
    assert forwarded == len(loaded.owned_by(1))
    assert loaded.metrics(1)["alluxio_worker_s3_cache_hits_total"] >= len(loaded.owned_by(1))
    assert loaded.metrics(0)["alluxio_worker_s3_cache_misses_total"] == 0
    # The coordinator's report (and its web page) shows each worker's read traffic.
    report = loaded.cluster.api("GET", "/api/v1/master/report").json()
    first = next(w for w in report["workers"] if w["worker"].endswith(
        f":{loaded.cluster.workers[0].rpc_port}"))  # type: ignore[attr-defined]
    assert first["s3_bytes_served"] >= sum(len(v) for v in loaded.files.values())
    assert first["s3_requests"] >= len(loaded.files)


def test_ranges_conditions_and_errors(loaded: Loaded) -> None:
    s3 = boto3_client(loaded.endpoint(0))
    data = loaded.files["big.bin"]
    part = s3.get_object(Bucket=BUCKET, Key="big.bin", Range="bytes=100-1099")
    assert part["Body"].read() == data[100:1100]
    assert part["ContentRange"] == f"bytes 100-1099/{len(data)}"
    assert s3.get_object(Bucket=BUCKET, Key="big.bin", Range="bytes=-5")["Body"].read() \
        == data[-5:]
    assert s3.get_object(Bucket=BUCKET, Key="big.bin",
                         Range=f"bytes={len(data) - 3}-")["Body"].read() == data[-3:]
    with pytest.raises(ClientError) as bad_range:
        s3.get_object(Bucket=BUCKET, Key="big.bin", Range=f"bytes={len(data)}-")
    assert bad_range.value.response["Error"]["Code"] == "InvalidRange"
    assert bad_range.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416

    head = s3.head_object(Bucket=BUCKET, Key="big.bin")
    etag, modified = head["ETag"], head["LastModified"]
    assert head["ContentLength"] == len(data)
    assert s3.head_object(Bucket=BUCKET, Key="big.bin")["ETag"] == etag, "a stable ETag"
    url = f"{loaded.endpoint(0)}/{BUCKET}/big.bin"
    assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert httpx.get(url, headers={"If-Match": '"other"'}).status_code == 412
    assert httpx.get(url, headers={"If-Match": etag, "Range": "bytes=0-9"}).content \
        == data[:10]
    since = modified.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert httpx.get(url, headers={"If-Modified-Since": since}).status_code == 304
    whole = httpx.get(url, headers={"Range": "bytes=0--2"})  # malformed: ignored
    assert whole.status_code == 200
    assert whole.content == data

    for key, code in (("missing.txt", "NoSuchKey"), ("../outside", "AccessDenied"),
                      ("nested/../../x", "AccessDenied")):
        with pytest.raises(ClientError) as error:
            s3.get_object(Bucket=BUCKET, Key=key)
        assert error.value.response["Error"]["Code"] == code, key
    with pytest.raises(ClientError) as outside:
        s3.list_objects_v2(Bucket="not-allowed-bucket")
    assert outside.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as write:
        s3.put_object(Bucket=BUCKET, Key="new.txt", Body=b"x")
    assert write.value.response["Error"]["Code"] == "NotImplemented"
    assert write.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] is None
    s3.head_bucket(Bucket=BUCKET)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [BUCKET]

    # Links out of the bucket: neither listed nor served.
    secret = loaded.root.parent / "secret"
    secret.mkdir()
    (secret / "key.pem").write_bytes(b"private")
    (loaded.root / "escape").symlink_to(secret)
    (loaded.root / "escape.pem").symlink_to(secret / "key.pem")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert not [k for k in keys if k.startswith("escape")]
    for key in ("escape/key.pem", "escape.pem"):
        with pytest.raises(ClientError) as escaped:
            s3.get_object(Bucket=BUCKET, Key=key)
        assert escaped.value.response["Error"]["Code"] == "AccessDenied", key


def test_a_miss_is_read_through_and_then_cached_on_its_owner(loaded: Loaded) -> None:
    s3 = boto3_client(loaded.endpoint(0))
    new = {f"fresh/{i}.bin": bytes([i]) * (1000 + i) for i in range(6)}
    for key, data in new.items():
        (loaded.root / key).parent.mkdir(parents=True, exist_ok=True)
        (loaded.root / key).write_bytes(data)
    for key, data in new.items():
        response = s3.get_object(Bucket=BUCKET, Key=key)
        assert response["Body"].read() == data
        assert response["ResponseMetadata"]["HTTPHeaders"]["x-alluxio-cached"] == "false"

    def all_cached() -> bool:
        return all(s3.head_object(Bucket=BUCKET, Key=k)["ResponseMetadata"]["HTTPHeaders"]
                   ["x-alluxio-cached"] == "true" for k in new)

    wait_for(all_cached, 30, "the read-through files to be cached")
    for key in new:
        (loaded.root / key).unlink()
    for key, data in new.items():
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


@pytest.mark.parametrize("mode", ["NO_CACHE", "ONLY_CACHE"])
def test_read_types(cluster_factory: Callable[..., Cluster], tmp_path: Path,
                    mode: str) -> None:
    props = ({"alluxio.user.file.readtype.default": "NO_CACHE"} if mode == "NO_CACHE"
             else {"alluxio.worker.s3.only.read.cache.data.enabled": "true"})
    loaded = start_loaded(cluster_factory, tmp_path, **props)
    s3 = boto3_client(loaded.endpoint(0))
    (loaded.root / "late.txt").write_bytes(b"late\n")
    if mode == "ONLY_CACHE":
        with pytest.raises(ClientError) as error:
            s3.get_object(Bucket=BUCKET, Key="late.txt")
        assert error.value.response["Error"]["Code"] == "NoSuchKey"
        assert s3.get_object(Bucket=BUCKET, Key="nested/one.txt")["Body"].read() == b"one\n"
        return
    for _ in range(2):
        response = s3.get_object(Bucket=BUCKET, Key="late.txt")
        assert response["Body"].read() == b"late\n"
        assert response["ResponseMetadata"]["HTTPHeaders"]["x-alluxio-cached"] == "false"


def test_past_the_in_flight_limit_requests_are_shed(cluster_factory: Callable[..., Cluster],
                                                     tmp_path: Path) -> None:
    loaded = start_loaded(cluster_factory, tmp_path,
                          worker_props={"alluxio.worker.s3.max.inflight.requests": "1"})
    key = loaded.owned_by(0)[0] if "big.bin" not in loaded.owned_by(0) else "big.bin"
    url = f"{loaded.endpoint(0)}/{BUCKET}/"
    with httpx.Client(timeout=30) as client, \
            client.stream("GET", url + "big.bin") as held:  # noqa: F841 (held open)
        shed = httpx.get(url + key, timeout=30)
        assert shed.status_code == 503
        assert b"<Code>SlowDown</Code>" in shed.content
    assert httpx.get(url + key, timeout=30).status_code == 200, "served once the slot is free"
    assert loaded.metrics(0)["alluxio_worker_s3_requests_shed_total"] >= 1


def test_etcd_membership_gives_the_same_owners(cluster_factory: Callable[..., Cluster],
                                               tmp_path: Path) -> None:
    from alluxiojob.testing.etcd import EtcdServer

    with EtcdServer(data_dir=tmp_path / "etcd") as etcd:
        loaded = start_loaded(cluster_factory, tmp_path, **{
            "alluxio.worker.membership.manager.type": "ETCD",
            "alluxio.etcd.endpoints": etcd.url})
        s3 = boto3_client(loaded.endpoint(0))
        for key, data in loaded.files.items():
            response = s3.get_object(Bucket=BUCKET, Key=key)
            assert response["Body"].read() == data, key
            assert response["ResponseMetadata"]["HTTPHeaders"]["x-alluxio-cached"] == "true"
        forwarded = loaded.metrics(0)['alluxio_worker_s3_forwarded_total{how="proxy"}']
        assert forwarded == len(loaded.owned_by(1)), "the etcd registrations name S3 ports"
        loaded.cluster.stop_all()


def test_stalled_and_many_clients_do_not_wedge_the_worker(loaded: Loaded) -> None:
    """Clients that stop reading mid-body, and 256 connections at once, leave the S3 API
    answering and the worker's LOADs running."""
    import socket
    import threading

    port = int(loaded.endpoint(0).rsplit(":", 1)[1])
    stalled = []
    for _ in range(16):  # each asks for ~3 MiB and reads nothing
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /{BUCKET}/big.bin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
                     .encode())
        stalled.append(sock)
    results: list[int] = []
    lock = threading.Lock()
    keys = [k for k in loaded.owned_by(0) if loaded.files[k]][:8]

    def fetch(i: int) -> None:
        answer = httpx.get(f"{loaded.endpoint(0)}/{BUCKET}/{keys[i % len(keys)]}",
                           timeout=60)
        with lock:
            results.append(answer.status_code)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(256)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(results) == 256
    assert set(results) <= {200, 503}, "served, or shed with SlowDown: never an error"
    assert results.count(200) >= 128
    new = loaded.root / "after"
    new.mkdir()
    (new / "x.bin").write_bytes(b"x" * 1000)
    done = loaded.cluster.cli("job", "load", "--path", str(new), "--wait")
    assert "SUCCEEDED" in done.stdout, "LOADs still run while clients stall"
    s3 = boto3_client(loaded.endpoint(0))
    assert s3.get_object(Bucket=BUCKET, Key="after/x.bin")["Body"].read() == b"x" * 1000
    for sock in stalled:
        sock.close()
