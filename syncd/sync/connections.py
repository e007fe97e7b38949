"""Connection limits for the peer port, below HTTP.

Anyone on the LAN can open connections to the peer port, and aiohttp never cuts off a
client that stalls inside its request head. Enough of those would use up the process's
file descriptors, and then ``accept()`` fails on every socket, the apps' Unix socket
included. ``ConnectionGuard`` wraps the aiohttp protocol factory: it refuses connections
beyond a total and a per-address cap, and closes a connection whose first request head
has not arrived within ``head_deadline`` seconds (after that, aiohttp's own keep-alive
and body timeouts apply).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, Callable

log = logging.getLogger(__name__)


class ConnectionGuard:
    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        max_connections: int = 256,
        per_address: int = 32,
        head_deadline: float = 10.0,
    ) -> None:
        self._factory = factory
        self._max = max_connections
        self._per_address = per_address
        self._deadline = head_deadline
        self.open = 0
        self._by_address: Counter[str] = Counter()

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self, self._factory())

    def admit(self, address: str) -> bool:
        if self.open >= self._max or self._by_address[address] >= self._per_address:
            log.warning("refused a connection from %s: %d open (%d from there)",
                        address, self.open, self._by_address[address])
            return False
        self.open += 1
        self._by_address[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    def deadline(self) -> float:
        return self._deadline


class _Guarded(asyncio.Protocol):
    """Delegates to aiohttp's protocol (a slotted class: it cannot be patched in place)."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self._guard = guard
        self._inner = inner
        self._address: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        if not self._guard.admit(address):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._address = address
        self._timer = asyncio.get_running_loop().call_later(self._guard.deadline(), self._check_head, transport)
        self._inner.connection_made(transport)

    def _check_head(self, transport: asyncio.BaseTransport) -> None:
        # aiohttp counts parsed request heads in _request_count; without it, never cut.
        if getattr(self._inner, "_request_count", 1) == 0 and not transport.is_closing():
            log.warning("closed a connection from %s: no complete request head in time", self._address)
            transport.abort()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is None:
            return  # refused in connection_made: aiohttp never saw it
        if self._timer is not None:
            self._timer.cancel()
        self._guard.release(self._address)
        self._address = None
        self._inner.connection_lost(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
