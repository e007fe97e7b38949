"""syncd.store.facility on a real SQLite file brought up by the migrations."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncd.errors import StoreError
from syncd.store import facility as db
from syncd.store.migrate import migrate
from syncd.store.sqlite import connect
from syncd.sync import membership as m

FAC = m.Facility("a" * 32, "b" * 32, "Kibera Primary", os.urandom(32))
DEV1, DEV2, DEV3 = "1" * 64, "2" * 64, "3" * 64


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "syncd.sqlite3")
    assert migrate(connection) >= 3
    yield connection
    connection.close()


def test_schema_tables_are_strict(conn: sqlite3.Connection) -> None:
    rows = dict(conn.execute("SELECT name, strict FROM pragma_table_list WHERE schema = 'main'").fetchall())
    for table in ("devices", "invites", "peers", "sync_sessions"):
        assert rows[table] == 1
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO devices(device_id, public_key) VALUES (?, ?)", (DEV1, "text, not a blob"))


def test_migrations_run_twice_are_a_no_op(conn: sqlite3.Connection) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    assert migrate(conn) == version


def test_facility_in_meta(conn: sqlite3.Connection) -> None:
    assert db.load_facility(conn) is None
    db.save_facility(conn, FAC)
    assert db.load_facility(conn) == FAC
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert meta["facility_secret"] == FAC.secret.hex()
    assert meta["dataset_id"] == FAC.dataset_id and meta["facility_name"] == FAC.name
    newer = replace(FAC, secret=os.urandom(32))
    db.save_facility(conn, newer)
    assert db.load_facility(conn) == newer


def test_damaged_facility_refused(conn: sqlite3.Connection) -> None:
    db.save_facility(conn, FAC)
    conn.execute("DELETE FROM meta WHERE key = 'facility_secret'")
    with pytest.raises(StoreError, match="facility_secret"):
        db.load_facility(conn)
    conn.execute("INSERT INTO meta(key, value) VALUES ('facility_secret', 'zz')")
    with pytest.raises(StoreError):
        db.load_facility(conn)


def test_devices_first_and_last_seen(conn: sqlite3.Connection) -> None:
    key = os.urandom(32)
    db.record_device(conn, DEV2, key, 100.0)
    db.record_device(conn, DEV1, os.urandom(32), 50.0)
    db.record_device(conn, DEV2, key, 200.0)
    db.record_device(conn, DEV2, key, 150.0)  # late report: last_seen does not go back
    rows = db.devices(conn)
    assert [r.device_id for r in rows] == [DEV1, DEV2]
    assert (rows[1].public_key, rows[1].first_seen, rows[1].last_seen) == (key, 100.0, 200.0)
    with pytest.raises(StoreError, match="another public key"):
        db.record_device(conn, DEV2, os.urandom(32), 300.0)


def test_revocations_earliest_wins_and_stick(conn: sqlite3.Connection) -> None:
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    db.record_device(conn, DEV2, os.urandom(32), 10.0)
    late = m.sign_revocation(FAC.facility_id, DEV2, 50.0, k1)
    early = m.sign_revocation(FAC.facility_id, DEV2, 40.0, k2)
    assert db.add_revocation(conn, late)
    assert db.add_revocation(conn, early)
    assert not db.add_revocation(conn, late)
    assert not db.add_revocation(conn, early)
    assert db.add_revocation(conn, m.sign_revocation(FAC.facility_id, DEV3, 60.0, k1))  # never seen here
    assert db.is_revoked(conn, DEV2) and db.is_revoked(conn, DEV3) and not db.is_revoked(conn, DEV1)
    assert db.revoked_ids(conn) == {DEV2, DEV3}
    assert db.revocations(conn, FAC.facility_id)[0] == early
    row = {r.device_id: r for r in db.devices(conn)}[DEV2]
    assert row.revoked and row.revoked_at == 40.0 and row.public_key is not None
    db.record_device(conn, DEV2, row.public_key, 70.0)  # a later sighting does not un-revoke
    assert db.is_revoked(conn, DEV2)
    with pytest.raises(StoreError):
        db.revocations(conn, "c" * 32)  # stored revocations verify only for their facility


def test_invites_survive_and_count_tries(conn: sqlite3.Connection) -> None:
    code, invite = m.make_invite(1000.0, os.urandom)
    db.add_invite(conn, invite, 1000.0)
    assert db.live_invites(conn, 1000.0) == [invite]
    stored = conn.execute("SELECT * FROM invites").fetchone()
    assert code not in repr(stored)  # only the hash is kept
    with pytest.raises(StoreError, match="already live"):
        db.add_invite(conn, invite, 1001.0)
    for left in (5, 4, 3, 2, 1):
        spent = db.spend_invite_try(conn, invite.code_id, 1001.0)
        assert spent is not None and spent.tries_left == left and spent.code_hash == m.code_hash(code)
    assert db.spend_invite_try(conn, invite.code_id, 1001.0) is None
    assert db.live_invites(conn, 1001.0) == []
    # a dead invite's code id can be reused
    fresh = replace(invite, tries_left=5, expires_at=5000.0)
    db.add_invite(conn, fresh, 1002.0)
    assert db.spend_invite_try(conn, invite.code_id, 5000.0) is None  # expired at expires_at
    assert db.spend_invite_try(conn, invite.code_id, 4999.0) is not None
    db.consume_invite(conn, invite.code_id)
    assert db.spend_invite_try(conn, invite.code_id, 4999.0) is None


def test_purge_invites(conn: sqlite3.Connection) -> None:
    _, a = m.make_invite(0.0, os.urandom, taken=())
    _, b = m.make_invite(1000.0, os.urandom, taken={a.code_id})
    db.add_invite(conn, a, 0.0)
    db.add_invite(conn, b, 1000.0)
    assert db.purge_invites(conn, 1900.0) == 1
    assert [i.code_id for i in db.live_invites(conn, 1900.0)] == [b.code_id]


def test_peers(conn: sqlite3.Connection) -> None:
    assert db.get_peer(conn, DEV1) is None
    peer = db.PeerRow(DEV1, ("10.0.0.2:7420", "[fe80::1]:7420"), "cursor-x", 12, 99.5, None, None)
    db.upsert_peer(conn, peer)
    assert db.get_peer(conn, DEV1) == peer
    changed = replace(peer, push_seq=20, backoff_until=300.0, last_error="proof failed")
    db.upsert_peer(conn, changed)
    db.upsert_peer(conn, db.PeerRow(DEV2))
    assert db.list_peers(conn) == [changed, db.PeerRow(DEV2)]


def test_sync_sessions(conn: sqlite3.Connection) -> None:
    first = db.SessionRecord(DEV1, "outgoing", 10.0, 0.5, "ok", partitions=3, records=40, bytes_in=1000, bytes_out=200)
    second = db.SessionRecord(DEV2, "incoming", 20.0, 1.5, "refused", detail="bad proof", clock_skew_s=-2.0)
    third = db.SessionRecord(DEV1, "incoming", 30.0, 0.1, "ok")
    ids = [db.record_session(conn, s) for s in (first, second, third)]
    assert len(set(ids)) == 3
    recent = db.recent_sessions(conn)
    assert [s.started_at for s in recent] == [30.0, 20.0, 10.0]
    assert recent[1] == replace(second, id=ids[1])
    assert [s.started_at for s in db.recent_sessions(conn, peer=DEV1, limit=1)] == [30.0]
    with pytest.raises(sqlite3.IntegrityError):
        db.record_session(conn, replace(first, direction="sideways"))
