"""Benchmark alluxiojob LOAD from S3 against ``rclone copy --transfers 32`` from the same bucket.

Run it through ``scripts/bench`` (its S3 part; ``--s3-only`` runs just this). In one run,
on one S3 API server (moto, in its own process, ``alluxiojob.testing.s3``) and the same
data:

* uploads (a) 20,000 x 4 KiB objects in 100 prefixes and (b) 4 x 256 MiB objects;
* starts 1 coordinator + 2 workers (partition size 64 MiB as in the local part; objects
  are read in GETs of ``alluxio.underfs.object.store.multi.range.chunk.size``, 256 MiB by
  default, so a 256 MiB object is one GET) pointed at the server by the
  ``alluxio.underfs.s3.*`` properties, plus ``--s3-define`` properties; each
  ``--s3-variant`` starts one more such cluster with its own properties;
* for an added latency of 0 ms and then 20 ms per request (a sleep in the server's
  request thread; ``--s3-latency``), times per dataset (after one untimed warm-up for
  (b); every run's output is checked) N paired repetitions in rotating order of:
  ``alluxiojob job load --path s3://... --wait`` on each cluster (FREE before each,
  untimed; wall time and submit-to-SUCCEEDED as the coordinator recorded it) and
  ``rclone copy --transfers 32 remote:bucket/prefix DIR`` (rclone configured only by
  environment variables; its output removed and ``sync`` run between timings), with the
  1-minute load average at the start of each repetition;
* samples the VmRSS of the workers and of the S3 server every 0.2 s during each LOAD,
  and the CPU time of the server and of the client side (rclone; or the coordinator and
  the workers with their pool processes) per run;
* prints medians, objects/s, MiB/s and the ratios rclone_time / alluxiojob_time.

``--quick``: 2,000 small objects and 4 x 64 MiB (16 MiB partitions).
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_args  # noqa: E402
from bench_common import (  # noqa: E402
    KIB,
    MIB,
    BenchError,
    Cluster,
    log,
    rotations,
    run_timed,
    tree_stats,
    vm_rss_kib,
)

from alluxiojob.testing.s3 import S3Server  # noqa: E402

BUCKET = "alluxiojob-bench"
LATENCIES = (0.0, 0.02)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session_cpu_seconds(sid: int) -> float:
    """CPU time of every live process in session ``sid`` (a service and its pool)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields[3] is the session id (field 6 of stat)
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def session_rss_kib(sid: int) -> int:
    """VmRSS summed over session ``sid``: a worker and its pool processes, which fetch."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                total += vm_rss_kib(int(entry))
        except (OSError, ValueError):
            continue
    return total


class SessionRssSampler(threading.Thread):
    """Peak summed RSS of each session (the "s3" entry: of that one process), every 0.2 s."""

    def __init__(self, sids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.sids = sids
        self.peak_kib = dict.fromkeys(sids, 0)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for name, sid in self.sids.items():
                rss = vm_rss_kib(sid) if name == "s3" else session_rss_kib(sid)
                self.peak_kib[name] = max(self.peak_kib[name], rss)
            self._stop_event.wait(0.2)

    def __enter__(self) -> SessionRssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def upload(server: S3Server, prefix: str, count: int, size: int, dirs: int) -> None:
    log(f"uploading {count:,} objects of {size // KIB:,} KiB to s3://{BUCKET}/{prefix}")
    started = time.monotonic()
    if size >= 64 * MIB:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB,
                                max_concurrency=8)
        for i in range(count):
            server.client().upload_fileobj(io.BytesIO(os.urandom(size)), BUCKET,
                                           f"{prefix}/large-{i}.bin", Config=config)
    else:
        per_dir = -(-count // dirs)
        objects = {f"{prefix}/dir-{i // per_dir:03d}/file-{i % per_dir:05d}.bin":
                   os.urandom(size) for i in range(count)}
        server.put_many(BUCKET, objects, threads=16)
    log(f"uploaded in {time.monotonic() - started:.0f}s")


class S3Load:
    """LOAD and FREE of one S3 prefix on the bench cluster, checked against the caches."""

    def __init__(self, cluster: Cluster, uri: str, files: int, nbytes: int) -> None:
        self.cluster, self.uri, self.files, self.nbytes = cluster, uri, files, nbytes

    def cached(self) -> tuple[int, int]:
        _, _, rest = self.uri.partition("://")
        bucket, _, prefix = rest.partition("/")
        files = nbytes = 0
        for cache in self.cluster.cache_dirs:
            f, b = tree_stats(cache / "data" / "s3" / bucket / (prefix + "%"))
            files, nbytes = files + f, nbytes + b
        return files, nbytes

    def load(self) -> tuple[float, float]:
        started = time.perf_counter()
        result = self.cluster.cli("job", "load", "--path", self.uri, "--wait", check=False)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            self.cluster.check_alive()
            raise BenchError(f"LOAD of {self.uri} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
        report = json.loads(self.cluster.cli("job", "load", "--path", self.uri, "--progress",
                                             "--format", "JSON").stdout)
        job = report["job"]
        if job["state"] != "SUCCEEDED" or self.cached() != (self.files, self.nbytes):
            raise BenchError(f"LOAD of {self.uri}: {job['state']}, cached {self.cached()}, "
                             f"expected {(self.files, self.nbytes)}")
        return wall, float(job["finished_at"]) - float(job["created_at"])

    def free(self) -> None:
        self.cluster.cli("job", "free", "--path", self.uri, "--wait")
        if self.cached()[0]:
            raise BenchError(f"FREE of {self.uri} left {self.cached()[0]} files cached")


def bench_prefix(name: str, loads: dict[str, S3Load], server: S3Server, out: Path, reps: int,
                 rclone: str | None, warm_up: bool) -> dict[str, object]:
    """Paired runs of rclone and of each cluster's LOAD (the first is "alluxiojob")."""
    # rclone's AWS SDK refuses a custom CA bundle with its own HTTP transport; the
    # server is plain http anyway.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update({"RCLONE_CONFIG": "/dev/null", **server.rclone_env("bench")})
    first = next(iter(loads.values()))
    prefix = first.uri.split(f"{BUCKET}/", 1)[1]
    times: dict[str, list[float]] = {}
    server_cpu: dict[str, list[float]] = {}
    client_cpu: dict[str, list[float]] = {}
    peaks: dict[str, list[int]] = {}
    server_peaks: list[int] = []
    loadavg: list[float] = []

    def run_rclone(timed: bool) -> None:
        assert rclone is not None
        dst = out / "rclone"
        shutil.rmtree(dst, ignore_errors=True)
        os.sync()
        cpu = cpu_seconds(server.pid or 0)
        mine = children_cpu_seconds()
        took = run_timed([rclone, "copy", "--transfers", "32", f"bench:{BUCKET}/{prefix}",
                          os.fspath(dst)], env).exited
        cpu = cpu_seconds(server.pid or 0) - cpu
        mine = children_cpu_seconds() - mine
        got = tree_stats(dst)
        if got != (first.files, first.nbytes):
            raise BenchError(f"rclone copied {got}, expected {(first.files, first.nbytes)}")
        shutil.rmtree(dst, ignore_errors=True)
        os.sync()
        if timed:
            times.setdefault("rclone", []).append(took)
            server_cpu.setdefault("rclone", []).append(cpu)
            client_cpu.setdefault("rclone", []).append(mine)

    def alluxiojob_run(tool: str, load: S3Load) -> Callable[[bool], None]:
        def run(timed: bool) -> None:
            if load.cached()[0]:
                load.free()
            os.sync()
            names = ("worker1", "worker2", "coordinator")
            cpu = cpu_seconds(server.pid or 0)
            mine = sum(session_cpu_seconds(load.cluster.pid(n)) for n in names)
            pids = {n: load.cluster.pid(n) for n in ("worker1", "worker2")}
            pids["s3"] = server.pid or 0
            with SessionRssSampler(pids) as sampler:
                wall, elapsed = load.load()
            cpu = cpu_seconds(server.pid or 0) - cpu
            mine = sum(session_cpu_seconds(load.cluster.pid(n)) for n in names) - mine
            load.free()
            os.sync()
            if timed:
                times.setdefault(tool, []).append(wall)
                times.setdefault(f"{tool} job", []).append(elapsed)
                server_cpu.setdefault(tool, []).append(cpu)
                client_cpu.setdefault(tool, []).append(mine)
                peaks.setdefault(tool, []).append(max(sampler.peak_kib["worker1"],
                                                      sampler.peak_kib["worker2"]))
                server_peaks.append(sampler.peak_kib["s3"])
        return run

    tools: dict[str, Callable[[bool], None]] = {
        tool: alluxiojob_run(tool, load) for tool, load in loads.items()}
    if rclone:
        tools["rclone"] = run_rclone
    if warm_up:
        log(f"[{name}] warm-up")
        for run in tools.values():
            run(False)
    order = list(tools)
    for rep, rotated in enumerate(rotations(order, reps)):
        loadavg.append(os.getloadavg()[0])
        for tool in rotated:
            tools[tool](True)
        log(f"[{name}] rep {rep + 1}/{reps} (load average {loadavg[-1]:.1f}): "
            + ", ".join(f"{t} {times[t][-1]:.2f}s" for t in order)
            + "".join(f", {t} job {times[f'{t} job'][-1]:.2f}s" for t in loads))
    return {"name": name, "files": first.files, "bytes": first.nbytes, "times": times,
            "clusters": list(loads), "server_cpu": server_cpu, "client_cpu": client_cpu,
            "worker_peak_kib": peaks, "server_peak_kib": server_peaks,
            "loadavg_1min": loadavg}


def print_table(result: dict[str, object], latency: float, reps: int) -> None:
    times: dict[str, list[float]] = result["times"]  # type: ignore[assignment]
    cpu: dict[str, list[float]] = result["server_cpu"]  # type: ignore[assignment]
    client: dict[str, list[float]] = result["client_cpu"]  # type: ignore[assignment]
    clusters: list[str] = result["clusters"]  # type: ignore[assignment]
    loadavg: list[float] = result["loadavg_1min"]  # type: ignore[assignment]
    files, nbytes = int(result["files"]), int(result["bytes"])  # type: ignore[call-overload]
    mib = nbytes / MIB
    print()
    print(f"S3 {result['name']}: {files:,} objects, {mib:,.0f} MiB, +{latency * 1000:.0f} ms "
          f"per request, median of {reps}; 1-minute load average at each repetition: "
          + ", ".join(f"{v:.1f}" for v in loadavg))
    header = (f"{'tool':<34} {'median s':>9} {'min s':>8} {'max s':>8} {'objects/s':>10} "
              f"{'MiB/s':>8} {'server CPU s':>13} {'client CPU s':>13}")
    print(header)
    print("-" * len(header))
    rows = [("rclone copy --transfers 32", "rclone")] if "rclone" in times else []
    for tool in clusters:
        rows += [(f"{tool} load --wait (wall)", tool), (f"{tool} submit→SUCCEEDED", f"{tool} job")]
    for label, key in rows:
        values = times[key]
        med = statistics.median(values)
        server = statistics.median(cpu[key]) if key in cpu else float("nan")
        mine = statistics.median(client[key]) if key in client else float("nan")
        print(f"{label:<34} {med:>9.2f} {min(values):>8.2f} {max(values):>8.2f} "
              f"{files / med:>10,.0f} {mib / med:>8.1f} {server:>13.1f} {mine:>13.1f}")

    def ratio(other: str, mine: str) -> float:
        return statistics.median(o / m for o, m in zip(times[other], times[mine], strict=True))

    for tool in clusters:
        if "rclone" in times:
            print(f"  ratio rclone_time / {tool}_time: wall {ratio('rclone', tool):.2f}, "
                  f"submit→SUCCEEDED {ratio('rclone', f'{tool} job'):.2f}")
        if tool != clusters[0]:
            base = clusters[0]
            print(f"  ratio {base}_time / {tool}_time: wall {ratio(base, tool):.2f}, "
                  f"submit→SUCCEEDED {ratio(f'{base} job', f'{tool} job'):.2f}")
    peaks: dict[str, list[int]] = result["worker_peak_kib"]  # type: ignore[assignment]
    server_peaks: list[int] = result["server_peak_kib"]  # type: ignore[assignment]
    for tool, peak_values in peaks.items():
        print(f"  {tool}: worker peak RSS during LOAD (a worker and its pool processes): "
              f"{max(peak_values) / KIB:.0f} MiB")
    if server_peaks:
        print(f"  S3 server peak RSS {max(server_peaks) / KIB:.0f} MiB")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = bench_args.parse(argv)  # every part's flags; this part uses its own
    small_count, large_size, partition = ((2_000, 64 * MIB, "16MiB") if args.quick
                                          else (20_000, 256 * MIB, "64MiB"))
    latencies = [ms / 1000 for ms in args.s3_latency] if args.s3_latency else list(LATENCIES)
    datasets = args.s3_dataset or ["small", "large"]

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    base = Path(tempfile.mkdtemp(prefix="alluxiojob-bench-s3."))
    rclone = None if args.s3_no_rclone else shutil.which("rclone")
    server = S3Server(log_path=os.fspath(base / "s3.log"))
    clusters: dict[str, Cluster] = {}
    results = []
    try:
        server.start()
        server.create_bucket(BUCKET)
        if "small" in datasets:
            upload(server, "small", small_count, 4 * KIB, 100)
        if "large" in datasets:
            upload(server, "large", 4, large_size, 1)
        props = [f"{k}={v}" for k, v in server.properties().items()]
        defines = [f"alluxio.worker.load.file.partition.size={partition}", *props,
                   *args.s3_define]
        for name, extra in [("alluxiojob", []), *args.s3_variant]:
            clusters[name] = Cluster(base / f"cluster-{name}", [*defines, *extra])
            clusters[name].start()
        print(f"\nS3: moto S3 server in its own process on 127.0.0.1 (pid {server.pid}); "
              f"1 coordinator + 2 workers, partition size {partition}"
              + "".join(f", {d}" for d in args.s3_define)
              + " (other properties default)"
              + "".join(f"; variant {name}: {', '.join(extra)}"
                        for name, extra in args.s3_variant))
        sets = {"small": (small_count, small_count * 4 * KIB), "large": (4, 4 * large_size)}
        for latency in latencies:
            server.set_latency(latency)
            for name in datasets:
                files, nbytes = sets[name]
                loads = {c: S3Load(cluster, f"s3://{BUCKET}/{name}", files, nbytes)
                         for c, cluster in clusters.items()}
                # Every run is checked; the small set is long enough not to need a
                # warm-up (the worker pools start with the workers).
                result = bench_prefix(name, loads, server, base / "out", args.reps, rclone,
                                      warm_up=name == "large")
                result["latency"] = latency
                results.append(result)
                print_table(result, latency, args.reps)
        if args.s3_json:
            args.s3_json.write_text(json.dumps(results, indent=2))
        return 0
    except BenchError as exc:
        print(f"bench S3: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for cluster in clusters.values():
            cluster.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
