"""validate_record: what a peer may send (DESIGN §6 step 4)."""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import pytest

from syncd.errors import InvalidRecordError
from syncd.logs.records import RawRecord
from syncd.logs.validate import validate_record
from tests.logs.builders import attempt, event, interaction, session
from tests.logs.helpers import OTHER_DEVICE, QUIZ, USER, Learner, answer, exercise, video

EXAM = "ee" * 16


def examlog(**fields: Any) -> RawRecord:
    return RawRecord("e1" * 16, "examlog", {"exam_id": EXAM, "user_id": USER, "at": "2025-01-06T09:00:00.000000+00:00",
                                             "closed": False, "completion_timestamp": None, "device_id": "1" * 64,
                                             **fields})


def examattempt() -> RawRecord:
    base = attempt("e2" * 16, 10)
    fields = {k: v for k, v in base.fields.items() if k not in ("sessionlog_id", "mastery_level")}
    return RawRecord(base.id, "examattempt", {**fields, "exam_id": EXAM}, [interaction(20, 1, 1.0)])


def usersession() -> RawRecord:
    return RawRecord("a5" * 16, "usersession", {"user_id": USER, "start_timestamp": "2025-01-06T09:00:00.000000+00:00",
                                                 "device_info": ",/,", "device_id": "1" * 64},
                     [event(10, 1), event(20, 2)])


def test_every_record_the_writes_make_is_valid() -> None:
    learner = Learner()
    sid = learner.started(exercise())["session_id"]
    learner.updated(sid, {"progress_delta": 0.5, "time_spent_delta": 5, "extra_fields": {"a": [1, {"b": None}]},
                          "interactions": [answer("a", 0, hinted=True), answer("a"), answer("b", simple_answer="x"),
                                           {"item": "c", "correct": 0, "time_spent": 1, "error": True}]}, 5)
    quiz = learner.started({"quiz_id": QUIZ}, 10)["session_id"]
    learner.updated(quiz, {"progress": 1, "interactions": [answer("x:1", replace=True)]}, 15)
    learner.beat({"active": True}, 20)
    Learner(None, device=learner.device).started(video(), 30)
    records = [r for s in learner.device.states.values() for r in s.records.values()]
    assert {r.kind for r in records} == {"session", "attempt", "usersession"}
    for record in records:
        validate_record(record)


@pytest.mark.parametrize("record", [examlog(), examlog(closed=True, completion_timestamp="2025-01-06T09:00:00.000000+00:00"),
                                    examattempt(), usersession(), session("5e" * 16, 0, [event(5, 1, progress=1.0)])],
                         ids=["examlog", "closed examlog", "examattempt", "usersession", "session"])
def test_hand_built_records_of_every_kind_are_valid(record: RawRecord) -> None:
    validate_record(record)


def _set(path: str, value: Any) -> Callable[[RawRecord], None]:
    def change(record: RawRecord) -> None:
        target: Any = record
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else (
                getattr(target, part) if isinstance(target, RawRecord) else target[part])
        last = parts[-1]
        if isinstance(target, RawRecord):
            setattr(target, last, value)
        elif value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return change


_DELETE = object()
SESSION = session("5e" * 16, 0, [event(5, 1, progress_delta=0.5), event(6, 2, extra_fields={"a": 1})], level=1)
ATTEMPT = attempt("a7" * 16, 10, [interaction(20, 1, 1.0, complete=True)])


@pytest.mark.parametrize("base, change, field", [
    (SESSION, _set("id", "XYZ"), "id"),
    (SESSION, _set("kind", "video"), "kind"),
    (SESSION, _set("fields.content_id", "not hex"), "fields.content_id"),
    (SESSION, _set("fields.user_id", 5), "fields.user_id"),
    (SESSION, _set("fields.start_timestamp", "2025-01-06T09:00:00+00:00"), "fields.start_timestamp"),
    (SESSION, _set("fields.start_timestamp", "2025-02-30T09:00:00.000000+00:00"), "fields.start_timestamp"),
    (SESSION, _set("fields.kind", ""), "fields.kind"),
    (SESSION, _set("fields.kind", "k" * 201), "fields.kind"),
    (SESSION, _set("fields.repeat", "yes"), "fields.repeat"),
    (SESSION, _set("fields.mastery_level", 0), "fields.mastery_level"),
    (SESSION, _set("fields.mastery_level", 2), "fields.context.mastery_level"),
    (SESSION, _set("fields.mastery_level", True), "fields.mastery_level"),
    (SESSION, _set("fields.context", {"node_id": "x"}), "fields.context.node_id"),
    (SESSION, _set("fields.context", {"color": "red"}), "fields.context.color"),
    (SESSION, _set("fields.mastery_criterion", {"n": math.nan}), "fields.mastery_criterion"),
    (SESSION, _set("fields.mastery_criterion", {"big": "x" * 70_000}), "fields.mastery_criterion"),
    (SESSION, _set("fields.mastery_criterion", {1: 2}), "fields.mastery_criterion"),
    (SESSION, _set("fields.device_id", "1" * 63), "fields.device_id"),
    (SESSION, _set("fields.surprise", 1), "fields.surprise"),
    (SESSION, _set("fields.visitor_id", _DELETE), "fields.visitor_id"),
    (SESSION, _set("events.0.progress_delta", 1.5), "events.0.progress_delta"),
    (SESSION, _set("events.0.progress_delta", math.inf), "events.0.progress_delta"),
    (SESSION, _set("events.0.progress_delta", "0.5"), "events.0.progress_delta"),
    (SESSION, _set("events.0.progress", 0.5), "events.0"),
    (SESSION, _set("events.0.time_spent_delta", -1.0), "events.0.time_spent_delta"),
    (SESSION, _set("events.0.interactions", []), "events.0.interactions"),
    (SESSION, _set("events.1.extra_fields", [1]), "events.1.extra_fields"),
    (SESSION, _set("events.1.seq", 3), "events"),
    (SESSION, _set("events.1.seq", 0), "events.1.seq"),
    (SESSION, _set("events.1.device_id", "D2"), "events.1.device_id"),
    (SESSION, _set("events.1.at", "yesterday"), "events.1.at"),
    (SESSION, _set("events.1.at", _DELETE), "events.1.at"),
    (SESSION, _set("events", {}), "events"),
    (ATTEMPT, _set("fields.correct", 2), "fields.correct"),
    (ATTEMPT, _set("fields.correct", math.nan), "fields.correct"),
    (ATTEMPT, _set("fields.time_spent", "5"), "fields.time_spent"),
    (ATTEMPT, _set("fields.item", "i" * 201), "fields.item"),
    (ATTEMPT, _set("fields.simple_answer", "\ud800"), "fields.simple_answer"),
    (ATTEMPT, _set("fields.order", -1), "fields.order"),
    (ATTEMPT, _set("fields.history", {"type": "answer"}), "fields.history"),
    (ATTEMPT, _set("fields.history", {"type": "magic"}), "fields.history"),
    (ATTEMPT, _set("fields.user_id", None), "fields.mastery_level"),
    (ATTEMPT, _set("events.0.history", _DELETE), "events.0.history"),
    (ATTEMPT, _set("events.0.complete", False), "events.0.complete"),
    (ATTEMPT, _set("events.0.progress_delta", 0.1), "events.0.progress_delta"),
])
def test_malformed_records_are_refused(base: RawRecord, change: Callable[[RawRecord], None], field: str) -> None:
    record = copy.deepcopy(base)
    change(record)
    with pytest.raises(InvalidRecordError) as caught:
        validate_record(record)
    assert caught.value.field == field, caught.value.detail


def test_a_repeated_event_number_is_allowed_but_a_gap_is_not() -> None:
    record = copy.deepcopy(SESSION)
    record.events.append(event(7, 2, extra_fields={"clone": True}))
    validate_record(record)
    record.events.append(event(8, 1, OTHER_DEVICE))
    validate_record(record)
    record.events.append(event(9, 3, OTHER_DEVICE))
    with pytest.raises(InvalidRecordError):
        validate_record(record)


def test_exam_log_events_may_only_close_and_complete() -> None:
    record = examlog()
    record.events.append(event(10, 1, closed=True, completion_timestamp="2025-01-06T09:00:10.000000+00:00"))
    validate_record(record)
    record.events.append(event(11, 2, closed=False))
    with pytest.raises(InvalidRecordError):
        validate_record(record)
