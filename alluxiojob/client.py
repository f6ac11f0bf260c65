"""The HTTP client for the coordinator REST API: the CLI's, and the one a worker forwards
Alluxio's ``/v1/load`` with.

The standard library's ``http.client``, one keep-alive connection per command: an HTTP
library's import alone takes longer than a whole ``job list`` round trip should.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from typing import Any

from alluxiojob.config import Config, Keys
from alluxiojob.core.reasons import Reason
from alluxiojob.core.text import printable
from alluxiojob.security import Security


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def _check_text(fields: dict[str, Any]) -> None:
    """Raise ``INVALID_PATH`` naming a field whose text is not UTF-8.

    A file name given in bytes that are not UTF-8 (``$'/x/bad\\xff'``) reaches Python as
    a string with lone surrogates, which neither a URL nor JSON can carry."""
    for key, value in fields.items():
        if isinstance(value, dict):
            _check_text(value)
            continue
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(Reason.INVALID_PATH, f"{key} '{printable(value)}' is not valid UTF-8; "
                           "the job service takes paths as UTF-8 text", 400) from None


class CoordinatorClient:
    """Speaks to the coordinator with the cluster token and TLS of the same site file."""

    def __init__(self, config: Config, security: Security, timeout: float = 30.0) -> None:
        host = config[Keys.COORDINATOR_HOSTNAME]
        port = config[Keys.COORDINATOR_REST_PORT]
        self.security = security
        self.base = f"{security.tls.http_scheme}://{host}:{port}"
        self._headers = {"Accept": "application/json", **security.token.authorization()}
        self._connection: http.client.HTTPConnection
        if security.tls.http_scheme == "https":
            context = security.tls.client_context() or ssl.create_default_context()
            self._connection = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                           context=context)
        else:
            self._connection = http.client.HTTPConnection(host, port, timeout=timeout)
        self._used = False  # a request went over the connection: it may have gone stale

    def close(self) -> None:
        self._connection.close()

    def _exchange(self, method: str, target: str, body: bytes | None,
                  headers: dict[str, str]) -> tuple[int, bytes]:
        # A kept-alive connection the server closed in between fails on its next use,
        # before the server saw the request: then one new connection, once.
        for attempt in (1, 2):
            reused = self._used
            try:
                self._used = True
                self._connection.request(method, target, body=body, headers=headers)
                response = self._connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._connection.close()
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _call(self, method: str, url: str, *, params: dict[str, str] | None = None,
              json_body: Any = None) -> dict[str, Any]:
        _check_text(params or {})
        _check_text(json_body if isinstance(json_body, dict) else {})
        target = urllib.parse.quote(url, safe="/")
        if params:
            target += "?" + urllib.parse.urlencode(params)
        headers = dict(self._headers)
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        try:
            status, raw = self._exchange(method, target, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            self._connection.close()
            raise ApiError(
                "UNAVAILABLE",
                f"cannot reach the coordinator at {self.base}: {exc}. Is it running? "
                "(alluxio.coordinator.hostname / alluxio.coordinator.rest.port)",
                0,
            ) from None
        try:
            body_json = json.loads(raw)
        except ValueError:
            raise ApiError("INTERNAL", f"coordinator answered {status} with a body that is "
                           "not JSON", status) from None
        if status >= 400:
            if not isinstance(body_json, dict):
                body_json = {}
            raise ApiError(str(body_json.get("error", "INTERNAL")),
                           str(body_json.get("message", raw.decode(errors="replace"))), status)
        if not isinstance(body_json, dict):
            raise ApiError("INTERNAL", "unexpected response from the coordinator", status)
        return body_json

    def submit(self, job_type: str, path: str, dst: str, options: dict[str, Any],
               field: str = "path") -> dict[str, Any]:
        """``field``: what ``path`` is: a ``path``, an ``indexFile`` or a ``template``."""
        payload: dict[str, Any] = {field: path, "options": options}
        if dst:
            payload["dst"] = dst
        return self._call("POST", f"/api/v1/master/submit_job/{job_type.lower()}",
                          json_body=payload)

    def progress(self, job_type: str, path: str, dst: str = "", *, verbose: bool = False,
                 file_status: str = "", field: str = "path", wait: float = 0.0
                 ) -> dict[str, Any]:
        """``wait``: seconds the coordinator may hold the answer until the job's state
        changes (``coordinator/waiting.py``); a coordinator without it answers at once."""
        params = {field: path, "verbose": str(verbose).lower()}
        if wait:
            params["wait"] = f"{wait:g}"
        if dst:
            params["dst"] = dst
        if file_status:
            params["file_status"] = file_status
        return self._call("GET", f"/api/v1/master/progress_job/{job_type.lower()}",
                          params=params)

    def job_progress(self, job_id: str, *, verbose: bool = False) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/master/job/{job_id}/progress",
                          params={"verbose": str(verbose).lower()})

    def stop(self, job_type: str, path: str, dst: str = "", field: str = "path"
             ) -> dict[str, Any]:
        payload = {field: path, **({"dst": dst} if dst else {})}
        return self._call("POST", f"/api/v1/master/stop_job/{job_type.lower()}",
                          json_body=payload)

    def rerun(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/v1/master/rerun_job", json_body=payload)

    def list_jobs(self, state: str = "", job_type: str = "", coordinator: str = ""
                  ) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("job-state", state), ("job-type", job_type),
                                    ("coordinator", coordinator)) if v}
        jobs = self._call("GET", "/api/v1/master/list_job", params=params)["jobs"]
        return list(jobs)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/master/job/{job_id}")["job"])

    def workers(self, path: str = "") -> dict[str, Any]:
        return self._call("GET", "/api/v1/master/workers", params={"path": path} if path else {})

    def report(self) -> dict[str, Any]:
        return self._call("GET", "/api/v1/master/report")
