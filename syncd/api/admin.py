"""Status and admin endpoints: ``GET /status``, ``GET /peers``, ``POST /rebuild``.

Admin endpoints on the app socket are gated to the daemon's own user and root by the
caller's credentials (SO_PEERCRED), DESIGN §8.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from typing import Any

from aiohttp import web

from syncd.api.errors import ApiError
from syncd.api.keys import STATUS_EXTRA, STORE, SYNC
from syncd.errors import StoreError
from syncd.store.interface import RebuildReport

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


def _report(report: RebuildReport) -> dict[str, Any]:
    return {"partitions": report.partitions, "records": report.records, "rows": report.rows,
            "seconds": report.seconds, "workers": report.workers, "refolded_here": report.refolded_here}


async def rebuild(request: web.Request) -> web.StreamResponse:
    """``POST /rebuild``: refold every derived row; the report once done. With
    ``?progress=1`` the answer streams as it goes, one JSON object a line
    (application/x-ndjson): ``{"done", "total"}`` as partitions finish (the latest only,
    when they finish faster than the lines go out), then ``{"report": {...}}``, or an
    error as every endpoint gives one (``{"error", "detail"}``) if the rebuild failed
    after the stream began."""
    require_admin(request)
    unknown = set(request.query) - {"progress"}
    if unknown:
        raise ApiError(400, "invalid_parameter", f"unknown parameter: {', '.join(sorted(unknown))}")
    progress = request.query.get("progress", "0")
    if progress not in ("0", "1"):
        raise ApiError(400, "invalid_parameter", "progress must be 0 or 1")
    store = request.app[STORE]
    if progress == "0":
        return web.json_response(_report(await store.rebuild()))

    latest: list[tuple[int, int]] = []
    moved = asyncio.Event()

    def on_progress(done: int, total: int) -> None:
        latest[:] = [(done, total)]
        moved.set()

    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    work = asyncio.ensure_future(store.rebuild(on_progress))
    try:
        while True:
            waiting = asyncio.ensure_future(moved.wait())
            await asyncio.wait({work, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            moved.clear()
            if latest:
                done, total = latest.pop()
                await response.write(_line({"done": done, "total": total}))
            if work.done():
                break
        try:
            await response.write(_line({"report": _report(work.result())}))
        except StoreError as exc:
            await response.write(_line({"error": "rebuild_failed", "detail": str(exc)}))
    finally:
        if not work.done():  # the caller went away: the rebuild still finishes, unwatched
            work.add_done_callback(lambda task: task.cancelled() or task.exception())
    await response.write_eof()
    return response


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"
