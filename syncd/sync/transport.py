"""The shell around ``protocol.py``: HTTPS between peers (aiohttp), and the store.

Server: ``make_peer_app`` serves ``POST /sync/v1``. Each request body is one frame; the
first request of a session (a hello) creates a ``ServerSession`` named by its hello nonce,
which the client sends back in ``X-Syncd-Session``. Guards, cheapest first: no facility
→ 503 ``no_facility`` on every route; a declared body over the frame limit → 413 before
reading a byte; a body that does not arrive within ``body_timeout`` → 408 and the
connection is closed (a stalled peer holds one coroutine, nothing else); a new session
beyond ``max_sessions`` (after expiring idle ones and closing quiescent no-op ones) → 503
``busy``. Undecodable frames fail the session with an ``error`` frame.

Client: ``PeerClient.sync(host, port)`` runs one ``ClientSession`` over a keep-alive
aiohttp session, reading the server certificate off the TLS connection so the proof
binds it, and returns a ``SyncReport``.

Both drive the protocol the same way (``execute``): run its outputs in order, answer its
requests from the ``SyncStore``, persist cursors through a ``PeerStateStore``. Both
sides speak for one daemon *instance* (``DeviceIdentity.instance_id``, random per start):
the server and the client of one daemon must share it, so that a daemon reaching its
own peer port is refused as itself while a clone of its state dir is synced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Literal, Protocol, Sequence, runtime_checkable

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncd.discovery.peers import Backoff
from syncd.errors import InvalidRecordError, RemoteProtocolError
from syncd.store.interface import StagedImport, Subscription, SyncStore
from syncd.sync import codec
from syncd.sync.membership import Facility
from syncd.sync.messages import DeviceId, Epoch, Error, Instance, Message, PeerCursor
from syncd.sync.protocol import (
    DELTA_BUDGET, ClientSession, Export, Failed, Finished, Import, Imported, LoadPeer, LocalDevice, NeedChanges,
    NeedVersions, Output, Refused, Revocations, SaveCursor, SavePushSeq, Send, ServerSession, SessionSummary,
)
from syncd.sync.tls import client_ssl_context, peer_certificate

log = logging.getLogger(__name__)

PATH = "/sync/v1"
SESSION_HEADER = "X-Syncd-Session"
CONTENT_TYPE = "application/x-syncd-frame"
FacilityProvider = Callable[[], Facility | None]
IsRevoked = Callable[[str], bool]


class DeviceIdentity(Protocol):
    """This device (``store.statedir.Identity`` fits)."""

    @property
    def device_id(self) -> str: ...

    @property
    def instance_id(self) -> str: ...

    @property
    def private_key(self) -> Ed25519PrivateKey: ...


@runtime_checkable
class PeerStateStore(Protocol):
    """Where a client keeps, per server device, its pull and push cursors (durably), each
    with the server instance it was made with (the protocol decides whether to use it)."""

    async def peer_cursors(self, device_id: str) -> tuple[PeerCursor | None, PeerCursor | None]: ...

    async def save_pull_cursor(self, device_id: str, cursor: PeerCursor) -> None: ...

    async def save_push_cursor(self, device_id: str, cursor: PeerCursor) -> None: ...


class MemoryPeerState:
    """Cursors in memory: resumes within one process only (tests; until the store has them)."""

    def __init__(self) -> None:
        self.cursors: dict[str, tuple[PeerCursor | None, PeerCursor | None]] = {}

    async def peer_cursors(self, device_id: str) -> tuple[PeerCursor | None, PeerCursor | None]:
        return self.cursors.get(device_id, (None, None))

    async def save_pull_cursor(self, device_id: str, cursor: PeerCursor) -> None:
        self.cursors[device_id] = (cursor, self.cursors.get(device_id, (None, None))[1])

    async def save_push_cursor(self, device_id: str, cursor: PeerCursor) -> None:
        self.cursors[device_id] = (self.cursors.get(device_id, (None, None))[0], cursor)


@dataclass(frozen=True)
class SyncReport:
    """One session as the scheduler, ``/peers`` and ``/status`` record it."""

    role: Literal["client", "server"]
    address: str
    peer: str | None
    outcome: Literal["ok", "failed"]
    reason: str
    partitions_in: tuple[str, ...]
    partitions_out: tuple[str, ...]
    records_in: int
    bytes_in: int                 # frame bytes received (HTTP bodies)
    bytes_out: int
    duration: float
    clock_skew: float | None
    full: bool
    full_reason: str
    summary: SessionSummary | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def _report(role: Literal["client", "server"], address: str, summary: SessionSummary | None, reason: str,
            bytes_in: int, bytes_out: int, duration: float) -> SyncReport:
    if summary is None:
        return SyncReport(role, address, None, "failed", reason, (), (), 0, bytes_in, bytes_out, duration,
                          None, False, "", None)
    return SyncReport(role, address, summary.peer, summary.outcome, summary.reason, summary.partitions_in,
                      summary.partitions_out, summary.records_in, bytes_in, bytes_out, duration,
                      summary.clock_skew, summary.full, summary.full_reason, summary)


OnRevocations = Callable[[str, tuple[bytes, ...]], Awaitable[None]]


class StagedImports:
    """The imports a session staged whose commits have not been seen to land (see the
    protocol's "Imports and acknowledgements"). A server waits for all of them before each
    answer; a client keeps them across its requests, reports each one that committed to
    its session (the next request acknowledges it), waits for the oldest only while more
    than ``MAX_UNCOMMITTED`` are pending (each holds its partition's rows until then), and
    for all of them before it saves a cursor or ends."""

    def __init__(self) -> None:
        self._items: list[StagedImport] = []

    def add(self, stage: StagedImport) -> None:
        self._items.append(stage)

    async def report(self, session: ClientSession, *, bound: int) -> None:
        """Tell ``session`` of every import that committed, waiting first for the oldest
        ones while more than ``bound`` are pending."""
        while len(self._items) > bound:
            await self._items[0].committed()
            self._report_done(session)
        self._report_done(session)

    def _report_done(self, session: ClientSession) -> None:
        done = [s for s in self._items if s.done.done()]
        if not done:
            return
        self._items = [s for s in self._items if not s.done.done()]
        for stage in done:
            stage.done.result()  # a failed commit raises here
        session.committed([s.result.partition for s in done])

    async def settle(self, session: ClientSession | ServerSession) -> None:
        """Wait for every pending import (and tell a client's session); the first failure
        is raised once all have settled."""
        waiting, self._items = self._items, []
        results = await asyncio.gather(*(s.committed() for s in waiting), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if isinstance(session, ClientSession) and waiting:
            session.committed([s.result.partition for s in waiting])


class PreparedExports:
    """Exports a server prepares while its client takes the current frame (the ones
    ``upcoming_exports`` names, up to a frame's worth of bytes), used when the session asks."""

    def __init__(self) -> None:
        self._ready: dict[tuple[str, bytes, bool], asyncio.Future[bytes]] = {}
        self._task: asyncio.Task[None] | None = None

    def prepare(self, store: SyncStore, exports: Sequence[Export], budget: int) -> None:
        if self._task is not None and not self._task.done():
            return  # (still preparing the last ones)
        wanted = [e for e in exports if (e.partition, e.their_vv, e.update_lists) not in self._ready]
        if wanted:
            self._task = asyncio.ensure_future(self._run(store, wanted, budget))

    async def _run(self, store: SyncStore, exports: Sequence[Export], budget: int) -> None:
        """Export ``exports`` in batches (each read in one go) until a frame's worth: the
        first of 4, the next sized by what the ones before weighed (a full sync's learners
        weigh a megabyte each, an incremental sync's a few hundred bytes)."""
        size = done = 0
        batch = 4
        while done < len(exports) and size < budget:
            some = exports[done:done + batch]
            done += len(some)
            futures = [asyncio.get_running_loop().create_future() for _ in some]
            for export, future in zip(some, futures):
                self._ready[(export.partition, export.their_vv, export.update_lists)] = future
            try:
                results = await store.export_missing_batch([(e.partition, e.their_vv, e.update_lists) for e in some])
            except Exception as exc:
                for future in futures:  # (raised again where the session asks for one)
                    if not future.done():
                        future.set_exception(exc)
                return
            for future, data in zip(futures, results):
                if not future.done():
                    future.set_result(data)
            size += sum(map(len, results))
            weight = max(1, size // done)
            batch = max(1, min(64, (budget - size) // weight))

    async def take(self, store: SyncStore, export: Export) -> bytes:
        """The data of ``export``: prepared, or exported now."""
        future = self._ready.pop((export.partition, export.their_vv, export.update_lists), None)
        if future is not None:
            return await future
        return await store.export_missing(export.partition, export.their_vv, update_lists=export.update_lists)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for future in self._ready.values():
            if future.done() and not future.cancelled():
                future.exception()  # (seen: no one asks for it now)
            future.cancel()
        self._ready.clear()


# How many of a client's imports may be pending (staged, their commit not seen) while it
# asks for more: enough that the writer commits one frame's partitions while the next
# frame is fetched and checked.
MAX_UNCOMMITTED = 4
# How many of the next exports a server prepares at most (and a frame's worth of bytes).
PREPARED_EXPORTS = 64


async def execute(session: ClientSession | ServerSession, outputs: list[Output], store: SyncStore,
                  peers: PeerStateStore | None, on_revocations: OnRevocations | None = None, *,
                  staged: StagedImports | None = None, exports: PreparedExports | None = None,
                  ) -> tuple[tuple[Message, ...] | None, list[Finished | Failed]]:
    """Run ``outputs`` in order, feeding request results back, until the session has a
    frame to send (returned) or has ended. Store errors other than a refused chunk
    propagate: the caller aborts the session.

    A frame's chunks are staged together (``stage_imports``): the store checks one while
    the chunks before it commit (commits queued together share one transaction), and the
    session hears of them all at once. Their commits are awaited as ``StagedImports``
    says; a client passes the one it keeps for its session (otherwise every commit is
    awaited before anything leaves this function). ``exports``: the ones a server
    prepared."""
    queue: deque[Output] = deque(outputs)
    frame: tuple[Message, ...] | None = None
    ends: list[Finished | Failed] = []
    kept = staged is not None and isinstance(session, ClientSession)
    staged = staged if staged is not None else StagedImports()
    while queue:
        out = queue.popleft()
        if isinstance(out, Send) and kept:
            assert isinstance(session, ClientSession)
            await staged.report(session, bound=MAX_UNCOMMITTED)
        elif isinstance(out, (Send, SaveCursor, SavePushSeq, Finished, Failed)):
            await staged.settle(session)
        if isinstance(out, Send):
            frame = out.messages
        elif isinstance(out, LoadPeer):
            assert peers is not None
            queue.extend(session.peer_loaded(*(await peers.peer_cursors(out.peer))))
        elif isinstance(out, NeedChanges):
            queue.extend(session.changes_ready(*(await store.changes_since(out.since, out.subscription))))
        elif isinstance(out, NeedVersions):
            queue.extend(session.versions_ready(await store.version_vectors(out.partitions)))
        elif isinstance(out, Export):
            data = await (exports or PreparedExports()).take(store, out)
            queue.extend(session.export_ready(out.partition, data))
        elif isinstance(out, Import):
            outcomes: list[Imported | Refused] = []
            for (partition, _), outcome in zip(out.chunks, await store.stage_imports(
                    out.chunks, source=session.peer or "?")):
                if isinstance(outcome, InvalidRecordError):  # the peer's fault: refused, logged, backed off
                    log.warning("refused a chunk of %s from peer %s: %s", partition, (session.peer or "?")[:12],
                                outcome)
                    outcomes.append(Refused(partition, str(outcome) or type(outcome).__name__))
                else:
                    staged.add(outcome)
                    result = outcome.result
                    outcomes.append(Imported(partition, result.changed, result.pending, result.records))
            queue.extend(session.imports_done(outcomes))
        elif isinstance(out, SaveCursor):
            assert peers is not None
            await peers.save_pull_cursor(out.peer, out.cursor)
        elif isinstance(out, SavePushSeq):
            assert peers is not None
            await peers.save_push_cursor(out.peer, out.cursor)
        elif isinstance(out, Revocations):
            if on_revocations is not None:
                await on_revocations(out.peer, out.items)
        else:
            ends.append(out)
    if not kept or ends:
        await staged.settle(session)
    return frame, ends


def _ends(outputs: list[Output]) -> list[Finished | Failed]:
    return [o for o in outputs if isinstance(o, (Finished, Failed))]


def _log_end(report: SyncReport) -> None:
    peer = (report.peer or "?")[:12]
    if report.outcome == "ok":
        log.info("sync %s %s (%s): ok, %d in / %d out partitions, %d records, %d/%d bytes, %.3fs%s",
                 report.role, peer, report.address, len(report.partitions_in), len(report.partitions_out),
                 report.records_in, report.bytes_in, report.bytes_out, report.duration,
                 f"; full exchange: {report.full_reason}" if report.full_reason else "")
    else:
        log.warning("sync %s %s (%s) failed: %s", report.role, peer, report.address, report.reason)
    if report.clock_skew is not None and abs(report.clock_skew) > 300:
        log.warning("clock of peer %s is %+.0f s off ours", peer, report.clock_skew)


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or RemoteProtocolError once it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise RemoteProtocolError(f"body over {limit} bytes", status_hint=413)
        chunks.append(chunk)


# --- server -------------------------------------------------------------------------------

@dataclass
class _Entry:
    session: ServerSession
    address: str
    started: float
    last_used: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    bytes_in: int = 0
    bytes_out: int = 0
    exports: PreparedExports = field(default_factory=lambda: PreparedExports())


@dataclass
class PeerServerConfig:
    max_sessions: int = 16
    session_idle: float = 30.0          # seconds without a request before a session ends
    body_timeout: float = 10.0          # seconds for a request body to arrive
    request_timeout: float = 120.0      # seconds to answer once the body is in
    max_body: int = codec.MAX_FRAME
    delta_budget: int = DELTA_BUDGET
    proof_deadline: float = 5.0         # seconds from hello to a valid proof
    # How long a member whose chunk we refused is turned away: 5 min, doubling with each
    # refusal in a row, up to an hour (no jitter: nothing here runs in lockstep).
    refused_backoff: Backoff = Backoff(base=300.0, factor=2.0, cap=3600.0, jitter=0.0)


class PeerServer:
    """The state behind ``POST /sync/v1``: live server sessions, keyed by session id."""

    def __init__(self, store: SyncStore, identity: DeviceIdentity, facility_provider: FacilityProvider,
                 certificate: bytes, subscription: Subscription, is_revoked: IsRevoked,
                 config: PeerServerConfig, on_session: Callable[[SyncReport], None] | None,
                 clock: Callable[[], float], entropy: Callable[[int], bytes]) -> None:
        self.store, self.identity, self.facility_provider = store, identity, facility_provider
        # Set by the daemon: the revocations we pass on, and where the peer's go.
        self.revocations: tuple[bytes, ...] = ()
        self.on_revocations: OnRevocations | None = None
        self.certificate, self.subscription, self.is_revoked = certificate, subscription, is_revoked
        self.config, self.on_session, self.clock, self.entropy = config, on_session, clock, entropy
        self.sessions: dict[str, _Entry] = {}
        # Members whose chunk we refused: device id -> (turned away until, refusals in a row).
        # A refusal is the member's fault (it sent what no honest peer writes) and would
        # happen again at once: its sessions are turned away after the hello until then.
        self.backoff: dict[str, tuple[float, int]] = {}

    def _back_off(self, device: str) -> None:
        count = self.backoff.get(device, (0.0, 0))[1] + 1
        delay = self.config.refused_backoff.nominal(count)
        self.backoff[device] = (self.clock() + delay, count)
        log.warning("turning peer %s away for %.0f s: it sent a chunk we refused", device[:12], delay)

    def _backed_off(self, device: str | None) -> float | None:
        """Seconds a device is still turned away for, or None."""
        until = self.backoff.get(device, (0.0, 0))[0] if device is not None else 0.0
        left = until - self.clock()
        return left if left > 0 else None

    def _end(self, key: str, entry: _Entry, ends: list[Finished | Failed]) -> None:
        self.sessions.pop(key, None)
        entry.exports.close()
        for end in ends:
            if isinstance(end, Failed) and end.code == "refused" and end.summary.peer is not None:
                self._back_off(end.summary.peer)  # (a chunk is only imported after the proofs)
            elif isinstance(end, Finished) and end.summary.peer is not None:
                self.backoff.pop(end.summary.peer, None)
            report = _report("server", entry.address, end.summary, end.summary.reason, entry.bytes_in,
                             entry.bytes_out, self.clock() - entry.started)
            _log_end(report)
            if self.on_session is not None:
                self.on_session(report)

    def sweep(self, *, make_room: bool = False) -> None:
        """End idle sessions and sessions that did not prove membership within
        ``proof_deadline`` (a hello needs no secret: anyone could fill the table with
        them); with ``make_room``, also unproven then quiescent ones (a no-op client never
        says bye), oldest first, until one slot is free."""
        now = self.clock()
        by_age = sorted(self.sessions.items(), key=lambda kv: (kv[1].session.proven, kv[1].last_used))
        for key, entry in by_age:
            if entry.lock.locked():
                continue
            idle = now - entry.last_used > self.config.session_idle
            unproven = not entry.session.proven
            late = unproven and now - entry.started > self.config.proof_deadline
            full = make_room and len(self.sessions) >= self.config.max_sessions
            if idle or late or (full and (unproven or entry.session.quiescent)):
                if unproven:
                    log.info("dropped an unproven sync session from %s", entry.address)
                self._end(key, entry, _ends(entry.session.close(now)))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        if request.content_length is not None and request.content_length > cfg.max_body:
            log.warning("peer %s declared an oversized %d-byte frame (limit %d): refused unread",
                        request.remote, request.content_length, cfg.max_body)
            return await _hang_up(request, 413, "too_large", f"frame over {cfg.max_body} bytes")
        try:
            async with asyncio.timeout(cfg.body_timeout):
                body = await _read_capped(request.content, cfg.max_body)
        except TimeoutError:
            log.warning("peer %s stalled mid-body: cut off after %.1fs", request.remote, cfg.body_timeout)
            return await _hang_up(request, 408, "timeout", "the body did not arrive in time")
        except RemoteProtocolError as exc:
            log.warning("peer %s streamed an oversized frame: %s", request.remote, exc.detail)
            return await _hang_up(request, 413, "too_large", exc.detail)
        except (ConnectionResetError, aiohttp.ClientPayloadError, aiohttp.http_exceptions.HttpProcessingError) as exc:
            # The peer went away mid-upload (switched off, cable pulled): end its session
            # now rather than holding a slot until the idle sweep.
            key = request.headers.get(SESSION_HEADER)
            entry = self.sessions.get(key) if key else None
            log.warning("peer %s went away mid-request: %s", request.remote, type(exc).__name__)
            if key is not None and entry is not None and not entry.lock.locked():
                self._end(key, entry, _ends(entry.session.abort("the peer went away mid-request", self.clock())))
            raise web.HTTPBadRequest(reason="connection lost") from None
        key = request.headers.get(SESSION_HEADER)
        if key is None:
            return await self._open(request, body)
        entry = self.sessions.get(key)
        if entry is None:
            return _refuse(410, "unknown_session", "no such session (expired or ended)")
        if entry.lock.locked():
            return _refuse(409, "busy_session", "one request at a time per session")
        async with entry.lock:
            entry.last_used = self.clock()
            entry.bytes_in += len(body)
            return await self._step(key, entry, body)

    async def _open(self, request: web.Request, body: bytes) -> web.StreamResponse:
        facility = self.facility_provider()
        if facility is None:
            return _refuse(503, "no_facility", "this device belongs to no facility", close=True)
        self.sweep(make_room=len(self.sessions) >= self.config.max_sessions)
        if len(self.sessions) >= self.config.max_sessions:
            log.warning("refused a sync session from %s: %d sessions running", request.remote, len(self.sessions))
            return _refuse(503, "busy", "too many sync sessions; retry later", headers={"Retry-After": "5"})

        me = LocalDevice(DeviceId(self.identity.device_id), Epoch(self.store.epoch), facility, self.subscription,
                         revocations=self.revocations, instance=Instance(self.identity.instance_id))
        session = ServerSession(me, self.entropy(32), self.certificate, is_revoked=self.is_revoked,
                                delta_budget=self.config.delta_budget)
        now = self.clock()
        entry = _Entry(session, str(request.remote), now, now, bytes_in=len(body))
        self.sessions[session.session_id] = entry
        async with entry.lock:
            return await self._step(session.session_id, entry, body, headers={SESSION_HEADER: session.session_id})

    async def _step(self, key: str, entry: _Entry, body: bytes, headers: dict[str, str] | None = None
                    ) -> web.StreamResponse:
        session, status = entry.session, 200
        try:
            messages = codec.decode(body)
        except RemoteProtocolError as exc:
            outputs = session.abort(f"undecodable frame: {exc.detail}", self.clock(), tell_peer=False)
            outputs = [Send((Error("protocol", exc.detail),))] + outputs
            status = 400
            messages = None
        try:
            async with asyncio.timeout(self.config.request_timeout):
                if messages is not None:
                    outputs = session.receive(messages, self.clock())
                    left = self._backed_off(session.peer)
                    if left is not None and not session.proven:  # (its hello: nothing done yet)
                        log.info("turned peer %s away: %.0f s of its backoff left", (session.peer or "?")[:12], left)
                        outputs = session.abort(f"backed off for {left:.0f} s more after a refused chunk",
                                                self.clock(), tell_peer=True)
                # (the exports this request starts, prepared together: one read for many)
                entry.exports.prepare(self.store, session.upcoming_exports(PREPARED_EXPORTS),
                                      self.config.delta_budget)
                frame, ends = await execute(session, outputs, self.store, None, self.on_revocations,
                                            exports=entry.exports)
        except Exception as exc:   # the store failed (or a bug): end the session, tell the peer
            log.exception("sync session with %s failed locally", (session.peer or "?")[:12])
            outputs = session.abort(f"local failure: {type(exc).__name__}: {exc}", self.clock(), tell_peer=True)
            frame, ends = await execute(session, outputs, self.store, None, self.on_revocations)
            status = 503
        data = codec.encode(frame or (), zstd=session.zstd_frames)
        entry.bytes_out += len(data)
        if ends:
            self._end(key, entry, ends)
        else:  # what the next answers will send, prepared while the client takes this one
            entry.exports.prepare(self.store, session.upcoming_exports(PREPARED_EXPORTS), self.config.delta_budget)
        return web.Response(body=data, status=status, headers=headers, content_type=CONTENT_TYPE)

    async def close_all(self) -> None:
        now = self.clock()
        for key, entry in list(self.sessions.items()):
            self._end(key, entry, _ends(entry.session.close(now)))


def _refuse(status: int, code: str, detail: str, *, close: bool = False,
            headers: dict[str, str] | None = None) -> web.Response:
    response = web.json_response({"error": code, "detail": detail}, status=status, headers=headers)
    if close:
        response.force_close()
    return response


async def _hang_up(request: web.Request, status: int, code: str, detail: str) -> web.StreamResponse:
    """Answer, then close the connection at once: no lingering to drain a body we refuse
    (aiohttp would otherwise read and discard it for up to 10 s)."""
    response = _refuse(status, code, detail, close=True)
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


PEER_SERVER = web.AppKey("syncd_peer_server", PeerServer)
FACILITY_PROVIDER: web.AppKey[FacilityProvider] = web.AppKey("syncd_facility_provider")


def make_peer_app(
    store: SyncStore,
    identity: DeviceIdentity,
    facility_provider: FacilityProvider,
    *,
    certificate: bytes,
    subscription: Subscription = "all",
    is_revoked: IsRevoked = lambda _: False,
    config: PeerServerConfig | None = None,
    on_session: Callable[[SyncReport], None] | None = None,
    routes: Iterable[web.AbstractRouteDef] = (),
    clock: Callable[[], float] = time.time,
    entropy: Callable[[int], bytes] = os.urandom,
) -> web.Application:
    """The peer port's app: ``POST /sync/v1`` plus ``routes`` (the daemon adds the join
    endpoint here, or later with ``app.add_routes`` before the runner starts). Serve it
    with ``web.TCPSite(..., ssl_context=tls.server_ssl_context(...))``; ``certificate``
    is that context's certificate (DER), bound into every proof. With no facility
    (``facility_provider()`` is None) every route answers 503 ``no_facility``."""
    server = PeerServer(store, identity, facility_provider, certificate, subscription, is_revoked,
                         config or PeerServerConfig(), on_session, clock, entropy)

    @web.middleware
    async def facility_gate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
        if facility_provider() is None:
            return _refuse(503, "no_facility", "this device belongs to no facility", close=True)
        return await handler(request)

    async def sweeper(app: web.Application) -> Any:
        async def loop() -> None:
            while True:
                await asyncio.sleep(max(1.0, server.config.session_idle / 4))
                server.sweep()

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        await server.close_all()

    app = web.Application(middlewares=[facility_gate], client_max_size=server.config.max_body)
    app[PEER_SERVER] = server
    app[FACILITY_PROVIDER] = facility_provider
    app.router.add_post(PATH, server.handle)
    app.add_routes(list(routes))
    app.cleanup_ctx.append(sweeper)
    return app


# --- client -------------------------------------------------------------------------------

class CertifiedResponse(aiohttp.ClientResponse):
    """A response that remembers the certificate of the connection it came on (aiohttp
    releases a connection as soon as a small body is read, so ask while it is held)."""

    peer_certificate: bytes | None = None

    async def start(self, connection: Any) -> "aiohttp.ClientResponse":
        transport = getattr(connection, "transport", None)
        if transport is not None:
            self.peer_certificate = peer_certificate(transport.get_extra_info("ssl_object"))
        return await super().start(connection)


class PeerClient:
    """Runs client sessions against peers over one keep-alive aiohttp session.

    ``async with PeerClient(store, identity, facility_provider) as client:
    report = await client.sync(host, port)``."""

    def __init__(
        self,
        store: SyncStore,
        identity: DeviceIdentity,
        facility_provider: FacilityProvider,
        *,
        subscription: Subscription = "all",
        peer_state: PeerStateStore | None = None,
        is_revoked: IsRevoked = lambda _: False,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        delta_budget: int = DELTA_BUDGET,
        clock: Callable[[], float] = time.time,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.store, self.identity, self.facility_provider = store, identity, facility_provider
        # Set by the daemon: the revocations we pass on, and where the peer's go.
        self.revocations: tuple[bytes, ...] = ()
        self.on_revocations: OnRevocations | None = None
        self.subscription, self.is_revoked, self.delta_budget = subscription, is_revoked, delta_budget
        if peer_state is None:
            peer_state = store if isinstance(store, PeerStateStore) else MemoryPeerState()
        self.peer_state: PeerStateStore = peer_state
        self.clock, self.entropy = clock, entropy
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout, sock_read=timeout)
        self._ssl = ssl_context or client_ssl_context()
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "PeerClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=8, keepalive_timeout=30)
            self._http = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                               response_class=CertifiedResponse)
        return self._http

    async def sync(self, host: str, port: int) -> SyncReport:
        """One session with the peer at ``host:port``: pull, then push. Never raises for
        the peer's faults or the network's: the report says what happened."""
        address, started = f"{host}:{port}", self.clock()
        facility = self.facility_provider()
        if facility is None:
            return _report("client", address, None, "this device belongs to no facility", 0, 0, 0.0)
        me = LocalDevice(DeviceId(self.identity.device_id), Epoch(self.store.epoch), facility, self.subscription,
                         self.identity.private_key, self.revocations, instance=Instance(self.identity.instance_id))
        session = ClientSession(me, self.entropy(32), is_revoked=self.is_revoked, delta_budget=self.delta_budget)
        url = f"https://{host}:{port}{PATH}"
        counts = [0, 0]          # bytes in, bytes out
        staged = StagedImports()  # the imports of one answer commit while the next is fetched
        frame, ends = await execute(session, session.start(self.clock()), self.store, self.peer_state, self.on_revocations)
        session_id: str | None = None
        while frame is not None:
            body = codec.encode(frame, zstd=session.zstd_frames)
            counts[1] += len(body)
            try:
                status, data, cert, sid = await self._post(url, body, session_id)
            except (aiohttp.ClientError, TimeoutError, RemoteProtocolError, OSError) as exc:
                ends = ends or _ends(session.abort(f"connection: {type(exc).__name__}: {exc}", self.clock()))
                break
            counts[0] += len(data)
            if ends:             # that was the bye (or our error): the session is already over
                break
            session_id = session_id or sid
            try:
                if status not in (200, 400, 503):
                    raise RemoteProtocolError(f"HTTP {status}: {data[:200].decode(errors='replace')}")
                messages = codec.decode(data)
            except RemoteProtocolError as exc:
                if status != 200:
                    detail = f"HTTP {status}: {data[:200].decode(errors='replace')}"
                else:
                    detail = exc.detail
                ends = _ends(session.abort(f"bad answer from the peer: {detail}", self.clock()))
                break
            try:
                outputs = session.receive(messages, self.clock(), server_cert=cert)
                frame, ends = await execute(session, outputs, self.store, self.peer_state, self.on_revocations,
                                            staged=staged)
            except Exception as exc:
                log.exception("sync with %s failed locally", address)
                outputs = session.abort(f"local failure: {type(exc).__name__}: {exc}", self.clock(), tell_peer=True)
                frame, ends = await execute(session, outputs, self.store, self.peer_state, self.on_revocations)
        try:  # (the session ended early: what it staged still commits)
            await staged.settle(session)
        except Exception as exc:
            log.error("imports from %s could not be stored: %s", address, exc)
        summary = ends[-1].summary if ends else None
        report = _report("client", address, summary, summary.reason if summary else "no outcome",
                         counts[0], counts[1], self.clock() - started)
        _log_end(report)
        return report

    async def _post(self, url: str, body: bytes, session_id: str | None) -> tuple[int, bytes, bytes | None, str | None]:
        headers = {"Content-Type": CONTENT_TYPE}
        if session_id is not None:
            headers[SESSION_HEADER] = session_id
        async with self._session().post(url, data=body, headers=headers) as resp:
            cert = resp.peer_certificate if isinstance(resp, CertifiedResponse) else None
            if resp.content_length is not None and resp.content_length > codec.MAX_FRAME:
                raise RemoteProtocolError("response over the frame limit")
            data = await _read_capped(resp.content, codec.MAX_FRAME)
            return resp.status, data, cert, resp.headers.get(SESSION_HEADER)
