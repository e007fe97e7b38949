"""Small builders shared by the pure tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from tests.logs.memory_driver import MemoryDevice

USER = "a1" * 16
OTHER_USER = "b2" * 16
DEVICE = "1" * 64
OTHER_DEVICE = "2" * 64
DATASET = "d" * 32
NODE = "e0" * 16
CONTENT = "c0" * 16
CHANNEL = "cc" * 16
QUIZ = "9a" * 16
LESSON = "1e" * 16
COURSE = "c5" * 16
UNIT = "0a" * 16
T0 = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
TRACK = "/api/logger/trackprogress/"
SESSION = "/api/auth/session/current/"


def at(seconds: float = 0) -> str:
    """ISO time ``seconds`` after 2025-01-06 09:00 UTC."""
    return (T0 + timedelta(seconds=seconds)).isoformat()


def ts(seconds: float = 0) -> str:
    """The canonical (stored) text of ``at(seconds)``."""
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def video(**extra: Any) -> dict[str, Any]:
    return {"node_id": NODE, "content_id": CONTENT, "channel_id": CHANNEL, "kind": "video", **extra}


def exercise(model: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"node_id": NODE, "content_id": CONTENT, "channel_id": CHANNEL, "kind": "exercise",
            "mastery_model": model or {"type": "m_of_n", "m": 3, "n": 5}, **extra}


def answer(item: str, correct: float = 1, seconds: float = 5, **extra: Any) -> dict[str, Any]:
    return {"item": item, "correct": correct, "time_spent": seconds, "complete": bool(correct),
            "answer": {"response": str(correct)}, **extra}


class Learner:
    """A learner on one device: ``start``/``update``/``beat`` return (status, body)."""

    def __init__(self, user: str | None = USER, device: MemoryDevice | None = None) -> None:
        self.user = user
        self.device = device or MemoryDevice(DEVICE, DATASET, seed=3)

    def start(self, payload: Any, seconds: float = 0) -> tuple[int, Any]:
        return self.device.send("POST", TRACK, payload, at(seconds), self.user)

    def update(self, session_id: str, payload: Any, seconds: float = 0) -> tuple[int, Any]:
        return self.device.send("PUT", f"{TRACK}{session_id}/", payload, at(seconds), self.user)

    def beat(self, payload: Any, seconds: float = 0) -> tuple[int, Any]:
        return self.device.send("PUT", SESSION, payload, at(seconds), self.user)

    def started(self, payload: Any, seconds: float = 0) -> dict[str, Any]:
        status, body = self.start(payload, seconds)
        assert status == 200, body
        assert isinstance(body, dict)
        return body

    def updated(self, session_id: str, payload: Any, seconds: float = 0) -> dict[str, Any]:
        status, body = self.update(session_id, payload, seconds)
        assert status == 200, body
        assert isinstance(body, dict)
        return body

    def rows(self, model: str) -> list[dict[str, Any]]:
        return self.device.read_rows(model)

    def row(self, model: str) -> dict[str, Any]:
        (only,) = self.rows(model)
        return only

    def snapshot(self) -> list[str]:
        """Every derived row as canonical JSON (to prove a refused request changed nothing)."""
        return sorted(row.to_json() for row in self.device.derived())

    def raw_count(self) -> int:
        return sum(len(s) for s in self.device.states.values()) + sum(
            len(r.events) for s in self.device.states.values() for r in s.records.values())
