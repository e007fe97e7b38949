-- partition_seq.vv: the encoded Loro version vector of the partition as of its last
-- commit, so "what changed since cursor X, with versions" is one range scan and needs no
-- document in memory (a no-op sync must not load a school's worth of documents).
ALTER TABLE partition_seq ADD COLUMN vv BLOB NOT NULL DEFAULT x'';
