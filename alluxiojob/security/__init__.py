"""Who may use the service, over which transport, and which paths a job may touch.

``Security.from_config`` reads and checks the cluster token, TLS and the path allowlist
once, at startup (a bad setting is a ``ConfigError`` naming the property, exit code 2);
the services and the CLI then share the one object.
"""

from __future__ import annotations

from dataclasses import dataclass

from alluxiojob.config import Config
from alluxiojob.security.access import PUBLIC_PATHS, Denial, check_peer, is_loopback
from alluxiojob.security.paths import PathAllowlist, PathNotAllowed, transfer_overlap
from alluxiojob.security.tls import TlsSettings, tls_settings
from alluxiojob.security.token import ClusterToken, load_cluster_token


@dataclass(frozen=True)
class Security:
    token: ClusterToken
    tls: TlsSettings
    allowlist: PathAllowlist
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Config, *, serving: bool) -> Security:
        token, warnings = load_cluster_token(config)
        return cls(token, tls_settings(config, serving=serving),
                   PathAllowlist.from_config(config), tuple(warnings))

    @property
    def protected_mode(self) -> bool:
        return not self.token


__all__ = [
    "PUBLIC_PATHS",
    "ClusterToken",
    "Denial",
    "PathAllowlist",
    "PathNotAllowed",
    "Security",
    "TlsSettings",
    "check_peer",
    "is_loopback",
    "transfer_overlap",
]
