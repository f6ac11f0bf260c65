"""Requests for a file another worker owns: proxied to it, or redirected (307).

Proxy mode (the default) forwards the request as the client sent it, ``Host`` and
signature included, so the owner checks the same signature against the same key pairs;
the ``x-alluxiojob-s3-hop`` header tells it to serve the file itself, never forward it
again, whatever its own view of the ring. The body streams through in bounded chunks.

Redirect mode answers ``307 Temporary Redirect`` with the owner's URL plus the marker
``x-alluxiojob-from=<this worker's address>``: the owner serves a marked request
itself, and, since the client signed it for this worker's ``Host``, checks the
signature with that ``Host`` instead (only when the marker names a member of the
cluster). The marker is left out of the signed query string.
"""

from __future__ import annotations

import ssl
from urllib.parse import quote

import httpx

from alluxiojob.worker.s3.objects import Body
from alluxiojob.worker.s3.ownership import Peer

HOP_HEADER = "x-alluxiojob-s3-hop"
REDIRECT_MARKER = "x-alluxiojob-from"
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "te", "trailer",
                         "proxy-authorization", "transfer-encoding", "upgrade"})


class OwnerUnreachable(Exception):
    pass


def redirect_location(peer: Peer, https: bool, raw_path: str, raw_query: str,
                      here: str) -> str:
    scheme = "https" if https else "http"
    marker = f"{REDIRECT_MARKER}={quote(here, safe='')}"
    query = f"{raw_query}&{marker}" if raw_query else marker
    return f"{scheme}://{peer.address(https)}{raw_path}?{query}"


class Proxy:
    def __init__(self, max_connections: int, ssl_context: ssl.SSLContext | None) -> None:
        self._client = httpx.AsyncClient(
            verify=ssl_context if ssl_context is not None else True,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=min(64, max_connections)),
            timeout=httpx.Timeout(60.0, connect=5.0),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def forward(self, peer: Peer, https: bool, method: str, raw_path: str,
                      raw_query: str, headers: list[tuple[str, str]]
                      ) -> tuple[int, list[tuple[str, str]], Body]:
        """The owner's status, headers and streamed body; ``OwnerUnreachable`` if it
        cannot be reached (the caller then serves the file itself)."""
        scheme = "https" if https else "http"
        url = f"{scheme}://{peer.address(https)}{raw_path}" + (f"?{raw_query}" if raw_query
                                                              else "")
        sent = [(k, v) for k, v in headers if k not in _HOP_BY_HOP and k != HOP_HEADER]
        sent.append((HOP_HEADER, "1"))
        request = self._client.build_request(method, httpx.URL(url), headers=sent)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise OwnerUnreachable(f"{peer.worker_id}: {exc!r}") from None
        out = [(k.decode("latin-1").lower(), v.decode("latin-1"))
               for k, v in response.headers.raw]
        out = [(k, v) for k, v in out if k not in _HOP_BY_HOP]

        if method == "HEAD":
            await response.aclose()
            return response.status_code, out, Body(None)
        return response.status_code, out, Body(response.aiter_raw(1 << 20),
                                               aclose=response.aclose)
