-- Membership and peer state (DESIGN §7, §10). Times are unix seconds (REAL).
-- The facility itself lives in meta: facility_id, dataset_id, facility_name and
-- facility_secret (64 hex). No semicolons in these comments: migrate.py splits on them.

-- devices: every device of the facility this one has heard of. public_key is the raw
-- 32-byte Ed25519 key, recorded on the device's first successful membership proof (NULL
-- for a device revoked before it was ever seen here). first_seen and last_seen are the
-- times of its first and latest proof. revoked_at and revocation (the signed JSON of
-- syncd.sync.membership.encode_revocation, made here or received from a peer) are set
-- once and then only moved to an earlier revocation: a revoked device stays revoked.
CREATE TABLE devices (
    device_id   TEXT PRIMARY KEY,
    public_key  BLOB,
    first_seen  REAL,
    last_seen   REAL,
    revoked_at  REAL,
    revocation  BLOB,
    CHECK (length(device_id) = 64),
    CHECK (public_key IS NULL OR length(public_key) = 32),
    CHECK ((revoked_at IS NULL) = (revocation IS NULL))
) STRICT;

-- invites: the join codes this device issued, so an invite survives a restart. code_id
-- is the public first two digits of the code, code_hash the SPAKE2 password derived from
-- the whole code (the code itself is not kept). A try is spent when a join handshake
-- starts. A successful join deletes the row, and so does expiry (purged lazily).
CREATE TABLE invites (
    code_id     TEXT PRIMARY KEY,
    code_hash   BLOB NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    tries_left  INTEGER NOT NULL,
    CHECK (length(code_id) = 2),
    CHECK (length(code_hash) = 32),
    CHECK (tries_left >= 0)
) STRICT;

-- peers: what this device remembers of each peer it synced with. addresses is a JSON
-- list of "host:port" strings, most recently verified first. pull_cursor is the opaque
-- cursor the peer last gave us (its epoch, feed seq and our subscription hash), push_seq
-- the last feed number of ours the peer acknowledged. backoff_until holds the time
-- before which the scheduler does not try the peer again, last_error says why.
CREATE TABLE peers (
    device_id      TEXT PRIMARY KEY,
    addresses      TEXT NOT NULL DEFAULT '[]',
    pull_cursor    TEXT,
    push_seq       INTEGER NOT NULL DEFAULT 0,
    last_sync      REAL,
    backoff_until  REAL,
    last_error     TEXT,
    CHECK (length(device_id) = 64),
    CHECK (json_valid(addresses) AND json_type(addresses) = 'array')
) STRICT;

-- sync_sessions: the history of sync sessions with their figures, for GET /peers, GET
-- /status and doctor. direction says who started the session (outgoing = this device).
-- partitions and records count what moved both ways. outcome is a short word (ok,
-- error, refused, interrupted), detail the reason. clock_skew_s is the peer clock minus
-- ours as seen in its hello.
CREATE TABLE sync_sessions (
    id            INTEGER PRIMARY KEY,
    peer          TEXT NOT NULL,
    direction     TEXT NOT NULL,
    started_at    REAL NOT NULL,
    duration_s    REAL NOT NULL,
    partitions    INTEGER NOT NULL DEFAULT 0,
    records       INTEGER NOT NULL DEFAULT 0,
    bytes_in      INTEGER NOT NULL DEFAULT 0,
    bytes_out     INTEGER NOT NULL DEFAULT 0,
    outcome       TEXT NOT NULL,
    detail        TEXT,
    clock_skew_s  REAL,
    CHECK (direction IN ('outgoing', 'incoming'))
) STRICT;
CREATE INDEX sync_sessions_by_peer ON sync_sessions (peer, started_at);
CREATE INDEX sync_sessions_by_time ON sync_sessions (started_at);
