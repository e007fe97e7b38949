"""Full rebuilds in worker processes (DESIGN §3: bulk work runs in a child process).

A rebuild refolds every derived row from the raw logs. ``refold_in_workers`` hands the
partitions to child processes (``store.rebuild_worker``), each of which sends back, per
partition, only the rows that differ from the stored ones and the feed seq it read. The
store writes a difference only while that feed seq is still the partition's: otherwise a
write landed in between, and the store refolds that partition itself. So the event loop
stays free for requests, the decoded documents never enter the daemon's heap, and the
folds run on as many cores as there are workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import msgpack

from syncd.store.rebuild_worker import PartitionRefold, from_wire

log = logging.getLogger(__name__)

_STDERR_TAIL = 2000  # characters of a failed worker's stderr kept for the log line
WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "syncd.store.rebuild_worker")


async def refold_in_workers(
    db: Path,
    dataset_id: str,
    partitions: Sequence[str],
    workers: int,
    take: Callable[[PartitionRefold], Awaitable[None]],
) -> list[str]:
    """Refold ``partitions`` in ``workers`` child processes, awaiting ``take`` with each
    result as it arrives. Returns the partitions no worker delivered (a worker that
    failed is logged; the caller refolds those itself)."""
    shares = [list(partitions[i::workers]) for i in range(workers)]
    left = await asyncio.gather(*(_run_worker(db, dataset_id, share, take) for share in shares if share))
    return [partition for share in left for partition in share]


async def _run_worker(
    db: Path, dataset_id: str, partitions: list[str], take: Callable[[PartitionRefold], Awaitable[None]]
) -> list[str]:
    # The child must import this package whether or not it is installed.
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    try:
        proc = await asyncio.create_subprocess_exec(
            *WORKER_COMMAND,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
    except OSError as exc:
        log.warning("could not start a rebuild worker (%s); the daemon refolds its partitions itself", exc)
        return partitions
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    expected = set(partitions)
    delivered: set[str] = set()
    problem = ""
    try:
        try:
            proc.stdin.write(msgpack.packb({"db": str(db), "dataset_id": dataset_id, "partitions": partitions}))
            await proc.stdin.drain()
            proc.stdin.close()
        except ConnectionError:
            pass  # it ended before reading its request: its exit status says why
        unpacker = msgpack.Unpacker()
        while chunk := await proc.stdout.read(256 * 1024):
            unpacker.feed(chunk)
            for item in unpacker:
                refold = from_wire(item)
                if refold.partition not in expected or refold.partition in delivered:
                    raise ValueError(f"a result for {refold.partition!r}, which it was not asked for")
                await take(refold)
                delivered.add(refold.partition)
        code = await proc.wait()
        if code != 0:
            problem = f"exited with status {code}"
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        problem = f"sent what it should not ({exc})"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await errors).decode(errors="replace").strip()
    if problem or len(delivered) < len(partitions):
        log.warning("a rebuild worker %s after %d of %d partitions; the daemon refolds the rest itself%s",
                    problem or "stopped early", len(delivered), len(partitions),
                    f": {stderr[-_STDERR_TAIL:]}" if stderr else "")
    return [p for p in partitions if p not in delivered]


