"""Kolibri-compatible logger endpoints: parse -> store.write(decide) -> render.

Writes (SPEC §2): start and update a content session, the session heartbeat.
Reads (DESIGN §8): ``GET /api/logger/<model>/``, a bare list sorted by
(start_timestamp, id), or a page with ``?page_size=N[&page=M]``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from syncd.api.context import json_body, write_context
from syncd.api.errors import ApiError
from syncd.api.keys import STORE, SYNC
from syncd.logs import writes
from syncd.logs.partitions import normalise_uuid
from syncd.logs.records import DERIVED_MODELS, DerivedModel
from syncd.store.interface import MODEL_FILTERS

MAX_PAGE_SIZE = 10_000
_ALIASES = {"user": "user_id", "content": "content_id", "channel": "channel_id", "exam": "exam_id"}
_PAGING = {"page", "page_size", "debug"}


def _render(result: writes.WriteResult) -> web.Response:
    return web.json_response(dict(result.response), headers=dict(result.headers))


async def start_session(request: web.Request) -> web.Response:
    payload = await json_body(request)
    partition, ctx = write_context(request)
    sync = request.app.get(SYNC)
    if sync is not None and ctx.user_id is not None:
        # A learner this device does not hold yet: fetch their history from a peer first
        # (bounded), so the start decides on it (DESIGN §6).
        await sync.ensure_held(ctx.user_id)
    result = await request.app[STORE].write(partition, lambda state: writes.start_session(state, payload, ctx))
    return _render(result)


async def update_session(request: web.Request) -> web.Response:
    payload = await json_body(request)
    partition, ctx = write_context(request)
    session_id = request.match_info["session_id"]
    result = await request.app[STORE].write(
        partition, lambda state: writes.update_session(state, session_id, payload, ctx)
    )
    return _render(result)


async def heartbeat(request: web.Request) -> web.Response:
    payload = await json_body(request)
    partition, ctx = write_context(request)
    result = await request.app[STORE].write(partition, lambda state: writes.heartbeat(state, payload, ctx))
    return _render(result)


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be a positive integer") from None
    if value < 1:
        raise ApiError(400, "invalid_parameter", f"{name} must be a positive integer")
    return value


def parse_read_query(model: DerivedModel, query: Any) -> tuple[dict[str, str], int | None, int, bool]:
    """(filters, page_size, page, debug) from the query string; 400 on anything unknown."""
    allowed = MODEL_FILTERS[model]
    filters: dict[str, str] = {}
    for raw_name in query.keys():
        values = query.getall(raw_name)
        if len(values) != 1:
            raise ApiError(400, "invalid_parameter", f"{raw_name} is given more than once")
        name = _ALIASES.get(raw_name, raw_name)
        if name in _PAGING:
            continue
        if name not in allowed:
            known = ", ".join(sorted(allowed | _PAGING))
            raise ApiError(400, "unknown_parameter", f"{model} cannot be filtered by {raw_name!r} (known: {known})")
        if name in filters:
            raise ApiError(400, "invalid_parameter", f"{name} is given more than once")
        try:
            filters[name] = normalise_uuid(values[0])
        except ValueError:
            raise ApiError(400, "invalid_parameter", f"{raw_name} must be a UUID") from None
    page_size = _positive_int("page_size", query["page_size"]) if "page_size" in query else None
    if page_size is not None and page_size > MAX_PAGE_SIZE:
        raise ApiError(400, "invalid_parameter", f"page_size must be at most {MAX_PAGE_SIZE}")
    page = _positive_int("page", query["page"]) if "page" in query else 1
    if "page" in query and page_size is None:
        raise ApiError(400, "invalid_parameter", "page needs page_size")
    debug = query.get("debug", "0")
    if debug not in ("0", "1"):
        raise ApiError(400, "invalid_parameter", "debug must be 0 or 1")
    return filters, page_size, page, debug == "1"


async def read_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    if name not in DERIVED_MODELS:
        raise ApiError(404, "unknown_model", f"no such log model {name!r}; known: {', '.join(DERIVED_MODELS)}")
    model: DerivedModel = name
    filters, page_size, page, debug = parse_read_query(model, request.query)
    store = request.app[STORE]
    offset = (page - 1) * page_size if page_size else 0
    result = await store.read(model, filters, limit=page_size, offset=offset, places=debug)
    rows_json = "[" + ",".join(result.rows) + "]"
    if debug:
        rows = json.loads(rows_json)
        for row, (partition, group) in zip(rows, result.places or ()):
            row["_syncd"] = {"partition": partition, "group": group}
        rows_json = json.dumps(rows, separators=(",", ":"))
    if page_size is None:
        return web.Response(text=rows_json, content_type="application/json")

    def link(target: int) -> str | None:
        assert page_size is not None
        if target < 1 or (target - 1) * page_size >= result.count:
            return None
        return str(request.rel_url.update_query(page=str(target)))

    body = (
        '{"count":%d,"next":%s,"previous":%s,"results":%s}'
        % (result.count, json.dumps(link(page + 1)), json.dumps(link(page - 1)), rows_json)
    )
    return web.Response(text=body, content_type="application/json")
