"""A tiny process that advertises a sync port + tag by mDNS and reports what it sees.

Used by tests/integration/test_netns_mdns.py (one per network namespace). Prints one
JSON object per line on stdout:

    {"event": "ready", "name": ..., "addresses": [...], "port": P, "tag": T}
    {"event": "seen", "host": H, "port": P, "tag": T, "version": V, "source": "mdns", "candidate": bool}
    {"event": "gone", "host": H, "port": P, "reason": R}
    {"event": "candidates", "addresses": ["host:port", ...]}     (answer to "candidates")

Reads commands on stdin, one per line: ``candidates``, ``quit``. Stops cleanly
(goodbyes sent) on ``quit``, end of stdin or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

from syncd.discovery import Discovery, PeerEvent, PeerGone, PeerSeen, PeerTable


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    tag = None if args.tag == "none" else args.tag
    table = PeerTable(now=time.monotonic())

    def on_event(event: PeerEvent) -> None:
        if isinstance(event, PeerSeen):
            emit(
                {
                    "event": "seen",
                    "host": event.address.host,
                    "port": event.address.port,
                    "tag": event.tag,
                    "version": event.version,
                    "source": event.source.value,
                    "candidate": event.address in table.candidates(time.monotonic(), tag),
                    "t": time.monotonic(),
                }
            )
        elif isinstance(event, PeerGone):
            emit(
                {
                    "event": "gone",
                    "host": event.address.host,
                    "port": event.address.port,
                    "reason": event.reason,
                    "t": time.monotonic(),
                }
            )

    table.add_listener(on_event)
    discovery = Discovery(
        table,
        port=args.port,
        tag=tag,
        interfaces=args.interface or None,
        check_interval=args.check_interval,
        query_interval=args.query_interval,
        record_ttl=args.ttl,
    )
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands() -> None:
        while True:
            line = await reader.readline()
            if not line or line.strip() == b"quit":
                done.set()
                return
            if line.strip() == b"candidates":
                emit(
                    {
                        "event": "candidates",
                        "addresses": [str(a) for a in table.candidates(time.monotonic(), tag)],
                    }
                )

    await discovery.start()
    try:
        emit(
            {
                "event": "ready",
                "name": discovery.name,
                "addresses": list(discovery.addresses),
                "port": args.port,
                "tag": tag,
                "t": time.monotonic(),
            }
        )
        command_task = asyncio.create_task(commands())
        await done.wait()
        command_task.cancel()
    finally:
        await discovery.stop()
    emit({"event": "stopped"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tag", required=True, help='16 hex, or "none"')
    parser.add_argument("--interface", action="append", help="IPv4 address to use (repeatable)")
    parser.add_argument("--ttl", type=int, default=120, help="TTL of our SRV/A records")
    parser.add_argument("--check-interval", type=float, default=10.0)
    parser.add_argument("--query-interval", type=float, default=60.0)
    parser.add_argument("--log-level", default="WARNING")
    ns = parser.parse_args()
    logging.basicConfig(level=ns.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(ns))
