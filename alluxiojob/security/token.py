"""The one cluster secret: where it comes from, and how a presented one is compared.

The secret is ``alluxio.job.cluster.token.file`` (preferred: it stays out of the site
file, the process list and the environment) or ``alluxio.job.cluster.token``. Setting both
is a configuration error, because which one wins would be a guess. A token file that its
group or others may read earns a warning, not a refusal: container runtimes often mount
secrets 0444.

The token is compared with ``hmac.compare_digest`` and never logged: ``ClusterToken``
prints as ``<redacted>``.
"""

from __future__ import annotations

import hmac
import os
import stat
from dataclasses import dataclass, field

from alluxiojob.config import Config, ConfigError, Keys

TOKEN_KEY = Keys.CLUSTER_TOKEN.name
TOKEN_FILE_KEY = Keys.CLUSTER_TOKEN_FILE.name
MAX_TOKEN_BYTES = 4096


@dataclass(frozen=True)
class ClusterToken:
    """The secret, or none (protected mode). ``str()`` and ``repr()`` never show it."""

    value: str = field(default="", repr=False)
    source: str = ""  # which property (and file) it came from, for messages

    def __bool__(self) -> bool:
        return bool(self.value)

    def __str__(self) -> str:
        return "<redacted>" if self.value else "<none>"

    def matches(self, presented: str | bytes | None) -> bool:
        """Constant-time comparison with a presented token (False for none)."""
        if not self.value or presented is None:
            return False
        if isinstance(presented, str):
            try:
                presented = presented.encode("ascii")
            except UnicodeEncodeError:
                return False
        return hmac.compare_digest(self.value.encode("ascii"), presented)

    def bearer_matches(self, authorization: str | bytes | None) -> bool:
        """True when an ``Authorization`` header value is ``Bearer <this token>``."""
        return self.matches(bearer_credentials(authorization))

    def authorization(self) -> dict[str, str]:
        """The header a client sends; empty in protected mode."""
        return {"Authorization": f"Bearer {self.value}"} if self.value else {}


def bearer_credentials(authorization: str | bytes | None) -> bytes | None:
    """The credentials of a ``Bearer`` header value, or None if it is not one."""
    if authorization is None:
        return None
    if isinstance(authorization, str):
        try:
            authorization = authorization.encode("ascii")
        except UnicodeEncodeError:
            return None
    scheme, _, credentials = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _checked(value: str, where: str) -> str:
    if not value:
        raise ConfigError(f"{where} is empty: a cluster token needs at least one character")
    if len(value) > MAX_TOKEN_BYTES or not all(33 <= ord(c) < 127 for c in value):
        raise ConfigError(f"{where} must be printable ASCII without spaces, at most "
                          f"{MAX_TOKEN_BYTES} characters (it travels in an HTTP header)")
    return value


def load_cluster_token(config: Config) -> tuple[ClusterToken, list[str]]:
    """The cluster token and warnings to show; raises ``ConfigError`` naming the key."""
    inline = config[Keys.CLUSTER_TOKEN]
    path = config[Keys.CLUSTER_TOKEN_FILE]
    if inline and path:
        raise ConfigError(f"both {TOKEN_KEY} and {TOKEN_FILE_KEY} are set; set only one "
                          f"(preferably {TOKEN_FILE_KEY})")
    if inline:
        return ClusterToken(_checked(inline, TOKEN_KEY), TOKEN_KEY), []
    if not path:
        return ClusterToken(), []
    where = f"{TOKEN_FILE_KEY} ({path})"
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            raw = f.read(MAX_TOKEN_BYTES + 2)
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where} is not a regular file")
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where} must hold printable ASCII") from None
    token = ClusterToken(_checked(text, where), where)
    warnings = []
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"the cluster token file {path} can be read by its group or by "
                        f"others (mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}")
    return token, warnings
