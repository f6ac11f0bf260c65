"""Parse durations and sizes the way Alluxio writes them (``15s``, ``1H``, ``7d``, ``256MiB``).

Pure functions: no I/O, so the property parser and the CLI share one definition.
"""

from __future__ import annotations

import re

_DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "millis": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
    "p": 1 << 50,
    "pb": 1 << 50,
    "pib": 1 << 50,
}

_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_duration(text: str) -> float:
    """Return seconds. A bare number is milliseconds, as in Alluxio."""
    match = _NUMBER_UNIT.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 500ms, 15s, 1H, 7d)")
    if len(match.group(1)) > 30:
        raise ValueError(f"duration too long: {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "":
        return number / 1000.0
    if unit not in _DURATION_UNITS:
        raise ValueError(f"unknown duration unit {match.group(2)!r} in {text!r}")
    return number * _DURATION_UNITS[unit]


def parse_size(text: str) -> int:
    """Return bytes. Units are binary (``1KB`` = 1024 bytes), as in Alluxio."""
    match = _NUMBER_UNIT.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (expected e.g. 4096, 64KiB, 256MiB, 1GB)")
    digits, unit = match.group(1), match.group(2).lower()
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {match.group(2)!r} in {text!r}")
    if len(digits) > 30:
        raise ValueError(f"size too large: {text!r}")
    whole, _, fraction = digits.partition(".")
    value = int(whole) * _SIZE_UNITS[unit]
    if fraction:
        value += int(fraction) * _SIZE_UNITS[unit] // 10 ** len(fraction)
    return value


def format_size(num_bytes: float) -> str:
    """Human-readable binary size, e.g. ``1.50MiB``."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024.0 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.2f}{unit}"
        value /= 1024.0
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Short duration such as ``1h02m03s`` or ``850ms``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
