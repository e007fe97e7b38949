"""Load generator for bench/write_load.py, run as its own process.

N concurrent clients, each its own learner on its own keep-alive connection, back to back
for the given duration: a session start, then UPDATES_PER_SESSION PUT trackprogress
updates (what the frontend's thresholds send in a long visit), then the next session,
cycling over CONTENTS items. Every request is timed from before it is sent until its
response has been read whole; every response must be a 200 with a JSON body (a start's
gives the session id). The figures count acknowledged writes (starts included).
Prints one JSON line: count, seconds, latencies (ms) p50/p99.

The default client writes the requests itself over the Unix socket: byte for byte what
aiohttp's client sends (the same request line, headers in the same order, the same JSON
body), at a fraction of its CPU. The benchmark shares two cores with the daemon, so a
client that costs as much CPU per request as the daemon measures mostly itself.
``--aiohttp`` runs the same load through aiohttp's ClientSession instead.

usage: load_client.py SOCKET CLIENTS SECONDS [--aiohttp]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any, Awaitable, Callable

import aiohttp

VIDEO = {
    "node_id": "32a941fb77c2576e8f6b294cde4c3b0c",
    "content_id": "c6f49ea527824f398f4d5d26faf19396",
    "channel_id": "6199dde695db4ee4ab392222d5af1e5c",
    "kind": "video",
}


UPDATES_PER_SESSION = 10
CONTENTS = 5
UPDATE = {"progress_delta": 0.01, "time_spent_delta": 5.0}
START_PATH = "/api/logger/trackprogress/"

# (method, path, JSON body) -> parsed JSON response; raises unless the status is 200
Send = Callable[[str, str, Any], Awaitable[Any]]


async def client(send: Send, until: float, latencies: list[float]) -> None:
    visit = 0
    while time.perf_counter() < until:
        start = {**VIDEO, "content_id": uuid.UUID(int=visit % CONTENTS + 1).hex}
        visit += 1
        started = time.perf_counter()
        sid = (await send("POST", START_PATH, start))["session_id"]
        latencies.append((time.perf_counter() - started) * 1000)
        url = f"{START_PATH}{sid}/"
        for _ in range(UPDATES_PER_SESSION):
            if time.perf_counter() >= until:
                break
            started = time.perf_counter()
            await send("PUT", url, UPDATE)
            latencies.append((time.perf_counter() - started) * 1000)


class RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection over the Unix socket, sending what aiohttp's
    client sends (a bare protocol: the client's own CPU is part of what it measures)."""

    def __init__(self, user: str) -> None:
        self.head = (
            f"Host: syncd\r\nX-Syncd-User: {user}\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
            f"User-Agent: Python/3.11 aiohttp/{aiohttp.__version__}\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: BaseException | None = None

    @classmethod
    async def open(cls, socket: str, user: str) -> "RawConnection":
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_unix_connection(lambda: cls(user), socket)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("the daemon closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        status_line, *lines = self.buffer[:end].split(b"\r\n")
        length = None
        for line in lines:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                self.waiter.set_exception(AssertionError(f"unexpected transfer-encoding {value!r}"))
                return
        if length is None:
            self.waiter.set_exception(AssertionError("response without Content-Length"))
            return
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        self.waiter.set_result((int(status_line.split(b" ", 2)[1]), body))

    async def send(self, method: str, path: str, payload: Any) -> Any:
        assert self.transport is not None
        if self.lost is not None:
            raise self.lost
        body = json.dumps(payload).encode()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"%s %s HTTP/1.1\r\n%sContent-Length: %d\r\nContent-Type: application/json\r\n\r\n%s"
            % (method.encode(), path.encode(), self.head, len(body), body)
        )
        status, data = await self.waiter
        assert status == 200, (status, data)
        return json.loads(data)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def run_raw(socket: str, clients: int, until: float, latencies: list[float]) -> None:
    connections = [await RawConnection.open(socket, uuid.uuid4().hex) for _ in range(clients)]
    try:
        await asyncio.gather(*(client(c.send, until, latencies) for c in connections))
    finally:
        for connection in connections:
            await connection.close()


async def run_aiohttp(socket: str, clients: int, until: float, latencies: list[float]) -> None:
    connector = aiohttp.UnixConnector(path=socket, limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        def sender(user: str) -> Send:
            headers = {"X-Syncd-User": user}

            async def send(method: str, path: str, payload: Any) -> Any:
                async with session.request(method, f"http://syncd{path}", json=payload, headers=headers) as resp:
                    data = await resp.read()
                    assert resp.status == 200, (resp.status, data)
                    return json.loads(data)

            return send

        await asyncio.gather(*(client(sender(uuid.uuid4().hex), until, latencies) for _ in range(clients)))


async def main(socket: str, clients: int, seconds: float, use_aiohttp: bool) -> None:
    latencies: list[float] = []
    started = time.perf_counter()
    until = started + seconds
    await (run_aiohttp if use_aiohttp else run_raw)(socket, clients, until, latencies)
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, round(q / 100 * (len(latencies) - 1)))]

    print(json.dumps({"count": len(latencies), "seconds": elapsed, "p50": pct(50), "p99": pct(99)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), "--aiohttp" in sys.argv[4:]))
