"""The memoised content folds (incremental.py, PartitionState.content_fold): extended when
a new event sorts last, refolded otherwise, always equal to a full fold."""

from __future__ import annotations

from syncd.logs.aggregate import derive, derive_changes
from syncd.logs.folds import fold_content
from syncd.logs.records import AppendEvent, CreateRecord, RawRecord
from syncd.logs.state import PartitionState
from tests.logs.builders import attempt, event, interaction, session
from tests.logs.helpers import CONTENT, DATASET, OTHER_DEVICE, USER

GROUP = ("content", CONTENT)


def user_state(*records: RawRecord) -> PartitionState:
    return PartitionState.from_records("user:" + USER, records)


def rows_json(state: PartitionState) -> list[str]:
    return [row.to_json() for rows in derive(state, state.groups(), DATASET).values() for row in rows]


def fresh_rows(state: PartitionState) -> list[str]:
    copy = PartitionState.from_records(state.partition, [RawRecord(r.id, r.kind, r.fields, list(r.events))
                                                         for r in state.records.values()])
    return rows_json(copy)


def test_an_update_that_sorts_last_extends_the_memo() -> None:
    state = user_state(session("a" * 32, 0, [event(10, 1, progress_delta=0.3)]))
    memo = state.content_fold(CONTENT)
    state.apply([AppendEvent("a" * 32, event(20, 2, progress_delta=0.4, time_spent_delta=5.0))])
    assert state.cached_fold(CONTENT) is memo
    assert memo.summary is not None and memo.summary.progress == 0.7
    assert rows_json(state) == fresh_rows(state)


def test_an_update_stamped_before_the_last_event_drops_the_memo() -> None:
    state = user_state(session("a" * 32, 0, [event(10, 1, progress_delta=0.3)]),
                       session("b" * 32, 30, [event(40, 1, progress=0.5)], repeat=True))
    state.content_fold(CONTENT)
    state.apply([AppendEvent("a" * 32, event(35, 2, progress_delta=0.4))])  # before b's events
    assert state.cached_fold(CONTENT) is None
    assert rows_json(state) == fresh_rows(state)
    assert state.content_fold(CONTENT).summary == fold_content(CONTENT, state.in_group(GROUP), with_summary=True).summary


def test_another_devices_chain_keeps_its_own_order() -> None:
    """A second device's first update of a session sorts by its own eff_at."""
    state = user_state(session("a" * 32, 0, [event(10, 1, progress_delta=0.3)]))
    memo = state.content_fold(CONTENT)
    state.apply([AppendEvent("a" * 32, event(20, 1, OTHER_DEVICE, progress_delta=0.1))])
    assert state.cached_fold(CONTENT) is memo
    assert rows_json(state) == fresh_rows(state)


def test_partial_rows_are_the_touched_session_summary_and_mastery_log() -> None:
    level = 1
    state = user_state(session("a" * 32, 0, [event(10, 1, progress_delta=0.3)], level=level),
                       session("b" * 32, 20, [event(30, 1, time_spent_delta=2.0)], level=level),
                       attempt("c" * 32, 25, session_id="b" * 32, level=level))
    state.content_fold(CONTENT)
    touched = state.apply([AppendEvent("b" * 32, event(40, 2, time_spent_delta=3.0))])
    rows, partial = derive_changes(state, touched, DATASET, known={GROUP})
    assert partial == {GROUP}
    assert sorted((r.model, r.id) for r in rows[GROUP])[0] == ("contentsessionlog", "b" * 32)
    assert sorted(r.model for r in rows[GROUP]) == ["contentsessionlog", "contentsummarylog", "masterylog"]
    # an attempt write renders that attempt only
    touched = state.apply([AppendEvent("c" * 32, interaction(45, 1, correct=1.0))])
    rows, partial = derive_changes(state, touched, DATASET, known={GROUP})
    assert [(r.model, r.id) for r in rows[GROUP]] == [("attemptlog", "c" * 32)]
    # a group whose stored rows the caller does not hold gets every row
    touched = state.apply([CreateRecord("d" * 32, "session", dict(session("d" * 32, 50).fields))])
    rows, partial = derive_changes(state, touched, DATASET, known=set())
    assert not partial and len(rows[GROUP]) == len(fresh_rows(state))


def test_a_second_attempt_on_a_quiz_item_rewrites_the_group() -> None:
    """Quiz attempts sharing an item are presented as one (§3.6): adding one changes and
    removes rows beyond itself, so every row is rendered."""
    state = user_state(session("a" * 32, 0, level=-3, criterion={"type": "quiz", "coach_assigned": True}),
                       attempt("c" * 32, 5, session_id="a" * 32, level=-3, item="x:1"))
    state.content_fold(CONTENT)
    twin = attempt("e" * 32, 8, session_id="a" * 32, level=-3, item="x:1")
    touched = state.apply([CreateRecord(twin.id, "attempt", dict(twin.fields))])
    rows, partial = derive_changes(state, touched, DATASET, known={GROUP})
    assert not partial
    assert [r.to_json() for r in rows[GROUP]] == fresh_rows(state)
    assert [r.model for r in rows[GROUP]].count("attemptlog") == 1
