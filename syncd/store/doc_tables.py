"""SQL of the raw-log tables a reader needs: a partition's snapshot and update tail, and
its place in the change feed. Shared by the store and its rebuild workers."""

from __future__ import annotations

import sqlite3
from typing import Callable


def read_blobs(conn: sqlite3.Connection, partition: str) -> tuple[int, list[bytes], int]:
    """(snapshot_seq, [snapshot, updates...], last seq) of one partition."""
    row = conn.execute("SELECT snapshot, snapshot_seq FROM documents WHERE partition = ?", (partition,)).fetchone()
    blobs: list[bytes] = []
    snapshot_seq = 0
    if row is not None:
        blobs.append(bytes(row[0]))
        snapshot_seq = int(row[1])
    last = snapshot_seq
    for seq, data in conn.execute(
        "SELECT seq, bytes FROM doc_updates WHERE partition = ? AND seq > ? ORDER BY seq", (partition, snapshot_seq)
    ):
        blobs.append(bytes(data))
        last = int(seq)
    return snapshot_seq, blobs, last


def updates_after(conn: sqlite3.Connection, partition: str, covered: Callable[[bytes], bool]) -> list[bytes] | None:
    """The stored update rows after the latest point (the snapshot, or an update row) whose
    version ``covered`` says a peer holds: everything of the document that peer may lack,
    as stored, in commit order ([] if it holds it all). None if no such point is known
    (the peer lacks part of the snapshot, or the versions are unknown): the caller then
    exports from the document."""
    conn.execute("BEGIN")  # one snapshot: the rows after the point are the ones it read
    try:
        snapshot = conn.execute("SELECT snapshot_seq, vv FROM documents WHERE partition = ?", (partition,)).fetchone()
        start = int(snapshot[0]) if snapshot is not None else 0
        after: int | None = None
        for seq, vv in conn.execute(
            "SELECT seq, vv FROM doc_updates WHERE partition = ? AND seq > ? ORDER BY seq DESC", (partition, start)
        ):
            if vv and covered(bytes(vv)):  # versions only grow with seq: the first one found is the latest
                after = int(seq)
                break
        if after is None:
            if snapshot is None:
                after = 0  # every op is in the update rows
            elif snapshot[1] and covered(bytes(snapshot[1])):
                after = start
            else:
                return None
        return [bytes(data) for (data,) in conn.execute(
            "SELECT bytes FROM doc_updates WHERE partition = ? AND seq > ? ORDER BY seq", (partition, after)
        )]
    finally:
        conn.execute("COMMIT")


def all_partitions(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT partition FROM documents UNION SELECT partition FROM doc_updates ORDER BY 1"
    )]


def feed_seq(conn: sqlite3.Connection, partition: str) -> int:
    """The change-feed seq of the partition's last committed change (0: none): every
    commit that changes its document moves it."""
    row = conn.execute("SELECT seq FROM partition_seq WHERE partition = ?", (partition,)).fetchone()
    return int(row[0]) if row is not None else 0
