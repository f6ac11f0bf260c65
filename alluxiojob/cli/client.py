"""The CLI's HTTP client for the coordinator REST API."""

from __future__ import annotations

from typing import Any

import httpx

from alluxiojob.config import Config, Keys
from alluxiojob.security import Security
from alluxiojob.ufs.base import printable


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
            raise ApiError("INVALID_PATH", f"{key} '{printable(value)}' is not valid UTF-8; "
                           "the job service takes paths as UTF-8 text", 400) from None


class CoordinatorClient:
    """Speaks to the coordinator with the cluster token and TLS of the same site file."""

    def __init__(self, config: Config, security: Security, timeout: float = 30.0) -> None:
        host = config[Keys.COORDINATOR_HOSTNAME]
        port = config[Keys.COORDINATOR_REST_PORT]
        self.security = security
        self.base = f"{security.tls.http_scheme}://{host}:{port}"
        self._http = httpx.Client(base_url=self.base, timeout=timeout,
                                  headers=security.token.authorization(),
                                  verify=security.tls.client_context() or True)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        _check_text(kwargs.get("params") or {})
        _check_text(kwargs.get("json") or {})
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(
                "UNAVAILABLE",
                f"cannot reach the coordinator at {self.base}: {exc}. Is it running? "
                "(alluxio.coordinator.hostname / alluxio.coordinator.rest.port)",
                0,
            ) from None
        try:
            body = response.json()
        except ValueError:
            raise ApiError("INTERNAL", f"coordinator answered {response.status_code} with "
                           "a body that is not JSON", response.status_code) from None
        if response.status_code >= 400:
            raise ApiError(str(body.get("error", "INTERNAL")),
                           str(body.get("message", response.text)), response.status_code)
        if not isinstance(body, dict):
            raise ApiError("INTERNAL", "unexpected response from the coordinator",
                           response.status_code)
        return body

    def submit(self, job_type: str, path: str, dst: str, options: dict[str, Any]
               ) -> dict[str, Any]:
        payload: dict[str, Any] = {"path": path, "options": options}
        if dst:
            payload["dst"] = dst
        return self._call("POST", f"/api/v1/master/submit_job/{job_type.lower()}", json=payload)

    def progress(self, job_type: str, path: str, dst: str = "", *, verbose: bool = False,
                 file_status: str = "") -> dict[str, Any]:
        params = {"path": path, "verbose": str(verbose).lower()}
        if dst:
            params["dst"] = dst
        if file_status:
            params["file_status"] = file_status
        return self._call("GET", f"/api/v1/master/progress_job/{job_type.lower()}",
                          params=params)

    def job_progress(self, job_id: str, *, verbose: bool = False) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/master/job/{job_id}/progress",
                          params={"verbose": str(verbose).lower()})

    def stop(self, job_type: str, path: str, dst: str = "") -> dict[str, Any]:
        payload = {"path": path, **({"dst": dst} if dst else {})}
        return self._call("POST", f"/api/v1/master/stop_job/{job_type.lower()}", json=payload)

    def rerun(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/v1/master/rerun_job", json=payload)

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
