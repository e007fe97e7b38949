"""SyncService: peer sync as one unit the daemon starts and stops.

It owns the peer port (HTTPS: ``POST /sync/v1`` and the join endpoint), the client that
syncs with others, the peer table, mDNS discovery and the scheduler, and keeps them in
step with the facility (no facility: nothing is served or synced; joining or creating
one re-advertises the tag, refolds with the facility's dataset id and syncs soon).

Start order: peer port (so its bound port is known) → scheduler → discovery (zeroconf's
name probing takes about a second; the API is already answering by then).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
import time
from collections import deque
from dataclasses import asdict
from typing import Any

from aiohttp import web

from syncd.api.facility import FacilityService
from syncd.config import Settings
from syncd.discovery.mdns import Discovery
from syncd.discovery.peers import PeerAddress, PeerTable
from syncd.store import facility as facility_db
from syncd.store.peer_state import SqlitePeerState
from syncd.store.sqlite import SqliteStore
from syncd.sync.connections import ConnectionGuard
from syncd.sync.join import JOIN_PATH
from syncd.sync.membership import Facility, MembershipError, decode_revocation, encode_revocation
from syncd.sync.scheduler import Scheduler, SyncPlan
from syncd.sync.tls import load_or_create_certificate, server_ssl_context
from syncd.logs.partitions import USER_PREFIX
from syncd.sync.transport import PEER_SERVER, PeerClient, SyncReport, make_peer_app

log = logging.getLogger(__name__)

SKEW_WARNING = 300.0  # seconds (DESIGN §5)


class SyncService:
    def __init__(self, store: SqliteStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.facility = FacilityService(
            read=store.run_read, write=store.run_write,
            device_id=store.device_id, device_key=store.identity.private_key,
            find_inviters=self.find_inviters, on_change=self.facility_changed,
            on_revoke=lambda _revocation: self.refresh_revocations(),
        )
        self.table = PeerTable(settings.sync.peers, now=time.monotonic())
        self.sync_port: int | None = None
        self.sessions: deque[SyncReport] = deque(maxlen=200)
        # The held set (DESIGN §1): the subscription plus every learner written or pulled
        # here; what this device asks peers for and relays.
        self._configured: frozenset[str] | None = (
            None if settings.sync.subscription == "all" else frozenset(settings.sync.subscription)
        )
        self._held: set[str] = set(self._configured or ())
        self._revoked: frozenset[str] = frozenset()
        self._clones: set[str] = set()       # instances of our own device id that proved themselves
        self._revocation_blobs: tuple[bytes, ...] = ()
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._client: PeerClient | None = None
        self._scheduler: Scheduler[SyncReport] | None = None
        self._scheduler_task: asyncio.Task[None] | None = None
        self._discovery: Discovery | None = None
        self._unsubscribe: Any = None

    # --- facility ------------------------------------------------------------------
    def _current(self) -> Facility | None:
        return self.facility.current

    def tag(self) -> str | None:
        current = self.facility.current
        return current.tag if current is not None else None

    def is_revoked(self, device_id: str) -> bool:
        return device_id in self._revoked

    async def refresh_revocations(self) -> None:
        """Reload the revoked set and the signed revocations we pass on to every peer."""
        current = self.facility.current

        def gather(conn: sqlite3.Connection) -> tuple[frozenset[str], tuple[bytes, ...]]:
            revs = facility_db.revocations(conn, current.facility_id) if current is not None else []
            return facility_db.revoked_ids(conn), tuple(encode_revocation(r) for r in revs)

        self._revoked, blobs = await self.store.run_read(gather)
        if self._client is not None:
            self._client.revocations = blobs
        if self._runner is not None:
            self._runner.app[PEER_SERVER].revocations = blobs
        self._revocation_blobs = blobs

    async def take_revocations(self, peer: str, items: tuple[bytes, ...]) -> None:
        """A proven peer's revocations (DESIGN §7): keep each one that verifies and was
        signed by that peer or by a device this one knows; others are logged and dropped."""
        current = self.facility.current
        if current is None:
            return
        good = []
        for item in items:
            try:
                revocation = decode_revocation(item, current.facility_id)
            except MembershipError as exc:
                log.warning("dropped a revocation from peer %s: %s", peer[:12], exc)
                continue
            good.append(revocation)

        def keep(conn: sqlite3.Connection) -> int:
            known = {row.device_id for row in facility_db.devices(conn)} | {peer, self.store.device_id}
            kept = 0
            for revocation in good:
                if revocation.by_device not in known:
                    log.warning("dropped a revocation of %s signed by unknown device %s",
                                revocation.device_id[:12], revocation.by_device[:12])
                elif facility_db.add_revocation(conn, revocation):
                    kept += 1
            return kept

        if not good:
            return
        kept: int = await self.store.run_write(keep)
        if kept:
            log.warning("learned of %d revoked device(s) from peer %s", kept, peer[:12])
            await self.refresh_revocations()

    async def facility_changed(self, facility: Facility) -> None:
        """Created or joined: adopt its dataset id (refold), advertise, sync soon."""
        await self.store.set_dataset(facility.dataset_id)
        await self.refresh_revocations()
        if self._discovery is not None:
            await self._discovery.update(tag=facility.tag)
        if self._scheduler is not None:
            self._scheduler.poke()

    async def find_inviters(self) -> list[tuple[str, int]]:
        """Everyone advertising syncd (any tag) and the static peers: a joiner does not
        know the facility's tag yet."""
        return [(a.host, a.port) for a in self.table.joinable(time.monotonic())]

    # --- the held set ----------------------------------------------------------------
    def subscription(self) -> Any:
        return "all" if self._configured is None else frozenset(self._held)

    def _hold(self, user_id: str) -> None:
        if self._configured is None or user_id in self._held:
            return
        self._held.add(user_id)
        held = self.subscription()
        if self._client is not None:
            self._client.subscription = held
        if self._runner is not None:
            self._runner.app[PEER_SERVER].subscription = held

    async def ensure_held(self, user_id: str, timeout: float = 0.3) -> None:
        """Before a start for a learner this device does not hold, pull that learner from
        a reachable peer (bounded wait, DESIGN §6); offline, go ahead on what is here."""
        if self._configured is None or user_id in self._held or self._scheduler is None:
            return
        self._hold(user_id)
        pull = asyncio.ensure_future(self._scheduler.sync_now())
        try:
            await asyncio.wait_for(asyncio.shield(pull), timeout)
        except asyncio.TimeoutError:
            log.info("pull of learner %s before a start is still running; starting on what is here", user_id[:8])

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        current = await self.facility.load()
        if current is not None and self.store.dataset_id != current.dataset_id:
            await self.store.set_dataset(current.dataset_id)  # e.g. a crash between join and refold
        await self.refresh_revocations()
        for partition in await self.store.partitions():
            if partition.startswith(USER_PREFIX):
                self._held.add(partition[len(USER_PREFIX):])
        identity = self.store.identity
        state_dir = self.settings.device.state_dir
        certificate = load_or_create_certificate(state_dir, identity.private_key)
        peer_app = make_peer_app(
            self.store, identity, self._current,
            certificate=certificate,
            subscription=self.subscription(),
            is_revoked=self.is_revoked,
            on_session=self._record,
            routes=[web.post(JOIN_PATH, self.facility.join_handler())],
        )
        self._runner = web.AppRunner(peer_app, access_log=None, handle_signals=False, keepalive_timeout=30)
        await self._runner.setup()
        assert self._runner.server is not None
        self._server = await asyncio.get_running_loop().create_server(
            ConnectionGuard(self._runner.server), host="0.0.0.0", port=self.settings.sync.port,
            ssl=server_ssl_context(state_dir, identity.private_key), reuse_address=True,
        )
        self.sync_port = int(self._server.sockets[0].getsockname()[1])
        peer_server = self._runner.app[PEER_SERVER]
        peer_server.revocations, peer_server.on_revocations = self._revocation_blobs, self.take_revocations
        self._client = PeerClient(
            self.store, identity, self._current,
            subscription=self.subscription(),
            peer_state=SqlitePeerState(self.store.run_read, self.store.run_write),
            is_revoked=self.is_revoked,
        )
        self._client.revocations, self._client.on_revocations = self._revocation_blobs, self.take_revocations
        self._scheduler = Scheduler(
            table=self.table, tag=self.tag, run_session=self._sync_one,
            plan=SyncPlan(interval=self.settings.sync.interval),
            max_sessions=self.settings.sync.max_sessions, clock=time.monotonic,
        )
        self._unsubscribe = self.store.subscribe(lambda partition, _seq: self._changed(partition))
        self._scheduler_task = asyncio.ensure_future(self._scheduler.run())

    async def start_discovery(self) -> None:
        """mDNS, after the daemon reported ready (it takes a second or so); a failure
        leaves static peers working."""
        if not self.settings.discovery.enabled or self.sync_port is None:
            return
        interfaces = list(self.settings.discovery.interfaces) or None
        discovery = Discovery(self.table, port=self.sync_port, tag=self.tag(), interfaces=interfaces)
        # Known before it starts: the API already answers, and a facility created or
        # joined during the second of start-up must reach the advert (facility_changed
        # calls update(), which start() honours whether it comes before or during the
        # registration); set only after start(), that tag was lost until the next restart.
        self._discovery = discovery
        try:
            await discovery.start()
        except BaseException as exc:
            self._discovery = None
            if not isinstance(exc, OSError):
                raise
            log.warning("mDNS discovery is off (%s); static peers still sync", exc)
            return
        self.table.add_listener(lambda _event: self._scheduler.poke() if self._scheduler else None)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._scheduler_task is not None:
            self._scheduler_task.cancel()
            await asyncio.gather(self._scheduler_task, return_exceptions=True)
        if self._scheduler is not None:
            await self._scheduler.close()
        if self._discovery is not None:
            await self._discovery.stop()
        if self._client is not None:
            await self._client.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- syncing ---------------------------------------------------------------------
    def _changed(self, partition: str) -> None:
        if partition.startswith(USER_PREFIX):
            self._hold(partition[len(USER_PREFIX):])
        if self._scheduler is not None:
            self._scheduler.local_change()

    async def _sync_one(self, address: PeerAddress) -> SyncReport:
        assert self._client is not None
        report = await self._client.sync(address.host, address.port)
        self._record(report)
        return report

    async def sync_now(self, peer: str | None = None) -> list[dict[str, Any]]:
        """Sync one peer (``host:port``) or every candidate now; the session reports."""
        if self._scheduler is None:
            return []
        target = PeerAddress.parse(peer) if peer else None
        outcomes = await self._scheduler.sync_now(target)
        return [report_view(r) for r in outcomes if r is not None]

    def _record(self, report: SyncReport) -> None:
        """Every finished session, both roles: history, device keys, skew and clone warnings."""
        self.sessions.append(report)
        summary = report.summary
        if summary is not None and summary.clone and summary.peer_instance not in self._clones:
            self._clones.add(str(summary.peer_instance))
            log.warning(
                "CLONED STATE DIR: the peer at %s proved itself with THIS device's key (device id %s) from "
                "another instance (%s; ours is %s): a copy of this state dir (%s) runs there with the same "
                "identity, e.g. from a tablet image that includes /etc/machine-id. Syncing with it normally, "
                "but the two share one device id, key and epoch: stop syncd on one of them, delete device.key "
                "in its state dir and start it again (it takes a new device id and epoch, and keeps its data)",
                report.address, self.store.device_id[:12], summary.peer_instance,
                self.store.identity.instance_id, self.settings.device.state_dir)
        if report.clock_skew is not None and abs(report.clock_skew) > SKEW_WARNING:
            log.warning("clock of peer %s is %+.0f s off ours", (report.peer or "?")[:12], report.clock_skew)
        asyncio.ensure_future(self._persist(report))

    async def _persist(self, report: SyncReport) -> None:
        summary = report.summary
        now = time.time()

        def save(conn: sqlite3.Connection) -> None:
            if summary is not None and summary.peer and summary.peer_public_key and report.outcome == "ok":
                facility_db.record_device(conn, summary.peer, summary.peer_public_key, now)
            facility_db.record_session(conn, facility_db.SessionRecord(
                peer=report.peer or report.address,
                direction="outgoing" if report.role == "client" else "incoming",
                started_at=now - report.duration,
                duration_s=report.duration,
                partitions=len(set(report.partitions_in) | set(report.partitions_out)),
                records=report.records_in,
                bytes_in=report.bytes_in,
                bytes_out=report.bytes_out,
                outcome=report.outcome,
                detail=report.reason,
                clock_skew_s=report.clock_skew,
            ))

        try:
            await self.store.run_write(save)
        except Exception as exc:  # history is diagnostics: never fail a sync over it
            log.warning("could not record a sync session: %s", exc)

    # --- views ---------------------------------------------------------------------------
    def peers_view(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        latest: dict[str, SyncReport] = {}
        for report in self.sessions:
            latest[report.address] = report
        out = []
        for info in self.table.entries():
            row = _jsonable(asdict(info))
            row["address"] = str(info.address)
            last = latest.get(str(info.address))
            row["last_session"] = report_view(last) if last else None
            row["candidate"] = info.address in self.table.candidates(now, self.tag())
            out.append(row)
        return out

    def status_view(self) -> dict[str, Any]:
        current = self.facility.current
        skews = {r.peer: r.clock_skew for r in self.sessions if r.peer and r.clock_skew is not None}
        return {
            "facility": None if current is None else {"facility_id": current.facility_id, "name": current.name},
            "instance_id": self.store.identity.instance_id,
            "clones_seen": sorted(self._clones),
            "sync_port": self.sync_port,
            "discovery": self._discovery is not None,
            "sessions": len(self.sessions),
            "last_sessions": [report_view(r) for r in list(self.sessions)[-5:]],
            "clock_skew": skews,
            "clock_skew_warnings": sorted(p for p, s in skews.items() if abs(s) > SKEW_WARNING),
        }


def report_view(report: SyncReport) -> dict[str, Any]:
    return {
        "role": report.role, "address": report.address, "peer": report.peer, "outcome": report.outcome,
        "reason": report.reason, "partitions_in": len(report.partitions_in),
        "partitions_out": len(report.partitions_out), "records_in": report.records_in,
        "bytes_in": report.bytes_in, "bytes_out": report.bytes_out, "duration": round(report.duration, 4),
        "clock_skew": report.clock_skew, "full": report.full, "full_reason": report.full_reason,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
