-- meta: one row per key. Device identity and bookkeeping: device_id, epoch (a new one
-- whenever this store's history may have forked: a restore, a clone), peer_id (the Loro
-- peer id of the current daemon start), machine_id, instance_id, feed_seq.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- documents: the latest full Loro snapshot of each partition (history kept; never a
-- shallow snapshot) and the last doc_updates.seq it includes.
CREATE TABLE documents (
    partition    TEXT PRIMARY KEY,
    snapshot     BLOB NOT NULL,
    snapshot_seq INTEGER NOT NULL
) STRICT;

-- doc_updates: the update tail of each partition since its snapshot, in commit order.
-- Loading a partition = import(snapshot) + import(updates with seq > snapshot_seq).
CREATE TABLE doc_updates (
    partition TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    bytes     BLOB NOT NULL,
    PRIMARY KEY (partition, seq)
) STRICT;

-- partition_seq: the change feed. Every commit that changes a partition (local write or
-- import) gives it the next feed number; "what changed since cursor X" is a range scan.
CREATE TABLE partition_seq (
    partition TEXT PRIMARY KEY,
    seq       INTEGER NOT NULL
) STRICT;
CREATE INDEX partition_seq_by_seq ON partition_seq (seq);
