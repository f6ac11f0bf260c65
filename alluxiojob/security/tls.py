"""TLS from ``alluxio.job.tls.{cert,key,ca}.file``: checked once, at startup.

A certificate without its key, a file that cannot be read or a PEM that does not parse
stops startup with a message that names the property and the file, instead of a service
that would fail its first handshake. Servers (the REST API, the worker HTTP port, the
worker websocket) use the certificate; clients (the CLI, the coordinator towards its
workers) switch to https/wss when a CA or a certificate file is configured and verify
the peer against the CA file (or the system's CAs when there is none).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from alluxiojob.config import Config, ConfigError, Keys

CERT_KEY = Keys.TLS_CERT_FILE.name
KEY_KEY = Keys.TLS_KEY_FILE.name
CA_KEY = Keys.TLS_CA_FILE.name


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError as exc:
        raise ConfigError(f"cannot read {key} ({path}): {exc.strerror}") from None


@dataclass(frozen=True)
class TlsSettings:
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""

    @property
    def serving(self) -> bool:
        """The services listen with TLS."""
        return bool(self.cert_file)

    @property
    def client_uses_tls(self) -> bool:
        return bool(self.ca_file or self.cert_file)

    @property
    def http_scheme(self) -> str:
        return "https" if self.client_uses_tls else "http"

    @property
    def ws_scheme(self) -> str:
        return "wss" if self.client_uses_tls else "ws"

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{CERT_KEY} ({self.cert_file}) and {KEY_KEY} ({self.key_file}) cannot be "
                f"used together: {exc} (is the key the certificate's own, unencrypted?)"
            ) from None
        return context

    def client_context(self) -> ssl.SSLContext | None:
        """What clients verify servers with; None for plain http/ws."""
        if not self.client_uses_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"{CA_KEY} ({self.ca_file}) is not a usable PEM CA "
                                  f"bundle: {exc}") from None
        return context


def tls_settings(config: Config, *, serving: bool) -> TlsSettings:
    """Validated TLS settings; ``serving`` also checks the certificate and key."""
    settings = TlsSettings(config[Keys.TLS_CERT_FILE], config[Keys.TLS_KEY_FILE],
                           config[Keys.TLS_CA_FILE])
    if settings.ca_file:
        if b"-----BEGIN CERTIFICATE-----" not in _read(CA_KEY, settings.ca_file):
            raise ConfigError(f"{CA_KEY} ({settings.ca_file}) holds no PEM certificate")
        settings.client_context()
    if not serving:
        return settings
    if settings.cert_file and not settings.key_file:
        raise ConfigError(f"{CERT_KEY} is set ({settings.cert_file}) but {KEY_KEY} is not: "
                          "TLS needs both")
    if settings.key_file and not settings.cert_file:
        raise ConfigError(f"{KEY_KEY} is set ({settings.key_file}) but {CERT_KEY} is not: "
                          "TLS needs both")
    if settings.serving:
        if b"-----BEGIN CERTIFICATE-----" not in _read(CERT_KEY, settings.cert_file):
            raise ConfigError(f"{CERT_KEY} ({settings.cert_file}) holds no PEM certificate")
        if b"PRIVATE KEY-----" not in _read(KEY_KEY, settings.key_file):
            raise ConfigError(f"{KEY_KEY} ({settings.key_file}) holds no PEM private key")
        settings.server_context()
    return settings
