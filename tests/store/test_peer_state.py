"""The client's kept cursors (``store.peer_state``): each with the server instance it was
made with, through a real SqliteStore."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from syncd.store.peer_state import SqlitePeerState, decode_cursor, encode_cursor
from syncd.store.sqlite import SqliteStore
from syncd.sync.messages import Cursor, Epoch, Instance, PeerCursor

DEVICE = "d" * 64
PULL = PeerCursor(Cursor(Epoch("0123456789abcdef"), 7, "a" * 32), Instance("1" * 32))
PUSH = PeerCursor(Cursor(Epoch("fedcba9876543210"), 3, "b" * 32), Instance("2" * 32))


def test_encoding_round_trips_and_refuses_what_it_cannot_trust() -> None:
    assert decode_cursor(encode_cursor(PULL)) == PULL
    assert json.loads(encode_cursor(PULL)) == ["0123456789abcdef", 7, "a" * 32, "1" * 32]
    # from before instances: three elements; the protocol then does one full exchange
    assert decode_cursor(json.dumps(["0123456789abcdef", 7, "a" * 32])) is None
    for bad in (None, "", "{", "[1, 2, 3, 4]", json.dumps(["0123456789abcdef", 7, "a" * 32, "short"])):
        assert decode_cursor(bad) is None


async def test_each_cursor_keeps_its_own_instance(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state")
    try:
        peers = SqlitePeerState(store.run_read, store.run_write)
        assert await peers.peer_cursors(DEVICE) == (None, None)
        await peers.save_pull_cursor(DEVICE, PULL)
        await peers.save_push_cursor(DEVICE, PUSH)          # e.g. a concurrent session with a clone
        assert await peers.peer_cursors(DEVICE) == (PULL, PUSH)

        def old_row(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE peers SET pull_cursor = ? WHERE device_id = ?",
                         (json.dumps(["0123456789abcdef", 7, "a" * 32]), DEVICE))

        await store.run_write(old_row)
        assert await peers.peer_cursors(DEVICE) == (None, PUSH)
    finally:
        await store.close()
