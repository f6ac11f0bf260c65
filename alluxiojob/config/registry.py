"""The machinery of properties: value parsers, typed keys, key templates, the registry.

``register`` adds one key to ``PROPERTIES``, the one registry; the tables that call it
are ``coordinator_keys.py`` and ``worker_keys.py``, gathered into ``Keys`` by
``properties.py``, which also loads and validates a configuration.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from alluxiojob.config.units import parse_duration, parse_size

T = TypeVar("T")




class ConfigError(ValueError):
    """A property file, key or value is unusable. The message names the key."""


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def parse_non_negative_int(text: str) -> int:
    value = parse_int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def parse_positive_int(text: str) -> int:
    value = parse_int(text)
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {value}")
    return value


def parse_port(text: str) -> int:
    value = parse_int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"not a TCP port: {value}")
    return value


def parse_ratio(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be a ratio between 0 and 1, got {value}")
    return value


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (expected true or false)")


def parse_str(text: str) -> str:
    return text.strip()


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_size_list(text: str) -> tuple[int, ...]:
    return tuple(parse_size(part) for part in parse_list(text))


MIN_PARTITION_SIZE = 1 << 20


def partition_size(text: str) -> int:
    """A shard is at least 1 MiB: tiny partitions mean millions of shards for one file."""
    value = parse_size(text)
    if value < MIN_PARTITION_SIZE:
        raise ValueError(f"must be at least 1MiB, got {text!r}")
    return value


def parse_duration_allow_zero(text: str) -> float:
    value = parse_duration(text)
    if value < 0:
        raise ValueError(f"must not be negative, got {text!r}")
    return value


def parse_positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"must be a positive duration, got {text!r}")
    return value


def http_url(text: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL, without a trailing slash; empty: unset."""
    value = text.strip().rstrip("/")
    if not value:
        return ""
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest[0] == "/":
        raise ValueError(f"not an http:// or https:// URL with a host: {text!r}")
    return value


_AZURE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")


def azure_account(text: str) -> str:
    value = text.strip()
    if value and not _AZURE_ACCOUNT.match(value):
        raise ValueError(f"{value!r} is not an Azure storage account name (3 to 24 lowercase "
                         "letters and digits)")
    return value


def base64_secret(text: str) -> str:
    """A base64 key such as an Azure account key. Errors never repeat the value."""
    value = text.strip()
    if value:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"not base64 ({len(value)} characters; a storage account key is "
                             "the 88-character base64 string from the portal)") from None
    return value


def enum(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse



@dataclass(frozen=True)
class PropertyKey(Generic[T]):
    name: str
    parse: Callable[[str], T]
    default: str | None
    description: str
    secret: bool = False  # a bad value is reported without repeating it

    @property
    def env_name(self) -> str:
        return self.name.upper().replace(".", "_").replace("-", "_")


PROPERTIES: dict[str, PropertyKey[Any]] = {}


def register(
    name: str, parse: Callable[[str], T], default: str | None, description: str,
    secret: bool = False,
) -> PropertyKey[T]:
    key = PropertyKey(name, parse, default, description, secret)
    PROPERTIES[name] = key
    return key


@dataclass(frozen=True)
class PropertyTemplate:
    """A family of keys with a variable part, such as Alluxio's per-account Azure keys."""

    pattern: re.Pattern[str]
    example: str
    parse: Callable[[str], Any]
    description: str
    secret: bool = False


# fs.azure.account.key.<account>.blob.core.windows.net, as in Alluxio's Azure Blob and
# ABFS docs (Hadoop's name): the account, the service (blob or dfs) and the cloud's suffix.
AZURE_ACCOUNT_KEY_TEMPLATE = PropertyTemplate(
    re.compile(r"^fs\.azure\.account\.key\.([a-z0-9]{3,24})\.(blob|dfs)\.([a-z0-9.-]+)$"),
    "fs.azure.account.key.<account>.blob.core.windows.net",
    base64_secret,
    "Account key of one Azure storage account (never logged or returned); names the "
    "account, and another cloud's suffix (blob.core.chinacloudapi.cn, ...) gives the "
    "endpoint. Several accounts need alluxio.underfs.azure.account.name.",
    secret=True,
)
TEMPLATES: tuple[PropertyTemplate, ...] = (AZURE_ACCOUNT_KEY_TEMPLATE,)


def template_of(name: str) -> PropertyTemplate | None:
    return next((t for t in TEMPLATES if t.pattern.match(name)), None)

