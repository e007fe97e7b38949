"""Typed application keys shared by the handlers (aiohttp ``web.AppKey``)."""

from __future__ import annotations

from typing import Any, Callable

from aiohttp import web

from syncd.config import Settings
from syncd.store.interface import Store

STORE = web.AppKey("store", Store)
SETTINGS = web.AppKey("settings", Settings)
# Extra fields for /status that the daemon fills in (sync port, facility, version ...).
STATUS_EXTRA: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("status_extra")
