-- Derived tables, one per Kolibri model: pure folds of the raw logs (logs.aggregate),
-- never synced. `row` is the JSON object the read API returns, byte-identical on every
-- device holding the same raw logs. (partition, grp) is the derivation group the row was
-- folded in: a refold replaces all rows of a group. The other columns exist to filter
-- and sort reads: sort_key is the row's start_timestamp (or '').

CREATE TABLE contentsessionlog (
    id         TEXT PRIMARY KEY,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
CREATE INDEX contentsessionlog_by_group ON contentsessionlog (partition, grp);
CREATE INDEX contentsessionlog_by_order ON contentsessionlog (sort_key, id);
CREATE INDEX contentsessionlog_by_user ON contentsessionlog (user_id, sort_key);
CREATE INDEX contentsessionlog_by_content ON contentsessionlog (content_id, sort_key);

CREATE TABLE contentsummarylog (
    id         TEXT PRIMARY KEY,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
CREATE INDEX contentsummarylog_by_group ON contentsummarylog (partition, grp);
CREATE INDEX contentsummarylog_by_order ON contentsummarylog (sort_key, id);
CREATE INDEX contentsummarylog_by_user ON contentsummarylog (user_id, sort_key);
CREATE INDEX contentsummarylog_by_content ON contentsummarylog (content_id, sort_key);

CREATE TABLE masterylog (
    id         TEXT PRIMARY KEY,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
CREATE INDEX masterylog_by_group ON masterylog (partition, grp);
CREATE INDEX masterylog_by_order ON masterylog (sort_key, id);
CREATE INDEX masterylog_by_user ON masterylog (user_id, sort_key);
CREATE INDEX masterylog_by_content ON masterylog (content_id, sort_key);

CREATE TABLE attemptlog (
    id         TEXT PRIMARY KEY,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
CREATE INDEX attemptlog_by_group ON attemptlog (partition, grp);
CREATE INDEX attemptlog_by_order ON attemptlog (sort_key, id);
CREATE INDEX attemptlog_by_user ON attemptlog (user_id, sort_key);
CREATE INDEX attemptlog_by_content ON attemptlog (content_id, sort_key);

CREATE TABLE examlog (
    id         TEXT PRIMARY KEY,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
CREATE INDEX examlog_by_group ON examlog (partition, grp);
CREATE INDEX examlog_by_order ON examlog (sort_key, id);
CREATE INDEX examlog_by_user ON examlog (user_id, sort_key);
CREATE INDEX examlog_by_content ON examlog (content_id, sort_key);

CREATE TABLE examattemptlog (
    id         TEXT PRIMARY KEY,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
CREATE INDEX examattemptlog_by_group ON examattemptlog (partition, grp);
CREATE INDEX examattemptlog_by_order ON examattemptlog (sort_key, id);
CREATE INDEX examattemptlog_by_user ON examattemptlog (user_id, sort_key);
CREATE INDEX examattemptlog_by_content ON examattemptlog (content_id, sort_key);

CREATE TABLE usersessionlog (
    id         TEXT PRIMARY KEY,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
CREATE INDEX usersessionlog_by_group ON usersessionlog (partition, grp);
CREATE INDEX usersessionlog_by_order ON usersessionlog (sort_key, id);
CREATE INDEX usersessionlog_by_user ON usersessionlog (user_id, sort_key);
CREATE INDEX usersessionlog_by_content ON usersessionlog (content_id, sort_key);
