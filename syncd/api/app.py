"""make_app: the aiohttp application served on the Unix socket; routes and limits."""

from __future__ import annotations

from typing import Any, Callable

from aiohttp.typedefs import Middleware

from aiohttp import web

from syncd.api import admin, logger
from syncd.api.errors import Handler, error_response, error_middleware
from syncd.api.keys import SETTINGS, STATUS_EXTRA, STORE
from syncd.config import Settings
from syncd.store.interface import Store


def _body_limit(max_bytes: int) -> Middleware:
    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Refuse on the declared length before a byte of the body is read; a chunked body
        # is cut off by client_max_size while it streams in.
        length = request.content_length
        if length is not None and length > max_bytes:
            return error_response(413, "body_too_large", f"the body has {length} bytes; the limit is {max_bytes}")
        return await handler(request)

    return limit


def make_app(store: Store, settings: Settings, status_extra: Callable[[], dict[str, Any]] | None = None) -> web.Application:
    max_body = settings.api.max_body_bytes
    app = web.Application(
        middlewares=[error_middleware, _body_limit(max_body)],
        client_max_size=max_body,
    )
    app[STORE] = store
    app[SETTINGS] = settings
    app[STATUS_EXTRA] = status_extra or dict
    app.router.add_post("/api/logger/trackprogress/", logger.start_session)
    app.router.add_put("/api/logger/trackprogress/{session_id}/", logger.update_session)
    app.router.add_put("/api/auth/session/{pk}/", logger.heartbeat)
    app.router.add_get("/api/logger/{model}/", logger.read_model)
    app.router.add_get("/status", admin.status)
    app.router.add_get("/peers", admin.peers)
    app.router.add_post("/rebuild", admin.rebuild)
    app.router.add_post("/sync", admin.sync_now)
    return app
