"""Durable per-peer sync cursors (the ``peers`` table), for the sync client.

A cursor is saved only after what it covers was committed (the protocol says when), so a
crash between the two makes the next session repeat a little work, never skip any.

Each cursor is kept with the instance of the peer it was made with (``PeerCursor``), as
JSON ``[epoch, seq, sub_hash, instance]`` in its own column, so a pull cursor and a push
cursor saved by two concurrent sessions with two clones of one device can never be
mixed up. The protocol uses a cursor only with that instance. A cursor stored before
instances existed (three elements) reads as none: one full exchange, then a new one.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, Awaitable, Callable, TypeVar

from syncd.sync.messages import Cursor, Epoch, Instance, PeerCursor

T = TypeVar("T")
Runner = Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]]
_INSTANCE = re.compile(r"[0-9a-f]{32}")


def encode_cursor(kept: PeerCursor) -> str:
    c = kept.cursor
    return json.dumps([c.epoch, c.seq, c.sub_hash, kept.instance])


def decode_cursor(text: str | None) -> PeerCursor | None:
    """The stored cursor, or None if absent, unreadable or from before instances (then a
    full exchange is due)."""
    if not text:
        return None
    try:
        epoch, seq, sub_hash, instance = json.loads(text)
    except (ValueError, TypeError):
        return None
    if (not isinstance(epoch, str) or not isinstance(seq, int) or not isinstance(sub_hash, str)
            or not isinstance(instance, str) or not _INSTANCE.fullmatch(instance)):
        return None
    return PeerCursor(Cursor(Epoch(epoch), seq, sub_hash), Instance(instance))


class SqlitePeerState:
    """``transport.PeerStateStore`` over the store's reader and writer."""

    def __init__(self, read: Runner[Any], write: Runner[Any]) -> None:
        self._read = read
        self._write = write

    async def peer_cursors(self, device_id: str) -> tuple[PeerCursor | None, PeerCursor | None]:
        def fetch(conn: sqlite3.Connection) -> tuple[str | None, str | None] | None:
            row = conn.execute("SELECT pull_cursor, push_cursor FROM peers WHERE device_id = ?", (device_id,)).fetchone()
            return None if row is None else (row[0], row[1])

        row = await self._read(fetch)
        return (None, None) if row is None else (decode_cursor(row[0]), decode_cursor(row[1]))

    async def save_pull_cursor(self, device_id: str, cursor: PeerCursor) -> None:
        await self._save(device_id, "pull_cursor", encode_cursor(cursor))

    async def save_push_cursor(self, device_id: str, cursor: PeerCursor) -> None:
        await self._save(device_id, "push_cursor", encode_cursor(cursor))

    async def _save(self, device_id: str, column: str, value: str) -> None:
        def save(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO peers (device_id) VALUES (?) ON CONFLICT(device_id) DO NOTHING", (device_id,))
            conn.execute(f"UPDATE peers SET {column} = ? WHERE device_id = ?", (value, device_id))

        await self._write(save)
