"""Who may talk to a service: the decision, with no I/O, shared by HTTP and the websocket.

Two modes, as Redis has them:
- **protected mode** (no cluster token): only loopback peers, on every path;
- **token mode**: every peer presents ``Authorization: Bearer <token>``, except on the
  paths in ``PUBLIC_PATHS`` (health checks, and the static shell of a web page, which
  holds no data and asks its user for the token).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from alluxiojob.security.token import TOKEN_FILE_KEY, TOKEN_KEY, ClusterToken

# Paths any peer may GET without a token. Extend it for static, data-free pages only.
PUBLIC_PATHS: set[str] = {"/healthz"}


@dataclass(frozen=True)
class Denial:
    status: int  # HTTP status: 401 no or wrong token, 403 not a loopback peer
    code: str  # the error code of the JSON body
    message: str


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


def protected_mode_warning(service: str) -> str:
    return (f"no cluster token is set: this {service} accepts loopback peers only "
            f"(protected mode). To accept other hosts, set {TOKEN_FILE_KEY} (or "
            f"{TOKEN_KEY}) to the same secret on every coordinator, worker and client")


def check_peer(
    token: ClusterToken, peer_host: str | None, path: str, authorization: bytes | str | None
) -> Denial | None:
    """None when the peer may go on; else why not."""
    if not token:
        if is_loopback(peer_host):
            return None
        return Denial(403, "PERMISSION_DENIED",
                      f"this service has no cluster token, so it accepts loopback peers only "
                      f"(protected mode) and {peer_host or 'an unknown peer'} is not one; set "
                      f"{TOKEN_FILE_KEY} (or {TOKEN_KEY}) on the services and the clients")
    if path in PUBLIC_PATHS:
        return None
    if authorization is None or not authorization:
        return Denial(401, "UNAUTHENTICATED",
                      "the cluster token is required: send 'Authorization: Bearer <token>' "
                      f"(the CLI does when {TOKEN_FILE_KEY} or {TOKEN_KEY} is set)")
    if not token.bearer_matches(authorization):
        return Denial(401, "UNAUTHENTICATED",
                      f"wrong cluster token: check {TOKEN_FILE_KEY} (or {TOKEN_KEY})")
    return None
