"""Validation of raw records as they arrive from peers or imports (DESIGN §6 step 4).

``validate_record`` checks one record against the schema its kind documents in
``records.py``: exactly the known creation keys with the right types, events with the
meta keys ``at``/``device_id``/``seq`` (each device's ``seq`` numbers 1, 2, ... with no
gap) and only the fields that kind's events may set, canonical timestamps,
finite numbers in range, JSON values that serialise canonically within 64 KiB.

Checks that need the previous version of a record (creation fields unchanged, events only
appended) belong to the store, which holds both versions. Request bodies are parsed by
``requests.py`` with the coercion rules of ``fields.py``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Callable, Mapping, NoReturn

from syncd.errors import InvalidRecordError
from syncd.logs.fields import MAX_SECONDS, check_json
from syncd.logs.records import EVENT_META_KEYS, RECORD_KINDS, RawRecord

Check = Callable[[Any, str], None]

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
_CONTEXT_IDS = ("node_id", "quiz_id", "lesson_id", "course_session_id", "unit_id")
MAX_EVENTS = 100_000


def _fail(field: str, detail: str, code: str = "invalid") -> NoReturn:
    raise InvalidRecordError(field, detail, code=code)


def _optional(check: Check) -> Check:
    def checker(value: Any, field: str) -> None:
        if value is not None:
            check(value, field)
    return checker


def _hex32(value: Any, field: str) -> None:
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        _fail(field, "must be 32 lowercase hex characters")


def _hex64(value: Any, field: str) -> None:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        _fail(field, "must be 64 lowercase hex characters")


def _timestamp(value: Any, field: str) -> None:
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        _fail(field, "must be a timestamp like 2025-01-06T09:00:00.000000+00:00")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        _fail(field, f"{value!r} is not a real instant")


def _bool(value: Any, field: str) -> None:
    if not isinstance(value, bool):
        _fail(field, "must be true or false")


def _true(value: Any, field: str) -> None:
    if value is not True:
        _fail(field, "may only be set to true (it is sticky)")


def _number(low: float, high: float) -> Check:
    def checker(value: Any, field: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(field, "must be a number")
        check_json(value, field)  # refuses NaN and ±Infinity
        if not low <= value <= high:
            _fail(field, f"must be between {low:g} and {high:g}", "max_value" if value > high else "min_value")
    return checker


_unit = _number(0.0, 1.0)
_seconds = _number(0.0, MAX_SECONDS)


def _level(value: Any, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value == 0 or not -2**31 <= value < 2**31:
        _fail(field, "must be a non-zero 32-bit integer")


def _order(value: Any, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(field, "must be a non-negative integer")


def _text(max_length: int | None = None, min_length: int = 0) -> Check:
    def checker(value: Any, field: str) -> None:
        if not isinstance(value, str):
            _fail(field, "must be a string")
        if len(value) < min_length:
            _fail(field, "may not be blank", "blank")
        if max_length is not None and len(value) > max_length:
            _fail(field, f"must have at most {max_length} characters", "max_length")
        check_json(value, field)
    return checker


def _object(value: Any, field: str) -> None:
    if not isinstance(value, dict):
        _fail(field, "must be a JSON object", "not_a_dict")
    check_json(value, field)


def _context(value: Any, field: str) -> None:
    _object(value, field)
    for key, item in value.items():
        if key == "mastery_level":
            _level(item, f"{field}.mastery_level")
        elif key in _CONTEXT_IDS:
            _hex32(item, f"{field}.{key}")
        else:
            _fail(f"{field}.{key}", "is not a context key")


def _history_entry(value: Any, field: str) -> None:
    """One interaction summary: {type: error} | {type: hint, answer} | {type: answer, answer, correct}."""
    _object(value, field)
    shapes = {"error": {"type"}, "hint": {"type", "answer"}, "answer": {"type", "answer", "correct"}}
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in shapes or set(value) != shapes[kind]:
        _fail(field, "must be an interaction summary of type answer, hint or error")
    if kind == "answer":
        _unit(value["correct"], f"{field}.correct")


_hex32_opt = _optional(_hex32)
_ATTEMPT_VALUES: dict[str, Check] = {
    "correct": _unit, "answer": _optional(_object), "simple_answer": _text(), "time_spent": _seconds,
    "complete": _bool, "hinted": _bool, "error": _bool, "history": _history_entry,
}
_ATTEMPT_EVENT: dict[str, Check] = {
    "history": _history_entry, "time_spent": _seconds, "correct": _unit, "answer": _optional(_object),
    "simple_answer": _text(), "complete": _true, "hinted": _true, "error": _true,
}

# kind -> (creation fields, event fields, event fields every event must carry)
SCHEMAS: dict[str, tuple[dict[str, Check], dict[str, Check], frozenset[str]]] = {
    "session": ({
        "user_id": _hex32_opt, "content_id": _hex32, "channel_id": _hex32_opt, "kind": _text(200, 1),
        "visitor_id": _hex32_opt, "start_timestamp": _timestamp, "context": _context, "repeat": _bool,
        "mastery_level": _optional(_level), "mastery_criterion": _optional(_object), "device_id": _hex64,
    }, {
        "progress_delta": _unit, "progress": _unit, "time_spent_delta": _seconds, "extra_fields": _object,
    }, frozenset()),
    "attempt": ({
        "user_id": _hex32_opt, "sessionlog_id": _hex32, "content_id": _hex32, "mastery_level": _optional(_level),
        "item": _text(200, 1), "start_timestamp": _timestamp, "at": _timestamp, "order": _order,
        "device_id": _hex64, **_ATTEMPT_VALUES,
    }, _ATTEMPT_EVENT, frozenset({"history", "time_spent"})),
    "usersession": ({
        "user_id": _hex32, "start_timestamp": _timestamp, "device_info": _optional(_text(100)),
        "device_id": _hex64,
    }, {}, frozenset()),
    "examlog": ({
        "exam_id": _hex32, "user_id": _hex32, "at": _timestamp, "closed": _bool,
        "completion_timestamp": _optional(_timestamp), "device_id": _hex64,
    }, {"closed": _true, "completion_timestamp": _timestamp}, frozenset()),
    "examattempt": ({
        "exam_id": _hex32, "user_id": _hex32, "content_id": _hex32, "item": _text(200, 1),
        "start_timestamp": _timestamp, "at": _timestamp, "order": _order, "device_id": _hex64,
        **_ATTEMPT_VALUES,
    }, _ATTEMPT_EVENT, frozenset({"history", "time_spent"})),
}


def validate_record(record: RawRecord) -> None:
    """Raise ``InvalidRecordError`` unless ``record`` is a well-formed raw record."""
    _hex32(record.id, "id")
    if record.kind not in RECORD_KINDS:
        _fail("kind", f"{record.kind!r} is not a record kind")
    creation, event_fields, event_required = SCHEMAS[record.kind]
    fields = record.fields
    if not isinstance(fields, dict):
        _fail("fields", "must be a JSON object", "not_a_dict")
    _exact_keys(fields, creation, "fields")
    for name, check in creation.items():
        check(fields[name], f"fields.{name}")
    _cross_checks(record.kind, fields)
    if not isinstance(record.events, list):
        _fail("events", "must be a list", "not_a_list")
    if len(record.events) > MAX_EVENTS:
        _fail("events", f"more than {MAX_EVENTS} events", "max_length")
    seqs: dict[str, list[int]] = {}
    for n, event in enumerate(record.events):
        path = f"events.{n}"
        if not isinstance(event, dict):
            _fail(path, "must be a JSON object", "not_a_dict")
        for key in ("at", "device_id", "seq"):
            if key not in event:
                _fail(f"{path}.{key}", "is required", "required")
        _timestamp(event["at"], f"{path}.at")
        _hex64(event["device_id"], f"{path}.device_id")
        seq = event["seq"]
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            _fail(f"{path}.seq", "must be a positive integer")
        seqs.setdefault(event["device_id"], []).append(seq)
        for key in event_required:
            if key not in event:
                _fail(f"{path}.{key}", "is required", "required")
        for key, value in event.items():
            if key in EVENT_META_KEYS:
                continue
            event_check = event_fields.get(key)
            if event_check is None:
                _fail(f"{path}.{key}", f"is not a field a {record.kind} event may set")
            event_check(value, f"{path}.{key}")
        if record.kind == "session" and "progress" in event and "progress_delta" in event:
            _fail(path, "sets both progress and progress_delta")
    for device, numbers in seqs.items():
        # A number may repeat (a cloned device, see integrity.py); a gap may not.
        if set(numbers) != set(range(1, max(numbers) + 1)):
            _fail("events", f"device {device[:12]}… numbers its events {sorted(set(numbers))[:8]}…, "
                  "not 1, 2, 3, …", "invalid")


def _exact_keys(data: Mapping[str, Any], schema: Mapping[str, Check], path: str) -> None:
    missing = [key for key in schema if key not in data]
    if missing:
        _fail(f"{path}.{missing[0]}", f"is required (missing: {', '.join(missing)})", "required")
    unknown = [key for key in data if key not in schema]
    if unknown:
        _fail(f"{path}.{unknown[0]}", f"is not a known field (unknown: {', '.join(map(str, unknown))})")


def _cross_checks(kind: str, fields: Mapping[str, Any]) -> None:
    if kind == "session":
        level = fields["mastery_level"]
        if fields["context"].get("mastery_level") != level:
            _fail("fields.context.mastery_level", "must equal fields.mastery_level")
        if level is not None and fields["user_id"] is None:
            _fail("fields.mastery_level", "anonymous sessions have no mastery level")
        if fields["user_id"] is not None and fields["visitor_id"] is not None:
            _fail("fields.visitor_id", "only anonymous sessions carry a visitor id")
    elif kind == "attempt":
        if fields["mastery_level"] is not None and fields["user_id"] is None:
            _fail("fields.mastery_level", "anonymous attempts have no mastery level")
