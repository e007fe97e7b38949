"""Membership and peer state in SQLite (schema ``0003_membership.sql``): SQL only, no rules.

Every function takes a ``sqlite3.Connection`` and runs on the store's threads: readers
call the read functions, the writer thread calls the write functions inside its own
transaction (they never BEGIN or COMMIT). The rules live in ``syncd.sync.membership``.

* the facility: ``meta`` keys ``facility_id``, ``dataset_id``, ``facility_name``,
  ``facility_secret`` (hex);
* ``devices``: public keys and revocations; ``invites``: this device's join codes;
* ``peers`` and ``sync_sessions``: cursors, backoff and history for the sync shell.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from syncd.errors import StoreError
from syncd.sync.membership import Facility, Invite, Revocation, decode_revocation, encode_revocation

__all__ = [
    "DeviceRow",
    "PeerRow",
    "SessionRecord",
    "add_invite",
    "add_revocation",
    "consume_invite",
    "devices",
    "get_peer",
    "is_revoked",
    "list_peers",
    "live_invites",
    "load_facility",
    "purge_invites",
    "record_device",
    "record_session",
    "recent_sessions",
    "revocations",
    "revoked_ids",
    "save_facility",
    "spend_invite_try",
    "upsert_peer",
]

_FACILITY_KEYS = ("facility_id", "dataset_id", "facility_name", "facility_secret")


# --- the facility (meta) ---------------------------------------------------------------


def load_facility(conn: sqlite3.Connection) -> Facility | None:
    """The facility this device belongs to, or None."""
    rows = conn.execute(
        f"SELECT key, value FROM meta WHERE key IN ({','.join('?' * len(_FACILITY_KEYS))})", _FACILITY_KEYS
    ).fetchall()
    meta = dict(rows)
    if "facility_id" not in meta:
        return None
    missing = [key for key in _FACILITY_KEYS if key not in meta]
    if missing:
        raise StoreError(f"the facility in meta lacks {', '.join(missing)}: the store is damaged")
    try:
        return Facility(meta["facility_id"], meta["dataset_id"], meta["facility_name"], bytes.fromhex(meta["facility_secret"]))
    except ValueError as exc:
        raise StoreError(f"the facility in meta is invalid: {exc}") from None


def save_facility(conn: sqlite3.Connection, facility: Facility) -> None:
    """Store ``facility`` as this device's (replacing any: the caller checked the rules)."""
    values = (facility.facility_id, facility.dataset_id, facility.name, facility.secret.hex())
    conn.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        list(zip(_FACILITY_KEYS, values)),
    )


# --- devices and revocations -------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    public_key: bytes | None
    first_seen: float | None
    last_seen: float | None
    revoked_at: float | None
    revocation: bytes | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def record_device(conn: sqlite3.Connection, device_id: str, public_key: bytes, now: float) -> None:
    """A proof by ``device_id`` succeeded at ``now``: keep its key, bump ``last_seen``.

    A device whose recorded key differs is refused (``StoreError``): a device id is the
    hash of its key, so a mismatch means a forged or corrupted record.
    """
    row = conn.execute("SELECT public_key FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    if row is not None and row[0] is not None and bytes(row[0]) != public_key:
        raise StoreError(f"device {device_id} presented another public key than the one recorded")
    conn.execute(
        """INSERT INTO devices(device_id, public_key, first_seen, last_seen) VALUES (?, ?, ?, ?)
           ON CONFLICT(device_id) DO UPDATE SET
               public_key = coalesce(devices.public_key, excluded.public_key),
               first_seen = coalesce(devices.first_seen, excluded.first_seen),
               last_seen = max(coalesce(devices.last_seen, excluded.last_seen), excluded.last_seen)""",
        (device_id, public_key, now, now),
    )


def devices(conn: sqlite3.Connection) -> list[DeviceRow]:
    """Every known device, by first sighting (revoked-before-seen last), then id."""
    rows = conn.execute(
        """SELECT device_id, public_key, first_seen, last_seen, revoked_at, revocation FROM devices
           ORDER BY first_seen IS NULL, first_seen, device_id"""
    ).fetchall()
    return [
        DeviceRow(r[0], bytes(r[1]) if r[1] is not None else None, r[2], r[3], r[4], bytes(r[5]) if r[5] is not None else None)
        for r in rows
    ]


def add_revocation(conn: sqlite3.Connection, revocation: Revocation) -> bool:
    """Keep a verified revocation; True if it changed anything (a new revocation, or an
    earlier one than the one kept: see ``membership.merge_revocations``)."""
    row = conn.execute("SELECT revoked_at, revocation FROM devices WHERE device_id = ?", (revocation.device_id,)).fetchone()
    if row is not None and row[0] is not None:
        kept_at, kept = float(row[0]), bytes(row[1])
        kept_by = json.loads(kept)["by_device"]
        if (kept_at, kept_by) <= (revocation.revoked_at, revocation.by_device):
            return False
    conn.execute(
        """INSERT INTO devices(device_id, revoked_at, revocation) VALUES (?, ?, ?)
           ON CONFLICT(device_id) DO UPDATE SET revoked_at = excluded.revoked_at, revocation = excluded.revocation""",
        (revocation.device_id, revocation.revoked_at, encode_revocation(revocation)),
    )
    return True


def revocations(conn: sqlite3.Connection, facility_id: str) -> list[Revocation]:
    """Every kept revocation, verified again (a damaged one raises ``StoreError``)."""
    rows = conn.execute("SELECT revocation FROM devices WHERE revocation IS NOT NULL ORDER BY device_id").fetchall()
    found: list[Revocation] = []
    for (blob,) in rows:
        try:
            found.append(decode_revocation(bytes(blob), facility_id))
        except Exception as exc:
            raise StoreError(f"a stored revocation does not verify: {exc}") from None
    return found


def revoked_ids(conn: sqlite3.Connection) -> frozenset[str]:
    return frozenset(r[0] for r in conn.execute("SELECT device_id FROM devices WHERE revoked_at IS NOT NULL"))


def is_revoked(conn: sqlite3.Connection, device_id: str) -> bool:
    row = conn.execute("SELECT revoked_at IS NOT NULL FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    return bool(row[0]) if row is not None else False


# --- invites ---------------------------------------------------------------------------------


def add_invite(conn: sqlite3.Connection, invite: Invite, now: float) -> None:
    """Keep a new invite; its code id must not belong to a live one (the caller drew it
    from ``live_invites``), a dead one with the same id is replaced."""
    conn.execute(
        """INSERT INTO invites(code_id, code_hash, created_at, expires_at, tries_left) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT(code_id) DO UPDATE SET code_hash = excluded.code_hash, created_at = excluded.created_at,
               expires_at = excluded.expires_at, tries_left = excluded.tries_left
           WHERE invites.expires_at <= ? OR invites.tries_left <= 0""",
        (invite.code_id, invite.code_hash, now, invite.expires_at, invite.tries_left, now),
    )
    if conn.execute("SELECT changes()").fetchone()[0] != 1:
        raise StoreError(f"invite {invite.code_id} is already live")


def live_invites(conn: sqlite3.Connection, now: float) -> list[Invite]:
    rows = conn.execute(
        "SELECT code_id, code_hash, expires_at, tries_left FROM invites WHERE expires_at > ? AND tries_left > 0 ORDER BY expires_at",
        (now,),
    ).fetchall()
    return [Invite(r[0], bytes(r[1]), float(r[2]), int(r[3])) for r in rows]


def spend_invite_try(conn: sqlite3.Connection, code_id: str, now: float) -> Invite | None:
    """Take one try from the live invite ``code_id`` and return it as it was before, or
    None if there is no live invite by that id. Run it in the writer: the decrement must
    be committed before the handshake goes on."""
    row = conn.execute(
        "SELECT code_id, code_hash, expires_at, tries_left FROM invites WHERE code_id = ? AND expires_at > ? AND tries_left > 0",
        (code_id, now),
    ).fetchone()
    if row is None:
        return None
    conn.execute("UPDATE invites SET tries_left = tries_left - 1 WHERE code_id = ?", (code_id,))
    return Invite(row[0], bytes(row[1]), float(row[2]), int(row[3]))


def consume_invite(conn: sqlite3.Connection, code_id: str) -> None:
    """A join succeeded with ``code_id``: the code is one-time, so it is gone."""
    conn.execute("DELETE FROM invites WHERE code_id = ?", (code_id,))


def purge_invites(conn: sqlite3.Connection, now: float) -> int:
    """Delete dead invites; how many."""
    return conn.execute("DELETE FROM invites WHERE expires_at <= ? OR tries_left <= 0", (now,)).rowcount


# --- peers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerRow:
    device_id: str
    addresses: tuple[str, ...] = ()
    pull_cursor: str | None = None
    push_seq: int = 0
    last_sync: float | None = None
    backoff_until: float | None = None
    last_error: str | None = None


def upsert_peer(conn: sqlite3.Connection, peer: PeerRow) -> None:
    """Insert or replace the whole row of ``peer.device_id``."""
    conn.execute(
        """INSERT INTO peers(device_id, addresses, pull_cursor, push_seq, last_sync, backoff_until, last_error)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(device_id) DO UPDATE SET addresses = excluded.addresses, pull_cursor = excluded.pull_cursor,
               push_seq = excluded.push_seq, last_sync = excluded.last_sync,
               backoff_until = excluded.backoff_until, last_error = excluded.last_error""",
        (
            peer.device_id,
            json.dumps(list(peer.addresses)),
            peer.pull_cursor,
            peer.push_seq,
            peer.last_sync,
            peer.backoff_until,
            peer.last_error,
        ),
    )


def _peer(row: tuple[Any, ...]) -> PeerRow:
    device_id, addresses, pull_cursor, push_seq, last_sync, backoff_until, last_error = row
    return PeerRow(
        device_id, tuple(json.loads(addresses)), pull_cursor, int(push_seq), last_sync, backoff_until, last_error
    )


_PEER_COLUMNS = "device_id, addresses, pull_cursor, push_seq, last_sync, backoff_until, last_error"


def get_peer(conn: sqlite3.Connection, device_id: str) -> PeerRow | None:
    row = conn.execute(f"SELECT {_PEER_COLUMNS} FROM peers WHERE device_id = ?", (device_id,)).fetchone()
    return _peer(row) if row is not None else None


def list_peers(conn: sqlite3.Connection) -> list[PeerRow]:
    return [_peer(row) for row in conn.execute(f"SELECT {_PEER_COLUMNS} FROM peers ORDER BY device_id")]


# --- sync sessions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRecord:
    peer: str
    direction: str              # "outgoing" (this device started it) or "incoming"
    started_at: float
    duration_s: float
    outcome: str                # ok, error, refused, interrupted
    partitions: int = 0
    records: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    detail: str | None = None
    clock_skew_s: float | None = None
    id: int | None = None       # set when read back


_SESSION_COLUMNS = (
    "peer, direction, started_at, duration_s, outcome, partitions, records, bytes_in, bytes_out, detail, clock_skew_s"
)


def record_session(conn: sqlite3.Connection, session: SessionRecord) -> int:
    """Append one finished session to the history; its id."""
    s = session
    cursor = conn.execute(
        f"INSERT INTO sync_sessions({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (s.peer, s.direction, s.started_at, s.duration_s, s.outcome, s.partitions, s.records, s.bytes_in, s.bytes_out, s.detail, s.clock_skew_s),
    )
    return int(cursor.lastrowid or 0)


def recent_sessions(conn: sqlite3.Connection, *, peer: str | None = None, limit: int = 50) -> list[SessionRecord]:
    """The latest sessions (all peers, or one), newest first."""
    where, params = ("WHERE peer = ?", (peer, limit)) if peer is not None else ("", (limit,))
    rows = conn.execute(
        f"SELECT {_SESSION_COLUMNS}, id FROM sync_sessions {where} ORDER BY started_at DESC, id DESC LIMIT ?", params
    ).fetchall()
    return [
        SessionRecord(
            peer=r[0], direction=r[1], started_at=r[2], duration_s=r[3], outcome=r[4], partitions=r[5], records=r[6],
            bytes_in=r[7], bytes_out=r[8], detail=r[9], clock_skew_s=r[10], id=r[11],
        )
        for r in rows
    ]
