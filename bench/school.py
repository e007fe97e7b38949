"""Load a real Kolibri school database into a syncd state dir, fast, for benchmarks.

This is NOT the Kolibri importer (a later issue: import baselines, carrying what the
sessions don't explain, progress reporting). It maps each raw Kolibri log to one raw
syncd record, in bulk, straight into the store's tables before a daemon starts:
ContentSessionLog -> session (one update: absolute progress + time), AttemptLog ->
attempt, UserSessionLog -> usersession (+ one heartbeat), ExamLog / ExamAttemptLog ->
examlog / examattempt. Every record passes ``logs.validate`` so peers accept them.

usage: python bench/school.py KOLIBRI_DB STATE_DIR
"""

from __future__ import annotations

import json
import lzma
import shutil
import sqlite3
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncd.logs.records import CreateRecord, Mutation, RawRecord  # noqa: E402
from syncd.logs.timestamps import format_timestamp  # noqa: E402
from syncd.logs.validate import validate_record  # noqa: E402
from syncd.store.documents import PartitionDoc  # noqa: E402
from syncd.store.migrate import migrate  # noqa: E402
from syncd.store.sqlite import DB_FILE, connect  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LOADER_DEVICE = "b" * 64  # the "device" that wrote the imported history


def unpack(name: str, into: Path) -> Path:
    """``kolibri-0.19.5-school-<name>.sqlite3`` unpacked once into ``into``."""
    target = into / f"school-{name}.sqlite3"
    if not target.exists():
        into.mkdir(parents=True, exist_ok=True)
        with lzma.open(DATA / f"kolibri-0.19.5-school-{name}.sqlite3.xz") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def ts(text: str | None) -> str | None:
    if text is None:
        return None
    moment = datetime.strptime(text.replace("(UTC)", ""), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
    return format_timestamp(moment)


def _history(correct: float, hinted: bool, error: bool, answer: Any) -> dict[str, Any]:
    if error:
        return {"type": "error"}
    if hinted:
        return {"type": "hint", "answer": answer or {}}
    return {"type": "answer", "answer": answer or {}, "correct": float(correct)}


def read_school(db: Path) -> dict[str, list[Mutation]]:
    """partition -> the mutations creating its records."""
    src = sqlite3.connect(db)
    src.row_factory = sqlite3.Row
    out: dict[str, list[Mutation]] = defaultdict(list)
    level_of = {r["id"]: r["mastery_level"] for r in src.execute("SELECT id, mastery_level FROM logger_masterylog")}
    criterion_of = {r["id"]: json.loads(r["mastery_criterion"]) for r in src.execute("SELECT id, mastery_criterion FROM logger_masterylog")}
    session_mastery: dict[str, str] = {}
    for r in src.execute("SELECT sessionlog_id, masterylog_id FROM logger_attemptlog WHERE masterylog_id IS NOT NULL"):
        session_mastery.setdefault(r["sessionlog_id"], r["masterylog_id"])
    session_content: dict[str, str] = {}
    for r in src.execute("SELECT * FROM logger_contentsessionlog WHERE user_id IS NOT NULL"):
        mastery = session_mastery.get(r["id"])
        context = dict(json.loads(r["extra_fields"] or "{}").get("context", {}))
        if mastery:
            context["mastery_level"] = level_of[mastery]
        session_content[r["id"]] = r["content_id"]
        out[f"user:{r['user_id']}"].append(CreateRecord(r["id"], "session", {
            "user_id": r["user_id"], "content_id": r["content_id"], "channel_id": r["channel_id"],
            "kind": r["kind"], "visitor_id": None, "start_timestamp": ts(r["start_timestamp"]),
            "context": context, "repeat": False,
            "mastery_level": level_of.get(mastery) if mastery else None,
            "mastery_criterion": criterion_of.get(mastery) if mastery else None,
            "device_id": LOADER_DEVICE,
        }))
        out[f"user:{r['user_id']}"].append(_event(r["id"], ts(r["end_timestamp"]), {
            "progress": min(1.0, max(0.0, float(r["progress"]))), "time_spent_delta": float(r["time_spent"]),
        }))
    for r in src.execute("SELECT * FROM logger_attemptlog WHERE user_id IS NOT NULL"):
        answer = json.loads(r["answer"]) if r["answer"] else {}
        mastery = r["masterylog_id"]
        out[f"user:{r['user_id']}"].append(CreateRecord(r["id"], "attempt", {
            "user_id": r["user_id"], "sessionlog_id": r["sessionlog_id"],
            "content_id": session_content[r["sessionlog_id"]],
            "mastery_level": level_of.get(mastery) if mastery else None,
            "item": r["item"], "start_timestamp": ts(r["start_timestamp"]), "at": ts(r["end_timestamp"]),
            "order": 0, "device_id": LOADER_DEVICE, "correct": float(r["correct"]), "answer": answer,
            "simple_answer": r["simple_answer"], "time_spent": float(r["time_spent"]),
            "complete": bool(r["complete"]), "hinted": bool(r["hinted"]), "error": bool(r["error"]),
            "history": _history(r["correct"], bool(r["hinted"]), bool(r["error"]), answer),
        }))
    for r in src.execute("SELECT * FROM logger_usersessionlog"):
        out[f"user:{r['user_id']}"].append(CreateRecord(r["id"], "usersession", {
            "user_id": r["user_id"], "start_timestamp": ts(r["start_timestamp"]),
            "device_info": (r["device_info"] or None) and r["device_info"][:100], "device_id": LOADER_DEVICE,
        }))
        out[f"user:{r['user_id']}"].append(_event(r["id"], ts(r["last_interaction_timestamp"]), {}))
    exam_of = {}
    for r in src.execute("SELECT * FROM logger_examlog"):
        exam_of[r["id"]] = r["exam_id"]
        out[f"user:{r['user_id']}"].append(CreateRecord(r["id"], "examlog", {
            "exam_id": r["exam_id"], "user_id": r["user_id"], "at": ts(r["completion_timestamp"]) or "2020-01-01T00:00:00.000000+00:00",
            "closed": bool(r["closed"]), "completion_timestamp": ts(r["completion_timestamp"]), "device_id": LOADER_DEVICE,
        }))
    for r in src.execute("SELECT * FROM logger_examattemptlog"):
        answer = json.loads(r["answer"]) if r["answer"] else {}
        out[f"user:{r['user_id']}"].append(CreateRecord(r["id"], "examattempt", {
            "exam_id": exam_of[r["examlog_id"]], "user_id": r["user_id"], "content_id": r["content_id"],
            "item": r["item"], "start_timestamp": ts(r["start_timestamp"]), "at": ts(r["end_timestamp"]),
            "order": 0, "device_id": LOADER_DEVICE, "correct": float(r["correct"]), "answer": answer,
            "simple_answer": r["simple_answer"], "time_spent": float(r["time_spent"]),
            "complete": bool(r["complete"]), "hinted": bool(r["hinted"]), "error": bool(r["error"]),
            "history": _history(r["correct"], bool(r["hinted"]), bool(r["error"]), answer),
        }))
    return out


def _event(record_id: str, at: str | None, fields: dict[str, Any]) -> Mutation:
    from syncd.logs.records import AppendEvent

    return AppendEvent(record_id, {"at": at, "device_id": LOADER_DEVICE, "seq": 1, **fields})


def load(db: Path, state_dir: Path) -> int:
    """Write every learner's document into a fresh state dir; the number of raw logs."""
    partitions = read_school(db)
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = connect(state_dir / DB_FILE)
    migrate(conn)
    records = 0
    conn.execute("BEGIN")
    for feed, (partition, mutations) in enumerate(sorted(partitions.items()), start=1):
        doc = PartitionDoc.create(peer_id=feed)
        doc.apply(mutations)
        for record in doc.records():
            validate_record(RawRecord(record.id, record.kind, record.fields, record.events))
            records += 1
        conn.execute("INSERT INTO documents (partition, snapshot, snapshot_seq, vv) VALUES (?, ?, 0, ?)",
                     (partition, doc.export_snapshot(), doc.version()))
        conn.execute("INSERT INTO partition_seq (partition, seq, vv) VALUES (?, ?, ?)", (partition, feed, doc.version()))
    conn.execute("COMMIT")
    conn.close()
    return records


if __name__ == "__main__":
    started = time.perf_counter()
    n = load(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"loaded {n} raw logs in {time.perf_counter() - started:.1f} s")
