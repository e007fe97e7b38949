"""derive(): rows in Kolibri's shape, ids, index columns, exam logs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from syncd.logs.aggregate import derive
from syncd.logs.ids import examlog_id, mastery_id, sha2_uuid, summary_id
from syncd.logs.records import DerivedRow, RawRecord
from syncd.logs.state import PartitionState
from tests.logs.builders import attempt, event, interaction, session
from tests.logs.helpers import CHANNEL, CONTENT, DATASET, QUIZ, USER, Learner, answer, exercise, ts, video

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
EXAM = "ee" * 16


def _corpus_key_orders() -> dict[str, list[str]]:
    orders: dict[str, list[str]] = {}
    for path in CORPUS.glob("*.json"):
        if path.name.startswith("two_device"):
            continue
        for model, rows in json.loads(path.read_text())["final_rows"].items():
            for row in rows:
                orders[model.lower()] = [k for k in row if not k.startswith("_morango_")]
    return orders


def test_rows_have_kolibris_keys_in_kolibris_order_and_floats_for_floats() -> None:
    learner = Learner()
    sid = learner.started(exercise())["session_id"]
    learner.updated(sid, {"progress_delta": 1, "time_spent_delta": 3, "interactions": [answer("a")]}, 3)
    learner.beat({"active": True}, 5)
    orders = _corpus_key_orders()
    assert set(orders) == {"contentsessionlog", "contentsummarylog", "masterylog", "attemptlog", "usersessionlog"}
    for model, keys in orders.items():
        (row,) = learner.rows(model)
        assert list(row) == keys, model
        for key in ("time_spent", "progress", "correct"):
            if key in row:
                assert isinstance(row[key], float), (model, key)


def test_ids_follow_kolibris_formulas() -> None:
    assert sha2_uuid("a", "b", "c") == hashlib.sha256(b"a::b::c").hexdigest()[:32]
    learner = Learner()
    sid = learner.started(exercise())["session_id"]
    learner.updated(sid, {"interactions": [answer("a")]}, 3)
    summary = summary_id(DATASET, USER, CONTENT)
    assert learner.row("contentsummarylog")["id"] == summary
    mastery = learner.row("masterylog")
    assert (mastery["id"], mastery["summarylog_id"]) == (mastery_id(DATASET, USER, summary, 1), summary)
    attempt_row = learner.row("attemptlog")
    assert (attempt_row["masterylog_id"], attempt_row["sessionlog_id"]) == (mastery["id"], sid)
    assert learner.row("contentsessionlog")["id"] == sid


def test_index_columns() -> None:
    learner = Learner()
    sid = learner.started(exercise())["session_id"]
    learner.updated(sid, {"interactions": [answer("a")]}, 3)
    rows = {row.model: row for row in learner.device.derived()}
    for model in ("contentsessionlog", "contentsummarylog", "masterylog", "attemptlog"):
        row = rows[model]
        assert (row.content_id, row.user_id, row.exam_id) == (CONTENT, USER, None)
        assert row.sort_key == row.row["start_timestamp"] and row.id == row.row["id"]
        assert row.channel_id == (CHANNEL if model in ("contentsessionlog", "contentsummarylog") else None)


def test_groups_without_records_derive_no_rows_and_rows_are_sorted() -> None:
    state = PartitionState.from_records("user:" + USER, [
        session("b" * 32, 10, [event(11, 1, progress_delta=0.5)]), session("a" * 32, 10), session("c" * 32, 5)])
    result = derive(state, [("content", CONTENT), ("content", "f" * 32), ("usersession", "9" * 32)], DATASET)
    assert result[("content", "f" * 32)] == [] and result[("usersession", "9" * 32)] == []
    models = [(r.model, r.sort_key, r.id) for r in result[("content", CONTENT)]]
    assert models == [("contentsessionlog", ts(5), "c" * 32), ("contentsessionlog", ts(10), "a" * 32),
                      ("contentsessionlog", ts(10), "b" * 32), ("contentsummarylog", ts(5), summary_id(DATASET, USER, CONTENT))]


def test_anonymous_partitions_have_session_and_attempt_rows_only() -> None:
    anon = PartitionState.from_records("anon:" + "1" * 64, [
        session("a" * 32, 0, [event(3, 1, progress_delta=1.0)], user=None),
        attempt("b" * 32, 3, level=None, user=None, session_id="a" * 32)])
    rows = derive(anon, anon.groups(), DATASET)[("content", CONTENT)]
    assert [r.model for r in rows] == ["contentsessionlog", "attemptlog"]
    assert rows[1].row["masterylog_id"] is None and rows[1].row["user_id"] is None


def test_exam_logs_fold_per_record_and_share_one_row_per_user() -> None:
    def log(record_id: str, closed: bool, completion: str | None, events: list[dict[str, Any]]) -> RawRecord:
        return RawRecord(record_id, "examlog", {"exam_id": EXAM, "user_id": USER, "at": ts(0), "closed": closed,
                                                 "completion_timestamp": completion, "device_id": "1" * 64}, events)
    base = attempt("e2" * 16, 10, [interaction(20, 1, 1.0, complete=True)], content="c9" * 16)
    exam_attempt = RawRecord(base.id, "examattempt", {
        **{k: v for k, v in base.fields.items() if k not in ("sessionlog_id", "mastery_level")}, "exam_id": EXAM},
        base.events)
    state = PartitionState.from_records("user:" + USER, [
        log("a" * 32, False, None, [event(50, 1, completion_timestamp=ts(50))]),
        log("b" * 32, False, ts(40), [event(60, 1, closed=True)]),
        exam_attempt,
    ])
    rows = derive(state, [("exam", EXAM)], DATASET)[("exam", EXAM)]
    assert [r.model for r in rows] == ["examlog", "examattemptlog"]
    exam_row, attempt_row = rows
    eid = examlog_id(DATASET, EXAM, USER)
    assert eid == sha2_uuid(DATASET, f"{EXAM}:{USER}", "examlog")
    assert exam_row.row == {"id": eid, "dataset_id": DATASET, "exam_id": EXAM, "user_id": USER, "closed": True,
                            "completion_timestamp": ts(40)}
    assert (exam_row.exam_id, exam_row.sort_key) == (EXAM, "")
    assert list(attempt_row.row)[-3:] == ["error", "examlog_id", "content_id"]
    assert (attempt_row.row["examlog_id"], attempt_row.row["content_id"]) == (eid, "c9" * 16)
    assert (attempt_row.row["complete"], attempt_row.row["completion_timestamp"]) == (True, ts(20))
    assert (attempt_row.exam_id, attempt_row.content_id) == (EXAM, "c9" * 16)
    assert "masterylog_id" not in attempt_row.row and "sessionlog_id" not in attempt_row.row


def test_canonical_json_of_rows_is_stable() -> None:
    learner = Learner()
    sid = learner.started({"quiz_id": QUIZ})["session_id"]
    learner.updated(sid, {"interactions": [answer("x:1", replace=True)], "extra_fields": {"z": 1, "a": 2}}, 3)
    learner.started(video(), 10)
    first = learner.snapshot()
    assert first == learner.snapshot()
    for row in learner.device.derived():
        assert isinstance(row, DerivedRow)
        assert json.loads(row.to_json()) == row.row
