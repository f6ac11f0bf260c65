"""Errors keep their meaning: bad input is 400 / exit 2, a wrong state 409 / exit 6.

Each case here once came back as a 500 or a 503 ("service unavailable", exit 5), which
sent users looking for an outage when their request was at fault.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from alluxiojob.testing.ports import free_port
from tests.integration.cluster import Cluster, make_tree

pytestmark = pytest.mark.timeout(180)

SUBMIT = "/api/v1/master/submit_job/load"


def _post_raw(cluster: Cluster, path: str, body: bytes) -> httpx.Response:
    return cluster.api("POST", path, content=body,
                       headers={"content-type": "application/json"})


def test_a_lone_surrogate_in_a_path_is_a_bad_argument(cluster: Cluster) -> None:
    answer = _post_raw(cluster, SUBMIT, b'{"path": "/data/\\ud800x"}')
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "INVALID_ARGUMENT"
    assert "UTF-8" in body["message"]
    assert "\\ud800" in body["message"]
    assert cluster.coordinators[0].alive


@pytest.mark.parametrize("option", ["batch_size", "replicas", "bandwidth"])
def test_an_option_out_of_range_is_a_bad_argument(cluster: Cluster, tmp_path: Path,
                                                  option: str) -> None:
    src = tmp_path / "src"
    make_tree(src, 2)
    answer = cluster.api("POST", SUBMIT, json={"path": str(src), "options": {option: 10**30}})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "INVALID_ARGUMENT"
    assert option.replace("_", " ") in answer.json()["message"]


def test_cli_exit_codes_for_bad_input_and_wrong_state(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    huge = cluster.cli("job", "load", "--path", str(src), "--batch-size", str(10**30),
                       check=False)
    assert huge.returncode == 2, huge.stderr
    assert "batch size" in huge.stderr

    # Without etcd there is no rerun: a request the service cannot take in its state.
    rerun = cluster.cli("job", "rerun", "--path", str(src), "--type", "LOAD", check=False)
    assert rerun.returncode == 6, rerun.stderr
    assert "Job ETCD is not enabled" in rerun.stderr
    answer = cluster.api("POST", "/api/v1/master/rerun_job", json={"id": "x"})
    assert answer.status_code == 409
    assert answer.json()["error"] == "FAILED_PRECONDITION"

    # Stopping a job that already finished.
    cluster.cli("job", "load", "--path", str(src), "--wait")
    stop = cluster.cli("job", "load", "--path", str(src), "--stop", check=False)
    assert stop.returncode == 6, stop.stderr
    assert "SUCCEEDED" in stop.stderr
    assert "Traceback" not in stop.stderr


def test_read_through_of_a_directory_is_a_bad_request(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 2)
    worker = cluster.workers[0]
    answer = httpx.get(f"http://127.0.0.1:{worker.web_port}/api/v1/files",  # type: ignore[attr-defined]
                       params={"path": str(src), "read_through": "true"}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"] == "INVALID_PATH"
    assert "not a regular file" in answer.json()["message"]
    assert worker.alive


def _start(kind: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alluxiojob.cli.main", kind, *args],
                          capture_output=True, text=True, timeout=60)


def test_configuration_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    site = tmp_path / "alluxio-site.properties"
    site.write_bytes(b"alluxio.work.dir=/caf\xe9\n")
    for kind in ("coordinator", "worker"):
        result = _start(kind, "--conf", str(site))
        assert result.returncode == 2, result.stderr
        assert "not UTF-8" in result.stderr
        assert str(site) in result.stderr
        assert "Traceback" not in result.stderr

    work = ["-D", f"alluxio.work.dir={tmp_path / 'work'}"]
    tiny = _start("worker", *work, "-D", "alluxio.worker.load.file.partition.size=1",
                  "-D", f"alluxio.worker.rpc.port={free_port()}")
    assert tiny.returncode == 2, tiny.stderr
    assert "alluxio.worker.load.file.partition.size" in tiny.stderr
    assert "at least 1MiB" in tiny.stderr

    # Valid values that do not work together are found when the service is built.
    etcd_without_endpoints = _start(
        "coordinator", *work, "-D", "alluxio.coordinator.job.meta.store.type=ETCD",
        "-D", f"alluxio.coordinator.rest.port={free_port()}")
    assert etcd_without_endpoints.returncode == 2, etcd_without_endpoints.stderr
    assert "alluxio.etcd.endpoints" in etcd_without_endpoints.stderr
    assert "Traceback" not in etcd_without_endpoints.stderr
