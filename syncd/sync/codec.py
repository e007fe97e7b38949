"""Frames of peer sync: a msgpack array of messages, compressed when large.

Pure. Frame layout (docs/sync.md "Transport"): byte 0 is ``0x00`` (plain msgpack),
``0x01`` (zlib-compressed msgpack) or ``0x02`` (one zstd frame of msgpack, its content
size in its header). A frame over ``COMPRESS_ABOVE`` bytes is compressed: with zstd for
a peer of protocol 4 or later (seven times faster to compress than zlib's level 6 and
three times faster to inflate, and a quarter smaller, on a full sync's frames), with
zlib for an older one. ``decode`` reads all three.

``decode`` is the one door for peer bytes and it raises nothing but
``RemoteProtocolError``. Limits are enforced *while* reading, never after the damage:
the frame size first, decompression stops at the cap (a zip bomb costs us at most
``MAX_DECOMPRESSED`` bytes; a zstd frame must declare its size, at most that, before
anything is allocated), msgpack's own length limits refuse long strings, binaries
and containers before allocating them, then one walk checks depth, key types, floats and
that no extension type slipped through, and ``messages.from_wire`` checks the schema.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Sequence

import msgpack
import zstandard

from syncd.errors import LocalProtocolError, RemoteProtocolError
from syncd.sync.messages import Message, from_wire, to_wire

MAX_FRAME = 8 * 2**20            # on the wire
MAX_DECOMPRESSED = 32 * 2**20
MAX_DEPTH = 8                    # the frame array is depth 1, a message map depth 2
MAX_CONTAINER = 10_000           # messages per frame, entries per map or list
MAX_STR = 2**20
MAX_BIN = 8 * 2**20
COMPRESS_ABOVE = 1024
PLAIN, ZLIB, ZSTD = 0x00, 0x01, 0x02
ZSTD_LEVEL = 3                   # (levels above cost far more time for a few percent)
MAX_ZSTD_WINDOW = 2**25          # the most a peer's zstd frame may make us hold besides its output

_LIMITS: dict[str, Any] = dict(
    max_str_len=MAX_STR, max_bin_len=MAX_BIN, max_array_len=MAX_CONTAINER,
    max_map_len=MAX_CONTAINER, max_ext_len=0,
)
_SCALARS = (str, bytes, int, bool, type(None))


def encode(messages: Sequence[Message], *, zstd: bool = False) -> bytes:
    """One frame holding ``messages``; LocalProtocolError if it would break a limit.
    ``zstd``: compress with zstd (the peer reads it: protocol 4), not zlib."""
    if len(messages) > MAX_CONTAINER:
        raise LocalProtocolError(f"{len(messages)} messages in one frame")
    body: bytes = msgpack.packb([to_wire(m) for m in messages], use_bin_type=True)
    if len(body) > MAX_DECOMPRESSED:
        raise LocalProtocolError(f"frame of {len(body)} bytes")
    if len(body) <= COMPRESS_ABOVE:
        frame = bytes([PLAIN]) + body
    elif zstd:  # (a compressor a frame: they are cheap to make, and not for two threads at once)
        frame = bytes([ZSTD]) + zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
    else:
        frame = bytes([ZLIB]) + zlib.compress(body, 6)
    if len(frame) > MAX_FRAME:
        raise LocalProtocolError(f"frame of {len(frame)} bytes on the wire")
    return frame


def decode(data: bytes) -> list[Message]:
    """The messages of one frame. Raises only RemoteProtocolError."""
    try:
        return [from_wire(item) for item in _unpack(_body(data))]
    except RemoteProtocolError:
        raise
    except Exception as exc:  # the one door: nothing else may escape (msgpack, zlib, utf-8, ...)
        raise RemoteProtocolError(f"undecodable frame: {type(exc).__name__}") from None


def _body(data: bytes) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError("a frame is bytes")
    if len(data) > MAX_FRAME:
        raise RemoteProtocolError(f"frame over {MAX_FRAME} bytes", status_hint=413)
    if len(data) < 2:
        raise RemoteProtocolError("empty frame")
    kind, payload = data[0], bytes(data[1:])
    if kind == PLAIN:
        return payload
    if kind == ZSTD:
        return _unzstd(payload)
    if kind != ZLIB:
        raise RemoteProtocolError(f"unknown frame encoding {kind:#04x}")
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(payload, MAX_DECOMPRESSED + 1)
    except zlib.error:
        raise RemoteProtocolError("corrupt compressed frame") from None
    if len(body) > MAX_DECOMPRESSED or inflater.unconsumed_tail:
        raise RemoteProtocolError(f"frame inflates past {MAX_DECOMPRESSED} bytes", status_hint=413)
    if not inflater.eof or inflater.unused_data:
        raise RemoteProtocolError("truncated or padded compressed frame")
    return body


def _unzstd(payload: bytes) -> bytes:
    """One zstd frame's content: its declared size is checked against the cap before the
    output is allocated; a frame without one, truncated, padded or followed by another
    is refused."""
    try:
        size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError:
        raise RemoteProtocolError("corrupt compressed frame") from None
    if size < 0:
        raise RemoteProtocolError("a zstd frame must declare its size")
    if size > MAX_DECOMPRESSED:
        raise RemoteProtocolError(f"frame inflates past {MAX_DECOMPRESSED} bytes", status_hint=413)
    try:
        body: bytes = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW).decompress(
            payload, allow_extra_data=False)
    except zstandard.ZstdError:
        raise RemoteProtocolError("corrupt, truncated or padded compressed frame") from None
    if len(body) != size:
        raise RemoteProtocolError("a zstd frame's content is not the size it declared")
    return body


def _refuse_ext(code: int, data: bytes) -> Any:
    raise RemoteProtocolError(f"msgpack extension type {code}")


def _unpack(body: bytes) -> list[Any]:
    try:
        frame = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True, ext_hook=_refuse_ext,
                                timestamp=0, **_LIMITS)
    except RemoteProtocolError:
        raise
    except Exception as exc:
        raise RemoteProtocolError(f"bad msgpack: {type(exc).__name__}") from None
    if not isinstance(frame, list):
        raise RemoteProtocolError("a frame is a msgpack array")
    _check_tree(frame)
    return frame


def _check_tree(root: Any) -> None:
    """Depth, key and value types over the whole tree, iteratively (no recursion to blow)."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            if depth > MAX_DEPTH:
                raise RemoteProtocolError(f"nesting deeper than {MAX_DEPTH}")
            if isinstance(node, dict):
                if not all(isinstance(k, str) for k in node):
                    raise RemoteProtocolError("map keys must be strings")
                stack.extend((v, depth + 1) for v in node.values())
            else:
                stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise RemoteProtocolError("NaN or infinite float")
        elif not isinstance(node, _SCALARS):
            raise RemoteProtocolError(f"unexpected msgpack value {type(node).__name__}")
