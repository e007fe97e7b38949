"""Error middleware: every failure becomes ``{"error": code, "detail": text}``."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from syncd.errors import SyncdError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(SyncdError):
    """A request the API itself refuses (bad header, unknown parameter, ...)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail, code=code)
        self.status = status


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": code, "detail": detail}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SyncdError as exc:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        if exc.status >= 500:
            log.error("%s %s failed: %s", request.method, request.path, exc.detail)
        return error_response(exc.status, exc.code, exc.detail, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason or exc.text or "")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the daemon log")
