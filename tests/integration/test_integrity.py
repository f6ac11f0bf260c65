"""The integrity of the cache, on real processes: corrupt copies are refused, evicted and
repaired; the cache and COPY/MOVE destinations never widen a file's permissions.

Damage is done by hand to the cached copies, as a disk, a stray process or an operator
would: one byte flipped (same length and mtime), a file truncated, a file appended to.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alluxiojob.testing.s3 import S3Server
from tests.integration.cluster import Cluster, cached_files, cached_under, sha256, wait_for

pytestmark = pytest.mark.timeout(300)

SIZE = 300_000


@pytest.fixture
def one_worker(cluster_factory) -> Cluster:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory()
    cluster.add_worker()
    cluster.add_coordinator()
    return cluster


def write_files(root: Path, count: int, size: int = SIZE) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"f{i}.bin" for i in range(count)]
    for path in paths:
        path.write_bytes(os.urandom(size))
    return paths


def flip_byte(path: Path, offset: int = 1234) -> None:
    """Change one byte, keeping the length and the mtime."""
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(bytes([old[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def damage(copies: list[Path]) -> None:
    """The issue's three: a flipped byte, a truncation to 1,000 bytes, 5 bytes appended."""
    flipped, truncated, appended = copies
    flip_byte(flipped)
    before = os.stat(truncated)
    os.truncate(truncated, 1000)
    os.utime(truncated, ns=(before.st_atime_ns, before.st_mtime_ns))
    with open(appended, "ab") as f:
        f.write(b"extra")


def copy_of(cluster: Cluster, source: Path) -> Path:
    [copy] = cached_files(cluster)[str(source)]
    return copy


def worker_web(cluster: Cluster) -> str:
    return f"http://127.0.0.1:{cluster.workers[0].web_port}"  # type: ignore[attr-defined]


def cat(cluster: Cluster, path: Path) -> subprocess.CompletedProcess[bytes]:
    """``alluxiojob fs cat``, its output as bytes."""
    port = cluster.coordinators[0].port  # type: ignore[attr-defined]
    return subprocess.run(
        [sys.executable, "-m", "alluxiojob.cli.main", "fs", "cat", "--path", str(path),
         "--conf", str(cluster.conf), "-D", "alluxio.coordinator.hostname=127.0.0.1",
         "-D", f"alluxio.coordinator.rest.port={port}"], capture_output=True, timeout=60)


def load(cluster: Cluster, path: Path | str, **options: object) -> dict[str, object]:
    job = cluster.submit("load", str(path), **options)
    return cluster.wait_state(str(job["id"]), "SUCCEEDED")


# ---------------------------------------------------------------------- reads
def test_a_read_refuses_and_evicts_a_corrupt_copy(one_worker: Cluster, tmp_path: Path) -> None:
    files = write_files(tmp_path / "src", 4)
    load(one_worker, tmp_path / "src")
    copies = [copy_of(one_worker, f) for f in files[:3]]
    damage(copies)

    # The worker's own answer: 409 and a reason, never the wrong bytes.
    reply = httpx.get(f"{worker_web(one_worker)}/api/v1/files",
                      params={"path": str(files[1])}, timeout=30)
    assert reply.status_code == 409, (reply.status_code, reply.headers)
    assert reply.json()["error"] == "CACHE_CORRUPT"
    assert "holds 1000 bytes, the index says 300000" in reply.json()["message"]
    assert not copies[1].exists(), "the truncated copy is evicted"

    for source, copy, why in ((files[0], copies[0], "checksum"),
                              (files[2], copies[2], "300005 bytes")):
        refused = cat(one_worker, source)
        assert refused.returncode != 0, "a corrupt copy must not be served"
        assert refused.stdout == b""
        assert why in refused.stderr.decode(), refused.stderr
        assert not copy.exists()

    # The intact file is still served, and the evicted ones are misses now.
    good = cat(one_worker, files[3])
    assert good.returncode == 0
    assert good.stdout == files[3].read_bytes()
    location = httpx.get(f"{worker_web(one_worker)}/api/v1/location",
                         params={"path": str(tmp_path / "src")}, timeout=30).json()
    assert location["files"] == 1
    miss = httpx.get(f"{worker_web(one_worker)}/api/v1/files",
                     params={"path": str(files[0])}, timeout=30)
    assert miss.status_code == 404
    # Loaded again, the same file is served byte for byte.
    load(one_worker, tmp_path / "src", skip_if_exists=True)
    reread = httpx.get(f"{worker_web(one_worker)}/api/v1/files",
                       params={"path": str(files[0])}, timeout=30)
    assert reread.status_code == 200
    assert reread.content == files[0].read_bytes()


# ---------------------------------------------------------------------- verify
def test_verify_compares_content_and_repairs_it(one_worker: Cluster, tmp_path: Path) -> None:
    files = write_files(tmp_path / "src", 5)
    load(one_worker, tmp_path / "src")
    copies = [copy_of(one_worker, f) for f in files[:3]]
    damage(copies)

    report = load(one_worker, tmp_path / "src", verify=True, skip_if_exists=True)
    # The load pass reloads the two whose length differs; the flipped one has the
    # listed length and mtime, so only its content tells: the verify pass repairs it.
    files_report = report["files"]
    assert isinstance(files_report, dict)
    assert files_report["processed"] == 2, report
    assert report["files_repaired"] == 1, report
    assert files_report["failed"] == 0
    for source in files:
        assert sha256(copy_of(one_worker, source)) == sha256(source), source


# ---------------------------------------------------------------------- fs check
def test_fs_check_reports_evicts_and_reloads(one_worker: Cluster, tmp_path: Path) -> None:
    files = write_files(tmp_path / "src", 4)
    load(one_worker, tmp_path / "src")
    copies = [copy_of(one_worker, f) for f in files[:3]]
    damage(copies)

    dry = one_worker.cli("fs", "check", "--path", str(tmp_path / "src"), "--no-repair",
                         check=False)
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert "Files: 4" in dry.stdout
    assert "Corrupt: 3" in dry.stdout
    assert "Evicted: 0" in dry.stdout
    assert all(c.exists() for c in copies), "--no-repair only reports"
    for source in files[:3]:
        assert f"corrupt: file://{source}" in dry.stdout, dry.stdout
    assert "checksum is crc32c:" in dry.stdout

    fixed = one_worker.cli("fs", "check", "--path", str(tmp_path / "src"), "--reload",
                           check=False)
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr
    assert "Corrupt: 3" in fixed.stdout
    assert "Evicted: 3" in fixed.stdout
    assert "Reloading 3 evicted files" in fixed.stdout

    def reloaded() -> bool:
        cached = cached_files(one_worker)
        return all(str(f) in cached for f in files)

    wait_for(reloaded, 60, "the evicted files to be loaded again")
    clean = one_worker.cli("fs", "check", "--path", str(tmp_path / "src"))
    assert "Files: 4" in clean.stdout
    assert "Corrupt: 0" in clean.stdout
    for source in files:
        assert sha256(copy_of(one_worker, source)) == sha256(source)


def test_scheduled_scrub_evicts_a_flipped_copy(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**{"alluxio.worker.cache.scrub.interval": "1s"})
    cluster.add_worker()
    cluster.add_coordinator()
    files = write_files(tmp_path / "src", 2)
    load(cluster, tmp_path / "src")
    copy = copy_of(cluster, files[0])
    flip_byte(copy)
    wait_for(lambda: not copy.exists(), 60, "the scrub to evict the flipped copy")
    assert copy_of(cluster, files[1]).exists()
    assert "cached file is corrupt" in cluster.workers[0].log()


# ---------------------------------------------------------------------- objects
@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = tmp_path_factory.mktemp("s3") / "s3.log"
    with S3Server(log_path=str(log)) as server:
        yield server


def test_objects_get_checksums_small_and_ranged(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    """A whole object (checksummed as written, its MD5 checked against its ETag) and a
    ranged one (read back once its ranges are in): both pass, and both are checked."""
    cluster: Cluster = cluster_factory(**{
        **s3.properties(), "alluxio.underfs.object.store.multi.range.chunk.size": "1MiB"})
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("integrity")
    objects = {"d/small.bin": os.urandom(SIZE), "d/large.bin": os.urandom(2 * 1024 * 1024 + 7)}
    s3.put_many("integrity", objects)
    load(cluster, "s3://integrity/d")
    cached = cached_under(cluster, "s3/integrity")
    copies = {key: cached["d%/" + key.split("/")[1]][0] for key in objects}
    for key, data in objects.items():
        assert copies[key].read_bytes() == data
        flip_byte(copies[key], 100)
    check = cluster.cli("fs", "check", "--path", "s3://integrity/d", check=False)
    assert "Files: 2" in check.stdout, check.stdout
    assert "Corrupt: 2" in check.stdout
    assert "Unverified: 0" in check.stdout


# ---------------------------------------------------------------------- permissions
def _nobody_reads(path: Path) -> bool:
    return subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(path)],
                          capture_output=True, timeout=30).returncode == 0


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="alluxiojob-perm-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                    reason="needs root and runuser to act as user nobody")
def test_private_files_stay_private(open_root: Path) -> None:
    previous = os.umask(0o022)  # the usual umask: new files 0644 unless we say otherwise
    cluster = Cluster(open_root / "cluster", {"alluxio.job.cluster.token": "t0ken-integrity"})
    try:
        cluster.root.chmod(0o755)
        cluster.add_worker()
        cluster.add_coordinator()
        public = open_root / "public.txt"
        public.write_text("anyone")
        public.chmod(0o644)
        assert _nobody_reads(public), "the harness: nobody reads a public file"

        secret_dir = open_root / "secret"
        secret_dir.mkdir(mode=0o700)
        key = secret_dir / "id_rsa"
        key.write_text("-----BEGIN PRIVATE KEY-----\n")
        key.chmod(0o600)
        load(cluster, secret_dir)
        [copy] = cached_files(cluster)[str(key)]
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        cache = cluster.workers[0].cache_dir  # type: ignore[attr-defined]
        for sub in (cache, cache / "data", cache / "tmp", cache / "index"):
            assert stat.S_IMODE(sub.stat().st_mode) == 0o700, sub
        assert not _nobody_reads(copy)

        dst = open_root / "copied"
        cluster.cli("job", "copy", "--src", str(secret_dir), "--dst", str(dst), "--wait")
        copied = dst / "id_rsa"
        assert copied.read_text() == key.read_text()
        assert stat.S_IMODE(copied.stat().st_mode) == 0o600
        assert not _nobody_reads(copied), "a COPY must not widen a 0600 file"

        moved_src = open_root / "to-move"
        moved_src.mkdir()
        (moved_src / "group.txt").write_text("group only")
        (moved_src / "group.txt").chmod(0o640)
        moved = open_root / "moved"
        cluster.cli("job", "move", "--src", str(moved_src), "--dst", str(moved), "--wait")
        assert stat.S_IMODE((moved / "group.txt").stat().st_mode) == 0o640
        assert not _nobody_reads(moved / "group.txt")
        logs = json.dumps(cluster.logs())
        assert "Traceback" not in logs
    finally:
        os.umask(previous)
        cluster.stop_all()
