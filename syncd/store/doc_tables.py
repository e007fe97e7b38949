"""SQL of the raw-log tables a reader needs: a partition's snapshot and update tail, and
its place in the change feed. Shared by the store and its rebuild workers."""

from __future__ import annotations

import sqlite3


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


def all_partitions(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT partition FROM documents UNION SELECT partition FROM doc_updates ORDER BY 1"
    )]


def feed_seq(conn: sqlite3.Connection, partition: str) -> int:
    """The change-feed seq of the partition's last committed change (0: none): every
    commit that changes its document moves it."""
    row = conn.execute("SELECT seq FROM partition_seq WHERE partition = ?", (partition,)).fetchone()
    return int(row[0]) if row is not None else 0
