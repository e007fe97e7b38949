"""DRF 3.14 coercion (SPEC §2 "Coercion") and the [syncd] refusals, field by field."""

from __future__ import annotations

import math
from typing import Any, Callable

import pytest

from syncd.errors import InvalidRecordError
from syncd.logs.fields import as_bool, as_choice, as_float, as_int, as_object, as_str, as_uuid, check_json

HEX = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("value, expected", [
    (1, 1.0), (0.25, 0.25), ("0.2", 0.2), (" 7 ", 7.0), ("1e-3", 0.001), (True, 1.0), (False, 0.0),
])
def test_as_float_accepts(value: Any, expected: float) -> None:
    result = as_float(value, "f")
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize("value, code", [
    (None, "null"), ("", "invalid"), ("abc", "invalid"), ([1], "invalid"), ({}, "invalid"), (10**400, "invalid"),
    (math.nan, "invalid"), (math.inf, "invalid"), ("-Infinity", "invalid"), ("NaN", "invalid"),
    ("9" * 1001, "max_string_length"),
])
def test_as_float_refuses(value: Any, code: str) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        as_float(value, "a.b")
    assert (caught.value.code, caught.value.field) == (code, "a.b")


def test_as_float_bounds() -> None:
    assert as_float("1.0", "f", min_value=0, max_value=1) == 1.0
    with pytest.raises(InvalidRecordError, match="greater than or equal to 0"):
        as_float(-0.5, "f", min_value=0)
    with pytest.raises(InvalidRecordError, match="less than or equal to 1"):
        as_float(1.0001, "f", max_value=1)


@pytest.mark.parametrize("value, expected", [(3, 3), ("3", 3), (3.0, 3), ("3.00", 3), (" 4 ", 4), ("-2", -2)])
def test_as_int_accepts(value: Any, expected: int) -> None:
    assert as_int(value, "n") == expected


@pytest.mark.parametrize("value", [3.5, "3.5", "x", True, math.nan, math.inf, [3], None])
def test_as_int_refuses(value: Any) -> None:
    with pytest.raises(InvalidRecordError):
        as_int(value, "n")


@pytest.mark.parametrize("value", ["t", "T", "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On",
                                   "ON", "1", 1, True, 1.0])
def test_as_bool_true(value: Any) -> None:
    assert as_bool(value, "b") is True


@pytest.mark.parametrize("value", ["f", "F", "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off",
                                   "OFF", "0", 0, 0.0, False])
def test_as_bool_false(value: Any) -> None:
    assert as_bool(value, "b") is False


@pytest.mark.parametrize("value", ["tRue", "", "null", 2, [], {}, math.nan, None])
def test_as_bool_refuses(value: Any) -> None:
    with pytest.raises(InvalidRecordError):
        as_bool(value, "b")


@pytest.mark.parametrize("value", [
    HEX, HEX.upper(), "01234567-89ab-cdef-0123-456789abcdef", "{01234567-89ab-cdef-0123-456789abcdef}",
    "urn:uuid:01234567-89ab-cdef-0123-456789abcdef", int(HEX, 16),
])
def test_as_uuid_normalises(value: Any) -> None:
    assert as_uuid(value, "u") == HEX


@pytest.mark.parametrize("value", [HEX[:-1], HEX + "0", " " + HEX, "g" * 32, -1, 1.5, [HEX], None])
def test_as_uuid_refuses(value: Any) -> None:
    with pytest.raises(InvalidRecordError):
        as_uuid(value, "u")


def test_as_str_trims_and_checks() -> None:
    assert as_str("  q1\n", "s") == "q1"
    assert as_str(5, "s") == "5"
    assert as_str("   ", "s", allow_blank=True) == ""
    refusals: list[Callable[[], Any]] = [
        lambda: as_str("  ", "s"), lambda: as_str(True, "s"), lambda: as_str(["a"], "s"),
        lambda: as_str("a\x00b", "s"), lambda: as_str("x" * 11, "s", max_length=10), lambda: as_str("\udc00", "s"),
    ]
    for refuse in refusals:
        with pytest.raises(InvalidRecordError):
            refuse()


def test_as_choice_compares_untrimmed_text() -> None:
    assert as_choice("video", "k", {"video"}) == "video"
    for value in (" video", "Video", ["video"], None):
        with pytest.raises(InvalidRecordError):
            as_choice(value, "k", {"video"})


def test_json_values_must_store_canonically() -> None:
    assert as_object({"a": [1, 2.5, None, True, {"b": "c"}]}, "o") == {"a": [1, 2.5, None, True, {"b": "c"}]}
    nested: Any = "leaf"
    for _ in range(40):
        nested = [nested]
    for bad in ({"a": math.nan}, {"a": [math.inf]}, {"a": "\ud800"}, {"a": {1: 2}}, {"a": object()},
                {"a": "x" * (64 * 1024)}, {"a": nested}):
        with pytest.raises(InvalidRecordError):
            check_json(bad, "o")
