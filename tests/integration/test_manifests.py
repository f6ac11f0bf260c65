"""LOAD from an index file, an S3 Inventory manifest or a brace template, on real
coordinator and worker processes: the files named, a known total from the start,
missing files failed alone, bad lines and paths outside the allowlist refused, and a
resumed job that goes on from its position."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from alluxiojob.testing.s3 import S3Server
from tests.integration.cluster import Cluster, cached_files, wait_for

pytestmark = pytest.mark.timeout(300)
SUBMIT = "/api/v1/master/submit_job/load"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log = tmp_path_factory.mktemp("s3") / "s3.log"
    with S3Server(log_path=str(log)) as server:
        yield server


def make_files(root: Path, count: int) -> dict[str, int]:
    root.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for i in range(count):
        path = root / f"f-{i:03d}.bin"
        path.write_bytes(os.urandom(10 + i))
        sizes[str(path)] = 10 + i
    return sizes


def failures(cluster: Cluster, job_id: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = cluster.progress(job_id, file_status="FAILURE")["failures"]
    return found


def test_index_file_loads_what_it_lists_and_fails_a_missing_file_alone(
        cluster: Cluster, tmp_path: Path) -> None:
    sizes = make_files(tmp_path / "data", 6)
    names = sorted(sizes)
    index = tmp_path / "list.txt"
    missing = tmp_path / "data" / "gone.bin"
    index.write_text("# training files\n\n" + "\n".join(
        [names[0], f"file://{names[1]}", *names[2:5], str(missing)]) + "\n")
    # names[5] is not listed: a manifest job loads what it names, not the directory.
    run = cluster.cli("job", "load", "--index-file", str(index), "--wait", check=False)
    assert run.returncode != 0, "a failed file fails the job at its end"
    job = json.loads(cluster.cli("job", "load", "--index-file", str(index), "--progress",
                                 "--format", "JSON").stdout)
    assert job["job"]["state"] == "FAILED"
    assert job["job"]["path"] == f"file://{index}"
    assert job["job"]["options"]["source"] == "index"
    assert job["files"]["processed"] == 5
    assert job["files"]["failed"] == 1
    assert job["progress"]["files_total"] == 6
    [failure] = failures(cluster, job["job"]["id"])
    assert failure["reason"] == "UFS_NOT_FOUND"
    assert failure["path"] == f"file://{missing}"
    assert set(cached_files(cluster)) == set(names[:5])
    text = cluster.cli("job", "load", "--index-file", str(index), "--progress").stdout
    assert "out of 6" in text


def test_index_file_refusals_name_the_problem(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    allowed = tmp_path / "allowed"
    sizes = make_files(allowed, 2)
    cluster: Cluster = cluster_factory(**{"alluxio.job.path.allowlist": str(allowed)})
    cluster.add_worker()
    cluster.add_coordinator()
    bad = allowed / "bad.txt"
    bad.write_bytes(f"{next(iter(sizes))}\n# fine\n".encode() + b"\xff\xfe\n")
    answer = cluster.api("POST", SUBMIT, json={"indexFile": str(bad)})
    assert answer.status_code == 400, answer.text
    assert "line 3: not valid UTF-8" in answer.json()["message"]

    relative = allowed / "relative.txt"
    relative.write_text(f"{next(iter(sizes))}\nsome/relative/path\n")
    answer = cluster.api("POST", SUBMIT, json={"indexFile": str(relative)})
    assert answer.status_code == 400, answer.text
    assert "line 2" in answer.json()["message"]

    escaping = allowed / "escaping.txt"
    escaping.write_text(f"{next(iter(sizes))}\n/etc/passwd\n")
    answer = cluster.api("POST", SUBMIT, json={"indexFile": str(escaping)})
    assert answer.status_code == 400, answer.text
    assert "line 2: file:///etc/passwd is outside alluxio.job.path.allowlist" in (
        answer.json()["message"])

    outside = tmp_path / "outside.txt"
    outside.write_text(f"{next(iter(sizes))}\n")
    answer = cluster.api("POST", SUBMIT, json={"indexFile": str(outside)})
    assert answer.status_code == 403, answer.text
    assert "alluxio.job.path.allowlist" in answer.json()["message"]

    template = cluster.api("POST", SUBMIT, json={"template": "/etc/x{0..9}"})
    assert template.status_code == 403, template.text
    both = cluster.api("POST", SUBMIT, json={"path": str(allowed), "indexFile": str(bad)})
    assert both.status_code == 400
    assert "give one of path, indexFile and template" in both.json()["message"]
    copy = cluster.api("POST", "/api/v1/master/submit_job/copy",
                       json={"indexFile": str(relative), "dst": str(allowed / "out")})
    assert copy.status_code == 400
    assert "LOAD jobs" in copy.json()["message"]
    option = cluster.api("POST", SUBMIT, json={"path": str(allowed),
                                               "options": {"source": "index"}})
    assert option.status_code == 400
    assert "unknown job option(s): source" in option.json()["message"]
    assert cluster.api("GET", "/api/v1/master/list_job").json()["jobs"] == []


def test_template_load_with_a_total_from_the_start(cluster: Cluster, tmp_path: Path) -> None:
    root = tmp_path / "shards"
    for d in range(2):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(0, 30, 3):
            (root / f"d{d}" / f"x-{i:02d}.bin").write_bytes(b"s" * (d * 100 + i + 1))
    template = f"{root}/d{{0..2}}/x-{{00..29..3}}.bin"  # d2 does not exist: 10 missing
    answer = cluster.api("POST", SUBMIT, json={"template": template,
                                               "options": {"batch_size": 5}})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["id"]
    report = wait_for(lambda: (r := cluster.progress(job_id))["job"]["state"] in (
        "SUCCEEDED", "FAILED") and r, 120, "the template job to end")
    assert report["job"]["state"] == "FAILED"
    assert report["files"]["processed"] == 20
    assert report["files"]["failed"] == 10
    assert report["files"]["total"] == 30
    assert {f["reason"] for f in failures(cluster, job_id)} == {"UFS_NOT_FOUND"}
    assert len(cached_files(cluster)) == 20
    # found by its template, from the CLI as from REST
    text = cluster.cli("job", "load", "--template", template, "--progress").stdout
    assert "Files Processed: 20 out of 30" in text


def test_inventory_and_template_on_s3_need_no_listing(cluster_factory, s3: S3Server) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(**s3.properties())
    cluster.add_worker()
    cluster.add_worker()
    cluster.add_coordinator()
    s3.create_bucket("photos")
    s3.create_bucket("inventory")
    objects = {f"2026/img {i:02d}+é.jpg": os.urandom(50 + i) for i in range(12)}
    s3.put_many("photos", objects)
    rows = [["photos", _url_encode(key), str(len(data)), "2026-01-01T00:00:00.000Z",
             s3.head("photos", key)["ETag"].strip('"')] for key, data in objects.items()]
    rows.append(["photos", "2026/", "0", "2026-01-01T00:00:00.000Z", "d41d8"])  # folder
    keys = []
    for number, part in enumerate((rows[:7], rows[7:])):
        text = io.StringIO()
        csv.writer(text).writerows(part)
        key = f"inv/photos/daily/data/part-{number}.csv.gz"
        s3.put("inventory", key, gzip.compress(text.getvalue().encode()))
        keys.append({"key": key, "size": 1, "MD5checksum": "x"})
    manifest = {"sourceBucket": "photos", "destinationBucket": "arn:aws:s3:::inventory",
                "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
                "files": keys}
    uri = "s3://inventory/inv/photos/daily/2026-01-02T01-00Z/manifest.json"
    s3.put("inventory", uri.split("/", 3)[3], json.dumps(manifest).encode())
    before = s3.request_count()
    answer = cluster.api("POST", SUBMIT, json={"indexFile": uri})
    assert answer.status_code == 200, answer.text
    report = cluster.wait_state(answer.json()["id"], "SUCCEEDED")
    assert report["files"]["processed"] == 12
    assert report["bytes"]["processed"] == sum(map(len, objects.values()))
    assert report["progress"]["files_total"] == 12
    assert report["progress"]["bytes_total"] == sum(map(len, objects.values()))
    # no listing and no HEAD per object: the manifest (read at submit, at the shard plan
    # and by the run), two data files read twice (the plan's count, then the rows), one
    # GET per object, a few more for the HEAD of the manifest
    assert s3.request_count() - before < 12 + 12
    assert len(cached_files(cluster)) == len(objects)

    template = "s3://photos/2026/img {00..13}+é.jpg"  # 12 and 13 do not exist
    answer = cluster.api("POST", SUBMIT, json={"template": template})
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["id"]
    report = wait_for(lambda: (r := cluster.progress(job_id))["job"]["state"] in (
        "SUCCEEDED", "FAILED") and r, 120, "the template job to end")
    assert (report["files"]["processed"], report["files"]["failed"]) == (12, 2)
    assert {f["reason"] for f in failures(cluster, job_id)} == {"UFS_NOT_FOUND"}

    # an index file that is itself an object, naming objects
    listed = sorted(objects)[:3]
    s3.put("inventory", "lists/three.txt",
           "".join(f"s3://photos/{key}\n" for key in listed).encode())
    answer = cluster.api("POST", SUBMIT, json={"indexFile": "s3://inventory/lists/three.txt",
                                               "options": {"metadata_only": True}})
    assert answer.status_code == 200, answer.text
    report = cluster.wait_state(answer.json()["id"], "SUCCEEDED")
    assert report["files"]["processed"] == 3
    assert report["bytes"]["listed"] == sum(len(objects[key]) for key in listed)


def _url_encode(key: str) -> str:
    from urllib.parse import quote_plus
    return quote_plus(key, safe="/")


@pytest.mark.parametrize("kind", ["template", "indexFile"])
def test_a_restarted_coordinator_resumes_at_its_position(
        cluster: Cluster, tmp_path: Path, kind: str) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(600):
        (root / f"{i:04d}").write_bytes(b"m" * 100)
    index = tmp_path / "index.txt"
    index.write_text("".join(f"# file {i}\n{root}/{i:04d}\n" for i in range(600)))
    named = f"{root}/{{0000..0599}}" if kind == "template" else str(index)
    answer = cluster.api("POST", SUBMIT, json={
        kind: named, "options": {"batch_size": 10, "bandwidth": 4096}})  # ~8 s, 2 workers
    job_id = answer.json()["id"]
    wait_for(lambda: cluster.progress(job_id)["progress"]["checkpoint"], 60,
             "a first checkpoint")
    cluster.coordinators[0].kill()
    cluster.coordinators[0].start()
    report = cluster.wait_state(job_id, "SUCCEEDED", timeout=200)
    assert report["files"]["processed"] == 600
    assert report["progress"]["files_total"] == 600
    assert len(cached_files(cluster)) == 600
    # a template resumes after an index, an index file after a line (and its byte offset)
    resumed = re.findall(r'"resume_after": "(\d+)', cluster.coordinators[0].log())
    assert resumed, cluster.logs()
    last = 599 if kind == "template" else 1200
    assert 0 < int(resumed[-1]) < last, "it went on from a position, not from the top"
