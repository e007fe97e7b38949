"""Numbered SQL migrations: schema/NNNN_name.sql, applied in order, each in one transaction.

The schema version is SQLite's ``user_version``; a database newer than this code refuses
to open rather than guess.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from syncd.errors import StoreError

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str]]:
    """(version, sql) of every migration shipped with this code, in order."""
    found: list[tuple[int, str]] = []
    for entry in resources.files("syncd.store").joinpath("schema").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (version, _) in enumerate(found, start=1):
        if version != expected:
            raise StoreError(f"migration numbering has a gap at {expected:04d}")
    return found


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn`` (autocommit mode) to the newest schema; return the version."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    migrations = available()
    newest = migrations[-1][0] if migrations else 0
    if current > newest:
        raise StoreError(f"database schema {current} is newer than this syncd ({newest})")
    for version, sql in migrations:
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return newest


def _statements(sql: str) -> list[str]:
    # Comments are dropped first (prose may hold ';'); our schema files hold no semicolons
    # inside literals or triggers, so a split is then safe. executescript() is avoided
    # because it commits implicitly.
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in code.split(";") if s.strip()]
