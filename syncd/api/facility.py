"""Facility admin endpoints (DESIGN §7, §8): ``GET /facility`` and ``POST /facility``.

``POST /facility`` takes ``{"action": ..., ...}``::

    {"action": "create", "name": "Kibera School"}       201 {facility_id, dataset_id, name, tag,
                                                              join_code, expires_at, tries}
    {"action": "invite"}                                201 {join_code, expires_at, tries}
    {"action": "invite", "file": true}                  201 {join_file}  (whoever holds it is a member)
    {"action": "join", "code": "12-3456-7890",
     "peer": "host:port"}                               200 {facility_id, dataset_id, name, tag, via}
    {"action": "join_file", "join_file": "syncd-join:1:..."}   200 {facility_id, dataset_id, name, tag, via}
    {"action": "revoke", "device_id": "<64 hex>"}       200 {device_id, revoked_at, by_device, already}
    {"action": "rotate"}                                501 (not built yet)

``join`` without ``peer`` asks ``find_inviters()`` (mDNS and the static peers, wired by
the daemon) and tries each until one holds a live invite with the code's id. Errors are
``{"error", "detail"}`` through the API's error middleware: 400 invalid input, 403
``wrong_code``, 404 ``no_invite`` / ``no_inviter``, 409 ``already_member`` /
``no_facility``, 502 ``join_failed``.

``FacilityService`` does the work; the daemon builds one from the store's connection
runners and mounts ``add_routes(app, service)`` on the admin app and
``service.join_handler()`` as ``POST /join/v1`` on the peer app.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncd.api.admin import require_admin
from syncd.api.context import json_body
from syncd.api.errors import ApiError
from syncd.errors import RemoteProtocolError, SyncdError
from syncd.store import facility as db
from syncd.sync.join import Handler, JoinError, join_client_ssl_context, join_via, make_join_handler
from syncd.sync.membership import (
    AlreadyMemberError,
    Facility,
    Invite,
    InviteUnavailableError,
    NotMemberError,
    Revocation,
    Rng,
    WrongCodeError,
    check_can_create,
    check_can_join,
    check_can_revoke,
    decode_join_file,
    decode_revocation,
    encode_join_file,
    format_code,
    make_invite,
    mint_facility,
    parse_code,
    sign_revocation,
)

__all__ = [
    "FACILITY_SERVICE",
    "ConnRunner",
    "FacilityService",
    "NoInviterError",
    "add_routes",
    "get_facility",
    "parse_peer",
    "post_facility",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class ConnRunner(Protocol):
    """Runs ``fn(conn)`` on one of the store's threads and returns its result: the
    readers for reads, the writer (inside its transaction, resolved after COMMIT) for
    writes."""

    def __call__(self, fn: Callable[[sqlite3.Connection], T], /) -> Awaitable[T]: ...


InviterFinder = Callable[[], Awaitable[Sequence[tuple[str, int]]]]
FacilityChanged = Callable[[Facility], Awaitable[None]]
Revoked = Callable[[Revocation], Awaitable[None]]


class NoInviterError(SyncdError):
    """No device to ask: mDNS and the static peers found nobody."""

    code = "no_inviter"
    status = 404


class NotImplementedYetError(SyncdError):
    code = "not_implemented"
    status = 501


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")


_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>[0-9]{1,5})$")


def parse_peer(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    match = _HOST_PORT.match(text.strip()) if isinstance(text, str) else None
    port = int(match.group("port")) if match else 0
    if match is None or not 0 < port < 65536:
        raise ApiError(400, "invalid_peer", f"peer must be host:port or [ipv6]:port, not {text!r}")
    return match.group("v6") or match.group("host"), port


async def _no_inviters() -> Sequence[tuple[str, int]]:
    return []


class FacilityService:
    """Membership operations of one daemon; ``await load()`` once before use.

    ``read``/``write`` run functions of a ``sqlite3.Connection`` on the store's threads.
    ``on_change(facility)`` runs after a facility was created or joined (refold with the
    new dataset id, re-advertise the mDNS tag, start syncing); ``on_revoke`` after a
    revocation was made here.
    """

    def __init__(
        self,
        *,
        read: ConnRunner,
        write: ConnRunner,
        device_id: str,
        device_key: Ed25519PrivateKey,
        find_inviters: InviterFinder = _no_inviters,
        on_change: FacilityChanged | None = None,
        on_revoke: Revoked | None = None,
        plain_http_joins: bool = False,
        join_timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
        rng: Rng = secrets.token_bytes,
    ) -> None:
        self._read = read
        self._write = write
        self.device_id = device_id
        self._key = device_key
        self._public_key = device_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._find_inviters = find_inviters
        self._on_change = on_change
        self._on_revoke = on_revoke
        self._join_ssl = None if plain_http_joins else join_client_ssl_context()
        self._join_timeout = join_timeout
        self._clock = clock
        self._rng = rng
        self._current: Facility | None = None
        self._lock = asyncio.Lock()  # one membership change at a time

    @property
    def current(self) -> Facility | None:
        """The facility this device belongs to (cached; None before ``load``)."""
        return self._current

    async def load(self) -> Facility | None:
        self._current = await self._read(db.load_facility)
        return self._current

    # --- reads -------------------------------------------------------------------------

    async def show(self) -> dict[str, Any]:
        """Everything about the facility but the secret."""
        now = self._clock()

        def gather(conn: sqlite3.Connection) -> tuple[Facility | None, list[db.DeviceRow], list[Invite]]:
            return db.load_facility(conn), db.devices(conn), db.live_invites(conn, now)

        facility, rows, invites = await self._read(gather)
        return {
            "device_id": self.device_id,
            "facility": _facility_view(facility) if facility else None,
            "devices": [
                {
                    "device_id": row.device_id,
                    "this_device": row.device_id == self.device_id,
                    "first_seen": _iso(row.first_seen),
                    "last_seen": _iso(row.last_seen),
                    "revoked": row.revoked,
                    "revoked_at": _iso(row.revoked_at),
                }
                for row in rows
            ],
            "invites": [
                {"code_id": i.code_id, "expires_at": _iso(i.expires_at), "tries_left": i.tries_left} for i in invites
            ],
        }

    # --- changes -------------------------------------------------------------------------

    async def create(self, name: str) -> dict[str, Any]:
        """Mint a facility for this device and issue its first invite."""
        now = self._clock()
        facility = mint_facility(name, self._rng)
        code, invite = make_invite(now, self._rng)

        def job(conn: sqlite3.Connection) -> None:
            check_can_create(db.load_facility(conn))
            db.save_facility(conn, facility)
            db.record_device(conn, self.device_id, self._public_key, now)
            db.purge_invites(conn, now)
            db.add_invite(conn, invite, now)

        async with self._lock:
            await self._write(job)
            self._current = facility
        log.info("created facility %r (%s)", facility.name, facility.facility_id)
        await self._changed(facility)
        return {**_facility_view(facility), **_invite_view(code, invite)}

    async def invite(self) -> dict[str, Any]:
        """A new one-time join code (30 min, 5 tries)."""
        now = self._clock()

        def job(conn: sqlite3.Connection) -> tuple[str, Invite]:
            if db.load_facility(conn) is None:
                raise NotMemberError("this device belongs to no facility: create or join one first")
            db.purge_invites(conn, now)
            code, invite = make_invite(now, self._rng, [i.code_id for i in db.live_invites(conn, now)])
            db.add_invite(conn, invite, now)
            return code, invite

        code, invite = await self._write(job)
        log.info("issued invite %s, valid until %s", invite.code_id, _iso(invite.expires_at))
        return _invite_view(code, invite)

    async def export_join_file(self) -> dict[str, Any]:
        """The facility as a join file (offline joins)."""
        facility = await self._read(db.load_facility)
        if facility is None:
            raise NotMemberError("this device belongs to no facility: create or join one first")
        return {"join_file": encode_join_file(facility)}

    async def join(self, code: str, peer: str | None = None) -> dict[str, Any]:
        """Join by code: SPAKE2 with ``peer``, or with each device ``find_inviters`` finds."""
        code = parse_code(code)
        candidates = [parse_peer(peer)] if peer is not None else list(await self._find_inviters())
        if not candidates:
            raise NoInviterError(
                "found no inviting device by mDNS or in the static peers; name it with --peer HOST:PORT"
            )
        failures: list[tuple[str, SyncdError]] = []
        for host, port in candidates:
            where = f"{host}:{port}"
            try:
                facility = await join_via(host, port, code, self._join_ssl, timeout=self._join_timeout, entropy=self._rng)
            except (WrongCodeError, InviteUnavailableError, NotMemberError, JoinError) as exc:
                log.warning("join via %s failed: %s", where, exc.detail)
                failures.append((where, exc))
                continue
            except RemoteProtocolError as exc:
                log.warning("join via %s failed: the inviter broke the protocol: %s", where, exc.detail)
                failures.append((where, JoinError(f"{where} broke the join protocol: {exc.detail}")))
                continue
            try:
                return {**await self._adopt(facility), "via": where}
            except AlreadyMemberError as exc:
                raise AlreadyMemberError(f"{exc.detail} (the join code is used up)") from None
        raise _best_failure(failures)

    async def join_with_file(self, text: str) -> dict[str, Any]:
        return {**await self._adopt(decode_join_file(text)), "via": "join_file"}

    async def _adopt(self, facility: Facility) -> dict[str, Any]:
        now = self._clock()

        def job(conn: sqlite3.Connection) -> None:
            check_can_join(db.load_facility(conn), facility)
            db.save_facility(conn, facility)
            db.record_device(conn, self.device_id, self._public_key, now)

        async with self._lock:
            await self._write(job)
            self._current = facility
        log.info("joined facility %r (%s)", facility.name, facility.facility_id)
        await self._changed(facility)
        return _facility_view(facility)

    async def revoke(self, device_id: str) -> dict[str, Any]:
        """Sign and keep a revocation of ``device_id`` (idempotent: an existing one stands)."""
        check_can_revoke(self.device_id, device_id)
        now = self._clock()

        def job(conn: sqlite3.Connection) -> tuple[Revocation, bool]:
            facility = db.load_facility(conn)
            if facility is None:
                raise NotMemberError("this device belongs to no facility")
            row = conn.execute("SELECT revocation FROM devices WHERE device_id = ?", (device_id,)).fetchone()
            if row is not None and row[0] is not None:
                return decode_revocation(bytes(row[0]), facility.facility_id), True
            revocation = sign_revocation(facility.facility_id, device_id, now, self._key)
            db.add_revocation(conn, revocation)
            return revocation, False

        revocation, already = await self._write(job)
        if not already:
            log.warning("revoked device %s", device_id)
            if self._on_revoke is not None:
                await self._on_revoke(revocation)
        return {
            "device_id": revocation.device_id,
            "revoked_at": _iso(revocation.revoked_at),
            "by_device": revocation.by_device,
            "already": already,
        }

    async def rotate(self) -> dict[str, Any]:
        raise NotImplementedYetError(
            "facility rotate is not built yet: it needs the new secret to reach the remaining "
            "devices over sync. Until then, to shut out a stolen device: revoke it, then create a "
            "new facility and have the remaining devices join it."
        )

    async def _changed(self, facility: Facility) -> None:
        if self._on_change is not None:
            await self._on_change(facility)

    # --- the inviter's side: POST /join/v1 on the peer app -----------------------------------

    def join_handler(self) -> Handler:
        """The ``POST /join/v1`` handler for the peer (HTTPS) app."""

        async def spend_try(code_id: str, now: float) -> Invite | None:
            return await self._write(lambda conn: db.spend_invite_try(conn, code_id, now))

        async def consume(code_id: str) -> None:
            await self._write(lambda conn: db.consume_invite(conn, code_id))

        return make_join_handler(spend_try, consume, lambda: self._current, clock=self._clock, entropy=self._rng)


def _facility_view(facility: Facility) -> dict[str, Any]:
    return {
        "facility_id": facility.facility_id,
        "dataset_id": facility.dataset_id,
        "name": facility.name,
        "tag": facility.tag,
    }


def _invite_view(code: str, invite: Invite) -> dict[str, Any]:
    return {
        "join_code": code,
        "join_code_display": format_code(code),
        "expires_at": _iso(invite.expires_at),
        "tries": invite.tries_left,
    }


def _best_failure(failures: list[tuple[str, SyncdError]]) -> SyncdError:
    """One failure: itself. Several (several inviters found): the most telling kind,
    naming every device tried."""
    if len(failures) == 1:
        return failures[0][1]
    summary = "; ".join(f"{where}: {exc.detail}" for where, exc in failures)
    for kind in (WrongCodeError, InviteUnavailableError):
        if any(isinstance(exc, kind) for _, exc in failures):
            return kind(f"no device accepted the code ({summary})")
    return JoinError(f"no device accepted the code ({summary})")


# --- HTTP --------------------------------------------------------------------------------------

FACILITY_SERVICE: web.AppKey[FacilityService] = web.AppKey("facility_service", FacilityService)

_ACTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # action: (required fields, optional fields), besides "action"
    "create": (frozenset({"name"}), frozenset()),
    "invite": (frozenset(), frozenset({"file"})),
    "join": (frozenset({"code"}), frozenset({"peer"})),
    "join_file": (frozenset({"join_file"}), frozenset()),
    "revoke": (frozenset({"device_id"}), frozenset()),
    "rotate": (frozenset(), frozenset()),
}


def add_routes(app: web.Application, service: FacilityService) -> None:
    app[FACILITY_SERVICE] = service
    app.router.add_get("/facility", get_facility)
    app.router.add_post("/facility", post_facility)


async def get_facility(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(await request.app[FACILITY_SERVICE].show())


def _text(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"{key} must be a string")
    return value


async def post_facility(request: web.Request) -> web.Response:
    require_admin(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("action"), str):
        raise ApiError(400, "invalid_body", 'the body is {"action": ..., ...}')
    action = body["action"]
    if action not in _ACTIONS:
        raise ApiError(400, "unknown_action", f"action must be one of {', '.join(sorted(_ACTIONS))}")
    required, optional = _ACTIONS[action]
    missing = sorted(required - set(body))
    unknown = sorted(set(body) - required - optional - {"action"})
    if missing or unknown:
        raise ApiError(400, "invalid_field", f"{action}: missing {missing or 'nothing'}, unknown {unknown or 'nothing'}")
    service = request.app[FACILITY_SERVICE]
    if action == "create":
        return web.json_response(await service.create(_text(body, "name")), status=201)
    if action == "invite":
        wants_file = body.get("file", False)
        if not isinstance(wants_file, bool):
            raise ApiError(400, "invalid_field", "file must be true or false")
        answer = await service.export_join_file() if wants_file else await service.invite()
        return web.json_response(answer, status=201)
    if action == "join":
        peer = body.get("peer")
        if peer is not None and not isinstance(peer, str):
            raise ApiError(400, "invalid_field", "peer must be a string host:port")
        return web.json_response(await service.join(_text(body, "code"), peer))
    if action == "join_file":
        return web.json_response(await service.join_with_file(_text(body, "join_file")))
    if action == "revoke":
        return web.json_response(await service.revoke(_text(body, "device_id")))
    return web.json_response(await service.rotate())
