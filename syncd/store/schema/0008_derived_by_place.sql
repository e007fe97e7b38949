-- Derived tables keyed by where their rows come from: a row is unique per (partition,
-- grp, id), the index its group's refold and every write already address it by, and the
-- table has no index on id alone. That index was the costliest to keep: its keys are
-- random, so a first sync of a learner's 1,200 rows dirtied most of its pages in every
-- commit (an L school's full sync spent a third of its time writing them again). With
-- it went the last way one partition's rows could replace another's: a row id that two
-- partitions' folds share (only a hostile peer makes one) now gives two rows.
-- by_order and by_content serve the reads (DESIGN §8) and stay, by_user too. The rows
-- are copied as they are: nothing needs refolding.

CREATE TABLE contentsessionlog_new (
    id         TEXT NOT NULL,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
INSERT INTO contentsessionlog_new (id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row)
    SELECT id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row FROM contentsessionlog;
DROP TABLE contentsessionlog;
ALTER TABLE contentsessionlog_new RENAME TO contentsessionlog;
CREATE UNIQUE INDEX contentsessionlog_by_place ON contentsessionlog (partition, grp, id);
CREATE INDEX contentsessionlog_by_order ON contentsessionlog (sort_key, id);
CREATE INDEX contentsessionlog_by_user ON contentsessionlog (user_id, sort_key);
CREATE INDEX contentsessionlog_by_content ON contentsessionlog (content_id, sort_key);

CREATE TABLE contentsummarylog_new (
    id         TEXT NOT NULL,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
INSERT INTO contentsummarylog_new (id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row)
    SELECT id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row FROM contentsummarylog;
DROP TABLE contentsummarylog;
ALTER TABLE contentsummarylog_new RENAME TO contentsummarylog;
CREATE UNIQUE INDEX contentsummarylog_by_place ON contentsummarylog (partition, grp, id);
CREATE INDEX contentsummarylog_by_order ON contentsummarylog (sort_key, id);
CREATE INDEX contentsummarylog_by_user ON contentsummarylog (user_id, sort_key);
CREATE INDEX contentsummarylog_by_content ON contentsummarylog (content_id, sort_key);

CREATE TABLE masterylog_new (
    id         TEXT NOT NULL,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
INSERT INTO masterylog_new (id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row)
    SELECT id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row FROM masterylog;
DROP TABLE masterylog;
ALTER TABLE masterylog_new RENAME TO masterylog;
CREATE UNIQUE INDEX masterylog_by_place ON masterylog (partition, grp, id);
CREATE INDEX masterylog_by_order ON masterylog (sort_key, id);
CREATE INDEX masterylog_by_user ON masterylog (user_id, sort_key);
CREATE INDEX masterylog_by_content ON masterylog (content_id, sort_key);

CREATE TABLE attemptlog_new (
    id         TEXT NOT NULL,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
INSERT INTO attemptlog_new (id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row)
    SELECT id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row FROM attemptlog;
DROP TABLE attemptlog;
ALTER TABLE attemptlog_new RENAME TO attemptlog;
CREATE UNIQUE INDEX attemptlog_by_place ON attemptlog (partition, grp, id);
CREATE INDEX attemptlog_by_order ON attemptlog (sort_key, id);
CREATE INDEX attemptlog_by_user ON attemptlog (user_id, sort_key);
CREATE INDEX attemptlog_by_content ON attemptlog (content_id, sort_key);

CREATE TABLE examlog_new (
    id         TEXT NOT NULL,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
INSERT INTO examlog_new (id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row)
    SELECT id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row FROM examlog;
DROP TABLE examlog;
ALTER TABLE examlog_new RENAME TO examlog;
CREATE UNIQUE INDEX examlog_by_place ON examlog (partition, grp, id);
CREATE INDEX examlog_by_order ON examlog (sort_key, id);
CREATE INDEX examlog_by_user ON examlog (user_id, sort_key);
CREATE INDEX examlog_by_content ON examlog (content_id, sort_key);

CREATE TABLE examattemptlog_new (
    id         TEXT NOT NULL,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
INSERT INTO examattemptlog_new (id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row)
    SELECT id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row FROM examattemptlog;
DROP TABLE examattemptlog;
ALTER TABLE examattemptlog_new RENAME TO examattemptlog;
CREATE UNIQUE INDEX examattemptlog_by_place ON examattemptlog (partition, grp, id);
CREATE INDEX examattemptlog_by_order ON examattemptlog (sort_key, id);
CREATE INDEX examattemptlog_by_user ON examattemptlog (user_id, sort_key);
CREATE INDEX examattemptlog_by_content ON examattemptlog (content_id, sort_key);

CREATE TABLE usersessionlog_new (
    id         TEXT NOT NULL,
    partition  TEXT NOT NULL,
    grp        TEXT NOT NULL,
    user_id    TEXT,
    content_id TEXT,
    channel_id TEXT,
    exam_id    TEXT,
    sort_key   TEXT NOT NULL,
    row        TEXT NOT NULL
) STRICT;
INSERT INTO usersessionlog_new (id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row)
    SELECT id, partition, grp, user_id, content_id, channel_id, exam_id, sort_key, row FROM usersessionlog;
DROP TABLE usersessionlog;
ALTER TABLE usersessionlog_new RENAME TO usersessionlog;
CREATE UNIQUE INDEX usersessionlog_by_place ON usersessionlog (partition, grp, id);
CREATE INDEX usersessionlog_by_order ON usersessionlog (sort_key, id);
CREATE INDEX usersessionlog_by_user ON usersessionlog (user_id, sort_key);
CREATE INDEX usersessionlog_by_content ON usersessionlog (content_id, sort_key);
