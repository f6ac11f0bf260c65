"""The chaos run's job stream: lanes of LOAD, FREE, COPY and MOVE, each checked at its end.

A mixin of ``ChaosRun`` (tests/integration/chaos.py). Each lane owns a generated tree
and runs one job at a time on it; what each job claims is checked on the disks
themselves (caches are plain files) as soon as the job is final.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.integration.cluster import Cluster

if TYPE_CHECKING:
    from tests.integration.chaos import Report

MiB = 1 << 20
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
ODD_NAMES = (
    "plain.txt", "with space.bin", "ünïcødé.dat", "日本語.txt", "-leading-dash",
    "percent%20encoded", "hash#mark", "question?.txt", "quote's \"double\"", ".hidden",
    "emoji-😀.bin", "tab\there", "semi;colon&amp", "x" * 180, "trailing space ",
    "UPPER.lower", "a+b=c", "brackets[1](2){3}",
)


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


class LanesMixin:
    """Runs and checks the lanes' jobs; ``ChaosRun`` provides what is declared here."""

    report: Report
    stop_jobs: threading.Event
    hard_stop: float

    def request(self, method: str, path: str, timeout: float = 5.0,
                **kwargs: Any) -> httpx.Response | None: ...

    def _cluster(self) -> Cluster: ...

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
        """Poll until the job is final; None if it is not by the end of the grace period.

        Every report read must show each counter at least where the last one did."""
        seen: dict[str, int] = {}
        while not self.hard_stop or time.monotonic() < self.hard_stop:
            if sample is not None:
                sample()
            answer = self.request("GET", f"/api/v1/master/job/{job_id}/progress")
            if answer is not None and answer.status_code == 200:
                report: dict[str, Any] = answer.json()
                self._check_counters(job_id, report, seen)
                if report["job"]["state"] in FINAL:
                    if report["job"]["state"] == "FAILED":
                        failed = self.request(
                            "GET", f"/api/v1/master/job/{job_id}/progress",
                            params={"file_status": "FAILURE"})
                        if failed is None or failed.status_code != 200:
                            time.sleep(0.3)
                            continue
                        report = failed.json()
                        self._check_counters(job_id, report, seen)
                    return report
            time.sleep(0.3)
        return None

    def _check_counters(self, job_id: str, report: dict[str, Any], seen: dict[str, int]) -> None:
        """Each live counter of ``report`` against the highest of the job's reports before."""
        with self.report.lock:
            self.report.progress_reports += 1
        for name, value in report["progress"]["live"].items():
            if value < seen.get(name, 0):
                self.report.add(self.report.counters_backwards,
                                f"job {job_id} ({report['job']['type']}, "
                                f"{report['job']['state']}): {name} went from "
                                f"{seen[name]} to {value}")
            seen[name] = max(value, seen.get(name, 0))

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
        self._free_and_check(f"lane{lane.index}", lane.tree, list(self._current(lane)))

    def _free_and_check(self, what: str, tree: Path, names: list[str]) -> None:
        job_id = self._submit("FREE", tree)
        if job_id is None:
            return
        report = self._wait_final(job_id)
        if report is None:
            return
        state = report["job"]["state"]
        self.report.ended(state)
        failed = self._failed_paths(report) if state == "FAILED" else {}
        for rel in names:
            source = tree / rel
            left = self._cache_copies(source)
            if left and str(source) not in failed:
                self.report.add(self.report.files_wrong,
                                f"{what} FREE {job_id} {state}: {rel!r} still "
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
        shutil.rmtree(dst, ignore_errors=True)  # checked; keep the disk small

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


__all__ = ["FINAL", "MiB", "Lane", "LanesMixin", "make_lane_tree", "sha256_bytes",
           "sha256_file"]
