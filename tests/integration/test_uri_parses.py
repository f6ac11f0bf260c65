"""A LOAD parses each file's URI once at the worker's edge and carries it: at most two
parses per file (the URI, and its cache name), however many steps the file goes
through (plan, reserve, copy, commit, index). Counted on a real executor, cache dirs
and process pool; and the same bound for a metadata-only LOAD and for the reads
(the S3 API's object reader, a hit and a miss, and ``/api/v1/files``)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from alluxiojob.protocol.codec import FileEntry, FileStatus, TaskBatch, TaskOp, TaskOptions
from alluxiojob.security.paths import PathAllowlist
from alluxiojob.testing.s3 import S3Server
from alluxiojob.ufs import objects, uri
from alluxiojob.ufs.settings import UfsSettings
from alluxiojob.worker import layout
from alluxiojob.worker.cache import Cache
from alluxiojob.worker.executor import TaskExecutor
from alluxiojob.worker.reads import file_routes
from alluxiojob.worker.s3.app import S3App
from alluxiojob.worker.s3.bucket_ops import BucketOps
from alluxiojob.worker.s3.buckets import BucketTable
from alluxiojob.worker.s3.forward import Proxy
from alluxiojob.worker.s3.metrics import S3Metrics
from alluxiojob.worker.s3.objects import ObjectReader
from alluxiojob.worker.s3.ownership import Ownership
from alluxiojob.worker.s3.settings import AuthMode, S3Credentials, S3Settings

PARSERS: list[tuple[Any, str]] = [(uri, "parse_uri"), (layout, "cache_relpath"),
                                  (layout, "uri_of_relpath"), (objects, "split_uri")]


def count_parses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Wrap every URI parser wherever a module imported it; returns the live counts of
    strings taken apart (``split_uri`` given a parsed ``UfsUri`` parses nothing)."""
    calls: Counter[str] = Counter()
    for module, name in PARSERS:
        original = getattr(module, name)

        def counted(*args: Any, _f: Callable[..., Any] = original, _n: str = name) -> Any:
            if isinstance(args[0], str):
                calls[_n] += 1
            return _f(*args)

        for loaded in list(sys.modules.values()):
            if loaded is not None and getattr(loaded, "__name__", "").startswith(
                    "alluxiojob") and getattr(loaded, name, None) is original:
                monkeypatch.setattr(loaded, name, counted)
    return calls


async def test_a_load_parses_each_uri_at_most_twice(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    files = _local_files(tmp_path, 24, 700)  # from empty to larger than a partition
    cache = await _two_dirs(tmp_path)
    executor = TaskExecutor(cache, partition_size=8 * 1024, pool_size=2)
    try:
        calls = count_parses(monkeypatch)
        with trio.fail_after(120):
            result = await executor.run(TaskBatch(1, "job-1", TaskOp.LOAD, tuple(files)))
        assert [r.status for r in result.results] == [FileStatus.OK] * len(files)
        print("parses", dict(calls), "files", len(files))
        assert sum(calls.values()) <= 2 * len(files) + 2, calls
        assert calls["parse_uri"] <= len(files) + 1, calls
        for f in files:  # and it is all there, under the name the index knows
            d = cache.dir_for(f.path)
            assert d.lookup(f.path) is not None
            cached, source = d.data_path(f.path), f.path[len("file://"):]
            assert await trio.to_thread.run_sync(_read, cached) == \
                await trio.to_thread.run_sync(_read, source)
        calls.clear()  # FREE: one cache name per file
        freed = await executor.run(TaskBatch(2, "job-1", TaskOp.FREE, tuple(files)))
        assert [r.status for r in freed.results] == [FileStatus.OK] * len(files)
        assert sum(calls.values()) <= len(files) + 2, calls
        assert cache.files == 0
    finally:
        cache.close()


async def test_a_load_of_objects_parses_each_uri_at_most_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects were the costly case: sixteen parses for each one after the first."""
    with S3Server(log_path=str(tmp_path / "s3.log")) as s3:
        s3.create_bucket("parses")
        objects = {f"d/o{i:02d}": bytes([i]) * (i * 300 + 1) for i in range(16)}
        s3.put_many("parses", objects)
        settings = UfsSettings(s3_endpoint=s3.url, s3_region=s3.region, s3_path_style=True,
                               s3_access_key=s3.access_key, s3_secret_key=s3.secret_key)
        files = [FileEntry(f"s3://parses/{key}", len(data), 1) for key, data in objects.items()]
        cache = await _two_dirs(tmp_path)
        executor = TaskExecutor(cache, partition_size=8 * 1024, pool_size=2,
                                ufs_settings=settings)
        try:
            calls = count_parses(monkeypatch)
            with trio.fail_after(120):
                result = await executor.run(TaskBatch(1, "job-1", TaskOp.LOAD, tuple(files)))
            assert [r.status for r in result.results] == [FileStatus.OK] * len(files), result
            print("parses", dict(calls), "objects", len(files))
            assert sum(calls.values()) <= 2 * len(files) + 2, calls
            for f in files:
                d = cache.dir_for(f.path)
                assert d.lookup(f.path) is not None
                cached = await trio.to_thread.run_sync(_read, d.data_path(f.path))
                assert cached == objects[f.path[len("s3://parses/"):]]
        finally:
            cache.close()


async def test_a_metadata_only_load_parses_each_uri_at_most_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _local_files(tmp_path, 12, 500)
    cache = await _two_dirs(tmp_path)
    executor = TaskExecutor(cache, partition_size=8 * 1024, pool_size=1)
    try:
        calls = count_parses(monkeypatch)
        with trio.fail_after(60):
            result = await executor.run(TaskBatch(1, "job-1", TaskOp.LOAD, tuple(files),
                                                  TaskOptions(metadata_only=True)))
        assert [r.status for r in result.results] == [FileStatus.OK] * len(files), result
        print("parses", dict(calls), "files", len(files))
        assert sum(calls.values()) <= 2 * len(files), calls
        assert cache.files == 0  # recorded as listed, no data cached
    finally:
        cache.close()


async def test_reads_parse_each_uri_at_most_twice(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 API's object reader (a cached hit, then a read-through miss) and the
    worker's ``/api/v1/files``: each read of a file parses its URI at most twice."""
    files = _local_files(tmp_path, 6, 500)
    cache = await _two_dirs(tmp_path)
    executor = TaskExecutor(cache, partition_size=8 * 1024, pool_size=1)
    allowlist = PathAllowlist([f"file://{tmp_path}"])
    reader = ObjectReader(cache, executor, allowlist, UfsSettings(), only_cache=False,
                          cache_misses=False)
    app = Starlette(routes=file_routes(cache, allowlist))
    try:
        with trio.fail_after(60):
            cached = files[:3]  # the others are misses, read through
            loaded = await executor.run(TaskBatch(1, "job-1", TaskOp.LOAD, tuple(cached)))
            assert [r.status for r in loaded.results] == [FileStatus.OK] * len(cached)
            calls = count_parses(monkeypatch)
            for f in files:
                answer = await reader.read(f.path, "GET", {}, f.path)
                assert answer.status == 200
                assert answer.cached == (f in cached)
                answer.body.close()  # the descriptor of a larger hit or of a miss
            print("S3 reads", dict(calls), "files", len(files))
            assert sum(calls.values()) <= 2 * len(files), calls
            calls.clear()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
                for f in cached:
                    response = await client.get("/api/v1/files", params={"path": f.path})
                    assert response.status_code == 200, response.text
                    assert response.content == await trio.to_thread.run_sync(
                        _read, f.path[len("file://"):])
            print("file reads", dict(calls), "files", len(cached))
            assert sum(calls.values()) <= 2 * len(cached), calls
    finally:
        cache.close()


async def test_s3_api_gets_parse_each_uri_at_most_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET of an object through the S3 API's app (a bucket mounted on a local prefix),
    cached hits and read-through misses: at most two parses per file."""
    files = _local_files(tmp_path, 6, 500)
    cache = await _two_dirs(tmp_path)
    executor = TaskExecutor(cache, partition_size=8 * 1024, pool_size=1)
    allowlist = PathAllowlist([f"file://{tmp_path}"])
    settings = S3Settings(enabled=True, port=0, https_port=0, tls=False, only_https=False,
                          redirect=False, only_cache=False, cache_misses=False,
                          mode=AuthMode.PROTECTED, credentials=S3Credentials(),
                          buckets=BucketTable([f"data=file://{tmp_path}/src"]),
                          max_inflight=16)
    ufs_settings = UfsSettings()
    reader = ObjectReader(cache, executor, allowlist, ufs_settings, only_cache=False,
                          cache_misses=False)
    proxy = Proxy(4, None)
    app = S3App(settings, reader, BucketOps(settings.buckets, allowlist, ufs_settings),
                Ownership("w1", 0, 0), allowlist, S3Metrics(CollectorRegistry()), proxy)
    try:
        with trio.fail_after(60):
            cached = files[:3]
            loaded = await executor.run(TaskBatch(1, "job-1", TaskOp.LOAD, tuple(cached)))
            assert [r.status for r in loaded.results] == [FileStatus.OK] * len(cached)
            calls = count_parses(monkeypatch)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://localhost") as client:
                for f in files:
                    response = await client.get(f"/data/{Path(f.path).name}")
                    assert response.status_code == 200, response.text
                    assert response.headers["x-alluxio-cached"] == str(f in cached).lower()
                    assert response.content == await trio.to_thread.run_sync(
                        _read, f.path[len("file://"):])
            print("S3 GETs", dict(calls), "files", len(files))
            assert sum(calls.values()) <= 2 * len(files) + 2, calls  # + the bucket's root
    finally:
        await proxy.aclose()
        cache.close()


async def _two_dirs(tmp_path: Path) -> Cache:
    """A cache of two dirs (files spread over both by their names), recovered."""
    cache = Cache([tmp_path / "c1", tmp_path / "c2"], [1 << 30])
    await cache.recover()
    return cache


def _local_files(tmp_path: Path, count: int, step: int) -> list[FileEntry]:
    """``count`` files in ``tmp_path/src``, the i-th ``i * step`` bytes long."""
    src = tmp_path / "src"
    src.mkdir()
    files = []
    for i in range(count):
        path = src / f"f{i:02d}.bin"
        path.write_bytes(bytes([i]) * (i * step))
        files.append(FileEntry(f"file://{path}", path.stat().st_size,
                               path.stat().st_mtime_ns))
    return files


def _read(path: str) -> bytes:
    return Path(path).read_bytes()
