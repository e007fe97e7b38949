"""An import worker: a child process that takes first imports (``store.first_import``)
for the daemon (``store.import_pool`` runs it).

Requests arrive on stdin as a msgpack stream, ``[id, partition, data, dataset_id]``; each
gets one msgpack answer on stdout, in order: ``[id, "ok", result]`` (``first_import``'s
wire form), ``[id, "refused", field, detail, code]`` (the chunk is refused: the peer's
fault) or ``[id, "error", text]`` (a bug; the daemon takes the chunk itself). It reads no
database and writes none: the daemon stores what it sends back. It imports no asyncio and
no HTTP, so it starts in a fifth of a second, and it ends when its stdin closes.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import msgpack

from syncd.errors import InvalidRecordError
from syncd.store.first_import import fold_first_import, to_wire

# The largest request: a partition's chunk (at most the sync protocol's MAX_ASSEMBLY,
# 64 MiB) and its framing.
MAX_REQUEST = 65 * 2**20
_PEER = 1  # the worker never writes: no op of its own ever carries this peer id


def answer(request: Any) -> list[Any]:
    """The answer to one request (never raises for a request's content)."""
    request_id, partition, data, dataset_id = request
    try:
        return [request_id, "ok", to_wire(fold_first_import(partition, data, dataset_id, _PEER))]
    except InvalidRecordError as exc:
        return [request_id, "refused", exc.field, exc.detail, exc.code]
    except Exception as exc:  # a bug: the daemon logs it and takes the chunk itself
        return [request_id, "error", f"{type(exc).__name__}: {exc}"]


def main() -> int:
    unpacker = msgpack.Unpacker(max_buffer_size=MAX_REQUEST)
    out = sys.stdout.buffer
    stdin = io.BufferedReader(io.FileIO(sys.stdin.fileno(), closefd=False))
    while chunk := stdin.read1(1 << 20):
        unpacker.feed(chunk)
        for request in unpacker:
            out.write(msgpack.packb(answer(request)))
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
