"""The coordinator's web page of jobs: a static shell, and what it needs from the API.

The shell (``static/``: one HTML page, one script, one stylesheet, no build step) holds
no data, so it may be served without the cluster token: its paths are
``UI_PUBLIC_PATHS``. Everything it shows comes from the REST API, which the script
calls with the token the user typed (kept in the tab's ``sessionStorage``) as
``Authorization: Bearer``. The script builds the page with DOM calls and text nodes
only, never HTML from data, and the Content-Security-Policy allows nothing but this
origin's own script and style.
"""

from __future__ import annotations

from collections import OrderedDict
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

UI_PUBLIC_PATHS = frozenset({"/", "/ui", "/ui/", "/ui/app.js", "/ui/app.css"})

_FILES = {"/ui/": ("index.html", "text/html; charset=utf-8"),
          "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/ui/app.css": ("app.css", "text/css; charset=utf-8")}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def ui_routes() -> list[Route]:
    """``/`` and ``/ui`` lead to the page; the three static files, read once."""
    static = resources.files("alluxiojob.coordinator") / "static"
    routes = [
        Route("/", lambda request: RedirectResponse("/ui/"), methods=["GET"]),
        Route("/ui", lambda request: RedirectResponse("/ui/"), methods=["GET"]),
    ]
    for path, (name, media_type) in _FILES.items():
        body = (static / name).read_bytes()

        async def serve(request: Request, body: bytes = body, media_type: str = media_type
                        ) -> Response:
            return Response(body, media_type=media_type, headers=_HEADERS)

        routes.append(Route(path, serve, methods=["GET", "HEAD"]))
    return routes


class FinalSummaries:
    """Progress summaries of jobs in a final state, which no longer change.

    The page asks for the list every second or two; a finished job's summary is kept
    here (up to ``limit`` of them, oldest dropped first) instead of being read from the
    store again. An entry is valid only for the ``updated_at`` it was made from, so a
    rerun job is read afresh.
    """

    def __init__(self, limit: int = 2000) -> None:
        self.limit = limit
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, job_id: str, updated_at: float) -> dict[str, Any] | None:
        entry = self._entries.get(job_id)
        if entry is None or entry[0] != updated_at:
            return None
        return entry[1]

    def put(self, job_id: str, updated_at: float, summary: dict[str, Any]) -> None:
        self._entries[job_id] = (updated_at, summary)
        self._entries.move_to_end(job_id)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)
