"""The frame codec: round trips, and every limit of docs/sync.md refused with
RemoteProtocolError (and nothing else), including on random bytes and random msgpack."""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.errors import LocalProtocolError, RemoteProtocolError
from syncd.sync import codec
from syncd.sync.messages import (
    Ack, Bye, Changes, Cursor, Delta, DeviceId, Epoch, Error, Hello, Instance, Message, Offer, Proof, Sub, Want,
    to_wire,
)

USER = "user:" + "ab" * 16
ANON = "anon:" + "cd" * 32
VV = b"\x01\x05\x02"
CURSOR = Cursor(Epoch("0123456789abcdef"), 42, "f" * 32)
HELLO = Hello(2, 2, DeviceId("e" * 64), "0" * 16, bytes(range(32)), 1_700_000_000.25, Epoch("0123456789abcdef"),
              Instance("0123456789abcdef" * 2))

EXAMPLES: list[Message] = [
    HELLO,
    dataclasses.replace(HELLO, version=1, min_version=1, instance=None),   # a version-1 hello, to refuse as such
    Proof(bytes(32)),
    Proof(bytes(32), bytes(64), bytes(32)),
    Sub("all", None, None),
    Sub(frozenset({"ab" * 16}), None, CURSOR),
    Sub(None, bytes(16 + 32), CURSOR),
    Changes({USER: VV, ANON: b"\x00"}, CURSOR, True),
    Offer({USER: VV}),
    Want({}),
    Delta(USER, b"loro bytes", False),
    Delta(ANON, b"", True),
    Ack((USER, ANON)),
    Error("facility", "another facility"),
    Bye(),
]


def plain(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return b"\x00" + packed


def squeezed(obj: Any) -> bytes:
    return b"\x01" + zlib.compress(msgpack.packb(obj, use_bin_type=True))


def zstd_framed(obj: Any) -> bytes:
    return b"\x02" + zstandard.ZstdCompressor().compress(msgpack.packb(obj, use_bin_type=True))


def refused(data: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(data)
    return info.value


@pytest.mark.parametrize("zstd", [False, True])
def test_round_trip_every_message(zstd: bool) -> None:
    assert codec.decode(codec.encode(EXAMPLES, zstd=zstd)) == EXAMPLES
    for m in EXAMPLES:
        assert codec.decode(codec.encode([m], zstd=zstd)) == [m]
    assert codec.decode(codec.encode([], zstd=zstd)) == []


@pytest.mark.parametrize("zstd, kind", [(False, codec.ZLIB), (True, codec.ZSTD)])
def test_small_frames_are_plain_large_ones_compressed(zstd: bool, kind: int) -> None:
    assert codec.encode([Bye()], zstd=zstd)[0] == codec.PLAIN
    big = codec.encode([Delta(USER, b"x" * 5000, True)], zstd=zstd)
    assert big[0] == kind and len(big) < 1000
    assert codec.decode(big) == [Delta(USER, b"x" * 5000, True)]


def test_oversized_frame_is_refused_before_parsing() -> None:
    err = refused(b"\x00" + b"\x90" * (codec.MAX_FRAME + 1))
    assert err.status_hint == 413


def test_zip_bomb_stops_at_the_cap() -> None:
    bomb = b"\x01" + zlib.compress(b"\x00" * (codec.MAX_DECOMPRESSED + 1024), 9)
    assert len(bomb) < 100_000
    assert refused(bomb).status_hint == 413


def test_bad_compression_is_refused() -> None:
    good = squeezed([to_wire(Bye())] * 200)
    refused(good[:-3])                                   # truncated stream
    refused(good + b"trailing")                          # padded stream
    refused(b"\x01" + b"not zlib at all")
    refused(b"\x03" + msgpack.packb([]))                 # unknown encoding byte
    refused(b"")
    refused(b"\x00")


def test_bad_zstd_frames_are_refused() -> None:
    body = msgpack.packb([to_wire(Bye())] * 200)
    good = zstd_framed([to_wire(Bye())] * 200)
    assert codec.decode(good) == [Bye()] * 200
    refused(good[:-3])                                   # truncated
    refused(good + b"trailing")                          # padded
    refused(good + good[1:])                             # a second zstd frame
    refused(b"\x02" + b"not zstd at all")
    refused(b"\x02")
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(body)
    assert "declare its size" in refused(b"\x02" + unsized).detail
    # a header that declares one byte less than the frame holds (RFC 8878 §3.1.1.1)
    frame = bytearray(good[1:])
    descriptor = frame[4]
    single_segment, dictionary = descriptor >> 5 & 1, descriptor & 3
    at = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dictionary]
    assert descriptor >> 6 == 1 and 256 <= len(body) < 65_792  # a 2-byte size field, stored minus 256
    frame[at:at + 2] = (len(body) - 1 - 256).to_bytes(2, "little")
    assert zstandard.frame_content_size(bytes(frame)) == len(body) - 1
    refused(b"\x02" + bytes(frame))


def test_zstd_bomb_is_refused_before_inflating() -> None:
    """A zstd frame declaring more than the cap is refused on its header (nothing is
    allocated); one that declares a small size but holds more fails to inflate."""
    bomb = b"\x02" + zstandard.ZstdCompressor(level=19).compress(b"\x00" * (codec.MAX_DECOMPRESSED + 1024))
    assert len(bomb) < 100_000
    assert refused(bomb).status_hint == 413


def test_truncated_and_padded_msgpack() -> None:
    frame = codec.encode([HELLO])
    for cut in range(2, len(frame)):
        refused(frame[:cut])
    refused(frame + b"\x00")


def test_depth_limit() -> None:
    nested: Any = "x"
    for _ in range(codec.MAX_DEPTH):
        nested = [nested]
    refused(plain(nested))
    refused(plain([{"t": "bye", "deep": [[[[[[[[1]]]]]]]]}]))
    refused(b"\x00" + b"\x91" * 200_000)                 # far deeper than any stack


def test_container_limits() -> None:
    refused(plain([to_wire(Bye())] * (codec.MAX_CONTAINER + 1)))
    refused(plain([{"t": "ack", "p": [USER] * (codec.MAX_CONTAINER + 1)}]))
    refused(plain([{"t": "offer", "vvs": {f"user:{i:032x}": VV for i in range(codec.MAX_CONTAINER + 1)}}]))


def test_string_and_binary_limits() -> None:
    refused(squeezed([{"t": "error", "code": "x", "detail": "d" * (codec.MAX_STR + 1)}]))
    refused(squeezed([{"t": "delta", "p": USER, "data": b"\x00" * (codec.MAX_BIN + 1), "last": True}]))


def test_extension_types_are_refused() -> None:
    refused(plain([msgpack.ExtType(5, b"x")]))
    refused(b"\x00" + msgpack.packb([msgpack.Timestamp(1, 0)], datetime=False))
    refused(plain([{"t": "delta", "p": USER, "data": msgpack.ExtType(1, b"abc"), "last": True}]))


def test_map_keys_must_be_strings() -> None:
    refused(b"\x00" + msgpack.packb([{1: "x", "t": "bye"}]))
    refused(b"\x00" + msgpack.packb([{b"t": "bye"}], use_bin_type=True))
    refused(b"\x00" + msgpack.packb([{"t": "offer", "vvs": {b"user:" + b"a" * 32: VV}}], use_bin_type=True))


def test_wrong_types_are_refused() -> None:
    hello = to_wire(HELLO)
    for key, value in [("nonce", "x" * 32), ("nonce", bytes(31)), ("clock", math.nan), ("clock", math.inf),
                       ("clock", True), ("clock", "now"), ("v", True), ("v", 1.0), ("device", "E" * 64),
                       ("device", "e" * 63), ("tag", 5), ("epoch", None), ("instance", None),
                       ("instance", "0" * 16), ("instance", "A" * 32), ("instance", bytes(16))]:
        refused(plain([{**hello, key: value}]))
    refused(plain([{**hello, "extra": 1}]))             # no unknown keys
    refused(plain([{k: v for k, v in hello.items() if k != "clock"}]))
    refused(plain(["hello"]))
    refused(plain({"t": "bye"}))                          # a frame is an array
    refused(plain([{"t": "nope"}]))
    refused(plain([{"t": 1}]))
    refused(plain([{"t": "delta", "p": "user:XYZ", "data": b"", "last": True}]))
    refused(plain([{"t": "delta", "p": USER, "data": "text", "last": True}]))
    refused(plain([{"t": "ack", "p": USER}]))
    refused(plain([{"t": "sub", "sub": "some", "cursor": None}]))
    refused(plain([{"t": "sub", "sub": ["nothex"], "cursor": None}]))
    refused(plain([{"t": "sub", "sub": "all", "cursor": ["0123456789abcdef", -1, "f" * 32]}]))
    refused(plain([{"t": "sub", "sub": "all", "box": bytes(32), "cursor": None}]))
    refused(plain([{"t": "changes", "vvs": {}, "cursor": None, "full": True}]))
    refused(plain([{"t": "changes", "vvs": {USER: b"\x05"}, "cursor": list(to_wire(Changes({}, CURSOR, 1 == 1))["cursor"]), "full": True}]))
    refused(plain([{"t": "want", "vvs": {USER: b"\x00" * 70_000}}]))
    refused(plain([{"t": "error", "code": "Bad Code!", "detail": ""}]))
    refused(plain([{"t": "proof", "mac": bytes(32), "sig": bytes(63)}]))


def test_encode_refuses_what_decode_would_refuse() -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode([Bye()] * (codec.MAX_CONTAINER + 1))
    with pytest.raises(LocalProtocolError):
        codec.encode([Sub(None, None, None)])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_remote_protocol_error(data: bytes) -> None:
    for frame in (data, b"\x00" + data, b"\x01" + data, b"\x01" + zlib.compress(data), b"\x02" + data,
                  b"\x02" + zstandard.ZstdCompressor().compress(data)):
        try:
            codec.decode(frame)
        except RemoteProtocolError:
            pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True) | st.text(max_size=20) | st.binary(max_size=40)
    | st.sampled_from(["hello", "proof", "sub", "changes", "offer", "want", "delta", "ack", "error", "bye",
                       "all", USER, ANON, "e" * 64, "0" * 16]),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.sampled_from(["t", "v", "min_v", "device", "tag", "nonce", "clock", "epoch", "mac", "sig",
                                       "pub", "sub", "box", "cursor", "vvs", "full", "p", "data", "last", "code",
                                       "detail"]) | st.text(max_size=5), children, max_size=8),
    max_leaves=30,
)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(msgpack_values, max_size=4) | msgpack_values)
def test_random_msgpack_raises_only_remote_protocol_error(value: Any) -> None:
    for frame in (plain(value), squeezed(value), zstd_framed(value)):
        try:
            messages = codec.decode(frame)
        except RemoteProtocolError:
            continue
        assert codec.decode(codec.encode(messages)) == messages


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_valid_messages_raise_only_remote_protocol_error(message: Message, data: st.DataObject) -> None:
    wire = to_wire(message)
    key = data.draw(st.sampled_from(sorted(wire)))
    wire[key] = data.draw(msgpack_values)
    try:
        codec.decode(plain([wire]))
    except RemoteProtocolError:
        pass
