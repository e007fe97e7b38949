"""SQL for the derived tables (rows produced by ``logs.aggregate``): no rules here.

Every row the last fold of a derivation group produced, and nothing else, is stored for
it. The store remembers what it stored for each group it wrote since a partition was
loaded (``Stored``); a change then writes only the rows whose JSON differs, and rewrites
in place (no index touched) the rows whose indexed columns stay the same. A group whose
stored rows are unknown is replaced whole.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from syncd.logs.records import DERIVED_MODELS, DerivedModel, DerivedRow, GroupKey, matches_canonical
from syncd.store.bulk import chunks, insert_rows

# Which tables a group of each kind can have rows in (so a refold deletes only there).
GROUP_MODELS: Mapping[str, tuple[DerivedModel, ...]] = {
    "content": ("contentsessionlog", "contentsummarylog", "masterylog", "attemptlog"),
    "usersession": ("usersessionlog",),
    "exam": ("examlog", "examattemptlog"),
}

_FILTER_COLUMNS = frozenset({"user_id", "content_id", "channel_id", "exam_id"})


def group_text(group: GroupKey) -> str:
    return f"{group[0]}:{group[1]}"


def group_key(text: str) -> GroupKey:
    """The group a ``group_text`` names."""
    kind, _, key = text.partition(":")
    return (kind, key)


def _insert_head(model: str) -> str:
    return f"INSERT OR REPLACE INTO {model} (id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row) VALUES"


RowKey = tuple[DerivedModel, str]  # (model, id)
# What the table holds of a stored row that can change: its JSON (kept as a 128-bit digest:
# the row memory of a large partition would otherwise hold every row's text again) and the
# indexed columns that can move (a summary's channel, a start that a late session moves
# earlier). The other columns (partition, grp, user_id, content_id, exam_id) are fixed by
# the row's id.
Stored = tuple[bytes, "str | None", str]   # (digest of the row JSON, channel_id, sort_key)


def row_digest(text: str) -> bytes:
    """What the row memory keeps of a row's JSON."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


@dataclass(frozen=True)
class GroupChange:
    """What to write for one refolded group: either the whole group (``replace``: its
    previous rows are unknown) or only the rows whose JSON changed and the rows gone.
    ``updates`` are stored rows whose indexed columns stay as they are: only their JSON
    is rewritten (no index is touched). Rows as the table takes them (``RowValues``): a
    change waits for its commit, and the folds' row objects need not wait with it."""

    group: GroupKey
    upserts: Sequence[RowValues]
    deletes: Sequence[RowKey]
    replace: bool
    updates: Sequence[RowValues] = ()


def diff_group(group: GroupKey, rows: Sequence[DerivedRow], previous: Mapping[RowKey, Stored] | None) -> tuple[GroupChange, dict[RowKey, Stored]]:
    """The change that turns ``previous`` (the group's committed rows, None if unknown)
    into ``rows`` (all of the group's rows), and the group's rows afterwards."""
    after: dict[RowKey, Stored] = {}
    if previous is None:
        grp = group_text(group)
        upserts = []
        for row in rows:
            text = row.to_json()
            upserts.append(row_values(grp, row, text))
            after[(row.model, row.id)] = (row_digest(text), row.channel_id, row.sort_key)
        return GroupChange(group, upserts, (), replace=True), after
    change, after = diff_partial(group, rows, previous, changed_only=False)
    deletes = [key for key in previous if key not in after]
    return GroupChange(group, change.upserts, deletes, replace=False, updates=change.updates), after


def diff_partial(group: GroupKey, rows: Sequence[DerivedRow], previous: Mapping[RowKey, Stored], *,
                 changed_only: bool = True) -> tuple[GroupChange, dict[RowKey, Stored]]:
    """The change that stores ``rows``, some rows of a group whose committed rows are
    ``previous`` (the group's other rows are unchanged), and the stored state of the rows
    it changed (of every row in ``rows`` with ``changed_only=False``)."""
    grp = group_text(group)
    upserts: list[RowValues] = []
    updates: list[RowValues] = []
    after: dict[RowKey, Stored] = {}
    for row in rows:
        key = (row.model, row.id)
        text = row.to_json()
        old = previous.get(key)
        stored = (row_digest(text), row.channel_id, row.sort_key)
        if old is None or old[1] != stored[1] or old[2] != stored[2]:
            upserts.append(row_values(grp, row, text))
        elif old[0] != stored[0]:
            updates.append(row_values(grp, row, text))
        elif changed_only:
            continue
        else:
            stored = old
        after[key] = stored
    return GroupChange(group, upserts, (), replace=False, updates=updates), after


# A derived row as the table holds it, but its partition: (model, id, grp, user_id,
# content_id, channel_id, exam_id, sort_key, row JSON). Plain values, so a rebuild worker
# can hand rows over to the daemon.
RowValues = tuple[str, str, str, "str | None", "str | None", "str | None", "str | None", str, str]


def row_values(grp: str, row: DerivedRow, text: str) -> RowValues:
    return (row.model, row.id, grp, row.user_id, row.content_id, row.channel_id, row.exam_id, row.sort_key, text)


def insert_values(conn: sqlite3.Connection, partition: str, rows: Iterable[RowValues]) -> int:
    """Insert (or replace) one partition's rows; how many."""
    return _insert_placed(conn, ((partition, values) for values in rows))


def _insert_placed(conn: sqlite3.Connection, rows: Iterable[tuple[str, RowValues]]) -> int:
    by_model: dict[str, list[tuple[object, ...]]] = {}
    for partition, (model, row_id, grp, user_id, content_id, channel_id, exam_id, sort_key, text) in rows:
        by_model.setdefault(model, []).append(
            (row_id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, text)
        )
    for model, values in by_model.items():
        _check_model(model)
        insert_rows(conn, _insert_head(model), values)
    return sum(len(v) for v in by_model.values())


def apply_changes(conn: sqlite3.Connection, changes: Iterable[tuple[str, Sequence[GroupChange]]]) -> None:
    """Write the changes of refolded groups, (partition, its changes) for any number of
    partitions (inside the caller's transaction): the groups replaced whole are cleared
    and the new rows of every group go in with a few statements per table (``bulk``: a
    statement per row or group would wait on the GIL)."""
    replaced: dict[DerivedModel, list[tuple[str, str]]] = {}
    inserts: list[tuple[str, RowValues]] = []
    for partition, partition_changes in changes:
        for change in partition_changes:
            grp = group_text(change.group)
            if change.replace:
                for model in GROUP_MODELS[change.group[0]]:
                    replaced.setdefault(model, []).append((partition, grp))
            for model, row_id in change.deletes:
                _check_model(model)
                conn.execute(f"DELETE FROM {model} WHERE partition = ? AND grp = ? AND id = ?",
                             (partition, grp, row_id))
            for values in change.updates:
                table, row_id, text = values[0], values[1], values[8]
                _check_model(table)
                if conn.execute(f"UPDATE {table} SET row = ? WHERE partition = ? AND grp = ? AND id = ?",
                                (text, partition, grp, row_id)).rowcount == 0:
                    inserts.append((partition, values))  # not there after all (rows dropped behind our back)
            inserts.extend((partition, values) for values in change.upserts)
    for model, places in replaced.items():
        for chunk in chunks(places, 256):
            # (a join, so that each (partition, grp) is looked up in the index)
            conn.execute(f"DELETE FROM {model} WHERE rowid IN (SELECT t.rowid FROM (VALUES "
                         f"{','.join(['(?,?)'] * len(chunk))}) AS v JOIN {model} AS t "
                         "ON t.partition = v.column1 AND t.grp = v.column2)",
                         [value for place in chunk for value in place])
    _insert_placed(conn, inserts)


def replace_partition(conn: sqlite3.Connection, partition: str, groups: Mapping[GroupKey, Sequence[DerivedRow]]) -> int:
    """Make ``groups`` all the derived rows of ``partition`` (a rebuild), writing only the
    rows that differ from what is stored: a rebuild refolds everything, but on a store
    whose rows are right it rewrites nothing. Returns how many rows it wrote or deleted."""
    writes, deletes = diff_partition(stored_rows(conn, partition), groups)
    return write_partition_diff(conn, partition, writes, deletes)


# A stored row as a rebuild compares it: (grp, row JSON, channel_id, sort_key).
StoredRow = tuple[str, str, "str | None", str]
# Where a stored row is: (model, grp, id).
RowPlace = tuple[DerivedModel, str, str]


def stored_rows(conn: sqlite3.Connection, partition: str) -> dict[RowKey, StoredRow]:
    """Every derived row stored for ``partition``."""
    stored: dict[RowKey, StoredRow] = {}
    for model in DERIVED_MODELS:
        for row_id, grp, channel, sort_key, text in conn.execute(
            f"SELECT id, grp, channel_id, sort_key, row FROM {model} WHERE partition = ?", (partition,)
        ):
            stored[(model, row_id)] = (grp, text, channel, sort_key)
    return stored


def diff_partition(stored: Mapping[RowKey, StoredRow], groups: Mapping[GroupKey, Sequence[DerivedRow]]) -> tuple[list[RowValues], list[RowPlace]]:
    """The rows of ``groups`` (all of a partition's) that are not stored as they are, and
    the stored rows that no group produces any more."""
    left = dict(stored)
    writes: list[RowValues] = []
    for group, rows in groups.items():
        grp = group_text(group)
        for r in rows:
            old = left.pop((r.model, r.id), None)
            if (old is None or old[0] != grp or old[2] != r.channel_id or old[3] != r.sort_key
                    or not matches_canonical(r.row, old[1])):
                writes.append(row_values(grp, r, r.to_json()))
                if old is not None and old[0] != grp:  # (a fold never moves a row; a hand edit may)
                    left[(r.model, r.id)] = old
    return writes, [(model, old[0], row_id) for (model, row_id), old in left.items()]


def write_partition_diff(conn: sqlite3.Connection, partition: str, writes: Sequence[RowValues], deletes: Sequence[RowPlace]) -> int:
    """Store what ``diff_partition`` found (inside the caller's transaction)."""
    for model, grp, row_id in deletes:
        _check_model(model)
        conn.execute(f"DELETE FROM {model} WHERE partition = ? AND grp = ? AND id = ?", (partition, grp, row_id))
    return len(deletes) + insert_values(conn, partition, writes)


def read_rows(
    conn: sqlite3.Connection,
    model: DerivedModel,
    filters: Mapping[str, str],
    limit: int | None,
    offset: int,
    *,
    places: bool = False,
) -> tuple[int, list[str], list[tuple[str, str]] | None]:
    """(count of matching rows, the JSON texts of the requested page, sorted by
    (start_timestamp, id), and with ``places`` each row's (partition, grp))."""
    _check_model(model)
    where: list[str] = []
    args: list[object] = []
    for column, value in sorted(filters.items()):
        if column not in _FILTER_COLUMNS:
            raise ValueError(f"cannot filter on {column}")
        where.append(f"{column} = ?")
        args.append(value)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    count = int(conn.execute(f"SELECT count(*) FROM {model}{clause}", args).fetchone()[0])
    page = ""
    if limit is not None:
        page = " LIMIT ? OFFSET ?"
        args = [*args, limit, offset]
    if not places:
        rows = [r[0] for r in conn.execute(f"SELECT row FROM {model}{clause} ORDER BY sort_key, id{page}", args)]
        return count, rows, None
    found = conn.execute(f"SELECT row, partition, grp FROM {model}{clause} ORDER BY sort_key, id{page}", args).fetchall()
    return count, [r[0] for r in found], [(r[1], r[2]) for r in found]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {m: int(conn.execute(f"SELECT count(*) FROM {m}").fetchone()[0]) for m in DERIVED_MODELS}


def partition_digest(conn: sqlite3.Connection, partition: str) -> str | None:
    """SHA-256 over a partition's derived rows ordered by (model, id); None if it has none."""
    h = hashlib.sha256()
    rows = 0
    for model in DERIVED_MODELS:
        for row_id, row in conn.execute(f"SELECT id, row FROM {model} WHERE partition = ? ORDER BY id", (partition,)):
            h.update(f"{model}\0{row_id}\0{row}\n".encode())
            rows += 1
    return h.hexdigest() if rows else None


def _check_model(model: str) -> None:
    if model not in DERIVED_MODELS:
        raise ValueError(f"unknown model {model!r}")
