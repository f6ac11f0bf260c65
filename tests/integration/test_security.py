"""The open door, closed: the cluster token, protected mode, TLS, path confinement, the
cache directory, and memory and time limits for peers that are not trusted yet."""

from __future__ import annotations

import gc
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from alluxiojob.protocol.codec import (
    ErrorMessage,
    FileEntry,
    Hello,
    TaskBatch,
    TaskOp,
    TaskResult,
    Welcome,
    decode,
    encode,
)
from tests.integration.cluster import Cluster, cached_files, make_tree, sha256, wait_for
from tests.integration.security_fixtures import (
    peak_rss,
    read_until_closed,
    tls_files,
    token_file,
)

pytestmark = pytest.mark.timeout(300)

TOKEN = "tok-" + "7" * 32
# trio-websocket's client now and then leaves a socket for the GC when the server hangs up
# first (as the worker does on a refused peer); that is the test client's socket.
stray_client_sockets = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def collect_stray_client_sockets() -> Iterator[None]:
    """Collect those sockets as this file's test ends, under its filter: a few stay
    referenced until the test's call is over, and the GC would find them in whatever
    test runs next in this process (under pytest-xdist, any file)."""
    yield
    gc.collect()


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in root.rglob("*") if p.is_file()}


def _upgrade(url: str, headers: dict[str, str], verify: Any = True) -> str:
    """Ask for a websocket upgrade over plain HTTP: 'accepted', or 'rejected <status>: why'.

    (trio-websocket's client leaves its socket to the GC when a handshake is rejected.)
    """
    handshake = {"Upgrade": "websocket", "Connection": "Upgrade",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    http_url = url.replace("wss://", "https://").replace("ws://", "http://")
    with httpx.Client(verify=verify, timeout=30) as client, \
            client.stream("GET", http_url, headers={**handshake, **headers}) as answer:
        if answer.status_code == 101:
            return "accepted"
        answer.read()
        return f"rejected {answer.status_code}: {answer.text}"


async def _send_task(url: str, headers: dict[str, str], hello_token: str | None,
                     batch: TaskBatch, ssl_context: ssl.SSLContext | None = None) -> str:
    """What a peer gets for trying a task: 'rejected <status>', the worker's error, or
    'result' if the task ran."""
    extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    try:
        with trio.fail_after(30):
            async with open_websocket_url(url, extra_headers=extra,
                                          ssl_context=ssl_context) as ws:
                if hello_token is not None:
                    await ws.send_message(encode(Hello(hello_token, "intruder")))
                    reply = decode(await ws.get_message())
                    if not isinstance(reply, Welcome):
                        assert isinstance(reply, ErrorMessage)
                        try:  # try the task anyway
                            await ws.send_message(encode(batch))
                            await ws.get_message()
                        except ConnectionClosed:
                            pass
                        return reply.message
                await ws.send_message(encode(batch))
                answer = decode(await ws.get_message())
                return "result" if isinstance(answer, TaskResult) else repr(answer)
    except ConnectionRejected as exc:
        return f"rejected {exc.status_code}: {(exc.body or b'').decode()}"
    except ConnectionClosed as exc:
        return f"closed: {exc.reason}"


def _cat(cluster: Cluster, path: str) -> bytes:
    """``fs cat`` through the CLI, with the cluster's site file (token, CA)."""
    done = subprocess.run(
        [sys.executable, "-m", "alluxiojob.cli.main", "fs", "cat", "--path", path,
         "--conf", str(cluster.conf), "-D", "alluxio.coordinator.hostname=127.0.0.1",
         "-D", f"alluxio.coordinator.rest.port={cluster.coordinators[0].port}"],  # type: ignore[attr-defined]
        capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _move_batch(src: Path, dst: Path) -> TaskBatch:
    info = src.stat()
    entry = FileEntry(f"file://{src}", info.st_size, info.st_mtime_ns, f"file://{dst}")
    return TaskBatch(1, "intruder-job", TaskOp.MOVE, (entry,))


@stray_client_sockets
def test_a_task_without_the_token_writes_and_deletes_nothing(cluster_factory,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    cluster: Cluster = cluster_factory(
        **{"alluxio.job.cluster.token.file": str(token_file(tmp_path))})
    worker = cluster.add_worker()
    victim = tmp_path / "victim.bin"
    victim.write_bytes(os.urandom(5000))
    before = sha256(victim)
    stolen = tmp_path / "stolen.bin"
    batch = _move_batch(victim, stolen)
    url = f"ws://127.0.0.1:{worker.rpc_port}/"  # type: ignore[attr-defined]

    async def wrong_hello() -> str:
        return await _send_task(url, {"Authorization": f"Bearer {TOKEN}"}, "guess", batch)

    outcomes = {
        "no header": _upgrade(url, {}),
        "wrong header": _upgrade(url, {"Authorization": "Bearer guess"}),
        "not bearer": _upgrade(url, {"Authorization": TOKEN}),
        "wrong hello": trio.run(wrong_hello),
    }
    gc.collect()
    assert outcomes["no header"].startswith("rejected 401"), outcomes
    assert "cluster token is required" in outcomes["no header"]
    assert outcomes["wrong header"].startswith("rejected 401"), outcomes
    assert outcomes["not bearer"].startswith("rejected 401"), outcomes
    assert "wrong cluster token" in outcomes["wrong hello"], outcomes
    assert sha256(victim) == before, "the source is intact"
    assert not stolen.exists(), "nothing was written"
    assert worker.alive
    assert TOKEN not in worker.log()

    # The same task with the token does run: the refusals above were about the token.
    async def with_token() -> str:
        return await _send_task(url, {"Authorization": f"Bearer {TOKEN}"}, TOKEN, batch)

    assert trio.run(with_token) == "result"
    gc.collect()
    assert sha256(stolen) == before
    assert not victim.exists()


def test_rest_and_worker_routes_need_the_token(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    secret = token_file(tmp_path)
    cluster: Cluster = cluster_factory(**{"alluxio.job.cluster.token.file": str(secret)})
    worker = cluster.add_worker()
    cluster.add_coordinator()
    src = tmp_path / "src"
    sizes = make_tree(src, 10)
    cluster.cli("job", "load", "--path", str(src), "--wait")  # the CLI sends the token
    one = next(p for p, size in sizes.items() if size)

    base = cluster.url()
    routes = ["/api/v1/master/list_job", "/api/v1/master/report", "/metrics",
              f"/api/v1/master/progress_job/load?path={src}"]
    for route in routes:
        for headers in ({}, {"Authorization": "Bearer guess"},
                        {"X-Alluxio-Token": TOKEN}):
            answer = httpx.get(base + route, headers=headers, timeout=10)
            assert answer.status_code == 401, (route, headers, answer.text)
            assert answer.json()["error"] == "UNAUTHENTICATED"
        assert cluster.api("GET", route).status_code == 200, route
    submit = httpx.post(base + "/api/v1/master/submit_job/free", json={"path": str(src)},
                        timeout=10)
    assert submit.status_code == 401
    assert httpx.get(base + "/healthz", timeout=10).status_code == 200

    web = f"http://127.0.0.1:{worker.web_port}"  # type: ignore[attr-defined]
    for route, params in (("/api/v1/files", {"path": one}),
                          ("/api/v1/files", {"path": "/etc/hostname", "read_through": "true"}),
                          ("/api/v1/location", {"path": str(src)}),
                          ("/metrics", {}), ("/api/v1/worker/status", {})):
        answer = httpx.get(web + route, params=params, timeout=10)
        assert answer.status_code == 401, (route, answer.text)
    assert httpx.get(web + "/healthz", timeout=10).status_code == 200
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(web + "/api/v1/files", params={"path": one}, headers=good,
                     timeout=10).content == Path(one).read_bytes()

    assert _cat(cluster, one) == Path(one).read_bytes()
    location = cluster.cli("fs", "location", "--path", str(src))
    assert "Files: 10\t" in location.stdout, location.stdout

    # A CLI without the token, or with another one, is told what to set: exit code 2.
    wrong = tmp_path / "wrong.token"
    wrong.write_text("another-token")
    wrong.chmod(0o600)
    for define in ("alluxio.job.cluster.token.file=", f"alluxio.job.cluster.token.file={wrong}"):
        refused = cluster.cli("job", "list", "-D", define, check=False)
        assert refused.returncode == 2, refused
        assert "alluxio.job.cluster.token.file" in refused.stderr

    # The token appears nowhere: not in logs, metrics, errors, or job listings.
    seen = [cluster.logs(), cluster.api("GET", "/metrics").text,
            cluster.cli("job", "list", "--format", "JSON").stdout,
            cluster.cli("report", "jobservice", "--format", "JSON").stdout,
            httpx.get(base + "/metrics", timeout=10).text]
    assert not [text for text in seen if TOKEN in text]


def test_token_file_settings(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = cluster_factory(
        **{"alluxio.job.cluster.token.file": str(token_file(tmp_path, mode=0o644))})
    worker = cluster.add_worker()
    warnings = [line for line in worker.log().splitlines() if "chmod 600" in line]
    assert len(warnings) == 1
    assert str(tmp_path / "cluster.token") in warnings[0]

    both = subprocess.run(
        [sys.executable, "-m", "alluxiojob.cli.main", "coordinator", "--conf", str(cluster.conf),
         "-D", f"alluxio.job.cluster.token={TOKEN}"], capture_output=True, text=True, timeout=60)
    assert both.returncode == 2
    assert "alluxio.job.cluster.token and alluxio.job.cluster.token.file" in both.stderr
    assert TOKEN not in both.stderr + both.stdout


@stray_client_sockets
def test_protected_mode_serves_loopback_peers_only(cluster_factory, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                   outside_address: str) -> None:  # noqa: F811
    cluster: Cluster = cluster_factory()
    worker = cluster.add_worker(**{"alluxio.worker.hostname": "0.0.0.0",
                                   "alluxio.worker.id": "127.0.0.1:0"})
    coordinator = cluster.add_coordinator(**{"alluxio.coordinator.hostname": "0.0.0.0"})
    for service in (worker, coordinator):
        assert "accepts loopback peers only (protected mode)" in service.log()

    src = tmp_path / "src"
    sizes = make_tree(src, 5)
    cluster.cli("job", "load", "--path", str(src), "--wait")  # from loopback: fine
    one = next(p for p, size in sizes.items() if size)

    outside = {
        "coordinator": f"http://{outside_address}:{coordinator.port}",  # type: ignore[attr-defined]
        "worker": f"http://{outside_address}:{worker.web_port}",  # type: ignore[attr-defined]
    }
    for name, base in outside.items():
        for route in ("/healthz", "/metrics", "/api/v1/master/list_job",
                      f"/api/v1/files?path={one}", "/api/v1/files?path=/etc/shadow&"
                      "read_through=true"):
            answer = httpx.get(base + route, timeout=10)
            assert answer.status_code == 403, (name, route, answer.text)
            assert "protected mode" in answer.json()["message"]
            assert outside_address in answer.json()["message"]
    posted = httpx.post(outside["coordinator"] + "/api/v1/master/submit_job/load",
                        json={"path": str(src)}, timeout=10)
    assert posted.status_code == 403
    assert httpx.get(f"http://127.0.0.1:{worker.web_port}/api/v1/files",  # type: ignore[attr-defined]
                     params={"path": one}, timeout=10).content == Path(one).read_bytes()

    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    stolen = tmp_path / "stolen.bin"

    outcome = _upgrade(f"ws://{outside_address}:{worker.rpc_port}/", {})  # type: ignore[attr-defined]
    assert outcome.startswith("rejected 403"), outcome
    assert "protected mode" in outcome
    assert victim.read_bytes() == b"precious"
    assert not stolen.exists()
    assert worker.alive
    assert coordinator.alive


@stray_client_sockets
def test_tls_on_every_port(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tls = tls_files(tmp_path)
    cluster: Cluster = cluster_factory(
        **tls, **{"alluxio.job.cluster.token.file": str(token_file(tmp_path))})
    worker = cluster.add_worker()
    cluster.add_coordinator()
    assert cluster.url().startswith("https://")
    src = tmp_path / "src"
    sizes = make_tree(src, 20)
    # The coordinator reaches the worker over wss, the CLI the coordinator over https.
    cluster.cli("job", "load", "--path", str(src), "--wait")
    assert set(cached_files(cluster)) == set(sizes)
    one = next(p for p, size in sizes.items() if size)
    assert _cat(cluster, one) == Path(one).read_bytes()
    listing = json.loads(cluster.cli("job", "list", "--format", "JSON").stdout)
    assert listing

    # Plain http and ws are not spoken on those ports; an unverified client is refused.
    for port in (cluster.coordinators[0].port, worker.web_port):  # type: ignore[attr-defined]
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # the test CA is not a system CA
            httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=5)
    context = ssl.create_default_context(cafile=tls["alluxio.job.tls.ca.file"])
    url = f"wss://127.0.0.1:{worker.rpc_port}/"  # type: ignore[attr-defined]
    assert _upgrade(url, {}, context).startswith("rejected 401")
    assert _upgrade(url, {"Authorization": f"Bearer {TOKEN}"}, context) == "accepted"
    with pytest.raises(httpx.HTTPError):
        _upgrade(url.replace("wss://", "ws://"), {"Authorization": f"Bearer {TOKEN}"})


def test_bad_security_settings_stop_startup_with_exit_2(tmp_path: Path) -> None:
    tls = tls_files(tmp_path)
    cert, key = tls["alluxio.job.tls.cert.file"], tls["alluxio.job.tls.key.file"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    unreadable = tmp_path / "unreadable.pem"
    unreadable.write_text(Path(key).read_text())
    cases = [
        ([f"alluxio.job.tls.cert.file={cert}"], ["alluxio.job.tls.key.file", cert]),
        ([f"alluxio.job.tls.cert.file={garbage}", f"alluxio.job.tls.key.file={key}"],
         ["alluxio.job.tls.cert.file", str(garbage)]),
        ([f"alluxio.job.tls.cert.file={cert}", f"alluxio.job.tls.key.file={tmp_path / 'no'}"],
         ["alluxio.job.tls.key.file", str(tmp_path / "no")]),
        ([f"alluxio.job.tls.ca.file={garbage}"], ["alluxio.job.tls.ca.file", str(garbage)]),
        (["alluxio.job.path.allowlist=relative/dir"], ["alluxio.job.path.allowlist"]),
    ]
    for kind in ("coordinator", "worker"):
        for defines, expected in cases:
            args = [sys.executable, "-m", "alluxiojob.cli.main", kind,
                    "-D", f"alluxio.work.dir={tmp_path / 'work'}",
                    "-D", "alluxio.coordinator.rest.port=0", "-D", "alluxio.worker.rpc.port=0",
                    "-D", "alluxio.worker.web.port=0"]
            for define in defines:
                args += ["-D", define]
            done = subprocess.run(args, capture_output=True, text=True, timeout=60,
                                  env=dict(os.environ, ALLUXIO_CONF_DIR=str(tmp_path)))
            assert done.returncode == 2, (kind, defines, done.stderr)
            for text in expected:
                assert text in done.stderr, (kind, defines, done.stderr)
            assert "Traceback" not in done.stderr


@stray_client_sockets
def test_paths_outside_the_allowlist_are_refused(cluster_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    allowed = tmp_path / "data"
    inside = allowed / "set"
    make_tree(inside, 6)
    outside = tmp_path / "database"  # shares a prefix with "data", not a component
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET CONTENT")
    os.symlink(outside, inside / "escape")  # a walk must not follow it
    os.symlink(outside / "secret.txt", allowed / "secret-link.txt")
    cluster: Cluster = cluster_factory(
        **{"alluxio.job.path.allowlist": str(allowed),
           "alluxio.job.cluster.token.file": str(token_file(tmp_path))})
    worker = cluster.add_worker()
    cluster.add_coordinator()

    refusals = {
        "load outside": ("load", {"path": str(outside)}),
        "load through ..": ("load", {"path": f"{allowed}/../database"}),
        "load a link out": ("load", {"path": str(allowed / "secret-link.txt")}),
        "copy out": ("copy", {"path": str(inside), "dst": str(outside / "copy")}),
        "move in from out": ("move", {"path": str(outside), "dst": str(allowed / "m")}),
        "copy from the root": ("copy", {"path": "/etc", "dst": str(allowed / "etc")}),
    }
    for name, (job_type, body) in refusals.items():
        answer = cluster.api("POST", f"/api/v1/master/submit_job/{job_type}", json=body)
        assert answer.status_code == 403, (name, answer.text)
        assert answer.json()["error"] == "PERMISSION_DENIED", name
        assert f"alluxio.job.path.allowlist={allowed}" in answer.json()["message"], name
    refused_cli = cluster.cli("job", "load", "--path", str(outside), check=False)
    assert refused_cli.returncode == 2
    assert "alluxio.job.path.allowlist" in refused_cli.stderr

    cluster.cli("job", "load", "--path", str(inside), "--wait")
    cached = set(cached_files(cluster))
    assert cached
    assert all(path.startswith(str(inside) + "/") for path in cached)
    assert not [p for p in cached if "escape" in p], "the walk did not follow the link out"

    web = f"http://127.0.0.1:{worker.web_port}/api/v1/files"  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in (str(outside / "secret.txt"), str(allowed / "secret-link.txt"), "/etc/hostname"):
        answer = httpx.get(web, params={"path": path, "read_through": "true"}, headers=auth,
                           timeout=10)
        assert answer.status_code == 403, (path, answer.text)
        assert "TOP SECRET" not in answer.text
    some = next(iter(p for p in inside.rglob("*") if p.is_file() and "escape" not in str(p)))
    assert httpx.get(web, params={"path": str(some), "read_through": "true"}, headers=auth,
                     timeout=10).status_code == 200

    # Straight to the worker, with the token: each file outside is refused on its own.
    victim = outside / "secret.txt"

    async def direct() -> TaskResult:
        url = f"ws://127.0.0.1:{worker.rpc_port}/"  # type: ignore[attr-defined]
        async with open_websocket_url(url, extra_headers=[(b"authorization",
                                                           f"Bearer {TOKEN}".encode())]) as ws:
            await ws.send_message(encode(Hello(TOKEN, "peer")))
            assert isinstance(decode(await ws.get_message()), Welcome)
            await ws.send_message(encode(_move_batch(victim, allowed / "moved-in.txt")))
            result = decode(await ws.get_message())
            assert isinstance(result, TaskResult)
            return result

    result = trio.run(direct)
    gc.collect()
    [file_result] = result.results
    assert file_result.reason == "PERMISSION_DENIED"
    assert "alluxio.job.path.allowlist" in file_result.message
    assert victim.read_text() == "TOP SECRET CONTENT"
    assert not (allowed / "moved-in.txt").exists()


def test_cache_symlinks_are_removed_and_never_served(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    sizes = make_tree(src, 8)
    cluster.cli("job", "load", "--path", str(src), "--wait")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the cache")
    worker = cluster.workers[0]
    data = worker.cache_dir / "data"  # type: ignore[attr-defined]
    mine = [p for p, copies in cached_files(cluster).items()
            if any(str(c).startswith(str(data)) for c in copies) and sizes[p]]
    assert mine
    victim = data / mine[0].lstrip("/")
    web = f"http://127.0.0.1:{worker.web_port}/api/v1/files"  # type: ignore[attr-defined]

    # Planted while the worker runs: the indexed file is now a link; it is not served.
    victim.unlink()
    os.symlink(secret, victim)
    answer = httpx.get(web, params={"path": mine[0]}, timeout=10)
    assert answer.status_code != 200
    assert "not for the cache" not in answer.text

    # Planted anywhere in data/ and tmp/, they are gone after a restart, and logged.
    os.symlink(tmp_path, data / "dir-link")
    os.symlink(secret, worker.cache_dir / "tmp" / "tmp-link")  # type: ignore[attr-defined]
    worker.stop()
    worker.start()
    assert not victim.is_symlink()
    assert not (data / "dir-link").exists()
    assert not (worker.cache_dir / "tmp" / "tmp-link").exists()  # type: ignore[attr-defined]
    assert secret.read_text() == "not for the cache"
    log = worker.log()
    assert "removed a symlink from the cache directory" in log
    assert json.dumps(str(victim))[1:-1] in log  # logs are JSON lines
    assert httpx.get(web, params={"path": mine[0]}, timeout=10).status_code == 404
    # The file is loaded again as a real copy.
    cluster.cli("job", "load", "--path", str(src), "--wait")
    assert httpx.get(web, params={"path": mine[0]}, timeout=10).content == \
        Path(mine[0]).read_bytes()


MIB = 1 << 20


def _push_body(port: int, headers: str, total: int) -> bytes:
    """Send a request with a ``total``-byte body as fast as the server takes it; return
    the answer. Stops sending once the server answers or hangs up."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(headers.encode())
        chunk = b"x" * MIB
        sent = 0
        sock.setblocking(False)
        answer = b""
        while sent < total:
            try:
                sent += sock.send(chunk[: min(MIB, total - sent)])
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                answer += sock.recv(65536)
                if answer:
                    break
            except BlockingIOError:
                continue
            except ConnectionResetError:
                break
        sock.setblocking(True)
        return answer + read_until_closed(sock)


def test_oversized_bodies_are_refused_unread(cluster: Cluster) -> None:
    coordinator = cluster.coordinators[0]
    port = coordinator.port  # type: ignore[attr-defined]
    before = peak_rss(coordinator)
    route = "POST /api/v1/master/submit_job/load HTTP/1.1\r\nHost: localhost\r\n" \
            "Content-Type: application/json\r\n"
    declared = _push_body(port, route + f"Content-Length: {200 * MIB}\r\n\r\n", 200 * MIB)
    chunked = _push_body(port, route + "Transfer-Encoding: chunked\r\n\r\n"
                         + f"{200 * MIB:x}\r\n", 200 * MIB)
    grew = peak_rss(coordinator) - before
    print(f"two 200 MiB bodies: the coordinator's peak RSS grew by {grew / MIB:.1f} MiB")
    assert grew < 16 * MIB, f"the coordinator's peak RSS grew by {grew / MIB:.1f} MiB"
    assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
    assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]
    assert b"limited to 1048576 bytes" in chunked
    assert coordinator.alive
    assert cluster.api("GET", "/api/v1/master/list_job").status_code == 200


@stray_client_sockets
def test_a_large_frame_before_the_hello_is_refused_unbuffered(cluster: Cluster) -> None:
    worker = cluster.workers[0]
    before = peak_rss(worker)

    async def big_frame_before_hello() -> str:
        url = f"ws://127.0.0.1:{worker.rpc_port}/"  # type: ignore[attr-defined]
        with trio.fail_after(60):
            async with open_websocket_url(url) as ws:
                try:
                    await ws.send_message(b"\x81" * (60 * MIB))
                    await ws.get_message()
                except ConnectionClosed as exc:
                    return f"closed {exc.reason.code if exc.reason else ''}"
        return "not closed"

    outcome = trio.run(big_frame_before_hello)
    gc.collect()
    grew = peak_rss(worker) - before
    print(f"a 60 MiB frame before the hello: the worker's peak RSS grew by {grew / MIB:.1f} MiB")
    assert grew < 16 * MIB, f"the worker's peak RSS grew by {grew / MIB:.1f} MiB"
    assert outcome == "closed 1009"  # message too big
    assert worker.alive
    assert httpx.get(cluster.url() + "/healthz", timeout=10).status_code == 200


def test_half_open_requests_are_dropped(cluster: Cluster) -> None:
    port = cluster.coordinators[0].port  # type: ignore[attr-defined]
    started = time.monotonic()
    # Headers that never end: the server hangs up (hypercorn's idle timer, 5 s).
    with socket.create_connection(("127.0.0.1", port), timeout=25) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        assert read_until_closed(sock) == b""
    # A body that stops half way: answered 408 (the body deadline, 10 s) and closed.
    with socket.create_connection(("127.0.0.1", port), timeout=25) as sock:
        sock.sendall(b"POST /api/v1/master/submit_job/load HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pa")
        answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    print(f"both half-open requests were dropped after {time.monotonic() - started:.1f}s")
    assert cluster.coordinators[0].alive


def test_protected_mode_refuses_pages_from_other_sites(cluster: Cluster, tmp_path: Path) -> None:
    """A loopback peer may be a browser running another site's page: in protected mode a
    request must name a local host (against DNS rebinding), and a POST must be JSON
    (a cross-site page cannot send that without a CORS preflight, which is not answered).
    Loopback clients of the cluster need nothing more: the defaults keep working."""
    src = tmp_path / "src"
    sizes = make_tree(src, 3)
    one = next(p for p, size in sizes.items() if size)
    listing: dict[str, Any] = json.loads(cluster.cli("job", "list", "--format", "JSON").stdout)
    assert listing == {"jobs": []}
    worker = cluster.workers[0]
    for base in (cluster.url(), f"http://127.0.0.1:{worker.web_port}"):  # type: ignore[attr-defined]
        for host in ("evil.example", "evil.example:19999", "127.0.0.1.evil.example"):
            answer = httpx.get(base + "/api/v1/files",
                               params={"path": one, "read_through": "true"},
                               headers={"Host": host}, timeout=10)
            assert answer.status_code == 403, (base, host, answer.text)
            assert "addressed to localhost or a loopback address only" in answer.text
        for host in ("localhost", "127.0.0.1:1", "[::1]:80"):
            assert httpx.get(base + "/healthz", headers={"Host": host},
                             timeout=10).status_code == 200
    rebound = _upgrade(f"ws://127.0.0.1:{worker.rpc_port}/", {"Host": "evil.example"})  # type: ignore[attr-defined]
    assert rebound.startswith("rejected 403"), rebound
    form = httpx.post(cluster.url() + "/api/v1/master/submit_job/load",
                      content=json.dumps({"path": str(src)}),
                      headers={"Content-Type": "text/plain"}, timeout=10)
    assert form.status_code == 400, form.text
    assert "Content-Type: application/json" in form.json()["message"]
    assert json.loads(cluster.cli("job", "list", "--format", "JSON").stdout) == {"jobs": []}
    wait_for(lambda: cluster.api("GET", "/api/v1/master/workers").json()["workers"][0][
        "connected"], 30, "the workers to connect")
