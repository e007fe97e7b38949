"""Load generator for bench/write_load.py, run as its own process.

N concurrent clients, each its own learner, back to back for the given duration: a
session start, then UPDATES_PER_SESSION PUT trackprogress updates (what the frontend's
thresholds send in a long visit), then the next session, cycling over CONTENTS items.
Every request is timed; the figures count acknowledged writes (starts included).
Prints one JSON line: count, seconds, latencies (ms) p50/p99.

usage: load_client.py SOCKET CLIENTS SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

import aiohttp

VIDEO = {
    "node_id": "32a941fb77c2576e8f6b294cde4c3b0c",
    "content_id": "c6f49ea527824f398f4d5d26faf19396",
    "channel_id": "6199dde695db4ee4ab392222d5af1e5c",
    "kind": "video",
}


UPDATES_PER_SESSION = 10
CONTENTS = 5


async def client(session: aiohttp.ClientSession, until: float, latencies: list[float]) -> None:
    headers = {"X-Syncd-User": uuid.uuid4().hex}
    body = {"progress_delta": 0.01, "time_spent_delta": 5.0}
    visit = 0
    while time.perf_counter() < until:
        start = {**VIDEO, "content_id": uuid.UUID(int=visit % CONTENTS + 1).hex}
        visit += 1
        started = time.perf_counter()
        async with session.post("http://syncd/api/logger/trackprogress/", json=start, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            sid = (await resp.json())["session_id"]
        latencies.append((time.perf_counter() - started) * 1000)
        url = f"http://syncd/api/logger/trackprogress/{sid}/"
        for _ in range(UPDATES_PER_SESSION):
            if time.perf_counter() >= until:
                break
            started = time.perf_counter()
            async with session.put(url, json=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            latencies.append((time.perf_counter() - started) * 1000)


async def main(socket: str, clients: int, seconds: float) -> None:
    connector = aiohttp.UnixConnector(path=socket, limit=clients)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(client(session, until, latencies) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, round(q / 100 * (len(latencies) - 1)))]

    print(json.dumps({"count": len(latencies), "seconds": elapsed, "p50": pct(50), "p99": pct(99)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
