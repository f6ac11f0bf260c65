"""Bounded before trusted: a worker's location listing is paged and capped, and a path
the CLI cannot send is refused with a message instead of a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from alluxiojob.worker.reads import LOCATION_LIST_MAX
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.timeout(300)


def _location(web: str, **params: Any) -> dict[str, Any]:
    answer = httpx.get(web + "/api/v1/location", params=params, timeout=60)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _tree(root: Path, files: int) -> set[str]:
    """``files`` small files, in a few directories."""
    made = set()
    for i in range(files):
        path = root / f"d{i % 4}" / f"f{i:05d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i % 7))
        made.add(f"file://{path}")
    return made


def test_location_lists_in_capped_pages(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """2,500 cached files over two cache dirs and 1,200 recorded ones under one path: a
    ``list`` past the cap gets the cap and a ``next`` key, and the pages, merged across
    the dirs in key order, give every file once."""
    cluster: Cluster = cluster_factory(**{"alluxio.job.batch.size": "500"})
    worker = cluster.add_worker(**{"alluxio.worker.page.store.dirs":
                                   f"{tmp_path / 'cache-a'},{tmp_path / 'cache-b'}"})
    cluster.add_coordinator()
    root = tmp_path / "data"
    cached = _tree(root / "cached", 2500)
    recorded = _tree(root / "recorded", 1200)
    cluster.cli("job", "load", "--path", str(root / "cached"), "--wait", timeout=240)
    cluster.cli("job", "load", "--path", str(root / "recorded"), "--metadata-only", "--wait",
                timeout=240)
    web = f"http://127.0.0.1:{worker.web_port}"  # type: ignore[attr-defined]
    for d in ("cache-a", "cache-b"):  # both dirs hold part of it: the pages merge them
        assert any((tmp_path / d / "data").rglob("f*")), d

    first = _location(web, path=str(root), list=100_000_000)
    assert first["files"] == 2500
    assert first["metadata_files"] == 1200
    assert len(first["list"]) == LOCATION_LIST_MAX == 1000
    assert "next" in first
    seen_files: list[str] = []
    seen_records: list[str] = []
    page, pages = first, 1
    while True:
        assert len(page["list"]) <= LOCATION_LIST_MAX
        assert len(page["metadata_list"]) <= LOCATION_LIST_MAX
        seen_files += [item["path"] for item in page["list"]]
        seen_records += [item["path"] for item in page["metadata_list"]]
        if "next" not in page:
            break
        page = _location(web, path=str(root), list=100_000_000, after=page["next"])
        assert "files" not in page, "a continuation page holds the lists only"
        pages += 1
    assert pages >= 4
    assert len(seen_files) == len(set(seen_files)) == 2500
    assert set(seen_files) == cached
    assert sorted(seen_records) == seen_records
    assert set(seen_records) == recorded
    assert len(seen_records) == 1200
    assert seen_files == sorted(seen_files)

    small = _location(web, path=str(root / "cached"), list=7)
    assert [item["path"] for item in small["list"]] == sorted(cached)[:7]
    assert small["next"] == sorted(cached)[6]
    assert "list" not in _location(web, path=str(root))
    for bad in ("-1", "lots"):
        answer = httpx.get(web + "/api/v1/location", params={"path": str(root), "list": bad},
                           timeout=10)
        assert answer.status_code == 400
        assert "list must be a number from 0 to 1000" in answer.json()["message"]
    # The coordinator's --file-status SUCCESS reads the same lists.
    report = json.loads(cluster.cli("job", "load", "--path", str(root / "cached"),
                                    "--progress", "--file-status", "SUCCESS",
                                    "--format", "JSON").stdout)
    assert len(report["successes"]) == 1000
    assert worker.alive


BAD = "/x/bad\udcff"  # the bytes b"/x/bad\xff", as Python receives them from argv


COMMANDS = [
    ("fs", "cat", "--path", BAD),
    ("fs", "location", "--path", BAD),
    ("job", "load", "--path", BAD),
    ("job", "load", "--path", BAD, "--progress"),
    ("job", "free", "--path", BAD, "--stop"),
    ("job", "copy", "--src", "/x", "--dst", BAD),
    ("job", "rerun", "--path", BAD, "--type", "LOAD"),
    ("fs", "distributedLoad", BAD),
    ("fs", "distributedMv", BAD, "/y"),
]


def test_a_path_that_is_not_utf8_is_refused_with_exit_2(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory()
    cluster.add_coordinator()
    port = cluster.coordinators[0].port  # type: ignore[attr-defined]
    for args in COMMANDS:
        command = [sys.executable, "-m", "alluxiojob.cli.main", *args, "--conf",
                   str(cluster.conf), "-D", "alluxio.coordinator.hostname=127.0.0.1",
                   "-D", f"alluxio.coordinator.rest.port={port}"]
        done = subprocess.run([part.encode("utf-8", "surrogateescape") for part in command],
                              capture_output=True, timeout=60)
        stderr = done.stderr.decode("utf-8", "backslashreplace")
        assert done.returncode == 2, (args, stderr)
        assert "Traceback" not in stderr, args
        assert "'/x/bad\\xff' is not valid UTF-8" in stderr, (args, stderr)
    assert cluster.api("GET", "/api/v1/master/list_job").json()["jobs"] == []
