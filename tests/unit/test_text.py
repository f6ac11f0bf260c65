"""``printable``: one way to show text that is not UTF-8 (``core/text.py``)."""

from __future__ import annotations

import json
import os

from hypothesis import given
from hypothesis import strategies as st

from alluxiojob.core.text import printable


def test_utf8_text_is_returned_as_is() -> None:
    text = "/data/caf\u00e9/\u6570\u636e.bin"
    assert printable(text) is text


def test_a_name_that_is_not_utf8_shows_its_bytes() -> None:
    name = os.fsdecode(b"bad-\xff\xfe.bin")
    assert printable(name) == "bad-\\xff\\xfe.bin"


def test_any_other_lone_surrogate_shows_its_code() -> None:
    assert printable("/data/\ud800x") == "/data/\\ud800x"
    assert printable("\udfff" + os.fsdecode(b"\x80")) == "\\udfff\\x80"


SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=[])


@given(st.text(st.one_of(st.characters(), SURROGATES)))
def test_the_result_always_encodes_and_goes_into_json(text: str) -> None:
    shown = printable(text)
    shown.encode("utf-8")
    assert json.loads(json.dumps({"m": shown}, ensure_ascii=False))["m"] == shown
