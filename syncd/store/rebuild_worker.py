"""A rebuild worker: a child process that refolds partitions (``store.rebuild`` runs it).

It opens the database read-only and, for each partition of its request (msgpack on
stdin), reads the committed document and derived rows in one read transaction, refolds
them and writes one msgpack frame to stdout: only the rows that differ from the stored
ones, with the partition's feed seq as it read it. It imports no more than it folds with
(no asyncio, no HTTP): it starts in a fifth of a second.
"""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from syncd.logs.aggregate import derive
from syncd.logs.state import PartitionState
from syncd.store import derived
from syncd.store.doc_tables import feed_seq, read_blobs
from syncd.store.documents import COMPACT_TAIL, PartitionDoc

_READ_ONLY_PEER = 1  # a worker never writes, so no op of its own ever carries this peer id


@dataclass(frozen=True)
class PartitionRefold:
    """What a rebuild found for one partition: ``writes`` and ``deletes`` turn its stored
    derived rows into the fold of the document it read at feed seq ``seq``; ``snapshot``,
    if any, is that document (at ``version``), to replace its update rows up to
    ``last_update``."""

    partition: str
    seq: int
    records: int
    rows: int
    writes: list[derived.RowValues]
    deletes: list[derived.RowPlace]
    snapshot: bytes | None = None
    last_update: int = 0
    version: bytes = b""


def refold_partition(conn: sqlite3.Connection, partition: str, dataset_id: str) -> PartitionRefold:
    """Refold one partition from what ``conn`` sees committed (the worker's step)."""
    conn.execute("BEGIN")  # one snapshot: the feed seq, the document and the rows agree
    try:
        seq = feed_seq(conn, partition)
        snapshot_seq, blobs, last_update = read_blobs(conn, partition)
        stored = derived.stored_rows(conn, partition)
    finally:
        conn.execute("COMMIT")
    doc = PartitionDoc.load(blobs, _READ_ONLY_PEER)
    state = PartitionState.from_records(partition, doc.records())
    groups = derive(state, state.groups(), dataset_id)
    writes, deletes = derived.diff_partition(stored, groups)
    snapshot = doc.export_snapshot() if last_update - snapshot_seq > COMPACT_TAIL else None
    return PartitionRefold(partition, seq, len(state), sum(len(rows) for rows in groups.values()), writes, deletes,
                           snapshot, last_update, doc.version() if snapshot is not None else b"")


def to_wire(refold: PartitionRefold) -> bytes:
    data: bytes = msgpack.packb(
        [refold.partition, refold.seq, refold.records, refold.rows, refold.writes, refold.deletes,
         refold.snapshot, refold.last_update, refold.version]
    )
    return data


def from_wire(item: Any) -> PartitionRefold:
    partition, seq, records, rows, writes, deletes, snapshot, last_update, version = item
    if (snapshot is not None and not isinstance(snapshot, bytes)) or not isinstance(version, bytes):
        raise TypeError("a snapshot and its version must be bytes")
    return PartitionRefold(
        str(partition), int(seq), int(records), int(rows),
        [tuple(w) for w in writes],
        [(model, grp, row_id) for model, grp, row_id in deletes],
        snapshot, int(last_update), version,
    )


def main() -> int:
    """The worker: a request (msgpack) on stdin, one frame per partition on stdout."""
    request = msgpack.unpackb(sys.stdin.buffer.read())
    db = Path(request["db"]).resolve()
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        out = sys.stdout.buffer
        for partition in request["partitions"]:
            out.write(to_wire(refold_partition(conn, partition, request["dataset_id"])))
            out.flush()
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
