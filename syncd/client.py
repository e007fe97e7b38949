"""SyncdClient: the typed async client of the daemon's Unix-socket API (DESIGN §8).

Used by the CLI, by the tests and offered to apps. One ``aiohttp.ClientSession`` per
client, so consecutive calls reuse one keep-alive connection::

    async with SyncdClient(".syncd/api.sock", user=learner_id) as client:
        started = await client.start_session({"node_id": ..., "kind": "video", ...})
        await client.update_session(started["session_id"], {"progress_delta": 0.1})
        rows = await client.read("contentsummarylog", user_id=learner_id)

Errors (all ``SyncdError``)::

    ClientError            talking to the daemon failed (timeout, connection lost, ...)
    ├── DaemonNotRunning   no socket file, or nothing listening on it
    └── ApiError           the daemon answered with a status outside 2xx

:func:`locate_socket` finds the socket the way the CLI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

import aiohttp

from syncd import config
from syncd.errors import SyncdError

__all__ = [
    "ApiError",
    "ClientError",
    "DaemonNotRunning",
    "SyncdClient",
    "WELL_KNOWN_SOCKETS",
    "locate_socket",
]

BASE_URL = "http://syncd"
USER_HEADER = "X-Syncd-User"
EVENT_TIME_HEADER = "X-Syncd-Event-Time"

# Searched in this order when no socket is named (DESIGN §8, §9).
WELL_KNOWN_SOCKETS: tuple[Path, ...] = (Path("/run/syncd/api.sock"), Path("./.syncd/api.sock"))


class ClientError(SyncdError):
    """Talking to the daemon failed; ``exit_code`` is what the CLI exits with."""

    code = "client_error"
    exit_code = 1


class DaemonNotRunning(ClientError):
    """No daemon at ``socket``: the file is missing or nothing is listening on it."""

    code = "daemon_not_running"
    exit_code = 3

    def __init__(self, socket: str | os.PathLike[str] | None, reason: str) -> None:
        super().__init__(f"daemon not running: {reason}")
        self.socket = Path(socket) if socket is not None else None


class ApiError(ClientError):
    """The daemon answered ``status`` (not 2xx); ``body`` is the decoded answer."""

    code = "api_error"

    def __init__(self, status: int, code: str, detail: str, body: Any) -> None:
        super().__init__(f"{status} {code}: {detail}" if detail else f"{status} {code}", code=code)
        self.status = status
        self.detail = detail  # the daemon's own text; str(self) adds status and code
        self.body = body


def locate_socket(
    socket: str | os.PathLike[str] | None = None,
    *,
    config_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] = os.environ,
    candidates: Sequence[Path] | None = None,
) -> Path:
    """The daemon's socket: ``socket``, ``$SYNCD_SOCKET``, the config's ``api.socket``.

    The config is ``config_path`` or ``$SYNCD_CONFIG``. The first of those that is
    given is the answer, whether or not it exists (talking to another daemon than the
    one named would be worse than failing). With none given, the first of
    ``candidates`` (default ``WELL_KNOWN_SOCKETS``) that exists; else
    ``DaemonNotRunning``. A bad config file raises ``ConfigError``.
    """
    if candidates is None:
        candidates = WELL_KNOWN_SOCKETS
    if socket is not None:
        return Path(os.path.abspath(socket))
    if env.get("SYNCD_SOCKET"):
        return Path(os.path.abspath(env["SYNCD_SOCKET"]))
    if config_path is not None or env.get("SYNCD_CONFIG"):
        return config.load(config_path, env).api.socket
    for candidate in candidates:
        if candidate.exists():
            return Path(os.path.abspath(candidate))
    searched = " or ".join(str(c) for c in candidates)
    raise DaemonNotRunning(None, f"no socket at {searched}")


def _event_time_text(value: str | datetime) -> str:
    return value.isoformat() if isinstance(value, datetime) else value


def _decode(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


class SyncdClient:
    """Async client of one daemon; use as ``async with`` (or call :meth:`close`).

    ``user`` and ``event_time`` become the default ``X-Syncd-User`` and
    ``X-Syncd-Event-Time`` headers; the write methods can override them per call.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        user: str | None = None,
        event_time: str | datetime | None = None,
        timeout: float = 30,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.user = user
        self.event_time = event_time
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SyncdClient:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.socket_path)),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    # --- raw ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded body) whatever the status.

        The body is the decoded JSON, the text if it is not JSON, None if empty.
        ``data`` sends raw bytes (malformed JSON tests). The client's default
        ``user``/``event_time`` headers are sent unless ``headers`` names them.
        Raises ``DaemonNotRunning`` or ``ClientError``, never on a status.
        """
        sent = self._headers(self.user, self.event_time)
        sent.update(headers or {})
        if json is not None and data is not None:
            raise ValueError("pass json or data, not both")
        with self._transport_errors():
            async with self._open().request(
                method, BASE_URL + path, json=json, data=data, headers=sent, params=params
            ) as response:
                return response.status, _decode(await response.text())

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """aiohttp's failures (no daemon, no answer in time, a broken connection) as
        this client's errors."""
        try:
            yield
        except aiohttp.ClientConnectorError as exc:
            raise self._connect_error(exc) from exc
        except asyncio.TimeoutError:
            raise ClientError(f"no answer within {self.timeout} s: {self.socket_path}") from None
        except aiohttp.ClientError as exc:
            raise ClientError(f"{type(exc).__name__}: {exc}: {self.socket_path}") from exc

    def _connect_error(self, exc: aiohttp.ClientConnectorError) -> ClientError:
        cause = exc.os_error
        if isinstance(cause, (FileNotFoundError, ConnectionRefusedError)):
            where = "no socket at" if isinstance(cause, FileNotFoundError) else "nothing listening on"
            return DaemonNotRunning(self.socket_path, f"{where} {self.socket_path}")
        if isinstance(cause, PermissionError):
            return ClientError(
                f"permission denied on {self.socket_path} (is this user in the socket's group?)"
            )
        return ClientError(f"cannot connect to {self.socket_path}: {cause}")

    @staticmethod
    def _headers(user: str | None, event_time: str | datetime | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if user is not None:
            headers[USER_HEADER] = user
        if event_time is not None:
            headers[EVENT_TIME_HEADER] = _event_time_text(event_time)
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        user: str | None = None,
        event_time: str | datetime | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        status, body = await self.request(
            method, path, json=json, headers=self._headers(user, event_time), params=params
        )
        if not 200 <= status < 300:
            raise _api_error(status, body)
        return body

    # --- typed -------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """``GET /status``: device, facility, bound sync port, counts, digests."""
        return _expect_dict(await self._call("GET", "/status"))

    async def peers(self) -> Any:
        """``GET /peers``: the peers this daemon knows and how they are in step."""
        return await self._call("GET", "/peers")

    async def sync(self, peer: str | None = None) -> dict[str, Any]:
        """``POST /sync``: sync one peer (``host:port``) or every candidate now; waits for
        the sessions and returns their reports."""
        return _expect_dict(await self._call("POST", "/sync", json={"peer": peer} if peer else {}))

    async def rebuild(self, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """``POST /rebuild``: refold every derived row from the raw logs; waits for it and
        returns what it did (partitions, records, rows, seconds, workers, refolded_here).
        ``progress(done, total)`` is called as partitions finish (``?progress=1``)."""
        if progress is None:
            return _expect_dict(await self._call("POST", "/rebuild"))
        try:
            with self._transport_errors():
                async with self._open().post(BASE_URL + "/rebuild", params={"progress": "1"},
                                             headers=self._headers(self.user, self.event_time)) as response:
                    if response.status != 200:
                        raise _api_error(response.status, _decode(await response.text()))
                    async for raw in response.content:
                        line = json.loads(raw)
                        if "report" in line:
                            return _expect_dict(line["report"])
                        if "error" in line:
                            raise _api_error(500, line)
                        progress(int(line["done"]), int(line["total"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ClientError(f"the daemon's progress stream is malformed ({exc}): {self.socket_path}") from None
        raise ClientError(f"the rebuild's progress stream ended without a report: {self.socket_path}")

    async def start_session(
        self,
        payload: Mapping[str, Any],
        *,
        user: str | None = None,
        event_time: str | datetime | None = None,
    ) -> dict[str, Any]:
        """``POST /api/logger/trackprogress/`` (SPEC §2.1); ``session_id`` in the answer."""
        body = await self._call(
            "POST", "/api/logger/trackprogress/", json=dict(payload), user=user, event_time=event_time
        )
        return _expect_dict(body)

    async def update_session(
        self,
        session_id: str,
        payload: Mapping[str, Any],
        *,
        user: str | None = None,
        event_time: str | datetime | None = None,
    ) -> dict[str, Any]:
        """``PUT /api/logger/trackprogress/<session_id>/`` (SPEC §2.2)."""
        path = f"/api/logger/trackprogress/{session_id}/"
        body = await self._call("PUT", path, json=dict(payload), user=user, event_time=event_time)
        return _expect_dict(body)

    async def heartbeat(
        self,
        payload: Mapping[str, Any],
        *,
        user: str | None = None,
        event_time: str | datetime | None = None,
    ) -> dict[str, Any]:
        """``PUT /api/auth/session/current/`` (SPEC §2.3)."""
        body = await self._call(
            "PUT", "/api/auth/session/current/", json=dict(payload), user=user, event_time=event_time
        )
        return _expect_dict(body)

    async def read(self, model: str, **filters: str | int | bool | None) -> list[dict[str, Any]]:
        """``GET /api/logger/<model>/`` with ``filters`` as query parameters (None = left out).

        Returns the bare list; use :meth:`request` for ``page_size`` pagination.
        """
        params = {key: _param(value) for key, value in filters.items() if value is not None}
        body = await self._call("GET", f"/api/logger/{model}/", params=params)
        if not isinstance(body, list):
            raise ClientError(f"expected a list from /api/logger/{model}/, got {type(body).__name__}")
        return body


def _param(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _expect_dict(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ClientError(f"expected a JSON object from the daemon, got {type(body).__name__}")
    return body


def _api_error(status: int, body: Any) -> ApiError:
    """Read syncd's ``{"error", "detail"}`` body; Kolibri-shaped bodies are kept as they are."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        detail = body.get("detail")
        return ApiError(status, body["error"], detail if isinstance(detail, str) else "", body)
    detail = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
    return ApiError(status, f"http_{status}", detail, body)
