"""PUT /api/logger/trackprogress/<id>/ (SPEC §2.2): validation, lookups, rules, atomicity."""

from __future__ import annotations

import math
from typing import Any

import pytest

from syncd.logs import writes
from syncd.logs.records import AppendEvent, CreateRecord
from syncd.logs.state import PartitionState
from tests.logs.helpers import (
    OTHER_USER, QUIZ, USER, Learner, answer, at, exercise, ts, video,
)


def session(learner: Learner, payload: dict[str, Any] | None = None) -> str:
    return str(learner.started(payload or exercise())["session_id"])


def refused(learner: Learner, sid: str, payload: Any, seconds: float = 5) -> tuple[int, dict[str, Any]]:
    before, raw = learner.snapshot(), learner.raw_count()
    status, body = learner.update(sid, payload, seconds)
    assert status >= 400
    assert learner.snapshot() == before and learner.raw_count() == raw, "a refused update must leave no trace"
    return status, body


# --- 400: body -------------------------------------------------------------------------------
GOOD = answer("q1")


@pytest.mark.parametrize("payload, field, code", [
    ({"progress_delta": 1.5}, "progress_delta", "max_value"),
    ({"progress_delta": -0.1}, "progress_delta", "min_value"),
    ({"progress": 2}, "progress", "max_value"),
    ({"progress": 0.5, "progress_delta": 0.1}, "non_field_errors", "invalid"),
    ({"time_spent_delta": -1}, "time_spent_delta", "min_value"),
    ({"time_spent_delta": 2e9}, "time_spent_delta", "max_value"),
    ({"time_spent_delta": "ten"}, "time_spent_delta", "invalid"),
    ({"time_spent_delta": None}, "time_spent_delta", "null"),
    ({"time_spent_delta": [1]}, "time_spent_delta", "invalid"),
    ({"progress_delta": "1" * 1001}, "progress_delta", "max_string_length"),
    ({"extra_fields": [1, 2]}, "extra_fields", "not_a_dict"),
    ({"extra_fields": "x"}, "extra_fields", "not_a_dict"),
    ({"extra_fields": {"n": math.nan}}, "extra_fields", "invalid"),
    ({"extra_fields": {"big": "x" * 70_000}}, "extra_fields", "max_length"),
    ({"extra_fields": {"s": "\ud800"}}, "extra_fields", "invalid"),
    ({"interactions": {"item": "q"}}, "interactions", "not_a_list"),
    ({"interactions": [7]}, "interactions.0", "invalid"),
    ({"interactions": [{**GOOD, "item": "  "}]}, "interactions.0.item", "blank"),
    ({"interactions": [{**GOOD, "item": "x" * 201}]}, "interactions.0.item", "max_length"),
    ({"interactions": [{**GOOD, "item": ["q"]}]}, "interactions.0.item", "invalid"),
    ({"interactions": [{k: v for k, v in GOOD.items() if k != "item"}]}, "interactions.0.item", "required"),
    ({"interactions": [{k: v for k, v in GOOD.items() if k != "correct"}]}, "interactions.0.correct", "required"),
    ({"interactions": [{k: v for k, v in GOOD.items() if k != "time_spent"}]}, "interactions.0.time_spent", "required"),
    ({"interactions": [GOOD, {**GOOD, "correct": 1.5}]}, "interactions.1.correct", "max_value"),
    ({"interactions": [{**GOOD, "time_spent": -2}]}, "interactions.0.time_spent", "min_value"),
    ({"interactions": [{k: v for k, v in GOOD.items() if k != "answer"}]}, "interactions.0", "required"),
    ({"interactions": [{**GOOD, "answer": ["a"]}]}, "interactions.0.answer", "not_a_dict"),
    ({"interactions": [{**GOOD, "answer": None}]}, "interactions.0.answer", "null"),
    ({"interactions": [{**GOOD, "id": "nope"}]}, "interactions.0.id", "invalid"),
    ({"interactions": [{**GOOD, "complete": "sure"}]}, "interactions.0.complete", "invalid"),
    ({"interactions": [{**GOOD, "replace": {}}]}, "interactions.0.replace", "invalid"),
])
def test_invalid_update_body_is_400(payload: dict[str, Any], field: str, code: str) -> None:
    learner = Learner()
    status, body = refused(learner, session(learner), payload)
    assert status == 400
    assert (body["error"], body["detail"].split(": ")[0]) == (code, field)


NUMERIC = ["progress_delta", "progress", "time_spent_delta"]
NON_FINITE = [math.nan, math.inf, -math.inf, "NaN", "nan", "Infinity", "-Infinity", "inf"]


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
@pytest.mark.parametrize("field", NUMERIC)
def test_non_finite_numbers_are_400(field: str, value: Any) -> None:
    learner = Learner()
    status, body = refused(learner, session(learner), {field: value})
    assert status == 400 and body["detail"].startswith(field + ": ")


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
@pytest.mark.parametrize("field", ["correct", "time_spent"])
def test_non_finite_interaction_numbers_are_400(field: str, value: Any) -> None:
    learner = Learner()
    status, body = refused(learner, session(learner), {"interactions": [{**GOOD, field: value}]})
    assert status == 400 and body["detail"].startswith(f"interactions.0.{field}: ")


@pytest.mark.parametrize("payload", [None, [], [{"progress": 1}], "x", 3, 1.5, False])
def test_a_body_that_is_not_an_object_is_400(payload: Any) -> None:
    learner = Learner()
    status, _ = refused(learner, session(learner), payload)
    assert status == 400


def test_body_errors_come_before_the_session_lookup() -> None:
    learner = Learner()
    status, _ = refused(learner, "f" * 32, {"progress_delta": 7})
    assert status == 400


# --- coercion -------------------------------------------------------------------------------
def test_numeric_strings_bool_spellings_trimmed_strings_and_unknown_keys() -> None:
    learner = Learner()
    sid = session(learner)
    body = learner.updated(sid, {
        "progress_delta": " 0.2 ", "time_spent_delta": "7", "whatever": {"x": 1},
        "interactions": [{"item": "  q1 ", "correct": "1", "time_spent": "6.5", "complete": "yes",
                          "hinted": "no", "error": 0, "answer": {"r": 1}, "simple_answer": "  A  ",
                          "unknown": True}]}, 10)
    (attempt,) = body["attempts"]
    assert (attempt["item"], attempt["correct"], attempt["complete"], attempt["time_spent"]) == ("q1", 1.0, True, 6.5)
    row = learner.row("attemptlog")
    assert row["simple_answer"] == "A" and row["start_timestamp"] == ts(3.5)
    summary = learner.row("contentsummarylog")
    assert (summary["progress"], summary["time_spent"]) == (0.2, 7.0)
    assert isinstance(summary["time_spent"], float)


def test_the_event_keeps_exactly_the_keys_sent() -> None:
    state = PartitionState("user:" + USER)
    start = writes.start_session(state, video(), _ctx(0))
    state.apply(start.mutations)
    sid = start.response["session_id"]
    for payload, keys in [({}, set()), ({"progress": 1}, {"progress"}),
                          ({"time_spent_delta": 0, "extra_fields": {}}, {"time_spent_delta", "extra_fields"})]:
        result = writes.update_session(state, sid, {**payload, "ignored": 1}, _ctx(5))
        (event,) = [m for m in result.mutations if isinstance(m, AppendEvent)]
        assert set(event.event) == {"at", "device_id", "seq"} | keys
        state.apply(result.mutations)
    assert [e["seq"] for e in state.records[sid].events] == [1, 2, 3]
    assert isinstance(state.records[sid].events[1]["progress"], float)


# --- 404 -------------------------------------------------------------------------------------
def test_unknown_or_malformed_or_foreign_sessions_are_404() -> None:
    learner = Learner()
    sid = session(learner, video())
    other = Learner(OTHER_USER, device=learner.device)
    anonymous = Learner(None, device=learner.device)
    anon_sid = session(anonymous, video())
    for who, target in [(learner, "f" * 32), (learner, "not-a-uuid"), (learner, ""), (learner, "../x"),
                        (other, sid), (anonymous, sid), (learner, anon_sid)]:
        status, body = refused(who, target, {"progress_delta": 0.1})
        assert (status, body["error"]) == (404, "not_found")


def test_the_session_id_accepts_any_uuid_form() -> None:
    learner = Learner()
    sid = session(learner, video())
    dashed = f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}".upper()
    assert learner.updated(dashed, {"progress_delta": 1}, 5) == {"complete": True}


# --- 403 and the coach quiz ---------------------------------------------------------------
def test_updates_after_a_coach_quiz_is_submitted_are_403() -> None:
    learner = Learner()
    sid = session(learner, {"quiz_id": QUIZ})
    body = learner.updated(sid, {"time_spent_delta": 5, "interactions": [answer("e:1", replace=True)]}, 5)
    attempt = body["attempts"][0]["id"]
    assert learner.updated(sid, {"progress_delta": 1, "time_spent_delta": 2}, 7) == {"complete": True}
    for payload in [{"time_spent_delta": 5}, {}, {"interactions": [answer("e:1", 0, id=attempt, replace=True)]}]:
        status, body = refused(learner, sid, payload, 10)
        assert (status, body["error"]) == (403, "permission_denied")
    mastery = learner.row("masterylog")
    assert (mastery["complete"], mastery["time_spent"]) == (True, 7.0)


def test_quiz_updates_say_the_assignment_was_not_checked() -> None:
    state = PartitionState("user:" + USER)
    start = writes.start_session(state, {"quiz_id": QUIZ}, _ctx(0))
    state.apply(start.mutations)
    result = writes.update_session(state, start.response["session_id"], {}, _ctx(5))
    assert result.headers == {"X-Syncd-Unchecked": "quiz-assignment"}


# --- interactions ---------------------------------------------------------------------------
def test_unknown_attempt_id_is_400() -> None:
    learner = Learner()
    sid = session(learner)
    status, body = refused(learner, sid, {"interactions": [{**GOOD, "id": "e" * 32}]})
    assert status == 400 and "Invalid attemptlog id" in body["detail"]


def test_an_attempt_of_another_mastery_log_is_not_found() -> None:
    learner = Learner()
    first = session(learner)
    attempt = learner.updated(first, {"interactions": [GOOD]}, 5)["attempts"][0]["id"]
    video_session = session(learner, video())
    status, _ = refused(learner, video_session, {"interactions": [{**GOOD, "id": attempt}]}, 10)
    assert status == 400
    # the same attempt is found from its own mastery log, from a later session too
    second = session(learner)
    body = learner.updated(second, {"interactions": [{**GOOD, "id": attempt, "time_spent": 9}]}, 20)
    assert body["attempts"][0]["id"] == attempt and body["attempts"][0]["time_spent"] == 9.0


def test_runs_of_consecutive_items_make_attempts() -> None:
    learner = Learner()
    sid = session(learner)
    body = learner.updated(sid, {"interactions": [answer("a", 0, 2), answer("a", 1, 4), answer("b"),
                                                  answer("a", 1, 1)]}, 10)
    assert [a["item"] for a in body["attempts"]] == ["a", "b", "a"]
    assert len({a["id"] for a in body["attempts"]}) == 3
    first = body["attempts"][0]
    assert (first["correct"], first["complete"], first["time_spent"]) == (0.0, True, 4.0)
    rows = {r["id"]: r for r in learner.rows("attemptlog")}
    assert len(rows[first["id"]]["interaction_history"]) == 2
    assert rows[first["id"]]["start_timestamp"] == ts(8)     # now - the first interaction's time


def test_ids_after_the_first_interaction_of_a_run_are_ignored() -> None:
    learner = Learner()
    sid = session(learner)
    body = learner.updated(sid, {"interactions": [answer("a"), answer("a", id="e" * 32)]}, 10)
    assert len(body["attempts"]) == 1 and len(learner.rows("attemptlog")) == 1


def test_replace_overwrites_correct_answer_simple_answer_of_the_same_attempt() -> None:
    learner = Learner()
    sid = session(learner, {"quiz_id": QUIZ})
    first = learner.updated(sid, {"interactions": [answer("x:1", 0, simple_answer="B", replace=True)]}, 5)
    second = learner.updated(sid, {"interactions": [answer("x:1", 1, 9, simple_answer="C", replace=True)]}, 9)
    assert first["attempts"][0]["id"] == second["attempts"][0]["id"]
    row = learner.row("attemptlog")
    assert (row["correct"], row["simple_answer"], row["answer"], row["time_spent"]) == (1.0, "C", {"response": "1"}, 9.0)
    assert [h["correct"] for h in row["interaction_history"]] == [0.0, 1.0]
    # without replace, a retry never changes correct
    learner.updated(sid, {"interactions": [{**answer("x:1", 0, 12), "id": first["attempts"][0]["id"]}]}, 12)
    assert learner.row("attemptlog")["correct"] == 1.0


def test_replace_lookup_in_the_same_request_finds_the_attempt_it_created() -> None:
    learner = Learner()
    sid = session(learner, {"quiz_id": QUIZ})
    body = learner.updated(sid, {"interactions": [answer("x:1", 0, replace=True), answer("x:2", replace=True),
                                                  answer("x:1", 1, replace=True)]}, 5)
    assert body["attempts"][0]["id"] == body["attempts"][2]["id"]
    assert body["attempts"][0]["correct"] == 0.0 and body["attempts"][2]["correct"] == 1.0


def test_anonymous_replace_only_looks_in_the_same_session() -> None:
    learner = Learner(None)
    first = session(learner)
    a = learner.updated(first, {"interactions": [answer("q", 0, replace=True)]}, 5)["attempts"][0]["id"]
    second = session(learner)
    b = learner.updated(second, {"interactions": [answer("q", 1, replace=True)]}, 10)["attempts"][0]["id"]
    assert a != b
    assert {r["masterylog_id"] for r in learner.rows("attemptlog")} == {None}
    assert {r["user_id"] for r in learner.rows("attemptlog")} == {None}


def test_hinted_only_while_incorrect_and_error_is_sticky() -> None:
    learner = Learner()
    sid = session(learner)
    body = learner.updated(sid, {"interactions": [answer("q", 0, hinted=True)]}, 5)
    attempt = body["attempts"][0]["id"]
    assert body["attempts"][0]["hinted"] is True
    row = learner.row("attemptlog")
    assert row["interaction_history"] == [{"type": "hint", "answer": {"response": "0"}}]

    sid2 = session(learner, exercise({"type": "do_all"}) | {"content_id": "c1" * 16})
    ok = learner.updated(sid2, {"interactions": [answer("r", 1)]}, 5)["attempts"][0]["id"]
    body = learner.updated(sid2, {"interactions": [{**answer("r", 0, hinted=True), "id": ok},
                                                   {"item": "r", "correct": 0, "time_spent": 1, "error": True}]}, 9)
    assert body["attempts"][0]["hinted"] is False and body["attempts"][0]["error"] is True
    row = [r for r in learner.rows("attemptlog") if r["id"] == ok][0]
    assert row["interaction_history"][-1] == {"type": "error"}
    assert attempt != ok


def test_an_error_interaction_needs_no_answer() -> None:
    learner = Learner()
    sid = session(learner)
    body = learner.updated(sid, {"interactions": [{"item": "q", "correct": 0, "time_spent": 3, "error": True,
                                                   "complete": True}]}, 3)
    assert body["attempts"][0]["answer"] == {} and body["attempts"][0]["error"] is True
    assert learner.row("attemptlog")["interaction_history"] == [{"type": "error"}]


def test_interactions_key_returns_attempts_even_when_empty() -> None:
    learner = Learner()
    sid = session(learner)
    assert learner.updated(sid, {"interactions": []}, 3) == {"complete": False, "attempts": []}
    assert learner.updated(sid, {}, 4) == {"complete": False}


def test_mastery_end_moves_only_for_time_or_completion() -> None:
    learner = Learner()
    sid = session(learner)
    learner.updated(sid, {"interactions": [answer("a")]}, 5)
    assert learner.row("masterylog")["end_timestamp"] == ts(0)
    learner.updated(sid, {"time_spent_delta": 0, "progress_delta": 0.5}, 6)
    assert learner.row("masterylog")["end_timestamp"] == ts(0)
    learner.updated(sid, {"time_spent_delta": 3}, 7)
    assert learner.row("masterylog")["end_timestamp"] == ts(7)
    learner.updated(sid, {"progress_delta": 0.5}, 8)
    mastery = learner.row("masterylog")
    assert (mastery["end_timestamp"], mastery["completion_timestamp"], mastery["complete"]) == (ts(8), ts(8), True)
    assert learner.row("contentsummarylog")["end_timestamp"] == ts(8)


def test_seq_counts_this_devices_events_per_record() -> None:
    state = PartitionState("user:" + USER)
    start = writes.start_session(state, exercise(), _ctx(0))
    state.apply(start.mutations)
    sid = start.response["session_id"]
    result = writes.update_session(state, sid, {"interactions": [answer("a", 0), answer("a", 1), answer("a", 1)]}, _ctx(5))
    kinds = [type(m).__name__ for m in result.mutations]
    assert kinds == ["AppendEvent", "CreateRecord", "AppendEvent", "AppendEvent"]
    events = [m.event for m in result.mutations if isinstance(m, AppendEvent)]
    assert [e["seq"] for e in events] == [1, 1, 2]
    (create,) = [m for m in result.mutations if isinstance(m, CreateRecord)]
    assert create.fields["order"] == 0 and create.fields["start_timestamp"] == ts(0)
    assert create.fields["mastery_level"] == 1 and create.fields["sessionlog_id"] == sid


def test_anonymous_session_completes_on_its_own_progress() -> None:
    learner = Learner(None)
    sid = session(learner, video())
    assert learner.updated(sid, {"progress_delta": 0.6, "extra_fields": {"a": 1}}, 5) == {"complete": False}
    assert learner.updated(sid, {"progress": 1.0}, 6) == {"complete": True}
    assert learner.rows("contentsummarylog") == []


def _ctx(seconds: float) -> writes.WriteContext:
    counter = iter(range(1, 10_000))
    return writes.WriteContext(now=ts(seconds), user_id=USER, device_id="1" * 64, dataset_id="d" * 32,
                               new_id=lambda: f"{int(seconds * 1000) + next(counter):032x}",
                               random_quiz_level=lambda: -42)


def test_at_helper_matches_ts() -> None:
    assert at(1.5).startswith("2025-01-06T09:00:01.5")
