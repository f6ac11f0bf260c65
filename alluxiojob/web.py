"""Serving a Starlette app under Trio with hypercorn, for the coordinator and the worker."""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from alluxiojob.security import PUBLIC_PATHS, Security
from alluxiojob.security.http import BODY_TIMEOUT, HttpGuard

# hypercorn's idle timer (keep_alive_timeout) runs from the connection's start, and after
# each response, until a request's headers are complete: it is the header timeout. A
# request body has its own deadline in HttpGuard. read_timeout bounds each socket read
# (a peer that sends nothing at all); a response already streaming still completes. It
# is longer than the body deadline: its timer starts at the read that brought the headers,
# before the guard's does, and with equal times a slow body was at times dropped without
# the guard's 408.
HEADER_TIMEOUT = 5.0
READ_TIMEOUT = int(BODY_TIMEOUT + HEADER_TIMEOUT)  # hypercorn takes whole seconds
MAX_HEADER_BYTES = 16 * 1024


def hypercorn_config(host: str, port: int, tls: Security | None) -> HypercornConfig:
    """Every service's hypercorn settings: its timeouts and limits; TLS with the cluster's
    certificate when ``tls`` is given."""
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = HEADER_TIMEOUT
    config.read_timeout = READ_TIMEOUT
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.ssl_handshake_timeout = HEADER_TIMEOUT
    if tls is not None:
        config.certfile = tls.tls.cert_file
        config.keyfile = tls.tls.key_file
    return config


async def serve_app(
    app: Starlette,
    host: str,
    port: int,
    security: Security,
    *,
    public: frozenset[str] = PUBLIC_PATHS,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` behind the HttpGuard until cancelled; ``started`` gets the bound URLs.

    ``public`` are the paths a peer may GET without the cluster token."""
    config = hypercorn_config(host, port, security if security.tls.serving else None)
    guarded = HttpGuard(app, security.token, public=public)
    await serve(guarded, config, task_status=task_status)  # type: ignore[arg-type]


def metrics_endpoint(registry: CollectorRegistry) -> object:
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
