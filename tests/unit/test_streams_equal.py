"""Comparing two byte streams cut into chunks at different places (a resumed MOVE
compares the object it finds at the destination with its source this way)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alluxiojob.worker.transfer import streams_equal


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random places, empty chunks included."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@given(st.data(), st.binary(max_size=64))
def test_identical_bytes_compare_equal_however_cut(draw: st.DataObject, data: bytes) -> None:
    a = draw.draw(chunked(data))
    b = draw.draw(chunked(data))
    assert streams_equal(iter(a), iter(b))
    assert streams_equal(iter(b), iter(a))


@given(st.data(), st.binary(min_size=1, max_size=64), st.integers(0, 63), st.integers(1, 255))
def test_a_changed_byte_is_found(draw: st.DataObject, data: bytes, where: int,
                                 flip: int) -> None:
    where %= len(data)
    other = data[:where] + bytes([data[where] ^ flip]) + data[where + 1:]
    assert not streams_equal(iter(draw.draw(chunked(data))), iter(draw.draw(chunked(other))))


@given(st.data(), st.binary(max_size=64), st.binary(min_size=1, max_size=8))
def test_a_longer_stream_is_not_equal(draw: st.DataObject, data: bytes, extra: bytes) -> None:
    a = draw.draw(chunked(data))
    b = draw.draw(chunked(data + extra))
    assert not streams_equal(iter(a), iter(b))
    assert not streams_equal(iter(b), iter(a))


def test_whole_files_in_one_chunk_each() -> None:
    """What a small object and a local file give: one chunk each, both ending at once."""
    assert streams_equal(iter([b"payload"]), iter([b"payload"]))
    assert streams_equal(iter([]), iter([]))
    assert streams_equal(iter([b""]), iter([]))
    assert streams_equal(iter([bytearray(b"ab"), b"c"]), iter([memoryview(b"abc")]))
