"""Stored records (job, progress, failures): msgpack maps that round-trip, and corrupt
bytes that raise ``CorruptRecord``."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alluxiojob.store.records import CorruptRecord, pack_record, unpack_record

HYPOTHESIS = settings(max_examples=150, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False), st.text(), st.binary())
values = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.text(max_size=8), children, max_size=5)),
    max_leaves=20)


@settings(HYPOTHESIS, max_examples=40)
@given(st.dictionaries(st.text(max_size=10), values, max_size=8))
def test_record_round_trip(record: dict[str, Any]) -> None:
    unpacked = unpack_record(pack_record(record))
    assert pack_record(unpacked) == pack_record(record)


def test_a_name_that_is_not_utf8_round_trips() -> None:
    record = {"checkpoint": ["dir", "caf\udce9"]}  # a surrogate-escaped byte
    assert unpack_record(pack_record(record)) == record


@HYPOTHESIS
@given(st.binary(max_size=100))
def test_corrupt_records_raise_corrupt_record(data: bytes) -> None:
    try:
        value = unpack_record(data)
    except CorruptRecord:
        return
    assert isinstance(value, dict)


def test_record_that_is_not_a_map() -> None:
    with pytest.raises(CorruptRecord, match="not a map"):
        unpack_record(msgpack.packb([1, 2]))
