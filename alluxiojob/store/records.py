"""How the job store encodes what it keeps (job records, progress, failures): msgpack
maps. It lives beside the stores, apart from the wire protocol, so that either can
change without the other."""

from __future__ import annotations

from typing import Any

import msgpack


class CorruptRecord(ValueError):
    """Stored bytes that are not a record."""


def pack_record(data: dict[str, Any]) -> bytes:
    """A record as stored. A checkpoint may hold a file name that is not UTF-8; it
    round-trips as is."""
    packed: bytes = msgpack.packb(data, use_bin_type=True, unicode_errors="surrogateescape")
    return packed


def unpack_record(data: bytes) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False,
                                unicode_errors="surrogateescape")
    except Exception as exc:
        raise CorruptRecord(f"corrupt stored record: {exc}") from None
    if not isinstance(value, dict):
        raise CorruptRecord("corrupt stored record: not a map")
    return value
