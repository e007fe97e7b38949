"""SQL for the derived tables (rows produced by ``logs.aggregate``): no rules here.

A derivation group's rows are replaced as a whole: every row the last fold of a group
produced, and nothing else, is stored for it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Iterable, Mapping, Sequence

from syncd.logs.records import DERIVED_MODELS, DerivedModel, DerivedRow, GroupKey

# Which tables a group of each kind can have rows in (so a refold deletes only there).
GROUP_MODELS: Mapping[str, tuple[DerivedModel, ...]] = {
    "content": ("contentsessionlog", "contentsummarylog", "masterylog", "attemptlog"),
    "usersession": ("usersessionlog",),
    "exam": ("examlog", "examattemptlog"),
}

_FILTER_COLUMNS = frozenset({"user_id", "content_id", "channel_id", "exam_id"})


def group_text(group: GroupKey) -> str:
    return f"{group[0]}:{group[1]}"


def _insert_sql(model: str) -> str:
    return (
        f"INSERT OR REPLACE INTO {model} (id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )


def _insert_rows(conn: sqlite3.Connection, partition: str, grp: str, rows: Iterable[DerivedRow]) -> int:
    by_model: dict[str, list[tuple[object, ...]]] = {}
    for r in rows:
        by_model.setdefault(r.model, []).append(
            (r.id, partition, grp, r.user_id, r.content_id, r.channel_id, r.exam_id, r.sort_key, r.to_json())
        )
    for model, values in by_model.items():
        _check_model(model)
        conn.executemany(_insert_sql(model), values)
    return sum(len(v) for v in by_model.values())


def replace_group(conn: sqlite3.Connection, partition: str, group: GroupKey, rows: Sequence[DerivedRow]) -> None:
    """Make ``rows`` the derived rows of ``group`` (inside the caller's transaction)."""
    grp = group_text(group)
    for model in GROUP_MODELS[group[0]]:
        conn.execute(f"DELETE FROM {model} WHERE partition = ? AND grp = ?", (partition, grp))
    _insert_rows(conn, partition, grp, rows)


def replace_partition(conn: sqlite3.Connection, partition: str, groups: Mapping[GroupKey, Sequence[DerivedRow]]) -> int:
    """Make ``groups`` all the derived rows of ``partition`` (a rebuild)."""
    for model in DERIVED_MODELS:
        conn.execute(f"DELETE FROM {model} WHERE partition = ?", (partition,))
    return sum(_insert_rows(conn, partition, group_text(g), rows) for g, rows in groups.items())


def read_rows(
    conn: sqlite3.Connection,
    model: DerivedModel,
    filters: Mapping[str, str],
    limit: int | None,
    offset: int,
) -> tuple[int, list[str]]:
    """(count of matching rows, the JSON texts of the requested page), sorted by
    (start_timestamp, id)."""
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
    rows = [r[0] for r in conn.execute(f"SELECT row FROM {model}{clause} ORDER BY sort_key, id{page}", args)]
    return count, rows


def read_debug(conn: sqlite3.Connection, model: DerivedModel, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """id -> (partition, group) for ``?debug=1``."""
    _check_model(model)
    out: dict[str, tuple[str, str]] = {}
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        marks = ",".join("?" * len(chunk))
        for row_id, partition, grp in conn.execute(
            f"SELECT id, partition, grp FROM {model} WHERE id IN ({marks})", chunk
        ):
            out[row_id] = (partition, grp)
    return out


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {m: int(conn.execute(f"SELECT count(*) FROM {m}").fetchone()[0]) for m in DERIVED_MODELS}


def digests(conn: sqlite3.Connection) -> dict[str, str]:
    """partition -> SHA-256 over its derived rows ordered by (model, id): equal digests
    mean byte-identical derived rows."""
    hashes: dict[str, "hashlib._Hash"] = {}
    for model in DERIVED_MODELS:
        for partition, row_id, row in conn.execute(
            f"SELECT partition, id, row FROM {model} ORDER BY partition, id"
        ):
            h = hashes.get(partition)
            if h is None:
                h = hashes[partition] = hashlib.sha256()
            h.update(f"{model}\0{row_id}\0{row}\n".encode())
    return {p: h.hexdigest() for p, h in sorted(hashes.items())}


def _check_model(model: str) -> None:
    if model not in DERIVED_MODELS:
        raise ValueError(f"unknown model {model!r}")
