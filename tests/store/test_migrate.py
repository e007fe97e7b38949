"""Numbered migrations on a real SQLite file: an older store is brought up to date with
its rows, and ends with the same schema as a store created new."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from syncd.errors import StoreError
from syncd.logs.records import DERIVED_MODELS
from syncd.store.migrate import _statements, available, migrate
from syncd.store.sqlite import connect


def _at_version(path: Path, version: int) -> sqlite3.Connection:
    """A database brought up to ``version`` only, as an older syncd left it."""
    conn = connect(path)
    for number, sql in available()[:version]:
        conn.execute("BEGIN IMMEDIATE")
        for statement in _statements(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    return conn


def _schema(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))


def _row(model: str, n: int, partition: str) -> tuple[str, ...]:
    return (f"{n:032x}", partition, f"content:{n % 3:032x}", "a" * 32, f"{n % 3:032x}", None, None,  # type: ignore[return-value]
            f"2025-01-0{n % 9 + 1}T09:00:00.000000+00:00", f'{{"id":"{n:032x}","model":"{model}"}}')


def test_derived_rows_survive_the_move_to_rows_keyed_by_place(tmp_path: Path) -> None:
    old = _at_version(tmp_path / "old.sqlite3", 7)
    rows = {model: [_row(model, n, f"user:{'a' * 32}") for n in range(20)] for model in DERIVED_MODELS}
    for model, values in rows.items():
        old.executemany(f"INSERT INTO {model} (id, partition, grp, user_id, content_id, channel_id, exam_id, "
                        "sort_key, row) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
    assert migrate(old) == available()[-1][0]
    for model, values in rows.items():
        kept = old.execute(f"SELECT id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row "
                           f"FROM {model} ORDER BY id").fetchall()
        assert kept == sorted(values), model
    new = connect(tmp_path / "new.sqlite3")
    migrate(new)
    assert _schema(old) == _schema(new)


def test_a_row_is_unique_where_it_comes_from_not_by_id_alone(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite3")
    migrate(conn)
    insert = ("INSERT INTO contentsessionlog (id, partition, grp, user_id, content_id, channel_id, exam_id, "
              "sort_key, row) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
    conn.execute(insert, _row("contentsessionlog", 1, "user:" + "a" * 32))
    conn.execute(insert, _row("contentsessionlog", 1, "user:" + "b" * 32))  # another partition: its own row
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(insert, _row("contentsessionlog", 1, "user:" + "a" * 32))
    assert conn.execute("SELECT count(*) FROM contentsessionlog").fetchone()[0] == 2
    indexed = {r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' "
                                          "AND tbl_name = 'contentsessionlog'")}
    assert "CREATE UNIQUE INDEX contentsessionlog_by_place ON contentsessionlog (partition, grp, id)" in indexed
    assert not any(sql.endswith("(id)") for sql in indexed)


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite3")
    migrate(conn)
    conn.execute(f"PRAGMA user_version = {available()[-1][0] + 1}")
    with pytest.raises(StoreError, match="newer than this syncd"):
        migrate(conn)
