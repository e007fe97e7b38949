-- peers.push_cursor: the position in OUR change feed up to which this peer acknowledged
-- everything we offered it, as JSON [epoch, seq, scope hash] (push_seq alone cannot tell
-- a cursor of another epoch or scope from a valid one). pull_cursor holds the cursor the
-- peer gave us, in the same JSON form.
ALTER TABLE peers ADD COLUMN push_cursor TEXT;
