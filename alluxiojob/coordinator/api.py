"""The coordinator's REST API (JSON), modelled on Alluxio's ``/api/v1/master/*_job`` routes.

Errors are ``{"error": CODE, "message": text}`` with an HTTP status that matches the
code (400 bad argument, 404 not found, 409 wrong state, 429 queue full, 500 a bug,
503 store unavailable), so the CLI can map them to exit codes and users always see the
message that names the problem.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from dataclasses import replace
from typing import Any, Protocol

import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from alluxiojob.config import Config, Keys
from alluxiojob.coordinator.membership import Membership
from alluxiojob.coordinator.metrics import CoordinatorMetrics
from alluxiojob.coordinator.requests import (
    guarded,
    job_id_param,
    job_options,
    json_body,
    query_params,
    report_params,
)
from alluxiojob.coordinator.routes import ROUTES, openapi_document
from alluxiojob.coordinator.sources import check_index
from alluxiojob.coordinator.ui import FinalSummaries, ui_routes
from alluxiojob.coordinator.waiting import StateWaiter, wait_param
from alluxiojob.core.errors import (
    InvalidArgument,
    InvalidPath,
    NotFound,
    PermissionDenied,
    WrongState,
)
from alluxiojob.core.job import (
    SOURCE_FIELDS,
    JobRecord,
    JobType,
    source_of,
)
from alluxiojob.core.manifest import parse_template
from alluxiojob.core.progress import Progress, average_rate, eta_seconds, failure_ratio
from alluxiojob.core.report import progress_text
from alluxiojob.core.states import ACTIVE_STATES, COMPLETED_STATES, OWNED_STATES, JobState
from alluxiojob.core.text import printable
from alluxiojob.security import Security
from alluxiojob.security.paths import PathNotAllowed, transfer_overlap
from alluxiojob.store.jobs import JobStore
from alluxiojob.store.shards import ShardStore
from alluxiojob.ufs import resolve_path, ufs_for
from alluxiojob.ufs.settings import UfsSettings

log = structlog.get_logger("alluxiojob.coordinator")

SUCCESS_LIST_MAX = 1000
OVERVIEW_LIMIT = 200  # jobs in one jobs_overview answer, most recently updated first


class SchedulerControl(Protocol):
    def notify(self) -> None:
        """A job was queued: look at the queue now."""

    def cancel(self, job_id: str) -> bool:
        """Stop running ``job_id`` here, if this coordinator runs it."""


class CoordinatorView(Protocol):
    """What the REST API uses of the coordinator, and nothing more."""

    @property
    def store(self) -> JobStore: ...
    @property
    def config(self) -> Config: ...
    @property
    def ha(self) -> bool: ...
    @property
    def coordinator_id(self) -> str: ...
    @property
    def store_type(self) -> str: ...
    @property
    def metrics(self) -> CoordinatorMetrics: ...
    @property
    def membership(self) -> Membership: ...
    @property
    def scheduler(self) -> SchedulerControl: ...
    @property
    def security(self) -> Security: ...

    async def report(self) -> dict[str, Any]: ...

    async def cached_under(self, path: str, limit: int) -> list[dict[str, Any]]: ...

    async def refresh_metrics(self) -> None: ...

    async def store_health(self) -> dict[str, Any]: ...



def progress_report(job: JobRecord, progress: Progress, now: float) -> dict[str, Any]:
    if job.state not in OWNED_STATES:
        progress = progress.settled()  # no owner: nothing of it is running now
    live = progress.live
    eta = eta_seconds(progress) if job.state in (JobState.RUNNING, JobState.VERIFYING) else None
    stored = progress.to_wire()
    stored["checkpoint"] = [printable(part) for part in stored["checkpoint"]]
    return {
        "job": job.to_wire(),
        "progress": stored,
        "files": {
            "listed": live.files_listed,
            "processed": live.files_processed,
            "skipped": live.files_skipped,
            "failed": live.files_failed,
            "done": live.files_done,
            # a manifest or template job knows its total before the listing ends
            "total": progress.files_total or live.files_listed,
        },
        "bytes": {
            "listed": live.bytes_listed,
            "processed": live.bytes_processed,
            "skipped": live.bytes_skipped,
            "total": progress.bytes_total or live.bytes_listed,
        },
        "total_known": (not job.options.partial_listing and progress.listing_done
                        or bool(progress.files_total)),
        "elapsed_seconds": progress.active_seconds,
        "throughput_avg": average_rate(live.bytes_processed, progress.active_seconds),
        "throughput_recent": progress.recent_rate,
        "eta_seconds": eta,
        "file_failure_ratio": failure_ratio(live),
        "subtask_failures": live.subtasks_failed,
        "verify_passes": progress.verify_passes,
        "files_repaired": progress.files_repaired,
        "workers": list(progress.workers),
        "tasks": stored["tasks"],
        "reported_at": now,
    }


class CoordinatorApi:
    def __init__(self, service: CoordinatorView) -> None:
        self.service = service
        self.store: JobStore = service.store
        self.config = service.config
        self.ufs_settings = UfsSettings.from_config(service.config)
        self.summaries = FinalSummaries()
        self.waiter = StateWaiter(self.store, cap=self.config[Keys.PROGRESS_WAIT_MAX])

    # ------------------------------------------------------------------ helpers
    async def _resolve(self, raw: Any, *, must_exist: bool, confine: bool = False,
                       what: str = "path", field: str = "path") -> str:
        if raw is None or raw == "":
            raise InvalidArgument(f"missing {field}")
        if not isinstance(raw, str):
            raise InvalidArgument(f"{field} must be a string, got {type(raw).__name__}")
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(
                f"path {printable(raw)!r} is not valid UTF-8 (it holds a lone surrogate)"
            ) from None
        uri = resolve_path(raw, self.config[Keys.UFS_ROOT])
        if confine:
            # Before the existence check: outside the allowlist, even that is not told.
            allowlist = self.service.security.allowlist
            try:
                await trio.to_thread.run_sync(allowlist.check, uri, what)
            except PathNotAllowed as exc:
                raise PermissionDenied(str(exc)) from None
        if must_exist:
            exists = await trio.to_thread.run_sync(ufs_for(uri, self.ufs_settings).exists, uri)
            if not exists:
                raise NotFound(f"path does not exist: {uri}")
        return uri

    async def _find(self, job_type: JobType, params: dict[str, Any]) -> JobRecord:
        if params.get("id"):
            return (await self.store.get(job_id_param(params["id"]))).job
        source, raw = source_of(params)
        path = await self._resolve(raw, must_exist=False, field=SOURCE_FIELDS[source])
        dst = (await self._resolve(params["dst"], must_exist=False, field="dst")
               if params.get("dst") else "")
        return (await self.store.find(job_type, path, dst)).job

    async def _manifest_job(self, job_type: JobType, source: str, raw: Any) -> str:
        """The path of a LOAD from an index file or a template, checked before it is
        queued: the index file (whole, when small) or the template, and the allowlist."""
        if job_type is not JobType.LOAD:
            raise InvalidArgument(f"indexFile and template make LOAD jobs, not "
                                  f"{job_type.value} jobs")
        field = SOURCE_FIELDS[source]
        if source == "template":
            if not isinstance(raw, str):
                raise InvalidArgument("template must be a string")
            parse_template(raw)  # names the mistake before anything else
            path = await self._resolve(raw, must_exist=False, field=field)
            template = parse_template(path)
            allowlist = self.service.security.allowlist
            try:  # names differ only in digits: the first and the last stand for all
                for index in (0, template.total - 1):
                    await trio.to_thread.run_sync(allowlist.check, template.name(index),
                                                  "source")
            except PathNotAllowed as exc:
                raise PermissionDenied(str(exc)) from None
        else:
            path = await self._resolve(raw, must_exist=True, confine=True,
                                       what="index file", field=field)
            await trio.to_thread.run_sync(check_index, path, self.config)
        try:  # the identity (LOAD, path) must not be a running LOAD of another kind
            other = (await self.store.find(job_type, path)).job
        except NotFound:
            return path
        if ((other.state in ACTIVE_STATES or other.state is JobState.STOPPED)
                and other.options.source != source):
            kind = f"from its {other.options.source}" if other.options.source else "as a path"
            raise WrongState(f"a LOAD of {printable(path)} {kind} is {other.state.value}; "
                             "stop it first")
        return path

    # ------------------------------------------------------------------ routes
    async def submit(self, request: Request) -> Response:
        job_type = JobType.parse(request.path_params["type"])
        body = await json_body(request)
        source, raw = source_of(body)
        options = job_options(body.get("options"))
        if source:
            path = await self._manifest_job(job_type, source, raw)
            options = replace(options, source=source)  # not a user option (see _options)
        else:
            path = await self._resolve(raw, must_exist=True, confine=True, what="source")
        dst = ""
        if job_type in (JobType.COPY, JobType.MOVE):
            if not body.get("dst"):
                raise InvalidArgument(f"a {job_type.value} job needs a destination (dst)")
            dst = await self._resolve(body.get("dst"), must_exist=False, confine=True,
                                      what="destination", field="dst")
            overlap = await trio.to_thread.run_sync(transfer_overlap, path, dst)
            if overlap is not None:
                raise InvalidPath(f"{overlap}; nothing was submitted")
        if options.metadata_only and job_type is not JobType.LOAD:
            raise InvalidArgument(f"metadata_only (loadMetadataOnly) is a LOAD option, not "
                                  f"one of {job_type.value}")
        job, outcome = await self.store.submit(
            job_type, path, dst, options, self.config[Keys.WAITING_JOB_CAPACITY]
        )
        self.service.scheduler.notify()
        return JSONResponse({"id": job.id, "outcome": outcome.value, "job": job.to_wire()})

    async def progress(self, request: Request) -> Response:
        job_type = JobType.parse(request.path_params["type"])
        params = await query_params(request)
        shown = report_params(params)  # bad parameters are named before any lookup
        wait = wait_param(params)
        job = await self.waiter.until_changed(await self._find(job_type, params), wait)
        return await self._progress_of(job, *shown)

    async def job_progress(self, request: Request) -> Response:
        params = await query_params(request)
        shown, wait = report_params(params), wait_param(params)
        job = (await self.store.get(request.path_params["id"])).job
        return await self._progress_of(await self.waiter.until_changed(job, wait), *shown)

    async def _progress_of(self, job: JobRecord, output: str, status: str,
                           verbose: bool) -> Response:
        """The progress report as JSON, or with ``format=TEXT`` as the CLI prints it."""
        report = progress_report(job, await self.store.get_progress(job.id), time.time())
        shards = await ShardStore(self.store).of_job(job.id)
        if shards:
            report["shards"] = [shard.summary() for shard, _ in shards]
        if status == "SUCCESS":
            report["successes"] = await self.service.cached_under(job.path, SUCCESS_LIST_MAX)
        if status == "FAILURE" or verbose:
            limit = 0 if status == "FAILURE" else 20
            report["failures"] = [
                {"path": f.path, "reason": f.reason, "message": f.message, "time": f.time}
                for f in await self.store.list_failures(job.id, limit)
            ]
        if output == "TEXT":
            return PlainTextResponse(progress_text(report, verbose) + "\n")
        return JSONResponse(report)

    async def stop(self, request: Request) -> Response:
        job_type = JobType.parse(request.path_params["type"])
        body = await json_body(request)
        job = await self._find(job_type, body)
        stopped = await self.store.stop(job.type, job.path, job.dst)
        self.service.scheduler.cancel(stopped.id)
        return JSONResponse({"id": stopped.id, "job": stopped.to_wire()})

    async def rerun(self, request: Request) -> Response:
        if not self.service.ha:
            raise WrongState("UnavailableException: Job ETCD is not enabled")
        body = await json_body(request)
        job_type = None
        if "type" in body or not body.get("id"):  # a type given beside an id must be one too
            job_type = JobType.parse(str(body.get("type", "")))
        if body.get("id"):
            job_id = job_id_param(body["id"])
        else:
            assert job_type is not None
            job_id = (await self._find(job_type, body)).id
        job = await self.store.rerun(job_id)
        self.service.scheduler.notify()
        return JSONResponse({"id": job.id, "job": job.to_wire()})

    async def list_jobs(self, request: Request) -> Response:
        params = request.query_params
        state = params.get("job-state") or params.get("state")
        job_type = params.get("job-type") or params.get("type")
        owner = params.get("coordinator")
        try:
            state_filter = JobState(state.upper()) if state else None
        except ValueError:
            raise InvalidArgument(
                f"unknown job state {state!r}; expected one of "
                + ", ".join(s.value for s in JobState)
            ) from None
        jobs = await self.store.list_jobs(
            state=state_filter,
            job_type=JobType.parse(job_type) if job_type else None,
            owner=owner,
        )
        return JSONResponse({"jobs": [job.to_wire() for job in jobs]})

    async def jobs_overview(self, request: Request) -> Response:
        """The web page's job list: counts by state and recent jobs with their progress."""
        params = request.query_params
        state, job_type = params.get("state"), params.get("type")
        try:
            state_filter = JobState(state.upper()) if state else None
            limit = int(params.get("limit") or OVERVIEW_LIMIT)
        except ValueError:
            raise InvalidArgument(f"bad state {state!r} or limit {params.get('limit')!r}; "
                                  "states: " + ", ".join(s.value for s in JobState)) from None
        jobs = await self.store.list_jobs(job_type=JobType.parse(job_type) if job_type
                                          else None)
        counts = Tally(job.state.value for job in jobs)
        shown = [job for job in jobs if state_filter is None or job.state is state_filter]
        shown.sort(key=lambda job: job.updated_at, reverse=True)
        now = time.time()
        summaries = [await self._summary(job, now)
                     for job in shown[:max(1, min(limit, OVERVIEW_LIMIT))]]
        return JSONResponse({
            "coordinator": self.service.coordinator_id,
            "store": self.service.store_type,
            "counts": {s.value: counts.get(s.value, 0) for s in JobState},
            "matching": len(shown),
            "jobs": summaries,
        })

    async def _summary(self, job: JobRecord, now: float) -> dict[str, Any]:
        cached = self.summaries.get(job.id, job.updated_at)
        if cached is not None:
            return cached
        report = progress_report(job, await self.store.get_progress(job.id), now)
        summary = {key: report[key] for key in (
            "job", "files", "bytes", "total_known", "elapsed_seconds", "throughput_avg",
            "throughput_recent", "eta_seconds")}
        if job.state in COMPLETED_STATES:
            self.summaries.put(job.id, job.updated_at, summary)
        return summary

    async def get_job(self, request: Request) -> Response:
        owned = await self.store.get(request.path_params["id"])
        return JSONResponse({"job": owned.job.to_wire()})

    async def workers(self, request: Request) -> Response:
        """Members, their web addresses and, for ``path``, its owners in ring order."""
        membership = self.service.membership
        answer: dict[str, Any] = {"workers": [
            {"worker": worker_id, "connected": client.connected, "web": client.web_url}
            for worker_id, client in sorted(membership.clients.items())
        ]}
        if request.query_params.get("path"):
            uri = await self._resolve(request.query_params["path"], must_exist=False)
            answer["path"] = uri
            answer["owners"] = membership.ring.owners(uri, len(membership.ring))
        return JSONResponse(answer)

    async def report(self, request: Request) -> Response:
        return JSONResponse(await self.service.report())

    async def metrics(self, request: Request) -> Response:
        await self.service.refresh_metrics()
        return Response(generate_latest(self.service.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        """200 while the job store takes writes; 503 naming the store and its error."""
        health = await self.service.store_health()
        ok = health["store_ok"]
        body = {"status": "ok" if ok else "unavailable",
                "coordinator": self.service.coordinator_id,
                "store": self.service.store_type, **health}
        if not ok:  # also the shape of every other error answer
            body |= {"error": "UNAVAILABLE", "message": health["store_error"]}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self._openapi)

    def app(self) -> Starlette:
        """The routes of ``routes.ROUTES``, each with its handler, behind ``guarded``."""
        self._openapi = openapi_document(ROUTES)
        routes = [Route(r.path, guarded(getattr(self, r.handler)), methods=[r.method])
                  for r in ROUTES]
        routes += ui_routes()
        return Starlette(routes=routes)
