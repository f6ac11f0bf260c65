"""What every part of ``scripts/bench`` shares: datasets, a cluster of real processes on
loopback, timing that no run can pass on to the next, and the report's pieces.

The parts (each its own script, run by ``scripts/bench``; ``scripts/bench --help``):

* ``bench_local.py``: LOAD of local files against ``cp -r`` and ``rclone copy``;
* ``bench_memory.py``: the coordinator's and a worker's memory at 100k/300k/1M files;
* ``bench_s3.py``: LOAD from a loopback S3 server against ``rclone copy``;
* ``bench_ha.py``: the HA scheduler on a real etcd.

Timing. A tool that writes a gigabyte leaves most of it dirty in the page cache when it
exits; whichever tool runs next would pay for that writeback, and a source still cached
from the last run reads faster than one that is not. So ``quiesce`` runs before every
timed run: ``sync``, then (where the kernel allows it: root, and not ``--warm``) drop the
page cache, so every tool starts from the same cold state. Each timed run is also timed
until its own writes are on disk (``syncfs`` of the work dir's file system right after
it exits: the "+sync" figures), which no tool can leave to the next.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KIB = 1024
MIB = 1024 * KIB


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class IncompleteJob(BenchError):
    """A job reported SUCCEEDED without having done all of its files (an alluxiojob bug)."""


# Every anomaly of alluxiojob seen during the run; printed at the end.
ANOMALIES: list[str] = []


def anomaly(message: str) -> None:
    ANOMALIES.append(message)
    log(f"ANOMALY: {message}")


# ============================================================================ datasets
@dataclass
class Dataset:
    name: str
    path: Path
    files: int
    nbytes: int
    title: str


def _complete(marker: Path, spec: dict[str, object]) -> bool:
    try:
        return bool(json.loads(marker.read_text()) == spec)
    except (OSError, ValueError):
        return False


def make_small(root: Path, files: int, dirs: int, size: int) -> Dataset:
    spec = {"kind": "small", "files": files, "dirs": dirs, "size": size}
    marker = root.parent / f".{root.name}.complete"
    title = f"{files:,} files x {size // KIB} KiB in {dirs} dirs"
    if not _complete(marker, spec):
        log(f"generating small-file dataset: {title}")
        shutil.rmtree(root, ignore_errors=True)
        per_dir = -(-files // dirs)
        made = 0
        for d in range(dirs):
            sub = root / f"dir-{d:03d}"
            sub.mkdir(parents=True)
            for i in range(min(per_dir, files - made)):
                with open(sub / f"file-{i:05d}.bin", "wb") as f:
                    f.write(os.urandom(size))
                made += 1
        marker.write_text(json.dumps(spec))
    return Dataset("small", root, files, files * size, title)


def make_large(root: Path, files: int, size: int) -> Dataset:
    spec = {"kind": "large", "files": files, "size": size}
    marker = root.parent / f".{root.name}.complete"
    title = f"{files} files x {size // MIB} MiB ({files * size / MIB:,.0f} MiB)"
    if not _complete(marker, spec):
        log(f"generating large-file dataset: {title}")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        chunk = 8 * MIB
        for i in range(files):
            with open(root / f"large-{i}.bin", "wb") as f:
                left = size
                while left:
                    n = min(chunk, left)
                    f.write(os.urandom(n))
                    left -= n
        marker.write_text(json.dumps(spec))
    return Dataset("large", root, files, files * size, title)


def make_empty_nested(root: Path, sizes: Sequence[int], per_dir: int = 1000) -> list[Dataset]:
    """Empty files, ``per_dir`` a directory; the tree for each size nests the smaller ones.

    ``root`` holds sizes[-1] files; ``root/subset`` holds sizes[-2]; and so on.
    """
    sizes = sorted(sizes)
    spec = {"kind": "empty-nested", "sizes": sizes, "per_dir": per_dir}
    marker = root.parent / f".{root.name}.complete"
    paths = []
    path = root
    for _ in sizes:
        paths.append(path)
        path = path / "subset"
    paths.reverse()  # paths[i] holds sizes[i] files
    if not _complete(marker, spec):
        log(f"generating {sizes[-1]:,} empty files in {sizes[-1] // per_dir:,} dirs "
            f"(nested sets: {', '.join(f'{s:,}' for s in sizes)})")
        shutil.rmtree(root, ignore_errors=True)
        started = time.monotonic()
        previous = 0
        flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL
        for size, where in zip(sizes, paths, strict=True):
            extra = size - previous
            if extra % per_dir:
                raise BenchError(f"RSS sizes must be multiples of {per_dir}")
            for d in range(extra // per_dir):
                sub = where / f"d{d:04d}"
                sub.mkdir(parents=True)
                base = os.fspath(sub)
                for i in range(per_dir):
                    os.close(os.open(f"{base}/f{i:04d}", flags, 0o644))
            previous = size
        marker.write_text(json.dumps(spec))
        log(f"generated in {time.monotonic() - started:.0f}s")
    return [Dataset(f"empty-{s}", p, s, 0, f"{s:,} empty files")
            for s, p in zip(sizes, paths, strict=True)]


def tree_stats(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``; (0, 0) if it does not exist."""
    files = nbytes = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            files += 1
            nbytes += os.lstat(os.path.join(dirpath, name)).st_size
    return files, nbytes


# ============================================================================ processes
def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if this process dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def vm_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples VmRSS of some pids every ``interval`` seconds in a thread; keeps peaks.

    ``pids`` may be a function, asked at every sample: a process being restarted."""

    def __init__(self, pids: dict[str, int] | Callable[[], dict[str, int]],
                 interval: float = 0.2) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_kib: dict[str, int] = ({} if callable(pids) else dict.fromkeys(pids, 0))
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = self.pids() if callable(self.pids) else self.pids
            for name, pid in pids.items():
                self.peak_kib[name] = max(self.peak_kib.get(name, 0), vm_rss_kib(pid))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def alluxiojob_cmd() -> list[str]:
    exe = shutil.which("alluxiojob")
    if exe:
        return [exe]
    return [sys.executable, "-m", "alluxiojob.cli.main"]


@dataclass
class Service:
    name: str
    args: list[str]
    health_url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None


class Cluster:
    """One coordinator and ``workers`` workers (two by default) on loopback, under ``base``."""

    def __init__(self, base: Path, defines: Sequence[str] = (), workers: int = 2) -> None:
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        (base / "logs").mkdir(exist_ok=True)
        cport, *ports = free_ports(1 + 2 * workers)
        pairs = list(zip(ports[::2], ports[1::2], strict=True))
        self.conf = base / "alluxio-site.properties"
        self.cache_dirs = [base / f"cache{i}" for i in range(1, workers + 1)]
        (base / "workers").write_text("".join(f"127.0.0.1:{rpc}\n" for rpc, _ in pairs))
        lines = [
            f"alluxio.work.dir={base}",
            "alluxio.coordinator.hostname=127.0.0.1",
            f"alluxio.coordinator.rest.port={cport}",
            f"alluxio.coordinator.job.meta.store.dir={base / 'metastore'}",
            "alluxio.worker.hostname=127.0.0.1",
            f"alluxio.worker.static.config.file={base / 'workers'}",
            *defines,
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.services = {
            "coordinator": Service("coordinator", ["coordinator"],
                                   f"http://127.0.0.1:{cport}/healthz",
                                   base / "logs" / "coordinator.log"),
        }
        self.web_ports: dict[str, int] = {}
        for i, (rpc, web) in enumerate(pairs, start=1):
            self.web_ports[f"worker{i}"] = web
            self.services[f"worker{i}"] = Service(
                f"worker{i}",
                ["worker", "-D", f"alluxio.worker.rpc.port={rpc}",
                 "-D", f"alluxio.worker.web.port={web}",
                 "-D", f"alluxio.worker.page.store.dirs={self.cache_dirs[i - 1]}"],
                f"http://127.0.0.1:{web}/healthz",
                base / "logs" / f"worker{i}.log",
            )

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, names: Sequence[str] | None = None, timeout: float = 60.0) -> None:
        names = list(names or self.services)
        for name in names:
            service = self.services[name]
            with open(service.log_path, "ab") as out:
                service.proc = subprocess.Popen(
                    [*alluxiojob_cmd(), *service.args, "--conf", str(self.conf)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    start_new_session=True, preexec_fn=_die_with_parent,
                )
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for name in sorted(pending):
                service = self.services[name]
                assert service.proc is not None
                if service.proc.poll() is not None:
                    raise BenchError(f"{name} exited with {service.proc.returncode} during "
                                     f"start-up; log:\n{self.tail(name)}")
                try:
                    with urllib.request.urlopen(service.health_url, timeout=2) as answer:
                        if answer.status == 200:
                            pending.discard(name)
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                raise BenchError(f"not healthy after {timeout:.0f}s: {sorted(pending)}\n"
                                 + "\n".join(self.tail(n) for n in sorted(pending)))
            if pending:
                time.sleep(0.2)
        # Give the coordinator a moment to connect to the workers.
        time.sleep(0.5)

    def stop(self, names: Sequence[str] | None = None) -> None:
        services = [self.services[n] for n in (names or self.services)]
        running = [s for s in services if s.proc is not None and s.proc.poll() is None]
        for s in running:
            assert s.proc is not None
            s.proc.send_signal(signal.SIGTERM)
        for s in services:
            if s.proc is None:
                continue
            try:
                s.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"{s.name} ignored SIGTERM for 20s; killing it")
                s.proc.kill()
                s.proc.wait()
            # Anything left in its process group (its process pool) goes too.
            try:
                os.killpg(s.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            s.proc = None

    def pid(self, name: str) -> int:
        proc = self.services[name].proc
        assert proc is not None
        return proc.pid

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            text = self.services[name].log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log for {name})"
        return f"----- {name} log -----\n" + "\n".join(text[-lines:])

    def finished_line(self, job_id: str) -> str:
        """The coordinator's "job finished" log line of ``job_id``, if any."""
        try:
            for line in self.services["coordinator"].log_path.read_text(errors="replace") \
                    .splitlines():
                if job_id in line and "job finished" in line:
                    return line
        except OSError:
            pass
        return "(no 'job finished' log line)"

    def check_alive(self) -> None:
        for name, s in self.services.items():
            if s.proc is not None and s.proc.poll() is not None:
                raise BenchError(f"{name} died (exit {s.proc.returncode})\n{self.tail(name)}")

    # -------------------------------------------------------------- CLI
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*alluxiojob_cmd(), *args, "--conf", str(self.conf)],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if check and result.returncode != 0:
            self.check_alive()
            raise BenchError(f"alluxiojob {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result

    def cached(self, source: Path) -> tuple[int, int]:
        files = nbytes = 0
        rel = os.fspath(source.resolve()).lstrip("/")
        for cache in self.cache_dirs:
            f, b = tree_stats(cache / "data" / rel)
            files += f
            nbytes += b
        return files, nbytes

    def load(self, ds: Dataset, synced: Path | None = None) -> LoadTiming:
        """LOAD ``ds`` with --wait, timed; with ``synced``, also until the file system
        that holds ``synced`` has written back what the LOAD left dirty."""
        started = time.perf_counter()
        result = self.cli("job", "load", "--path", os.fspath(ds.path), "--wait", check=False)
        wall = time.perf_counter() - started
        if synced is not None:
            syncfs(synced)
        until_synced = time.perf_counter() - started if synced is not None else float("nan")
        if result.returncode != 0:
            self.check_alive()
            raise BenchError(f"LOAD of {ds.path} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
        match = re.search(r"Submitted LOAD job (\S+)", result.stdout)
        report = json.loads(self.cli("job", "load", "--path", os.fspath(ds.path),
                                     "--progress", "--format", "JSON").stdout)
        job = report["job"]
        if match and job["id"] != match.group(1):
            raise BenchError(f"--progress shows job {job['id']}, not the submitted "
                             f"{match.group(1)}")
        if not match:
            raise BenchError(f"the LOAD was not a new job:\n{result.stdout[-1000:]}")
        if job["state"] != "SUCCEEDED":
            raise BenchError(f"LOAD of {ds.path} ended {job['state']}: {job.get('error')}")
        files = report["files"]
        cached, _ = self.cached(ds.path)
        if files["processed"] != ds.files or cached != ds.files:
            raise IncompleteJob(
                f"LOAD job {job['id']} SUCCEEDED with {files['processed']} processed, "
                f"{files['done']} done of {files['listed']} listed files; {cached} of "
                f"{ds.files} files cached; coordinator log: {self.finished_line(job['id'])}")
        # Submit to SUCCEEDED as the coordinator recorded it: the job's own time, without
        # the CLI's interpreter start-up and its progress polling.
        return LoadTiming(wall, float(job["finished_at"]) - float(job["created_at"]),
                          until_synced)

    def free(self, ds: Dataset, attempts: int = 3) -> None:
        """FREE ``ds`` until nothing of it is cached (FREE is not timed)."""
        for attempt in range(1, attempts + 1):
            self.cli("job", "free", "--path", os.fspath(ds.path), "--wait")
            files, _ = self.cached(ds.path)
            if not files:
                return
            report = json.loads(self.cli("job", "free", "--path", os.fspath(ds.path),
                                         "--progress", "--format", "JSON").stdout)
            anomaly(f"FREE job {report['job']['id']} of {ds.name} ended "
                    f"{report['job']['state']} with {report['files']['done']} of "
                    f"{report['files']['listed']} listed files done, {files} files still "
                    f"cached (attempt {attempt}/{attempts}); coordinator log: "
                    f"{self.finished_line(report['job']['id'])}")
        raise BenchError(f"{files} files still cached after {attempts} FREEs of {ds.path}")




@dataclass(frozen=True)
class LoadTiming:
    wall: float  # `alluxiojob job load --wait`, start to exit
    job: float  # submit to SUCCEEDED, as the coordinator recorded it
    synced: float  # start until its writes were on disk (nan when not asked)


# ============================================================================ timing
def syncfs(path: Path) -> None:
    """Write back the dirty pages of the file system that holds ``path`` (all file
    systems where ``syncfs`` is missing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def can_drop_caches() -> bool:
    return os.access(DROP_CACHES, os.W_OK)


def quiesce(drop: bool) -> None:
    """Before a timed run: nothing dirty left by the runs before it and, when ``drop``,
    nothing of their data (or of the source) still in the page cache."""
    os.sync()
    if drop:
        try:
            DROP_CACHES.write_text("3\n")
        except OSError as exc:
            raise BenchError(f"cannot drop the page cache: {exc}") from None


@dataclass(frozen=True)
class Timing:
    exited: float  # start to exit
    synced: float  # start until its writes were on disk


def run_timed(cmd: Sequence[str], env: dict[str, str] | None = None,
              synced: Path | None = None) -> Timing:
    """Run ``cmd``; with ``synced``, also time the write-back of that file system."""
    started = time.perf_counter()
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=env)
    exited = time.perf_counter() - started
    if result.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {result.returncode}:\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    if synced is None:
        return Timing(exited, float("nan"))
    syncfs(synced)
    return Timing(exited, time.perf_counter() - started)


def rotations(names: Sequence[str], reps: int) -> Iterator[list[str]]:
    """The tools' order in each repetition: each runs first, second, ... in turn."""
    for rep in range(reps):
        shift = rep % len(names)
        yield [*names[shift:], *names[:shift]]


def paired_ratios(other: Sequence[float], mine: Sequence[float]) -> list[float]:
    """other / mine per repetition (> 1: alluxiojob was faster in that repetition)."""
    return [o / m for o, m in zip(other, mine, strict=True)]


def ratio_text(other: Sequence[float], mine: Sequence[float]) -> str:
    """The median of the paired ratios and their range: ``1.234 [0.9-1.5]``."""
    ratios = paired_ratios(other, mine)
    return f"{statistics.median(ratios):6.3f} [{min(ratios):.2f}-{max(ratios):.2f}]"


# ============================================================================ a run
def print_table(title: str, columns: Sequence[tuple[str, int]],
                rows: Iterable[Sequence[str]], *, label_first: bool = False) -> None:
    """A titled table: each column a (header, width) pair, right-aligned (the first
    left-aligned when it holds labels); cells come formatted."""
    def line(cells: Sequence[str]) -> str:
        (_, first_width), *rest = columns
        first = f"{cells[0]:<{first_width}}" if label_first else f"{cells[0]:>{first_width}}"
        return " ".join([first,
                         *(f"{cell:>{width}}" for cell, (_, width) in zip(cells[1:], rest,
                                                                           strict=True))])
    print()
    print(title)
    header = line([name for name, _ in columns])
    print(header)
    print("-" * len(header))
    for row in rows:
        print(line(row))


def tool_versions() -> str:
    cp = subprocess.run(["cp", "--version"], capture_output=True, text=True)
    rclone = shutil.which("rclone")
    line = (subprocess.run([rclone, "version"], capture_output=True, text=True)
            .stdout.splitlines()[0] if rclone else "rclone: NOT INSTALLED")
    return (f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
            f"{cp.stdout.splitlines()[0]}, {line}")


def run_part(args: Any, scratch: Sequence[str], json_path: Path | None,
             body: Callable[[Path], dict[str, object]]) -> int:
    """Run one part in its work dir: a new temp dir (removed at the end unless
    ``--keep``) or ``--workdir``, where the datasets stay and only ``scratch`` goes.
    SIGTERM and SIGHUP end it as Ctrl-C does, so that every service it started stops
    (the clusters stop themselves on the way out). Returns the exit status."""
    created = args.workdir is None
    base = (Path(tempfile.mkdtemp(prefix="alluxiojob-bench.")) if created
            else Path(args.workdir)).resolve()
    base.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        finish(body(base), json_path)
        return 0
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            log(f"kept {base}")
        elif created:
            log(f"removing {base}")
            shutil.rmtree(base, ignore_errors=True)
        else:
            for sub in scratch:  # keep the datasets for the next run
                shutil.rmtree(base / sub, ignore_errors=True)


def report_anomalies(results: dict[str, object]) -> None:
    print()
    if ANOMALIES:
        print(f"alluxiojob anomalies seen during the run ({len(ANOMALIES)}):")
        for message in ANOMALIES:
            print(f"  - {message}")
    else:
        print("alluxiojob anomalies seen during the run: none")
    results["anomalies"] = list(ANOMALIES)


def finish(results: dict[str, object], json_path: Path | None) -> None:
    report_anomalies(results)
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2, default=str))
