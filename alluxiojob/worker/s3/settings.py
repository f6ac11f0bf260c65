"""The S3 API's settings, read and checked once at startup.

Key pairs come from ``alluxio.worker.s3.credentials.file`` (preferred; a JSON map of
access key to secret that only the service user may read: a file its group or others
can read is refused, since these keys read every bucket) or from
``alluxio.worker.s3.privileged.users.credentials`` (Alluxio's name). The mode follows:

- ``SIGV4``: key pairs configured, every request's signature checked;
- ``PROTECTED``: no key pairs: loopback peers only, as every other port of the service;
- ``SIMPLE``: ``signature.validation.enabled=false`` together with
  ``simple.auth.acknowledged=true``: the signature is parsed, not checked (Alluxio's
  default). Refused without the acknowledgement, and warned about at startup.

``S3Credentials`` never prints its secrets.
"""

from __future__ import annotations

import enum
import json
import os
import stat
from dataclasses import dataclass, field

from alluxiojob.config import Config, ConfigError, Keys
from alluxiojob.worker.s3.buckets import BucketTable

CREDENTIALS_KEY = Keys.S3_CREDENTIALS.name
CREDENTIALS_FILE_KEY = Keys.S3_CREDENTIALS_FILE.name
MAX_CREDENTIALS_BYTES = 1 << 20


class AuthMode(enum.Enum):
    SIGV4 = "SIGV4"
    PROTECTED = "PROTECTED"
    SIMPLE = "SIMPLE"


@dataclass(frozen=True)
class S3Credentials:
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def __str__(self) -> str:
        return f"<{len(self.secrets)} S3 key pairs>"


def _parse_pairs(text: str, where: str) -> S3Credentials:
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        raise ConfigError(f"{where} is not JSON: expected {{\"ACCESS_KEY\": \"SECRET\"}}") \
            from None
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in data.items()):
        raise ConfigError(f"{where} must be a JSON object of non-empty access key to "
                          "secret key strings")
    return S3Credentials(dict(data))


def load_credentials(config: Config) -> S3Credentials:
    inline = config[Keys.S3_CREDENTIALS]
    path = config[Keys.S3_CREDENTIALS_FILE]
    if inline and path:
        raise ConfigError(f"both {CREDENTIALS_KEY} and {CREDENTIALS_FILE_KEY} are set; set "
                          f"only one (preferably {CREDENTIALS_FILE_KEY})")
    if not path:
        return _parse_pairs(inline, CREDENTIALS_KEY)
    where = f"{CREDENTIALS_FILE_KEY} ({path})"
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            raw = f.read(MAX_CREDENTIALS_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where} is not a regular file")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{where} can be read by its group or by others (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}): its keys read every bucket; "
                          f"run: chmod 600 {path}")
    if len(raw) > MAX_CREDENTIALS_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_CREDENTIALS_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text") from None
    return _parse_pairs(text, where)


@dataclass(frozen=True)
class S3Settings:
    enabled: bool
    port: int
    https_port: int
    tls: bool
    only_https: bool
    redirect: bool
    only_cache: bool
    cache_misses: bool
    mode: AuthMode
    credentials: S3Credentials
    buckets: BucketTable
    max_inflight: int
    http_port: int = 0  # Alluxio's worker HTTP API for alluxiofs; 0: not served

    @classmethod
    def from_config(cls, config: Config, *, tls_serving: bool) -> S3Settings:
        credentials = load_credentials(config)
        validate = config[Keys.S3_SIGNATURE_VALIDATION]
        if not validate:
            if not config[Keys.S3_SIMPLE_AUTH_ACK]:
                raise ConfigError(
                    f"{Keys.S3_SIGNATURE_VALIDATION.name}=false lets anyone who reaches the "
                    "S3 port read every bucket under any access key; set "
                    f"{Keys.S3_SIMPLE_AUTH_ACK.name}=true to accept that")
            mode = AuthMode.SIMPLE
        else:
            mode = AuthMode.SIGV4 if credentials else AuthMode.PROTECTED
        mounts: tuple[str, ...] = config[Keys.S3_BUCKETS]
        tls = config[Keys.S3_TLS_ENABLED]
        only_https = config[Keys.S3_ONLY_HTTPS]
        if config[Keys.S3_API_ENABLED] and (tls or only_https) and not tls_serving:
            raise ConfigError(f"{Keys.S3_TLS_ENABLED.name} needs {Keys.TLS_CERT_FILE.name} "
                              f"and {Keys.TLS_KEY_FILE.name}")
        return cls(
            enabled=config[Keys.S3_API_ENABLED],
            port=config[Keys.S3_PORT],
            https_port=config[Keys.S3_HTTPS_PORT],
            tls=tls or only_https,
            only_https=only_https,
            redirect=config[Keys.S3_REDIRECT],
            only_cache=config[Keys.S3_ONLY_CACHE],
            cache_misses=config[Keys.S3_READ_TYPE] == "CACHE",
            mode=mode,
            credentials=credentials,
            buckets=BucketTable(mounts),
            max_inflight=config[Keys.S3_MAX_INFLIGHT],
            http_port=(config[Keys.ALLUXIO_HTTP_PORT] if config[Keys.ALLUXIO_HTTP_ENABLED]
                       else 0),
        )

    def warnings(self) -> list[str]:
        if self.mode is AuthMode.SIMPLE:
            return ["the S3 API runs in SIMPLE mode (alluxio.worker.s3.signature.validation."
                    "enabled=false): signatures are not checked, so anyone who can reach "
                    "its port reads every bucket under any access key"]
        if self.mode is AuthMode.PROTECTED:
            return ["no S3 key pairs are set: the S3 API accepts loopback peers only "
                    f"(protected mode); set {CREDENTIALS_FILE_KEY} to serve other hosts"]
        return []
