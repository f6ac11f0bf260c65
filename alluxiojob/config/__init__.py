"""Configuration: the property registry and the Alluxio duration/size units."""

from alluxiojob.config.properties import (
    PROPERTIES,
    Config,
    ConfigError,
    Keys,
    PropertyKey,
    build_config,
    load_config,
)
from alluxiojob.config.units import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "PROPERTIES",
    "Config",
    "ConfigError",
    "Keys",
    "PropertyKey",
    "build_config",
    "format_duration",
    "format_size",
    "load_config",
    "parse_duration",
    "parse_size",
]
