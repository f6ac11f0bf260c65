"""Benchmark reads of the cache through a worker's S3 API against nginx (Debian).

Run it through ``scripts/bench`` (its read part; ``--read-only`` runs just this). In
one run, on the same files:

* generates (a) one 1 GiB file and (b) 2,000 files of 4 KiB, and LOADs both into one
  worker (so that every file is a hit on the worker asked: no proxying), whose S3 API
  serves them as bucket ``bench`` (protected mode: loopback, unsigned);
* starts nginx serving the worker's cache copies of the same files from disk (sendfile,
  as many worker processes as CPUs), under the same ``/bench/...`` paths;
* for N paired repetitions in rotating order, times with curl: (a) one GET of the
  whole 1 GiB object (MiB/s), (b) GETs of every small object with 64 transfers at
  once (``curl --parallel --parallel-max 64``; requests/s); each response is checked;
* reads the server's CPU time per run (the worker process; nginx's master and
  workers), which the 1-minute load average of a shared host disturbs less than wall
  time, and prints medians, the paired ratios S3 API / nginx, and CPU per GiB and per
  1,000 requests.

``--quick``: 128 MiB and 500 small files. ``--read-clients``: the concurrency of (b).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_args
from bench_common import (
    KIB,
    MIB,
    BenchError,
    Cluster,
    free_ports,
    log,
    make_large,
    make_small,
    print_table,
    ratio_text,
    rotations,
    run_part,
)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def nginx_pids(master: int) -> list[int]:
    pids = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(entry))
    return pids


def start_nginx(base: Path, root: Path, port: int) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise BenchError("nginx is not installed (Debian: apt-get install nginx-light)")
    prefix = base / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # the cache is private to its user
    conf = prefix / "nginx.conf"
    conf.write_text(f"""{user}worker_processes {os.cpu_count() or 1};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location /bench/ {{ alias {root}/; }}
    }}
}}
""")
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(prefix / "logs" / "stderr.log", "wb"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError("nginx exited: "
                             + (prefix / "logs" / "stderr.log").read_text(errors="replace"))
        probe = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                f"http://127.0.0.1:{port}/bench/"], capture_output=True,
                               text=True)
        if probe.stdout in ("200", "403", "404"):
            return proc
        time.sleep(0.1)
    raise BenchError("nginx did not answer within 20s")


def digest(url: str) -> str:
    sha = hashlib.sha256()
    with subprocess.Popen(["curl", "-sf", url], stdout=subprocess.PIPE) as curl:
        assert curl.stdout is not None
        for chunk in iter(lambda: curl.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
            sha.update(chunk)
    if curl.returncode != 0:
        raise BenchError(f"GET {url} failed (curl exit {curl.returncode})")
    return sha.hexdigest()


def get_large(url: str, size: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0 or int(done.stdout or 0) != size:
        raise BenchError(f"GET {url}: curl exit {done.returncode}, {done.stdout} bytes")
    return wall


def get_small(list_file: Path, clients: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(["curl", "-sf", "--parallel", "--parallel-immediate",
                           "--parallel-max", str(clients), "-K", str(list_file)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"parallel GETs failed (curl exit {done.returncode}): "
                         f"{done.stderr[-500:]}")
    return wall


def body(base: Path, args: object) -> dict[str, object]:
    quick = bool(getattr(args, "quick", False))
    reps = int(getattr(args, "reps", 3))
    clients = int(getattr(args, "read_clients", 64) or 64)
    large_size, small_count = (128 * MIB, 500) if quick else (1024 * MIB, 2000)
    data = base / "read-data"
    large = make_large(data / "large", 1, large_size)
    small = make_small(data / "small", small_count, 10, 4 * KIB)
    s3_port, nginx_port = free_ports(2)
    cluster = Cluster(base / "read-cluster", workers=1, defines=[
        "alluxio.worker.s3.api.enabled=true", f"alluxio.worker.rest.port={s3_port}",
        f"alluxio.worker.s3.bucket.mounts=bench=file://{data}",
        "alluxio.worker.s3.max.inflight.requests=1024"])
    results: dict[str, object] = {"clients": clients, "large_bytes": large_size,
                                  "small_files": small_count}
    with cluster:
        cluster.start()
        for ds in (large, small):
            cluster.load(ds)
        cache_root = cluster.cache_dirs[0] / "data" / os.fspath(data.resolve()).lstrip("/")
        nginx = start_nginx(base, cache_root, nginx_port)
        try:
            servers = {"s3": f"http://127.0.0.1:{s3_port}/bench",
                       "nginx": f"http://127.0.0.1:{nginx_port}/bench"}
            keys = sorted(str(p.relative_to(data)) for p in (data / "small").rglob("*.bin"))
            lists = {}
            for name, url in servers.items():
                lists[name] = base / f"{name}.curl"
                lists[name].write_text("".join(f'url = "{url}/{k}"\noutput = "/dev/null"\n'
                                               for k in keys))
            big = "large/large-0.bin"
            for name, url in servers.items():  # both serve the same bytes
                if digest(f"{url}/{big}") != digest(f"{servers['s3']}/{big}") \
                        or digest(f"{url}/{keys[0]}") != hashlib.sha256(
                            (data / keys[0]).read_bytes()).hexdigest():
                    raise BenchError(f"{name} serves other bytes than the source")
            pids = {"s3": [cluster.pid("worker1")], "nginx": nginx_pids(nginx.pid)}
            runs: dict[str, dict[str, list[float]]] = {
                n: {"large_wall": [], "large_cpu": [], "small_wall": [], "small_cpu": []}
                for n in servers}
            loads = []
            for order in rotations(list(servers), reps):
                loads.append(os.getloadavg()[0])
                for name in order:
                    before = cpu_seconds(pids[name])
                    runs[name]["large_wall"].append(get_large(f"{servers[name]}/{big}",
                                                              large_size))
                    runs[name]["large_cpu"].append(cpu_seconds(pids[name]) - before)
                    before = cpu_seconds(pids[name])
                    runs[name]["small_wall"].append(get_small(lists[name], clients))
                    runs[name]["small_cpu"].append(cpu_seconds(pids[name]) - before)
                log(f"repetition done: {order}")
        finally:
            nginx.terminate()
            nginx.wait(10)
    gib = large_size / (1024 * MIB)
    rows = []
    for name in servers:
        r = runs[name]
        rows.append([name, f"{large_size / MIB / statistics.median(r['large_wall']):8.0f}",
                     f"{statistics.median(r['large_cpu']) / gib:7.2f}",
                     f"{small_count / statistics.median(r['small_wall']):8.0f}",
                     f"{statistics.median(r['small_cpu']) * 1000 / small_count:8.2f}"])
    print_table(f"Reads of cached files: 1 GET of {large_size // MIB} MiB; {small_count} GETs "
                f"of 4 KiB, {clients} at once (medians of {reps}; load avg "
                f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs)",
                [("server", 8), ("MiB/s", 8), ("CPU s/GiB", 9), ("req/s", 8),
                 ("CPU s/1k req", 12)], rows, label_first=True)
    print()
    # ratio_text(other, mine) is other_time / mine_time: here, S3 API speed / nginx speed
    print(f"  large GET, S3 API throughput / nginx's (paired): "
          f"{ratio_text(runs['nginx']['large_wall'], runs['s3']['large_wall'])}")
    print(f"  small GETs, S3 API request rate / nginx's:       "
          f"{ratio_text(runs['nginx']['small_wall'], runs['s3']['small_wall'])}")
    results.update(runs=runs, load_avg=loads)
    return results


def main(argv: list[str] | None = None) -> int:
    args = bench_args.parse(argv)
    if shutil.which("curl") is None:
        print("bench: the read part needs curl", file=sys.stderr)
        return 1
    return run_part(args, ["read-cluster", "nginx"], args.read_json,
                    lambda base: body(base, args))


if __name__ == "__main__":
    sys.exit(main())
