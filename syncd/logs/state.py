"""PartitionState: the decoded raw records of one partition, with lookup indexes.

It mirrors the committed CRDT document of a partition (the store keeps the two in step)
and is the read-only *view* the write rules decide on. ``apply`` takes the same
mutations the store applies to the document and answers which derivation groups they
touched, so only those are refolded.

It also memoises the fold of each content group asked for (``content_fold``): the fold is
a pure function of the group's records, and ``apply`` keeps each memoised fold current,
extending it with the new events when they sort last (``incremental.py``) and otherwise
dropping it, to be refolded from scratch on the next request. Records must therefore only
change through ``apply``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator

from syncd.logs.incremental import ContentFoldState
from syncd.logs.partitions import user_of
from syncd.logs.records import (
    JSON,
    AppendEvent,
    CreateRecord,
    GroupKey,
    Mutation,
    RawRecord,
)


def group_of(record: RawRecord) -> GroupKey:
    """The derivation group a record belongs to (see ``records.GroupKey``)."""
    kind = record.kind
    if kind in ("session", "attempt"):
        return ("content", str(record.fields["content_id"]))
    if kind == "usersession":
        return ("usersession", record.id)
    if kind in ("examlog", "examattempt"):
        return ("exam", str(record.fields["exam_id"]))
    raise ValueError(f"unknown record kind {kind!r}")


class PartitionState:
    """Raw records of one partition plus indexes; mutated only through ``apply``."""

    def __init__(self, partition: str) -> None:
        self.partition = partition
        self.records: dict[str, RawRecord] = {}
        # group -> ids of the records in it, in insertion order
        self._by_group: dict[GroupKey, list[str]] = defaultdict(list)
        self._by_kind: dict[str, list[str]] = defaultdict(list)
        # content_id -> the memoised fold of that content group, kept current by apply()
        self._folds: dict[str, ContentFoldState] = {}
        self._with_summary = user_of(partition) is not None

    @classmethod
    def from_records(cls, partition: str, records: Iterable[RawRecord]) -> "PartitionState":
        state = cls(partition)
        for record in records:
            state._add(record)
        return state

    # --- reading -------------------------------------------------------------------
    def get(self, record_id: str) -> RawRecord | None:
        return self.records.get(record_id)

    def of_kind(self, kind: str) -> Iterator[RawRecord]:
        for record_id in self._by_kind.get(kind, ()):
            yield self.records[record_id]

    def in_group(self, group: GroupKey) -> list[RawRecord]:
        return [self.records[i] for i in self._by_group.get(group, ())]

    def groups(self) -> list[GroupKey]:
        return list(self._by_group)

    def __len__(self) -> int:
        return len(self.records)

    def content_fold(self, content_id: str) -> ContentFoldState:
        """The fold of ("content", content_id) (summary and mastery logs only in a user
        partition, SPEC §3.4 rule 9); memoised, so a caller must not change it."""
        fold = self._folds.get(content_id)
        if fold is None:
            fold = self._folds[content_id] = ContentFoldState.build(
                content_id, self.in_group(("content", content_id)), with_summary=self._with_summary)
        return fold

    def cached_fold(self, content_id: str) -> ContentFoldState | None:
        """The memoised fold of a content group, if there is one."""
        return self._folds.get(content_id)

    # --- writing -------------------------------------------------------------------
    def apply(self, mutations: Iterable[Mutation]) -> set[GroupKey]:
        """Apply mutations (already validated); return the groups they touched."""
        touched: set[GroupKey] = set()
        for mutation in mutations:
            if isinstance(mutation, CreateRecord):
                if mutation.record_id in self.records:
                    raise ValueError(f"record {mutation.record_id} exists")
                record = RawRecord(mutation.record_id, mutation.kind, dict(mutation.fields), [])
                self._add(record)
                event = None
            else:
                record = self.records[mutation.record_id]
                event = dict(mutation.event)
                record.events.append(event)
            group = group_of(record)
            touched.add(group)
            if self._folds and group[0] == "content":
                self._extend_fold(group[1], record, event)
        return touched

    def _extend_fold(self, content_id: str, record: RawRecord, event: dict[str, JSON] | None) -> None:
        fold = self._folds.get(content_id)
        if fold is None:
            return
        if record.kind == "attempt":
            fold.put_attempt(record)
            return
        if record.kind == "session" and (fold.add_session(record) if event is None else fold.add_update(record, event)):
            return
        del self._folds[content_id]  # not an event that sorts last: refold on the next request

    def copy(self) -> "PartitionState":
        """A copy deep enough that ``apply`` on it leaves this state untouched."""
        return PartitionState.from_records(
            self.partition,
            (RawRecord(r.id, r.kind, r.fields, list(r.events)) for r in self.records.values()),
        )

    def _add(self, record: RawRecord) -> None:
        self.records[record.id] = record
        self._by_group[group_of(record)].append(record.id)
        self._by_kind[record.kind].append(record.id)


def apply_to_copy(state: PartitionState, mutations: Iterable[Mutation]) -> PartitionState:
    """The state after ``mutations``, leaving ``state`` as it was (for responses)."""
    after = state.copy()
    after.apply(mutations)
    return after


__all__ = ["PartitionState", "group_of", "apply_to_copy", "AppendEvent", "CreateRecord"]
