"""A fast read-only S3 API server on loopback for benchmarks: nginx with its Lua module.

moto (``alluxiojob.testing.s3``) is the S3 of the correctness tests: it does everything,
but it spends about 2 ms of CPU per request, so a benchmark against it measures moto.
``NginxS3Server`` serves the same API for reading at about a twentieth of that (0.1 ms
per request for small objects, on a busy 2-core machine), so that the clients are what
a benchmark measures:

* objects are files under ``data/<bucket>/<key>`` in the server's work dir (write them
  with ``put`` or directly, before ``start``); nginx serves GET and HEAD, path-style
  ``/bucket/key``, with ``ETag`` (nginx's own: ``"<mtime hex>-<size hex>"``),
  ``Last-Modified``, ``Content-Length``, ``Accept-Ranges``, ranges (206, 416) and
  ``If-Match`` (412); a missing key is S3's ``404 NoSuchKey``;
* ``GET /bucket?list-type=2`` is ListObjectsV2 (``prefix``, ``delimiter``,
  ``continuation-token``, ``start-after``, ``max-keys`` up to 1000, ``encoding-type=url``),
  and ``GET /bucket`` ListObjects v1 (``marker``), answered by Lua
  (``s3_nginx.lua``) from a sorted index of the keys that ``start`` writes; ``HEAD
  /bucket`` is HeadBucket;
* ``put_listing`` adds a listing-only bucket: its keys are in the index, so listings
  name them, but there is no file behind them (a GET or HEAD is ``404``); a listing
  benchmark of millions of keys costs no file per key;
* a latency added to every request (``latency=``, ``set_latency``): a non-blocking
  ``ngx.sleep`` in the access phase, so thousands of requests wait at once.

It checks no signature (clients sign with any key, or not at all) and writes nothing:
PUT and DELETE are ``405``. It listens on ``127.0.0.1`` only. Needs Debian's ``nginx``
(or ``nginx-light``) and ``libnginx-mod-http-lua``; ``available()`` says whether they are
there::

    server = NginxS3Server(workdir)
    server.put("data", "a/b.bin", b"...")
    with server:
        props = server.properties()   # alluxiojob properties pointing at it
        server.set_latency(0.02)
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alluxiojob.testing.ports import free_port
from alluxiojob.testing.processes import ServerProcess
from alluxiojob.testing.s3 import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    boto3_client,
    rclone_env,
    s3_properties,
)

MODULES = Path("/usr/lib/nginx/modules")
LUA_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")
CONTROL_PATH = "/_control/latency"  # "_" cannot start a bucket name
STATUS_PATH = "/_control/status"
_LUA_SOURCE = Path(__file__).with_name("s3_nginx.lua")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,62}$")

_CONFIG = """\
{user}worker_processes {workers};
daemon off;
master_process on;
pid nginx.pid;
error_log stderr warn;
{modules}
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
    server_tokens off;
    types {{ }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    lua_package_path "$prefix/?.lua;;";
    lua_shared_dict s3config 64k;
    init_by_lua_block {{
        s3 = require("s3_nginx")
        s3.init(ngx.config.prefix(), {{{buckets}}})
        ngx.shared.s3config:set("latency", {latency!r})
    }}
    init_worker_by_lua_block {{ s3.init_worker() }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root data;
        disable_symlinks on;
        log_not_found off;
        access_by_lua_block {{ s3.delay() }}
        error_page 403 @denied;
        error_page 404 @nosuchkey;
        error_page 405 @readonly;
        location = {control} {{
            access_by_lua_block {{ return }}
            content_by_lua_block {{ s3.control() }}
        }}
        location = {status} {{
            access_by_lua_block {{ return }}
            stub_status;
        }}
        location ~ "^/(?<bucket>[^/]+)/?$" {{
            content_by_lua_block {{ s3.bucket() }}
        }}
        location / {{
            if ($request_method !~ ^(GET|HEAD)$) {{
                return 405;
            }}
            try_files $uri =404;
        }}
        location @nosuchkey {{
            access_by_lua_block {{ return }}
            content_by_lua_block {{
                s3.error(404, "NoSuchKey", "The specified key does not exist.")
            }}
        }}
        location @denied {{
            access_by_lua_block {{ return }}
            content_by_lua_block {{ s3.error(403, "AccessDenied", "Access Denied") }}
        }}
        location @readonly {{
            keepalive_timeout 0;  # a request body may follow; do not read it as a request
            access_by_lua_block {{ return }}
            content_by_lua_block {{
                s3.error(405, "MethodNotAllowed", "this server is read-only")
            }}
        }}
    }}
}}
"""


def available() -> str | None:
    """``None`` if nginx and its Lua module are installed, else what is missing."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx is not installed (Debian: nginx-light)"
    missing = [m for m in LUA_MODULES if not (MODULES / m).exists()]
    if missing:
        return f"nginx's Lua module is not installed (Debian: libnginx-mod-http-lua): {missing}"
    return None


def _nginx() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def check_key(key: str) -> None:
    """A key this server can hold as a file: no empty, ``.`` or ``..`` segment, no
    control character (the index is a line per key, a tab between its fields)."""
    if not key or any(s in ("", ".", "..") for s in key.split("/")) or any(
            ord(c) < 32 or c == "\x7f" for c in key):
        raise ValueError(f"the key {key!r} has an empty, '.' or '..' segment or a "
                         "control character")


def build_index(data: Path, index: Path) -> list[str]:
    """``index/<bucket>.tsv`` for each bucket directory under ``data``: a line per regular
    file, ``key<TAB>size<TAB>mtime`` (whole seconds, as nginx's ETag and Last-Modified
    have it), in byte order of the key. Returns the bucket names."""
    index.mkdir(parents=True, exist_ok=True)
    buckets = []
    with os.scandir(data) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        if not _BUCKET.match(entry.name):
            raise ValueError(f"not a bucket name: {entry.name!r}")
        rows = []
        base = len(entry.path) + 1
        for dirpath, dirnames, names in os.walk(entry.path):
            dirnames.sort()
            for name in names:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if not (st.st_mode & 0o170000 == 0o100000):  # regular files only
                    continue
                key = path[base:].replace(os.sep, "/")
                check_key(key)
                rows.append((key, st.st_size, int(st.st_mtime)))
        rows.sort()  # code point order is UTF-8 byte order
        with open(index / f"{entry.name}.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(f"{key}\t{size}\t{mtime}\n" for key, size, mtime in rows)
        buckets.append(entry.name)
    return buckets


def _descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (nginx's workers under its master)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Last resort: nginx's workers outlive a killed master, so the whole group goes."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.wait(timeout=5)


class NginxS3Server(ServerProcess):
    """nginx + Lua serving ``workdir/data`` as S3 on ``127.0.0.1``. See the module doc."""

    def __init__(self, workdir: Path | str, *, latency: float = 0.0, workers: int = 1,
                 log_path: str | None = None, startup_timeout: float = 30.0) -> None:
        super().__init__()
        self.workdir = Path(workdir).resolve()
        self.data = self.workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.latency = latency
        self.workers = workers
        self.access_key, self.secret_key, self.region = ACCESS_KEY, SECRET_KEY, REGION
        self.log_path = log_path or os.fspath(self.workdir / "nginx.log")
        self.startup_timeout = startup_timeout

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The master's pid; ``pids()`` adds its workers."""
        return self._process.pid if self._process is not None else None

    def pids(self) -> list[int]:
        if self._process is None:
            return []
        return [self._process.pid, *_descendants(self._process.pid)]

    # ------------------------------------------------------------------ data
    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Write an object (a file); listings see it after the next ``start``."""
        if not _BUCKET.match(bucket):
            raise ValueError(f"not a bucket name: {bucket!r}")
        check_key(key)
        path = self.data / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def put_listing(self, bucket: str, rows: Iterable[tuple[str, int, int]]) -> None:
        """A listing-only bucket of ``(key, size, mtime)`` rows (see the module doc);
        it replaces what ``data/<bucket>`` would list, after the next ``start``."""
        if not _BUCKET.match(bucket):
            raise ValueError(f"not a bucket name: {bucket!r}")
        checked = []
        for key, size, mtime in rows:
            check_key(key)
            checked.append((key, int(size), int(mtime)))
        checked.sort()  # code point order is UTF-8 byte order
        listings = self.workdir / "listings"
        listings.mkdir(exist_ok=True)
        with open(listings / f"{bucket}.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(f"{key}\t{size}\t{mtime}\n" for key, size, mtime in checked)

    # ------------------------------------------------------------------ lifecycle
    def _config(self, buckets: list[str]) -> str:
        user = ""
        if os.geteuid() == 0:  # the workers must read the data as its owner does
            user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n"
        modules = "\n".join(f"load_module {MODULES / m};" for m in LUA_MODULES)
        return _CONFIG.format(user=user, workers=self.workers, modules=modules,
                              buckets=", ".join(f'"{b}"' for b in buckets),
                              latency=float(self.latency), port=self.port,
                              control=CONTROL_PATH, status=STATUS_PATH)

    def start(self) -> None:
        missing = available()
        if missing:
            raise RuntimeError(missing)
        buckets = build_index(self.data, self.workdir / "index")
        listings = self.workdir / "listings"
        for listing in sorted(listings.glob("*.tsv")) if listings.is_dir() else []:
            shutil.copyfile(listing, self.workdir / "index" / listing.name)
            if listing.stem not in buckets:
                buckets.append(listing.stem)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_LUA_SOURCE, self.workdir / "s3_nginx.lua")
        conf = self.workdir / "nginx.conf"
        conf.write_text(self._config(buckets))
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                [_nginx(), "-p", f"{self.workdir}/", "-c", os.fspath(conf), "-e", "stderr"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self._launched(process, _kill_group)
        self._await_answer(lambda: self._control(""), "nginx")

    def _log_tail(self) -> str:
        try:
            return ": " + Path(self.log_path).read_text(errors="replace")[-2000:]
        except OSError:
            return ": (no log)"

    def _after_terminate(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM is nginx's fast shutdown (the workers go with the master); then the
        whole process group, whatever is left of it."""
        _kill_group(process)

    # ------------------------------------------------------------------ settings
    def _control(self, query: str) -> str:
        with urllib.request.urlopen(f"{self.url}{CONTROL_PATH}{query}", timeout=10) as answer:
            return str(answer.read().decode().strip())

    def set_latency(self, seconds: float) -> None:
        self._control(f"?seconds={float(seconds)!r}")
        self.latency = seconds

    def request_count(self) -> int:
        """Requests answered so far, by every worker (these status requests included)."""
        with urllib.request.urlopen(self.url + STATUS_PATH, timeout=10) as answer:
            lines = answer.read().decode().splitlines()
        return int(lines[2].split()[2])  # "accepts handled requests" then the numbers

    def properties(self) -> dict[str, str]:
        """alluxiojob properties that point at this server."""
        return s3_properties(self.url, self.region, self.access_key, self.secret_key)

    def rclone_env(self, remote: str) -> dict[str, str]:
        """Environment that defines an rclone remote named ``remote`` for this server."""
        return rclone_env(remote, self.url, self.region, self.access_key, self.secret_key)

    def client(self) -> Any:
        """A boto3 S3 client for this server (boto3 comes with moto)."""
        return boto3_client(self.url, self.region, self.access_key, self.secret_key)


__all__ = ["NginxS3Server", "available", "build_index"]
