"""Wire messages of peer sync (docs/sync.md "Messages"): domain dataclasses and their
msgpack-ready wire maps.

Pure. ``from_wire`` is the schema check: it accepts exactly the map ``to_wire`` writes
(key ``t`` names the type, no unknown keys, strict types, bounded lengths, partition
names and version vectors well formed) and raises ``RemoteProtocolError`` on anything
else. Domain types are not wire types: a ``Cursor`` is a dataclass here and a 3-list on
the wire, a subscription a ``frozenset`` here and a list there.

Version vectors travel as Loro's own encoding (``VersionVector.encode()``: a postcard map,
varint entry count, then per entry the peer id as a LEB128 u64 and the counter as a
zigzag LEB128 i32). It is decoded here, without the engine, so the sans-I/O protocol can
compare versions and a malformed vector is refused at the door.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, NewType, TypeAlias, Union

from syncd.errors import LocalProtocolError, RemoteProtocolError
from syncd.logs.partitions import is_valid_partition, user_of

DeviceId = NewType("DeviceId", str)      # 64 hex: SHA-256 of the device's Ed25519 key
Epoch = NewType("Epoch", str)            # 16 hex: a store's epoch (new on restore or move)
Instance = NewType("Instance", str)      # 32 hex: one start of a daemon (random per start)
Subscription: TypeAlias = Literal["all"] | frozenset[str]   # same shape as store.interface

MAX_VV_BYTES = 64 * 1024
MAX_PARTITIONS = 10_000
MAX_SEQ = 2**63 - 1
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CODE = re.compile(r"[a-z_]{1,64}")


@dataclass(frozen=True)
class Cursor:
    """A position in a source's change feed, valid for one source ``epoch`` and one
    receiver scope (``sub_hash`` = ``protocol.scope_hash(receiver epoch, subscription)``)."""

    epoch: Epoch
    seq: int
    sub_hash: str


@dataclass(frozen=True)
class PeerCursor:
    """Not a wire type: a cursor as a client keeps it for one peer device, with the
    instance of that peer it was made with. Usable only while the peer runs that instance
    (a clone shares the device id and epoch, not the change feed)."""

    cursor: Cursor
    instance: Instance


@dataclass(frozen=True)
class Hello:
    version: int
    min_version: int
    device: DeviceId
    tag: str
    nonce: bytes
    clock: float
    epoch: Epoch
    # Random per daemon start: tells a clone (same state dir, so the same device id, key
    # and epoch) from ourselves, and a peer's cursors from those of its clone. None only
    # in a version-1 hello, which is decoded so that it can be refused as a version.
    instance: Instance | None = None


@dataclass(frozen=True)
class Proof:
    mac: bytes
    sig: bytes | None = None     # client only: Ed25519 signature of the transcript
    pub: bytes | None = None     # client only: raw Ed25519 public key


@dataclass(frozen=True)
class Sub:
    """Exactly one of ``subscription`` (server) or ``sealed`` (client: the subscription
    under AEAD, so no learner id reaches a server before its proof) is set."""

    subscription: Subscription | None = None
    sealed: bytes | None = None
    cursor: Cursor | None = None
    revocations: tuple[bytes, ...] = ()   # signed, as membership.encode_revocation makes them


@dataclass(frozen=True)
class Changes:
    vvs: Mapping[str, bytes]
    cursor: Cursor
    full: bool


@dataclass(frozen=True)
class Offer:
    vvs: Mapping[str, bytes]


@dataclass(frozen=True)
class Want:
    vvs: Mapping[str, bytes]


@dataclass(frozen=True)
class Delta:
    partition: str
    data: bytes
    last: bool


@dataclass(frozen=True)
class Ack:
    partitions: tuple[str, ...]


@dataclass(frozen=True)
class Error:
    code: str
    detail: str


@dataclass(frozen=True)
class Bye:
    pass


Message: TypeAlias = Union[Hello, Proof, Sub, Changes, Offer, Want, Delta, Ack, Error, Bye]


# --- version vectors ------------------------------------------------------------------

def decode_vv(data: bytes) -> dict[int, int]:
    """Loro's encoded version vector -> {peer: counter end}; RemoteProtocolError if malformed."""
    if len(data) > MAX_VV_BYTES:
        raise RemoteProtocolError("version vector too long")
    pos = 0

    def varint(limit_bits: int) -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(data) or shift >= limit_bits + 7:
                raise RemoteProtocolError("malformed version vector")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if value >> limit_bits:
                    raise RemoteProtocolError("malformed version vector")
                return value

    out: dict[int, int] = {}
    for _ in range(varint(32)):
        peer, zigzag = varint(64), varint(32)
        counter = (zigzag >> 1) ^ -(zigzag & 1)
        if peer in out or counter < 0:
            raise RemoteProtocolError("malformed version vector")
        out[peer] = counter
    if pos != len(data):
        raise RemoteProtocolError("malformed version vector")
    return out


def vv_covers(ours: bytes, theirs: bytes) -> bool:
    """True if a holder of ``ours`` has every op a holder of ``theirs`` has."""
    mine = decode_vv(ours)
    return all(mine.get(peer, 0) >= end for peer, end in decode_vv(theirs).items())


def in_subscription(partition: str, subscription: Subscription) -> bool:
    """May ``partition`` go to a peer with ``subscription``? ``anon:*`` only to "all"."""
    if subscription == "all":
        return True
    user = user_of(partition)
    return user is not None and user in subscription


# --- wire maps ------------------------------------------------------------------------

def _cursor_wire(c: Cursor | None) -> list[Any] | None:
    return None if c is None else [c.epoch, c.seq, c.sub_hash]


def to_wire(m: Message) -> dict[str, Any]:
    """The msgpack-ready map of a message (keys in a fixed order)."""
    if isinstance(m, Hello):
        hello: dict[str, Any] = {"t": "hello", "v": m.version, "min_v": m.min_version, "device": m.device,
                                 "tag": m.tag, "nonce": m.nonce, "clock": m.clock, "epoch": m.epoch}
        if m.instance is not None:
            hello["instance"] = m.instance
        return hello
    if isinstance(m, Proof):
        out: dict[str, Any] = {"t": "proof", "mac": m.mac}
        if m.sig is not None:
            out["sig"] = m.sig
        if m.pub is not None:
            out["pub"] = m.pub
        return out
    if isinstance(m, Sub):
        body: dict[str, Any] = {"t": "sub"}
        if m.sealed is not None:
            body["box"] = m.sealed
        elif m.subscription is not None:
            body["sub"] = "all" if m.subscription == "all" else sorted(m.subscription)
        else:
            raise LocalProtocolError("a sub message needs a subscription or a sealed one")
        body["cursor"] = _cursor_wire(m.cursor)
        if m.revocations:
            body["revs"] = list(m.revocations)
        return body
    if isinstance(m, Changes):
        return {"t": "changes", "vvs": dict(m.vvs), "cursor": _cursor_wire(m.cursor), "full": m.full}
    if isinstance(m, (Offer, Want)):
        return {"t": "offer" if isinstance(m, Offer) else "want", "vvs": dict(m.vvs)}
    if isinstance(m, Delta):
        return {"t": "delta", "p": m.partition, "data": m.data, "last": m.last}
    if isinstance(m, Ack):
        return {"t": "ack", "p": list(m.partitions)}
    if isinstance(m, Error):
        return {"t": "error", "code": m.code, "detail": m.detail}
    return {"t": "bye"}


MAX_REVOCATIONS = 1000


def _revocations(f: "_Fields") -> tuple[bytes, ...]:
    revs = f.raw.get("revs", [])
    ok = isinstance(revs, list) and len(revs) <= MAX_REVOCATIONS and all(
        isinstance(r, bytes) and 0 < len(r) <= 1024 for r in revs)
    if not ok:
        raise RemoteProtocolError(f"{f.t}.revs: at most {MAX_REVOCATIONS} revocations of at most 1 KiB")
    return tuple(revs)


class _Fields:
    """Typed getters over one wire map; every miss is a RemoteProtocolError."""

    def __init__(self, raw: Mapping[str, Any], required: set[str], optional: set[str] = set()) -> None:
        keys = set(raw) - {"t"}
        if not required <= keys or not keys <= required | optional:
            raise RemoteProtocolError(f"{raw.get('t')}: fields {sorted(keys)} (want {sorted(required)})")
        self.raw, self.t = raw, raw["t"]

    def get(self, key: str, check: Callable[[Any], bool], what: str) -> Any:
        value = self.raw.get(key)
        if not check(value):
            raise RemoteProtocolError(f"{self.t}.{key}: {what}")
        return value


def _is_int(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _is_text(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None


def _is_bytes(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, bytes) and low <= len(v) <= high


def _is_partition(v: Any) -> bool:
    return isinstance(v, str) and is_valid_partition(v)


def _cursor(f: _Fields, key: str) -> Cursor | None:
    raw = f.raw.get(key)
    if raw is None:
        return None
    ok = (isinstance(raw, list) and len(raw) == 3 and _is_text(_HEX16)(raw[0])
          and _is_int(0, MAX_SEQ)(raw[1]) and _is_text(_HEX32)(raw[2]))
    if not ok:
        raise RemoteProtocolError(f"{f.t}.{key}: not [epoch, seq, sub_hash]")
    return Cursor(Epoch(raw[0]), raw[1], raw[2])


def _vvs(f: _Fields) -> dict[str, bytes]:
    raw = f.get("vvs", lambda v: isinstance(v, dict) and len(v) <= MAX_PARTITIONS, "not a map")
    for partition, vv in raw.items():
        if not _is_partition(partition) or not isinstance(vv, bytes):
            raise RemoteProtocolError(f"{f.t}.vvs: bad entry for {str(partition)[:80]!r}")
        decode_vv(vv)
    return dict(raw)


def _subscription(f: _Fields) -> Subscription:
    raw = f.raw["sub"]
    if raw == "all":
        return "all"
    if not isinstance(raw, list) or len(raw) > MAX_PARTITIONS or not all(_is_text(_HEX32)(u) for u in raw):
        raise RemoteProtocolError("sub.sub: not \"all\" or a list of 32-hex user ids")
    return frozenset(raw)


def from_wire(raw: Any) -> Message:
    """The message of one wire map; RemoteProtocolError unless it is exactly well formed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("t"), str):
        raise RemoteProtocolError("a message is a map with a type 't'")
    t = raw["t"]
    if t == "hello":
        # ``instance`` is optional here only so that a version-1 hello (which has none)
        # reaches the version check and is refused as such; the protocol requires it.
        f = _Fields(raw, {"v", "min_v", "device", "tag", "nonce", "clock", "epoch"}, {"instance"})
        clock = f.get("clock", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v) and 0 <= v < 2**40, "not a finite time")
        instance = f.get("instance", _is_text(_HEX32), "not 32 hex") if "instance" in raw else None
        return Hello(f.get("v", _is_int(0, 65535), "bad version"), f.get("min_v", _is_int(0, 65535), "bad version"),
                     DeviceId(f.get("device", _is_text(_HEX64), "not 64 hex")),
                     f.get("tag", _is_text(_HEX16), "not 16 hex"), f.get("nonce", _is_bytes(32, 32), "not 32 bytes"),
                     float(clock), Epoch(f.get("epoch", _is_text(_HEX16), "not 16 hex")),
                     None if instance is None else Instance(instance))
    if t == "proof":
        f = _Fields(raw, {"mac"}, {"sig", "pub"})
        return Proof(f.get("mac", _is_bytes(32, 32), "not 32 bytes"),
                     f.get("sig", lambda v: v is None or _is_bytes(64, 64)(v), "not 64 bytes"),
                     f.get("pub", lambda v: v is None or _is_bytes(32, 32)(v), "not 32 bytes"))
    if t == "sub":
        if "box" in raw:
            f = _Fields(raw, {"box", "cursor"}, {"revs"})
            return Sub(None, f.get("box", _is_bytes(16, 16 * MAX_PARTITIONS + 16), "bad box"), _cursor(f, "cursor"),
                       _revocations(f))
        f = _Fields(raw, {"sub", "cursor"}, {"revs"})
        return Sub(_subscription(f), None, _cursor(f, "cursor"), _revocations(f))
    if t == "changes":
        f = _Fields(raw, {"vvs", "cursor", "full"})
        cursor = _cursor(f, "cursor")
        if cursor is None:
            raise RemoteProtocolError("changes.cursor: missing")
        return Changes(_vvs(f), cursor, f.get("full", lambda v: isinstance(v, bool), "not a bool"))
    if t in ("offer", "want"):
        f = _Fields(raw, {"vvs"})
        return Offer(_vvs(f)) if t == "offer" else Want(_vvs(f))
    if t == "delta":
        f = _Fields(raw, {"p", "data", "last"})
        return Delta(f.get("p", _is_partition, "not a partition"), f.get("data", _is_bytes(0, 8 * 2**20), "not bytes"),
                     f.get("last", lambda v: isinstance(v, bool), "not a bool"))
    if t == "ack":
        f = _Fields(raw, {"p"})
        parts = f.get("p", lambda v: isinstance(v, list) and len(v) <= MAX_PARTITIONS and all(map(_is_partition, v)),
                      "not a list of partitions")
        return Ack(tuple(parts))
    if t == "error":
        f = _Fields(raw, {"code", "detail"})
        return Error(f.get("code", _is_text(_CODE), "not a code"),
                     f.get("detail", lambda v: isinstance(v, str) and len(v) <= 1000, "not text"))
    if t == "bye":
        _Fields(raw, set())
        return Bye()
    raise RemoteProtocolError(f"unknown message type {t[:40]!r}")
