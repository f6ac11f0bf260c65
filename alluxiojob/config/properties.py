"""Loading a configuration: ``Keys`` (every property), ``Config``, ``load_config``.

Theory of operation: ``PROPERTIES`` (``registry.py``) is the one registry; the tables in
``coordinator_keys.py`` and ``worker_keys.py`` fill it. ``load_config`` merges, in
increasing precedence, the defaults, an ``alluxio-site.properties`` file, ``ALLUXIO_*``
environment variables and ``-D key=value`` pairs. Every known value is parsed once, at
load, so that a bad value stops startup with a message that names the key, instead of
failing later inside a running job. Unknown keys only warn: one site file is often shared
with the other Alluxio components.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from alluxiojob.config.coordinator_keys import CoordinatorKeys
from alluxiojob.config.registry import (
    AZURE_ACCOUNT_KEY_TEMPLATE,
    PROPERTIES,
    TEMPLATES,
    ConfigError,
    PropertyKey,
    PropertyTemplate,
    template_of,
)
from alluxiojob.config.worker_keys import WorkerKeys

__all__ = [
    "PROPERTIES",
    "TEMPLATES",
    "Config",
    "ConfigError",
    "Keys",
    "PropertyKey",
    "PropertyTemplate",
    "build_config",
    "closest_key",
    "default_conf_file",
    "load_config",
    "parse_define",
    "read_properties_file",
]

T = TypeVar("T")


class Keys(CoordinatorKeys, WorkerKeys):
    """Typed handles for every property. ``config[Keys.JOB_BATCH_SIZE]`` is an ``int``."""


@dataclass(frozen=True)
class Config:
    """Parsed, validated properties. Immutable once loaded."""

    values: Mapping[str, Any]
    raw: Mapping[str, str]
    warnings: tuple[str, ...] = field(default=())

    def __getitem__(self, key: PropertyKey[T]) -> T:
        value: T = self.values[key.name]
        return value

    def templated(self, template: PropertyTemplate) -> dict[str, tuple[re.Match[str], Any]]:
        """The keys set in ``template``'s family: name -> (its match, its parsed value)."""
        found: dict[str, tuple[re.Match[str], Any]] = {}
        for name in self.raw:
            match = template.pattern.match(name)
            if match is not None and name not in PROPERTIES:
                found[name] = (match, self.values[name])
        return found

    def azure_account_keys(self) -> dict[str, tuple[str, str]]:
        """Per-account Azure keys: account -> (key, the cloud's DNS suffix)."""
        return {match.group(1): (value, match.group(3))
                for match, value in self.templated(AZURE_ACCOUNT_KEY_TEMPLATE).values()}

    def with_overrides(self, overrides: Mapping[str, str]) -> Config:
        merged = dict(self.raw)
        merged.update(overrides)
        return build_config(merged, sources={k: "override" for k in overrides})


def read_properties_file(path: Path) -> dict[str, str]:
    """Read a Java-style properties file: ``key=value`` or ``key value``, ``#`` comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"property file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read property file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        bad_line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"property file {path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} "
            f"at line {bad_line}"
        ) from None
    result: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "!")):
            continue
        # As in Java: the key ends at the first '=', ':' or whitespace.
        match = re.match(r"^([^=:\s]+)\s*[=:\s]\s*(.*)$", stripped)
        if match is None:
            raise ConfigError(f"{path}:{lineno}: expected key=value, got {stripped!r}")
        result[match.group(1)] = match.group(2).strip()
    return result


def parse_define(text: str) -> tuple[str, str]:
    """Parse one ``-D key=value``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"bad -D option {text!r}: expected -D key=value")
    return name.strip(), value.strip()


def closest_key(name: str) -> str | None:
    matches = difflib.get_close_matches(name, PROPERTIES.keys(), n=1, cutoff=0.75)
    return matches[0] if matches else None


def _expand(value: str, raw: Mapping[str, str], depth: int = 0) -> str:
    """Expand ``${other.key}`` references and a leading ``~``."""
    if depth > 8:
        raise ValueError("property references nest too deeply")
    out = value
    while "${" in out:
        start = out.index("${")
        end = out.find("}", start)
        if end < 0:
            raise ValueError(f"unterminated ${{ in {value!r}")
        ref = out[start + 2 : end]
        if ref in raw:
            replacement = raw[ref]
        elif ref in PROPERTIES and PROPERTIES[ref].default is not None:
            replacement = PROPERTIES[ref].default or ""
        else:
            raise ValueError(f"unknown property reference ${{{ref}}}")
        out = out[:start] + _expand(replacement, raw, depth + 1) + out[end + 1 :]
    return os.path.expanduser(out) if out.startswith("~") else out


def build_config(raw: Mapping[str, str], sources: Mapping[str, str] | None = None) -> Config:
    """Validate ``raw`` (explicitly set properties) against the registry."""
    sources = sources or {}
    warnings: list[str] = []
    values: dict[str, Any] = {}
    for name in raw:
        template = None if name in PROPERTIES else template_of(name)
        if template is not None:
            try:
                values[name] = template.parse(_expand(raw[name], raw))
            except (ValueError, ArithmeticError) as exc:
                raise ConfigError(_invalid(name, raw[name], template.secret, sources, exc)) \
                    from None
        elif name not in PROPERTIES:
            hint = closest_key(name)
            where = f" (from {sources[name]})" if name in sources else ""
            message = f"unknown property {name}{where}"
            if hint:
                message += f"; did you mean {hint}?"
            warnings.append(message)
    for name, key in PROPERTIES.items():
        text = raw.get(name, key.default)
        if text is None:
            values[name] = None
            continue
        try:
            values[name] = key.parse(_expand(text, raw))
        except (ValueError, ArithmeticError) as exc:
            raise ConfigError(_invalid(name, text, key.secret, sources, exc)) from None
    config = Config(values=values, raw=dict(raw), warnings=tuple(warnings))
    _check_azure(config, sources)
    return config


def _invalid(name: str, text: str, secret: bool, sources: Mapping[str, str],
             exc: BaseException) -> str:
    where = f" (from {sources[name]})" if name in sources else ""
    shown = "(a secret, not shown)" if secret else repr(text)
    return f"invalid value {shown} for {name}{where}: {exc}"


def _check_azure(config: Config, sources: Mapping[str, str]) -> None:
    """Several per-account keys and no account named: which one az:// means is unknown."""
    accounts = sorted(config.azure_account_keys())
    if len(accounts) > 1 and not config[Keys.AZURE_ACCOUNT_NAME]:
        raise ConfigError(
            f"keys for several Azure storage accounts ({', '.join(accounts)}) and no "
            f"{Keys.AZURE_ACCOUNT_NAME.name}: set it to the account az:// URIs are in")


def default_conf_file(environ: Mapping[str, str]) -> Path | None:
    conf_dir = environ.get("ALLUXIO_CONF_DIR")
    if conf_dir:
        candidate = Path(conf_dir) / "alluxio-site.properties"
        if candidate.is_file():
            return candidate
    return None


def load_config(
    conf_file: Path | None = None,
    defines: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge defaults < site file < ``ALLUXIO_*`` environment < ``-D`` and validate."""
    environ = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    sources: dict[str, str] = {}
    path = conf_file if conf_file is not None else default_conf_file(environ)
    if path is not None:
        for name, value in read_properties_file(path).items():
            raw[name] = value
            sources[name] = str(path)
    for name, key in PROPERTIES.items():
        if key.env_name in environ:
            raw[name] = environ[key.env_name]
            sources[name] = f"environment variable {key.env_name}"
    for text in defines:
        name, value = parse_define(text)
        raw[name] = value
        sources[name] = f"-D {name}"
    return build_config(raw, sources)
