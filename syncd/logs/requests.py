"""Parsed write requests (SPEC §2.1–§2.3): decoded JSON in, typed request or 400 out.

Field-level errors are reported first, in the serializer's field order (as DRF does), then
the cross-field rules in the SPEC's order. Absent optional fields are ``None``: JSON null
is refused for every field, so ``None`` always means "not sent".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from syncd.errors import InvalidRecordError
from syncd.logs.fields import (
    MAX_SECONDS,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_list,
    as_object,
    as_str,
    as_uuid,
    check_json,
    require_object,
)
from syncd.logs.records import JSON

CONTENT_KINDS = frozenset({
    "topic", "video", "audio", "exercise", "document", "html5", "slideshow", "h5p", "zim", "quiz",
})
MASTERY_TYPES = frozenset({
    "do_all", "num_correct_in_a_row_2", "num_correct_in_a_row_3", "num_correct_in_a_row_5",
    "num_correct_in_a_row_10", "skill_check", "m_of_n", "quiz", "pre_post_test",
})
TEST_TYPES = frozenset({"pre", "post"})
MAX_ITEM_LENGTH = 200  # AttemptLog.item is a CharField(max_length=200)


@dataclass(frozen=True, slots=True)
class StartRequest:
    """POST /api/logger/trackprogress/ after validation."""

    node_id: str | None
    content_id: str | None
    channel_id: str | None
    kind: str | None
    mastery_model: dict[str, JSON] | None   # {type, m?, n?} in that key order
    lesson_id: str | None
    quiz_id: str | None
    course_session_id: str | None
    unit_id: str | None
    test_type: str | None
    repeat: bool


@dataclass(frozen=True, slots=True)
class Interaction:
    """One entry of an update's ``interactions``."""

    id: str | None
    item: str
    correct: float
    complete: bool
    time_spent: float
    answer: dict[str, JSON] | None        # None = not sent
    simple_answer: str | None             # None = not sent
    error: bool
    hinted: bool
    replace: bool


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """PUT /api/logger/trackprogress/<id>/ after validation."""

    progress_delta: float | None
    progress: float | None
    time_spent_delta: float | None
    extra_fields: dict[str, JSON] | None
    interactions: tuple[Interaction, ...] | None

    def event_fields(self) -> dict[str, JSON]:
        """The keys this request sets on the session, exactly as sent (SPEC §1.8)."""
        fields: dict[str, JSON] = {}
        if self.progress_delta is not None:
            fields["progress_delta"] = self.progress_delta
        if self.progress is not None:
            fields["progress"] = self.progress
        if self.time_spent_delta is not None:
            fields["time_spent_delta"] = self.time_spent_delta
        if self.extra_fields is not None:
            fields["extra_fields"] = self.extra_fields
        return fields


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """PUT /api/auth/session/current/ (SPEC §2.3)."""

    active: bool
    device_info: str


def parse_mastery_model(value: Any, field: str = "mastery_model") -> dict[str, JSON]:
    """``{type, m?, n?}``; other keys are dropped, the key order is always type, m, n."""
    data = require_object(value, field)
    if "type" not in data:
        raise InvalidRecordError(f"{field}.type", "This field is required.", code="required")
    model: dict[str, JSON] = {"type": as_choice(data["type"], f"{field}.type", MASTERY_TYPES)}
    for key in ("m", "n"):
        if key in data:
            model[key] = as_int(data[key], f"{field}.{key}")
    return model


def parse_start(payload: Any) -> StartRequest:
    """Validate a start body (SPEC §2.1 errors 1–9)."""
    data = require_object(payload)
    uuids = {key: (as_uuid(data[key], key) if key in data else None)
             for key in ("lesson_id", "node_id", "content_id", "channel_id")}
    kind = as_choice(data["kind"], "kind", CONTENT_KINDS) if "kind" in data else None
    mastery_model = parse_mastery_model(data["mastery_model"]) if "mastery_model" in data else None
    quiz_id = as_uuid(data["quiz_id"], "quiz_id") if "quiz_id" in data else None
    repeat = as_bool(data["repeat"], "repeat") if "repeat" in data else False
    course_session_id = as_uuid(data["course_session_id"], "course_session_id") if "course_session_id" in data else None
    unit_id = as_uuid(data["unit_id"], "unit_id") if "unit_id" in data else None
    test_type = as_choice(data["test_type"], "test_type", TEST_TYPES) if "test_type" in data else None
    request = StartRequest(
        node_id=uuids["node_id"], content_id=uuids["content_id"], channel_id=uuids["channel_id"],
        kind=kind, mastery_model=mastery_model, lesson_id=uuids["lesson_id"], quiz_id=quiz_id,
        course_session_id=course_session_id, unit_id=unit_id, test_type=test_type, repeat=repeat,
    )
    _check_start(request)
    return request


def _check_start(r: StartRequest) -> None:
    if r.node_id is None and r.quiz_id is None and r.unit_id is None:
        raise InvalidRecordError("non_field_errors", "One of node_id, quiz_id, or unit_id is required", code="required")
    if r.quiz_id is not None and (r.lesson_id is not None or r.node_id is not None):
        raise InvalidRecordError("quiz_id", "quiz_id must not be mixed with lesson_id or node_id", code="invalid")
    if r.course_session_id is not None and r.lesson_id is not None:
        raise InvalidRecordError("course_session_id", "course_session_id must not be mixed with lesson_id", code="invalid")
    if r.unit_id is not None and (r.node_id is not None or r.quiz_id is not None):
        raise InvalidRecordError("unit_id", "unit_id must not be mixed with node_id or quiz_id", code="invalid")
    if r.node_id is not None:
        problems: list[tuple[str, str, str]] = []  # (field, message, code), all reported at once
        if r.kind is None:
            problems.append(("kind", "kind is required with node_id", "required"))
        elif r.kind == "exercise" and r.mastery_model is None:
            problems.append(("mastery_model", "mastery_model is required for exercise kinds", "required"))
        elif r.kind != "exercise" and r.mastery_model is not None:
            problems.append(("mastery_model", "mastery_model must not be given for non-exercise kinds", "invalid"))
        if r.content_id is None:
            problems.append(("content_id", "content_id is required with node_id", "required"))
        if r.channel_id is None:
            problems.append(("channel_id", "channel_id is required with node_id", "required"))
        if problems:
            raise InvalidRecordError(problems[0][0], "; ".join(p[1] for p in problems), code=problems[0][2])
    if r.unit_id is not None and (r.test_type is None or r.course_session_id is None):
        missing = [k for k, v in (("test_type", r.test_type), ("course_session_id", r.course_session_id)) if v is None]
        raise InvalidRecordError(missing[0], f"unit_id requires {' and '.join(missing)}", code="required")
    model = r.mastery_model
    if r.node_id is not None and model is not None and model["type"] == "m_of_n":
        # [syncd] Kolibri accepts this and then fails with a 500 when it indexes by n.
        for key in ("m", "n"):
            value = model.get(key)
            if not isinstance(value, int) or value < 1:
                raise InvalidRecordError(
                    f"mastery_model.{key}", f"m_of_n needs a positive integer {key}", code="required"
                )


def parse_update(payload: Any) -> UpdateRequest:
    """Validate an update body (SPEC §2.2 step 1)."""
    data = require_object(payload)
    progress_delta = _opt_float(data, "progress_delta", 0.0, 1.0)
    progress = _opt_float(data, "progress", 0.0, 1.0)
    time_spent_delta = _opt_float(data, "time_spent_delta", 0.0, MAX_SECONDS)
    extra_fields = as_object(data["extra_fields"], "extra_fields") if "extra_fields" in data else None
    interactions: tuple[Interaction, ...] | None = None
    if "interactions" in data:
        items = as_list(data["interactions"], "interactions")
        interactions = tuple(parse_interaction(item, f"interactions.{n}") for n, item in enumerate(items))
    if progress_delta is not None and progress is not None:
        raise InvalidRecordError(
            "non_field_errors", "must not pass progress_delta and progress in the same request", code="invalid"
        )
    return UpdateRequest(progress_delta, progress, time_spent_delta, extra_fields, interactions)


def _opt_float(data: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    if key not in data:
        return None
    return as_float(data[key], key, min_value=low, max_value=high)


def parse_interaction(value: Any, field: str) -> Interaction:
    """One interaction; ``answer`` is required unless ``error`` is true."""
    data = require_object(value, field)
    prefix = field + "."
    interaction_id = as_uuid(data["id"], prefix + "id") if "id" in data else None
    for key in ("item", "correct", "time_spent"):
        if key not in data:
            raise InvalidRecordError(prefix + key, "This field is required.", code="required")
    item = as_str(data["item"], prefix + "item", max_length=MAX_ITEM_LENGTH)
    correct = as_float(data["correct"], prefix + "correct", min_value=0.0, max_value=1.0)
    complete = as_bool(data["complete"], prefix + "complete") if "complete" in data else False
    time_spent = as_float(data["time_spent"], prefix + "time_spent", min_value=0.0, max_value=MAX_SECONDS)
    answer = as_object(data["answer"], prefix + "answer") if "answer" in data else None
    simple_answer = (as_str(data["simple_answer"], prefix + "simple_answer", allow_blank=True)
                     if "simple_answer" in data else None)
    error = as_bool(data["error"], prefix + "error") if "error" in data else False
    hinted = as_bool(data["hinted"], prefix + "hinted") if "hinted" in data else False
    replace = as_bool(data["replace"], prefix + "replace") if "replace" in data else False
    if not error and answer is None:
        raise InvalidRecordError(field, "Must provide an answer if not an error", code="required")
    return Interaction(interaction_id, item, correct, complete, time_spent, answer, simple_answer,
                       error, hinted, replace)


def parse_heartbeat(payload: Any) -> HeartbeatRequest:
    """``active`` is Python-truthy as in Kolibri (a missing key is inactive); ``device_info``
    is ``"{os.name},{os.major}/{browser.name},{browser.major}"`` with a missing key as ""
    and JSON null as "None", truncated to 100 characters ([syncd])."""
    data = require_object(payload)

    def part(section: str, key: str) -> str:
        info = data.get(section, {})
        if not isinstance(info, dict):  # Kolibri would fail with a 500 here
            info = {}
        return str(info.get(key, ""))

    device_info = f"{part('os', 'name')},{part('os', 'major')}/{part('browser', 'name')},{part('browser', 'major')}"
    device_info = device_info[:100]
    check_json(device_info, "device_info")
    return HeartbeatRequest(active=bool(data.get("active", False)), device_info=device_info)
