"""Field coercion with Django REST framework 3.14 semantics (SPEC §2 "Coercion").

Each ``as_*`` function takes a decoded JSON value and the dotted field path it came from,
and returns the coerced value or raises ``InvalidRecordError`` naming that path. The rules
are DRF's (numeric strings accepted, the DRF boolean spellings, trimmed strings), plus the
[syncd] refusals: non-finite numbers, JSON values that cannot be stored byte-identically
(NaN, lone surrogates, non-string keys), and oversize values.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any, Collection, Mapping

from syncd.errors import InvalidRecordError
from syncd.logs.records import JSON, canonical_json

# DRF's caps and spellings.
MAX_NUMBER_STRING = 1000
TRUE_VALUES = frozenset({"t", "T", "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE",
                         "on", "On", "ON", "1", 1, True})
FALSE_VALUES = frozenset({"f", "F", "n", "N", "no", "No", "NO", "false", "False", "FALSE",
                          "off", "Off", "OFF", "0", 0, 0.0, False})
_DECIMAL_TAIL = re.compile(r"\.0*\s*$")

# [syncd] limits that keep every stored value finite and bounded.
MAX_JSON_BYTES = 64 * 1024      # one JSON value (answer, extra_fields, ...) once serialised
MAX_JSON_DEPTH = 32
MAX_SECONDS = 1e9               # ~31 years: any time value above it is a client bug


def type_name(value: Any) -> str:
    """The JSON-ish type name DRF puts in its messages."""
    return type(value).__name__


def require_object(value: Any, field: str = "non_field_errors") -> Mapping[str, Any]:
    """A request body (or nested serializer input) must be a JSON object."""
    if value is None:
        raise InvalidRecordError(field, "No data provided.", code="null")
    if not isinstance(value, dict):
        raise InvalidRecordError(
            field, f"Invalid data. Expected a dictionary, but got {type_name(value)}.", code="invalid"
        )
    return value


def _not_null(value: Any, field: str) -> None:
    if value is None:
        raise InvalidRecordError(field, "This field may not be null.", code="null")


def as_float(value: Any, field: str, *, min_value: float | None = None,
             max_value: float | None = None) -> float:
    """DRF ``FloatField``: numbers, numeric strings and booleans; never NaN or ±Infinity."""
    _not_null(value, field)
    if isinstance(value, str) and len(value) > MAX_NUMBER_STRING:
        raise InvalidRecordError(field, "String value too large.", code="max_string_length")
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidRecordError(field, "A valid number is required.", code="invalid") from None
    if not math.isfinite(result):
        # [syncd] Kolibri crashes on NaN and stores inf; neither can be folded or serialised.
        raise InvalidRecordError(field, "NaN and infinite values are not allowed.", code="invalid")
    if min_value is not None and result < min_value:
        raise InvalidRecordError(
            field, f"Ensure this value is greater than or equal to {min_value:g}.", code="min_value"
        )
    if max_value is not None and result > max_value:
        raise InvalidRecordError(
            field, f"Ensure this value is less than or equal to {max_value:g}.", code="max_value"
        )
    return result


def as_int(value: Any, field: str) -> int:
    """DRF ``IntegerField``: ``3``, ``"3"``, ``3.0`` and ``"3.00"`` are 3; ``3.5`` is not."""
    _not_null(value, field)
    if isinstance(value, str) and len(value) > MAX_NUMBER_STRING:
        raise InvalidRecordError(field, "String value too large.", code="max_string_length")
    try:
        return int(_DECIMAL_TAIL.sub("", str(value)))
    except (TypeError, ValueError):
        raise InvalidRecordError(field, "A valid integer is required.", code="invalid") from None


def as_bool(value: Any, field: str) -> bool:
    """DRF ``BooleanField``: ``true``/``false``, ``1``/``0``, "yes", "on", "t", "y"..."""
    _not_null(value, field)
    try:
        if value in TRUE_VALUES:
            return True
        if value in FALSE_VALUES:
            return False
    except TypeError:  # unhashable (a list or an object)
        pass
    raise InvalidRecordError(field, "Must be a valid boolean.", code="invalid")


def as_str(value: Any, field: str, *, allow_blank: bool = False,
           max_length: int | None = None) -> str:
    """DRF ``CharField`` (trimmed); numbers are accepted and turned into text, as DRF does."""
    _not_null(value, field)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidRecordError(field, "Not a valid string.", code="invalid")
    text = str(value).strip()
    if not text and not allow_blank:
        raise InvalidRecordError(field, "This field may not be blank.", code="blank")
    if "\x00" in text:
        raise InvalidRecordError(field, "Null characters are not allowed.", code="null_characters_not_allowed")
    if max_length is not None and len(text) > max_length:
        raise InvalidRecordError(
            field, f"Ensure this field has no more than {max_length} characters.", code="max_length"
        )
    check_json(text, field)
    return text


def as_uuid(value: Any, field: str) -> str:
    """DRF ``UUIDField``: any textual form uuid.UUID accepts (or an int), as 32 lowercase hex."""
    _not_null(value, field)
    try:
        if isinstance(value, int):
            return uuid.UUID(int=value).hex
        if isinstance(value, str):
            return uuid.UUID(hex=value).hex
    except ValueError:
        pass
    raise InvalidRecordError(field, "Must be a valid UUID.", code="invalid")


def as_choice(value: Any, field: str, choices: Collection[str]) -> str:
    """DRF ``ChoiceField`` over string choices (compared as ``str(value)``, untrimmed)."""
    _not_null(value, field)
    if isinstance(value, (dict, list)) or str(value) not in choices:
        raise InvalidRecordError(field, f'"{value}" is not a valid choice.', code="invalid_choice")
    return str(value)


def as_object(value: Any, field: str) -> dict[str, JSON]:
    """DRF ``DictField`` of unvalidated values; the value must also be storable JSON."""
    _not_null(value, field)
    if not isinstance(value, dict):
        raise InvalidRecordError(
            field, f'Expected a dictionary of items but got type "{type_name(value)}".',
            code="not_a_dict",
        )
    check_json(value, field)
    return value


def as_list(value: Any, field: str) -> list[Any]:
    """DRF ``ListSerializer`` input."""
    _not_null(value, field)
    if not isinstance(value, list):
        raise InvalidRecordError(
            field, f'Expected a list of items but got type "{type_name(value)}".', code="not_a_list"
        )
    return value


def check_json(value: JSON, field: str) -> None:
    """Refuse anything that cannot be stored as canonical JSON, byte-identically everywhere:
    non-string keys, NaN/±Infinity, lone surrogates, nesting deeper than 32, over 64 KiB."""
    # Fast paths for scalars (most calls, when a peer's records are validated): the same
    # verdicts without serialising. A string's canonical form takes at most 6 bytes per
    # character (a control character's \u00XX) plus the quotes.
    kind = type(value)
    if kind is int or kind is bool or value is None:
        return
    if kind is float and math.isfinite(value):
        return
    if kind is str and len(value) * 6 + 2 <= MAX_JSON_BYTES:
        try:
            value.encode("utf-8")
            return
        except UnicodeEncodeError:
            pass  # a lone surrogate: the full check below words the error
    _check_shape(value, field, 0)
    try:
        size = len(canonical_json(value).encode("utf-8"))
    except (ValueError, UnicodeEncodeError):
        raise InvalidRecordError(
            field, "Contains a value JSON cannot store (NaN, Infinity or a lone surrogate).",
            code="invalid",
        ) from None
    if size > MAX_JSON_BYTES:
        raise InvalidRecordError(
            field, f"Value is {size} bytes once serialised; the limit is {MAX_JSON_BYTES}.",
            code="max_length",
        )


def _check_shape(value: JSON, field: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise InvalidRecordError(field, f"Nested deeper than {MAX_JSON_DEPTH} levels.", code="invalid")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRecordError(field, "NaN and infinite values are not allowed.", code="invalid")
        return
    if isinstance(value, list):
        for item in value:
            _check_shape(item, field, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidRecordError(field, "Object keys must be strings.", code="invalid")
            _check_shape(item, field, depth + 1)
        return
    raise InvalidRecordError(field, f"{type_name(value)} is not a JSON value.", code="invalid")
