"""``job load --wait`` against a real coordinator: a progress request with ``wait``
answers when the job ends, and the CLI without a terminal follows it without rich."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.cluster import Cluster, make_tree


@pytest.fixture
def slow_cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """Progress requests may wait two minutes, so the test never races the cap."""
    cluster = cluster_factory(**{"alluxio.coordinator.progress.wait.max": "120s"})
    cluster.add_worker()
    cluster.add_coordinator()
    return cluster


def test_a_progress_request_with_wait_answers_when_the_job_ends(
        slow_cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 12)
    job = slow_cluster.submit("load", str(src), batch_size=1, bandwidth=1024)  # ~8 s
    slow_cluster.wait_state(job["id"], "RUNNING")
    answer = httpx.get(f"{slow_cluster.url()}/api/v1/master/job/{job['id']}/progress",
                       params={"wait": "600"}, timeout=300, **slow_cluster.client_options())
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["job"]["state"] == "SUCCEEDED", report["job"]
    assert report["files"]["done"] == 12
    # The same by path, with the text answer: a settled job answers at once.
    text = slow_cluster.api("GET", "/api/v1/master/progress_job/load",
                            params={"path": str(src), "wait": "600", "format": "TEXT"})
    assert "Job State: SUCCEEDED" in text.text


def test_a_bad_wait_is_a_bad_request(slow_cluster: Cluster, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", 1)
    job = slow_cluster.submit("load", str(tmp_path / "src"))
    answer = slow_cluster.api("GET", f"/api/v1/master/job/{job['id']}/progress",
                              params={"wait": "-1"})
    assert answer.status_code == 400
    assert "wait must be a number of seconds" in answer.json()["message"]


def test_wait_without_a_terminal_prints_plain_lines_and_imports_no_rich(
        cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    modules = tmp_path / "modules.json"
    port = cluster.coordinators[0].port  # type: ignore[attr-defined]
    args = ["job", "load", "--path", str(src), "--wait", "--conf", str(cluster.conf),
            "-D", "alluxio.coordinator.hostname=127.0.0.1",
            "-D", f"alluxio.coordinator.rest.port={port}"]
    code = f"""
import atexit, json, sys
from alluxiojob.cli.main import main

def dump() -> None:  # at exit: main ends the process itself, after the atexit handlers
    with open({str(modules)!r}, "w") as out:
        json.dump(sorted(sys.modules), out)

atexit.register(dump)
sys.argv = ["alluxiojob", *{args!r}]
main()
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "Job State: SUCCEEDED" in result.stdout
    assert result.stderr.splitlines()[-1] == "SUCCEEDED 3/3 files", result.stderr
    loaded = set(json.loads(modules.read_text()))
    assert "alluxiojob.client" in loaded
    assert not any(name == "rich" or name.startswith("rich.") for name in loaded)


def test_wait_on_a_terminal_draws_the_bar(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    primary, secondary = pty.openpty()
    chunks: list[bytes] = []

    def read_screen() -> None:  # at once, so that the bar never fills the terminal's buffer
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal's other end closed: all of it read
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read_screen, daemon=True)
    reader.start()
    port = cluster.coordinators[0].port  # type: ignore[attr-defined]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "alluxiojob.cli.main", "job", "load", "--path", str(src),
             "--wait", "--conf", str(cluster.conf), "-D", "alluxio.coordinator.hostname=127.0.0.1",
             "-D", f"alluxio.coordinator.rest.port={port}"],
            stdout=subprocess.PIPE, stderr=secondary, stdin=subprocess.DEVNULL, text=True,
            timeout=120, env=dict(os.environ, COLUMNS="200", TERM="xterm"))
    finally:
        os.close(secondary)
        reader.join(timeout=30)
        os.close(primary)
    drawn = b"".join(chunks)
    assert result.returncode == 0, drawn.decode(errors="replace")
    assert "Job State: SUCCEEDED" in result.stdout
    screen = drawn.decode(errors="replace")
    assert "SUCCEEDED" in screen
    assert "3/3 files" in screen
    assert "━" in screen, screen  # rich's bar, not the plain lines
