"""What every API handler reads from a request: the learner, "now", the JSON body."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from syncd.api.errors import ApiError
from syncd.api.keys import SETTINGS, STORE
from syncd.logs.partitions import anon_partition, normalise_uuid, user_partition
from syncd.logs.timestamps import canonical, format_timestamp
from syncd.logs.writes import WriteContext

USER_HEADER = "X-Syncd-User"
VISITOR_HEADER = "X-Syncd-Visitor"
EVENT_TIME_HEADER = "X-Syncd-Event-Time"


def _header_uuid(request: web.Request, name: str) -> str | None:
    if name not in request.headers:
        return None
    try:
        return normalise_uuid(request.headers[name])
    except ValueError:
        raise ApiError(400, "invalid_header", f"{name} must be a UUID") from None


def request_now(request: web.Request) -> str:
    """The request's "now": the clock, or X-Syncd-Event-Time when the config allows it."""
    if EVENT_TIME_HEADER in request.headers:
        if not request.app[SETTINGS].api.accept_event_time:
            raise ApiError(400, "event_time_disabled", f"{EVENT_TIME_HEADER} is refused: api.accept_event_time is off")
        try:
            return canonical(request.headers[EVENT_TIME_HEADER])
        except ValueError:
            raise ApiError(
                400, "invalid_event_time", f"{EVENT_TIME_HEADER} must be ISO-8601 with a UTC offset"
            ) from None
    return format_timestamp(datetime.now(timezone.utc))


def _random_quiz_level() -> int:
    return -secrets.randbelow(2**31) - 1  # uniform in [-2**31, -1]


def _new_id() -> str:
    return uuid.uuid4().hex


def write_context(request: web.Request) -> tuple[str, WriteContext]:
    """(partition, context) of a write: the learner's partition, or this device's
    anonymous one."""
    store = request.app[STORE]
    user_id = _header_uuid(request, USER_HEADER)
    visitor_id = _header_uuid(request, VISITOR_HEADER)
    ctx = WriteContext(
        now=request_now(request),
        user_id=user_id,
        device_id=store.device_id,
        dataset_id=store.dataset_id,
        new_id=_new_id,
        random_quiz_level=_random_quiz_level,
        visitor_id=None if user_id else visitor_id,
    )
    partition = user_partition(user_id) if user_id else anon_partition(store.device_id)
    return partition, ctx


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number syncd accepts")


async def json_body(request: web.Request) -> Any:
    """The decoded JSON body ({} when empty); NaN and Infinity literals are refused."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
