"""Status and admin endpoints: ``GET /status``, ``GET /peers``, ``POST /rebuild``.

Admin endpoints on the app socket are gated to the daemon's own user and root by the
caller's credentials (SO_PEERCRED), DESIGN §8.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from aiohttp import web

from syncd.api.errors import ApiError
from syncd.api.keys import STATUS_EXTRA, STORE, SYNC

_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_uid(request: web.Request) -> int | None:
    """The uid of the process at the other end of the Unix socket."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(uid)


def require_admin(request: web.Request) -> None:
    uid = peer_uid(request)
    if uid is None or uid not in (0, os.getuid()):
        raise ApiError(403, "admin_only", "this endpoint is for the daemon's user and root")


async def status(request: web.Request) -> web.Response:
    store_status = await request.app[STORE].status()
    body: dict[str, Any] = dict(request.app[STATUS_EXTRA]())
    body.update(
        device_id=store_status.device_id,
        epoch=store_status.epoch,
        dataset_id=store_status.dataset_id,
        partitions=store_status.partitions,
        records=dict(store_status.records),
        store_bytes=store_status.store_bytes,
        feed_seq=store_status.feed_seq,
        loaded_documents=store_status.loaded_documents,
        digests=dict(store_status.digests),
        store=dict(store_status.extra),
    )
    return web.json_response(body)


async def peers(request: web.Request) -> web.Response:
    sync = request.app.get(SYNC)
    return web.json_response(sync.peers_view() if sync is not None else [])


async def sync_now(request: web.Request) -> web.Response:
    """``POST /sync`` ``{"peer": "host:port"}`` (optional): sync now and answer with the
    sessions' reports once they finished."""
    require_admin(request)
    sync = request.app.get(SYNC)
    if sync is None:
        raise ApiError(503, "sync_off", "peer sync is not running on this daemon")
    body = await request.json() if request.can_read_body else {}
    peer = body.get("peer") if isinstance(body, dict) else None
    if peer is not None and not isinstance(peer, str):
        raise ApiError(400, "invalid_parameter", "peer must be \"host:port\"")
    try:
        reports = await sync.sync_now(peer)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", str(exc)) from None
    return web.json_response({"sessions": reports})


async def rebuild(request: web.Request) -> web.Response:
    require_admin(request)
    report = await request.app[STORE].rebuild()
    return web.json_response(
        {"partitions": report.partitions, "records": report.records, "rows": report.rows, "seconds": report.seconds,
         "workers": report.workers, "refolded_here": report.refolded_here}
    )
