"""The coordinator's web page, in a real headless Chromium against a real cluster."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.browser import chromium
from tests.integration.cluster import Cluster, make_tree, wait_for

pytestmark = pytest.mark.timeout(300)

# A directory name that is also HTML: the page must show it as text, never run it.
HOSTILE_NAME = "<img src=x onerror=document.title=1>"


def _by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _fill(driver: Any, selector: str, text: str) -> None:
    field = _by_css(driver, selector)
    field.clear()
    if text:
        field.send_keys(text)


def _submit(driver: Any, path: Path, *, batch_size: str = "", bandwidth: str = "") -> None:
    _fill(driver, "#submit-path", str(path))
    _fill(driver, "#submit-batch-size", batch_size)
    _fill(driver, "#submit-bandwidth", bandwidth)
    _by_css(driver, "#submit-button").click()


def _submitted(driver: Any, path: Path, cluster: Cluster) -> str:
    """The id of the job the page says it submitted for ``path``, checked with the API."""
    def said() -> str | None:
        text = _by_css(driver, "#message").text
        found = re.search(r"Submitted LOAD job ([0-9a-f-]{36}) for (.*)", text)
        return found.group(1) if found and found.group(2).rstrip(".").endswith(path.name) \
            else None

    job_id = wait_for(said, 30, f"the page to confirm the submission of {path.name}")
    assert cluster.progress(job_id)["job"]["type"] == "LOAD"
    return job_id


def _row_state(driver: Any, job_id: str) -> str:
    rows = _all_css(driver, f'#jobs tr[data-job-id="{job_id}"] .state')
    return str(rows[0].text) if rows else ""


def _wait_row_state(driver: Any, job_id: str, state: str, timeout: float = 120) -> None:
    wait_for(lambda: _row_state(driver, job_id) == state, timeout,
             f"the page to show job {job_id} {state}")


def _detail(driver: Any, key: str) -> str:
    return str(_by_css(driver, f'#detail-summary td[data-key="{key}"]').text)


def test_submit_watch_stop_and_rerun_from_the_page(cluster: Cluster, tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    sizes = make_tree(dataset, 300)
    slow = tmp_path / HOSTILE_NAME
    make_tree(slow, 60)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "fine.bin").write_bytes(os.urandom(100))
    (broken / os.fsdecode(b"bad-\xff-name.bin")).write_bytes(b"x")

    with chromium(tmp_path) as driver:
        driver.get(cluster.url() + "/")  # type: ignore[attr-defined]
        assert driver.current_url.endswith("/ui/")  # type: ignore[attr-defined]
        assert driver.title == "alluxiojob"  # type: ignore[attr-defined]
        wait_for(lambda: len(_all_css(driver, "#workers td.connected")) == 2, 30,
                 "the page to list both workers as connected")

        # Submit a LOAD and watch it reach SUCCEEDED with a full progress bar.
        _submit(driver, dataset, batch_size="20")
        job_id = _submitted(driver, dataset, cluster)
        _wait_row_state(driver, job_id, "SUCCEEDED")
        row = f'#jobs tr[data-job-id="{job_id}"]'
        wait_for(lambda: _by_css(driver, f"{row} .bar .label").text == "100%", 10,
                 "a full progress bar")
        assert _all_css(driver, f"{row} td")[4].text == f"{len(sizes)} / {len(sizes)}"
        wait_for(lambda: _detail(driver, "State") == "SUCCEEDED", 10, "the job's details")
        settings = _by_css(driver, '#detail-settings td[data-key="Batch size"]').text
        assert settings == "20", "the batch size typed in the form reached the job"
        assert _by_css(driver, "#detail-no-failures").is_displayed()
        assert cluster.progress(job_id)["job"]["options"]["batch_size"] == 20
        # Its five top-level directories made five shards, listed with their owners.
        shards = cluster.progress(job_id)["shards"]
        assert len(shards) == 5
        wait_for(lambda: len(_all_css(driver, "#detail-shards tbody tr")) == 5, 10,
                 "the job's shards")
        cells = [c.text for c in _all_css(driver, "#detail-shards tbody tr:first-child td")]
        assert cells == ["0", "DONE", shards[0]["owner"],
                         f"{shards[0]['files_processed']} / {shards[0]['files_listed']}", "0"]

        # A slow job, whose name is HTML: shown as text; stopped, then rerun, from the page.
        _submit(driver, slow, batch_size="2", bandwidth="16KiB")
        slow_id = _submitted(driver, slow, cluster)
        _wait_row_state(driver, slow_id, "RUNNING", 60)
        slow_row = f'#jobs tr[data-job-id="{slow_id}"]'
        assert HOSTILE_NAME in _by_css(driver, f"{slow_row} td.path").text
        assert not _all_css(driver, "#jobs img"), "a path never becomes markup"
        assert driver.title == "alluxiojob"  # type: ignore[attr-defined]
        _by_css(driver, f"{slow_row} button.stop").click()
        _wait_row_state(driver, slow_id, "STOPPED")
        assert cluster.progress(slow_id)["job"]["state"] == "STOPPED"
        _by_css(driver, f"{slow_row} button.rerun").click()  # one coordinator: resubmits
        wait_for(lambda: "Resumed stopped LOAD job" in _by_css(driver, "#message").text, 30,
                 "the rerun to resume the stopped job")
        wait_for(lambda: cluster.progress(slow_id)["job"]["state"] in ("WAITING", "RUNNING"),
                 30, "the stopped job to run again")
        _wait_row_state(driver, slow_id, "RUNNING", 60)
        _by_css(driver, f"{slow_row} button.stop").click()
        _wait_row_state(driver, slow_id, "STOPPED")

        # A job with a failed file: the details list it with its reason.
        _submit(driver, broken)
        broken_id = _submitted(driver, broken, cluster)
        _wait_row_state(driver, broken_id, "FAILED")
        wait_for(lambda: _all_css(driver, "#detail-failures tbody tr"), 20,
                 "the failed files of the selected job")
        cells = [c.text for c in _all_css(driver, "#detail-failures tbody tr td")]
        assert "INVALID_PATH" in cells, cells
        assert any("bad-" in c for c in cells), cells

        # The state filters count and select.
        _by_css(driver, '#state-filters button[data-state="FAILED"]').click()
        wait_for(lambda: [r.get_attribute("data-job-id") for r in
                          _all_css(driver, "#jobs tbody tr")] == [broken_id], 20,
                 "the FAILED filter to show only the failed job")
        assert _by_css(driver, '#state-filters button[data-state="FAILED"]').text == \
            "FAILED (1)"
        _by_css(driver, '#state-filters button[data-state=""]').click()
        wait_for(lambda: len(_all_css(driver, "#jobs tbody tr")) == 3, 20, "all three jobs")

        # Cache use per worker, as the workers report it.
        report = cluster.api("GET", "/api/v1/master/report").json()
        assert sum(w["cached_files"] for w in report["workers"]) >= len(sizes)
        wait_for(lambda: sum(int(r.text) for r in
                             _all_css(driver, "#workers tbody tr td:last-child"))
                 == sum(w["cached_files"] for w in
                        cluster.api("GET", "/api/v1/master/report").json()["workers"]),
                 20, "the workers' cached files on the page")

        driver.save_screenshot(str(tmp_path / "jobs-page.png"))  # type: ignore[attr-defined]
        errors = [entry for entry in driver.get_log("browser")  # type: ignore[attr-defined]
                  if entry["level"] == "SEVERE"]
        assert errors == [], errors
    assert (tmp_path / "jobs-page.png").stat().st_size > 10_000


def test_the_page_shell_is_static_and_locked_down(cluster: Cluster) -> None:
    page = httpx.get(cluster.url() + "/ui/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset, kind in (("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")):
        answer = httpx.get(cluster.url() + asset, timeout=10)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(kind)
    assert "innerHTML" not in httpx.get(cluster.url() + "/ui/app.js", timeout=10).text
    assert httpx.get(cluster.url() + "/ui/secrets", timeout=10).status_code == 404
    overview = httpx.get(cluster.url() + "/api/v1/master/jobs_overview", timeout=10).json()
    assert overview["jobs"] == []
    assert overview["counts"]["WAITING"] == 0
    bogus = httpx.get(cluster.url() + "/api/v1/master/jobs_overview",
                      params={"state": "DANCING"}, timeout=10)
    assert bogus.status_code == 400
    assert "DANCING" in bogus.json()["message"]
    redirect = httpx.get(cluster.url() + "/", timeout=10)
    assert redirect.status_code in (302, 307)
    assert redirect.headers["location"] == "/ui/"


def test_rerun_from_the_page_in_etcd_mode(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With an etcd job store the page's Rerun puts the same job back in the queue."""
    from alluxiojob.testing.etcd import EtcdServer

    with EtcdServer(data_dir=tmp_path / "etcd") as etcd:
        cluster: Cluster = cluster_factory(**{
            "alluxio.coordinator.job.meta.store.type": "ETCD",
            "alluxio.etcd.endpoints": etcd.url,
        })
        cluster.add_worker()
        cluster.add_coordinator()
        slow = tmp_path / "slow"
        make_tree(slow, 40)
        with chromium(tmp_path) as driver:
            driver.get(cluster.url() + "/ui/")  # type: ignore[attr-defined]
            wait_for(lambda: "ETCD job store" in _by_css(driver, "#cluster").text, 30,
                     "the page to name the etcd job store")
            _submit(driver, slow, batch_size="2", bandwidth="16KiB")
            job_id = _submitted(driver, slow, cluster)
            row = f'#jobs tr[data-job-id="{job_id}"]'
            _wait_row_state(driver, job_id, "RUNNING", 60)
            _by_css(driver, f"{row} button.stop").click()
            _wait_row_state(driver, job_id, "STOPPED")
            claims = cluster.progress(job_id)["job"]["claims"]
            _by_css(driver, f"{row} button.rerun").click()
            wait_for(lambda: f"Re-queued LOAD job {job_id}" in
                     _by_css(driver, "#message").text, 30, "the page to re-queue the job")
            wait_for(lambda: cluster.progress(job_id)["job"]["claims"] > claims, 60,
                     "a coordinator to claim the rerun job again")
            _wait_row_state(driver, job_id, "RUNNING", 60)
            _by_css(driver, f"{row} button.stop").click()
            _wait_row_state(driver, job_id, "STOPPED")
            assert [r.get_attribute("data-job-id") for r in
                    _all_css(driver, "#jobs tbody tr")] == [job_id], "the same job, rerun"


def test_the_page_asks_for_the_token(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With a cluster token the shell loads, the API refuses, the page asks, then works."""
    token_file = tmp_path / "cluster.token"
    token_file.write_text("s3cret-" + os.urandom(8).hex() + "\n")
    token_file.chmod(0o600)
    cluster: Cluster = cluster_factory(**{"alluxio.job.cluster.token.file": str(token_file)})
    cluster.add_worker()
    cluster.add_coordinator()
    assert httpx.get(cluster.url() + "/ui/app.js", timeout=10).status_code == 200, \
        "the static shell is public"
    refused = httpx.get(cluster.url() + "/api/v1/master/jobs_overview", timeout=10)
    assert refused.status_code == 401
    dataset = tmp_path / "dataset"
    make_tree(dataset, 20)

    with chromium(tmp_path) as driver:
        driver.get(cluster.url() + "/ui/")  # type: ignore[attr-defined]
        wait_for(lambda: _by_css(driver, "#token-panel").is_displayed(), 30,
                 "the page to ask for the token")
        assert "cluster token" in _by_css(driver, "#message").text
        _by_css(driver, "#token-input").send_keys(token_file.read_text().strip())
        _by_css(driver, "#token-save").click()
        wait_for(lambda: len(_all_css(driver, "#workers td.connected")) == 1, 30,
                 "the workers, read with the token")
        assert _by_css(driver, "#token-button").text == "Token: set"
        stored = driver.execute_script(  # type: ignore[attr-defined]
            "return sessionStorage.getItem('alluxiojob.token')")
        assert stored == token_file.read_text().strip()
        _submit(driver, dataset)
        job_id = _submitted(driver, dataset, cluster)
        _wait_row_state(driver, job_id, "SUCCEEDED")
