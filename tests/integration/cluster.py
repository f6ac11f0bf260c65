"""Real coordinator and worker processes on loopback, for integration tests.

Every process gets free random ports and its own directories under the test's tmp dir.
Waiting is always on a condition (a health check, a job state), polled with a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from alluxiojob.testing.ports import free_port

T = TypeVar("T")
SETTLED_STATES = {"SUCCEEDED", "FAILED", "STOPPED"}


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the service may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the worker's pool processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


@dataclass
class Service:
    kind: str
    name: str
    args: list[str]
    log_path: Path
    health_url: str
    proc: subprocess.Popen[bytes] | None = None
    prefix: tuple[str, ...] = ()  # e.g. setpriv, to run without some capabilities
    verify: Any = True  # httpx's verify: an SSLContext with the test CA under TLS

    def start(self, wait: bool = True) -> None:
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "alluxiojob.cli.main", self.kind, *self.args],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                     + self.log_path.read_text(errors="replace")[-3000:])
            return httpx.get(self.health_url, timeout=1, verify=self.verify).status_code == 200

        wait_for(healthy, timeout, f"{self.name} to be healthy")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    root: Path
    properties: dict[str, str] = field(default_factory=dict)
    coordinators: list[Service] = field(default_factory=list)
    workers: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.workers_file = self.root / "workers"
        self.workers_file.write_text("")
        self.conf = self.root / "alluxio-site.properties"
        defaults = {
            "alluxio.work.dir": str(self.root / "work"),
            "alluxio.worker.static.config.file": str(self.workers_file),
            "alluxio.coordinator.scheduler.job.etcd.poll.interval": "200ms",
            "alluxio.job.retry.backoff": "100ms",
            "alluxio.coordinator.failure.detection.timeout": "5s",
        }
        defaults.update(self.properties)
        self.properties = defaults
        self.write_conf()

    # ------------------------------------------------------------------ client side
    @property
    def scheme(self) -> str:
        tls = ("alluxio.job.tls.ca.file", "alluxio.job.tls.cert.file")
        return "https" if any(self.properties.get(k) for k in tls) else "http"

    def client_options(self) -> dict[str, Any]:
        """What an HTTP client of this cluster sends: the token, and the CA to verify."""
        token = self.properties.get("alluxio.job.cluster.token", "")
        token_file = self.properties.get("alluxio.job.cluster.token.file", "")
        if token_file:
            token = Path(token_file).read_text().strip()
        ca = self.properties.get("alluxio.job.tls.ca.file", "")
        return {
            "headers": {"Authorization": f"Bearer {token}"} if token else {},
            "verify": ssl.create_default_context(cafile=ca) if ca else True,
        }

    def write_conf(self) -> None:
        self.conf.write_text("".join(f"{k}={v}\n" for k, v in self.properties.items()))

    # ------------------------------------------------------------------ services
    def add_worker(self, start: bool = True, prefix: tuple[str, ...] = (), s3: bool = False,
                   **props: str) -> Service:
        """``s3``: serve the S3 API on free ports, announced in the worker list."""
        index = len(self.workers)
        rpc, web = free_port(), free_port()
        cache = self.root / f"cache{index}"
        args = ["--conf", str(self.conf), "-D", f"alluxio.worker.rpc.port={rpc}",
                "-D", f"alluxio.worker.web.port={web}",
                "-D", f"alluxio.worker.page.store.dirs={cache}",
                "-D", "alluxio.worker.hostname=127.0.0.1"]
        line = f"127.0.0.1:{rpc}"
        if s3:
            s3_port, s3_https = free_port(), free_port()
            args += ["-D", "alluxio.worker.s3.api.enabled=true",
                     "-D", f"alluxio.worker.rest.port={s3_port}",
                     "-D", f"alluxio.worker.s3.https.port={s3_https}"]
            line += f" s3={s3_port} s3s={s3_https}"
        for key, value in props.items():
            args += ["-D", f"{key}={value}"]
        service = Service("worker", f"worker{index}", args, self.root / f"worker{index}.log",
                          f"{self.scheme}://127.0.0.1:{web}/healthz", prefix=prefix,
                          verify=self.client_options()["verify"])
        service.rpc_port = rpc  # type: ignore[attr-defined]
        service.web_port = web  # type: ignore[attr-defined]
        service.cache_dir = cache  # type: ignore[attr-defined]
        if s3:
            service.s3_port = s3_port  # type: ignore[attr-defined]
            service.s3_https_port = s3_https  # type: ignore[attr-defined]
        self.workers.append(service)
        with open(self.workers_file, "a") as f:
            f.write(line + "\n")
        if start:
            service.start()
        return service

    def add_coordinator(self, start: bool = True, port: int | None = None,
                        **props: str) -> Service:
        index = len(self.coordinators)
        port = port or free_port()
        args = ["--conf", str(self.conf), "-D", f"alluxio.coordinator.rest.port={port}",
                "-D", "alluxio.coordinator.hostname=127.0.0.1"]
        for key, value in props.items():
            args += ["-D", f"{key}={value}"]
        service = Service("coordinator", f"coordinator{index}", args,
                          self.root / f"coordinator{index}.log",
                          f"{self.scheme}://127.0.0.1:{port}/healthz",
                          verify=self.client_options()["verify"])
        service.port = port  # type: ignore[attr-defined]
        self.coordinators.append(service)
        if start:
            service.start()
        return service

    def stop_all(self) -> None:
        for service in [*self.coordinators, *self.workers]:
            if service.proc is not None and service.proc.poll() is None:
                try:
                    service.signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            service.stop()

    # ------------------------------------------------------------------ REST / CLI
    def url(self, coordinator: int = 0) -> str:
        port = self.coordinators[coordinator].port  # type: ignore[attr-defined]
        return f"{self.scheme}://127.0.0.1:{port}"

    def api(self, method: str, path: str, coordinator: int = 0, **kwargs: Any) -> httpx.Response:
        options = self.client_options()
        options["headers"].update(kwargs.pop("headers", {}))
        return httpx.request(method, self.url(coordinator) + path, timeout=30,
                             **{**options, **kwargs})

    def submit(self, job_type: str, path: str, coordinator: int = 0,
               **options: Any) -> dict[str, Any]:
        response = self.api("POST", f"/api/v1/master/submit_job/{job_type.lower()}",
                            coordinator, json={"path": str(path), "options": options})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def progress(self, job_id: str, coordinator: int = 0, **params: str) -> dict[str, Any]:
        response = self.api("GET", f"/api/v1/master/job/{job_id}/progress", coordinator,
                            params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_state(self, job_id: str, states: set[str] | str, timeout: float = 120,
                   coordinator: int = 0) -> dict[str, Any]:
        wanted = {states} if isinstance(states, str) else states

        def reached() -> dict[str, Any] | None:
            report = self.progress(job_id, coordinator)
            state = report["job"]["state"]
            if state in wanted:
                return report
            if state in SETTLED_STATES:
                raise AssertionError(f"job {job_id} ended {state}: {report['job']['error']}"
                                     f"\n{self.logs()}")
            return None

        return wait_for(reached, timeout, f"job {job_id} to reach {sorted(wanted)}",
                        interval=0.1)

    def cli(self, *args: str, check: bool = True, coordinator: int = 0,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        port = self.coordinators[coordinator].port if self.coordinators else 19999  # type: ignore[attr-defined]
        command = [sys.executable, "-m", "alluxiojob.cli.main", *args, "--conf", str(self.conf),
                   "-D", "alluxio.coordinator.hostname=127.0.0.1",
                   "-D", f"alluxio.coordinator.rest.port={port}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env=dict(os.environ, COLUMNS="200"))
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} ---\n{s.log()[-4000:]}"
                         for s in [*self.coordinators, *self.workers])


# ---------------------------------------------------------------------- data helpers
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_under(cluster: Cluster, under: str) -> dict[str, list[Path]]:
    """Cache path relative to ``data/<under>`` -> the copies found on the workers (an
    object store's files are under ``data/<scheme>/<bucket>``)."""
    found: dict[str, list[Path]] = {}
    for worker in cluster.workers:
        root = worker.cache_dir / "data" / under  # type: ignore[attr-defined]
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                full = Path(dirpath) / name
                found.setdefault(str(full.relative_to(root)), []).append(full)
    return found


def assert_cached_once(cached: dict[str, list[Path]], expected: dict[str, bytes],
                       encode: Callable[[str], str]) -> None:
    """Exactly the ``expected`` keys are cached (under ``encode(key)``), each once and
    byte for byte."""
    assert set(cached) == {encode(key) for key in expected}, "every object, no other"
    for key, data in expected.items():
        copies = cached[encode(key)]
        assert len(copies) == 1, f"{key} cached {len(copies)} times"
        assert sha256(copies[0]) == digest(data), f"{key} differs in the cache"


def cached_files(cluster: Cluster) -> dict[str, list[Path]]:
    """Source path -> cache copies, over every worker's data/ directory."""
    return {"/" + path: copies for path, copies in cached_under(cluster, "").items()}


def make_tree(root: Path, files: int, big_size: int = 0) -> dict[str, int]:
    """Nested dirs, empty files, spaces and non-ASCII names, and one big file."""
    sizes: dict[str, int] = {}
    names = ["plain", "with space", "ünïcødé", "日本語", "mixed ñ dir"]
    for i in range(files):
        sub = root / names[i % len(names)] / f"d{i % 7}" / f"e{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        size = 0 if i % 50 == 0 else (i * 131) % 9000 + 1
        path = sub / (f"file {i}.bin" if i % 2 else f"f{i}-ü.dat")
        path.write_bytes(os.urandom(size))
        sizes[str(path)] = size
    if big_size:
        big = root / "big" / "large file.bin"
        big.parent.mkdir(parents=True, exist_ok=True)
        with open(big, "wb") as f:
            remaining = big_size
            while remaining:
                chunk = os.urandom(min(remaining, 1 << 20))
                f.write(chunk)
                remaining -= len(chunk)
        sizes[str(big)] = big_size
    return sizes


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


class ProgressSampler:
    """Reads a job's progress in a thread, over and over, from whichever coordinator
    answers; keeps every answer."""

    def __init__(self, cluster: Cluster, job_id: str, coordinators: list[int]) -> None:
        self.cluster = cluster
        self.job_id = job_id
        self.coordinators = coordinators
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProgressSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sample()  # one more: a job that ran between two samples is still seen

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.05)

    def _sample(self) -> None:
        for index in self.coordinators:
            try:
                report = self.cluster.progress(self.job_id, coordinator=index)
            except Exception:  # that coordinator is down right now
                continue
            self.samples.append({**report["files"], **{
                f"bytes_{k}": v for k, v in report["bytes"].items()},
                "subtasks": report["subtask_failures"], "state": report["job"]["state"]})

    def assert_never_backward(self) -> None:
        keys = ["listed", "processed", "skipped", "failed", "bytes_listed", "bytes_processed",
                "bytes_skipped", "subtasks"]
        for before, after in zip(self.samples, self.samples[1:], strict=False):
            for key in keys:
                assert after[key] >= before[key], f"{key} went {before[key]} -> {after[key]}"


@contextmanager
def small_tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` (a tmpfs) that fills up: ENOSPC, not a quota."""
    mount = tmp_path / "small-fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
