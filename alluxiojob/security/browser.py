"""What a web browser may ask of a service: the decision, with no I/O.

A browser on the cluster's machine is a loopback peer that runs any site's code, so the
loopback rule of protected mode does not keep it out. Browsers say where a request
comes from, and these rules refuse (403) what comes from a page, on every port and in
every mode, before the token check and before any message or body is read:

1. **A websocket upgrade that carries ``Origin``.** Browsers send it on every upgrade;
   coordinators never do. A page's websocket is not subject to CORS, so without this
   rule any page could open a worker's task port.
2. **An HTTP request from another origin:** ``Origin`` present and not this server's own
   (``null`` included), or ``Sec-Fetch-Site`` present and neither ``same-origin`` nor
   ``none`` (a page on another port of this host is ``same-site``, and is refused too).
   A form POST, a ``text/plain`` fetch, an ``<img>`` or ``<script>`` GET are then refused
   before they do or read anything. The project's web page keeps working: its requests
   are ``same-origin``. Clients that are not browsers send neither header.

Own origin means the ``Origin``'s host and port are the request's ``Host`` (scheme
apart, so a page behind a TLS-terminating proxy still works); a ``Host`` that is not a
local name is refused in protected mode anyway (``access.check_peer``), against DNS
rebinding.

One exception: a top-level navigation (``Sec-Fetch-Mode: navigate``, GET or HEAD) to a
path the service declares navigable (the web page's data-free shell), so that a link to
the page from another site still opens it; the shell's CSP forbids framing it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from alluxiojob.core.reasons import Reason
from alluxiojob.security.access import Denial

# Sec-Fetch-Site values of requests a browser made on the server's own page, or on its
# user's own (a typed address, a bookmark).
_OWN_SITES = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _authority(host: str, port: str | None) -> str:
    """``host:port`` in lower case, IPv6 hosts in brackets."""
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def _origin_authority(origin: str) -> str | None:
    """``host:port`` of a serialized origin (``http://127.0.0.1:19999``); None if it is
    ``null`` or not an origin at all."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return _authority(parts.hostname, str(port) if port else _DEFAULT_PORTS[parts.scheme])


def _host_authority(host_header: str, scheme: str) -> str | None:
    """``host:port`` of a ``Host`` header, its port defaulted from the request's scheme."""
    try:
        parts = urlsplit("//" + host_header.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return _authority(parts.hostname, str(port) if port else _DEFAULT_PORTS.get(scheme, "80"))


def _origin_matches(origin: str, host_header: str | None, scheme: str) -> bool:
    """True when ``origin`` names the host and port the request was addressed to. A
    ``Host`` without a port may mean the default port of the request's scheme or, behind
    a proxy that terminates TLS, of the origin's."""
    mine = _origin_authority(origin)
    if mine is None or host_header is None:
        return False
    schemes = (scheme, urlsplit(origin.strip()).scheme)
    return any(mine == _host_authority(host_header, s) for s in schemes)


def websocket_denial(origin: str | bytes | None) -> Denial | None:
    """Rule 1: any ``Origin`` on an upgrade is a web page's, and is refused."""
    text = _text(origin)
    if text is None:
        return None
    return Denial(403, Reason.PERMISSION_DENIED,
                  f"websocket upgrades from web pages are refused (this one came with "
                  f"Origin: {text[:200]}): only coordinators, which send no Origin, "
                  f"may connect")


def cross_site_denial(
    *,
    method: str,
    path: str,
    scheme: str,
    host_header: str | bytes | None,
    origin: str | bytes | None,
    fetch_site: str | bytes | None,
    fetch_mode: str | bytes | None,
    navigable: frozenset[str] = frozenset(),
) -> Denial | None:
    """Rule 2, for an HTTP request: None when it may go on; else why not."""
    origin_text, site = _text(origin), _text(fetch_site)
    if (method in ("GET", "HEAD") and path in navigable
            and (_text(fetch_mode) or "").strip().lower() == "navigate"):
        return None
    if origin_text is not None and not _origin_matches(origin_text, _text(host_header),
                                                       scheme):
        return Denial(403, Reason.PERMISSION_DENIED,
                      f"requests from other web sites are refused (Origin: "
                      f"{origin_text[:200]} is not this server's own)")
    if site is not None and site.strip().lower() not in _OWN_SITES:
        return Denial(403, Reason.PERMISSION_DENIED,
                      f"requests from other web sites are refused (Sec-Fetch-Site: "
                      f"{site.strip()[:50]}); open this server's own page instead")
    return None
