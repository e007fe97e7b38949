"""SyncdClient against a fake daemon: a real aiohttp server on a real Unix socket.

The fake runs in its own thread and event loop, so both async tests (the client in the
test's loop) and the CLI (``asyncio.run`` inside click) can talk to it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from syncd.client import ApiError, ClientError, DaemonNotRunning, SyncdClient

LEARNER = "c8b02965e827a69fa3d876d554f55903"
SESSION = "0615e70cd32406c6de9b3aa1e928c119"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    transport: object


@dataclass
class FakeDaemon:
    """Answers ``replies[(method, path)] = (status, json body)``; records every request.

    ``hang`` paths never answer (until the fake stops).
    """

    socket_path: Path
    replies: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)

    def start(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(30), "fake daemon did not start"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._release.set)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=1)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.UnixSite(runner, str(self.socket_path)).start())
        ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                await request.read(),
                request.transport,  # kept alive here, so id() stays unique
            )
        )
        if request.path in self.hang:
            await self._release.wait()
        status, body = self.replies.get(
            (request.method, request.path), (404, {"error": "not_found", "detail": "no route"})
        )
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: a Unix socket path must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="syncd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake(short_dir: Path) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(short_dir / "api.sock")
    daemon.start()
    yield daemon
    daemon.stop()


# --- the typed calls ---------------------------------------------------------------------


async def test_status_and_peers(fake: FakeDaemon) -> None:
    fake.replies[("GET", "/status")] = (200, {"device_id": "d" * 64, "sync_port": 7737})
    fake.replies[("GET", "/peers")] = (200, [])
    async with SyncdClient(fake.socket_path) as client:
        assert await client.status() == {"device_id": "d" * 64, "sync_port": 7737}
        assert await client.peers() == []
    assert [(s.method, s.path) for s in fake.seen] == [("GET", "/status"), ("GET", "/peers")]


async def test_one_keep_alive_connection_per_client(fake: FakeDaemon) -> None:
    fake.replies[("GET", "/status")] = (200, {})
    async with SyncdClient(fake.socket_path) as client:
        for _ in range(3):
            await client.status()
    assert len({id(s.transport) for s in fake.seen}) == 1


async def test_writes_send_json_and_learner_headers(fake: FakeDaemon) -> None:
    fake.replies[("POST", "/api/logger/trackprogress/")] = (200, {"session_id": SESSION})
    fake.replies[("PUT", f"/api/logger/trackprogress/{SESSION}/")] = (200, {"complete": False})
    fake.replies[("PUT", "/api/auth/session/current/")] = (200, {})
    start = {"node_id": "a" * 32, "content_id": "b" * 32, "channel_id": "c" * 32, "kind": "video"}
    at = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
    async with SyncdClient(fake.socket_path, user=LEARNER) as client:
        assert await client.start_session(start) == {"session_id": SESSION}
        await client.update_session(SESSION, {"progress_delta": 0.3}, event_time=at)
        await client.heartbeat({"active": True}, user="other", event_time="2025-01-06T10:00:00Z")
    post, put, beat = fake.seen
    assert (post.method, post.path, json.loads(post.body)) == ("POST", "/api/logger/trackprogress/", start)
    assert post.headers["X-Syncd-User"] == LEARNER
    assert "X-Syncd-Event-Time" not in post.headers
    assert json.loads(put.body) == {"progress_delta": 0.3}
    assert put.headers["X-Syncd-Event-Time"] == "2025-01-06T09:00:00+00:00"
    assert put.headers["X-Syncd-User"] == LEARNER
    assert beat.headers["X-Syncd-User"] == "other"
    assert beat.headers["X-Syncd-Event-Time"] == "2025-01-06T10:00:00Z"


async def test_anonymous_client_sends_no_user_header(fake: FakeDaemon) -> None:
    fake.replies[("POST", "/api/logger/trackprogress/")] = (200, {"session_id": SESSION})
    async with SyncdClient(fake.socket_path) as client:
        await client.start_session({})
    assert "X-Syncd-User" not in fake.seen[0].headers


async def test_read_sends_filters_as_query(fake: FakeDaemon) -> None:
    fake.replies[("GET", "/api/logger/contentsummarylog/")] = (200, [{"id": "x"}])
    async with SyncdClient(fake.socket_path) as client:
        rows = await client.read("contentsummarylog", user_id=LEARNER, content_id=None, debug=True)
    assert rows == [{"id": "x"}]
    assert fake.seen[0].query == {"user_id": LEARNER, "debug": "true"}


async def test_read_refuses_a_non_list(fake: FakeDaemon) -> None:
    fake.replies[("GET", "/api/logger/masterylog/")] = (200, {"count": 0, "results": []})
    async with SyncdClient(fake.socket_path) as client:
        with pytest.raises(ClientError, match="expected a list"):
            await client.read("masterylog")


# --- errors ------------------------------------------------------------------------------


async def test_syncd_error_body_becomes_api_error(fake: FakeDaemon) -> None:
    body = {"error": "event_time_disabled", "detail": "X-Syncd-Event-Time is off"}
    fake.replies[("POST", "/api/logger/trackprogress/")] = (400, body)
    async with SyncdClient(fake.socket_path) as client:
        with pytest.raises(ApiError) as info:
            await client.start_session({}, event_time="2025-01-01T00:00:00+00:00")
    assert (info.value.status, info.value.code, info.value.detail) == (400, "event_time_disabled", body["detail"])
    assert info.value.body == body


async def test_kolibri_error_body_is_kept(fake: FakeDaemon) -> None:
    body = [{"id": "NOT_FOUND", "metadata": {"view": "Progress Tracking Instance"}}]
    fake.replies[("PUT", f"/api/logger/trackprogress/{SESSION}/")] = (404, body)
    async with SyncdClient(fake.socket_path) as client:
        with pytest.raises(ApiError) as info:
            await client.update_session(SESSION, {})
    assert (info.value.status, info.value.code, info.value.body) == (404, "http_404", body)
    assert "NOT_FOUND" in info.value.detail


async def test_raw_request_returns_any_status(fake: FakeDaemon) -> None:
    fake.replies[("POST", "/api/logger/trackprogress/")] = (400, {"error": "invalid", "detail": "json"})
    fake.replies[("GET", "/text")] = (500, "boom")
    async with SyncdClient(fake.socket_path, user=LEARNER) as client:
        status, body = await client.request(
            "POST", "/api/logger/trackprogress/", data=b"{not json", headers={"X-Syncd-User": ""}
        )
        assert (status, body) == (400, {"error": "invalid", "detail": "json"})
        assert await client.request("GET", "/text") == (500, "boom")
    assert fake.seen[0].body == b"{not json"
    assert fake.seen[0].headers["X-Syncd-User"] == ""  # explicit headers win over defaults
    assert fake.seen[1].headers["X-Syncd-User"] == LEARNER


async def test_missing_socket_is_daemon_not_running(short_dir: Path) -> None:
    async with SyncdClient(short_dir / "api.sock") as client:
        with pytest.raises(DaemonNotRunning, match="no socket at") as info:
            await client.status()
    assert info.value.socket == short_dir / "api.sock"
    assert info.value.exit_code == 3


async def test_stale_socket_file_is_daemon_not_running(short_dir: Path) -> None:
    # What a daemon killed with -9 leaves behind: the file, nobody listening.
    stale = short_dir / "api.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    assert stale.exists()
    async with SyncdClient(stale) as client:
        with pytest.raises(DaemonNotRunning, match="nothing listening"):
            await client.status()


async def test_timeout_is_a_client_error(fake: FakeDaemon) -> None:
    fake.hang.add("/status")
    async with SyncdClient(fake.socket_path, timeout=0.2) as client:
        with pytest.raises(ClientError, match="no answer") as info:
            await client.status()
    assert not isinstance(info.value, (DaemonNotRunning, ApiError))
    assert info.value.exit_code == 1


# --- the rebuild's progress stream ---------------------------------------------------------


def _ndjson(*lines: dict[str, Any]) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


async def test_rebuild_reports_progress_then_the_report(fake: FakeDaemon) -> None:
    report = {"partitions": 3, "records": 9, "rows": 12, "seconds": 0.5, "workers": 2, "refolded_here": 0}
    fake.replies[("POST", "/rebuild")] = (200, _ndjson({"done": 1, "total": 3}, {"done": 3, "total": 3},
                                                       {"report": report}))
    seen: list[tuple[int, int]] = []
    async with SyncdClient(fake.socket_path) as client:
        assert await client.rebuild(lambda done, total: seen.append((done, total))) == report
    assert seen == [(1, 3), (3, 3)]
    assert fake.seen[-1].query == {"progress": "1"}


@pytest.mark.parametrize("body, error", [
    (_ndjson({"done": 1, "total": 3}, {"error": "rebuild_failed", "detail": "disk full"}), "rebuild_failed"),
    (_ndjson({"done": 1, "total": 3}), "ended without a report"),
    ("{not json\n", "malformed"),
    (_ndjson({"done": "x"}), "malformed"),
])
async def test_a_broken_rebuild_stream_is_an_error(fake: FakeDaemon, body: str, error: str) -> None:
    fake.replies[("POST", "/rebuild")] = (200, body)
    async with SyncdClient(fake.socket_path) as client:
        with pytest.raises((ApiError, ClientError), match=error):
            await client.rebuild(lambda done, total: None)
