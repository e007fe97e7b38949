"""Derived rows: the folds of ``folds.py`` rendered as Kolibri rows (DESIGN §5).

``derive`` refolds whole groups (``records.GroupKey``) and returns every row of each, in
Kolibri's field order with the keys of the corpus ``final_rows`` (attnames, ``dataset_id``,
no ``_morango_*``). Rows within a group are sorted by (model, sort_key, id), so the same raw
records give the same list, byte for byte, on every device (``content_rows`` emits them in
that order: the folds hand over sessions and attempts sorted by start and id).

``derive_changes`` is the write path's variant: for a content group whose memoised fold
was extended by the last writes (``incremental.py``), it renders only the rows those
writes can have changed; otherwise every row, as ``derive``.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Container, Iterable

from syncd.logs.folds import (
    AttemptView,
    ContentFold,
    MasteryView,
    SessionView,
    SummaryView,
    fold_attempt,
    fold_content,
    fold_examlog,
    last_interaction,
)
from syncd.logs.ids import examlog_id, mastery_id, summary_id
from syncd.logs.incremental import ContentFoldState, FoldChanges
from syncd.logs.partitions import user_of
from syncd.logs.records import JSON, DerivedRow, GroupKey, RawRecord
from syncd.logs.state import PartitionState

_MODEL_ORDER = {
    "contentsessionlog": 0, "contentsummarylog": 1, "masterylog": 2, "attemptlog": 3,
    "examlog": 4, "examattemptlog": 5, "usersessionlog": 6,
}


_BY_KEY = attrgetter("sort_key", "id")


def derive(state: PartitionState, groups: Iterable[GroupKey], dataset_id: str) -> dict[GroupKey, list[DerivedRow]]:
    """Every derived row of each group (an empty list for a group with no records)."""
    user_id = user_of(state.partition)
    result: dict[GroupKey, list[DerivedRow]] = {}
    for group in groups:
        records = state.in_group(group)
        rows: list[DerivedRow]
        if not records:
            rows = []
        elif group[0] == "content":
            memo = state.cached_fold(group[1])
            fold = memo.content_fold() if memo is not None else fold_content(
                group[1], records, with_summary=user_id is not None)
            rows = content_rows(fold, user_id, dataset_id)
        elif group[0] == "usersession":
            rows = [usersession_row(record, dataset_id) for record in records]
        elif group[0] == "exam":
            rows = exam_rows(group[1], records, dataset_id)
        else:
            raise ValueError(f"unknown group {group!r}")
        if group[0] != "content":  # content_rows emits its rows in this order already
            rows.sort(key=lambda r: (_MODEL_ORDER[r.model], r.sort_key, r.id))
        result[group] = rows
    return result


def derive_changes(state: PartitionState, groups: Iterable[GroupKey], dataset_id: str,
                   known: Container[GroupKey]) -> tuple[dict[GroupKey, list[DerivedRow]], set[GroupKey]]:
    """After ``state.apply``: the rows of each touched group, and which groups got only
    the rows the applied mutations can have changed (the other rows of such a group are
    as they were). Only groups in ``known`` (whose previous rows the caller holds) get
    partial rows. This takes the changes recorded by the memoised content folds, so call
    it once after each ``apply`` whose rows are stored."""
    user_id = user_of(state.partition)
    rows: dict[GroupKey, list[DerivedRow]] = {}
    partial: set[GroupKey] = set()
    full: list[GroupKey] = []
    for group in groups:
        if group[0] != "content":
            full.append(group)
            continue
        fold = state.cached_fold(group[1])
        if fold is None:  # no fold, or the writes could not extend it: refold in full
            fold = state.content_fold(group[1])
            fold.take_changes()
            rows[group] = content_rows(fold.content_fold(), user_id, dataset_id)
            continue
        changed = changed_content_rows(fold, fold.take_changes(), user_id, dataset_id) if group in known else None
        if changed is None:
            rows[group] = content_rows(fold.content_fold(), user_id, dataset_id)
        else:
            rows[group] = changed
            partial.add(group)
    if full:
        rows.update(derive(state, full, dataset_id))
    return rows, partial


def changed_content_rows(fold: ContentFoldState, changes: FoldChanges, user_id: str | None,
                         dataset_id: str) -> list[DerivedRow] | None:
    """The rows of a content group that ``changes`` can have changed (None: any row can)."""
    if changes.everything:
        return None
    content_id = fold.content_id
    rows: list[DerivedRow] = []
    for session_id in changes.sessions:
        view = fold.session(session_id)
        if view is None:
            return None
        rows.append(session_row(view, content_id, dataset_id))
    summary = fold.summary if fold.with_summary else None
    summarylog_id: str | None = None
    if summary is not None and user_id is not None:
        summarylog_id = summary_id(dataset_id, user_id, content_id)
        if changes.summary:
            rows.append(summary_row(summary, summarylog_id, user_id, content_id, dataset_id))
        for level in changes.levels:
            log = fold.mastery.get(level)
            if log is None:
                return None
            rows.append(mastery_row(log, mastery_id(dataset_id, user_id, summarylog_id, level), summarylog_id,
                                    user_id, content_id, dataset_id))
    for attempt_id in changes.attempts:
        attempt = fold.attempt(attempt_id)
        if attempt is None or fold.is_quiz_duplicate(attempt_id):
            return None
        masterylog_id = None
        bound, learner = attempt.mastery_level, attempt.user_id
        if summarylog_id is not None and bound is not None and learner is not None:
            masterylog_id = mastery_id(dataset_id, learner, summarylog_id, bound)
        rows.append(attempt_row(attempt, masterylog_id, content_id, dataset_id))
    return rows


def content_rows(fold: ContentFold, user_id: str | None, dataset_id: str) -> list[DerivedRow]:
    """Session, summary, mastery and attempt rows of one content group."""
    content_id = fold.content_id
    rows = [session_row(view, content_id, dataset_id) for view in fold.sessions]
    summarylog_id: str | None = None
    mastery_ids: dict[tuple[str, int], str] = {}
    if fold.summary is not None and user_id is not None:
        summarylog_id = summary_id(dataset_id, user_id, content_id)
        rows.append(summary_row(fold.summary, summarylog_id, user_id, content_id, dataset_id))
        mastery_rows = []
        for log in fold.mastery.values():
            row_id = mastery_ids[(user_id, log.mastery_level)] = mastery_id(
                dataset_id, user_id, summarylog_id, log.mastery_level)
            mastery_rows.append(mastery_row(log, row_id, summarylog_id, user_id, content_id, dataset_id))
        mastery_rows.sort(key=_BY_KEY)
        rows.extend(mastery_rows)
    for attempt in fold.attempts:
        masterylog_id = None
        level, learner = attempt.mastery_level, attempt.user_id
        if summarylog_id is not None and level is not None and learner is not None:
            masterylog_id = mastery_ids.get((learner, level))
            if masterylog_id is None:
                masterylog_id = mastery_ids[(learner, level)] = mastery_id(
                    dataset_id, learner, summarylog_id, level)
        rows.append(attempt_row(attempt, masterylog_id, content_id, dataset_id))
    return rows


def session_row(view: SessionView, content_id: str, dataset_id: str) -> DerivedRow:
    f = view.record.fields
    row = {
        "id": view.id,
        "dataset_id": dataset_id,
        "user_id": f["user_id"],
        "content_id": f["content_id"],
        "visitor_id": f["visitor_id"],
        "channel_id": f["channel_id"],
        "start_timestamp": view.start_timestamp,
        "end_timestamp": view.end_timestamp,
        "time_spent": float(view.time_spent),
        "progress": float(view.progress),
        "kind": f["kind"],
        "extra_fields": {"context": f["context"]},
    }
    return DerivedRow("contentsessionlog", view.id, f["user_id"], content_id, f["channel_id"], None,
                      view.start_timestamp, row)


def summary_row(s: SummaryView, row_id: str, user_id: str, content_id: str, dataset_id: str) -> DerivedRow:
    row = {
        "id": row_id,
        "dataset_id": dataset_id,
        "user_id": user_id,
        "content_id": content_id,
        "channel_id": s.channel_id,
        "start_timestamp": s.start_timestamp,
        "end_timestamp": s.end_timestamp,
        "completion_timestamp": s.completion_timestamp,
        "time_spent": float(s.time_spent),
        "progress": float(s.progress),
        "kind": s.kind,
        "extra_fields": s.extra_fields,
    }
    return DerivedRow("contentsummarylog", row_id, user_id, content_id, s.channel_id, None,
                      s.start_timestamp, row)


def mastery_row(m: MasteryView, row_id: str, summarylog_id: str, user_id: str, content_id: str,
                dataset_id: str) -> DerivedRow:
    row = {
        "id": row_id,
        "dataset_id": dataset_id,
        "user_id": user_id,
        "summarylog_id": summarylog_id,
        "mastery_criterion": m.mastery_criterion if m.mastery_criterion is not None else {},
        "start_timestamp": m.start_timestamp,
        "end_timestamp": m.end_timestamp,
        "completion_timestamp": m.completion_timestamp,
        "mastery_level": m.mastery_level,
        "complete": m.complete,
        "time_spent": float(m.time_spent),
    }
    return DerivedRow("masterylog", row_id, user_id, content_id, None, None, m.start_timestamp, row)


def _attempt_fields(a: AttemptView, dataset_id: str) -> dict[str, JSON]:
    """The fields AttemptLog and ExamAttemptLog share, in Kolibri's order."""
    return {
        "id": a.id,
        "dataset_id": dataset_id,
        "item": a.item,
        "start_timestamp": a.start_timestamp,
        "end_timestamp": a.end_timestamp,
        "completion_timestamp": a.completion_timestamp,
        "time_spent": a.time_spent,
        "complete": a.complete,
        "correct": a.correct,
        "hinted": a.hinted,
        "answer": a.answer,
        "simple_answer": a.simple_answer,
        "interaction_history": a.interaction_history,
        "user_id": a.user_id,
        "error": a.error,
    }


def attempt_row(a: AttemptView, masterylog_id: str | None, content_id: str, dataset_id: str) -> DerivedRow:
    row = {
        **_attempt_fields(a, dataset_id),
        "masterylog_id": masterylog_id,
        "sessionlog_id": a.sessionlog_id,
    }
    return DerivedRow("attemptlog", a.id, a.user_id, content_id, None, None, a.start_timestamp, row)


def examattempt_row(a: AttemptView, examlog: str, exam_id: str, dataset_id: str) -> DerivedRow:
    row = {
        **_attempt_fields(a, dataset_id),
        "examlog_id": examlog,
        "content_id": a.content_id,
    }
    return DerivedRow("examattemptlog", a.id, a.user_id, a.content_id, None, exam_id, a.start_timestamp, row)


def usersession_row(record: RawRecord, dataset_id: str) -> DerivedRow:
    f = record.fields
    row = {
        "id": record.id,
        "dataset_id": dataset_id,
        "user_id": f["user_id"],
        "channels": "",
        "start_timestamp": f["start_timestamp"],
        "last_interaction_timestamp": last_interaction(record),
        "pages": "",
        "device_info": f["device_info"],
    }
    return DerivedRow("usersessionlog", record.id, f["user_id"], None, None, None, f["start_timestamp"], row)


def exam_rows(exam_id: str, records: list[RawRecord], dataset_id: str) -> list[DerivedRow]:
    """The ExamLog of each user and its ExamAttemptLogs, per-record folds only.

    TODO(DESIGN §5 "Exam logs"): derive the quiz view of SPEC §1.5 (session, summary,
    mastery and attempt rows with ``content_id = exam_id``) for (user, exam) pairs that
    have no quiz session and no import baseline.
    """
    rows: list[DerivedRow] = []
    by_user: dict[str, list[RawRecord]] = {}
    for record in records:
        if record.kind == "examlog":
            by_user.setdefault(record.fields["user_id"], []).append(record)
    for user_id, logs in by_user.items():
        log = fold_examlog(sorted(logs, key=lambda r: r.id))
        row_id = examlog_id(dataset_id, exam_id, user_id)
        row = {
            "id": row_id,
            "dataset_id": dataset_id,
            "exam_id": exam_id,
            "user_id": user_id,
            "closed": log.closed,
            "completion_timestamp": log.completion_timestamp,
        }
        rows.append(DerivedRow("examlog", row_id, user_id, None, None, exam_id, "", row))
    for record in records:
        if record.kind != "examattempt":
            continue
        examlog = examlog_id(dataset_id, exam_id, record.fields["user_id"])
        rows.append(examattempt_row(fold_attempt(record), examlog, exam_id, dataset_id))
    return rows

