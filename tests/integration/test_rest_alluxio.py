"""The REST API speaks Alluxio's dialect: string option values, camelCase names, TEXT."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.integration.cluster import Cluster, cached_files, make_tree

pytestmark = pytest.mark.timeout(300)


def test_string_option_values_reach_the_job(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    sizes = make_tree(src, 40)
    response = cluster.api("POST", "/api/v1/master/submit_job/load", json={
        "path": str(src),
        "options": {"batchSize": "10", "partialListing": "true", "skipIfExists": "false",
                    "replicas": "2", "verify": "TRUE", "bandwidth": "64MiB",
                    "loadMetadataOnly": "false"},
    })
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["options"] == {"batch_size": 10, "partial_listing": True,
                              "skip_if_exists": False, "replicas": 2, "verify": True,
                              "bandwidth": 64 * 1024 * 1024, "overwrite": False,
                              "metadata_only": False, "source": ""}
    report = cluster.wait_state(job["id"], "SUCCEEDED")
    assert report["files"]["processed"] == len(sizes)
    assert report["verify_passes"] >= 1, "verify (given as the string TRUE) ran"
    copies = cached_files(cluster)
    assert all(len(copies[path]) == 2 for path in sizes), "replicas (given as \"2\") held"


BAD_OPTIONS = [
    ({"batchSize": "ten"}, "batch_size"),
    ({"batchSize": "-5"}, "batch_size"),
    ({"batchSize": True}, "batch_size"),
    ({"replicas": "1.5"}, "replicas"),
    ({"verify": "yes"}, "verify"),
    ({"skipIfExists": 1}, "skip_if_exists"),
    ({"bandwidth": "fast"}, "bandwidth"),
    ({"batchSize": "9" * 40}, "batch_size"),
    ({"batchSize": "\u0661\u0662"}, "batch_size"),  # digits, but not ASCII ones
    ({"noSuchOption": "1"}, "noSuchOption"),
]


def test_bad_option_values_are_named(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "small"
    make_tree(src, 3)
    for options, named in BAD_OPTIONS:
        response = cluster.api("POST", "/api/v1/master/submit_job/load",
                               json={"path": str(src), "options": options})
        assert response.status_code == 400, (options, response.text)
        body = response.json()
        assert body["error"] == "INVALID_ARGUMENT"
        assert named in body["message"], (options, body)
    listing = cluster.api("GET", "/api/v1/master/list_job").json()["jobs"]
    assert listing == [], "a rejected submission creates no job"


@pytest.mark.fast
def test_progress_as_text_from_a_query_or_an_alluxio_style_body(
        cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    sizes = make_tree(src, 12)
    job = cluster.submit("load", str(src))
    cluster.wait_state(job["id"], "SUCCEEDED")
    url = cluster.url() + "/api/v1/master/progress_job/load"

    by_query = httpx.get(url, params={"path": str(src), "format": "TEXT",
                                      "verbose": "true"}, timeout=30)
    # Alluxio's documented call: a GET whose parameters are a JSON body.
    by_body = httpx.request("GET", url, timeout=30, content=json.dumps(
        {"path": str(src), "format": "TEXT", "verbose": "false"}),
        headers={"Content-Type": "application/json"})
    for response in (by_query, by_body):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        assert "Job State: SUCCEEDED" in response.text
        assert f"Files Processed: {len(sizes)} out of {len(sizes)}" in response.text
    cli = cluster.cli("job", "load", "--path", str(src), "--progress").stdout
    assert by_body.text.strip() == cli.strip(), "the REST TEXT report is the CLI's"

    as_json = httpx.get(url, params={"path": str(src)}, timeout=30)
    assert as_json.json()["job"]["id"] == job["id"]
    wrong = httpx.get(url, params={"path": str(src), "format": "XML"}, timeout=30)
    assert wrong.status_code == 400
    assert "format must be TEXT or JSON" in wrong.json()["message"]
    garbage = httpx.request("GET", url, content=b"{not json", timeout=30,
                            headers={"Content-Type": "application/json"})
    assert garbage.status_code == 400
    assert "not valid JSON" in garbage.json()["message"]
