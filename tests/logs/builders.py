"""Raw records built by hand, shaped as ``logs.writes`` writes them (records.py)."""

from __future__ import annotations

from typing import Any

from syncd.logs.records import RawRecord
from tests.logs.helpers import CHANNEL, CONTENT, DEVICE, NODE, USER, ts

Event = dict[str, Any]


def event(seconds: float, seq: int, device: str = DEVICE, **fields: Any) -> Event:
    return {"at": ts(seconds), "device_id": device, "seq": seq, **fields}


def session(record_id: str, start: float, updates: list[Event] | None = None, *, level: int | None = None,
            criterion: Any = None, repeat: bool = False, user: str | None = USER, content: str = CONTENT,
            kind: str = "video", channel: str | None = CHANNEL, device: str = DEVICE) -> RawRecord:
    context: dict[str, Any] = {"node_id": NODE}
    if level is not None:
        context["mastery_level"] = level
    if level is not None and criterion is None:
        criterion = {"type": "m_of_n", "m": 3, "n": 5}
    return RawRecord(record_id, "session", {
        "user_id": user, "content_id": content, "channel_id": channel, "kind": kind, "visitor_id": None,
        "start_timestamp": ts(start), "context": context, "repeat": repeat, "mastery_level": level,
        "mastery_criterion": criterion, "device_id": device,
    }, list(updates or []))


def attempt(record_id: str, created: float, events: list[Event] | None = None, *, item: str = "q1",
            correct: float = 0.0, time_spent: float = 5.0, complete: bool = False, hinted: bool = False,
            error: bool = False, answer: Any = None, simple_answer: str = "", level: int | None = 1,
            session_id: str = "5e" * 16, user: str | None = USER, content: str = CONTENT,
            order: int = 0, device: str = DEVICE) -> RawRecord:
    answer = {"r": correct} if answer is None else answer
    return RawRecord(record_id, "attempt", {
        "user_id": user, "sessionlog_id": session_id, "content_id": content, "mastery_level": level,
        "item": item, "start_timestamp": ts(created - time_spent), "at": ts(created), "order": order,
        "device_id": device, "correct": correct, "answer": answer, "simple_answer": simple_answer,
        "time_spent": time_spent, "complete": complete, "hinted": hinted, "error": error,
        "history": {"type": "answer", "answer": answer, "correct": correct},
    }, list(events or []))


def interaction(seconds: float, seq: int, correct: float | None = None, time_spent: float = 5.0,
                device: str = DEVICE, **fields: Any) -> Event:
    """An attempt event as a later interaction writes it."""
    history = {"type": "answer", "answer": {"r": correct if correct is not None else 0}, "correct": float(correct or 0)}
    extra: dict[str, Any] = {"history": history, "time_spent": time_spent, **fields}
    if correct is not None:
        extra["correct"] = correct
    return event(seconds, seq, device, **extra)
