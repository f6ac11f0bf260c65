"""Fuzzing the REST API from the OpenAPI document the coordinator serves.

schemathesis reads ``/api/v1/openapi.json`` from a real coordinator (etcd job store, so
``rerun_job`` is live) and sends it generated requests, valid and invalid, then chains
them through the document's links (submit -> progress, stop, rerun). Never a 500, never
a request left unanswered within its timeout, and every answer must match the document
(status, content type, body schema), and invalid input must be refused.

The coordinator has no workers, so the jobs the fuzzer submits (it will try MOVE of
whatever exists) never touch a file. Its UFS root holds one-character names, the strings
a generator produces most, so submissions often find their path and create real jobs.

The last tests pin what the fuzzer and probing found, so each fails on the old code.
"""

from __future__ import annotations

import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alluxiojob.coordinator.routes import ROUTES, openapi_document
from alluxiojob.testing.etcd import EtcdServer
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.timeout(300)

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance",
    "negative_data_rejection", "missing_required_header", "unsupported_method",
    "use_after_free", "ensure_resource_availability",
])  # not positive_data_acceptance: a schema cannot say "dst must not lie inside path"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("fuzz")
    ufs = root / "ufs"
    ufs.mkdir()
    for name in string.ascii_letters + string.digits:
        (ufs / name).write_bytes(b"x")
    with EtcdServer(data_dir=root / "etcd") as etcd:
        cluster = Cluster(root / "cluster", {
            "alluxio.dora.client.ufs.root": str(ufs),
            "alluxio.coordinator.job.meta.store.type": "ETCD",
            "alluxio.etcd.endpoints": etcd.url,
        })
        cluster.add_coordinator()
        try:
            yield cluster
        finally:
            cluster.stop_all()


def test_served_document_is_the_route_table(api: Cluster) -> None:
    served = api.api("GET", "/api/v1/openapi.json").json()
    assert served == openapi_document(ROUTES)
    for route in ROUTES:  # every route of the table answers (none is only documented)
        assert route.method.lower() in served["paths"][route.path]
    assert api.api("GET", "/api/v1/master/list_job").status_code == 200


def test_schemathesis_finds_no_server_error_nor_hang(api: Cluster, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{api.url()}/api/v1/openapi.json",
         "--checks", CHECKS, "--phases", "examples,coverage,fuzzing,stateful",
         "--max-examples", "40", "--seed", "20240607", "--workers", "1",
         "--request-timeout", "10", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=280, cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout[-12000:] + result.stderr[-3000:]
                                    + api.coordinators[0].log()[-3000:])
    assert "Server error" not in result.stdout
    assert "INTERNAL" not in api.coordinators[0].log()


@pytest.mark.parametrize(("method", "path", "body", "names"), [
    # A flag that is neither true nor false was read as false.
    ("GET", "/api/v1/master/progress_job/load?path=0&verbose=maybe", None, "verbose"),
    # A type beside an id was ignored, whatever it said.
    ("POST", "/api/v1/master/rerun_job", {"id": "x", "type": "LAOD"}, "LAOD"),
    # An id that is not a string was looked up as its repr (404), not refused.
    ("POST", "/api/v1/master/stop_job/load", {"id": ["x"]}, "id must be a string"),
    # A destination that is not a string was reported as a "missing path".
    ("POST", "/api/v1/master/submit_job/copy", {"path": "0", "dst": {"a": 1}},
     "dst must be a string"),
])
def test_bad_input_found_by_fuzzing_is_a_400_naming_it(
        api: Cluster, method: str, path: str, body: object, names: str) -> None:
    answer = httpx.request(method, api.url() + path, json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    assert names in answer.json()["message"], answer.text
