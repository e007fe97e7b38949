"""Start and update decisions on merged multi-device state (SPEC §2.1 step 4, §2.2 step 9,
§3.7): the [syncd] tie-breaks where Kolibri would fail or be ambiguous."""

from __future__ import annotations

from typing import Any

from syncd.logs import writes
from syncd.logs.ids import mastery_id, summary_id
from syncd.logs.records import AppendEvent, CreateRecord
from syncd.logs.state import PartitionState
from tests.logs.builders import attempt, event, session
from tests.logs.helpers import CONTENT, DATASET, OTHER_DEVICE, QUIZ, USER, answer, exercise, ts


def ctx(seconds: float) -> writes.WriteContext:
    ids = iter(f"{n:032x}" for n in range(10**6, 10**6 + 100))
    return writes.WriteContext(now=ts(seconds), user_id=USER, device_id="1" * 64, dataset_id=DATASET,
                               new_id=lambda: next(ids), random_quiz_level=lambda: -3)


def state_of(*records: Any) -> PartitionState:
    return PartitionState.from_records("user:" + USER, records)


def test_a_repeat_never_reuses_an_existing_level() -> None:
    """Level 1 completed, then level 2 completed, then practice on level 1 moved its end
    past level 2's: the pick is level 1, and 1 + 1 exists, so the new try is 3."""
    state = state_of(
        session("a" * 32, 0, [event(10, 1, progress_delta=1.0)], level=1, kind="exercise"),
        session("b" * 32, 20, [event(30, 1, progress_delta=1.0)], level=2, repeat=True, kind="exercise"),
        session("c" * 32, 40, [event(50, 1, time_spent_delta=5.0)], level=1, kind="exercise"),
    )
    result = writes.start_session(state, {**exercise(), "repeat": True}, ctx(60))
    assert result.response["context"]["mastery_level"] == 3


def test_equal_candidates_are_picked_by_mastery_id() -> None:
    state = state_of(session("a" * 32, 0, level=1, kind="exercise"),
                     session("b" * 32, 0, level=2, kind="exercise", device=OTHER_DEVICE))
    summary = summary_id(DATASET, USER, CONTENT)
    expected = min((1, 2), key=lambda level: mastery_id(DATASET, USER, summary, level))
    assert writes.start_session(state, exercise(), ctx(5)).response["context"]["mastery_level"] == expected


def test_the_incomplete_try_with_the_latest_end_is_picked() -> None:
    state = state_of(session("a" * 32, 0, [event(10, 1, time_spent_delta=1.0)], level=1, kind="exercise"),
                     session("b" * 32, 0, [event(20, 1, time_spent_delta=1.0)], level=2, kind="exercise"),
                     session("c" * 32, 30, [event(40, 1, progress_delta=1.0)], level=3, kind="exercise"))
    assert writes.start_session(state, exercise(), ctx(50)).response["context"]["mastery_level"] == 2


def test_two_devices_quiz_tries_before_a_sync_resume_the_latest() -> None:
    quiz = {"type": "quiz", "coach_assigned": True}
    state = state_of(session("a" * 32, 0, [event(10, 1, time_spent_delta=3.0)], level=-7, criterion=quiz,
                             kind="quiz", content=QUIZ),
                     session("b" * 32, 0, [event(20, 1, time_spent_delta=3.0)], level=-9, criterion=quiz,
                             kind="quiz", content=QUIZ, device=OTHER_DEVICE))
    result = writes.start_session(state, {"quiz_id": QUIZ}, ctx(30))
    assert result.response["context"]["mastery_level"] == -9


def test_replace_with_several_matches_updates_the_latest_then_largest_id() -> None:
    quiz = {"type": "quiz", "coach_assigned": True}
    state = state_of(
        session("5e" * 16, 0, level=-7, criterion=quiz, kind="quiz", content=QUIZ),
        attempt("1" * 32, 10, item="x:1", level=-7, content=QUIZ),
        attempt("2" * 32, 30, item="x:1", level=-7, content=QUIZ, device=OTHER_DEVICE),
        attempt("3" * 32, 30, item="x:1", level=-7, content=QUIZ, device=OTHER_DEVICE),
        attempt("4" * 32, 40, item="x:2", level=-7, content=QUIZ),
    )
    result = writes.update_session(state, "5e" * 16, {"interactions": [answer("x:1", replace=True)]}, ctx(50))
    targets = [m.record_id for m in result.mutations if isinstance(m, AppendEvent) and m.record_id != "5e" * 16]
    assert targets == ["3" * 32]
    assert not any(isinstance(m, CreateRecord) for m in result.mutations)
    # start responses count and show the consolidated view: x:1 once, x:2 once
    state.apply(result.mutations)
    start = writes.start_session(state, {"quiz_id": QUIZ}, ctx(60)).response
    assert start["totalattempts"] == 2
    assert [a["item"] for a in start["pastattempts"]] == ["x:1", "x:2"]   # creation order of the kept rows


def test_an_update_of_a_session_another_device_extended_numbers_its_own_events() -> None:
    state = state_of(session("5e" * 16, 0, [event(5, 1, OTHER_DEVICE, time_spent_delta=1.0),
                                            event(6, 2, OTHER_DEVICE)]))
    result = writes.update_session(state, "5e" * 16, {"time_spent_delta": 2}, ctx(10))
    (append,) = result.mutations
    assert isinstance(append, AppendEvent)
    assert (append.event["device_id"], append.event["seq"]) == ("1" * 64, 1)
