"""PartitionState: the decoded raw records of one partition, with lookup indexes.

It mirrors the committed CRDT document of a partition (the store keeps the two in step)
and is the read-only *view* the write rules decide on. ``apply`` takes the same
mutations the store applies to the document and answers which derivation groups they
touched, so only those are refolded.

A state may hold only some of its records decoded: it always knows every record's kind and
derivation group (its index), and ``shed`` drops the decoded records, keeping the index.
The next reader of a group then decodes that group alone, through the ``loader`` the state
was given (the store's: records by id from the partition's document). A group is always
decoded whole, so every rule that reads a group sees all of it.

It also memoises the fold of each content group asked for (``content_fold``): the fold is
a pure function of the group's records, and ``apply`` keeps each memoised fold current,
extending it with the new events when they sort last (``incremental.py``) and otherwise
dropping it, to be refolded from scratch on the next request. Records must therefore only
change through ``apply``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable, Iterator, Sequence

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


# Decodes the named records of the partition (the store reads them from its document).
Loader = Callable[[Sequence[str]], list[RawRecord]]


class PartitionState:
    """Raw records of one partition plus indexes; mutated only through ``apply`` and
    ``absorb``."""

    def __init__(self, partition: str, loader: Loader | None = None) -> None:
        self.partition = partition
        # The decoded records: every record unless ``shed`` dropped some groups' records.
        self.records: dict[str, RawRecord] = {}
        # The index, always complete: group -> ids of its records in insertion order, and
        # the same by kind and by id.
        self._by_group: dict[GroupKey, list[str]] = defaultdict(list)
        self._by_kind: dict[str, list[str]] = defaultdict(list)
        self._group_of: dict[str, GroupKey] = {}
        # One tuple per group, shared by its records' index entries (each record's own
        # tuple and content id string cost a partition's index twice the memory).
        self._groups: dict[GroupKey, GroupKey] = {}
        self._shed: set[GroupKey] = set()  # groups whose records are not decoded
        self._loader = loader
        # content_id -> the memoised fold of that content group, kept current by apply()
        self._folds: dict[str, ContentFoldState] = {}
        self._with_summary = user_of(partition) is not None

    @classmethod
    def from_records(cls, partition: str, records: Iterable[RawRecord], loader: Loader | None = None) -> "PartitionState":
        """A state holding ``records`` (all of the partition's); ``loader`` lets it decode
        them again after ``shed``."""
        state = cls(partition, loader)
        for record in records:
            state._add(record)
        return state

    @classmethod
    def from_index(cls, partition: str, entries: Iterable[tuple[str, str, GroupKey]], loader: Loader) -> "PartitionState":
        """A state that knows its records by (id, kind, group) only: every group is
        decoded by ``loader`` when first read."""
        state = cls(partition, loader)
        groups = state._groups
        for record_id, kind, group in entries:
            group = groups.setdefault(group, group)
            state._group_of[record_id] = group
            state._by_group[group].append(record_id)
            state._by_kind[kind].append(record_id)
        state._shed.update(state._by_group)
        return state

    def index(self) -> list[tuple[str, str, GroupKey]]:
        """(id, kind, group) of every record, in insertion order."""
        kind_of = {record_id: kind for kind, ids in self._by_kind.items() for record_id in ids}
        return [(record_id, kind_of[record_id], group) for record_id, group in self._group_of.items()]

    # --- decoding on demand -------------------------------------------------------------
    def shed(self) -> None:
        """Drop every decoded record and memoised fold, keeping the index (needs a loader)."""
        if self._loader is None:
            raise ValueError("a state without a loader cannot shed its records")
        self._shed.update(self._by_group)
        self.records.clear()
        self._folds.clear()

    @property
    def decoded(self) -> int:
        """How many records are decoded now."""
        return len(self.records)

    def _ensure(self, group: GroupKey) -> None:
        if group not in self._shed:
            return
        assert self._loader is not None  # only shed() fills _shed, and it needs one
        ids = self._by_group[group]
        records = self._loader(ids)
        if [r.id for r in records] != ids:
            raise ValueError(f"the loader did not return the records of group {group!r}")
        for record in records:
            self.records[record.id] = record
        self._shed.discard(group)

    def prefetch(self, record_ids: Iterable[str]) -> None:
        """Decode the groups of the named records this state holds (ids it does not hold
        are new records: nothing to decode)."""
        for record_id in record_ids:
            group = self._group_of.get(record_id)
            if group is not None:
                self._ensure(group)

    def _ensure_all(self) -> None:
        for group in list(self._shed):
            self._ensure(group)

    # --- reading -------------------------------------------------------------------
    def get(self, record_id: str) -> RawRecord | None:
        group = self._group_of.get(record_id)
        if group is None:
            return None
        self._ensure(group)
        return self.records[record_id]

    def of_kind(self, kind: str) -> Iterator[RawRecord]:
        for record_id in list(self._by_kind.get(kind, ())):
            record = self.get(record_id)
            assert record is not None
            yield record

    def in_group(self, group: GroupKey) -> list[RawRecord]:
        ids = self._by_group.get(group)
        if not ids:
            return []
        self._ensure(group)
        return [self.records[i] for i in ids]

    def all_records(self) -> list[RawRecord]:
        """Every record, decoding what is not."""
        self._ensure_all()
        return [self.records[i] for i in self._group_of]

    def holds(self, record_id: str) -> bool:
        return record_id in self._group_of

    def group(self, record_id: str) -> GroupKey | None:
        """The derivation group of a record this state holds."""
        return self._group_of.get(record_id)

    def groups(self) -> list[GroupKey]:
        return list(self._by_group)

    def __len__(self) -> int:
        return len(self._group_of)

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
                if mutation.record_id in self._group_of:
                    raise ValueError(f"record {mutation.record_id} exists")
                record = RawRecord(mutation.record_id, mutation.kind, dict(mutation.fields), [])
                self._ensure(group_of(record))  # its group is whole before it grows
                self._add(record)
                event = None
            else:
                found = self.get(mutation.record_id)
                if found is None:
                    raise KeyError(mutation.record_id)
                record = found
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

    def absorb(self, records: Iterable[RawRecord]) -> set[GroupKey]:
        """Take new records, and new versions of records held (a peer's import, already
        checked: a record keeps its kind and creation fields, so its group); return the
        groups touched. Their memoised folds are dropped."""
        touched: set[GroupKey] = set()
        for record in records:
            group = group_of(record)
            self._ensure(group)
            if record.id in self._group_of:
                self.records[record.id] = record
            else:
                self._add(record)
            touched.add(group)
            if group[0] == "content":
                self._folds.pop(group[1], None)
        return touched

    def copy(self) -> "PartitionState":
        """A copy deep enough that ``apply`` on it leaves this state untouched."""
        return PartitionState.from_records(
            self.partition,
            (RawRecord(r.id, r.kind, r.fields, list(r.events)) for r in self.all_records()),
        )  # no loader: the copy holds every record, and its own changes are in no document

    def _add(self, record: RawRecord) -> None:
        group = group_of(record)
        group = self._groups.setdefault(group, group)
        self.records[record.id] = record
        self._group_of[record.id] = group
        self._by_group[group].append(record.id)
        self._by_kind[record.kind].append(record.id)


__all__ = ["PartitionState", "group_of", "AppendEvent", "CreateRecord"]
