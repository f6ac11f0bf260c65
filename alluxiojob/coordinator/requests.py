"""REST requests read and validated (bodies, queries, job options), and JSON errors.

``guarded`` wraps every handler of ``api.py``: the error family becomes a JSON answer
with the status its code means.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from alluxiojob.config import parse_size
from alluxiojob.core.errors import InvalidArgument, JobServiceError, describe_error, http_status
from alluxiojob.core.job import OPTION_ALIASES, JobOptions
from alluxiojob.core.text import printable
from alluxiojob.ufs.base import UfsError

log = structlog.get_logger("alluxiojob.coordinator")

Handler = Callable[[Request], Awaitable[Response]]


def _error(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": code, "message": printable(message)}, status_code=status)


def error_response(exc: JobServiceError) -> JSONResponse:
    return _error(exc.code, str(exc), exc.http_status)


def guarded(handler: Handler) -> Handler:
    """Map the error family to JSON: bad input 400, wrong state 409, a dependency down 503.

    Anything unexpected is a bug: a 500 that says what, logged with its traceback.
    """

    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except JobServiceError as exc:
            return error_response(exc)
        except UfsError as exc:
            return _error(exc.reason, str(exc), http_status(exc.reason))
        except (ValueError, TypeError, KeyError) as exc:
            return _error("INVALID_ARGUMENT", describe_error(exc), 400)
        except Exception as exc:
            log.exception("unexpected error in a REST handler", path=request.url.path)
            return _error("INTERNAL", describe_error(exc), 500)

    return wrapper


async def json_body(request: Request) -> dict[str, Any]:
    # A browser sends a cross-site form or text/plain POST without asking first; it must
    # ask (a CORS preflight, which nothing here answers) before it may send JSON.
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise InvalidArgument("the request body must be JSON, sent with "
                              "Content-Type: application/json")
    try:
        body = await request.json()
    except Exception:
        raise InvalidArgument("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    return body


def job_id_param(raw: Any) -> str:
    if not isinstance(raw, str):
        raise InvalidArgument(f"id must be a string, got {type(raw).__name__}")
    return raw


TRUE_WORDS = {"true": True, "false": False}


def option_value(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default``; Alluxio sends every value as a string."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS:
            return TRUE_WORDS[value.strip().lower()]
        raise InvalidArgument(f"option {name} must be true or false, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if name == "bandwidth":
            try:
                return parse_size(text)
            except ValueError as exc:
                raise InvalidArgument(f"option bandwidth: {exc}") from None
        if text.isascii() and text.isdigit() and len(text) <= 18:
            return int(text)
    kind = "a size (e.g. 100MiB) or a number of bytes" if name == "bandwidth" else "a whole number"
    raise InvalidArgument(f"option {name} must be {kind}, got {value!r}")


def report_params(params: dict[str, Any]) -> tuple[str, str, bool]:
    """A progress request's format, file status and verbosity."""
    output = str(params.get("format") or "JSON").upper()
    if output not in ("JSON", "TEXT"):
        raise InvalidArgument(f"format must be TEXT or JSON, got {params['format']!r}")
    status = str(params.get("file_status") or params.get("fileStatus") or "").upper()
    if status and status not in ("SUCCESS", "FAILURE"):
        raise InvalidArgument(f"file status must be FAILURE or SUCCESS, got {status!r}")
    return output, status, flag(params, "verbose")


def job_options(raw: Any) -> JobOptions:
    """Job options from a request, in our spelling or Alluxio's (``"batchSize": "10"``)."""
    if raw is None:
        return JobOptions()
    if not isinstance(raw, dict):
        raise InvalidArgument("options must be a JSON object")
    fields: dict[str, Any] = {str(OPTION_ALIASES.get(k, k)): v for k, v in raw.items()}
    defaults = JobOptions()
    unknown = sorted(set(fields) - set(JobOptions.__dataclass_fields__) | {"source"} & set(fields))
    if unknown:
        raise InvalidArgument(f"unknown job option(s): {', '.join(unknown)}")
    for name, value in fields.items():
        fields[name] = option_value(name, value, getattr(defaults, name))
    return JobOptions.from_wire(fields)


async def query_params(request: Request) -> dict[str, Any]:
    """A GET's parameters: the query string, or a JSON body as Alluxio's clients send.

    ``curl -X GET .../progress_job/load -d '{"path": "/data", "format": "TEXT"}'`` works
    as well as ``?path=/data&format=TEXT``; the query string wins where both give a name.
    """
    params: dict[str, Any] = {}
    if await request.body():
        params.update(await json_body(request))
    params.update(request.query_params)
    return params


def flag(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    return option_value(name, value, False) if value != "" else False

