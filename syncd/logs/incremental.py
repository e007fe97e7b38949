"""The fold of a content group (SPEC §3.3, §3.4, §3.6), kept up to date event by event.

``ContentFoldState`` holds what ``folds.fold_content`` computes for one ("content",
content_id) group, plus what it takes to fold one more event without refolding the rest:

* ``last_key``: the canonical key (SPEC §3.1) of the last event folded;
* per session and device, the highest ``seq`` and the running ``eff_at`` of that chain,
  so the key of a new update is known without re-sorting the session.

Folding is a left fold over the events in canonical order, so when a new event sorts
after every event already folded, folding it onto the state gives exactly what a full
fold gives. That is the usual case: a local write, on a clock that moves forward, appends
an event whose key is the largest. Anything else (an event-time header in the past, a
clock stepping back, a repeated ``seq``) cannot be extended: ``add_*`` answers False and
the owner refolds the group from scratch. ``tests/property/test_fold_properties.py``
checks, for random event sequences in random arrival order, that the extended state
renders byte-identical rows to a full fold.

The state also records which of its rows an extension may have changed (the touched
sessions, the summary, the touched mastery levels and attempts), so a store can render
and write only those; ``take_changes`` hands them over and starts a new record.

The summary step below repeats, event for event, the loop of ``folds.fold_summary``
(which stays inlined for the speed of a full rebuild); the property test holds the two
together. Pure data: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil
from typing import Mapping

from syncd.logs.folds import (
    AttemptView,
    ContentFold,
    EventKey,
    MasteryView,
    SessionView,
    SummaryView,
    step_mastery,
    consolidate_quiz_attempts,
    fold_attempt,
    fold_session,
    fold_summary,
    normalise_progress,
)
from syncd.logs.records import JSON, RawRecord

QuizKey = tuple[str, int, str]     # (user_id, mastery_level < 0, item): quiz duplicates (§3.6)


@dataclass(slots=True)
class FoldChanges:
    """Which rows of a content group the extensions since the last ``take_changes`` may
    have changed."""

    sessions: set[str] = field(default_factory=set)
    summary: bool = False
    levels: set[int] = field(default_factory=set)
    attempts: set[str] = field(default_factory=set)
    # a change that reaches rows beyond the above (quiz attempts presented as one)
    everything: bool = False


def _quiz_key(view: AttemptView) -> QuizKey | None:
    level = view.mastery_level
    if level is not None and level < 0 and view.user_id is not None:
        return (view.user_id, level, view.item)
    return None


def _session_chains(record: RawRecord) -> dict[str, tuple[int, str]]:
    """device -> (highest seq, eff_at after its chain) of one session (SPEC §3.1: eff_at
    is the running max of the start and every ``at`` of the chain, so the order of the
    chain does not matter for its final value)."""
    start: str = record.fields["start_timestamp"]
    chains: dict[str, tuple[int, str]] = {}
    for event in record.events:
        device = event["device_id"]
        at = event["at"]
        previous = chains.get(device)
        if previous is None:
            chains[device] = (event["seq"], at if at > start else start)
        else:
            seq = event["seq"]
            chains[device] = (seq if seq > previous[0] else previous[0], at if at > previous[1] else previous[1])
    return chains


def _last_key(view: SessionView) -> EventKey:
    """The largest §3.1 key among a session's events (its updates are in key order)."""
    start = view.start_timestamp
    if view.updates:
        eff, device, seq = view.updates[-1][0]
        return (eff, start, view.id, device, seq)
    return (start, start, view.id, "", 0)


# --- one event of the §3.4 fold (the body of folds.fold_summary's loop) ---------------------
def _fold_start(summary: SummaryView | None, mastery: dict[int, MasteryView],
                fields: Mapping[str, JSON]) -> SummaryView:
    start: str = fields["start_timestamp"]
    if summary is None:  # the first event of the group is always a start event
        summary = SummaryView(fields["kind"], None, start, start, None, 0.0, 0.0, {})
    summary.end_timestamp = start
    summary.channel_id = fields["channel_id"]
    if fields["repeat"]:
        summary.progress = 0.0
    level = fields["mastery_level"]
    if level is not None and level not in mastery:
        mastery[level] = MasteryView(level, fields["mastery_criterion"], start, start, False, None, 0.0)
    return summary


def _fold_update(summary: SummaryView, mastery: dict[int, MasteryView], level: int | None,
                 update: Mapping[str, JSON]) -> None:
    at = update["at"]
    progress = summary.progress
    was_complete = progress >= 1
    summary.end_timestamp = at
    if "progress_delta" in update:
        value = ceil((progress + update["progress_delta"]) * 1000) / 1000.0   # N(), inlined
        progress = 1.0 if value > 1.0 else (0.0 if value < 0.0 else value)
    elif "progress" in update:
        progress = normalise_progress(update["progress"])
    summary.progress = progress
    delta = update.get("time_spent_delta")
    if delta is not None:
        summary.time_spent += delta
    if progress >= 1 and not was_complete:
        summary.completion_timestamp = at
    if "extra_fields" in update:
        summary.extra_fields = update["extra_fields"]
    if level is not None:
        step_mastery(mastery[level], delta, progress, at)


def _copy_summary(s: SummaryView) -> SummaryView:
    return SummaryView(s.kind, s.channel_id, s.start_timestamp, s.end_timestamp, s.completion_timestamp,
                       s.progress, s.time_spent, s.extra_fields)


def _copy_mastery(m: MasteryView) -> MasteryView:
    return MasteryView(m.mastery_level, m.mastery_criterion, m.start_timestamp, m.end_timestamp, m.complete,
                       m.completion_timestamp, m.time_spent)


class ContentFoldState:
    """The fold of one content group, extendable by events that sort last."""

    __slots__ = ("content_id", "with_summary", "sessions", "_session_index", "_chains", "summary", "mastery",
                 "last_key", "_attempts", "_quiz_counts", "changes")

    def __init__(self, content_id: str, with_summary: bool) -> None:
        self.content_id = content_id
        self.with_summary = with_summary
        self.sessions: list[SessionView] = []                 # by (start_timestamp, id)
        self._session_index: dict[str, SessionView] = {}
        self._chains: dict[str, dict[str, tuple[int, str]]] = {}  # session -> device -> (seq, eff_at)
        self.summary: SummaryView | None = None
        self.mastery: dict[int, MasteryView] = {}
        self.last_key: EventKey | None = None
        self._attempts: dict[str, AttemptView] = {}           # per-record folds, not consolidated
        self._quiz_counts: dict[QuizKey, int] = {}
        self.changes = FoldChanges()

    @classmethod
    def build(cls, content_id: str, records: list[RawRecord], *, with_summary: bool) -> "ContentFoldState":
        """The full fold of a group (``with_summary`` for user partitions only)."""
        fold = cls(content_id, with_summary)
        sessions: list[SessionView] = []
        for record in records:
            if record.kind == "session":
                sessions.append(fold_session(record))
                fold._chains[record.id] = _session_chains(record)
            elif record.kind == "attempt":
                fold._put_attempt(fold_attempt(record))
        sessions.sort(key=lambda v: (v.start_timestamp, v.id))
        fold.sessions = sessions
        fold._session_index = {view.id: view for view in sessions}
        if with_summary and sessions:
            fold.summary, fold.mastery = fold_summary(sessions)
        fold.last_key = max((_last_key(view) for view in sessions), default=None)
        return fold

    # --- reading ---------------------------------------------------------------------------
    def session(self, session_id: str) -> SessionView | None:
        return self._session_index.get(session_id)

    def next_seq(self, session_id: str, device_id: str) -> int | None:
        """``interactions.next_seq`` of a session of this group (None: not one of its
        sessions): 1 + the highest seq ``device_id`` gave the session's events."""
        chains = self._chains.get(session_id)
        if chains is None:
            return None
        chain = chains.get(device_id)
        return 1 if chain is None else chain[0] + 1

    def attempts(self) -> list[AttemptView]:
        """The group's attempts as presented (quiz duplicates consolidated, §3.6), by
        (start_timestamp, id)."""
        return consolidate_quiz_attempts(list(self._attempts.values()))

    def attempts_of_level(self, level: int) -> list[AttemptView]:
        """The presented attempts bound to mastery ``level`` (consolidation only merges
        attempts of one level, so this is ``attempts()`` filtered)."""
        return consolidate_quiz_attempts([a for a in self._attempts.values() if a.mastery_level == level])

    def attempt(self, attempt_id: str) -> AttemptView | None:
        """One attempt's own fold (not consolidated)."""
        return self._attempts.get(attempt_id)

    def is_quiz_duplicate(self, attempt_id: str) -> bool:
        """Whether the attempt shares its quiz key with another one (it is presented merged)."""
        view = self._attempts.get(attempt_id)
        key = _quiz_key(view) if view is not None else None
        return key is not None and self._quiz_counts.get(key, 0) > 1

    def content_fold(self) -> ContentFold:
        """The same value as ``folds.fold_content`` over the group's records."""
        return ContentFold(self.content_id, list(self.sessions), self.summary if self.with_summary else None,
                           self.mastery if self.with_summary else {}, self.attempts())

    def _sorts_last(self, key: EventKey) -> bool:
        return self.last_key is None or key > self.last_key

    # --- what one more event would give (no change to this state) ----------------------------
    def after_start(self, fields: Mapping[str, JSON], session_id: str) -> tuple[SummaryView, dict[int, MasteryView]] | None:
        """The summary and mastery logs after a new session's start event, or None if that
        event would not sort last (then only a full fold can tell)."""
        start: str = fields["start_timestamp"]
        if not self._sorts_last((start, start, session_id, "", 0)):
            return None
        mastery = dict(self.mastery)  # a start only adds a log, it never changes one
        summary = _fold_start(_copy_summary(self.summary) if self.summary is not None else None, mastery, fields)
        return summary, mastery

    def after_update(self, session: RawRecord, event: Mapping[str, JSON]) -> tuple[SummaryView, MasteryView | None] | None:
        """The summary and the session's mastery log after one more update of ``session``,
        or None if that update would not sort last."""
        if self._update_key(session, event) is None or self.summary is None:
            return None
        level: int | None = session.fields["mastery_level"]
        summary = _copy_summary(self.summary)
        mastery: dict[int, MasteryView] = {}
        if level is not None:
            log = self.mastery.get(level)
            if log is None:
                return None
            mastery[level] = _copy_mastery(log)
        _fold_update(summary, mastery, level, event)
        return summary, mastery.get(level) if level is not None else None

    def _update_key(self, session: RawRecord, event: Mapping[str, JSON]) -> tuple[EventKey, str] | None:
        """(§3.1 key, eff_at) of a new update of ``session`` if it sorts last, else None."""
        chains = self._chains.get(session.id)
        if chains is None:
            return None
        start: str = session.fields["start_timestamp"]
        device = event["device_id"]
        seq = event["seq"]
        at = event["at"]
        previous = chains.get(device)
        if previous is None:
            eff = at if at > start else start
        elif seq <= previous[0]:
            return None  # not after this device's chain (a repeated or older seq)
        else:
            eff = at if at > previous[1] else previous[1]
        key = (eff, start, session.id, device, seq)
        return (key, eff) if self._sorts_last(key) else None

    # --- extending (the record is already in the partition state) ---------------------------
    def add_session(self, record: RawRecord) -> bool:
        """Fold a just-created session (no events yet); False if its start does not sort last."""
        fields = record.fields
        start: str = fields["start_timestamp"]
        key: EventKey = (start, start, record.id, "", 0)
        if record.events or record.id in self._session_index or not self._sorts_last(key):
            return False
        view = SessionView(record, record.id, start, start, 0.0, 0.0, [])
        self.sessions.append(view)  # its (start, id) is the largest: its start key is
        self._session_index[record.id] = view
        self._chains[record.id] = {}
        self.last_key = key
        changes = self.changes
        changes.sessions.add(record.id)
        if self.with_summary:
            if self.summary is None and self._attempts:
                changes.everything = True  # the attempts' masterylog_id appear with the summary
            self.summary = _fold_start(self.summary, self.mastery, fields)
            changes.summary = True
            level = fields["mastery_level"]
            if level is not None:
                changes.levels.add(level)
        return True

    def add_update(self, record: RawRecord, event: dict[str, JSON]) -> bool:
        """Fold ``event``, just appended to session ``record``; False if it does not sort
        last."""
        view = self._session_index.get(record.id)
        found = self._update_key(record, event) if view is not None else None
        if view is None or found is None:
            return False
        level: int | None = record.fields["mastery_level"]
        summary = self.summary
        if self.with_summary and (summary is None or (level is not None and level not in self.mastery)):
            return False  # cannot happen: the session's start event was folded first
        key, eff = found
        device = event["device_id"]
        seq = event["seq"]
        self._chains[record.id][device] = (seq, eff)
        self.last_key = key
        # the session's own fold (folds.fold_session), one more step
        view.updates.append(((eff, device, seq), event))
        view.end_timestamp = event["at"]
        if "progress_delta" in event:
            value = ceil((view.progress + event["progress_delta"]) * 1000) / 1000.0   # N(), inlined
            view.progress = 1.0 if value > 1.0 else (0.0 if value < 0.0 else value)
        elif "progress" in event:
            view.progress = normalise_progress(event["progress"])
        if "time_spent_delta" in event:
            view.time_spent += event["time_spent_delta"]
        changes = self.changes
        changes.sessions.add(record.id)
        if summary is not None and self.with_summary:
            _fold_update(summary, self.mastery, level, event)
            changes.summary = True
            if level is not None:
                changes.levels.add(level)
        return True

    def put_attempt(self, record: RawRecord) -> None:
        """Refold one attempt after it was created or extended (attempts are per-record
        folds: any arrival order works)."""
        view = fold_attempt(record)
        known = record.id in self._attempts
        if not known:
            self._put_attempt(view)
        else:
            self._attempts[record.id] = view
        self.changes.attempts.add(record.id)
        if self.is_quiz_duplicate(record.id):
            self.changes.everything = True

    def _put_attempt(self, view: AttemptView) -> None:
        self._attempts[view.id] = view
        key = _quiz_key(view)
        if key is not None:
            self._quiz_counts[key] = self._quiz_counts.get(key, 0) + 1

    def take_changes(self) -> FoldChanges:
        """The changes recorded since the last call, and a fresh record."""
        changes = self.changes
        self.changes = FoldChanges()
        return changes


__all__ = ["ContentFoldState", "FoldChanges"]
