"""Test plumbing: a real SQLite file behind ConnRunners, a controllable clock, and a
"device" (FacilityService + admin app on a Unix socket + peer app on loopback TCP)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from syncd.api import errors as api_errors
from syncd.api.facility import FacilityService, add_routes
from syncd.store.migrate import migrate
from syncd.store.sqlite import connect
from syncd.store.statedir import establish_identity
from syncd.sync.join import JOIN_PATH

T = TypeVar("T")


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SqliteRunner:
    """``read``/``write`` ConnRunners over one SQLite file, each call on a worker thread
    (as the store does); ``write`` runs inside BEGIN IMMEDIATE ... COMMIT."""

    def __init__(self, path: Path) -> None:
        self.path = path
        conn = connect(path)
        migrate(conn)
        conn.close()
        self._lock = threading.Lock()

    def _run(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> T:
        with self._lock:
            conn = connect(self.path)
            try:
                if not write:
                    return fn(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            finally:
                conn.close()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._run, fn, False)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._run, fn, True)

    def sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._run(fn, True)


def make_service(directory: Path, clock: Clock | None = None, **kwargs: Any) -> tuple[FacilityService, SqliteRunner]:
    """A FacilityService on a fresh (or existing) state dir, joins over plain HTTP."""
    directory.mkdir(parents=True, exist_ok=True)
    runner = SqliteRunner(directory / "syncd.sqlite3")
    conn = connect(runner.path)
    identity = establish_identity(conn, directory)
    conn.close()
    service = FacilityService(
        read=runner.read,
        write=runner.write,
        device_id=identity.device_id,
        device_key=identity.private_key,
        plain_http_joins=True,
        clock=clock or Clock(),
        **kwargs,
    )
    return service, runner


def bound_port(site: web.TCPSite) -> int:
    """The port a ``TCPSite`` on port 0 was given."""
    server: Any = site._server
    return int(server.sockets[0].getsockname()[1])


def peer_app(service: FacilityService) -> web.Application:
    app = web.Application()
    app.router.add_post(JOIN_PATH, service.join_handler())
    return app


def admin_app(service: FacilityService) -> web.Application:
    app = web.Application(middlewares=[api_errors.error_middleware])
    add_routes(app, service)
    return app


class DeviceThread:
    """One device served from its own thread and event loop: the admin app on
    ``socket_path`` and the peer app on 127.0.0.1 (a free port), so synchronous code
    (click's CliRunner) can drive it."""

    def __init__(self, directory: Path, clock: Clock | None = None) -> None:
        self.directory = directory
        self.clock = clock or Clock()
        self.socket_path = directory / "api.sock"
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []
        self.service: FacilityService
        self.store: SqliteRunner

    def start(self) -> DeviceThread:
        self._thread.start()
        self._call(self._start())
        return self

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=60)

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the device's loop (e.g. a service call) and return its result."""
        return self._call(coro)

    async def _start(self) -> None:
        self.service, self.store = make_service(self.directory, self.clock)
        await self.service.load()
        admin = web.AppRunner(admin_app(self.service))
        await admin.setup()
        await web.UnixSite(admin, str(self.socket_path)).start()
        peer = web.AppRunner(peer_app(self.service))
        await peer.setup()
        site = web.TCPSite(peer, "127.0.0.1", 0)
        await site.start()
        self.port = bound_port(site)
        self._runners = [admin, peer]

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
