"""POST /api/logger/trackprogress/ (SPEC §2.1): validation, permissions, decisions, response."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest

from syncd.errors import InvalidRecordError, PermissionDeniedError
from syncd.logs import writes
from syncd.logs.state import PartitionState
from tests.logs.helpers import (
    CHANNEL, CONTENT, COURSE, LESSON, NODE, QUIZ, UNIT, USER, Learner, answer, exercise, ts, video,
)


def start_error(payload: Any, user: str | None = USER) -> tuple[int, dict[str, Any]]:
    learner = Learner(user)
    status, body = learner.start(payload)
    assert learner.raw_count() == 0, "a refused start must leave no trace"
    return status, body


# --- 400: validation errors 1-9 ------------------------------------------------------------
@pytest.mark.parametrize("payload, field, code", [
    ({}, "non_field_errors", "required"),                                          # 1
    ({"repeat": True, "lesson_id": LESSON}, "non_field_errors", "required"),       # 1
    ({"quiz_id": QUIZ, "lesson_id": LESSON}, "quiz_id", "invalid"),               # 2
    ({"quiz_id": QUIZ, **video()}, "quiz_id", "invalid"),                          # 2
    ({**video(), "course_session_id": COURSE, "lesson_id": LESSON}, "course_session_id", "invalid"),  # 3
    ({"unit_id": UNIT, "node_id": NODE, "course_session_id": COURSE, "test_type": "pre"}, "unit_id", "invalid"),  # 4
    ({"unit_id": UNIT, "quiz_id": QUIZ, "course_session_id": COURSE, "test_type": "pre"}, "unit_id", "invalid"),  # 4
    ({"node_id": NODE}, "kind", "required"),                                       # 5
    ({"node_id": NODE, "kind": "video", "channel_id": CHANNEL}, "content_id", "required"),   # 5
    ({"node_id": NODE, "kind": "video", "content_id": CONTENT}, "channel_id", "required"),   # 5
    ({**video(), "kind": "exercise"}, "mastery_model", "required"),                # 6
    ({**video(), "mastery_model": {"type": "do_all"}}, "mastery_model", "invalid"),  # 6
    ({**exercise(), "mastery_model": None}, "mastery_model", "null"),              # 6
    ({"unit_id": UNIT, "course_session_id": COURSE}, "test_type", "required"),    # 7
    ({"unit_id": UNIT, "test_type": "post"}, "course_session_id", "required"),    # 7
    ({**video(), "node_id": "not-a-uuid"}, "node_id", "invalid"),                 # 8
    ({**video(), "content_id": "1234"}, "content_id", "invalid"),                 # 8
    ({**video(), "kind": "movie"}, "kind", "invalid_choice"),                     # 8
    ({**exercise({"type": "best_of_3"})}, "mastery_model.type", "invalid_choice"),  # 8
    ({**exercise({"m": 3})}, "mastery_model.type", "required"),                    # 8
    ({**exercise({"type": "m_of_n", "m": 3})}, "mastery_model.n", "required"),      # 9
    ({**exercise({"type": "m_of_n", "m": 0, "n": 5})}, "mastery_model.m", "required"),  # 9
    ({**exercise({"type": "m_of_n", "m": "x", "n": 5})}, "mastery_model.m", "invalid"),
    ({**exercise({"type": "m_of_n", "m": 2.5, "n": 5})}, "mastery_model.m", "invalid"),
    ({**exercise(), "mastery_model": [1]}, "mastery_model", "invalid"),
    ({"unit_id": UNIT, "course_session_id": COURSE, "test_type": "mid"}, "test_type", "invalid_choice"),
    ({**video(), "repeat": "maybe"}, "repeat", "invalid"),
    ({**video(), "repeat": None}, "repeat", "null"),
])
def test_invalid_start_is_400(payload: dict[str, Any], field: str, code: str) -> None:
    status, body = start_error(payload)
    assert status == 400
    assert body["error"] == code
    assert body["detail"].startswith(field + ": ")


def test_all_missing_node_fields_are_reported_at_once() -> None:
    status, body = start_error({"node_id": NODE})
    assert status == 400
    assert all(name in body["detail"] for name in ("kind", "content_id", "channel_id"))


@pytest.mark.parametrize("payload", [None, [], [video()], "start", 7, True])
def test_a_body_that_is_not_an_object_is_400(payload: Any) -> None:
    status, body = start_error(payload)
    assert status == 400
    assert body["detail"].startswith("non_field_errors: ")


def test_errors_are_raised_as_invalid_record_errors_naming_the_field() -> None:
    ctx = _ctx(USER)
    with pytest.raises(InvalidRecordError) as caught:
        writes.start_session(PartitionState("user:" + USER), {**video(), "kind": "movie"}, ctx)
    assert caught.value.field == "kind" and caught.value.status == 400
    assert "movie" in caught.value.detail


# --- coercion ------------------------------------------------------------------------------
def test_uuids_in_any_standard_form_are_normalised() -> None:
    body = Learner().started({**video(), "node_id": "{" + str(uuid.UUID(NODE)).upper() + "}",
                              "content_id": "urn:uuid:" + str(uuid.UUID(CONTENT)),
                              "channel_id": CHANNEL.upper(), "unknown": [1, 2]})
    assert body["context"] == {"node_id": NODE}


@pytest.mark.parametrize("spelling, expected", [
    ("yes", True), ("true", True), ("on", True), ("t", True), ("Y", True), (1, True), ("1", True),
    ("no", False), ("False", False), ("off", False), (0, False), ("0", False), (False, False),
])
def test_repeat_accepts_drf_boolean_spellings(spelling: Any, expected: bool) -> None:
    learner = Learner()
    first = learner.started(video())
    learner.updated(first["session_id"], {"progress_delta": 0.5}, 5)
    body = learner.started({**video(), "repeat": spelling}, 10)
    assert body["progress"] == (0.0 if expected else 0.5)


def test_mastery_model_keeps_only_type_m_n_in_that_order() -> None:
    body = Learner().started(exercise({"n": "5", "extra": 1, "m": 3.0, "type": "m_of_n"}))
    assert list(body["mastery_criterion"].items()) == [("type", "m_of_n"), ("m", 3), ("n", 5)]


# --- 403 and unchecked permissions -------------------------------------------------------
@pytest.mark.parametrize("payload", [
    {"quiz_id": QUIZ},
    {**video(), "lesson_id": LESSON},
    {**video(), "course_session_id": COURSE},
    {"unit_id": UNIT, "course_session_id": COURSE, "test_type": "pre"},
])
def test_anonymous_lesson_quiz_course_starts_are_403(payload: dict[str, Any]) -> None:
    status, body = start_error(payload, user=None)
    assert status == 403
    assert body["error"] == "permission_denied"


@pytest.mark.parametrize("payload, header", [
    ({"quiz_id": QUIZ}, "quiz-assignment"),
    ({**video(), "lesson_id": LESSON}, "lesson-assignment"),
    ({**video(), "course_session_id": COURSE}, "course-assignment"),
    ({"unit_id": UNIT, "course_session_id": COURSE, "test_type": "pre"}, "course-assignment"),
])
def test_assignment_checks_are_skipped_and_say_so(payload: dict[str, Any], header: str) -> None:
    result = writes.start_session(PartitionState("user:" + USER), payload, _ctx(USER))
    assert result.headers == {"X-Syncd-Unchecked": header}


def test_a_plain_start_has_no_unchecked_header() -> None:
    assert writes.start_session(PartitionState("user:" + USER), video(), _ctx(USER)).headers == {}


# --- context and targets -------------------------------------------------------------------
def test_context_keys_in_kolibri_order() -> None:
    body = Learner().started({**exercise(), "lesson_id": LESSON})
    assert list(body["context"]) == ["node_id", "lesson_id", "mastery_level"]
    body = Learner().started({**exercise(), "course_session_id": COURSE})
    assert list(body["context"]) == ["node_id", "mastery_level", "course_session_id"]


def test_coach_quiz_start() -> None:
    learner = Learner()
    body = learner.started({"quiz_id": QUIZ})
    assert body["mastery_criterion"] == {"type": "quiz", "coach_assigned": True}
    assert list(body["context"]) == ["quiz_id", "mastery_level"]
    assert -2**31 <= body["context"]["mastery_level"] <= -1
    session = learner.row("contentsessionlog")
    assert (session["content_id"], session["channel_id"], session["kind"]) == (QUIZ, None, "quiz")


@pytest.mark.parametrize("test_type", ["pre", "post"])
def test_pre_post_test_start(test_type: str) -> None:
    learner = Learner()
    body = learner.started({"unit_id": UNIT, "course_session_id": COURSE, "test_type": test_type})
    content = uuid.uuid5(uuid.UUID("7c9e4b1a-3d5f-4a8e-9c2b-6d0e1f2a3b4c"),
                         f"{COURSE}:{UNIT}:{test_type}").hex
    even = int(hashlib.md5(f"{USER}:{COURSE}:{UNIT}".encode()).hexdigest()[-1], 16) % 2 == 0
    version = {("pre", True): "A", ("post", True): "B", ("pre", False): "B", ("post", False): "A"}
    assert body["mastery_criterion"] == {"type": "pre_post_test", "version": version[(test_type, even)],
                                         "test_type": test_type}
    assert list(body["context"]) == ["mastery_level", "course_session_id", "unit_id"]
    assert body["context"]["mastery_level"] < 0
    assert learner.row("contentsessionlog")["content_id"] == content


def test_anonymous_exercise_start_has_defaults_and_no_mastery_level() -> None:
    learner = Learner(user=None)
    learner.device.visitor_id = "F" * 32
    body = learner.started(exercise())
    assert body == {"progress": 0.0, "extra_fields": {}, "time_spent": 0.0, "complete": False,
                    "mastery_criterion": {"type": "m_of_n", "m": 3, "n": 5}, "pastattempts": [],
                    "totalattempts": 0, "session_id": body["session_id"], "context": {"node_id": NODE}}
    assert learner.row("contentsessionlog")["visitor_id"] == "f" * 32
    assert learner.rows("contentsummarylog") == [] and learner.rows("masterylog") == []


# --- mastery binding (step 4) --------------------------------------------------------------
def test_exercise_levels_reuse_then_repeat_after_mastery() -> None:
    learner = Learner()
    first = learner.started(exercise({"type": "num_correct_in_a_row_2"}))
    assert first["context"]["mastery_level"] == 1
    sid = first["session_id"]
    learner.updated(sid, {"progress_delta": 0.5, "time_spent_delta": 5, "interactions": [answer("a")]}, 5)
    again = learner.started(exercise({"type": "num_correct_in_a_row_2"}), 60)
    assert again["context"]["mastery_level"] == 1 and again["totalattempts"] == 1
    learner.updated(again["session_id"], {"progress_delta": 0.5, "time_spent_delta": 4,
                                          "interactions": [answer("b", seconds=4)]}, 64)
    done = learner.started(exercise({"type": "num_correct_in_a_row_2"}), 120)
    assert (done["context"]["mastery_level"], done["complete"], done["time_spent"]) == (1, True, 9.0)
    repeat = learner.started({**exercise({"type": "num_correct_in_a_row_2"}), "repeat": True}, 180)
    assert repeat["context"]["mastery_level"] == 2
    assert (repeat["complete"], repeat["time_spent"], repeat["progress"]) == (False, 0.0, 0.0)
    assert (repeat["totalattempts"], repeat["pastattempts"]) == (0, [])
    assert sorted(m["mastery_level"] for m in learner.rows("masterylog")) == [1, 2]


def test_repeat_on_an_incomplete_try_resets_progress_but_keeps_the_level() -> None:
    learner = Learner()
    first = learner.started(exercise())
    learner.updated(first["session_id"], {"progress_delta": 0.334, "interactions": [answer("a")]}, 5)
    repeat = learner.started({**exercise(), "repeat": True}, 60)
    assert repeat["context"]["mastery_level"] == 1
    assert repeat["progress"] == 0.0 and repeat["totalattempts"] == 1


def test_mastery_criterion_is_fixed_when_the_log_is_created() -> None:
    learner = Learner()
    learner.started(exercise({"type": "m_of_n", "m": 3, "n": 5}))
    body = learner.started(exercise({"type": "do_all"}), 60)
    assert body["mastery_criterion"] == {"type": "m_of_n", "m": 3, "n": 5}
    assert learner.row("masterylog")["mastery_criterion"] == {"type": "m_of_n", "m": 3, "n": 5}


def test_submitted_coach_quiz_start_is_403_and_repeat_is_a_retake() -> None:
    learner = Learner()
    first = learner.started({"quiz_id": QUIZ})
    learner.updated(first["session_id"], {"progress_delta": 1, "time_spent_delta": 3}, 3)
    before = learner.snapshot()
    status, _ = learner.start({"quiz_id": QUIZ}, 10)
    assert status == 403 and learner.snapshot() == before
    retake = learner.started({"quiz_id": QUIZ, "repeat": True}, 20)
    assert retake["context"]["mastery_level"] not in (first["context"]["mastery_level"], None)
    assert retake["complete"] is False and retake["progress"] == 0.0


def test_a_completed_practice_quiz_is_not_403() -> None:
    learner = Learner()
    first = learner.started(exercise({"type": "quiz"}))
    assert first["context"]["mastery_level"] < 0
    learner.updated(first["session_id"], {"progress_delta": 1}, 3)
    again = learner.started(exercise({"type": "quiz"}), 10)
    assert again["context"]["mastery_level"] == first["context"]["mastery_level"]
    assert again["complete"] is True


def test_a_new_quiz_level_never_reuses_a_level_in_use() -> None:
    levels = iter([-5, -5, -7])
    state = PartitionState("user:" + USER)
    first = writes.start_session(state, {"quiz_id": QUIZ}, _ctx(USER, levels=levels))
    state.apply(first.mutations)
    sid = first.response["session_id"]
    state.apply(writes.update_session(state, sid, {"progress_delta": 1}, _ctx(USER, 5)).mutations)
    retake = writes.start_session(state, {"quiz_id": QUIZ, "repeat": True}, _ctx(USER, 9, levels=levels))
    assert retake.response["context"]["mastery_level"] == -7


# --- response ------------------------------------------------------------------------------
@pytest.mark.parametrize("model, returned", [
    ({"type": "m_of_n", "m": 1, "n": 2}, 2),
    ({"type": "num_correct_in_a_row_3"}, 3),
    ({"type": "do_all"}, 10),
    ({"type": "skill_check"}, 10),
])
def test_pastattempts_newest_first_capped_by_type(model: dict[str, Any], returned: int) -> None:
    learner = Learner()
    sid = learner.started(exercise(model))["session_id"]
    for n in range(12):
        learner.updated(sid, {"interactions": [answer(f"q{n}", correct=n % 2, seconds=2)]}, 10 * (n + 1))
    body = learner.started(exercise(model), 500)
    assert body["totalattempts"] == 12
    assert [a["item"] for a in body["pastattempts"]] == [f"q{n}" for n in range(11, 11 - returned, -1)]
    assert set(body["pastattempts"][0]) == {"id", "correct", "complete", "hinted", "error", "item", "answer",
                                            "time_spent"}


def test_quiz_pastattempts_are_all_in_creation_order() -> None:
    learner = Learner()
    sid = learner.started({"quiz_id": QUIZ})["session_id"]
    # later items were started earlier (longer time_spent): creation order still wins
    for n in range(4):
        learner.updated(sid, {"interactions": [answer(f"x:{n}", seconds=100 * n, replace=True)]}, 400 + n)
    body = learner.started({"quiz_id": QUIZ}, 900)
    assert [a["item"] for a in body["pastattempts"]] == ["x:0", "x:1", "x:2", "x:3"]


def test_non_assessment_response_uses_the_summary() -> None:
    learner = Learner()
    sid = learner.started(video())["session_id"]
    learner.updated(sid, {"progress_delta": 1, "time_spent_delta": 12, "extra_fields": {"p": 1}}, 12)
    body = learner.started(video(), 60)
    assert (body["progress"], body["time_spent"], body["complete"], body["extra_fields"]) == (1.0, 12.0, True, {"p": 1})
    assert list(body) == ["progress", "extra_fields", "time_spent", "complete", "session_id", "context"]


def test_session_record_carries_the_decisions() -> None:
    state = PartitionState("user:" + USER)
    result = writes.start_session(state, {**exercise(), "repeat": "yes"}, _ctx(USER))
    (create,) = result.mutations
    assert create.kind == "session"
    assert dict(create.fields) == {
        "user_id": USER, "content_id": CONTENT, "channel_id": CHANNEL, "kind": "exercise", "visitor_id": None,
        "start_timestamp": ts(0), "context": {"node_id": NODE, "mastery_level": 1}, "repeat": True,
        "mastery_level": 1, "mastery_criterion": {"type": "m_of_n", "m": 3, "n": 5}, "device_id": "1" * 64,
    }


def _ctx(user: str | None, seconds: float = 0, levels: Any = None) -> writes.WriteContext:
    counter = iter(range(1, 10_000))
    return writes.WriteContext(
        now=ts(seconds), user_id=user, device_id="1" * 64, dataset_id="d" * 32,
        new_id=lambda: f"{next(counter):032x}",
        random_quiz_level=(lambda: next(levels)) if levels is not None else (lambda: -42),
    )


def test_permission_errors_are_permission_denied_errors() -> None:
    with pytest.raises(PermissionDeniedError):
        writes.start_session(PartitionState("anon:" + "1" * 64), {"quiz_id": QUIZ}, _ctx(None))
