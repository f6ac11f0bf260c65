"""Who may talk to a service: the decision, with no I/O, shared by HTTP and the websocket.

Two modes, as Redis has them:
- **protected mode** (no cluster token): only loopback peers, on every path;
- **token mode**: every peer presents ``Authorization: Bearer <token>``, except on the
  paths in ``PUBLIC_PATHS`` (health checks, and the static shell of a web page, which
  holds no data and asks its user for the token).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass

from alluxiojob.core.reasons import Reason
from alluxiojob.security.token import TOKEN_FILE_KEY, TOKEN_KEY, ClusterToken

# Paths any peer may GET without a token. A service extends it for static, data-free
# pages only (the coordinator's web page shell, whose script asks the user for the
# token); a websocket upgrade is never public, whatever its path.
PUBLIC_PATHS: frozenset[str] = frozenset({"/healthz"})


@dataclass(frozen=True)
class Denial:
    status: int  # HTTP status: 401 no or wrong token, 403 not a loopback peer
    code: str  # the error code of the JSON body
    message: str


@functools.lru_cache(maxsize=256)  # a few peers, asked once per request
def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback; anything unparsable is not."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _host_name(host_header: str | bytes) -> str:
    """The name in a ``Host`` header, without port or IPv6 brackets, lower case."""
    text = host_header.decode("latin-1") if isinstance(host_header, bytes) else host_header
    text = text.strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def is_local_name(host_header: str | bytes) -> bool:
    """A ``Host`` that only this machine answers to: a loopback address, ``localhost``
    (or a subdomain of it), or this machine's own name. A page in a browser here that
    re-points its own domain at 127.0.0.1 (DNS rebinding) still sends its own domain."""
    name = _host_name(host_header)
    if is_loopback(name) or name == "localhost" or name.endswith(".localhost"):
        return True
    own = socket.gethostname().lower()
    return bool(name) and name in (own, socket.getfqdn(own).lower())


def protected_mode_warning(service: str) -> str:
    return (f"no cluster token is set: this {service} accepts loopback peers only "
            f"(protected mode). To accept other hosts, set {TOKEN_FILE_KEY} (or "
            f"{TOKEN_KEY}) to the same secret on every coordinator, worker and client")


def check_peer(
    token: ClusterToken,
    peer_host: str | None,
    path: str,
    authorization: bytes | str | None,
    host_header: bytes | str | None = None,
    public: frozenset[str] = PUBLIC_PATHS,
) -> Denial | None:
    """None when the peer may go on; else why not.

    In protected mode the request must also be addressed to a local name (``Host``):
    a loopback peer may be a browser running someone else's page.
    """
    if not token:
        if is_loopback(peer_host):
            if host_header is None or is_local_name(host_header):
                return None
            return Denial(403, Reason.PERMISSION_DENIED,
                          f"this service has no cluster token (protected mode) and accepts "
                          f"requests addressed to localhost or a loopback address only, not "
                          f"to {_host_name(host_header)!r}; set {TOKEN_FILE_KEY} (or "
                          f"{TOKEN_KEY}) to use other names")
        return Denial(403, Reason.PERMISSION_DENIED,
                      f"this service has no cluster token, so it accepts loopback peers only "
                      f"(protected mode) and {peer_host or 'an unknown peer'} is not one; set "
                      f"{TOKEN_FILE_KEY} (or {TOKEN_KEY}) on the services and the clients")
    if path in public:
        return None
    if authorization is None or not authorization:
        return Denial(401, "UNAUTHENTICATED",
                      "the cluster token is required: send 'Authorization: Bearer <token>' "
                      f"(the CLI does when {TOKEN_FILE_KEY} or {TOKEN_KEY} is set)")
    if not token.bearer_matches(authorization):
        return Denial(401, "UNAUTHENTICATED",
                      f"wrong cluster token: check {TOKEN_FILE_KEY} (or {TOKEN_KEY})")
    return None
