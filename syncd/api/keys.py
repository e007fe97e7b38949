"""Typed application keys shared by the handlers (aiohttp ``web.AppKey``)."""

from __future__ import annotations

from typing import Any, Callable, Protocol

from aiohttp import web

from syncd.config import Settings
from syncd.store.interface import Store

STORE = web.AppKey("store", Store)
SETTINGS = web.AppKey("settings", Settings)
# Extra fields for /status that the daemon fills in (sync port, facility, version ...).
STATUS_EXTRA: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("status_extra")


class SyncControl(Protocol):
    """What the API may ask of peer sync (``sync.service.SyncService`` implements it)."""

    async def sync_now(self, peer: str | None = None) -> list[dict[str, Any]]: ...

    def peers_view(self) -> list[dict[str, Any]]: ...

    async def ensure_held(self, user_id: str, timeout: float = 0.3) -> None: ...


SYNC: web.AppKey[SyncControl] = web.AppKey("sync")
