-- Which derivation group each raw record belongs to, per partition: a partition loaded
-- again (evicted from the cache, or after a restart) knows its groups without decoding
-- every record, and a reader then decodes only the groups it needs. A cache of what the
-- documents hold (records never disappear, so it only grows); a partition whose rows do
-- not cover its document is decoded whole and its rows written again.
CREATE TABLE record_index (
    partition TEXT NOT NULL,
    record_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    grp       TEXT NOT NULL,
    PRIMARY KEY (partition, record_id)
) WITHOUT ROWID;
