"""Acknowledged writes/s and latency of trackprogress writes (PUT updates, with the session
starts they need) over the Unix socket.

1, 8 and 32 concurrent clients (load generated in another process), durability on
(WAL, synchronous=FULL). Each figure is printed beside the same run without group
commit. Target: >= 1,500 writes/s and p99 <= 15 ms at 8 clients.

The load client writes its HTTP requests itself (byte for byte what aiohttp's client
sends; see load_client.py). ``--client aiohttp`` sends them through aiohttp's client,
which burns ~0.5 ms of CPU per request on the same two cores as the daemon (the raw
client ~0.2 ms), so its figures say as much about the client as about the daemon.

usage: python bench/write_load.py [--seconds S] [--client raw|aiohttp]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Daemon  # noqa: E402

LOAD = str(Path(__file__).with_name("load_client.py"))


def measure(group_commit: bool, clients: int, seconds: float, client: str = "raw") -> dict[str, float]:
    daemon = Daemon(extra_config=f"[store]\ngroup_commit = {'true' if group_commit else 'false'}\n").start()
    try:
        out = subprocess.run(
            [sys.executable, LOAD, str(daemon.socket), str(clients), str(seconds)]
            + (["--aiohttp"] if client == "aiohttp" else []),
            check=True, capture_output=True, text=True,
        ).stdout
        result: dict[str, float] = json.loads(out)
        result["rate"] = result["count"] / result["seconds"]
        return result
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw")
    args = parser.parse_args()
    print(f"load client: {args.client}")
    print(f"{'clients':>7} | {'writes/s':>9} {'p50 ms':>7} {'p99 ms':>7} | {'no-group w/s':>12} {'p99 ms':>7} | ratio")
    for clients in (1, 8, 32):
        grouped = measure(True, clients, args.seconds, args.client)
        single = measure(False, clients, args.seconds, args.client)
        print(
            f"{clients:>7} | {grouped['rate']:>9.0f} {grouped['p50']:>7.2f} {grouped['p99']:>7.2f} | "
            f"{single['rate']:>12.0f} {single['p99']:>7.2f} | {grouped['rate'] / single['rate']:.2f}x",
            flush=True,
        )
    print("target at 8 clients: >= 1500 writes/s, p99 <= 15 ms")


if __name__ == "__main__":
    main()
