"""An in-memory stand-in for one syncd device: PartitionStates + logs.writes + logs.derive.

It speaks the ``send``/``read_rows`` interface of ``tests.corpus_replay`` so the pure
tests replay the corpus exactly as the real-daemon tests do, minus HTTP and SQLite. Ids
and quiz levels come from a seeded RNG, so a test run is reproducible. Every record a
write touches is checked with ``validate_record``, so the writes can only produce records
a peer would accept.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

from syncd.errors import LogError
from syncd.logs import writes
from syncd.logs.aggregate import derive
from syncd.logs.partitions import anon_partition, user_partition
from syncd.logs.records import AppendEvent, CreateRecord, DerivedRow, RawRecord
from syncd.logs.state import PartitionState
from syncd.logs.timestamps import canonical
from syncd.logs.validate import validate_record

TRACKPROGRESS = "/api/logger/trackprogress/"
SESSION = "/api/auth/session/current/"


class MemoryDevice:
    """One device's partitions and the Kolibri-compatible write endpoints."""

    def __init__(self, device_id: str, dataset_id: str, *, seed: int = 0) -> None:
        self.device_id = device_id
        self.dataset_id = dataset_id
        self.states: dict[str, PartitionState] = {}
        self.rng = random.Random(seed)
        self.visitor_id: str | None = None
        self.last_headers: dict[str, str] = {}

    # --- identity and randomness as the daemon would supply them ----------------------
    def new_id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).hex

    def random_quiz_level(self) -> int:
        return self.rng.randint(-2**31, -1)

    def context(self, at: str, user_id: str | None) -> writes.WriteContext:
        return writes.WriteContext(
            now=canonical(at), user_id=user_id, device_id=self.device_id, dataset_id=self.dataset_id,
            new_id=self.new_id, random_quiz_level=self.random_quiz_level,
            visitor_id=None if user_id else self.visitor_id,
        )

    def state(self, user_id: str | None) -> PartitionState:
        partition = user_partition(user_id) if user_id else anon_partition(self.device_id)
        if partition not in self.states:
            self.states[partition] = PartitionState(partition)
        return self.states[partition]

    # --- the transport of tests.corpus_replay ----------------------------------------
    def send(self, method: str, path: str, payload: Any, at: str, user_id: str | None) -> tuple[int, Any]:
        state = self.state(user_id)
        ctx = self.context(at, user_id)
        try:
            if method == "POST" and path == TRACKPROGRESS:
                result = writes.start_session(state, payload, ctx)
            elif method == "PUT" and path.startswith(TRACKPROGRESS) and path.endswith("/"):
                result = writes.update_session(state, path[len(TRACKPROGRESS):-1], payload, ctx)
            elif method == "PUT" and path == SESSION:
                result = writes.heartbeat(state, payload, ctx)
            else:
                return 404, {"error": "not_found", "detail": path}
        except LogError as error:
            return error.status, {"error": error.code, "detail": error.detail}
        touched = {m.record_id for m in result.mutations}
        state.apply(result.mutations)
        for record_id in touched:
            validate_record(state.records[record_id])
        self.last_headers = dict(result.headers)
        # through JSON, as on the wire (and proving the response is plain JSON)
        return 200, json.loads(json.dumps(result.response, allow_nan=False))

    def derived(self) -> list[DerivedRow]:
        rows: list[DerivedRow] = []
        for state in self.states.values():
            for group_rows in derive(state, state.groups(), self.dataset_id).values():
                rows.extend(group_rows)
        return rows

    def read_rows(self, model: str) -> list[dict[str, Any]]:
        return [json.loads(row.to_json()) for row in self.derived() if row.model == model]

    # --- sync -------------------------------------------------------------------------
    def merge_from(self, other: "MemoryDevice") -> None:
        """A full sync from ``other``: the union of raw records and of their events."""
        for partition, theirs in other.states.items():
            mine = self.states.setdefault(partition, PartitionState(partition))
            merge_state(mine, theirs.records.values())


def merge_state(state: PartitionState, records: Any) -> None:
    """Add every record and every event ``state`` lacks (events keyed by device and seq)."""
    for record in records:
        assert isinstance(record, RawRecord)
        if record.id not in state.records:
            state.apply([CreateRecord(record.id, record.kind, dict(record.fields))])
        have = {(e["device_id"], e["seq"]) for e in state.records[record.id].events}
        state.apply([AppendEvent(record.id, dict(e)) for e in record.events
                     if (e["device_id"], e["seq"]) not in have])
