"""Benchmark alluxiojob LOAD against ``cp -r`` and ``rclone copy`` on the same data.

Run it through ``scripts/bench`` (which prepares .venv and rclone). In one run:

* generates the datasets once, in a temp dir on the same file system as the caches:
  (a) small files: 20,000 x 4 KiB in 100 dirs;
  (b) large files: 4 x 256 MiB (1 GiB); the workers run with a partition size of a
      quarter of a file (64 MiB) so that each file spans several partitions;
* starts 1 coordinator + 2 workers once (loopback, random ports);
* runs one warm-up of every tool (not timed; it also checks every tool's output), then
  N paired repetitions (default 3): in each, every tool copies the same source once,
  in an order that rotates between repetitions. Before each alluxiojob LOAD the path is
  FREEd, so every LOAD really copies. Outputs are removed and ``sync`` runs between
  timings (untimed), so no tool pays for another's write-back;
* prints, per dataset: median/min/max seconds, files/s and MiB/s, and the ratios
  other_time / alluxiojob_time (the median of the per-repetition ratios: > 1 means
  alluxiojob is faster).

Timings: ``cp -r SRC DST``; ``rclone copy --transfers 8 --checkers 8 SRC DST`` (rclone's
defaults otherwise, so it also verifies each file's checksum after copying it; no config
file); ``alluxiojob job load --path SRC --wait`` wall time, CLI start-up and its progress
polling included, and submit-to-SUCCEEDED as the coordinator recorded it (the job
record's ``finished_at - created_at``), which leaves out the CLI's own start-up.

(c) unless ``--no-rss`` (or BENCH_RSS=0): 1,000,000 empty files in 1,000 dirs, nested so
that one tree holds the 100k and 300k sets too; for each size a fresh coordinator (same
workers and store) LOADs it while the VmRSS of the coordinator and of the workers is
sampled every 0.2 s; the idle and peak RSS per size show whether memory stays flat as the
job grows. Then a cluster with one worker caches the sets in turn, so that worker holds
100k, 300k, then 1M files; after each its RSS is measured idle, through a restart
(startup recovery) and idle again. About 15 minutes on 2 CPUs, dataset generation
included. ``--rss-only`` runs only this part.

``--quick``: 2,000 small files, 4 x 64 MiB (16 MiB partitions), RSS sizes 20k and 100k.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_args

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

    def load(self, ds: Dataset) -> tuple[float, float]:
        """LOAD ``ds`` with --wait: (wall seconds, submit-to-SUCCEEDED seconds)."""
        started = time.perf_counter()
        result = self.cli("job", "load", "--path", os.fspath(ds.path), "--wait", check=False)
        wall = time.perf_counter() - started
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
        return wall, float(job["finished_at"]) - float(job["created_at"])

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


# ============================================================================ speed
@dataclass
class ToolResult:
    name: str
    times: list[float] = field(default_factory=list)


def sync() -> None:
    os.sync()


def run_timed(cmd: Sequence[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {result.returncode}:\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def bench_dataset(ds: Dataset, cluster: Cluster, out: Path, reps: int,
                  rclone: str | None) -> dict[str, object]:
    rclone_env = {**os.environ, "RCLONE_CONFIG": "/dev/null"}
    out.mkdir(parents=True, exist_ok=True)

    def copy_tool(name: str, cmd: Callable[[Path], list[str]],
                  env: dict[str, str] | None = None) -> Callable[[bool], float]:
        def run(check: bool) -> float:
            dst = out / name
            shutil.rmtree(dst, ignore_errors=True)
            sync()
            elapsed = run_timed(cmd(dst), env)
            if check:
                got = tree_stats(dst)
                if got != (ds.files, ds.nbytes):
                    raise BenchError(f"{name} copied {got}, expected {(ds.files, ds.nbytes)}")
            shutil.rmtree(dst, ignore_errors=True)
            sync()
            return elapsed
        return run

    job_elapsed: list[float] = []

    def alluxiojob_run(check: bool, attempts: int = 3) -> float:
        for attempt in range(1, attempts + 1):
            if cluster.cached(ds.path)[0]:
                cluster.free(ds)
            sync()
            try:
                wall, elapsed = cluster.load(ds)
            except IncompleteJob as exc:
                # Not a valid timing: the job stopped early. Measure again.
                anomaly(f"{exc} (attempt {attempt}/{attempts}; timing discarded)")
                if attempt == attempts:
                    raise
                continue
            job_elapsed.append(elapsed)
            got = cluster.cached(ds.path)
            if got != (ds.files, ds.nbytes):
                raise BenchError(f"alluxiojob cached {got}, expected {(ds.files, ds.nbytes)}")
            cluster.free(ds)
            sync()
            return wall
        raise AssertionError("unreachable")

    tools: dict[str, Callable[[bool], float]] = {
        "cp": copy_tool("cp", lambda dst: ["cp", "-r", os.fspath(ds.path), os.fspath(dst)]),
    }
    if rclone:
        tools["rclone"] = copy_tool(
            "rclone",
            lambda dst: [rclone, "copy", "--transfers", "8", "--checkers", "8",
                         os.fspath(ds.path), os.fspath(dst)],
            rclone_env,
        )
    tools["alluxiojob"] = alluxiojob_run

    log(f"[{ds.name}] warm-up: one untimed run of each tool, outputs checked")
    for name, run in tools.items():
        took = run(True)
        log(f"[{ds.name}]   warm-up {name}: {took:.2f}s")
    job_elapsed.clear()

    results = {name: ToolResult(name) for name in tools}
    order = list(tools)
    for rep in range(reps):
        rotated = order[rep % len(order):] + order[:rep % len(order)]
        for name in rotated:
            took = tools[name](rep == 0)
            results[name].times.append(took)
        log(f"[{ds.name}] rep {rep + 1}/{reps}: "
            + ", ".join(f"{n} {results[n].times[-1]:.2f}s" for n in order)
            + f", alluxiojob job elapsed {job_elapsed[-1]:.2f}s")
    return {
        "dataset": ds,
        "times": {name: r.times for name, r in results.items()},
        "job_elapsed": list(job_elapsed),
    }


def _paired_ratio(other: list[float], mine: list[float]) -> float:
    return statistics.median(o / m for o, m in zip(other, mine, strict=True))


def print_speed_table(result: dict[str, object], reps: int) -> None:
    ds: Dataset = result["dataset"]  # type: ignore[assignment]
    times: dict[str, list[float]] = result["times"]  # type: ignore[assignment]
    job_elapsed: list[float] = result["job_elapsed"]  # type: ignore[assignment]
    rows = [("cp -r", times["cp"])]
    if "rclone" in times:
        rows.append(("rclone copy", times["rclone"]))
    rows.append(("alluxiojob load --wait (wall)", times["alluxiojob"]))
    rows.append(("alluxiojob submit→SUCCEEDED", job_elapsed))
    mib = ds.nbytes / MIB
    print()
    print(f"Dataset ({'a' if ds.name == 'small' else 'b'}) {ds.name} files: {ds.title}, "
          f"{mib:,.1f} MiB, median of {reps} paired repetitions")
    header = (f"{'tool':<32} {'median s':>9} {'min s':>8} {'max s':>8} {'files/s':>10} "
              f"{'MiB/s':>9}")
    print(header)
    print("-" * len(header))
    for name, values in rows:
        med = statistics.median(values)
        print(f"{name:<32} {med:>9.3f} {min(values):>8.3f} {max(values):>8.3f} "
              f"{ds.files / med:>10,.0f} {mib / med:>9.1f}")
    mine = times["alluxiojob"]
    print("ratio = other_time / alluxiojob_time (median of paired ratios; > 1: alluxiojob "
          "is faster)")
    print(f"  alluxiojob/cp      wall: {_paired_ratio(times['cp'], mine):6.3f}   "
          f"submit→SUCCEEDED: {_paired_ratio(times['cp'], job_elapsed):6.3f}")
    if "rclone" in times:
        print(f"  alluxiojob/rclone  wall: {_paired_ratio(times['rclone'], mine):6.3f}   "
              f"submit→SUCCEEDED: {_paired_ratio(times['rclone'], job_elapsed):6.3f}")
    else:
        print("  alluxiojob/rclone  skipped: rclone is not installed")
    sys.stdout.flush()


# ============================================================================ RSS
def bench_rss(base: Path, sets: list[Dataset]) -> list[dict[str, float]]:
    cluster = Cluster(base / "cluster-rss")
    rows = []
    try:
        cluster.start()
        for ds in sets:
            cluster.stop(["coordinator"])
            cluster.start(["coordinator"])
            time.sleep(1.0)
            pids = {name: cluster.pid(name) for name in cluster.services}
            idle = {name: vm_rss_kib(pid) for name, pid in pids.items()}
            log(f"[rss] LOAD of {ds.files:,} empty files; coordinator idle RSS "
                f"{idle['coordinator'] / KIB:.0f} MiB")
            with RssSampler(pids) as sampler:
                try:
                    wall, elapsed = cluster.load(ds)
                except IncompleteJob as exc:
                    # The peak still counts (the job ran); the files/s would not.
                    anomaly(f"{exc} (RSS run; files/s not meaningful)")
                    wall = elapsed = float("nan")
            peak = sampler.peak_kib
            log(f"[rss]   {ds.files:,} files in {wall:.1f}s; coordinator peak "
                f"{peak['coordinator'] / KIB:.0f} MiB ({sampler.samples} samples)")
            rows.append({
                "files": ds.files,
                "wall": wall,
                "elapsed": elapsed,
                "coord_idle": idle["coordinator"] / KIB,
                "coord_peak": peak["coordinator"] / KIB,
                "worker_peak": max(peak["worker1"], peak["worker2"]) / KIB,
            })
    finally:
        cluster.stop()
    return rows


def print_rss_table(rows: list[dict[str, float]]) -> None:
    print()
    print("Dataset (c) coordinator memory: LOAD of N empty files (1,000 a dir); VmRSS sampled "
          "every 0.2 s; a fresh coordinator per size")
    header = (f"{'files':>10} {'load wall s':>12} {'files/s':>9} {'coord idle MiB':>15} "
              f"{'coord peak MiB':>15} {'peak-idle MiB':>14} {'worker peak MiB*':>17}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{int(r['files']):>10,} {r['wall']:>12.1f} {r['files'] / r['wall']:>9,.0f} "
              f"{r['coord_idle']:>15.1f} {r['coord_peak']:>15.1f} "
              f"{r['coord_peak'] - r['coord_idle']:>14.1f} {r['worker_peak']:>17.1f}")
    print("* the larger of the two workers; the caches keep every file of the earlier sizes "
          "too (the sets nest); one worker's memory per cached file is the next table")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = (last["coord_peak"] - first["coord_peak"]) / (last["files"] - first["files"])
        print(f"coordinator peak RSS growth: {growth * 1024 * 1024:.1f} bytes per extra file "
              f"({first['coord_peak']:.0f} MiB at {int(first['files']):,} -> "
              f"{last['coord_peak']:.0f} MiB at {int(last['files']):,})")
    sys.stdout.flush()


def worker_status(cluster: Cluster, name: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{cluster.web_ports[name]}/api/v1/worker/status"
    with urllib.request.urlopen(url, timeout=10) as answer:
        status: dict[str, Any] = json.loads(answer.read())
    return status


def bench_worker_rss(base: Path, sets: list[Dataset]) -> list[dict[str, float]]:
    """One worker caches the nested sets in turn, so it holds 100k, then 300k, then 1M
    files. After each: its RSS idle, then through a restart (startup recovery checks
    every file of data/ against the index) and idle again."""
    cluster = Cluster(base / "cluster-worker-rss", workers=1)
    rows = []
    try:
        cluster.start()
        for ds in sets:
            pid = cluster.pid("worker1")
            with RssSampler({"worker": pid}) as during_load:
                try:
                    cluster.load(ds)
                except IncompleteJob as exc:
                    anomaly(f"{exc} (worker RSS run)")
            cached = int(worker_status(cluster, "worker1")["cached_files"])
            time.sleep(1.0)
            idle = vm_rss_kib(pid)
            cluster.stop(["worker1"])

            def restarting() -> dict[str, int]:
                proc = cluster.services["worker1"].proc
                return {} if proc is None else {"worker": proc.pid}

            with RssSampler(restarting, interval=0.05) as during_recovery:
                started = time.perf_counter()
                cluster.start(["worker1"], timeout=900.0)
                recovery = time.perf_counter() - started
            time.sleep(1.0)
            after = vm_rss_kib(cluster.pid("worker1"))
            log(f"[worker rss] {cached:,} cached files: idle {idle / KIB:.0f} MiB, peak "
                f"during recovery {during_recovery.peak_kib.get('worker', 0) / KIB:.0f} MiB "
                f"({recovery:.1f}s), idle after {after / KIB:.0f} MiB")
            rows.append({
                "files": cached,
                "load_peak": during_load.peak_kib["worker"] / KIB,
                "idle": idle / KIB,
                "recovery_seconds": recovery,
                "recovery_peak": during_recovery.peak_kib.get("worker", 0) / KIB,
                "idle_after_restart": after / KIB,
            })
    finally:
        cluster.stop()
    return rows


def print_worker_rss_table(rows: list[dict[str, float]]) -> None:
    print()
    print("Dataset (c) worker memory: one worker caching N files (the nested sets in turn); "
          "VmRSS of the worker process (not its pool processes), sampled every 0.2 s during "
          "the LOAD and every 0.05 s through a restart")
    header = (f"{'cached files':>12} {'load peak MiB':>14} {'idle MiB':>9} "
              f"{'recovery s':>11} {'recovery peak MiB':>18} {'idle after MiB':>15}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{int(r['files']):>12,} {r['load_peak']:>14.1f} {r['idle']:>9.1f} "
              f"{r['recovery_seconds']:>11.1f} {r['recovery_peak']:>18.1f} "
              f"{r['idle_after_restart']:>15.1f}")
    sys.stdout.flush()


# ============================================================================ main
def main(argv: Sequence[str] | None = None) -> int:
    args = bench_args.parse(argv)  # every part's flags; this part uses its own

    if args.quick:
        small_files, large_size, partition, rss_sizes = 2_000, 64 * MIB, "16MiB", [20_000, 100_000]
    else:
        small_files, large_size, partition, rss_sizes = (20_000, 256 * MIB, "64MiB",
                                                         [100_000, 300_000, 1_000_000])

    created = args.workdir is None
    base = (Path(tempfile.mkdtemp(prefix="alluxiojob-bench.")) if created
            else args.workdir.resolve())
    base.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    rclone = shutil.which("rclone")
    cluster: Cluster | None = None
    results: dict[str, object] = {"quick": args.quick, "reps": args.reps}
    try:
        print(f"alluxiojob bench{' (--quick)' if args.quick else ''}: {os.cpu_count()} CPUs, "
              f"python {sys.version.split()[0]}, "
              f"{subprocess.run(['cp', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}, "  # noqa: E501
              + (subprocess.run([rclone, "version"], capture_output=True, text=True)
                 .stdout.splitlines()[0] if rclone else "rclone: NOT INSTALLED"))
        print(f"work dir (datasets, copies and caches on one file system): {base}")
        if not rclone:
            print("NOTE: rclone is not installed (apt-get install rclone as root); the rclone "
                  "timings and ratios are skipped")
        sys.stdout.flush()

        data = base / "data"
        data.mkdir(exist_ok=True)
        if not args.rss_only:
            small = make_small(data / f"small-{small_files}", small_files, 100, 4 * KIB)
            large = make_large(data / f"large-{large_size // MIB}m", 4, large_size)
            cluster = Cluster(base / "cluster",
                              [f"alluxio.worker.load.file.partition.size={partition}"])
            log(f"starting 1 coordinator + 2 workers (partition size {partition}) in "
                f"{cluster.base}")
            cluster.start()
            print(f"cluster: 1 coordinator + 2 workers on 127.0.0.1, "
                  f"alluxio.worker.load.file.partition.size={partition} (other properties "
                  "default)")
            cli_times = []
            for _ in range(3):
                started = time.perf_counter()
                cluster.cli("job", "list")
                cli_times.append(time.perf_counter() - started)
            results["cli_round_trip"] = statistics.median(cli_times)
            print(f"CLI round trip (alluxiojob job list, median of 3): "
                  f"{results['cli_round_trip']:.3f}s; part of every LOAD wall time, as is "
                  "--wait's 0.5 s polling")
            speed = []
            for ds in (small, large):
                speed.append(bench_dataset(ds, cluster, base / "out", args.reps, rclone))
                print_speed_table(speed[-1], args.reps)
            cluster.stop()
            cluster = None
            results["speed"] = [
                {"dataset": r["dataset"].name, "files": r["dataset"].files,  # type: ignore[attr-defined]
                 "bytes": r["dataset"].nbytes,  # type: ignore[attr-defined]
                 "times": r["times"], "job_elapsed": r["job_elapsed"]} for r in speed]
        if args.rss:
            sets = make_empty_nested(data / f"empty-{rss_sizes[-1]}", rss_sizes)
            rows = bench_rss(base, sets)
            print_rss_table(rows)
            results["rss"] = rows
            worker_rows = bench_worker_rss(base, sets)
            print_worker_rss_table(worker_rows)
            results["worker_rss"] = worker_rows
        elif not args.rss_only:
            print("\n(c) coordinator RSS: skipped (--no-rss or BENCH_RSS=0)")
        print()
        if ANOMALIES:
            print(f"alluxiojob anomalies seen during the run ({len(ANOMALIES)}):")
            for message in ANOMALIES:
                print(f"  - {message}")
        else:
            print("alluxiojob anomalies seen during the run: none")
        results["anomalies"] = ANOMALIES
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
        return 0
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if cluster is not None:
            cluster.stop()
        if args.keep:
            log(f"kept {base}")
        elif created:
            log(f"removing {base} (a minute or more after the 1M-file run)")
            shutil.rmtree(base, ignore_errors=True)
        else:
            # Keep the datasets for the next run; remove what this run made.
            for sub in ("cluster", "cluster-rss", "cluster-worker-rss", "out"):
                shutil.rmtree(base / sub, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
