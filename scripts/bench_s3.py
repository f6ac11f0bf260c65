"""Benchmark alluxiojob LOAD from S3 against ``rclone copy`` from the same bucket.

Run it through ``scripts/bench`` (its S3 part; ``--s3-only`` runs just this). In one run,
on one S3 API server and the same data:

* the server is nginx with its Lua module (``alluxiojob.testing.s3_nginx``: files served
  as path-style S3, listings from a sorted index), which spends tens of microseconds of
  CPU per request, so that the clients, not the server, are what is measured; or, with
  ``--s3-server moto`` (or where nginx cannot be had), moto (``alluxiojob.testing.s3``),
  about 2 ms per request, the ceiling of the older figures;
* (a) 20,000 x 4 KiB objects in 100 prefixes and (b) 4 x 256 MiB objects (written as
  files for nginx, uploaded for moto);
* starts 1 coordinator + 2 workers (partition size 64 MiB as in the local part; objects
  are read in GETs of ``alluxio.underfs.object.store.multi.range.chunk.size``, 256 MiB by
  default, so a 256 MiB object is one GET) pointed at the server by the
  ``alluxio.underfs.s3.*`` properties, plus ``--s3-define`` properties; each
  ``--s3-variant`` starts one more such cluster with its own properties (for example
  ``r64:alluxio.worker.job.ufs.requests.max=64``, fewer requests in flight);
* for an added latency of 0 ms and then 20 ms per request (``--s3-latency``; nginx: a
  non-blocking sleep, moto: a sleep in the request's thread), times per dataset (after
  one untimed warm-up for (b); every run's output is checked) N paired repetitions in
  rotating order of: ``alluxiojob job load --path s3://... --wait`` on each cluster (FREE
  before each, untimed; wall time and submit-to-SUCCEEDED as the coordinator recorded
  it) and ``rclone copy --transfers T`` for each T of ``--s3-rclone-transfers`` (32, 64,
  128, 256; rclone configured only by environment variables; its output removed and
  ``sync`` run between timings), with the 1-minute load average at each repetition;
* measures per run the server's CPU (its process tree, from /proc) and its requests, so
  its CPU per request and how much of a core the fastest client kept busy; and the
  client side's CPU per object by process group (``scripts/bench_cpu.py``): the
  coordinator, the workers' own processes, their pool processes and the CLI, against
  rclone's; samples the VmRSS of the workers and of the server every 0.2 s;
* prints medians, objects/s, MiB/s, CPU per object, and the ratios
  rclone_time / alluxiojob_time against ``--transfers 32`` and against rclone's best.

``--quick``: 2,000 small objects and 4 x 64 MiB (16 MiB partitions).
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_args  # noqa: E402
import bench_cpu  # noqa: E402
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

from alluxiojob.testing import s3_nginx  # noqa: E402
from alluxiojob.testing.s3 import S3Server  # noqa: E402

BUCKET = "alluxiojob-bench"
LATENCIES = (0.0, 0.02)
RCLONE_TRANSFERS = (32, 64, 128, 256)
GROUPS = ("coordinator", "worker", "pool", "cli")


def session_rss_kib(sid: int) -> int:
    """VmRSS summed over session ``sid``: a worker and its pool processes, which fetch."""
    return sum(vm_rss_kib(pid) for pid, fields in bench_cpu.proc_stats()
               if int(fields[3]) == sid)


class PeakRss(threading.Thread):
    """The peak of each probe (a summed VmRSS in KiB), sampled every 0.2 s."""

    def __init__(self, probes: dict[str, Callable[[], int]]) -> None:
        super().__init__(daemon=True)
        self.probes = probes
        self.peak_kib = dict.fromkeys(probes, 0)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for name, probe in self.probes.items():
                self.peak_kib[name] = max(self.peak_kib[name], probe())
            self._stop_event.wait(0.2)

    def __enter__(self) -> PeakRss:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()


Server = S3Server | s3_nginx.NginxS3Server


def server_pids(server: Server) -> list[int]:
    if isinstance(server, s3_nginx.NginxS3Server):
        return server.pids()
    return [server.pid] if server.pid else []


def place_objects(server: Server, prefix: str, count: int, size: int, dirs: int) -> None:
    """The dataset in the bucket: files for nginx (before it starts), uploads for moto."""
    log(f"writing {count:,} objects of {size // KIB:,} KiB to s3://{BUCKET}/{prefix}")
    started = time.monotonic()
    per_dir = -(-count // dirs)
    names = ([f"{prefix}/large-{i}.bin" for i in range(count)] if size >= 64 * MIB else
             [f"{prefix}/dir-{i // per_dir:03d}/file-{i % per_dir:05d}.bin"
              for i in range(count)])
    if isinstance(server, s3_nginx.NginxS3Server):
        for key in names:
            path = server.data / BUCKET / key
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                for offset in range(0, size, 8 * MIB):
                    f.write(os.urandom(min(8 * MIB, size - offset)))
    elif size >= 64 * MIB:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB,
                                max_concurrency=8)
        for key in names:
            server.client().upload_fileobj(io.BytesIO(os.urandom(size)), BUCKET, key,
                                           Config=config)
    else:
        server.put_many(BUCKET, {key: os.urandom(size) for key in names}, threads=16)
    log(f"written in {time.monotonic() - started:.0f}s")


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

    def load(self) -> tuple[float, float, float]:
        """(wall s, submit→SUCCEEDED s, CPU s of the timed CLI command). The checks after
        it (a ``--progress`` call, the cache's contents) are neither timed nor counted."""
        cli_cpu = bench_cpu.children_cpu()
        started = time.perf_counter()
        result = self.cluster.cli("job", "load", "--path", self.uri, "--wait", check=False)
        wall = time.perf_counter() - started
        cli_cpu = bench_cpu.children_cpu() - cli_cpu
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
        return wall, float(job["finished_at"]) - float(job["created_at"]), cli_cpu

    def free(self) -> None:
        self.cluster.cli("job", "free", "--path", self.uri, "--wait")
        if self.cached()[0]:
            raise BenchError(f"FREE of {self.uri} left {self.cached()[0]} files cached")


def bench_prefix(name: str, loads: dict[str, S3Load], server: Server, out: Path, reps: int,
                 rclone: str | None, transfers: list[int], warm_up: bool) -> dict[str, Any]:
    """Paired runs of rclone at each ``transfers`` and of each cluster's LOAD (the first
    is "alluxiojob"). A run's record: its times, the server's CPU and requests, and the
    client side's CPU by process group."""
    # rclone's AWS SDK refuses a custom CA bundle with its own HTTP transport; the
    # server is plain http anyway.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update({"RCLONE_CONFIG": "/dev/null", **server.rclone_env("bench")})
    first = next(iter(loads.values()))
    prefix = first.uri.split(f"{BUCKET}/", 1)[1]
    pids = server_pids(server)
    runs: dict[str, list[dict[str, float]]] = {}
    peaks: dict[str, list[int]] = {}
    server_peaks: list[int] = []
    loadavg: list[float] = []

    def measured(tool: str, timed: bool, body: Callable[[], dict[str, float]]) -> None:
        cpu, requests = bench_cpu.processes_cpu(pids), server.request_count()
        record = body()
        record["server_cpu"] = bench_cpu.processes_cpu(pids) - cpu
        record["requests"] = server.request_count() - requests
        if timed:
            runs.setdefault(tool, []).append(record)

    def rclone_run(count: int) -> Callable[[bool], None]:
        def run(timed: bool) -> None:
            assert rclone is not None
            dst = out / f"rclone-{count}"
            shutil.rmtree(dst, ignore_errors=True)
            os.sync()

            def body() -> dict[str, float]:
                mine = bench_cpu.children_cpu()
                took = run_timed([rclone, "copy", "--transfers", str(count),
                                  f"bench:{BUCKET}/{prefix}", os.fspath(dst)], env).exited
                return {"wall": took, "cpu rclone": bench_cpu.children_cpu() - mine}

            measured(f"rclone {count}", timed, body)
            got = tree_stats(dst)
            if got != (first.files, first.nbytes):
                raise BenchError(f"rclone copied {got}, expected {(first.files, first.nbytes)}")
            shutil.rmtree(dst, ignore_errors=True)
            os.sync()
        return run

    def alluxiojob_run(tool: str, load: S3Load) -> Callable[[bool], None]:
        def run(timed: bool) -> None:
            if load.cached()[0]:
                load.free()
            os.sync()
            roles = {n: load.cluster.pid(n) for n in ("coordinator", "worker1", "worker2")}
            probes: dict[str, Callable[[], int]] = {
                n: functools.partial(session_rss_kib, roles[n]) for n in ("worker1", "worker2")}
            probes["s3"] = lambda: sum(vm_rss_kib(p) for p in pids)

            def body() -> dict[str, float]:
                groups = bench_cpu.cluster_cpu(roles)
                with PeakRss(probes) as sampler:
                    wall, elapsed, cli = load.load()
                groups = bench_cpu.minus(bench_cpu.cluster_cpu(roles), groups)
                if timed:
                    peaks.setdefault(tool, []).append(max(sampler.peak_kib["worker1"],
                                                          sampler.peak_kib["worker2"]))
                    server_peaks.append(sampler.peak_kib["s3"])
                return {"wall": wall, "job": elapsed,
                        **{f"cpu {g}": v for g, v in groups.items()},
                        "cpu cli": cli}

            measured(tool, timed, body)
            load.free()
            os.sync()
        return run

    tools: dict[str, Callable[[bool], None]] = {
        tool: alluxiojob_run(tool, load) for tool, load in loads.items()}
    if rclone:
        tools.update({f"rclone {count}": rclone_run(count) for count in transfers})
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
            + ", ".join(f"{t} {runs[t][-1]['wall']:.2f}s" for t in order)
            + "".join(f", {t} job {runs[t][-1]['job']:.2f}s" for t in loads))
    return {"name": name, "files": first.files, "bytes": first.nbytes, "runs": runs,
            "clusters": list(loads), "worker_peak_kib": peaks, "server_peak_kib": server_peaks,
            "loadavg_1min": loadavg}


def median_of(records: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in records)


def print_tables(result: dict[str, Any], latency: float, reps: int) -> None:
    runs: dict[str, list[dict[str, float]]] = result["runs"]
    clusters: list[str] = result["clusters"]
    files, nbytes = int(result["files"]), int(result["bytes"])
    mib = nbytes / MIB
    print()
    print(f"S3 {result['name']}: {files:,} objects, {mib:,.0f} MiB, +{latency * 1000:.0f} ms "
          f"per request, median of {reps}; 1-minute load average at each repetition: "
          + ", ".join(f"{v:.1f}" for v in result["loadavg_1min"]))
    header = (f"{'tool':<34} {'median s':>9} {'min s':>8} {'max s':>8} {'objects/s':>10} "
              f"{'MiB/s':>8} {'requests':>9} {'server µs/req':>14}")
    print(header)
    print("-" * len(header))
    rclones = [t for t in runs if t.startswith("rclone ")]
    rows = [(f"rclone copy --transfers {t.split()[1]}", t, "wall") for t in rclones]
    for tool in clusters:
        rows += [(f"{tool} load --wait (wall)", tool, "wall"),
                 (f"{tool} submit→SUCCEEDED", tool, "job")]
    for label, tool, key in rows:
        values = [r[key] for r in runs[tool]]
        med = statistics.median(values)
        requests = median_of(runs[tool], "requests")
        per_request = statistics.median(r["server_cpu"] / max(r["requests"], 1)
                                        for r in runs[tool])
        print(f"{label:<34} {med:>9.2f} {min(values):>8.2f} {max(values):>8.2f} "
              f"{files / med:>10,.0f} {mib / med:>8.1f} {requests:>9,.0f} "
              f"{per_request * 1e6:>14,.0f}")

    print(f"CPU per object, µs (median of {reps}): the client side by process group, and "
          "the server")
    header = (f"{'tool':<34} {'coordinator':>11} {'worker':>8} {'pool':>8} {'cli':>8} "
              f"{'client':>8} {'server':>8}")
    print(header)
    print("-" * len(header))
    for tool in [*rclones, *clusters]:
        records = runs[tool]
        keys = ["cpu rclone"] if tool in rclones else [f"cpu {g}" for g in GROUPS]
        cells = [("-" if tool in rclones else bench_cpu.micros_per(median_of(records, k),
                                                                    files))
                 for k in (f"cpu {g}" for g in GROUPS)]
        client = statistics.median(sum(r[k] for k in keys) for r in records)
        print(f"{tool:<34} {cells[0]:>11} {cells[1]:>8} {cells[2]:>8} {cells[3]:>8} "
              f"{bench_cpu.micros_per(client, files):>8} "
              f"{bench_cpu.micros_per(median_of(records, 'server_cpu'), files):>8}")

    # The server is not the limit: its CPU per request against the request rate the
    # fastest run asked of it.
    everything = [r for records in runs.values() for r in records]
    per_request = statistics.median(r["server_cpu"] / max(r["requests"], 1) for r in everything)
    busiest = max(everything, key=lambda r: r["requests"] / r["wall"])
    rate = busiest["requests"] / busiest["wall"]
    print(f"  server: {per_request * 1e6:,.0f} µs of CPU per request (median over every run), "
          f"so one core answers ~{1 / max(per_request, 1e-9):,.0f} requests/s; the fastest "
          f"run asked {rate:,.0f} requests/s, {busiest['server_cpu'] / busiest['wall']:.0%} "
          f"of one core (the machine has {os.cpu_count()})")

    def ratio(other: str, mine: str, key: str) -> float:
        return statistics.median(o["wall"] / m[key]
                                 for o, m in zip(runs[other], runs[mine], strict=True))

    def client_cpu(tool: str) -> float:
        keys = ["cpu rclone"] if tool in rclones else [f"cpu {g}" for g in GROUPS]
        return statistics.median(sum(r[k] for k in keys) for r in runs[tool])

    best = min(rclones, key=lambda t: median_of(runs[t], "wall")) if rclones else None
    against = [("rclone --transfers 32", "rclone 32")] if "rclone 32" in runs else []
    if best is not None and best != "rclone 32":
        against.append((f"rclone's best (--transfers {best.split()[1]})", best))
    for tool in clusters:
        for label, other in against:
            print(f"  ratio {label} time / {tool} time: wall {ratio(other, tool, 'wall'):.2f}, "
                  f"submit→SUCCEEDED {ratio(other, tool, 'job'):.2f}; client CPU per object "
                  f"{tool} / rclone: {client_cpu(tool) / max(client_cpu(other), 1e-9):.2f}")
        if tool != clusters[0]:
            base = clusters[0]
            print(f"  ratio {base} time / {tool} time: wall {ratio(base, tool, 'wall'):.2f}")
    for tool, peak_values in result["worker_peak_kib"].items():
        print(f"  {tool}: worker peak RSS during LOAD (a worker and its pool processes): "
              f"{max(peak_values) / KIB:.0f} MiB")
    if result["server_peak_kib"]:
        print(f"  S3 server peak RSS {max(result['server_peak_kib']) / KIB:.0f} MiB")
    sys.stdout.flush()


def make_server(kind: str, base: Path) -> Server:
    if kind == "nginx":
        missing = s3_nginx.available()
        if missing is None:
            return s3_nginx.NginxS3Server(base / "nginx")
        print(f"NOTE: {missing}; the S3 part uses moto, whose ~2 ms of CPU per request is "
              "then the ceiling of every figure")
    return S3Server(log_path=os.fspath(base / "s3.log"))


def main(argv: list[str] | None = None) -> int:
    args = bench_args.parse(argv)  # every part's flags; this part uses its own
    small_count, large_size, partition = ((2_000, 64 * MIB, "16MiB") if args.quick
                                          else (20_000, 256 * MIB, "64MiB"))
    latencies = [ms / 1000 for ms in args.s3_latency] if args.s3_latency else list(LATENCIES)
    datasets = args.s3_dataset or ["small", "large"]
    transfers = args.s3_rclone_transfers or list(RCLONE_TRANSFERS)

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    base = Path(tempfile.mkdtemp(prefix="alluxiojob-bench-s3."))
    rclone = None if args.s3_no_rclone else shutil.which("rclone")
    server = make_server(args.s3_server, base)
    clusters: dict[str, Cluster] = {}
    results = []
    try:
        sets = {"small": (small_count, 4 * KIB, 100), "large": (4, large_size, 1)}
        if isinstance(server, s3_nginx.NginxS3Server):
            for name in datasets:
                place_objects(server, name, *sets[name])
            server.start()
        else:
            server.start()
            server.create_bucket(BUCKET)
            for name in datasets:
                place_objects(server, name, *sets[name])
        props = [f"{k}={v}" for k, v in server.properties().items()]
        defines = [f"alluxio.worker.load.file.partition.size={partition}", *props,
                   *args.s3_define]
        for name, extra in [("alluxiojob", []), *args.s3_variant]:
            clusters[name] = Cluster(base / f"cluster-{name}", [*defines, *extra])
            clusters[name].start()
        kind = ("nginx + Lua (alluxiojob.testing.s3_nginx)"
                if isinstance(server, s3_nginx.NginxS3Server) else "moto")
        print(f"\nS3: {kind} S3 server on 127.0.0.1 (pids {server_pids(server)}); "
              f"1 coordinator + 2 workers, partition size {partition}"
              + "".join(f", {d}" for d in args.s3_define)
              + " (other properties default)"
              + "".join(f"; variant {name}: {', '.join(extra)}"
                        for name, extra in args.s3_variant))
        for latency in latencies:
            server.set_latency(latency)
            for name in datasets:
                count, size, _ = sets[name]
                loads = {c: S3Load(cluster, f"s3://{BUCKET}/{name}", count, count * size)
                         for c, cluster in clusters.items()}
                # Every run is checked; the small set is long enough not to need a
                # warm-up (the worker pools start with the workers).
                result = bench_prefix(name, loads, server, base / "out", args.reps, rclone,
                                      transfers, warm_up=name == "large")
                result["latency"] = latency
                results.append(result)
                print_tables(result, latency, args.reps)
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
