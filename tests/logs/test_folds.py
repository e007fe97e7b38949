"""The folds of SPEC §3 on hand-built raw records: order, numbers, merge rules."""

from __future__ import annotations

import random

import pytest

from syncd.logs.aggregate import derive
from syncd.logs.folds import fold_attempt, fold_content, fold_session, normalise_progress
from syncd.logs.records import RawRecord
from syncd.logs.state import PartitionState
from tests.logs.builders import attempt, event, interaction, session
from tests.logs.helpers import CONTENT, DATASET, DEVICE, OTHER_DEVICE, USER, ts


def fold(*records: RawRecord, user: bool = True):  # type: ignore[no-untyped-def]
    return fold_content(CONTENT, list(records), with_summary=user)


# --- numbers (§3.2) --------------------------------------------------------------------------
@pytest.mark.parametrize("deltas, expected", [
    ([0.1, 0.2], 0.301), ([0.2, 0.4], 0.601), ([0.6, 0.201], 0.801), ([0.7, 0.301], 1.0),
    ([0.0001], 0.001), ([0.9999], 1.0), ([0.3, 0.4, 0.301], 1.0), ([0.6, 0.7], 1.0),
])
def test_progress_is_normalised_at_every_step(deltas: list[float], expected: float) -> None:
    updates = [event(n + 1, n + 1, progress_delta=d) for n, d in enumerate(deltas)]
    result = fold(session("5e" * 16, 0, updates))
    assert result.summary is not None and result.summary.progress == expected
    progress = 0.0
    for d in deltas:
        progress = normalise_progress(progress + d)
    assert result.sessions[0].progress == progress


def test_session_progress_is_not_clamped_to_what_is_left() -> None:
    """0.6 then a session adding 0.7: the session shows 0.7, the summary 1.0."""
    first = session("a" * 32, 0, [event(10, 1, progress_delta=0.6)])
    second = session("b" * 32, 100, [event(110, 1, progress_delta=0.7)])
    result = fold(first, second)
    assert [s.progress for s in result.sessions] == [0.6, 0.7]
    assert result.summary is not None and result.summary.progress == 1.0


def test_time_is_summed_in_event_order_without_rounding() -> None:
    updates = [event(n + 1, n + 1, time_spent_delta=d) for n, d in enumerate([0.1, 0.2, 0.3])]
    result = fold(session("5e" * 16, 0, updates))
    assert result.summary is not None and result.summary.time_spent == 0.1 + 0.2 + 0.3


# --- canonical order (§3.1) --------------------------------------------------------------------
def test_a_start_in_the_same_second_sorts_after_the_previous_sessions_update() -> None:
    first = session("f" * 32, 0, [event(10, 1, progress_delta=0.5, extra_fields={"a": 1})])
    second = session("0" * 32, 10, [event(10, 1, extra_fields={"b": 2})], repeat=True)
    summary = fold(second, first).summary
    assert summary is not None
    assert (summary.progress, summary.extra_fields, summary.end_timestamp) == (0.0, {"b": 2}, ts(10))


def test_eff_at_keeps_a_sessions_updates_in_seq_order_when_its_clock_steps_back() -> None:
    record = session("5e" * 16, 0, [event(5, 2, progress=0.3), event(10, 1, progress=0.9)])
    view = fold_session(record)
    assert (view.progress, view.end_timestamp) == (0.3, ts(5))
    other = session("6e" * 16, 7, [event(8, 1, progress_delta=0.05)])
    summary = fold(record, other).summary
    # session 1's seq-2 update has eff_at 10, so it comes after the other session's start (7) and update (8)
    assert summary is not None and summary.progress == 0.3 and summary.end_timestamp == ts(5)


def test_a_late_repeat_resets_only_what_came_before_it() -> None:
    a = session("a" * 32, 0, [event(10, 1, progress_delta=0.5)])
    c = session("c" * 32, 100, [event(110, 1, progress_delta=0.3)])
    assert fold(a, c).summary.progress == 0.8  # type: ignore[union-attr]
    b = session("b" * 32, 50, repeat=True)
    assert fold(a, c, b).summary.progress == 0.3  # type: ignore[union-attr]


def test_completion_is_the_latest_crossing_and_progress_can_go_down() -> None:
    record = session("5e" * 16, 0, [event(10, 1, progress=1.0), event(20, 2, progress=0.2),
                                    event(30, 3, progress_delta=0.9), event(40, 4, progress=0.5)])
    summary = fold(record).summary
    assert summary is not None
    assert (summary.progress, summary.completion_timestamp) == (0.5, ts(30))


def test_a_late_completing_update_moves_completion_earlier() -> None:
    tablet = session("a" * 32, 100, [event(110, 1, progress_delta=0.6)])
    behind = session("b" * 32, 0, [event(10, 1, progress_delta=0.5, device=OTHER_DEVICE)], device=OTHER_DEVICE)
    assert fold(tablet).summary.completion_timestamp is None  # type: ignore[union-attr]
    summary = fold(tablet, behind).summary
    assert summary is not None
    assert (summary.progress, summary.completion_timestamp, summary.start_timestamp) == (1.0, ts(110), ts(0))
    later = session("c" * 32, 200, [event(210, 1, progress_delta=1.0)])
    assert fold(tablet, later).summary.completion_timestamp == ts(210)  # type: ignore[union-attr]
    assert fold(tablet, later, behind).summary.completion_timestamp == ts(110)  # type: ignore[union-attr]


def test_first_session_gives_kind_start_criterion_last_start_gives_channel() -> None:
    a = session("a" * 32, 0, level=1, kind="exercise", channel="c1" * 16,
                criterion={"type": "do_all"})
    b = session("b" * 32, 100, level=1, kind="exercise", channel=None, criterion={"type": "m_of_n", "m": 1, "n": 2})
    result = fold(b, a)
    assert result.summary is not None
    assert (result.summary.kind, result.summary.start_timestamp, result.summary.channel_id) == ("exercise", ts(0), None)
    assert result.mastery[1].mastery_criterion == {"type": "do_all"}
    assert result.summary.end_timestamp == ts(100)


def test_mastery_completes_at_the_first_update_reaching_one_and_keeps_adding_time() -> None:
    a = session("a" * 32, 0, [event(10, 1, progress_delta=0.5, time_spent_delta=10),
                              event(20, 2, progress_delta=0.5, time_spent_delta=10),
                              event(30, 3, time_spent_delta=0), event(40, 4, time_spent_delta=5)], level=1)
    b = session("b" * 32, 100, [event(110, 1, time_spent_delta=7), event(120, 2)], level=1)
    m = fold(a, b).mastery[1]
    assert (m.complete, m.completion_timestamp, m.time_spent, m.end_timestamp) == (True, ts(20), 32.0, ts(110))
    assert m.start_timestamp == ts(0)


def test_anonymous_sessions_make_no_summary() -> None:
    result = fold(session("a" * 32, 0, [event(5, 1, progress_delta=1)], user=None), user=False)
    assert result.summary is None and result.mastery == {}
    assert result.sessions[0].progress == 1.0


# --- attempts (§3.6) ---------------------------------------------------------------------------
def test_concurrent_attempt_events_merge_per_field() -> None:
    record = attempt("a" * 32, 10, [
        interaction(20, 1, correct=0.0, time_spent=8, device=DEVICE, complete=True),
        interaction(15, 1, correct=1.0, time_spent=12, device=OTHER_DEVICE, hinted=True, complete=True,
                    answer={"r": "late"}, simple_answer="L"),
        interaction(25, 2, time_spent=9, device=DEVICE, error=True),
    ], correct=0.0, hinted=False)
    view = fold_attempt(record)
    assert view.end_timestamp == ts(25)
    assert (view.complete, view.completion_timestamp) == (True, ts(15))
    assert (view.hinted, view.error) == (True, True)
    assert view.correct == 0.0                        # the write at 20 is later than the one at 15
    assert (view.answer, view.simple_answer) == ({"r": "late"}, "L")   # only the write at 15 set them
    assert view.time_spent == 9.0
    assert [h["answer"]["r"] for h in view.interaction_history] == [0.0, 1.0, 0.0, 0]


def test_an_event_older_than_the_creation_does_not_override_it() -> None:
    record = attempt("a" * 32, 100, [interaction(50, 1, correct=1.0, time_spent=3, device=OTHER_DEVICE)],
                     correct=0.0, time_spent=6)
    view = fold_attempt(record)
    assert (view.correct, view.time_spent, view.end_timestamp) == (0.0, 6.0, ts(100))
    assert len(view.interaction_history) == 2


def test_quiz_duplicates_are_presented_as_one_attempt() -> None:
    level = -77
    early = attempt("1" * 32, 10, item="x:1", time_spent=0.1, level=level, correct=0.0, order=0)
    middle = attempt("2" * 32, 20, item="x:1", time_spent=0.2, level=level, correct=1.0, order=0)
    keep = attempt("3" * 32, 30, item="x:1", time_spent=0.3, level=level, correct=1.0, order=0,
                   answer={"r": "K"}, simple_answer="K")
    other_item = attempt("4" * 32, 40, item="x:2", level=level)
    result = fold(session("5e" * 16, 0, level=level, criterion={"type": "quiz", "coach_assigned": True},
                          kind="quiz", channel=None), other_item, keep, early, middle)
    assert len(result.attempts) == 2
    merged = [a for a in result.attempts if a.item == "x:1"][0]
    assert merged.id == "3" * 32 and merged.answer == {"r": "K"} and merged.simple_answer == "K"
    assert merged.start_timestamp == ts(10 - 0.1)
    assert merged.time_spent == 0.3 + 0.2 + 0.1 == 0.6   # K first, then the others latest-end first
    assert [h["answer"]["r"] for h in merged.interaction_history] == [0.0, 1.0, "K"]


def test_quiz_duplicate_ties_keep_the_largest_id() -> None:
    a = attempt("1" * 32, 10, item="x:1", level=-5, answer={"r": "a"})
    b = attempt("9" * 32, 10, item="x:1", level=-5, answer={"r": "b"})
    (merged,) = fold(session("5e" * 16, 0, level=-5, criterion={"type": "quiz"}), a, b).attempts
    assert merged.id == "9" * 32 and merged.answer == {"r": "b"}


def test_exercise_attempts_are_never_consolidated() -> None:
    records = [attempt(f"{n}" * 32, 10 * n, item="q", level=1) for n in range(1, 4)]
    assert len(fold(session("5e" * 16, 0, level=1), *records).attempts) == 3


# --- determinism -------------------------------------------------------------------------------
def test_repeated_event_numbers_from_a_cloned_device_fold_the_same_in_any_order() -> None:
    updates = [event(10, 1, progress_delta=0.2), event(10, 1, progress_delta=0.5), event(20, 2, extra_fields={"x": 1}),
               event(20, 2, extra_fields={"x": 2})]
    results = set()
    for seed in range(6):
        shuffled = updates[:]
        random.Random(seed).shuffle(shuffled)
        state = PartitionState.from_records("user:" + USER, [session("5e" * 16, 0, shuffled),
                                                              attempt("a" * 32, 5, list(reversed(
                                                                  [interaction(9, 1, 1.0), interaction(9, 1, 0.0)])))])
        results.add(tuple(r.to_json() for rows in derive(state, state.groups(), DATASET).values() for r in rows))
    assert len(results) == 1
