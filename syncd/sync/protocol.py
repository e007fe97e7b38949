"""The sync session as two sans-I/O state machines (h11/h2 style): no sockets, no store,
no clock, no randomness. Time, nonces and the certificate are inputs.

Theory of operation
-------------------
A session is a few request/response round trips, the client (initiator) always speaking
first (docs/sync.md "Session")::

    client                                              server
    [hello_c]                               ──────►     check version, device id, tag
                                            ◄──────     [hello_s]
    check; LoadPeer → cursors (used only if made
    with the instance this hello names)
    [proof_c, sub_c(sealed, pull cursor)]   ──────►     check proof, key, signature,
                                                        revocation; NeedChanges(since)
                                            ◄──────     [proof_s, sub_s, changes_s]
    check proof_s; NeedVersions → want
    [want_c]                                ──────►     Export… (≤ delta budget)
                                            ◄──────     [delta_s…]
    Import each finished partition; more rounds [ack_c] ⇄ [delta_s…] until all arrived;
    SaveCursor; NeedChanges(push cursor) → offer (what the server lacks, within sub_s)
    [ack_c, offer_c]                        ──────►     NeedVersions → want_s
                                            ◄──────     [want_s]
    [delta_c…]                              ──────►     Import each; [ack_s]
    … until every wanted partition is acked; SavePushSeq
    [ack_c, bye]                            ──────►     Finished
                                            ◄──────     []

Pull then push, so what the client just pulled is not offered back (its version is
covered by what the server listed). A no-op sync (nothing to want, nothing to offer)
ends after the second round trip: two POSTs.

Instances and clones
--------------------
Every hello carries the sender's *instance*, random per daemon start. A hello with our
device id and our instance is ourselves (refused, ``own_device``); our device id with
another instance is a *clone* (a state dir copied with its key, device id and epoch, as
a tablet image that includes /etc/machine-id): it proves itself like any member, syncs
normally, and the summary says ``clone`` so the shell can warn. Clones share a device id
and an epoch but their change feeds diverge, so a cursor says something only about the
instance it was made with: the client keeps each cursor with the server's instance
(``PeerCursor``) and uses it only with that instance; any other (a clone, or the same
device after a restart) gets a full exchange of version vectors, which is correct and
cheap.

Driving a session (the shell's recipe)
-------------------------------------
Call ``start(now)`` (client) or ``receive(frame, now)`` and execute the returned outputs
**in order**. ``Send`` is the frame to transmit (the next request, or the response);
``SaveCursor``/``SavePushSeq`` must be made durable; ``Finished``/``Failed`` end the
session. A request (``LoadPeer``, ``NeedChanges``, ``NeedVersions``, ``Export``,
``Import``) is always the last output of a batch: answer it with the matching method
(``peer_loaded``, ``changes_ready``, ``versions_ready``, ``export_ready``,
``imports_done``), which returns the next batch. ``abort`` ends a
session for a local reason (store failure, lost connection, timeout).

Imports and acknowledgements: a server acknowledges the deltas of a request in its
answer, so its shell makes the imports durable before it sends that answer. A client's
acknowledgements only inform the server, so its shell may send its next request while the
imports of the last answer still commit (the next frame is fetched and checked meanwhile):
it reports each committed partition with ``committed``, which the next request
acknowledges, and makes every import durable before ``SaveCursor``. ``upcoming_exports``
names what the next frames will export, so a server's shell may prepare them while the
client takes the current one.

Every state change goes through ``_CLIENT_TABLE`` / ``_SERVER_TABLE``: which handler runs
for a (state, frame kind), and the next states it may move to. A peer that breaks the contract gets an
``error`` and the session fails: nothing it sent after the failure is used.
"""

from __future__ import annotations

import hashlib
from collections import deque
from itertools import islice
from dataclasses import KW_ONLY, dataclass
from enum import Enum
from typing import Any, Callable, Generator, Iterable, Literal, Mapping, Sequence, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncd.errors import LocalProtocolError, RemoteProtocolError
from syncd.logs.partitions import anon_partition
from syncd.sync import auth
from syncd.sync.membership import Facility
from syncd.sync.messages import (
    Ack, Bye, Changes, Cursor, Delta, DeviceId, Epoch, Error, Hello, Instance, Message, Offer, PeerCursor, Proof,
    Sub, Subscription, Want, decode_vv, in_subscription, vv_covers,
)

# 2: hellos carry the sender's instance (clone detection). 3: a delta's data may be a list
# of update blobs (``store.documents.pack_updates``): a partition's stored update rows, sent
# as they are, so the sender needs no document in memory to answer an incremental sync.
# 4: large frames are zstd-compressed (``codec``), not zlib.
PROTOCOL_VERSION = 4
MIN_VERSION = 2
UPDATE_LISTS_SINCE = 3
ZSTD_FRAMES_SINCE = 4
DELTA_BUDGET = 4 * 2**20         # delta bytes per frame; the codec caps a frame at 8 MiB
MAX_DELTAS_PER_FRAME = 2_000
MAX_ASSEMBLY = 64 * 2**20        # one partition's pieces held before import
EMPTY_VV = b"\x00"               # Loro's encoding of the empty version vector
Role = Literal["client", "server"]


def scope_hash(epoch: str, subscription: Subscription) -> str:
    """What a cursor is valid for on the receiving side: its epoch (a restored receiver
    lost what it had pulled) and its subscription (a wider one needs a full exchange)."""
    ids = b"all" if subscription == "all" else b",".join(u.encode() for u in sorted(subscription))
    return hashlib.sha256(b"syncd-scope-v1" + epoch.encode() + b"\0" + ids).hexdigest()[:32]


@dataclass(frozen=True)
class LocalDevice:
    """What a session knows of its own device."""

    device_id: DeviceId
    epoch: Epoch
    facility: Facility
    subscription: Subscription
    key: Ed25519PrivateKey | None = None   # the client signs with it
    revocations: tuple[bytes, ...] = ()    # the signed revocations this device knows
    _: KW_ONLY
    instance: Instance                     # this start of the daemon (random per start)


@dataclass(frozen=True)
class SessionSummary:
    role: Role
    peer: DeviceId | None
    peer_public_key: bytes | None
    outcome: Literal["ok", "failed"]
    reason: str
    partitions_in: tuple[str, ...]        # imported (and changed something)
    partitions_out: tuple[str, ...]       # sent a non-empty delta for
    records_in: int
    delta_bytes_in: int
    delta_bytes_out: int
    full: bool                            # a full exchange of versions (not from a cursor)
    full_reason: str
    clock_skew: float | None              # peer clock minus ours, seconds
    started: float
    ended: float
    peer_instance: Instance | None = None # the instance the peer's hello named
    clone: bool = False                   # the peer proved our own device key from another instance


# --- outputs ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class LoadPeer:
    """Answer with ``peer_loaded(pull, push)``: the ``PeerCursor``s last saved for ``peer``
    (None, None for a new peer), whatever instance they were saved with."""
    peer: DeviceId


@dataclass(frozen=True)
class NeedChanges:
    """Answer with ``changes_ready(*await store.changes_since(since, subscription))``."""
    since: int
    subscription: Subscription


@dataclass(frozen=True)
class NeedVersions:
    """Answer with ``versions_ready(await store.version_vectors(partitions))``."""
    partitions: tuple[str, ...]


@dataclass(frozen=True)
class Export:
    """Answer with ``export_ready(partition, await store.export_missing(partition, their_vv,
    update_lists=update_lists))``: ``update_lists`` when the peer reads lists of blobs."""
    partition: str
    their_vv: bytes
    update_lists: bool = False


@dataclass(frozen=True)
class Import:
    """Import (check, validate, commit) every partition's chunk, in order (the partitions
    a frame completed); answer ``imports_done`` with an ``Imported`` for each, or, where
    one is refused, ``Imported`` for those before it and its ``Refused`` last."""
    chunks: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Imported:
    """A chunk the store took (``changed``: something new; ``pending``: it waits for
    changes not received yet; ``records``: raw records it created or extended)."""
    partition: str
    changed: bool
    pending: bool
    records: int


@dataclass(frozen=True)
class Refused:
    """A chunk the store refused, and why (the peer's fault: the session fails)."""
    partition: str
    reason: str


@dataclass(frozen=True)
class SaveCursor:
    """Persist (replacing the last one for ``peer``): the next pull from ``peer`` starts at
    ``cursor.cursor`` if ``peer`` still runs ``cursor.instance``."""
    peer: DeviceId
    cursor: PeerCursor


@dataclass(frozen=True)
class SavePushSeq:
    """Persist (replacing the last one for ``peer``): the next push to ``peer`` offers our
    changes after ``cursor.cursor.seq`` if ``peer`` still runs ``cursor.instance``."""
    peer: DeviceId
    cursor: PeerCursor


@dataclass(frozen=True)
class Finished:
    summary: SessionSummary


@dataclass(frozen=True)
class Failed:
    reason: str
    summary: SessionSummary
    code: str | None = None  # the error code told the peer (None: a local reason)


@dataclass(frozen=True)
class Revocations:
    """The proven peer's signed revocations: verify each, keep the good ones (no answer)."""
    peer: DeviceId
    items: tuple[bytes, ...]


Request = Union[LoadPeer, NeedChanges, NeedVersions, Export, Import]
Output = Union[Send, LoadPeer, NeedChanges, NeedVersions, Export, Import, SaveCursor, SavePushSeq, Revocations,
               Finished, Failed]
_REQUESTS = (LoadPeer, NeedChanges, NeedVersions, Export, Import)
Step = Generator[Output, Any, list[Output]]


class _Fail(Exception):
    """Raised inside a handler: the session fails with ``code`` sent to the peer."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class State(Enum):
    IDLE = "idle"
    AWAIT_HELLO = "await_hello"
    AWAIT_PROOF = "await_proof"
    PULLING = "pulling"          # client: waiting for the deltas it wanted
    OFFERED = "offered"          # client: waiting for the server's want
    PUSHING = "pushing"          # client: sending deltas, waiting for acks
    SERVING = "serving"          # server: proven; answering work frames
    DONE = "done"
    FAILED = "failed"


class Kind(Enum):
    HELLO = "hello"              # [hello]
    PROOF = "proof"              # from a client [proof, sub]; from a server [proof, sub, changes]
    WORK = "work"                # want/ack/offer/delta/bye in that order
    ERROR = "error"              # [error]
    EMPTY = "empty"              # [] (the answer to bye)


def _kind(frame: Sequence[Message], proof_shape: list[type]) -> Kind:
    types = [type(m) for m in frame]
    if not frame:
        return Kind.EMPTY
    if Error in types:
        return Kind.ERROR
    if types == [Hello]:
        return Kind.HELLO
    if types == proof_shape:
        return Kind.PROOF
    return Kind.WORK


S = State
# (state, frame kind) -> (handler, allowed next states). Kind.ERROR fails from any state.
_CLIENT_TABLE: dict[tuple[State, Kind], tuple[str, frozenset[State]]] = {
    (S.AWAIT_HELLO, Kind.HELLO): ("_on_hello", frozenset({S.AWAIT_PROOF})),
    (S.AWAIT_PROOF, Kind.PROOF): ("_on_proof", frozenset({S.PULLING, S.OFFERED, S.DONE})),
    (S.PULLING, Kind.WORK): ("_on_deltas", frozenset({S.PULLING, S.OFFERED, S.DONE})),
    (S.OFFERED, Kind.WORK): ("_on_want", frozenset({S.PUSHING, S.DONE})),
    (S.PUSHING, Kind.WORK): ("_on_acks", frozenset({S.PUSHING, S.DONE})),
    (S.DONE, Kind.EMPTY): ("_on_nothing", frozenset({S.DONE})),
}
_SERVER_TABLE: dict[tuple[State, Kind], tuple[str, frozenset[State]]] = {
    (S.AWAIT_HELLO, Kind.HELLO): ("_on_hello", frozenset({S.AWAIT_PROOF})),
    (S.AWAIT_PROOF, Kind.PROOF): ("_on_proof", frozenset({S.SERVING})),
    (S.SERVING, Kind.WORK): ("_on_work", frozenset({S.SERVING, S.DONE})),
}
_WORK_ORDER = {Want: 0, Ack: 1, Offer: 2, Delta: 3, Bye: 4}


class _Inbox:
    """Reassembles the delta pieces of the partitions we asked for."""

    def __init__(self) -> None:
        self.expected: set[str] = set()
        self.done: set[str] = set()
        self._parts: dict[str, list[bytes]] = {}
        self._sizes: dict[str, int] = {}

    def add(self, d: Delta) -> bytes | None:
        """The whole data of ``d.partition`` once its last piece is in, else None."""
        p = d.partition
        if p not in self.expected or p in self.done:
            raise _Fail("protocol", f"a delta for {p}, which was not asked for (or already complete)")
        if not d.data and not d.last:   # every round must make progress
            raise _Fail("protocol", f"an empty piece of {p} that is not the last")
        self._sizes[p] = self._sizes.get(p, 0) + len(d.data)
        if self._sizes[p] > MAX_ASSEMBLY:
            raise _Fail("protocol", f"delta for {p} is over {MAX_ASSEMBLY} bytes")
        self._parts.setdefault(p, []).append(d.data)
        if not d.last:
            return None
        self.done.add(p)
        del self._sizes[p]
        return b"".join(self._parts.pop(p))

    @property
    def complete(self) -> bool:
        return self.expected <= self.done


class _Session:
    """What both roles share: the driver, failure, the delta outbox, the summary."""

    role: Role
    _table: dict[tuple[State, Kind], tuple[str, frozenset[State]]]
    _proof_shape: list[type]            # what the peer's proof frame looks like

    def __init__(self, me: LocalDevice, nonce: bytes, *, is_revoked: Callable[[str], bool],
                 delta_budget: int) -> None:
        if len(nonce) != 32:
            raise LocalProtocolError("a session nonce is 32 random bytes")
        if delta_budget < 1:
            raise LocalProtocolError("the delta budget is a positive number of bytes")
        self.me, self.nonce = me, nonce
        self.state = State.IDLE
        self.peer: DeviceId | None = None
        self.peer_instance: Instance | None = None
        self.peer_version = 0  # the protocol version of the peer's hello
        self._clone = False
        self._is_revoked, self._budget = is_revoked, delta_budget
        self._gen: Step | None = None
        self._pending: Request | None = None
        self._allowed: frozenset[State] = frozenset()
        self._transcript = b""
        self._inbox = _Inbox()
        self._outq: deque[tuple[str, bytes]] = deque()
        self._current: tuple[str, bytes, int] | None = None
        self._sent: set[str] = set()
        self._peer_key: bytes | None = None
        self._incomplete: set[str] = set()       # imported but still missing dependencies
        self._acks_due: list[str] = []
        self._in: list[str] = []
        self._out: list[str] = []
        self._records = self._bytes_in = self._bytes_out = 0
        self._full, self._full_reason = False, ""
        self._skew: float | None = None
        self._started = self._now = 0.0

    @property
    def agreed_version(self) -> int:
        """The protocol both sides speak: the lower of ours and the peer's hello (0
        before the hello)."""
        return min(self.peer_version, PROTOCOL_VERSION)

    @property
    def zstd_frames(self) -> bool:
        """Whether this session's frames may be zstd-compressed (the peer's hello said a
        protocol that reads them; before it, frames are small and go plain)."""
        return self.agreed_version >= ZSTD_FRAMES_SINCE

    @property
    def _update_lists(self) -> bool:
        """Whether an export may be a list of stored update blobs (protocol 3)."""
        return self.agreed_version >= UPDATE_LISTS_SINCE

    # --- the driver ------------------------------------------------------------------
    def receive(self, frame: Sequence[Message], now: float) -> list[Output]:
        """Feed one decoded frame from the peer; returns the outputs to execute."""
        if self._pending is not None:
            raise LocalProtocolError(f"answer {type(self._pending).__name__} before feeding a frame")
        if self.state is State.FAILED or (self.state is State.DONE and frame):
            raise LocalProtocolError(f"session is {self.state.name}")
        self._now = now
        kind = _kind(frame, self._proof_shape)
        if kind is Kind.ERROR:
            err = next(m for m in frame if isinstance(m, Error))
            return self._failed(f"peer refused: {err.code}: {err.detail}")
        entry = self._table.get((self.state, kind))
        if entry is None:
            return self._failed(f"unexpected {kind.name} frame in state {self.state.name}", code="protocol")
        name, self._allowed = entry
        return self._run(getattr(self, name)(frame))

    def _run(self, step: Step) -> list[Output]:
        self._gen = step
        return self._resume(None)

    def _resume(self, value: Any) -> list[Output]:
        assert self._gen is not None
        outputs: list[Output] = []
        try:
            while True:
                out = self._gen.send(value)
                value = None
                outputs.append(out)
                if isinstance(out, _REQUESTS):
                    self._pending = out
                    return outputs
        except StopIteration as stop:
            self._gen, self._pending = None, None
            return outputs + list(stop.value)
        except _Fail as fail:
            self._gen, self._pending = None, None
            return outputs + self._failed(fail.reason, code=fail.code)
        except RemoteProtocolError as exc:
            self._gen, self._pending = None, None
            return outputs + self._failed(exc.detail, code="protocol")

    def _answer(self, kind: type, value: Any) -> list[Output]:
        if not isinstance(self._pending, kind):
            raise LocalProtocolError(f"no {kind.__name__} request is pending")
        self._pending = None
        return self._resume(value)

    def _goto(self, state: State) -> None:
        if state not in self._allowed:
            raise LocalProtocolError(f"{self.role}: {self.state.name} -> {state.name} is not in the table")
        self.state = state

    # --- answers from the shell ----------------------------------------------------------
    def peer_loaded(self, pull: PeerCursor | None, push: PeerCursor | None) -> list[Output]:
        return self._answer(LoadPeer, (pull, push))

    def changes_ready(self, feed_seq: int, vvs: Mapping[str, bytes]) -> list[Output]:
        return self._answer(NeedChanges, (feed_seq, dict(vvs)))

    def versions_ready(self, vvs: Mapping[str, bytes]) -> list[Output]:
        return self._answer(NeedVersions, dict(vvs))

    def export_ready(self, partition: str, data: bytes) -> list[Output]:
        if isinstance(self._pending, Export) and self._pending.partition != partition:
            raise LocalProtocolError(f"export of {partition} answered for {self._pending.partition}")
        return self._answer(Export, data)

    def imports_done(self, outcomes: Sequence[Imported | Refused]) -> list[Output]:
        pending = self._pending
        if isinstance(pending, Import):
            named = [o.partition for o in outcomes]
            asked = [partition for partition, _ in pending.chunks]
            refused_early = bool(outcomes) and isinstance(outcomes[-1], Refused)
            if named != asked[:len(named)] or (len(named) != len(asked) and not refused_early) or any(
                    isinstance(o, Refused) for o in outcomes[:-1]):
                raise LocalProtocolError("imports_done must answer every chunk in order, up to a refused one")
        return self._answer(Import, tuple(outcomes))

    def upcoming_exports(self, limit: int) -> list[Export]:
        """The exports the next frames will ask for, in order, at most ``limit`` (the shell
        may prepare them while the peer takes this frame: no state changes)."""
        return [Export(partition, vv, self._update_lists) for partition, vv in islice(self._outq, limit)]

    def abort(self, reason: str, now: float, *, tell_peer: bool = False) -> list[Output]:
        """End the session for a local reason; ``tell_peer`` adds an ``error`` to send."""
        self._now, self._gen, self._pending = now, None, None
        if self.state in (State.DONE, State.FAILED):
            return []
        return self._failed(reason, code="unavailable" if tell_peer else None)

    # --- shared steps -----------------------------------------------------------------
    def _failed(self, reason: str, code: str | None = None) -> list[Output]:
        self.state = State.FAILED
        out: list[Output] = [Send((Error(code, reason[:1000]),))] if code else []
        return out + [Failed(reason, self.summary(reason), code)]

    def _check_hello(self, hello: Hello) -> None:
        if hello.version < MIN_VERSION or min(hello.version, PROTOCOL_VERSION) < hello.min_version:
            raise _Fail("version", f"protocol version {hello.version} (min {hello.min_version}) is not "
                                   f"compatible with ours {PROTOCOL_VERSION} (min {MIN_VERSION})")
        if hello.instance is None:
            raise _Fail("protocol", "the hello carries no instance")
        if hello.device == self.me.device_id and hello.instance == self.me.instance:
            raise _Fail("own_device", "the peer's hello carries our own device id and instance: "
                                      "this is ourselves")
        if hello.tag != self.me.facility.tag:
            raise _Fail("facility", "the peer belongs to another facility (tag mismatch)")
        self.peer, self.peer_instance, self.peer_version = hello.device, hello.instance, hello.version

    def _proven(self) -> None:
        """The peer's proof verified: a peer with our device id is now a proven clone."""
        assert self.peer is not None
        self._clone = self.peer == self.me.device_id

    def _hello(self, now: float) -> Hello:
        return Hello(PROTOCOL_VERSION, MIN_VERSION, self.me.device_id, self.me.facility.tag, self.nonce,
                     now, self.me.epoch, self.me.instance)

    def _import(self, deltas: Sequence[Delta]) -> Generator[Output, Any, list[str]]:
        """Take a frame's delta pieces; import the partitions they complete, all in one
        request; return those partitions (committed, to acknowledge)."""
        complete: list[str] = []
        chunks: list[tuple[str, bytes]] = []
        for delta in deltas:
            self._bytes_in += len(delta.data)
            data = self._inbox.add(delta)
            if data is None:
                continue
            complete.append(delta.partition)
            if data:
                chunks.append((delta.partition, data))
        if chunks:
            outcomes: tuple[Imported | Refused, ...] = yield Import(tuple(chunks))
            for outcome in outcomes:
                if isinstance(outcome, Refused):
                    raise _Fail("refused", f"chunk for {outcome.partition} refused: {outcome.reason}")
                if outcome.changed:
                    self._in.append(outcome.partition)
                self._records += outcome.records
                if outcome.pending:
                    self._incomplete.add(outcome.partition)
        return complete

    def _fill(self) -> Generator[Output, Any, list[Delta]]:
        """Delta pieces from the export queue, at most ``delta_budget`` bytes."""
        out: list[Delta] = []
        used = 0
        while (self._outq or self._current) and used < self._budget and len(out) < MAX_DELTAS_PER_FRAME:
            if self._current is None:
                partition, vv = self._outq.popleft()
                self._current = (partition, (yield Export(partition, vv, self._update_lists)), 0)
            partition, data, offset = self._current
            piece = data[offset:offset + self._budget - used]
            offset += len(piece)
            used += len(piece)
            last = offset >= len(data)
            out.append(Delta(partition, piece, last))
            self._current = None if last else (partition, data, offset)
            if last:
                self._sent.add(partition)
                if data:
                    self._out.append(partition)
        self._bytes_out += used
        return out

    def summary(self, reason: str = "") -> SessionSummary:
        return SessionSummary(
            self.role, self.peer, self._peer_key, "failed" if self.state is State.FAILED else "ok", reason,
            tuple(self._in), tuple(self._out), self._records, self._bytes_in, self._bytes_out,
            self._full, self._full_reason, self._skew, self._started, self._now, self.peer_instance, self._clone)


def _work_order(frame: Sequence[Message]) -> None:
    ranks = [_WORK_ORDER.get(type(m), -1) for m in frame]
    if -1 in ranks or ranks != sorted(ranks) or any(ranks.count(r) > 1 for r in (0, 1, 2, 4)):
        raise _Fail("protocol", "a work frame is [want?, ack?, offer?, delta*, bye?]")


def receives(partition: str, device: str, subscription: Subscription) -> bool:
    """May ``partition`` go to ``device``? Its subscription (``anon:*`` only to "all"),
    plus its own anonymous partition, which it holds whatever it subscribes to: a device
    restored from an old backup gets its own anonymous logs back from its peers."""
    return in_subscription(partition, subscription) or partition == anon_partition(device)


def _check_partitions(partitions: Iterable[str], device: str, subscription: Subscription, what: str) -> None:
    for p in partitions:
        if not receives(p, device, subscription):
            raise _Fail("protocol", f"{what} {p}, outside the subscription")


def _is_empty(vv: bytes) -> bool:
    return not decode_vv(vv)


def lacking(ours: Mapping[str, bytes], theirs: Mapping[str, bytes]) -> dict[str, bytes]:
    """{partition: our vv} for every partition of ``theirs`` holding ops we lack."""
    return {p: ours.get(p, EMPTY_VV) for p, vv in theirs.items() if not vv_covers(ours.get(p, EMPTY_VV), vv)}


class ClientSession(_Session):
    """The initiator: pulls what it lacks from the server, then pushes what the server lacks."""

    role: Role = "client"
    _table = _CLIENT_TABLE
    _proof_shape = [Proof, Sub, Changes]

    def __init__(self, me: LocalDevice, nonce: bytes, *, is_revoked: Callable[[str], bool] = lambda _: False,
                 delta_budget: int = DELTA_BUDGET) -> None:
        super().__init__(me, nonce, is_revoked=is_revoked, delta_budget=delta_budget)
        if me.key is None:
            raise LocalProtocolError("a client session signs with the device key")
        self._key: Ed25519PrivateKey = me.key
        self._cert: bytes | None = None
        self._hello_c: Hello | None = None
        self._server_hello: Hello | None = None
        self._server_sub: Subscription = frozenset()
        self._server_vvs: dict[str, bytes] = {}
        self._new_cursor: Cursor | None = None
        self._push_cursor: Cursor | None = None
        self._push_mark: Cursor | None = None
        self._stale_cursors = False       # cursors were kept, but for another instance of the server
        self._offered: dict[str, bytes] = {}
        self._awaiting_acks: set[str] = set()
        self._acked: set[str] = set()

    def committed(self, partitions: Sequence[str]) -> None:
        """The shell's word that these imported partitions are durable: the next request
        acknowledges them. (A client may ask for more before its imports commit; it saves
        no cursor before they all have.)"""
        self._acks_due.extend(partitions)

    def start(self, now: float) -> list[Output]:
        """The first request: ``[hello_c]``."""
        if self.state is not State.IDLE:
            raise LocalProtocolError("a client session starts once")
        self._started = self._now = now
        self._hello_c = self._hello(now)
        self.state = State.AWAIT_HELLO
        return [Send((self._hello_c,))]

    def receive(self, frame: Sequence[Message], now: float, server_cert: bytes | None = None) -> list[Output]:
        """As ``_Session.receive``; ``server_cert`` (DER, as observed on the TLS
        connection) is required with the server's hello and must never change after."""
        if server_cert is not None and self._cert is not None and server_cert != self._cert:
            self._now = now
            return self._failed("the server certificate changed during the session")
        if server_cert is not None:
            self._cert = server_cert
        return super().receive(frame, now)

    def _secret(self) -> bytes:
        return self.me.facility.secret

    def _usable(self, kept: PeerCursor | None) -> Cursor | None:
        """A kept cursor, if it was made with the instance the server runs now."""
        return kept.cursor if kept is not None and kept.instance == self.peer_instance else None

    def _on_hello(self, frame: Sequence[Message]) -> Step:
        hello = frame[0]
        assert isinstance(hello, Hello) and self._hello_c is not None
        if self._cert is None:
            raise LocalProtocolError("pass server_cert with the frame holding the server's hello")
        self._check_hello(hello)
        self._skew = hello.clock - (self._started + self._now) / 2
        self._server_hello = hello
        self._transcript = auth.transcript(self._hello_c, hello)
        kept_pull, kept_push = yield LoadPeer(hello.device)
        pull, self._push_cursor = self._usable(kept_pull), self._usable(kept_push)
        if any(kept is not None and kept.instance != hello.instance for kept in (kept_pull, kept_push)):
            self._stale_cursors = True
        t, cert = self._transcript, self._cert
        proof = Proof(auth.proof_mac(self._secret(), "client", t, cert), auth.client_signature(self._key, t, cert),
                      auth.public_bytes(self._key))
        sub = Sub(None, auth.seal_subscription(self._secret(), t, cert, self.me.subscription), pull,
                  self.me.revocations)
        self._goto(State.AWAIT_PROOF)
        return [Send((proof, sub))]

    def _on_proof(self, frame: Sequence[Message]) -> Step:
        proof, sub, changes = frame
        assert isinstance(proof, Proof) and isinstance(sub, Sub) and isinstance(changes, Changes)
        assert self._cert is not None and self.peer is not None
        if proof.sig is not None or proof.pub is not None or not auth.verify_mac(
                self._secret(), "server", self._transcript, self._cert, proof.mac):
            raise _Fail("auth", "the server's proof does not verify")
        self._proven()
        if self._is_revoked(self.peer):
            raise _Fail("revoked", "the server's device has been revoked from the facility")
        if sub.subscription is None:
            raise _Fail("protocol", "the server's subscription comes in the clear")
        if sub.revocations:
            yield Revocations(self.peer, sub.revocations)
        _check_partitions(changes.vvs, self.me.device_id, self.me.subscription, "the server listed")
        self._server_sub, self._server_vvs, self._new_cursor = sub.subscription, dict(changes.vvs), changes.cursor
        self._full = changes.full
        if self._stale_cursors:
            self._full_reason = ("our cursors for this device were made with another instance of it "
                                 "(it restarted, or it is a clone)")
        elif changes.full:
            self._full_reason = "the server answered with every partition"
        want: dict[str, bytes] = {}
        if changes.vvs:
            want = lacking((yield NeedVersions(tuple(changes.vvs))), changes.vvs)
        if want:
            self._inbox.expected = set(want)
            self._goto(State.PULLING)
            return [Send((Want(want),))]
        return (yield from self._pulled())

    def _on_deltas(self, frame: Sequence[Message]) -> Step:
        if not frame or not all(isinstance(m, Delta) for m in frame):
            raise _Fail("protocol", "while pulling, a response is one or more deltas")
        yield from self._import([d for d in frame if isinstance(d, Delta)])  # (acked once committed)
        if not self._inbox.complete:
            self._goto(State.PULLING)
            return [Send(self._ack())]
        return (yield from self._pulled())

    def _pulled(self) -> Step:
        """Everything wanted is committed: save the pull cursor, then offer what we changed."""
        assert self.peer is not None and self._new_cursor is not None and self._server_hello is not None
        assert self.peer_instance is not None
        if self._incomplete:
            self._full_reason = f"cursor kept: {sorted(self._incomplete)[0]} misses dependencies"
        else:
            yield SaveCursor(self.peer, PeerCursor(self._new_cursor, self.peer_instance))
        scope = scope_hash(self._server_hello.epoch, self._server_sub)
        push = self._push_cursor
        since = push.seq if push is not None and push.epoch == self.me.epoch and push.sub_hash == scope else 0
        feed, local = yield NeedChanges(since, self._server_sub)
        self._push_mark = Cursor(self.me.epoch, feed, scope)
        own_anon = anon_partition(self.peer)
        if since == 0 and self._server_sub != "all" and own_anon not in local:
            local.update((p, vv) for p, vv in (yield NeedVersions((own_anon,))).items() if not _is_empty(vv))
        # Never offer outside the server's subscription; never offer back what it just listed.
        offer = {p: vv for p, vv in local.items()
                 if receives(p, self.peer, self._server_sub) and not vv_covers(self._server_vvs.get(p, EMPTY_VV), vv)}
        if not offer:
            return (yield from self._pushed())
        self._offered = offer
        self._goto(State.OFFERED)
        return [Send(self._ack() + (Offer(offer),))]

    def _on_want(self, frame: Sequence[Message]) -> Step:
        want = frame[0] if len(frame) == 1 else None
        if not isinstance(want, Want):
            raise _Fail("protocol", "the answer to an offer is [want]")
        if not set(want.vvs) <= set(self._offered):
            raise _Fail("protocol", "the server wants partitions we did not offer")
        self._awaiting_acks = set(want.vvs)
        if not want.vvs:
            return (yield from self._pushed())
        self._outq.extend(want.vvs.items())
        deltas = yield from self._fill()
        self._goto(State.PUSHING)
        return [Send(tuple(deltas))]

    def _on_acks(self, frame: Sequence[Message]) -> Step:
        ack = frame[0] if len(frame) == 1 else None
        if not isinstance(ack, Ack):
            raise _Fail("protocol", "the answer to deltas is [ack]")
        if not set(ack.partitions) <= self._sent:
            raise _Fail("protocol", "the server acknowledged a partition we did not send")
        self._acked |= set(ack.partitions)
        if self._outq or self._current is not None:
            deltas = yield from self._fill()
            self._goto(State.PUSHING)
            return [Send(tuple(deltas))]
        missing = self._awaiting_acks - self._acked
        if missing:
            raise _Fail("protocol", f"the server did not acknowledge {sorted(missing)[0]}")
        return (yield from self._pushed())

    def _pushed(self) -> Step:
        """Every offered partition is acked (or was not wanted): advance the push cursor, bye."""
        assert self.peer is not None and self._push_mark is not None and self.peer_instance is not None
        yield SavePushSeq(self.peer, PeerCursor(self._push_mark, self.peer_instance))
        two_round_trips = self.state is State.AWAIT_PROOF
        self._goto(State.DONE)
        if two_round_trips:   # the no-op sync: nothing more on the wire
            return [Finished(self.summary())]
        return [Send(self._ack() + (Bye(),)), Finished(self.summary())]

    def _on_nothing(self, frame: Sequence[Message]) -> Step:
        self._goto(State.DONE)
        yield from ()
        return []

    def _ack(self) -> tuple[Message, ...]:
        acks, self._acks_due = tuple(self._acks_due), []
        return (Ack(acks),)


class ServerSession(_Session):
    """The responder: proves itself after the client, lists changes, serves wants, takes pushes."""

    role: Role = "server"
    _table = _SERVER_TABLE
    _proof_shape = [Proof, Sub]

    def __init__(self, me: LocalDevice, nonce: bytes, certificate: bytes, *,
                 is_revoked: Callable[[str], bool] = lambda _: False, delta_budget: int = DELTA_BUDGET) -> None:
        super().__init__(me, nonce, is_revoked=is_revoked, delta_budget=delta_budget)
        self._cert = certificate
        self._client_hello: Hello | None = None
        self._client_sub: Subscription = frozenset()
        self._want_seen = self._offer_seen = False
        self.state = State.AWAIT_HELLO

    @property
    def session_id(self) -> str:
        """The name the client sends back in ``X-Syncd-Session``: our hello nonce."""
        return self.nonce.hex()

    @property
    def proven(self) -> bool:
        """The client proved membership (the session got past AWAIT_PROOF)."""
        return self.state in (State.SERVING, State.DONE)

    @property
    def quiescent(self) -> bool:
        """Nothing in flight: closing now loses nothing (a no-op client never says bye)."""
        return (self.state is State.SERVING and self._inbox.complete and not self._outq
                and self._current is None)

    def close(self, now: float) -> list[Output]:
        """End the session without a bye (expiry, eviction, shutdown): SERVING -> DONE if
        quiescent, otherwise it failed."""
        self._now = now
        if self.state in (State.DONE, State.FAILED):
            return []
        if self.quiescent:
            self.state = State.DONE
            return [Finished(self.summary())]
        return self._failed("the session ended before it completed")

    def _on_hello(self, frame: Sequence[Message]) -> Step:
        hello = frame[0]
        assert isinstance(hello, Hello)
        self._started = self._now
        self._check_hello(hello)
        self._skew = hello.clock - self._now
        mine = self._hello(self._now)
        self._client_hello = hello
        self._transcript = auth.transcript(hello, mine)
        self._goto(State.AWAIT_PROOF)
        yield from ()
        return [Send((mine,))]

    def _on_proof(self, frame: Sequence[Message]) -> Step:
        proof, sub = frame
        assert isinstance(proof, Proof) and isinstance(sub, Sub) and self.peer and self._client_hello
        secret, t, cert = self.me.facility.secret, self._transcript, self._cert
        if not auth.verify_mac(secret, "client", t, cert, proof.mac):
            raise _Fail("auth", "the client's proof does not verify")
        if proof.sig is None or proof.pub is None:
            raise _Fail("auth", "the client's proof lacks its public key and signature")
        why = auth.verify_client_key(proof.pub, self.peer, proof.sig, t, cert)
        if why:
            raise _Fail("auth", why)
        self._peer_key = proof.pub
        self._proven()
        if self._is_revoked(self.peer):
            raise _Fail("revoked", "this device has been revoked from the facility")
        if sub.sealed is None:
            raise _Fail("protocol", "the client's subscription must be sealed")
        self._client_sub = auth.open_subscription(secret, t, cert, sub.sealed)
        if sub.revocations:
            yield Revocations(self.peer, sub.revocations)
        scope = scope_hash(self._client_hello.epoch, self._client_sub)
        since, self._full_reason = self._since(sub.cursor, scope)
        feed, vvs = yield NeedChanges(since, self._client_sub)
        if since > feed:
            since, self._full_reason = 0, "the cursor is ahead of our change feed"
            feed, vvs = yield NeedChanges(0, self._client_sub)
        self._full = bool(self._full_reason)  # a valid cursor at 0 is not a full exchange
        own_anon = anon_partition(self.peer)
        if self._full and self._client_sub != "all" and own_anon not in vvs:
            vvs.update((p, vv) for p, vv in (yield NeedVersions((own_anon,))).items() if not _is_empty(vv))
        listed = {p: vv for p, vv in vvs.items() if receives(p, self.peer, self._client_sub)}
        self._goto(State.SERVING)
        changes = Changes(listed, Cursor(self.me.epoch, feed, scope), self._full)
        served_sub = Sub(self.me.subscription, revocations=self.me.revocations)
        return [Send((Proof(auth.proof_mac(secret, "server", t, cert)), served_sub, changes))]

    def _since(self, cursor: Cursor | None, scope: str) -> tuple[int, str]:
        """Where the client's cursor lets us start, and why not from there (full exchange)."""
        if cursor is None:
            return 0, "no cursor: first sync with this peer (or its cursor was for another instance of ours)"
        if cursor.epoch != self.me.epoch:
            return 0, f"the cursor is for epoch {cursor.epoch}, ours is {self.me.epoch}"
        if cursor.sub_hash != scope:
            return 0, "the peer's subscription or epoch changed"
        return cursor.seq, ""

    def _on_work(self, frame: Sequence[Message]) -> Step:
        assert self.peer is not None
        _work_order(frame)
        want_s: dict[str, bytes] | None = None
        closing = False
        deltas = [m for m in frame if isinstance(m, Delta)]
        for m in frame:
            if isinstance(m, Want):
                if self._want_seen:
                    raise _Fail("protocol", "a second want")
                self._want_seen = True
                _check_partitions(m.vvs, self.peer, self._client_sub, "a want for")
                self._outq.extend(m.vvs.items())
            elif isinstance(m, Offer):
                if self._offer_seen:
                    raise _Fail("protocol", "a second offer")
                self._offer_seen = True
                _check_partitions(m.vvs, self.me.device_id, self.me.subscription, "an offer of")
                ours = (yield NeedVersions(tuple(m.vvs))) if m.vvs else {}
                want_s = lacking(ours, m.vvs)
                self._inbox.expected |= set(want_s)
            elif isinstance(m, Bye):
                closing = True
        if deltas:  # (after the offer, before the bye: the order of a work frame)
            self._acks_due.extend((yield from self._import(deltas)))
        if closing:
            self._goto(State.DONE)
            return [Send(()), Finished(self.summary())]
        reply: list[Message] = []
        if deltas:
            reply.append(Ack(tuple(self._acks_due)))
            self._acks_due = []
        reply.extend((yield from self._fill()))
        if want_s is not None:
            reply.append(Want(want_s))
        self._goto(State.SERVING)
        return [Send(tuple(reply))]


__all__ = [
    "ClientSession", "ServerSession", "LocalDevice", "PeerCursor", "SessionSummary", "State", "Kind", "Send", "LoadPeer",
    "NeedChanges", "NeedVersions", "Export", "Import", "Imported", "Refused", "SaveCursor", "SavePushSeq", "Finished", "Failed",
    "Output", "Request", "scope_hash", "lacking", "receives", "PROTOCOL_VERSION", "MIN_VERSION", "ZSTD_FRAMES_SINCE", "DELTA_BUDGET", "EMPTY_VV",
]
