"""The coordinator's REST routes in one table, and the OpenAPI 3 document made from it.

``CoordinatorApi.app`` mounts ``ROUTES`` and ``openapi_document`` describes the same
table, so the served API and its description cannot drift apart. The schemas of stored
records come from their dataclasses (``JobRecord``, ``JobOptions``) and their bounds
from ``core.job``, not from a second copy written by hand. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass
from typing import Any

from alluxiojob.core.job import (
    OPTION_ALIASES,
    OPTION_BOUNDS,
    SOURCES,
    JobOptions,
    JobRecord,
    JobType,
)
from alluxiojob.core.states import JobState
from alluxiojob.security.access import PUBLIC_PATHS

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
PATH: Schema = {"type": "string", "minLength": 1, "pattern": "^[^\\x00]+$",
                "description": "A UFS URI or an absolute path; relative paths resolve under "
                               "alluxio.dora.client.ufs.root"}


def _any_case(values: list[str], empty: bool = False) -> Schema:
    """Case does not matter (and, for a filter, empty means none)."""
    spelled = sorted({v.upper() for v in values} | {v.lower() for v in values})
    return {"type": "string", "enum": ([""] if empty else []) + spelled}


JOB_TYPE = _any_case([t.value for t in JobType])
BOOLEAN_TEXT: Schema = _any_case(["true", "false"], empty=True)
FILE_STATUS: Schema = {**_any_case(["FAILURE", "SUCCESS"], empty=True),
                       "description": "Add the failed files, or the cached files (up to 1000)"}
ERROR: Schema = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string", "description": "A stable code, e.g. "
                                                             "INVALID_ARGUMENT"},
                   "message": {"type": "string", "description": "What went wrong, naming it"}},
}
ERROR_MEANINGS = {
    400: "Bad input (the message names it)",
    401: "No or wrong cluster token (Authorization: Bearer)",
    403: "Not a loopback peer while no token is set, or a path outside "
         "alluxio.job.path.allowlist",
    408: "The request body came too slowly",
    413: "The request body is too large",
    404: "No such job or path",
    409: "The job (or the service) is not in a state for this request",
    429: "The waiting queue is full",
    503: "The job store cannot be reached",
}


def _schema_of(hint: Any) -> Schema:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [member.value for member in hint]}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return {"$ref": f"#/components/schemas/{hint.__name__}"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    return dict(STRING)


def dataclass_schema(cls: type) -> Schema:
    """An object schema with one property per field of ``cls``, typed from its hints."""
    hints = typing.get_type_hints(cls)
    properties = {f.name: _schema_of(hints[f.name]) for f in dataclasses.fields(cls)}
    return {"type": "object", "properties": properties}


def options_schema() -> Schema:
    """Job options, with their bounds and Alluxio's spellings (``batchSize``...).

    Alluxio's clients send every value as a string (``"batchSize": "10"``,
    ``"verify": "true"``, ``"bandwidth": "100MiB"``), so each option also takes text.
    """
    schema = dataclass_schema(JobOptions)
    properties: dict[str, Schema] = schema["properties"]
    del properties["source"]
    for name, (low, high) in OPTION_BOUNDS.items():
        properties[name] = {**properties[name], "minimum": low, "maximum": high}
    for name, typed in list(properties.items()):
        properties[name] = {"anyOf": [typed, {"type": "string", "minLength": 1}]}
    for alias, name in OPTION_ALIASES.items():
        properties[alias] = {**properties[name], "description": f"Alluxio's spelling of {name}"}
    properties["source"] = {"type": "string", "enum": list(SOURCES), "readOnly": True,
                            "description": "Set from path, indexFile or template; a "
                                           "request may not give it"}
    schema["additionalProperties"] = False
    return schema


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: Schema
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: how a 200 answer's values feed another operation."""

    name: str
    handler: str  # the operation it leads to
    parameters: tuple[tuple[str, str], ...] = ()  # (name, runtime expression)
    body: tuple[tuple[str, str], ...] = ()  # request body fields


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str
    handler: str  # the CoordinatorApi method that serves it
    summary: str
    params: tuple[Param, ...] = ()
    body: Schema | None = None
    answer: Schema | None = None  # the 200 body (JSON) schema
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"
    links: tuple[Link, ...] = ()
    text_alternative: bool = False  # 200 may also be text/plain (``format=TEXT``)


def _job_answer() -> Schema:
    return {"type": "object", "required": ["id", "job"],
            "properties": {"id": STRING, "job": {"$ref": "#/components/schemas/JobRecord"}}}


def _job_ref() -> Schema:
    return {"$ref": "#/components/schemas/JobRecord"}


BASE = "/api/v1/master"
JOB_LINKS = (  # from an answer that names a job, to what can be done with it
    Link("GetJob", "get_job", (("id", "$response.body#/id"),)),
    Link("JobProgress", "job_progress", (("id", "$response.body#/id"),)),
    Link("StopJob", "stop", (("type", "$response.body#/job/type"),),
         (("id", "$response.body#/id"),)),
    Link("RerunJob", "rerun", body=(("id", "$response.body#/id"),)),
)
TYPE_PARAM = Param("type", "path", JOB_TYPE, required=True)
ID_PARAM = Param("id", "path", STRING, required=True, description="The job's UUID")
PROGRESS_PARAMS = (
    Param("verbose", "query", BOOLEAN_TEXT, description="Add the 20 most recent failures"),
    Param("file_status", "query", FILE_STATUS),
    Param("format", "query", _any_case(["JSON", "TEXT"], empty=True),
          description="TEXT: the report as the CLI prints it (text/plain)"),
    Param("wait", "query", {"type": "number", "minimum": 0},
          description="Seconds to hold the request until the job's state changes; the "
                      "coordinator caps it, and answers at once when many requests wait"),
)
PROGRESS_ANSWER: Schema = {
    "type": "object", "required": ["job", "progress", "files", "bytes"],
    "properties": {"job": _job_ref(), "progress": {"type": "object"},
                   "files": {"type": "object"}, "bytes": {"type": "object"},
                   "failures": {"type": "array", "items": {"type": "object"}},
                   "successes": {"type": "array", "items": {"type": "object"}}},
}
INDEX_FILE: Schema = {**PATH, "description": "LOAD: a file (local or on any UFS) listing "
                     "one path or URI a line, or an S3 Inventory manifest.json; in place "
                     "of path (Alluxio's indexFile)"}
TEMPLATE: Schema = {**PATH, "description": "LOAD: a path with brace ranges, "
                   "s3://b/shard-{000..999}.tar; in place of path"}
NAMED_BY: tuple[Schema, ...] = (  # a job's files: exactly one of these
    {"required": ["path"], "properties": {"path": PATH}},
    {"required": ["indexFile"], "properties": {"indexFile": INDEX_FILE}},
    {"required": ["template"], "properties": {"template": TEMPLATE}},
)
JOB_KEY_BODY: Schema = {
    "type": "object",
    "properties": {"id": STRING, "path": STRING, "dst": STRING, "indexFile": STRING,
                   "template": STRING},
    "anyOf": [{"required": ["id"], "properties": {"id": {"minLength": 1}}}, *NAMED_BY],
    "description": "The job, by id or by its path (and destination, for COPY and MOVE)",
}

ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute(
        "POST", f"{BASE}/submit_job/{{type}}", "submit",
        "Submit a job; an active job for the same path is returned instead "
        "(ALREADY_RUNNING), a STOPPED one resumes (RESUMED)",
        params=(TYPE_PARAM,),
        body={"type": "object", "anyOf": list(NAMED_BY),
              "properties": {"path": PATH, "indexFile": INDEX_FILE, "template": TEMPLATE,
                             "dst": {**PATH, "description": "COPY and MOVE: the destination"},
                             "options": {"$ref": "#/components/schemas/JobOptions"}}},
        answer={**_job_answer(), "properties": {
            **_job_answer()["properties"],
            "outcome": {"type": "string", "enum": ["CREATED", "ALREADY_RUNNING", "RESUMED"]}}},
        errors=(400, 404, 429, 503), links=JOB_LINKS,
    ),
    ApiRoute(
        "GET", f"{BASE}/progress_job/{{type}}", "progress",
        "Progress of the current job for a path",
        params=(TYPE_PARAM, Param("path", "query", PATH),
                Param("indexFile", "query", INDEX_FILE), Param("template", "query", TEMPLATE),
                Param("dst", "query", STRING), Param("id", "query", STRING),
                *PROGRESS_PARAMS),
        answer=PROGRESS_ANSWER, errors=(400, 404, 503), text_alternative=True,
    ),
    ApiRoute("POST", f"{BASE}/stop_job/{{type}}", "stop", "Stop an active job",
             params=(TYPE_PARAM,), body=JOB_KEY_BODY, answer=_job_answer(),
             errors=(400, 404, 409, 503), links=JOB_LINKS),
    ApiRoute(
        "POST", f"{BASE}/rerun_job", "rerun",
        "Put a job back in the queue (etcd job store only)",
        body={"type": "object",
              "properties": {**JOB_KEY_BODY["properties"], "type": JOB_TYPE},
              "anyOf": [{"required": ["id"], "properties": {"id": {"minLength": 1}}},
                        {"required": ["type", "path"], "properties": {"path": PATH}}],
              "description": "The job, by id or by its type and path (and destination)"},
        answer=_job_answer(), errors=(400, 404, 409, 503), links=JOB_LINKS,
    ),
    ApiRoute(
        "GET", f"{BASE}/list_job", "list_jobs", "Jobs in the retention window",
        params=(Param("job-type", "query", _any_case([t.value for t in JobType], empty=True)),
                Param("job-state", "query", _any_case([s.value for s in JobState], empty=True)),
                Param("coordinator", "query", STRING,
                      description="Only the jobs this coordinator id owns")),
        answer={"type": "object", "required": ["jobs"],
                "properties": {"jobs": {"type": "array", "items": _job_ref()}}},
        errors=(400, 503),
    ),
    ApiRoute("GET", f"{BASE}/job/{{id}}", "get_job", "One job by UUID", params=(ID_PARAM,),
             answer={"type": "object", "required": ["job"], "properties": {"job": _job_ref()}},
             errors=(404, 503)),
    ApiRoute("GET", f"{BASE}/job/{{id}}/progress", "job_progress",
             "Progress of one job by UUID", params=(ID_PARAM, *PROGRESS_PARAMS),
             answer=PROGRESS_ANSWER, errors=(400, 404, 503), text_alternative=True),
    ApiRoute("GET", f"{BASE}/jobs_overview", "jobs_overview",
             "The web page's job list: counts by state, recent jobs with their progress",
             params=(Param("state", "query", _any_case([s.value for s in JobState], empty=True)),
                     Param("type", "query", _any_case([t.value for t in JobType], empty=True)),
                     Param("limit", "query", {"type": "string", "pattern": "^[0-9]{0,6}$"},
                           description="At most this many jobs (up to 200)")),
             answer={"type": "object", "required": ["counts", "jobs"]}, errors=(400, 503)),
    ApiRoute("GET", f"{BASE}/report", "report",
             "report jobservice: workers, counts by state, notable jobs",
             answer={"type": "object", "required": ["workers", "counts"]}, errors=(503,)),
    ApiRoute("GET", f"{BASE}/workers", "workers",
             "Members, their web addresses and, for a path, its owners in ring order",
             params=(Param("path", "query", STRING),),
             answer={"type": "object", "required": ["workers"]}, errors=(400,)),
    ApiRoute("GET", "/healthz", "healthz", "Health of the coordinator and its job store",
             answer={"type": "object", "required": ["status", "store", "store_ok"]},
             errors=(503,)),
    ApiRoute("GET", "/metrics", "metrics", "Prometheus metrics", media_type="text/plain"),
    ApiRoute("GET", "/api/v1/openapi.json", "openapi", "This document",
             answer={"type": "object", "required": ["openapi", "paths"]}),
)


def _access_errors(route: ApiRoute) -> tuple[int, ...]:
    """What the security layer answers before a handler runs (see security/http.py)."""
    if route.path in PUBLIC_PATHS:
        return ()
    return (401, 403, 408, 413) if route.body is not None else (401, 403)


def _operation(route: ApiRoute) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.handler, "summary": route.summary}
    if route.params:
        operation["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.required, "schema": p.schema,
             **({"description": p.description} if p.description else {})}
            for p in route.params
        ]
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": route.body}}}
    ok: dict[str, Any] = {"description": "OK"}
    if route.media_type == "application/json":
        ok["content"] = {"application/json": {"schema": route.answer or {"type": "object"}}}
        if route.text_alternative:
            ok["content"]["text/plain"] = {"schema": STRING}
    else:
        ok["content"] = {route.media_type: {"schema": STRING}}
    if route.links:
        ok["links"] = {
            link.name: {"operationId": link.handler,
                        **({"parameters": dict(link.parameters)} if link.parameters else {}),
                        **({"requestBody": dict(link.body)} if link.body else {})}
            for link in route.links
        }
    responses: dict[str, Any] = {"200": ok}
    for status in _access_errors(route) + route.errors:
        responses[str(status)] = {
            "description": ERROR_MEANINGS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    operation["responses"] = responses
    return operation


def openapi_document(routes: tuple[ApiRoute, ...] = ROUTES, version: str = "0") -> Schema:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "alluxiojob coordinator", "version": version,
                 "description": "Errors are {\"error\": CODE, \"message\": text} with a "
                                "matching HTTP status."},
        "paths": paths,
        "components": {"schemas": {
            "Error": ERROR,
            "JobOptions": options_schema(),
            "JobRecord": dataclass_schema(JobRecord),
        }},
    }


__all__ = ["ROUTES", "ApiRoute", "Link", "Param", "openapi_document"]
