"""Browsers on the cluster's machine: a page of another site drives nothing and reads
nothing, on any port and in any mode. The attacks are made by a raw client that sends
what a browser sends, and by a real headless Chromium on a page of another origin."""

from __future__ import annotations

import gc
import http.server
import json
import os
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from alluxiojob.protocol.codec import FileEntry, Hello, TaskBatch, TaskOp, encode
from tests.integration.browser import chromium
from tests.integration.cluster import Cluster, free_port, make_tree, sha256, wait_for
from tests.integration.security_fixtures import tls_files, token_file
from tests.integration.test_security import (  # noqa: F401 (an autouse fixture)
    TOKEN,
    _send_task,
    _upgrade,
    collect_stray_client_sockets,
    stray_client_sockets,
)

# Refused upgrades leave trio-websocket's client sockets to the GC, which may collect
# them during the next test: the filter is on every test here.
pytestmark = [pytest.mark.timeout(300), stray_client_sockets]

EVIL = "http://evil.example"
PRIVATE = b"-----BEGIN PRIVATE KEY-----\nnot for web pages\n-----END PRIVATE KEY-----\n"


def _private_file(root: Path, name: str) -> Path:
    """A 0600 file in a 0700 directory, as a user's key is kept."""
    home = root / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    path = home / name
    path.write_bytes(PRIVATE)
    path.chmod(0o600)
    return path


def _batch(op: TaskOp, src: Path, dst: Path, task_id: int = 1) -> TaskBatch:
    info = src.stat()
    entry = FileEntry(f"file://{src}", info.st_size, info.st_mtime_ns, f"file://{dst}")
    return TaskBatch(task_id, "page-job", op, (entry,))


def _refused_by_origin(outcome: str) -> bool:
    return outcome.startswith("rejected 403") and "from web pages are refused" in outcome


def test_websocket_upgrades_with_an_origin_are_refused_in_every_mode(
        cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A raw client sending what a browser sends (``Origin``) gets a 403 before any
    message is read: nothing is copied, moved or answered; without ``Origin`` the same
    task runs, so the refusal is about the page."""
    key = _private_file(tmp_path, "id_ed25519")
    public = tmp_path / "public"
    public.mkdir(mode=0o777)
    protected: Cluster = cluster_factory()
    worker = protected.add_worker()
    url = f"ws://127.0.0.1:{worker.rpc_port}/"  # type: ignore[attr-defined]
    copy = _batch(TaskOp.COPY, key, public / "copied")
    move = _batch(TaskOp.MOVE, key, public / "moved", 2)

    async def attempt(batch: TaskBatch, headers: dict[str, str]) -> str:
        return await _send_task(url, headers, "", batch)

    for origin in (EVIL, "null", f"http://127.0.0.1:{worker.rpc_port}",  # type: ignore[attr-defined]
                   "http://localhost:8888"):
        for batch in (copy, move):
            outcome = trio.run(attempt, batch, {"Origin": origin})
            assert _refused_by_origin(outcome), (origin, outcome)
    # The worker's HTTP port refuses such upgrades too.
    web = f"ws://127.0.0.1:{worker.web_port}/"  # type: ignore[attr-defined]
    assert _upgrade(web, {"Origin": EVIL}).startswith("rejected 403")
    gc.collect()
    assert key.read_bytes() == PRIVATE
    assert sorted(public.iterdir()) == []
    assert "refused a websocket upgrade from a web page" in worker.log()
    assert EVIL in worker.log()
    assert worker.alive
    assert trio.run(attempt, copy, {}) == "result", "a coordinator's upgrade still works"
    assert (public / "copied").read_bytes() == PRIVATE
    (public / "copied").unlink()

    # With a token and TLS: a browser cannot send the token, but even a request that has
    # it is refused once it carries an Origin.
    tls = tls_files(tmp_path)
    secured: Cluster = cluster_factory(
        **tls, **{"alluxio.job.cluster.token.file": str(token_file(tmp_path))})
    worker = secured.add_worker()
    context = ssl.create_default_context(cafile=tls["alluxio.job.tls.ca.file"])
    url = f"wss://127.0.0.1:{worker.rpc_port}/"  # type: ignore[attr-defined]
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    async def with_token(batch: TaskBatch, headers: dict[str, str]) -> str:
        return await _send_task(url, headers, TOKEN, batch, context)

    for headers in ({"Origin": EVIL}, {**bearer, "Origin": EVIL}):
        outcome = trio.run(with_token, move, headers)
        assert _refused_by_origin(outcome), (headers, outcome)
    web = f"wss://127.0.0.1:{worker.web_port}/"  # type: ignore[attr-defined]
    assert _upgrade(web, {**bearer, "Origin": EVIL}, context).startswith("rejected 403")
    gc.collect()
    assert key.read_bytes() == PRIVATE
    assert sorted(public.iterdir()) == []
    assert trio.run(with_token, copy, bearer) == "result"
    assert (public / "copied").read_bytes() == PRIVATE
    gc.collect()  # the refused clients' sockets, here rather than in another test


def test_http_requests_from_other_sites_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    """What a browser adds to a page's requests (``Origin``, ``Sec-Fetch-Site``) is enough
    to refuse them on every HTTP port; the server's own page and non-browser clients
    (which send neither) go on as before."""
    key = _private_file(tmp_path, "id_rsa")
    src = tmp_path / "src"
    make_tree(src, 3)
    worker = cluster.workers[0]
    web = f"http://127.0.0.1:{worker.web_port}"  # type: ignore[attr-defined]
    read = ("/api/v1/files", {"path": str(key), "read_through": "true"})
    foreign = [{"Origin": EVIL}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:1"},
               {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
               {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
               {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}]
    for base in (web, cluster.url()):
        for route, params in (read, ("/metrics", {}), ("/api/v1/worker/status", {}),
                              ("/api/v1/location", {"path": str(src), "list": "5"}),
                              ("/api/v1/master/list_job", {})):
            for headers in foreign:
                answer = httpx.get(base + route, params=params, headers=headers, timeout=10)
                assert answer.status_code == 403, (base, route, headers, answer.text)
                assert "from other web sites are refused" in answer.json()["message"]
                assert PRIVATE not in answer.content
        own = {"Origin": base, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
        assert httpx.get(base + "/healthz", headers=own, timeout=10).status_code == 200
        typed = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}
        assert httpx.get(base + "/healthz", headers=typed, timeout=10).status_code == 200
    assert httpx.get(web + read[0], params=read[1], headers={
        "Origin": web, "Sec-Fetch-Site": "same-origin"}, timeout=10).content == PRIVATE
    assert httpx.get(web + read[0], params=read[1], timeout=10).content == PRIVATE

    # A form POST of another site, and the same as JSON: no job is made either way.
    submit = cluster.url() + "/api/v1/master/submit_job/load"
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "application/json"):
        answer = httpx.post(submit, content=json.dumps({"path": str(src)}), timeout=10,
                            headers={"Content-Type": content_type, "Origin": EVIL,
                                     "Sec-Fetch-Site": "cross-site"})
        assert answer.status_code == 403, (content_type, answer.text)
    assert json.loads(cluster.cli("job", "list", "--format", "JSON").stdout) == {"jobs": []}
    # The web page's own POST (same origin) and a link to it from elsewhere still work.
    mine = httpx.post(submit, json={"path": str(src)}, timeout=10,
                      headers={"Origin": cluster.url(), "Sec-Fetch-Site": "same-origin"})
    assert mine.status_code == 200, mine.text
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    for path in ("/", "/ui/"):
        answer = httpx.get(cluster.url() + path, headers=link, timeout=10)
        assert answer.status_code in (200, 307), (path, answer.text)
    assert httpx.get(cluster.url() + "/ui/app.js", headers={
        "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}, timeout=10
    ).status_code == 403
    assert "refused a request from another web site" in worker.log()


# ---------------------------------------------------------------------- a real browser
ATTACK_PAGE = """<!doctype html>
<html><head><title>cute cats</title></head><body>
<script id="plan" type="application/json">{plan}</script>
<script>
const plan = JSON.parse(document.getElementById("plan").textContent);
window.outcome = null;
function tryWebsocket(url) {{
  return new Promise((resolve) => {{
    const seen = {{url: url, opened: false, received: 0, code: null}};
    let ws;
    try {{ ws = new WebSocket(url); }} catch (e) {{ seen.code = String(e); resolve(seen); return; }}
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {{
      seen.opened = true;
      for (const frame of plan.frames) ws.send(new Uint8Array(frame));
    }};
    ws.onmessage = () => {{
      seen.received += 1;
      if (seen.received >= plan.frames.length) ws.close();
    }};
    ws.onclose = (event) => {{ seen.code = event.code; resolve(seen); }};
    setTimeout(() => resolve(seen), 20000);  // a session left open: report what it saw
  }});
}}
async function tryFetch(request) {{
  const seen = {{url: request.url, readable: false, status: null, error: null}};
  try {{
    const response = await fetch(request.url, request.init);
    seen.status = response.status;
    const text = await response.text();
    seen.readable = response.type !== "opaque";
    seen.leaked = text.includes("PRIVATE KEY");
  }} catch (e) {{ seen.error = String(e); }}
  return seen;
}}
(async () => {{
  const sockets = [];
  for (const url of plan.sockets) sockets.push(await tryWebsocket(url));
  const fetches = [];
  for (const request of plan.fetches) fetches.push(await tryFetch(request));
  window.outcome = {{sockets: sockets, fetches: fetches}};
}})();
</script></body></html>
"""


@contextmanager
def _site(root: Path, page: str) -> Iterator[int]:
    """Another site: a plain HTTP server on a loopback port, serving ``page``."""
    root.mkdir()
    (root / "index.html").write_text(page)
    handler = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {
        "log_message": lambda self, *args: None})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", free_port()),
        lambda *args: handler(*args, directory=str(root)))  # type: ignore[misc]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_page_of_another_site_in_chromium_drives_nothing(cluster: Cluster,
                                                           tmp_path: Path) -> None:
    """Headless Chromium opens ``http://evil.example:PORT/`` (mapped to 127.0.0.1); its
    script opens each worker's task port, sends a hello with an empty token and a COPY and
    a MOVE of a 0600 key, and fetches the workers' and the coordinator's routes. The key
    stays where it was, unread; the page sees its sockets fail and reads no response."""
    key = _private_file(tmp_path, "id_ecdsa")
    moved_key = _private_file(tmp_path, "id_dsa")
    before = sha256(key), sha256(moved_key)
    public = tmp_path / "public"
    public.mkdir(mode=0o777)
    src = tmp_path / "src"
    make_tree(src, 3)
    frames = [encode(Hello("", "a-web-page")),
              encode(_batch(TaskOp.COPY, key, public / "copied")),
              encode(_batch(TaskOp.MOVE, moved_key, public / "moved", 2))]
    sockets = [f"ws://127.0.0.1:{w.rpc_port}/" for w in cluster.workers]  # type: ignore[attr-defined]
    sockets += [f"ws://localhost:{cluster.workers[0].rpc_port}/",  # type: ignore[attr-defined]
                f"ws://evil.example:{cluster.workers[0].rpc_port}/",  # type: ignore[attr-defined]
                f"ws://127.0.0.1:{cluster.workers[0].web_port}/"]  # type: ignore[attr-defined]
    coordinator = cluster.url()
    fetches: list[dict[str, Any]] = []
    for w in cluster.workers:
        web = f"http://127.0.0.1:{w.web_port}"  # type: ignore[attr-defined]
        fetches += [{"url": f"{web}/api/v1/files?path={key}&read_through=true", "init": {}},
                    {"url": f"{web}/api/v1/files?path={key}&read_through=true",
                     "init": {"mode": "no-cors"}},
                    {"url": f"{web}/metrics", "init": {}},
                    {"url": f"{web}/api/v1/location?path={src}&list=10", "init": {}}]
    fetches += [
        {"url": f"{coordinator}/api/v1/master/list_job", "init": {}},
        {"url": f"{coordinator}/api/v1/master/submit_job/copy",
         "init": {"method": "POST", "mode": "no-cors", "headers": {"Content-Type": "text/plain"},
                  "body": json.dumps({"src": str(key), "dst": str(public / "posted")})}},
    ]
    plan = {"frames": [list(frame) for frame in frames], "sockets": sockets,
            "fetches": fetches}
    page = ATTACK_PAGE.format(plan=json.dumps(plan).replace("</", "<\\/"))

    with _site(tmp_path / "evil-site", page) as port, \
            chromium(tmp_path, "--host-resolver-rules=MAP evil.example 127.0.0.1") as driver:
        driver.get(f"http://evil.example:{port}/index.html")  # type: ignore[attr-defined]
        outcome = wait_for(lambda: driver.execute_script("return window.outcome"),  # type: ignore[attr-defined]
                           120, "the page's attempts to finish")
    print(json.dumps(outcome, indent=1))

    for seen in outcome["sockets"]:
        assert not seen["opened"], seen
        assert seen["received"] == 0, seen
    for seen in outcome["fetches"]:
        assert not seen["readable"], seen
        assert not seen.get("leaked"), seen
    assert (sha256(key), sha256(moved_key)) == before, "both keys are intact"
    assert sorted(public.iterdir()) == [], "nothing was written where others can read it"
    assert json.loads(cluster.cli("job", "list", "--format", "JSON").stdout) == {"jobs": []}
    for w in cluster.workers:
        assert "refused a websocket upgrade from a web page" in w.log(), w.log()[-3000:]
        assert "refused a request from another web site" in w.log()
        assert w.alive
    assert os.stat(key).st_mode & 0o777 == 0o600
