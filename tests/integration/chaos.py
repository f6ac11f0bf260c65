"""A chaos run: real etcd, 3 coordinators and 3 workers on loopback, jobs, faults, checks.

Used by ``scripts/chaos`` (long runs, figures for the README) and by
``tests/integration/test_chaos.py`` (a short run with a fixed seed).

Theory of operation
-------------------
*Cluster.* One etcd holds the job store of three coordinators (HA mode). Workers use
STATIC membership: every path then has a fixed set of owners, so a FREE must reach every
worker and its result can be checked exactly; with ETCD membership a worker that is dead
past its lease leaves the ring and a FREE legitimately skips it, so a file left cached
there could not be told from a bug. One worker has a small cache
(``alluxio.worker.page.store.sizes``) so that caches really fill.

*Workload.* Each *lane* owns a generated tree (odd names, empty files, files spanning
several 1 MiB partitions) and runs jobs on it one after another: LOAD (sometimes with
replicas, skip-if-exists, verify or a bandwidth limit), FREE, COPY to a fresh directory,
MOVE to a fresh directory (which becomes the lane's tree). Lanes run concurrently, so
the cluster sees a stream of jobs. After each job reaches a final state its lane checks
what the job claims, at once, on the disks themselves (caches are plain files):

- LOAD: every file is cached, with a sha256 equal to a version the source had while the
  job ran, in at least ``replicas`` worker caches; no cache holds a copy that matches no
  version at all (a torn copy). A file whose source changed mid-load may keep its old
  content (the index records the old mtime, so it is stale, not fresh); the lane then
  reloads with ``skip_if_exists``, and that LOAD must cache the final content.
- FREE: no cache holds any file of the tree.
- COPY/MOVE: every file is at the destination with the right sha256 (MOVE: and gone
  from the source).
- A FAILED job is fine only where every file it did not do is listed by
  ``--file-status FAILURE`` with a reason.

While a MOVE runs its lane samples, every poll, that each source file is still in place
or already at its destination with identical content; at the end every file of every
lane must exist, with its last content, where the lane's jobs put it.

*Faults* come from the seed: SIGKILL or SIGSTOP of a coordinator, a worker or etcd
(killed ones restarted, stopped ones continued, after a random delay), a LOAD that fills
the small cache, and a source file replaced (atomically, as object stores and most
writers do) while a LOAD of it runs.

*End of run.* Faults stop, every process is back, lanes finish their current job within
the grace period. Then:

- jobs lost: acknowledged (submit answered 200) but not findable, or not final;
- double-owner writes: etcd's history of the job prefix, replayed from revision 1 with a
  watch, must show every ``progress/<id>`` write made while the job record named its
  writer (``Progress.writer``) as owner, and every failure-list write while the job was
  owned; a final SUCCEEDED/FAILED transition must carry its owner's progress;
- longest failover: from a coordinator's SIGKILL to each of its jobs claimed again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from alluxiojob.protocol.codec import unpack_record
from alluxiojob.testing.etcd import EtcdServer, EtcdStartError
from tests.integration.cluster import Cluster, Service

MiB = 1 << 20
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
OWNED = {"RUNNING", "VERIFYING"}
JOB_PREFIX = "/alluxio/jobs/"
SENTINEL = JOB_PREFIX + "~chaos-history-end"
FAULT_KINDS = (
    "kill_coordinator", "stop_coordinator", "kill_worker", "stop_worker",
    "kill_etcd", "stop_etcd", "fill_cache", "change_source",
)
FAULT_WEIGHTS = (3, 3, 3, 3, 1, 1, 1, 2)
ODD_NAMES = (
    "plain.txt", "with space.bin", "ünïcødé.dat", "日本語.txt", "-leading-dash",
    "percent%20encoded", "hash#mark", "question?.txt", "quote's \"double\"", ".hidden",
    "emoji-😀.bin", "tab\there", "semi;colon&amp", "x" * 180, "trailing space ",
    "UPPER.lower", "a+b=c", "brackets[1](2){3}",
)


# ================================================================== etcd, read directly
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdGateway:
    """etcd's own JSON gateway, read by the checker independently of the job store."""

    def __init__(self, url: str) -> None:
        self.url = url

    def put(self, key: str, value: bytes) -> None:
        body = {"key": _b64(key.encode()), "value": _b64(value)}
        httpx.post(f"{self.url}/v3/kv/put", json=body, timeout=5).raise_for_status()

    def scan(self, prefix: str, timeout: float = 2.0) -> list[tuple[str, bytes, int]]:
        raw = prefix.encode()
        body = {"key": _b64(raw), "range_end": _b64(_prefix_end(raw))}
        answer = httpx.post(f"{self.url}/v3/kv/range", json=body, timeout=timeout)
        answer.raise_for_status()
        return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")),
                 int(kv.get("mod_revision", 0))) for kv in answer.json().get("kvs", ())]

    def history(self, prefix: str, timeout: float = 120.0) -> list[HistoryEvent]:
        """Every change under ``prefix`` since revision 1, in order (needs no compaction).

        A sentinel key is written first, with a value of its own; the watch replays
        history up to that write.
        """
        nonce = os.urandom(16)
        self.put(SENTINEL, nonce)
        raw = prefix.encode()
        body = {"create_request": {"key": _b64(raw), "range_end": _b64(_prefix_end(raw)),
                                   "start_revision": "1"}}
        events: list[HistoryEvent] = []
        deadline = time.monotonic() + timeout
        with httpx.stream("POST", f"{self.url}/v3/watch", json=body,
                          timeout=httpx.Timeout(10, read=30)) as answer:
            answer.raise_for_status()
            for line in answer.iter_lines():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd history not read within {timeout}s")
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                if result.get("compact_revision") not in (None, "0"):
                    raise RuntimeError("etcd history was compacted; cannot audit it")
                for event in result.get("events", ()):
                    kv = event["kv"]
                    key = base64.b64decode(kv["key"]).decode(errors="replace")
                    if key == SENTINEL:
                        if base64.b64decode(kv.get("value", "")) == nonce:
                            return events
                        continue
                    events.append(HistoryEvent(
                        int(kv.get("mod_revision", 0)), event.get("type", "PUT"), key,
                        base64.b64decode(kv.get("value", ""))))
        raise RuntimeError("etcd's watch ended before the end of its history")


@dataclass(frozen=True)
class HistoryEvent:
    revision: int
    type: str  # PUT or DELETE
    key: str
    value: bytes


def audit_owner_writes(events: Iterable[HistoryEvent], prefix: str = JOB_PREFIX) -> list[str]:
    """Writes to a job's records accepted from a coordinator that did not own the job.

    A ``progress/<id>`` write must come from the owner the job record names just before
    it (its ``writer``); a ``failures/<id>/…`` write must happen while the job is owned;
    a job's move from RUNNING/VERIFYING to SUCCEEDED/FAILED must carry its owner's
    progress in the same transaction (revision).
    """
    jobs: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    by_revision: dict[int, list[HistoryEvent]] = {}
    for event in events:
        by_revision.setdefault(event.revision, []).append(event)
    for revision in sorted(by_revision):
        batch = by_revision[revision]
        before = dict(jobs)  # the job records as they were just before this transaction
        progress_writers: dict[str, str] = {}
        for event in batch:
            kind, _, rest = event.key[len(prefix):].partition("/")
            job_id = rest.split("/", 1)[0]
            if event.type == "DELETE":
                if kind == "job":
                    jobs.pop(job_id, None)
                continue
            if kind == "job":
                jobs[job_id] = unpack_record(event.value)
            elif kind == "progress":
                writer = str(unpack_record(event.value).get("writer", ""))
                progress_writers[job_id] = writer
                prior = before.get(job_id)
                if prior is None or prior["state"] not in OWNED or prior["owner"] != writer:
                    held = "no record" if prior is None else \
                        f"{prior['state']} owned by {prior['owner'] or 'nobody'}"
                    problems.append(f"revision {revision}: progress of job {job_id} written "
                                    f"by {writer or 'an unnamed writer'} while the job was "
                                    f"{held}")
            elif kind == "failures":
                prior = before.get(job_id)
                if prior is None or prior["state"] not in OWNED:
                    state = "gone" if prior is None else prior["state"]
                    problems.append(f"revision {revision}: failure record of job {job_id} "
                                    f"written while the job was {state}")
        for job_id, record in jobs.items():
            prior = before.get(job_id)
            if (prior is not None and prior is not record and prior["state"] in OWNED
                    and record["state"] in ("SUCCEEDED", "FAILED")
                    and progress_writers.get(job_id) != prior["owner"]):
                problems.append(f"revision {revision}: job {job_id} became {record['state']} "
                                f"without the progress of its owner {prior['owner']}")
    return problems


# ================================================================== data
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(MiB), b""):
                digest.update(chunk)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return digest.hexdigest()


def make_lane_tree(root: Path, rng: random.Random, small: int, big: int) -> dict[str, str]:
    """Odd names, empty files, nested dirs and ``big`` multi-partition files: relpath -> sha."""
    contents: dict[str, str] = {}
    dirs = ["", "sub dir", "sub dir/ünï", "deep/a/b/c", "日本"]
    for i in range(small + big):
        name = f"{i:02d} {ODD_NAMES[i % len(ODD_NAMES)]}"
        rel = f"{dirs[i % len(dirs)]}/{name}".lstrip("/")
        if i >= small:
            size = rng.randint(int(1.2 * MiB), int(3.5 * MiB))
        elif rng.random() < 0.15:
            size = 0
        else:
            size = rng.randint(1, 12_000)
        data = rng.randbytes(size)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        contents[rel] = sha256_bytes(data)
    return contents


# ================================================================== results
@dataclass
class Report:
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    acknowledged: set[str] = field(default_factory=set)
    jobs_by_state: Counter[str] = field(default_factory=Counter)
    jobs_lost: list[str] = field(default_factory=list)
    files_wrong: list[str] = field(default_factory=list)
    move_lost: list[str] = field(default_factory=list)
    double_owner: list[str] = field(default_factory=list)
    failovers: list[float] = field(default_factory=list)
    stale_copies: int = 0
    anomalies: list[str] = field(default_factory=list)
    history_events: int = 0
    wall_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def lost(self) -> int:
        return (len(self.jobs_lost) + len(self.files_wrong) + len(self.move_lost)
                + len(self.double_owner))

    def add(self, bucket: list[str], message: str) -> None:
        with self.lock:
            bucket.append(message)

    def ended(self, state: str) -> None:
        with self.lock:
            self.jobs_by_state[state] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "faults": sum(self.faults.values()),
            "faults_by_kind": dict(sorted(self.faults.items())),
            "jobs_acknowledged": len(self.acknowledged),
            "jobs_by_state": dict(sorted(self.jobs_by_state.items())),
            "jobs_lost": len(self.jobs_lost),
            "files_lost_or_wrong": len(self.files_wrong),
            "move_sources_lost": len(self.move_lost),
            "double_owner_writes": len(self.double_owner),
            "history_events_audited": self.history_events,
            "longest_failover_s": round(max(self.failovers), 2) if self.failovers else None,
            "failovers_measured": len(self.failovers),
            "stale_copies_reloaded": self.stale_copies,
            "anomalies": len(self.anomalies),
            "wall_s": round(self.wall_seconds, 1),
        }

    def render(self) -> str:
        s = self.summary()
        lines = [
            f"seed {s['seed']}: {s['faults']} faults "
            + ", ".join(f"{k} {v}" for k, v in s["faults_by_kind"].items()),
            f"  jobs acknowledged {s['jobs_acknowledged']} "
            f"({', '.join(f'{k} {v}' for k, v in s['jobs_by_state'].items())}), "
            f"jobs lost {s['jobs_lost']}",
            f"  files lost or wrong {s['files_lost_or_wrong']}, MOVE sources lost "
            f"{s['move_sources_lost']}, double-owner writes {s['double_owner_writes']} "
            f"(of {s['history_events_audited']} etcd events)",
            f"  longest failover {s['longest_failover_s']} s over {s['failovers_measured']} "
            f"measured, stale copies reloaded {s['stale_copies_reloaded']}, "
            f"anomalies {s['anomalies']}, wall {s['wall_s']} s",
        ]
        for title, items in (("JOBS LOST", self.jobs_lost), ("FILES LOST OR WRONG",
                             self.files_wrong), ("MOVE SOURCES LOST", self.move_lost),
                             ("DOUBLE-OWNER WRITES", self.double_owner),
                             ("ANOMALIES", self.anomalies)):
            for item in items[:20]:
                lines.append(f"  {title}: {item}")
            if len(items) > 20:
                lines.append(f"  {title}: ... and {len(items) - 20} more")
        return "\n".join(lines)


# ================================================================== the run
@dataclass
class ChaosConfig:
    seed: int
    root: Path
    faults: int = 50
    duration: float = 900.0  # seconds of faults at most, even if fewer were injected
    grace: float = 180.0  # after the faults, for the jobs in flight to end
    lanes: int = 4
    mean_gap: float = 2.5  # seconds between faults, on average
    small_files: int = 22
    big_files: int = 2
    detection_timeout: float = 3.0
    log: Callable[[str], None] = print


@dataclass
class Lane:
    index: int
    rng: random.Random
    tree: Path
    contents: dict[str, list[str]]  # relpath -> sha256 of every version, last = current
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0
    copies: int = 0
    load_job: str = ""  # the LOAD running now, for the change_source fault
    changed: set[str] = field(default_factory=set)  # changed during the running LOAD


class ChaosRun:
    def __init__(self, config: ChaosConfig) -> None:
        self.cfg = config
        self.report = Report(config.seed)
        self.started = time.monotonic()
        self.fault_rng = random.Random(f"{config.seed}-faults")
        self.pick = random.Random(f"{config.seed}-pick")  # coordinator choice: not replayed
        self.stop_jobs = threading.Event()  # lanes submit nothing new
        self.hard_stop = 0.0  # monotonic deadline for the lanes' last jobs
        self.faulted: set[str] = set()  # services under a fault now
        self.faulted_lock = threading.Lock()
        self.timers: list[threading.Thread] = []
        self.lanes: list[Lane] = []
        self.etcd: EtcdServer | None = None
        self.cluster: Cluster | None = None
        self.gateway: EtcdGateway | None = None
        self.filler_job = ""
        self.checkers: list[threading.Thread] = []

    # ------------------------------------------------------------------ helpers
    def log(self, message: str) -> None:
        self.cfg.log(f"[{time.monotonic() - self.started:7.1f}s] {message}")

    def _cluster(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def services(self) -> dict[str, Service]:
        c = self._cluster()
        return {s.name: s for s in [*c.coordinators, *c.workers]}

    def request(self, method: str, path: str, timeout: float = 5.0,
                **kwargs: Any) -> httpx.Response | None:
        """Ask any live coordinator; None when none answered below 500."""
        c = self._cluster()
        order = [i for i, s in enumerate(c.coordinators)
                 if s.alive and s.name not in self.faulted]
        self.pick.shuffle(order)
        for i in order:
            try:
                answer = httpx.request(method, c.url(i) + path, timeout=timeout, **kwargs)
            except httpx.HTTPError:
                continue
            if answer.status_code == 500:
                self.report.add(self.report.anomalies,
                                f"HTTP 500 from coordinator{i} on {method} {path}: "
                                f"{answer.text[:300]}")
            if answer.status_code >= 500:
                continue
            return answer
        return None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        root = self.cfg.root
        root.mkdir(parents=True, exist_ok=True)
        self.etcd = EtcdServer(data_dir=root / "etcd")
        self.etcd.start()
        self.gateway = EtcdGateway(self.etcd.url)
        detection = self.cfg.detection_timeout
        self.cluster = Cluster(root / "cluster", {
            "alluxio.coordinator.job.meta.store.type": "ETCD",
            "alluxio.etcd.endpoints": self.etcd.url,
            "alluxio.coordinator.failure.detection.timeout": f"{detection}s",
            "alluxio.coordinator.scheduler.job.etcd.poll.interval": "200ms",
            "alluxio.coordinator.scheduler.interval.time": "500ms",
            "alluxio.coordinator.scheduler.etcd.read.timeout": "2s",
            "alluxio.coordinator.scheduler.etcd.write.timeout": "2s",
            "alluxio.worker.load.file.partition.size": "1MiB",
            "alluxio.worker.job.cache.pin.time": "30s",
            "alluxio.job.retry.max.attempts": "6",
            "alluxio.job.retry.backoff": "200ms",
        })
        c = self.cluster
        c.add_worker(start=False)
        c.add_worker(start=False)
        c.add_worker(start=False, **{"alluxio.worker.page.store.sizes": "8MiB"})  # fills
        for _ in range(3):
            c.add_coordinator(start=False)
        for service in [*c.workers, *c.coordinators]:  # all at once: 2 cores start faster
            service.start(wait=False)
        for service in [*c.workers, *c.coordinators]:
            service.wait_healthy(120)
        ufs = root / "ufs"
        for i in range(self.cfg.lanes):
            rng = random.Random(f"{self.cfg.seed}-lane{i}")
            tree = ufs / f"lane{i}" / "g0"
            made = make_lane_tree(tree, rng, self.cfg.small_files, self.cfg.big_files)
            self.lanes.append(Lane(i, rng, tree, {k: [v] for k, v in made.items()}))
        filler = ufs / "filler"
        filler.mkdir(parents=True)
        rng = random.Random(f"{self.cfg.seed}-filler")
        for i in range(16):
            (filler / f"fill-{i:02d}.bin").write_bytes(rng.randbytes(MiB))
        self.filler = filler
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        self.log(f"cluster up: etcd {self.etcd.url}, coordinators "
                 f"{[s.port for s in c.coordinators]}, "  # type: ignore[attr-defined]
                 f"workers {[s.rpc_port for s in c.workers]}")  # type: ignore[attr-defined]

    def teardown(self) -> None:
        if self.cluster is not None:
            self.cluster.stop_all()
        if self.etcd is not None:
            self.etcd.resume()
            self.etcd.kill()

    # ------------------------------------------------------------------ run
    def run(self) -> Report:
        try:
            self.setup()
            lanes = [threading.Thread(target=self._lane_main, args=(lane,), daemon=True,
                                      name=f"lane{lane.index}") for lane in self.lanes]
            for t in lanes:
                t.start()
            self._inject_faults()
            self.log("faults done; restoring every process")
            for t in self.timers:
                t.join(120)
            self._restore_all()
            self.stop_jobs.set()
            self.hard_stop = time.monotonic() + self.cfg.grace
            for t in [*lanes, *self.checkers]:
                t.join(max(1.0, self.hard_stop - time.monotonic() + 30))
            self._final_checks()
        finally:
            self.report.wall_seconds = time.monotonic() - self.started
            self.teardown()
        return self.report

    # ------------------------------------------------------------------ faults
    def _inject_faults(self) -> None:
        deadline = time.monotonic() + self.cfg.duration  # from the first fault on
        injected = 0
        while injected < self.cfg.faults and time.monotonic() < deadline:
            time.sleep(self.fault_rng.uniform(0.2, 2 * self.cfg.mean_gap - 0.2))
            self._check_crashes()
            kind = self.fault_rng.choices(FAULT_KINDS, FAULT_WEIGHTS)[0]
            try:
                done = getattr(self, f"_fault_{kind}")()
            except Exception as exc:
                self.report.add(self.report.anomalies,
                                f"fault {kind} could not be injected: {exc!r}")
                done = False
            if done:
                injected += 1
                self.report.faults[kind] += 1
        if injected < self.cfg.faults:
            self.log(f"duration reached after {injected} of {self.cfg.faults} faults")

    def _claim(self, name: str) -> bool:
        with self.faulted_lock:
            if name in self.faulted:
                return False
            self.faulted.add(name)
            return True

    def _release(self, name: str) -> None:
        with self.faulted_lock:
            self.faulted.discard(name)

    def _later(self, delay: float, action: Callable[[], None], name: str) -> None:
        def run() -> None:
            time.sleep(delay)
            try:
                action()
            except Exception:
                self.report.add(self.report.anomalies,
                                f"restoring {name} failed: {traceback.format_exc(limit=3)}")
            finally:
                self._release(name)

        thread = threading.Thread(target=run, daemon=True, name=f"restore-{name}")
        self.timers.append(thread)
        thread.start()

    def _pick_service(self, kind: str) -> Service | None:
        c = self._cluster()
        pool = c.coordinators if kind == "coordinator" else c.workers
        for service in self.fault_rng.sample(pool, len(pool)):
            if service.alive and self._claim(service.name):
                return service
        return None

    def _restart(self, service: Service) -> None:
        """Start a killed service again; retry while it exits (e.g. etcd still down)."""
        for _ in range(30):
            service.start(wait=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assert service.proc is not None
                if service.proc.poll() is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(service.health_url, timeout=1).status_code == 200:
                        self.log(f"{service.name} restarted")
                        return
                time.sleep(0.1)
            else:
                return  # running, not yet healthy (etcd down?): it will get there
            self.log(f"{service.name} exited with {service.proc.returncode} at start; "
                     "starting it again")
            time.sleep(1)
        self.report.add(self.report.anomalies, f"{service.name} would not start again")

    def _kill(self, kind: str) -> bool:
        service = self._pick_service(kind)
        if service is None:
            return False
        owned = self._owned_jobs(service) if kind == "coordinator" else {}
        killed_at = time.monotonic()
        service.kill()
        delay = self.fault_rng.uniform(0.5, 6.0)
        self.log(f"SIGKILL {service.name}; restart in {delay:.1f}s")
        if owned:
            self._watch_failover(service.name, owned, killed_at)
        self._later(delay, lambda: self._restart(service), service.name)
        return True

    def _stop(self, kind: str) -> bool:
        service = self._pick_service(kind)
        if service is None:
            return False
        service.signal(signal.SIGSTOP)
        delay = self.fault_rng.uniform(0.5, 2.5 * self.cfg.detection_timeout)
        self.log(f"SIGSTOP {service.name}; SIGCONT in {delay:.1f}s")

        def cont() -> None:
            service.signal(signal.SIGCONT)
            self.log(f"SIGCONT {service.name}")

        self._later(delay, cont, service.name)
        return True

    def _fault_kill_coordinator(self) -> bool:
        return self._kill("coordinator")

    def _fault_stop_coordinator(self) -> bool:
        return self._stop("coordinator")

    def _fault_kill_worker(self) -> bool:
        return self._kill("worker")

    def _fault_stop_worker(self) -> bool:
        return self._stop("worker")

    def _fault_kill_etcd(self) -> bool:
        etcd = self.etcd
        if etcd is None or not etcd.running or not self._claim("etcd"):
            return False
        etcd.kill()
        delay = self.fault_rng.uniform(0.5, 5.0)
        self.log(f"SIGKILL etcd; restart in {delay:.1f}s")

        def restart() -> None:
            for _ in range(10):
                try:
                    etcd.start()
                    self.log("etcd restarted")
                    return
                except EtcdStartError as exc:
                    self.log(f"etcd restart failed, again: {exc}")
            raise RuntimeError("etcd would not start again")

        self._later(delay, restart, "etcd")
        return True

    def _fault_stop_etcd(self) -> bool:
        etcd = self.etcd
        if etcd is None or not etcd.running or not self._claim("etcd"):
            return False
        etcd.pause()
        delay = self.fault_rng.uniform(0.5, 2 * self.cfg.detection_timeout)
        self.log(f"SIGSTOP etcd; SIGCONT in {delay:.1f}s")

        def cont() -> None:
            etcd.resume()
            self.log("SIGCONT etcd")

        self._later(delay, cont, "etcd")
        return True

    def _fault_fill_cache(self) -> bool:
        """A LOAD bigger than the small worker's cache; checked like any LOAD."""
        body = {"path": str(self.filler), "options": {"batch_size": 4}}
        answer = self.request("POST", "/api/v1/master/submit_job/load", json=body)
        if answer is None or answer.status_code != 200:
            return False
        job_id = answer.json()["id"]
        self.report.acknowledged.add(job_id)
        if job_id == self.filler_job:
            return False  # the previous one still runs
        self.filler_job = job_id
        self.log(f"fill_cache: LOAD {job_id} of {self.filler.name}")
        contents = {p.name: [sha256_file(p) or ""] for p in self.filler.iterdir()}

        def check() -> None:
            report = self._wait_final(job_id)
            if report is not None:
                self._check_load(f"filler LOAD {job_id}", self.filler, contents,
                                 {k: 0 for k in contents}, 1, report)

        thread = threading.Thread(target=check, daemon=True, name="filler")
        self.checkers.append(thread)
        thread.start()
        return True

    def _fault_change_source(self) -> bool:
        """Replace a file of a running LOAD's tree, atomically, with new content."""
        lanes = [lane for lane in self.lanes if lane.load_job]
        if not lanes:
            return False
        lane = self.fault_rng.choice(lanes)
        with lane.lock:
            if not lane.load_job:
                return False
            names = sorted(lane.contents)
            big = [n for n in names if (lane.tree / n).stat().st_size > MiB]
            # Half the time a multi-partition file: its partitions are read separately.
            rel = self.fault_rng.choice(big if big and self.fault_rng.random() < 0.5 else names)
            target = lane.tree / rel
            old_size = target.stat().st_size
            data = self.fault_rng.randbytes(max(0, old_size + self.fault_rng.randint(-500, 500)))
            staging = self.tmp / f"change-{time.monotonic_ns()}"
            staging.write_bytes(data)
            os.rename(staging, target)
            lane.contents[rel].append(sha256_bytes(data))
            lane.changed.add(rel)
        self.log(f"change_source: replaced {rel!r} of lane{lane.index} "
                 f"({old_size} -> {len(data)} bytes) during LOAD {lane.load_job}")
        return True

    def _check_crashes(self) -> None:
        """A service that died without being killed is a finding; it is started again."""
        for name, service in self.services().items():
            if (name not in self.faulted and service.proc is not None
                    and service.proc.poll() is not None and self._claim(name)):
                self.report.add(self.report.anomalies,
                                f"{name} exited by itself with {service.proc.returncode}: "
                                + service.log()[-1500:])
                self._later(0, lambda s=service: self._restart(s), name)

    def _restore_all(self) -> None:
        self._check_crashes()
        for t in self.timers:
            t.join(120)
        for service in self.services().values():
            with contextlib.suppress(Exception):
                service.wait_healthy(60)
        etcd = self.etcd
        if etcd is not None and not etcd.running:
            etcd.start()

    # ------------------------------------------------------------------ failover
    def _coordinator_id(self, service: Service) -> str:
        return f"127.0.0.1:{service.port}"  # type: ignore[attr-defined]

    def _owned_jobs(self, service: Service) -> dict[str, int]:
        """Jobs the coordinator owns now, with their claim counts (read from etcd)."""
        assert self.gateway is not None
        me = self._coordinator_id(service)
        try:
            records = self.gateway.scan(JOB_PREFIX + "job/", timeout=1.0)
        except httpx.HTTPError:
            return {}  # etcd is down: this kill's failover is not measured
        owned: dict[str, int] = {}
        for key, value, _rev in records:
            job = unpack_record(value)
            if job["state"] in OWNED and job["owner"] == me:
                owned[key.rsplit("/", 1)[-1]] = int(job["claims"])
        return owned

    def _watch_failover(self, name: str, owned: dict[str, int], killed_at: float) -> None:
        assert self.gateway is not None
        gateway = self.gateway

        def watch() -> None:
            waiting = dict(owned)
            longest = 0.0
            deadline = killed_at + 180
            while waiting and time.monotonic() < deadline:
                try:
                    records = gateway.scan(JOB_PREFIX + "job/", timeout=1.0)
                except httpx.HTTPError:
                    time.sleep(0.1)
                    continue
                now = time.monotonic()
                for key, value, _rev in records:
                    job_id = key.rsplit("/", 1)[-1]
                    if job_id not in waiting:
                        continue
                    job = unpack_record(value)
                    if int(job["claims"]) > waiting[job_id] and job["state"] != "WAITING":
                        longest = max(longest, now - killed_at)
                        del waiting[job_id]
                time.sleep(0.05)
            if waiting:
                self.log(f"failover of {name}: {len(waiting)} jobs not claimed again")
                return
            with self.report.lock:
                self.report.failovers.append(longest)
            self.log(f"failover of {name}: {len(owned)} jobs claimed again after "
                     f"{longest:.2f}s")

        thread = threading.Thread(target=watch, daemon=True, name=f"failover-{name}")
        self.checkers.append(thread)
        thread.start()

    # ------------------------------------------------------------------ lanes
    def _submit(self, job_type: str, path: Path, dst: Path | None = None,
                **options: Any) -> str | None:
        """Submit until acknowledged; a lost answer is resolved by the (type, path) key."""
        body: dict[str, Any] = {"path": str(path), "options": options}
        if dst is not None:
            body["dst"] = str(dst)
        deadline = time.monotonic() + 120
        ambiguous = False
        while time.monotonic() < deadline:
            answer = self.request("POST", f"/api/v1/master/submit_job/{job_type.lower()}",
                                  json=body, timeout=10)
            if answer is None or answer.status_code == 429:
                ambiguous = True
                time.sleep(0.5)
                continue
            if answer.status_code == 200:
                job_id: str = answer.json()["id"]
                self.report.acknowledged.add(job_id)
                return job_id
            if answer.status_code == 404 and ambiguous:
                params = {"path": str(path)}
                if dst is not None:
                    params["dst"] = str(dst)
                found = self.request("GET", f"/api/v1/master/progress_job/{job_type.lower()}",
                                     params=params)
                if found is not None and found.status_code == 200:
                    return str(found.json()["job"]["id"])
            self.report.add(self.report.anomalies,
                            f"{job_type} {path} refused: {answer.status_code} {answer.text}")
            return None
        self.report.add(self.report.anomalies, f"{job_type} {path}: no coordinator took it")
        return None

    def _wait_final(self, job_id: str, sample: Callable[[], None] | None = None
                    ) -> dict[str, Any] | None:
        """Poll until the job is final; None if it is not by the end of the grace period."""
        while not self.hard_stop or time.monotonic() < self.hard_stop:
            if sample is not None:
                sample()
            answer = self.request("GET", f"/api/v1/master/job/{job_id}/progress")
            if answer is not None and answer.status_code == 200:
                report: dict[str, Any] = answer.json()
                if report["job"]["state"] in FINAL:
                    if report["job"]["state"] == "FAILED":
                        failed = self.request(
                            "GET", f"/api/v1/master/job/{job_id}/progress",
                            params={"file_status": "FAILURE"})
                        if failed is None or failed.status_code != 200:
                            time.sleep(0.3)
                            continue
                        report = failed.json()
                    return report
            time.sleep(0.3)
        return None

    def _lane_main(self, lane: Lane) -> None:
        try:
            reload_next = False
            while not self.stop_jobs.is_set():
                step = "LOAD" if reload_next else lane.rng.choices(
                    ["LOAD", "FREE", "COPY", "MOVE"], [5, 2, 2, 2])[0]
                if step == "LOAD":
                    reload_next = self._lane_load(lane, reload=reload_next)
                elif step == "FREE":
                    self._lane_free(lane)
                elif step == "COPY":
                    self._lane_copy(lane)
                else:
                    self._lane_move(lane)
        except Exception:
            self.report.add(self.report.anomalies,
                            f"lane{lane.index} stopped: {traceback.format_exc()}")

    def _current(self, lane: Lane) -> dict[str, str]:
        with lane.lock:
            return {rel: versions[-1] for rel, versions in lane.contents.items()}

    def _lane_load(self, lane: Lane, reload: bool) -> bool:
        rng = lane.rng
        options: dict[str, Any] = {"batch_size": rng.choice([2, 5, 10])}
        replicas = 2 if rng.random() < 0.25 else 1
        if replicas > 1:
            options["replicas"] = replicas
        if reload or rng.random() < 0.3:
            options["skip_if_exists"] = True
        if rng.random() < 0.2:
            options["verify"] = True
        if rng.random() < 0.4:
            options["bandwidth"] = rng.choice([2, 4]) * MiB
        with lane.lock:
            first = {rel: len(v) - 1 for rel, v in lane.contents.items()}
            lane.changed = set()
        job_id = self._submit("LOAD", lane.tree, **options)
        if job_id is None:
            return reload
        lane.load_job = job_id
        try:
            report = self._wait_final(job_id)
        finally:
            with lane.lock:
                lane.load_job = ""
        if report is None:
            return False
        with lane.lock:
            contents = {rel: list(v) for rel, v in lane.contents.items()}
            changed = set(lane.changed)
        stale = self._check_load(f"lane{lane.index} LOAD {job_id} {options}", lane.tree,
                                 contents, first, replicas, report)
        if stale:
            with self.report.lock:
                self.report.stale_copies += len(stale)
        return bool(changed)  # reload until a LOAD ran with no change under it

    def _cache_copies(self, source: Path) -> list[tuple[str, str | None]]:
        """(worker, sha256) of every cache that holds ``source``."""
        found = []
        for worker in self._cluster().workers:
            data = worker.cache_dir / "data" / str(source).lstrip("/")  # type: ignore[attr-defined]
            digest = sha256_file(data)
            if digest is not None:
                found.append((worker.name, digest))
        return found

    def _failed_paths(self, report: dict[str, Any]) -> dict[str, str]:
        return {f["path"].removeprefix("file://"): f["reason"]
                for f in report.get("failures", []) if f.get("reason")}

    def _check_load(self, what: str, tree: Path, contents: dict[str, list[str]],
                    first: dict[str, int], replicas: int, report: dict[str, Any]) -> list[str]:
        """See the module docstring; returns the files whose copies are stale."""
        state = report["job"]["state"]
        self.report.ended(state)
        failed = self._failed_paths(report) if state == "FAILED" else {}
        stale: list[str] = []
        for rel, versions in contents.items():
            source = tree / rel
            during = set(versions[first.get(rel, 0):])
            copies = self._cache_copies(source)
            for worker, digest in copies:
                if digest not in versions:
                    self.report.add(self.report.files_wrong,
                                    f"{what}: {worker} caches {rel!r} with content that "
                                    "the source never had")
            good = [w for w, d in copies if d in during]
            if len(good) >= replicas or str(source) in failed:
                if not any(d == versions[-1] for _w, d in copies) and len(versions) > 1:
                    stale.append(rel)
                continue
            self.report.add(self.report.files_wrong,
                            f"{what} {state}: {rel!r} cached on {len(good)} of {replicas} "
                            f"workers ({copies}) and not reported failed")
        return stale

    def _lane_free(self, lane: Lane) -> None:
        job_id = self._submit("FREE", lane.tree)
        if job_id is None:
            return
        report = self._wait_final(job_id)
        if report is None:
            return
        state = report["job"]["state"]
        self.report.ended(state)
        failed = self._failed_paths(report) if state == "FAILED" else {}
        for rel in self._current(lane):
            source = lane.tree / rel
            left = self._cache_copies(source)
            if left and str(source) not in failed:
                self.report.add(self.report.files_wrong,
                                f"lane{lane.index} FREE {job_id} {state}: {rel!r} still "
                                f"cached on {[w for w, _ in left]}")

    def _lane_copy(self, lane: Lane) -> None:
        lane.copies += 1
        dst = lane.tree.parent / f"copy{lane.copies}"
        expected = self._current(lane)
        job_id = self._submit("COPY", lane.tree, dst, batch_size=lane.rng.choice([3, 10]))
        if job_id is None:
            return
        report = self._wait_final(job_id)
        if report is None:
            return
        state = report["job"]["state"]
        self.report.ended(state)
        failed = self._failed_paths(report) if state == "FAILED" else {}
        for rel, digest in expected.items():
            got = sha256_file(dst / rel)
            if got != digest and str(lane.tree / rel) not in failed:
                self.report.add(self.report.files_wrong,
                                f"lane{lane.index} COPY {job_id} {state}: {rel!r} at the "
                                f"destination is {'missing' if got is None else 'wrong'}")
            if sha256_file(lane.tree / rel) != digest:
                self.report.add(self.report.files_wrong,
                                f"lane{lane.index} COPY {job_id}: source {rel!r} changed")
        with contextlib.suppress(OSError):
            _rmtree(dst)  # checked; keep the disk small

    def _lane_move(self, lane: Lane) -> None:
        """MOVE to a fresh directory, again until it SUCCEEDS; sampled while it runs."""
        expected = self._current(lane)
        src = lane.tree
        dst = src.parent / f"g{lane.generation + 1}"
        seen: dict[tuple[str, int, int], str | None] = {}

        def sample() -> None:
            self._check_move_invariant(lane, src, dst, expected, seen)

        for _attempt in range(5):
            job_id = self._submit("MOVE", src, dst, batch_size=lane.rng.choice([3, 10]))
            if job_id is None:
                return
            report = self._wait_final(job_id, sample)
            sample()
            if report is None:
                return
            state = report["job"]["state"]
            self.report.ended(state)
            failed = self._failed_paths(report) if state == "FAILED" else {}
            for rel, digest in expected.items():
                at_dst = sha256_file(dst / rel)
                at_src = (src / rel).exists()
                if state == "SUCCEEDED" and (at_dst != digest or at_src):
                    self.report.add(self.report.files_wrong,
                                    f"lane{lane.index} MOVE {job_id} SUCCEEDED: {rel!r} "
                                    f"at destination {'ok' if at_dst == digest else 'no'}, "
                                    f"still at source {at_src}")
                elif state != "SUCCEEDED" and at_dst != digest and str(src / rel) not in failed:
                    self.report.add(self.report.files_wrong,
                                    f"lane{lane.index} MOVE {job_id} {state}: {rel!r} not "
                                    "moved and not reported failed")
            if state == "SUCCEEDED":
                with lane.lock:
                    lane.tree = dst
                    lane.generation += 1
                return
            if self.stop_jobs.is_set():
                return
        self.report.add(self.report.anomalies,
                        f"lane{lane.index}: MOVE {src} -> {dst} never SUCCEEDED")

    def _check_move_invariant(self, lane: Lane, src: Path, dst: Path,
                              expected: dict[str, str],
                              seen: dict[tuple[str, int, int], str | None]) -> None:
        """Each file is at the source, or (checked after) at the destination, identical."""
        for rel, digest in expected.items():
            if (src / rel).exists():
                continue
            target = dst / rel
            try:
                info = target.stat()
            except FileNotFoundError:
                if not (src / rel).exists():  # it may have just been moved; look again
                    self.report.add(self.report.move_lost,
                                    f"lane{lane.index}: {rel!r} is neither at {src} "
                                    f"nor at {dst}")
                continue
            key = (rel, info.st_ino, info.st_mtime_ns)
            if key not in seen:
                seen[key] = sha256_file(target)
            if seen[key] != digest:
                self.report.add(self.report.move_lost,
                                f"lane{lane.index}: {rel!r} left {src}, and its copy at "
                                f"{dst} differs")

    # ------------------------------------------------------------------ the end
    def _final_checks(self) -> None:
        self.log("final checks")
        for job_id in sorted(self.report.acknowledged):
            answer = None
            for _ in range(20):
                answer = self.request("GET", f"/api/v1/master/job/{job_id}")
                if answer is not None:
                    break
                time.sleep(0.5)
            if answer is None:
                self.report.add(self.report.anomalies, f"cannot ask about job {job_id}")
            elif answer.status_code == 404:
                self.report.add(self.report.jobs_lost, f"job {job_id} is not findable")
            elif answer.json()["job"]["state"] not in FINAL:
                job = answer.json()["job"]
                self.report.add(self.report.jobs_lost,
                                f"job {job_id} ({job['type']} {job['path']}) still "
                                f"{job['state']} (owner {job['owner'] or 'none'}) "
                                f"{self.cfg.grace:.0f}s after the faults")
        for lane in self.lanes:
            for rel, digest in self._current(lane).items():
                where = [p for p in lane.tree.parent.glob("g*") if sha256_file(p / rel) == digest]
                if not where:
                    self.report.add(self.report.move_lost,
                                    f"lane{lane.index}: {rel!r} with its last content is "
                                    "nowhere")
        assert self.gateway is not None
        events = self.gateway.history(JOB_PREFIX)
        self.report.history_events = len(events)
        for problem in audit_owner_writes(events):
            self.report.add(self.report.double_owner, problem)


def _rmtree(path: Path) -> None:
    for child in sorted(_walk(path), key=lambda p: len(p.parts), reverse=True):
        if child.is_dir() and not child.is_symlink():
            child.rmdir()
        else:
            child.unlink()
    path.rmdir()


def _walk(path: Path) -> Iterator[Path]:
    for dirpath, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            yield Path(dirpath) / name


__all__ = ["ChaosConfig", "ChaosRun", "EtcdGateway", "HistoryEvent", "Report",
           "audit_owner_writes"]
