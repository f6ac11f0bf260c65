"""A real S3 API server on loopback for tests and benchmarks: moto, in its own process.

``S3Server`` runs moto's S3 service (its werkzeug app, in a threaded WSGI server) in a
subprocess, so that its CPU does not share a GIL with the process that drives it. A thin
WSGI wrapper in front of moto adds what a test or a benchmark needs from a real object
store and moto does not do by itself:

* a fixed **latency** per request (a sleep in the request's own server thread), since
  the kernel here has no netem: ``set_latency(0.02)``;
* **credentials**: a request signed with another access key id gets S3's
  ``403 InvalidAccessKeyId`` (moto accepts any key);
* injected **faults**: ``throttle(n)`` answers the next ``n`` matching requests with
  ``503 SlowDown``; ``deny(prefix)`` answers ``403 AccessDenied`` for keys under a
  prefix; ``rewrite_before_get(bucket, key, n, data)`` replaces an object just before
  its ``n``-th GET is answered, as a writer racing a reader would.

It is plain synchronous code, and a context manager::

    with S3Server() as server:
        server.create_bucket("data")
        server.put("data", "a/b.bin", b"...")
        props = server.properties()   # alluxiojob properties pointing at it
        server.set_latency(0.02)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from alluxiojob.testing.ports import free_port
from alluxiojob.testing.processes import ServerProcess, reap

CONTROL_PATH = "/__alluxiojob_test__/faults"
ACCESS_KEY = "alluxiojob-test-key"
SECRET_KEY = "alluxiojob-test-secret-d0n0tl0g"
REGION = "us-east-1"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def s3_properties(url: str, region: str, access_key: str, secret_key: str) -> dict[str, str]:
    """alluxiojob properties that point at the S3 API at ``url`` (path-style)."""
    return {
        "alluxio.underfs.s3.endpoint": url,
        "alluxio.underfs.s3.region": region,
        "alluxio.underfs.s3.disable.dns.buckets": "true",
        "s3a.accessKeyId": access_key,
        "s3a.secretKey": secret_key,
    }


def rclone_env(remote: str, url: str, region: str, access_key: str,
               secret_key: str) -> dict[str, str]:
    """Environment that defines an rclone remote named ``remote`` for the S3 API at ``url``."""
    prefix = f"RCLONE_CONFIG_{remote.upper()}_"
    return {
        prefix + "TYPE": "s3",
        prefix + "PROVIDER": "Other",
        prefix + "ENDPOINT": url,
        prefix + "ACCESS_KEY_ID": access_key,
        prefix + "SECRET_ACCESS_KEY": secret_key,
        prefix + "REGION": region,
        prefix + "FORCE_PATH_STYLE": "true",
    }


def boto3_client(url: str, region: str, access_key: str, secret_key: str) -> Any:
    """A boto3 S3 client for the S3 API at ``url`` (boto3 comes with moto)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=url, region_name=region,
        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=64,
                      retries={"max_attempts": 10, "mode": "standard"}),
    )


# ============================================================================ server side
class _Faults:
    """The wrapper's mutable settings, changed at run time through ``CONTROL_PATH``."""

    def __init__(self, latency: float, access_key: str) -> None:
        self.lock = threading.Lock()
        self.latency = latency
        self.access_key = access_key
        self.throttle = 0
        self.throttle_method = ""
        self.throttle_match = ""
        self.deny: list[str] = []
        self.deny_lists: list[str] = []  # buckets whose listings are refused
        self.rewrites: dict[str, tuple[int, bytes]] = {}  # "/bucket/key" -> (gets left, data)
        self.requests = 0
        self.object_gets = 0  # GETs of an object (not listings)

    def update(self, body: dict[str, Any]) -> None:
        with self.lock:
            if "latency" in body:
                self.latency = float(body["latency"])
            if "throttle" in body:
                self.throttle = int(body["throttle"])
                self.throttle_method = str(body.get("method", ""))
                self.throttle_match = str(body.get("match", ""))
            if "deny" in body:
                self.deny = [str(p) for p in body["deny"]]
            if "deny_lists" in body:
                self.deny_lists = [str(b) for b in body["deny_lists"]]
            if "rewrite" in body:
                item = body["rewrite"]
                self.rewrites[str(item["path"])] = (int(item["gets"]),
                                                    bytes.fromhex(str(item["data"])))
            if body.get("reset"):
                self.throttle, self.deny, self.deny_lists, self.rewrites = 0, [], [], {}


def _error(start_response: Callable[..., Any], status: str, code: str,
           message: str) -> list[bytes]:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
    start_response(status, [("Content-Type", "application/xml"),
                            ("Content-Length", str(len(body)))])
    return [body]


def _access_key_of(environ: dict[str, Any]) -> str | None:
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    marker = "Credential="
    if marker not in auth:
        return None
    return auth.split(marker, 1)[1].split("/", 1)[0]


def wrap(app: WsgiApp, faults: _Faults) -> WsgiApp:
    """moto's app behind latency, credential checks and injected faults."""

    def rewrite(path: str, data: bytes) -> None:
        from werkzeug.test import EnvironBuilder

        # moto refuses anonymous writes; it does not check signatures.
        auth = (f"AWS4-HMAC-SHA256 Credential={faults.access_key or 'test'}/20260101/"
                f"{REGION}/s3/aws4_request, SignedHeaders=host, Signature=0")
        environ = EnvironBuilder(method="PUT", path=path, data=data, base_url="http://127.0.0.1",
                                 headers=[("Authorization", auth)]).get_environ()
        for _ in app(environ, lambda *args, **kwargs: None):
            pass

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        method = str(environ.get("REQUEST_METHOD", ""))
        if path == CONTROL_PATH:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            faults.update(json.loads(environ["wsgi.input"].read(length) or b"{}"))
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"requests": faults.requests,
                                "object_gets": faults.object_gets}).encode()]
        with faults.lock:
            faults.requests += 1
            if method == "GET" and "list-type" not in str(environ.get("QUERY_STRING", "")):
                faults.object_gets += 1
            latency = faults.latency
            throttled = (faults.throttle > 0
                         and (not faults.throttle_method or faults.throttle_method == method)
                         and faults.throttle_match in path)
            if throttled:
                faults.throttle -= 1
            denied = any(path.startswith(prefix) for prefix in faults.deny) or (
                "list-type" in str(environ.get("QUERY_STRING", ""))
                and path.strip("/") in faults.deny_lists)
            rewrite_data: bytes | None = None
            if method == "GET" and path in faults.rewrites:
                left, data = faults.rewrites[path]
                if left <= 1:
                    del faults.rewrites[path]
                    rewrite_data = data
                else:
                    faults.rewrites[path] = (left - 1, data)
        if latency > 0:
            time.sleep(latency)
        key = _access_key_of(environ)
        if faults.access_key and key is not None and key != faults.access_key:
            return _error(start_response, "403 Forbidden", "InvalidAccessKeyId",
                          "The AWS Access Key Id you provided does not exist in our records.")
        if throttled:
            return _error(start_response, "503 Slow Down", "SlowDown",
                          "Please reduce your request rate.")
        if denied:
            return _error(start_response, "403 Forbidden", "AccessDenied", "Access Denied")
        if rewrite_data is not None:
            rewrite(path, rewrite_data)
        return app(environ, start_response)

    return wrapped


def serve(port: int, latency: float, access_key: str) -> None:
    """Run the server in this process until SIGTERM."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):
        """No line per request: at thousands of requests a second it costs the server CPU."""

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    faults = _Faults(latency, access_key)
    # moto's S3 app itself, not moto's dispatcher: the dispatcher picks a service for
    # every request under one global lock, and lists moto's package directory on the way
    # (a stat per service), so with many requests in flight its threads convoy on that
    # lock and the GIL. This server speaks only S3.
    app = wrap(create_backend_app("s3"), faults)
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=QuietHandler)
    server.daemon_threads = True  # type: ignore[attr-defined]
    server.request_queue_size = 1024
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


# ============================================================================ client side
class S3Server(ServerProcess):
    """moto's S3 API in a subprocess on ``127.0.0.1``. See the module docstring."""

    def __init__(self, *, latency: float = 0.0, access_key: str = ACCESS_KEY,
                 secret_key: str = SECRET_KEY, log_path: str | None = None,
                 startup_timeout: float = 60.0) -> None:
        super().__init__()
        self.port = free_port()
        self.latency = latency
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = REGION
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self._client: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "alluxiojob.testing.s3", "--port", str(self.port),
                 "--latency", str(self.latency), "--access-key", self.access_key],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        finally:
            if not isinstance(log, int):
                log.close()
        self._launched(process, reap)
        self._await_answer(lambda: self._control({}), "the S3 server")

    # ------------------------------------------------------------------ faults
    def _control(self, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.url + CONTROL_PATH, data=json.dumps(body).encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def set_latency(self, seconds: float) -> None:
        self.latency = seconds
        self._control({"latency": seconds})

    def throttle(self, count: int, method: str = "", match: str = "") -> None:
        """Answer the next ``count`` requests (of ``method``, whose path holds ``match``)
        with ``503 SlowDown``."""
        self._control({"throttle": count, "method": method, "match": match})

    def deny(self, *prefixes: str) -> None:
        """``403 AccessDenied`` for request paths starting with ``/bucket/prefix``."""
        self._control({"deny": list(prefixes)})

    def deny_listing(self, *buckets: str) -> None:
        """``403 AccessDenied`` for listings of these buckets (reads still work)."""
        self._control({"deny_lists": list(buckets)})

    def rewrite_before_get(self, bucket: str, key: str, gets: int, data: bytes) -> None:
        """Replace ``key`` with ``data`` just before its ``gets``-th GET is answered."""
        self._control({"rewrite": {"path": f"/{bucket}/{key}", "gets": gets,
                                   "data": data.hex()}})

    def reset_faults(self) -> None:
        self._control({"reset": True})

    def request_count(self) -> int:
        return int(self._control({})["requests"])

    def object_get_count(self) -> int:
        """GET requests of objects so far (listings are not counted)."""
        return int(self._control({})["object_gets"])

    # ------------------------------------------------------------------ configuration
    def properties(self) -> dict[str, str]:
        """alluxiojob properties that point at this server."""
        return s3_properties(self.url, self.region, self.access_key, self.secret_key)

    def rclone_env(self, remote: str) -> dict[str, str]:
        """Environment that defines an rclone remote named ``remote`` for this server."""
        return rclone_env(remote, self.url, self.region, self.access_key, self.secret_key)

    # ------------------------------------------------------------------ data (boto3)
    def client(self) -> Any:
        """A boto3 S3 client for this server (boto3 comes with moto)."""
        if self._client is None:
            self._client = boto3_client(self.url, self.region, self.access_key,
                                        self.secret_key)
        return self._client

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.client().head_object(Bucket=bucket, Key=key)
        return answer

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        found: list[str] = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return found

    def put_many(self, bucket: str, objects: dict[str, bytes], threads: int = 32) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(self.put, bucket, key, data)
                           for key, data in objects.items()]:
                future.result()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto's S3 API with latency and faults")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--access-key", default=ACCESS_KEY)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_S3_DEFAULT_MAX_KEYS", "1000")
    serve(args.port, args.latency, args.access_key)


if __name__ == "__main__":
    main()

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "S3Server", "boto3_client",
           "rclone_env", "s3_properties"]
