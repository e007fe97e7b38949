"""A school's worth of realistic raw records, produced through ``logs.writes``.

Each learner watches videos and reads documents over several sessions, practises
exercises (first attempts, retries, hints), takes a coach quiz with answer changes and a
submit, and sends heartbeats: the request mix of SPEC §2.4. The RNG is seeded, so the
workload is the same on every run.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

from syncd.logs import writes
from syncd.logs.partitions import user_partition
from syncd.logs.state import PartitionState
from syncd.logs.timestamps import format_timestamp

DEVICE = "a" * 64
DATASET = "d" * 32


class _Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> str:
        self.now += timedelta(seconds=seconds)
        return format_timestamp(self.now)


def learner_state(rng: random.Random, *, contents: int = 30, exercises: int = 24) -> PartitionState:
    """The partition of one learner after a term of use (~500 raw records)."""
    user_id = uuid.UUID(int=rng.getrandbits(128)).hex
    state = PartitionState(user_partition(user_id))
    clock = _Clock(datetime(2025, 1, 6, 8, 0, tzinfo=timezone.utc))

    def ctx() -> writes.WriteContext:
        return writes.WriteContext(now=format_timestamp(clock.now), user_id=user_id, device_id=DEVICE,
                                   dataset_id=DATASET, new_id=lambda: uuid.UUID(int=rng.getrandbits(128)).hex,
                                   random_quiz_level=lambda: rng.randint(-2**31, -1))

    def call(fn: str, *args: object) -> dict[str, object]:
        result = getattr(writes, fn)(state, *args, ctx())
        state.apply(result.mutations)
        return dict(result.response)

    channel = uuid.UUID(int=rng.getrandbits(128)).hex
    for n in range(contents):
        content = {"node_id": uuid.UUID(int=rng.getrandbits(128)).hex, "content_id": f"{n:032x}",
                   "channel_id": channel, "kind": rng.choice(["video", "document", "audio", "html5"])}
        for _ in range(rng.randint(1, 3)):
            clock.advance(rng.randint(3600, 86400))
            session = str(call("start_session", dict(content))["session_id"])
            for _ in range(rng.randint(2, 5)):
                clock.advance(rng.randint(5, 120))
                update: dict[str, object] = {"time_spent_delta": float(rng.randint(5, 120)),
                                             "progress_delta": rng.choice([0.0, 0.1, 0.2, 0.301, 0.4])}
                if rng.random() < 0.3:
                    update["extra_fields"] = {"contentState": {"page": rng.randint(1, 40)}}
                call("update_session", session, update)
    for n in range(exercises):
        content = {"node_id": uuid.UUID(int=rng.getrandbits(128)).hex, "content_id": f"{1000 + n:032x}",
                   "channel_id": channel, "kind": "exercise",
                   "mastery_model": rng.choice([{"type": "m_of_n", "m": 3, "n": 5},
                                                {"type": "num_correct_in_a_row_5"}, {"type": "do_all"}])}
        for visit in range(rng.randint(1, 2)):
            clock.advance(rng.randint(3600, 86400))
            started = call("start_session", dict(content, repeat=visit > 0 and rng.random() < 0.3))
            session, done = str(started["session_id"]), int(started["totalattempts"])  # type: ignore[call-overload]
            for question in range(rng.randint(6, 14)):
                elapsed = float(rng.randint(3, 30))
                clock.advance(elapsed)
                correct = rng.random() < 0.7
                hinted = not correct and rng.random() < 0.2
                first = {"item": f"q{done + question}", "correct": int(correct), "complete": correct,
                         "time_spent": elapsed, "hinted": hinted, "answer": {"response": str(correct)}}
                reply = call("update_session", session, {"time_spent_delta": elapsed, "interactions": [first],
                                                         "progress_delta": 0.2 if correct else 0.001})
                attempt = reply["attempts"][0]["id"]  # type: ignore[index]
                if not correct:
                    clock.advance(5)
                    retry = dict(first, id=attempt, correct=1, complete=True, time_spent=elapsed + 5, hinted=False)
                    call("update_session", session, {"time_spent_delta": 5.0, "interactions": [retry]})
    quiz = {"quiz_id": uuid.UUID(int=rng.getrandbits(128)).hex}
    clock.advance(86400)
    session = str(call("start_session", dict(quiz))["session_id"])
    for question in range(10):
        for change in range(rng.randint(1, 2)):
            clock.advance(10)
            call("update_session", session, {"time_spent_delta": 10.0, "interactions": [
                {"item": f"ex:{question}", "correct": change, "time_spent": 10.0 * (change + 1),
                 "replace": True, "answer": {"choice": change}, "simple_answer": str(change)}]})
    clock.advance(5)
    call("update_session", session, {"progress_delta": 1, "time_spent_delta": 5.0})
    clock.now = datetime(2025, 1, 6, 8, 0, tzinfo=timezone.utc)
    for _ in range(30):
        clock.advance(rng.choice([60, 240, 400, 7200]))
        call("heartbeat", {"active": True, "os": {"name": "Android", "major": "12"},
                           "browser": {"name": "Chrome", "major": "120"}})
    return state


def school(learners: int = 50, seed: int = 7) -> list[PartitionState]:
    rng = random.Random(seed)
    return [learner_state(rng) for _ in range(learners)]
