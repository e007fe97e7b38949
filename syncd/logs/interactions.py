"""SPEC §2.2 step 9: an update's ``interactions`` as attempt mutations.

The interactions are split into runs of consecutive interactions with the same item; each
run finds its attempt from its first interaction (by id, else by the replace lookup) or
creates one. Every later run sees what the earlier runs of the same request did, so the
mutations are applied, as they are produced, to private copies of the attempts they touch.
"""

from __future__ import annotations

from itertools import groupby
from typing import Callable, Iterator

from syncd.errors import InvalidRecordError
from syncd.logs.folds import AttemptView, fold_attempt
from syncd.logs.records import JSON, AppendEvent, CreateRecord, Mutation, RawRecord
from syncd.logs.requests import Interaction
from syncd.logs.state import PartitionState
from syncd.logs.timestamps import minus_seconds

MasteryKey = tuple[str, int] | None   # (content_id, mastery_level): identifies a mastery log


def next_seq(record: RawRecord, device_id: str) -> int:
    """1 + the number of events this device already appended to the record (its highest
    number + 1, which is the same unless a cloned device repeated numbers)."""
    return 1 + max((event["seq"] for event in record.events if event["device_id"] == device_id), default=0)


def interaction_summary(interaction: Interaction) -> dict[str, JSON]:
    """The ``interaction_history`` entry of one interaction."""
    if interaction.error:
        return {"type": "error"}
    if interaction.hinted:
        return {"type": "hint", "answer": interaction.answer}
    return {"type": "answer", "answer": interaction.answer, "correct": interaction.correct}


def attempt_output(view: AttemptView) -> dict[str, JSON]:
    """An attempt as start and update responses show it (Kolibri's ``attemptlog_fields``)."""
    return {
        "id": view.id,
        "correct": view.correct,
        "complete": view.complete,
        "hinted": view.hinted,
        "error": view.error,
        "item": view.item,
        "answer": view.answer,
        "time_spent": view.time_spent,
    }


def mastery_key(user_id: str | None, content_id: str, level: int | None) -> MasteryKey:
    """Which mastery log a session or attempt belongs to; None when it has none
    (anonymous, or not an assessment)."""
    if user_id is None or level is None:
        return None
    return (content_id, level)


def _attempt_key(record: RawRecord) -> MasteryKey:
    f = record.fields
    return mastery_key(f["user_id"], f["content_id"], f["mastery_level"])


def _runs(interactions: tuple[Interaction, ...]) -> Iterator[tuple[int, list[Interaction]]]:
    """Runs of consecutive interactions with the same item, with the index of each run's
    first interaction ("a, b, a" is three runs)."""
    index = 0
    for _, group in groupby(interactions, key=lambda i: i.item):
        run = list(group)
        yield index, run
        index += len(run)


class _Working:
    """The partition as this request has changed it so far: ``state`` plus private copies
    of the attempts it created or extended (the state itself is never touched)."""

    def __init__(self, state: PartitionState) -> None:
        self.state = state
        self.changed: dict[str, RawRecord] = {}

    def get(self, record_id: str) -> RawRecord | None:
        return self.changed.get(record_id) or self.state.get(record_id)

    def create(self, mutation: CreateRecord) -> RawRecord:
        record = RawRecord(mutation.record_id, mutation.kind, dict(mutation.fields), [])
        self.changed[record.id] = record
        return record

    def append(self, record: RawRecord, event: dict[str, JSON]) -> RawRecord:
        if record.id not in self.changed:
            record = RawRecord(record.id, record.kind, record.fields, list(record.events))
            self.changed[record.id] = record
        record.events.append(event)
        return record

    def attempts(self, content_id: str | None) -> Iterator[RawRecord]:
        """Attempts of one content group (None: of the whole partition)."""
        base = self.state.in_group(("content", content_id)) if content_id else self.state.of_kind("attempt")
        seen: set[str] = set()
        for record in base:
            if record.kind == "attempt":
                seen.add(record.id)
                yield self.changed.get(record.id, record)
        for record in self.changed.values():
            if record.id not in seen and (content_id is None or record.fields["content_id"] == content_id):
                yield record


def apply_interactions(state: PartitionState, session: RawRecord, interactions: tuple[Interaction, ...],
                       *, user_id: str | None, device_id: str, now: str,
                       new_id: Callable[[], str]) -> tuple[list[Mutation], list[dict[str, JSON]]]:
    """The attempt mutations of one update and its ``attempts`` response entries."""
    work = _Working(state)
    session_key = mastery_key(user_id, session.fields["content_id"], session.fields["mastery_level"])
    mutations: list[Mutation] = []
    outputs: list[dict[str, JSON]] = []
    created = 0
    for index, run in _runs(interactions):
        first = run[0]
        record: RawRecord | None = None
        todo = run
        if first.id is not None:
            record = work.get(first.id)
            if (record is None or record.kind != "attempt" or record.fields["user_id"] != user_id
                    or _attempt_key(record) != session_key):
                raise InvalidRecordError(f"interactions.{index}.id", "Invalid attemptlog id specified",
                                         code="invalid")
        elif first.replace:
            record = _replace_lookup(work, session, first.item, user_id, session_key)
        if record is None:
            creation = CreateRecord(new_id(), "attempt",
                                    _creation_fields(session, first, user_id, device_id, now, created, index))
            created += 1
            mutations.append(creation)
            record = work.create(creation)
            todo = run[1:]
        for interaction in todo:
            event = _interaction_event(fold_attempt(record), interaction, device_id, now,
                                       next_seq(record, device_id))
            mutations.append(AppendEvent(record.id, event))
            record = work.append(record, event)
        outputs.append(attempt_output(fold_attempt(record)))
    return mutations, outputs


def _replace_lookup(work: _Working, session: RawRecord, item: str, user_id: str | None,
                    session_key: MasteryKey) -> RawRecord | None:
    """The attempt a ``replace`` interaction without id updates: same user, same mastery
    log and same item (anonymous: same session). [syncd] Several: the latest end, then the
    largest id (Kolibri fails with a 500)."""
    best: tuple[str, str] | None = None
    found: RawRecord | None = None
    for record in work.attempts(session_key[0] if session_key is not None else None):
        f = record.fields
        if f["item"] != item or f["user_id"] != user_id or _attempt_key(record) != session_key:
            continue
        if user_id is None and f["sessionlog_id"] != session.id:
            continue
        rank = (fold_attempt(record).end_timestamp, record.id)
        if best is None or rank > best:
            best, found = rank, record
    return found


def _creation_fields(session: RawRecord, first: Interaction, user_id: str | None, device_id: str,
                     now: str, order: int, index: int) -> dict[str, JSON]:
    try:
        start = minus_seconds(now, first.time_spent)
    except OverflowError:
        raise InvalidRecordError(f"interactions.{index}.time_spent", "time_spent reaches before year 1",
                                 code="max_value") from None
    return {
        "user_id": user_id,
        "sessionlog_id": session.id,
        "content_id": session.fields["content_id"],
        "mastery_level": session.fields["mastery_level"] if user_id is not None else None,
        "item": first.item,
        "start_timestamp": start,
        "at": now,
        "order": order,
        "device_id": device_id,
        "correct": first.correct,
        "answer": first.answer if first.answer is not None else {},
        "simple_answer": first.simple_answer if first.simple_answer is not None else "",
        "time_spent": first.time_spent,
        "complete": first.complete,
        "hinted": first.hinted,
        "error": first.error,
        "history": interaction_summary(first),
    }


def _interaction_event(current: AttemptView, i: Interaction, device_id: str, now: str,
                       seq: int) -> dict[str, JSON]:
    """One interaction applied to an existing attempt; only the fields it sets (SPEC §2.2
    step 9, sub-steps 1–5, evaluated against the attempt as it is now)."""
    event: dict[str, JSON] = {"at": now, "device_id": device_id, "seq": seq,
                              "history": interaction_summary(i), "time_spent": i.time_spent}
    if i.error and not current.error:
        event["error"] = True
    # hinted only while the attempt is still incorrect (before this interaction's replace)
    if i.hinted and not current.hinted and not current.correct:
        event["hinted"] = True
    if i.replace:
        event["correct"] = i.correct
        if i.answer is not None:
            event["answer"] = i.answer
        if i.simple_answer is not None:
            event["simple_answer"] = i.simple_answer
    if i.complete and not current.complete:
        event["complete"] = True
    return event
