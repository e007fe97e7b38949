"""The canonical serialisation and its fast comparison (``matches_canonical``)."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from syncd.logs.records import canonical_json, finite_canonical_json, matches_canonical

# Every JSON value canonical_json can write, with the spellings where orjson and the
# standard library part: floats of every magnitude, integers past 64 bits, control
# characters, non-ASCII and lone surrogates.
_scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e16, 1e-5, 1e-4, 9.999e15, 1e22, 1e300, 5e-324, -0.0, 0.1, 123456789.0, 2.0**63])
    | st.text() | st.text(alphabet=st.characters(max_codepoint=0x2F) | st.sampled_from(["\u2028", "\x7f", "\ud800", "é"]))
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)


def _canonical(value: Any) -> str | None:
    try:
        return canonical_json(value)
    except ValueError:
        return None


@settings(max_examples=1500, deadline=None)
@given(_values)
@example({"a": 1e16, "b": 1e-7, "c": "\x1f"})
def test_a_value_matches_its_own_canonical_text(value: Any) -> None:
    text = _canonical(value)
    if text is not None:
        assert matches_canonical(value, text)


@settings(max_examples=1500, deadline=None)
@given(_values)
def test_where_orjson_writes_otherwise_its_text_is_no_canonical_text(value: Any) -> None:
    """The property matches_canonical rests on: orjson's text, where it is not
    canonical_json's, is not the canonical text of any value, so it never equals a
    stored (canonical) text. Fails if orjson wrote some value as another's canonical text."""
    try:
        fast = orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, UnicodeEncodeError):
        return  # refused: matches_canonical asks canonical_json
    if fast != _canonical(value):
        again = json.loads(fast)
        assert _canonical(again) != fast


@settings(max_examples=3000, deadline=None)
@given(_values)
@example([1e-5, 9e-5, 1e-4, 1e15, 1e16, 1.5e-7, 2.0**63, "e+", "0.0000", "\x7f\u2028\x00\x1f\"\\", 2**64])
def test_the_fast_serialisation_of_finite_values_is_the_canonical_one(value: Any) -> None:
    """finite_canonical_json (derived rows) writes what canonical_json writes, for every
    finite JSON value canonical_json can write."""
    text = _canonical(value)
    if text is not None:
        assert finite_canonical_json(value) == text


@settings(max_examples=1000, deadline=None)
@given(_values, _values)
def test_matching_is_equality_of_canonical_texts(value: Any, other: Any) -> None:
    text = _canonical(other)
    if text is not None and _canonical(value) is not None:
        assert matches_canonical(value, text) == (canonical_json(value) == text)


@pytest.mark.parametrize(("value", "other"), [
    (1, 1.0), (1.0, 1), (1e16, 10**16), ({"a": 1, "b": 2}, {"b": 2, "a": 1}), ("é", "\\u00e9"), (2**64, float(2**64)),
    (-0.0, 0.0), ([1e-5], ["1e-05"]),
])
def test_values_that_only_look_alike_do_not_match(value: Any, other: Any) -> None:
    assert canonical_json(value) != canonical_json(other)
    assert not matches_canonical(value, canonical_json(other))


def test_a_value_canonical_json_refuses_matches_no_other_text() -> None:
    assert not matches_canonical({"a": math.inf}, '{"a":1e999}')
    assert not matches_canonical({"a": 2**70}, '{"a":1180591620717411303424.0}')
