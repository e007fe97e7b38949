"""The pure folds of SPEC §3: raw records in, visible values out.

Theory of operation
-------------------
Every visible value is recomputed from scratch from raw records, so two devices holding
the same records get the same values whatever order the records or their events arrived
in. Nothing here depends on dict or list order of records or of events:

* A session's updates are ordered per SPEC §3.1: each device's updates to the session
  form a chain in ``seq`` order; ``eff_at`` is the running maximum of the session start
  and the ``at`` of the chain so far; updates sort by ``(eff_at, device_id, seq)``. On
  one device with a forward clock that is exactly the order Kolibri applied them.
* A content group's events (session starts and updates) sort by the §3.1 key
  ``(time, start_timestamp, session_id, device_id, seq)``; a start event has the empty
  device id and seq 0, so it precedes its own updates.
* Attempt and exam events use "latest write wins" per field by ``(at, device_id, seq)``;
  the creation counts as the write ``(at, "", 0)`` (it precedes every event of its own
  instant). Booleans are OR, ``completion_timestamp`` the earliest non-null, ``end`` the
  max, histories the creation's entry followed by every event's in key order.

Timestamps are canonical text (``timestamps.py``): they compare as instants without
parsing. Floats are folded in binary64 in event order (SPEC §3.2).
"""

from __future__ import annotations

from math import ceil
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any, Callable, Iterable

from syncd.logs.records import JSON, RawRecord, canonical_json
from syncd.logs.timestamps import Timestamp

UpdateKey = tuple[str, str, int]                 # (eff_at, device_id, seq)
EventKey = tuple[str, str, str, str, int]        # (time, start, session_id, device_id, seq)
WriteKey = tuple[str, str, int]                  # (at, device_id, seq)

# Types whose start response returns the first k past attempts (Kolibri's MAPPING).
IN_A_ROW = {"num_correct_in_a_row_2": 2, "num_correct_in_a_row_3": 3,
            "num_correct_in_a_row_5": 5, "num_correct_in_a_row_10": 10}
QUIZ_LIKE = frozenset({"quiz", "pre_post_test"})
_BY_START = attrgetter("start_timestamp", "id")


def normalise_progress(value: float) -> float:
    """SPEC §0 ``N(x)``: round up to 3 decimals, clamp to [0, 1]."""
    return max(0.0, min(1.0, ceil(value * 1000) / 1000.0))


@dataclass(slots=True)
class SessionView:
    """A ContentSessionLog's derived values (SPEC §3.3) plus its ordered updates."""

    record: RawRecord
    id: str
    start_timestamp: Timestamp
    end_timestamp: Timestamp
    progress: float
    time_spent: float
    updates: list[tuple[UpdateKey, dict[str, JSON]]]


@dataclass(slots=True)
class SummaryView:
    """A ContentSummaryLog's folded values (SPEC §3.4); ids are added by ``aggregate``."""

    kind: str
    channel_id: str | None
    start_timestamp: Timestamp
    end_timestamp: Timestamp
    completion_timestamp: Timestamp | None
    progress: float
    time_spent: float
    extra_fields: JSON


@dataclass(slots=True)
class MasteryView:
    """A MasteryLog's folded values (SPEC §3.4)."""

    mastery_level: int
    mastery_criterion: JSON
    start_timestamp: Timestamp
    end_timestamp: Timestamp
    complete: bool
    completion_timestamp: Timestamp | None
    time_spent: float


@dataclass(slots=True)
class AttemptView:
    """An AttemptLog (or ExamAttemptLog) as visible: per-field merge of SPEC §3.6."""

    id: str
    item: str
    start_timestamp: Timestamp
    end_timestamp: Timestamp
    completion_timestamp: Timestamp | None
    time_spent: float
    complete: bool
    correct: float
    hinted: bool
    answer: JSON
    simple_answer: str
    interaction_history: list[JSON]
    user_id: str | None
    error: bool
    mastery_level: int | None
    sessionlog_id: str | None
    content_id: str
    created: tuple[str, int, str]     # (at, order, id): creation order


@dataclass(slots=True)
class ContentFold:
    """Everything derived from one ("content", content_id) group."""

    content_id: str
    sessions: list[SessionView]        # by (start_timestamp, id)
    summary: SummaryView | None
    mastery: dict[int, MasteryView]
    attempts: list[AttemptView]        # consolidated (§3.6), by (start_timestamp, id)


# --- event order -----------------------------------------------------------------------
def write_key(event: dict[str, JSON]) -> WriteKey:
    return (event["at"], event["device_id"], event["seq"])


def sorted_events(events: list[dict[str, JSON]],
                  key: Callable[[dict[str, JSON]], tuple[Any, ...]]) -> list[dict[str, JSON]]:
    """``events`` sorted by ``key``. Two events only share a key when a cloned device
    repeated a ``seq`` (integrity.py keeps both); their canonical JSON then decides, so the
    order never depends on the order the events arrived in."""
    if len(events) < 2:
        return list(events)
    keys = [key(event) for event in events]
    order = sorted(range(len(events)), key=keys.__getitem__)
    for first, second in zip(order, order[1:]):
        if keys[first] == keys[second]:
            return sorted(events, key=lambda e: (key(e), canonical_json(e)))
    return [events[i] for i in order]


def _in_seq_order(events: list[dict[str, JSON]]) -> bool:
    """True when one device wrote every event and the list is in its seq order (the usual
    case, which needs no sorting)."""
    device = events[0]["device_id"]
    previous = 0
    for event in events:
        seq = event["seq"]
        if event["device_id"] != device or seq <= previous:
            return False
        previous = seq
    return True


# --- sessions ------------------------------------------------------------------------
def order_updates(record: RawRecord) -> list[tuple[UpdateKey, dict[str, JSON]]]:
    """A session's updates in SPEC §3.1 order, each with its ``(eff_at, device_id, seq)``."""
    events = record.events
    if not events:
        return []
    start: str = record.fields["start_timestamp"]
    single = _in_seq_order(events)
    chained = events if single else sorted_events(events, lambda e: (e["device_id"], e["seq"]))
    keyed: list[tuple[UpdateKey, dict[str, JSON]]] = []
    device: str | None = None
    eff = start
    for event in chained:
        if event["device_id"] != device:
            device, eff = event["device_id"], start
        at = event["at"]
        if at > eff:
            eff = at
        keyed.append(((eff, event["device_id"], event["seq"]), event))
    if not single and device != chained[0]["device_id"]:  # several devices: interleave chains
        keyed.sort(key=itemgetter(0))
    return keyed


def fold_session(record: RawRecord) -> SessionView:
    """SPEC §3.3: the session's own progress, time and end from its updates."""
    start: str = record.fields["start_timestamp"]
    updates = order_updates(record)
    progress = 0.0
    time_spent = 0.0
    end = start
    for _, update in updates:
        end = update["at"]
        if "progress_delta" in update:
            value = ceil((progress + update["progress_delta"]) * 1000) / 1000.0   # N(), inlined
            progress = 1.0 if value > 1.0 else (0.0 if value < 0.0 else value)
        elif "progress" in update:
            progress = normalise_progress(update["progress"])
        if "time_spent_delta" in update:
            time_spent += update["time_spent_delta"]
    return SessionView(record, record.id, start, end, progress, time_spent, updates)


FoldEntry = tuple[dict[str, JSON], "int | None", "dict[str, JSON] | None"]


def _canonical_events(sessions: list[SessionView]) -> list[FoldEntry]:
    """Every start and update of the sessions in SPEC §3.1 order, as (session fields,
    mastery level, update or None for the start event)."""
    ordered = sorted(sessions, key=lambda v: (v.start_timestamp, v.id)) if len(sessions) > 1 else sessions
    # Usual case: sessions do not overlap, so their events are simply concatenated.
    sequential = True
    for before, after in zip(ordered, ordered[1:]):
        last = before.updates[-1][0] if before.updates else (before.start_timestamp, "", 0)
        if (last[0], before.start_timestamp, before.id, last[1], last[2]) >= (
                after.start_timestamp, after.start_timestamp, after.id, "", 0):
            sequential = False
            break
    if sequential:
        entries: list[FoldEntry] = []
        for view in ordered:
            fields = view.record.fields
            level = fields["mastery_level"]
            entries.append((fields, level, None))
            for _, change in view.updates:
                entries.append((fields, level, change))
        return entries
    keyed: list[tuple[EventKey, FoldEntry]] = []
    for view in ordered:
        start, sid, fields = view.start_timestamp, view.id, view.record.fields
        level = fields["mastery_level"]
        keyed.append(((start, start, sid, "", 0), (fields, level, None)))
        for (eff, device, seq), change in view.updates:
            keyed.append(((eff, start, sid, device, seq), (fields, level, change)))
    keyed.sort(key=itemgetter(0))
    return [entry for _, entry in keyed]


def step_mastery(log: MasteryView, delta: float | None, progress: float, at: str) -> None:
    """SPEC §3.4: one update event of a session bound to mastery ``log``, after the
    summary's progress became ``progress``. Its end moves only when it added time or
    completed the log."""
    touched = False
    if delta:  # a non-zero time delta
        log.time_spent += delta
        touched = True
    if progress >= 1 and not log.complete:
        log.complete = True
        log.completion_timestamp = at
        touched = True
    if touched:
        log.end_timestamp = at


def fold_summary(sessions: list[SessionView]) -> tuple[SummaryView | None, dict[int, MasteryView]]:
    """SPEC §3.4: one fold over the starts and updates of all sessions of (user, content)."""
    if not sessions:
        return None, {}
    entries = _canonical_events(sessions)

    # The summary lives in locals while folding (this is the hot loop of a rebuild).
    first = entries[0][0]
    kind: str = first["kind"]
    start_timestamp: str = first["start_timestamp"]
    channel_id: str | None = None
    end_timestamp = start_timestamp
    completion: str | None = None
    progress = 0.0
    time_spent = 0.0
    extra_fields: JSON = {}
    mastery: dict[int, MasteryView] = {}
    for fields, level, update in entries:
        if update is None:  # a start event
            end_timestamp = fields["start_timestamp"]
            channel_id = fields["channel_id"]
            if fields["repeat"]:
                progress = 0.0
            if level is not None and level not in mastery:
                mastery[level] = MasteryView(level, fields["mastery_criterion"], end_timestamp,
                                             end_timestamp, False, None, 0.0)
            continue
        at = update["at"]
        was_complete = progress >= 1
        end_timestamp = at
        if "progress_delta" in update:
            value = ceil((progress + update["progress_delta"]) * 1000) / 1000.0   # N(), inlined
            progress = 1.0 if value > 1.0 else (0.0 if value < 0.0 else value)
        elif "progress" in update:
            progress = normalise_progress(update["progress"])
        delta = update.get("time_spent_delta")
        if delta is not None:
            time_spent += delta
        if progress >= 1 and not was_complete:
            completion = at
        if "extra_fields" in update:
            extra_fields = update["extra_fields"]
        if level is not None:
            step_mastery(mastery[level], delta, progress, at)
    summary = SummaryView(kind, channel_id, start_timestamp, end_timestamp, completion, progress,
                          time_spent, extra_fields)
    return summary, mastery


# --- attempts --------------------------------------------------------------------------
def fold_attempt(record: RawRecord) -> AttemptView:
    """SPEC §3.6 per-field merge of an attempt's creation and its events."""
    f = record.fields
    created_at: str = f["at"]
    end = created_at
    correct = f["correct"]
    answer = f["answer"]
    simple_answer = f["simple_answer"]
    time_spent = f["time_spent"]
    complete: bool = f["complete"]
    hinted: bool = f["hinted"]
    error: bool = f["error"]
    completion: str | None = created_at if complete else None
    history: list[JSON] = [f["history"]]
    events = record.events
    if events:
        for event in (events if len(events) == 1 else sorted_events(events, write_key)):
            at = event["at"]
            if at > end:
                end = at
            history.append(event["history"])
            if event.get("complete"):
                complete = True
                if completion is None or at < completion:
                    completion = at
            if event.get("hinted"):
                hinted = True
            if event.get("error"):
                error = True
            if at >= created_at:  # later than the creation write: last writer wins
                if "time_spent" in event:
                    time_spent = event["time_spent"]
                if "correct" in event:
                    correct = event["correct"]
                if "answer" in event:
                    answer = event["answer"]
                if "simple_answer" in event:
                    simple_answer = event["simple_answer"]
    return AttemptView(
        record.id, f["item"], f["start_timestamp"], end, completion, float(time_spent), complete,
        float(correct), hinted, answer, simple_answer, history, f["user_id"], error,
        f.get("mastery_level"), f.get("sessionlog_id"), f["content_id"],
        (created_at, f["order"], record.id),
    )


def consolidate_quiz_attempts(attempts: list[AttemptView]) -> list[AttemptView]:
    """SPEC §3.6 quiz duplicates: attempts of one quiz try (level < 0) sharing an item are
    presented as one: the latest by (end, id) keeps its fields, with the earliest start,
    every history (oldest end first) and the time spent summed (its own first, then the
    others from the latest end down). Returned sorted by (start_timestamp, id)."""
    groups: dict[tuple[str, int, str], list[AttemptView]] = {}
    result: list[AttemptView] = []
    for view in attempts:
        level = view.mastery_level
        if level is not None and level < 0 and view.user_id is not None:
            groups.setdefault((view.user_id, level, view.item), []).append(view)
        else:
            result.append(view)
    for group in groups.values():
        if len(group) == 1:
            result.append(group[0])
            continue
        group.sort(key=lambda v: (v.end_timestamp, v.id))
        keep = group[-1]
        time_spent = keep.time_spent
        for other in reversed(group[:-1]):
            time_spent += other.time_spent
        history: list[JSON] = []
        for view in group:
            history.extend(view.interaction_history)
        result.append(AttemptView(
            keep.id, keep.item, min(v.start_timestamp for v in group), keep.end_timestamp,
            keep.completion_timestamp, time_spent, keep.complete, keep.correct, keep.hinted,
            keep.answer, keep.simple_answer, history, keep.user_id, keep.error,
            keep.mastery_level, keep.sessionlog_id, keep.content_id, keep.created,
        ))
    result.sort(key=_BY_START)
    return result


# --- groups ----------------------------------------------------------------------------
def fold_content(content_id: str, records: Iterable[RawRecord], *, with_summary: bool) -> ContentFold:
    """Fold a ("content", content_id) group; ``with_summary`` for user partitions only
    (anonymous sessions produce no summary or mastery rows, SPEC §3.4 rule 9)."""
    sessions: list[SessionView] = []
    attempts: list[AttemptView] = []
    for record in records:
        if record.kind == "session":
            sessions.append(fold_session(record))
        elif record.kind == "attempt":
            attempts.append(fold_attempt(record))
    sessions.sort(key=_BY_START)
    summary: SummaryView | None = None
    mastery: dict[int, MasteryView] = {}
    if with_summary and sessions:
        summary, mastery = fold_summary(sessions)
    return ContentFold(content_id, sessions, summary, mastery, consolidate_quiz_attempts(attempts))


def last_interaction(record: RawRecord) -> Timestamp:
    """SPEC §3.9: a UserSessionLog's ``last_interaction_timestamp`` is the max of its
    creation and every heartbeat that extended it."""
    latest: str = record.fields["start_timestamp"]
    for event in record.events:
        if event["at"] > latest:
            latest = event["at"]
    return latest


@dataclass(slots=True)
class ExamLogView:
    """An ExamLog's folded state (SPEC §1.5 [syncd]): ``closed`` is OR, ``completion`` the
    earliest non-null, over every raw exam-log record of the (exam, user)."""

    exam_id: str
    user_id: str
    closed: bool
    completion_timestamp: Timestamp | None


def fold_examlog(records: list[RawRecord]) -> ExamLogView:
    first = records[0].fields
    closed = False
    completion: str | None = None
    for record in records:
        writes: list[dict[str, JSON]] = [record.fields, *record.events]
        for write in writes:
            if write.get("closed"):
                closed = True
            stamp = write.get("completion_timestamp")
            if stamp is not None and (completion is None or stamp < completion):
                completion = stamp
    return ExamLogView(first["exam_id"], first["user_id"], closed, completion)
