"""Test doubles for sync: an in-memory replica (a SyncStore over real ``PartitionDoc``s,
``PartitionState`` and the real folds) and an in-memory session pair (h11 ConnectionPair
style) that runs a ClientSession against a ServerSession through the real codec.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncd.errors import InvalidRecordError
from syncd.logs import writes
from syncd.logs.aggregate import derive
from syncd.logs.integrity import check_growth
from syncd.logs.partitions import anon_partition, user_partition
from syncd.logs.records import AppendEvent, DerivedRow, GroupKey, canonical_json
from syncd.logs.state import PartitionState
from syncd.store.documents import PartitionDoc
from syncd.store.interface import ImportResult, StagedImport
from syncd.sync import codec
from syncd.sync.auth import device_id_of, public_bytes
from syncd.sync.membership import Facility, mint_facility
from syncd.sync.messages import (
    DeviceId, Epoch, Instance, Message, PeerCursor, Subscription, in_subscription, vv_covers,
)
from syncd.sync.protocol import (
    EMPTY_VV, ClientSession, Export, Failed, Finished, Import, Imported, LoadPeer, LocalDevice, NeedChanges,
    NeedVersions, Output, Refused, Revocations, SaveCursor, SavePushSeq, Send, ServerSession, SessionSummary,
)

FACILITY = mint_facility("Test School", os.urandom)
CONTENT = "c6f49ea527824f398f4d5d26faf19396"
CHANNEL = "6199dde695db4ee4ab392222d5af1e5c"
NODE = "32a941fb77c2576e8f6b294cde4c3b0c"
CERT = b"0\x82fake-der-certificate-of-the-server"


def new_user() -> str:
    return uuid.uuid4().hex


class InMemoryReplica:
    """One device: partitions as Loro documents in memory, a change feed, peer cursors."""

    def __init__(self, name: str = "r", *, subscription: Subscription = "all",
                 facility: Facility = FACILITY, key: Ed25519PrivateKey | None = None) -> None:
        self.name = name
        self.key = key or Ed25519PrivateKey.generate()
        self.device_id = DeviceId(device_id_of(public_bytes(self.key)))
        self._epoch = Epoch(secrets.token_hex(8))
        self.peer_id = secrets.randbits(63) + 1
        self.instance = Instance(secrets.token_hex(16))    # new at every (simulated) daemon start
        self.subscription: Subscription = subscription
        self.facility = facility
        self.revocations: tuple[bytes, ...] = ()            # what this replica passes on
        self.revocations_heard: list[tuple[str, bytes]] = []  # (peer, revocation) received
        self.exports: list[Export] = []                   # every export the sessions asked for
        self.docs: dict[str, PartitionDoc] = {}
        self.states: dict[str, PartitionState] = {}
        self.rows: dict[str, dict[GroupKey, list[DerivedRow]]] = {}
        self.part_seq: dict[str, int] = {}
        self._feed = 0
        self.cursors: dict[str, tuple[PeerCursor | None, PeerCursor | None]] = {}
        self.refuse: Callable[[str, bytes], str | None] | None = None   # hostile-import hook
        self.acknowledged: list[tuple[str, str, str | None]] = []        # (partition, record, event JSON)
        self._clock = 0

    # --- identity ----------------------------------------------------------------------
    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def feed_seq(self) -> int:
        return self._feed

    def local(self) -> LocalDevice:
        return LocalDevice(self.device_id, self._epoch, self.facility, self.subscription, self.key,
                           self.revocations, instance=self.instance)

    def restart(self) -> None:
        """A daemon restart: same state dir (epoch, feed, cursors), a new instance and peer id."""
        self.instance = Instance(secrets.token_hex(16))
        self.peer_id = secrets.randbits(63) + 1
        self.docs = {p: PartitionDoc.load([d.export_snapshot()], self.peer_id) for p, d in self.docs.items()}

    def clone(self, name: str) -> "InMemoryReplica":
        """A copy of the whole state dir started elsewhere with the same machine id: the same
        key, device id, epoch, feed and cursors; its own instance and Loro peer id."""
        twin = InMemoryReplica(name, subscription=self.subscription, facility=self.facility, key=self.key)
        twin._epoch, twin.revocations = self._epoch, self.revocations
        twin.docs = {p: PartitionDoc.load([d.export_snapshot()], twin.peer_id) for p, d in self.docs.items()}
        twin.states = {p: PartitionState.from_records(p, d.records()) for p, d in twin.docs.items()}
        twin.rows = {p: derive(st, st.groups(), self.facility.dataset_id) for p, st in twin.states.items()}
        twin.part_seq, twin._feed = dict(self.part_seq), self._feed
        twin.cursors, twin.acknowledged = dict(self.cursors), list(self.acknowledged)
        twin._clock = self._clock
        return twin

    def backup(self) -> dict[str, Any]:
        """What ``syncd backup`` would keep: documents, feed, cursors, acknowledged writes."""
        return {"docs": {p: d.export_snapshot() for p, d in self.docs.items()}, "part_seq": dict(self.part_seq),
                "feed": self._feed, "cursors": dict(self.cursors), "acknowledged": list(self.acknowledged)}

    def restore(self, backup: dict[str, Any] | None = None) -> None:
        """A restore: a new epoch and Loro peer id (DESIGN §10); with ``backup``, everything
        written or received after it is gone from this replica."""
        self._epoch = Epoch(secrets.token_hex(8))
        self.peer_id = secrets.randbits(63) + 1
        self.instance = Instance(secrets.token_hex(16))
        if backup is None:
            return
        self.docs = {p: PartitionDoc.load([snap], self.peer_id) for p, snap in backup["docs"].items()}
        self.states = {p: PartitionState.from_records(p, d.records()) for p, d in self.docs.items()}
        self.rows = {p: derive(st, st.groups(), self.facility.dataset_id) for p, st in self.states.items()}
        self.part_seq, self._feed = dict(backup["part_seq"]), backup["feed"]
        self.cursors, self.acknowledged = dict(backup["cursors"]), list(backup["acknowledged"])

    # --- local writes (through the real write rules) -----------------------------------
    def _ctx(self, user: str | None) -> writes.WriteContext:
        self._clock += 1
        now = f"2025-01-06T{9 + self._clock // 3600:02d}:{self._clock // 60 % 60:02d}:{self._clock % 60:02d}.000000+00:00"
        return writes.WriteContext(now=now, user_id=user, device_id=self.device_id, dataset_id=self.facility.dataset_id,
                                   new_id=lambda: uuid.uuid4().hex, random_quiz_level=lambda: -1)

    def _commit(self, partition: str, result: writes.WriteResult) -> None:
        doc = self.docs.setdefault(partition, PartitionDoc.create(self.peer_id))
        state = self.states.setdefault(partition, PartitionState(partition))
        doc.apply(result.mutations)
        state.apply(result.mutations)
        self._refold(partition)
        for m in result.mutations:   # acknowledged once "committed": what must survive any sync
            event = canonical_json(dict(m.event)) if isinstance(m, AppendEvent) else None
            self.acknowledged.append((partition, m.record_id, event))

    def start(self, user: str | None, content: str = CONTENT) -> str:
        partition = user_partition(user) if user else anon_partition(self.device_id)
        state = self.states.get(partition, PartitionState(partition))
        payload = {"node_id": NODE, "content_id": content, "channel_id": CHANNEL, "kind": "video"}
        result = writes.start_session(state, payload, self._ctx(user))
        self._commit(partition, result)
        return str(result.response["session_id"])

    def update(self, user: str | None, session: str, progress: float = 0.1, seconds: float = 5.0) -> None:
        partition = user_partition(user) if user else anon_partition(self.device_id)
        state = self.states[partition]
        result = writes.update_session(state, session, {"progress_delta": progress, "time_spent_delta": seconds},
                                       self._ctx(user))
        self._commit(partition, result)

    def _refold(self, partition: str) -> None:
        state = self.states[partition]
        self.rows[partition] = derive(state, state.groups(), self.facility.dataset_id)
        self._feed += 1
        self.part_seq[partition] = self._feed

    # --- the SyncStore side, synchronous -------------------------------------------------
    def changes(self, since: int, subscription: Subscription) -> tuple[int, dict[str, bytes]]:
        return self._feed, {p: self.docs[p].version() for p, seq in sorted(self.part_seq.items())
                            if seq > since and in_subscription(p, subscription)}

    def versions(self, partitions: Sequence[str]) -> dict[str, bytes]:
        return {p: self.docs[p].version() if p in self.docs else EMPTY_VV for p in partitions}

    def export(self, partition: str, their_vv: bytes) -> bytes:
        doc = self.docs.get(partition)
        if doc is None or vv_covers(their_vv, doc.version()):
            return b""
        return doc.export_since(their_vv)

    def import_(self, partition: str, data: bytes, source: str = "") -> ImportResult:
        """Fork, import, validate what grew, then commit (DESIGN §6 step 4)."""
        if self.refuse is not None and (why := self.refuse(partition, data)):
            raise InvalidRecordError("records", why)
        committed = self.docs.get(partition)
        fork = committed.fork() if committed is not None else PartitionDoc.create(self.peer_id)
        try:
            outcome = fork.import_(data)
        except BaseException as exc:  # Loro raises a bare BaseException on bytes it cannot parse
            if type(exc) is not BaseException:
                raise
            raise InvalidRecordError("data", f"not a valid update: {exc}") from None
        if not outcome.changed:
            return ImportResult(partition, False, outcome.pending, 0, 0)
        before = self.states.get(partition, PartitionState(partition)).records
        grown = check_growth(before, fork.records())
        doc = self.docs.setdefault(partition, PartitionDoc.create(self.peer_id))
        doc.import_(data)
        self.states[partition] = PartitionState.from_records(partition, doc.records())
        self._refold(partition)
        return ImportResult(partition, True, outcome.pending, len(self.states[partition].groups()), len(grown))

    # --- the SyncStore protocol (async) ---------------------------------------------------
    async def changes_since(self, seq: int, subscription: Subscription) -> tuple[int, dict[str, bytes]]:
        return self.changes(seq, subscription)

    async def version_vectors(self, partitions: Sequence[str]) -> dict[str, bytes]:
        return self.versions(partitions)

    async def export_missing(self, partition: str, their_version: bytes, *, update_lists: bool = False) -> bytes:
        return self.export(partition, their_version)

    async def export_missing_batch(self, requests: Sequence[tuple[str, bytes, bool]]) -> list[bytes]:
        return [await self.export_missing(p, vv, update_lists=lists) for p, vv, lists in requests]

    async def import_chunk(self, partition: str, data: bytes, *, source: str) -> ImportResult:
        return self.import_(partition, data, source)

    async def stage_import(self, partition: str, data: bytes, *, source: str) -> StagedImport:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)  # in memory: committed at once
        return StagedImport(self.import_(partition, data, source), done)

    async def stage_imports(self, chunks: Sequence[tuple[str, bytes]], *, source: str
                            ) -> list[StagedImport | InvalidRecordError]:
        outcomes: list[StagedImport | InvalidRecordError] = []
        for partition, data in chunks:
            try:
                outcomes.append(await self.stage_import(partition, data, source=source))
            except InvalidRecordError as exc:
                outcomes.append(exc)
                break
        return outcomes

    # --- comparisons (never by encoded bytes) ---------------------------------------------
    def raw_json(self, partitions: Iterable[str] | None = None) -> dict[str, str]:
        names = sorted(self.states if partitions is None else partitions)
        out = {}
        for p in names:
            records = sorted(self.states[p].records.values(), key=lambda r: r.id) if p in self.states else []
            out[p] = json.dumps([[r.id, r.kind, r.fields, sorted(r.events, key=lambda e: json.dumps(e, sort_keys=True))]
                                 for r in records], sort_keys=True)
        return out

    def rows_json(self) -> dict[str, str]:
        return {p: "\n".join(row.to_json() for g in sorted(groups) for row in groups[g])
                for p, groups in sorted(self.rows.items())}

    def holds(self, partition: str, record: str, event: str | None) -> bool:
        """Is this acknowledged write (a record, or one event of it) here?"""
        found = self.states.get(partition)
        rec = found.records.get(record) if found is not None else None
        return rec is not None and (event is None or any(canonical_json(e) == event for e in rec.events))

    def event_count(self) -> int:
        return sum(len(r.events) + 1 for s in self.states.values() for r in s.records.values())


def execute(replica: InMemoryReplica, session: ClientSession | ServerSession, outputs: list[Output]
            ) -> tuple[tuple[Message, ...] | None, list[Finished | Failed]]:
    """The in-memory shell: run the outputs against ``replica`` until a frame to send."""
    queue: deque[Output] = deque(outputs)
    sent: tuple[Message, ...] | None = None
    ends: list[Finished | Failed] = []
    while queue:
        out = queue.popleft()
        if isinstance(out, Send):
            assert sent is None, "one frame per step"
            sent = out.messages
        elif isinstance(out, LoadPeer):
            queue.extend(session.peer_loaded(*replica.cursors.get(out.peer, (None, None))))
        elif isinstance(out, NeedChanges):
            queue.extend(session.changes_ready(*replica.changes(out.since, out.subscription)))
        elif isinstance(out, NeedVersions):
            queue.extend(session.versions_ready(replica.versions(out.partitions)))
        elif isinstance(out, Export):
            replica.exports.append(out)
            queue.extend(session.export_ready(out.partition, replica.export(out.partition, out.their_vv)))
        elif isinstance(out, Import):
            outcomes: list[Imported | Refused] = []
            for partition, data in out.chunks:
                try:
                    r = replica.import_(partition, data)
                except InvalidRecordError as exc:
                    outcomes.append(Refused(partition, exc.detail))
                    break
                outcomes.append(Imported(partition, r.changed, r.pending, r.records))
            if isinstance(session, ClientSession):  # (in memory: committed at once)
                session.committed([o.partition for o in outcomes if isinstance(o, Imported)])
            queue.extend(session.imports_done(outcomes))
        elif isinstance(out, SaveCursor):
            replica.cursors[out.peer] = (out.cursor, replica.cursors.get(out.peer, (None, None))[1])
        elif isinstance(out, SavePushSeq):
            replica.cursors[out.peer] = (replica.cursors.get(out.peer, (None, None))[0], out.cursor)
        elif isinstance(out, Revocations):
            replica.revocations_heard.extend((out.peer, item) for item in out.items)
        else:
            ends.append(out)
    return sent, ends


Tamper = Callable[[str, int, tuple[Message, ...]], tuple[Message, ...]]


@dataclass
class PairResult:
    client: SessionSummary | None
    server: SessionSummary | None
    round_trips: int
    frames: list[tuple[str, tuple[Message, ...]]] = field(default_factory=list)
    wire_bytes: int = 0
    encodings: list[tuple[str, int]] = field(default_factory=list)  # (side, a frame's byte 0)

    @property
    def ok(self) -> bool:
        return (self.client is not None and self.client.outcome == "ok"
                and self.server is not None and self.server.outcome == "ok")


def sync_pair(client_replica: InMemoryReplica, server_replica: InMemoryReplica, *,
              drop_after: int | None = None, drop_response: bool = True, tamper: Tamper | None = None,
              delta_budget: int | None = None, revoked: Callable[[str], bool] = lambda _: False,
              now: float = 1_700_000_000.0, server_now: float | None = None) -> PairResult:
    """One session, client -> server, every frame through the real codec.

    ``drop_after=k`` cuts the connection at the k-th request: the server never sees it
    (``drop_response=False``) or its answer is lost (``drop_response=True``)."""
    budget = {} if delta_budget is None else {"delta_budget": delta_budget}
    client = ClientSession(client_replica.local(), os.urandom(32), is_revoked=revoked, **budget)
    server = ServerSession(server_replica.local(), os.urandom(32), CERT, is_revoked=revoked, **budget)
    s_now = now if server_now is None else server_now
    result = PairResult(None, None, 0)

    def end(ends: Sequence[Output], role: str) -> None:
        for e in ends:
            if isinstance(e, (Finished, Failed)):
                setattr(result, role, e.summary)

    request, ends = execute(client_replica, client, client.start(now))
    end(ends, "client")
    while request is not None:
        if tamper is not None:
            request = tamper("c", result.round_trips, request)
        wire = codec.encode(request, zstd=client.zstd_frames)
        result.wire_bytes += len(wire)
        result.frames.append(("c", request))
        result.encodings.append(("c", wire[0]))
        if result.server is not None:       # the server ended the session: HTTP 410 from now on
            if result.client is None:
                end(client.abort("the server no longer knows the session", now), "client")
            break
        if drop_after is not None and result.round_trips + 1 >= drop_after and not drop_response:
            end(client.abort("connection lost", now), "client")
            end(server.close(s_now), "server")
            return result
        response, s_ends = execute(server_replica, server, server.receive(codec.decode(wire), s_now))
        end(s_ends, "server")
        result.round_trips += 1
        if result.client is not None:      # the client already finished (its bye was answered)
            break
        response = response or ()
        if tamper is not None:
            response = tamper("s", result.round_trips, response)
        wire = codec.encode(response, zstd=server.zstd_frames)
        result.wire_bytes += len(wire)
        result.frames.append(("s", response))
        result.encodings.append(("s", wire[0]))
        if drop_after is not None and result.round_trips >= drop_after:
            end(client.abort("connection lost", now), "client")
            end(server.close(s_now), "server")
            return result
        request, ends = execute(client_replica, client, client.receive(codec.decode(wire), now, server_cert=CERT))
        end(ends, "client")
    if result.server is None:             # a no-op client never says bye: the server expires it
        end(server.close(s_now), "server")
    return result


def converge_check(replicas: Sequence[InMemoryReplica]) -> None:
    """Every replica holds the same raw logs and the same derived rows (for what each holds)."""
    first = replicas[0]
    for other in replicas[1:]:
        assert other.raw_json() == first.raw_json(), f"{other.name} raw logs differ from {first.name}"
        assert other.rows_json() == first.rows_json(), f"{other.name} derived rows differ from {first.name}"
