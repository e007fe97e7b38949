"""A partition's change as the writer thread stores it, and many of them in a few
statements.

A local write or an imported chunk commits its update blob, its refolded derived rows,
the new record index entries and its change-feed bump together (DESIGN §4). The writer
group-commits whatever is queued in one transaction; a ``PartitionCommit`` is plain data,
so the writer stores all the queued ones with one statement per table rather than several
per change: each statement gives the GIL up and must take it back, and while the event
loop is busy (checking the next chunk of a sync) that wait is most of the writer's time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Sequence

from syncd.logs.records import GroupKey
from syncd.store import derived
from syncd.store.bulk import insert_rows

INDEX_HEAD = "INSERT OR IGNORE INTO record_index (partition, record_id, kind, grp) VALUES"
IndexRow = tuple[str, str, str, str]  # (partition, record id, kind, group text)


@dataclass(frozen=True)
class PartitionCommit:
    """One change of one partition: ``update`` (the blob, stored as doc_updates row
    ``seq``, unless ``snapshot`` is taken with it, which holds it), the derived rows it
    changed, the record index entries of the records it created, and its feed seq with
    the partition's version vector after it."""

    partition: str
    seq: int
    update: bytes
    changes: Sequence[derived.GroupChange]
    feed_seq: int
    version: bytes
    snapshot: bytes | None = None
    index: Sequence[IndexRow] = ()


def index_rows(partition: str, entries: Sequence[tuple[str, str, GroupKey]]) -> list[IndexRow]:
    """record_index rows of (record id, kind, group) entries."""
    return [(partition, rid, kind, derived.group_text(group)) for rid, kind, group in entries]


def write_commits(conn: sqlite3.Connection, commits: Sequence[PartitionCommit]) -> None:
    """Store ``commits`` (of distinct partitions, inside the caller's transaction)."""
    insert_rows(conn, "INSERT INTO doc_updates (partition, seq, bytes, vv) VALUES",
                [(c.partition, c.seq, c.update, c.version) for c in commits if c.snapshot is None])
    insert_rows(conn, INDEX_HEAD, [row for c in commits for row in c.index])
    derived.apply_changes(conn, [(c.partition, c.changes) for c in commits])
    insert_rows(conn, "INSERT INTO partition_seq (partition, seq, vv) VALUES",
                [(c.partition, c.feed_seq, c.version) for c in commits],
                tail="ON CONFLICT(partition) DO UPDATE SET seq = excluded.seq, vv = excluded.vv")
    for c in commits:
        if c.snapshot is not None:
            store_snapshot(conn, c.partition, c.snapshot, c.seq, c.version)


def store_snapshot(conn: sqlite3.Connection, partition: str, snapshot: bytes, seq: int, version: bytes) -> None:
    """Replace a partition's snapshot and its update rows up to ``seq`` by ``snapshot``
    (whose version vector is ``version``)."""
    conn.execute(
        "INSERT INTO documents (partition, snapshot, snapshot_seq, vv) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(partition) DO UPDATE SET snapshot = excluded.snapshot, snapshot_seq = excluded.snapshot_seq, "
        "vv = excluded.vv",
        (partition, snapshot, seq, version),
    )
    conn.execute("DELETE FROM doc_updates WHERE partition = ? AND seq <= ?", (partition, seq))
