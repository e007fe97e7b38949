-- The version each stored blob brings its partition to: documents.vv is the snapshot's,
-- doc_updates.vv the document's after that update (x'' where unknown: rows written before
-- this migration, snapshots made outside the store). A sync then answers a peer whose
-- version covers one of these points with the update rows after it, as stored, without
-- loading the document (store/doc_tables.py, updates_after).
ALTER TABLE documents ADD COLUMN vv BLOB NOT NULL DEFAULT x'';
ALTER TABLE doc_updates ADD COLUMN vv BLOB NOT NULL DEFAULT x'';
