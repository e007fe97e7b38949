"""PartitionDoc: the only module that imports the CRDT engine (Loro).

Layout of a partition document: root map ``r``; one *mergeable* map per raw record
(``ensure_mergeable_map(record_id)``, so two devices creating the same record id merge
instead of one silently replacing the other) holding

* ``k``: the record kind,
* ``c``: the creation fields as one canonical JSON string (written once),
* ``e``: a mergeable list of events, each one canonical JSON string (append-only).

JSON strings rather than Loro maps: Loro does not keep object key order and turns some
values' types; a string round-trips exactly, and the fold never relies on the engine's
last-writer-wins anyway (DESIGN §3).
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import msgpack
import orjson
from loro import ID, EncodedBlobMode, ExportMode, LoroDoc, LoroList, VersionVector

from syncd.errors import InvalidRecordError
from syncd.logs.records import RECORD_KINDS, CreateRecord, Mutation, RawRecord, canonical_json, matches_canonical

_ROOT = "r"
_RECORD_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_JSON_TEXT = 256 * 1024  # one creation-field set or one event, as stored
EMPTY_VERSION: bytes = VersionVector().encode()  # type: ignore[no-untyped-call]
# A sync chunk is one Loro update blob or, from protocol 3 on, several of a partition's
# stored update rows: this prefix, then a msgpack array of the blobs (a Loro blob starts
# with b"loro", so the two never look alike).
UPDATE_LIST = b"syncd-updates\x00"
MAX_UPDATE_LIST = 100_000  # blobs in one chunk (a partition's update tail is far shorter)


# All strings one peer update may insert (UTF-8 bytes). Equal to the sync protocol's
# MAX_ASSEMBLY (one partition's pieces, imported as one blob): a lower cap would refuse an
# honest first sync of a large partition forever. Loro does not compress update strings, so
# the bytes received bound this already; the cap is the explicit limit.
MAX_UPDATE_TEXT = 64 * 1024 * 1024
# Events one update may add to one record's list: Loro's import cost grows faster than
# linearly with the values added to a single list (100k: 0.15 s; 400k: 1.7 s; 800k: 6 s),
# while the same count spread over many records stays linear.
MAX_UPDATE_EVENTS_PER_RECORD = 100_000
# The most operations a first import (into an empty document) may carry to be imported
# attached and judged on the state it builds (``_fresh_records``): what the state can cost
# before anything is checked (Loro builds a list of 200k values in ~0.4 s). A school's
# learner has a few thousand; a larger first import takes the detached way.
FRESH_ATTACHED_MAX_OPS = 200_000


# orjson is exact for integers within 64 bits; a number of 19 digits may be beyond them.
# In compact JSON a number follows ':', ',' or '['; digits inside a string (an id) follow
# a quote or a letter. To find such numbers fast, texts are mapped byte for byte: digits
# to '0', the three characters a number follows to ':', '-' kept, everything else to ' '.
_NUMBER_SHAPE = bytes(
    ord("0") if chr(i).isdigit() and i < 128 else ord(":") if chr(i) in ":,[" else ord("-") if i == ord("-") else ord(" ")
    for i in range(256)
)
_LONG_NUMBERS = (b":" + b"0" * 19, b":-" + b"0" * 19)


def pack_updates(blobs: Sequence[bytes]) -> bytes:
    """One sync chunk from a partition's update blobs, in commit order."""
    if len(blobs) == 1:
        return blobs[0]
    packed: bytes = msgpack.packb(list(blobs))
    return UPDATE_LIST + packed


def split_chunk(data: bytes) -> list[bytes]:
    """The update blobs of a sync chunk (``pack_updates``); InvalidRecordError if malformed."""
    if not data.startswith(UPDATE_LIST):
        return [data]
    try:
        blobs = msgpack.unpackb(data[len(UPDATE_LIST):], max_array_len=MAX_UPDATE_LIST, max_map_len=0, max_ext_len=0)
    except (ValueError, msgpack.UnpackException) as exc:
        raise InvalidRecordError("data", f"a malformed update list: {type(exc).__name__}: {exc}") from None
    if not isinstance(blobs, list) or not blobs or not all(isinstance(b, bytes) for b in blobs):
        raise InvalidRecordError("data", "an update list must be a non-empty list of update blobs")
    return blobs


def version_covers(version: bytes, point: bytes) -> bool:
    """Whether a holder of ``version`` holds every op of ``point`` (encoded version vectors)."""
    try:
        covers: bool = VersionVector.decode(version).includes_vv(VersionVector.decode(point))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # undecodable: covers nothing (loro reports it as a Rust panic)
        return False
    return covers


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _within_64_bits(texts: Iterable[str]) -> bool:
    """No text holds a number that may pass 64 bits (so orjson reads them all exactly)."""
    shape = "\n".join(texts).encode().translate(_NUMBER_SHAPE)
    return not any(long in shape for long in _LONG_NUMBERS)


def _orjson_loads(text: str) -> Any:
    """orjson's reading of ``text`` (three times faster than the standard library's on
    record texts), or the standard library's where orjson refuses it. Exact only for
    numbers within 64 bits (beyond, orjson reads a float): callers checked that
    (``_within_64_bits``), compare the result with a canonical text (equal serialisations
    mean equal values) or read Loro's own JSON, whose numbers are all 64-bit."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _decode_bodies(bodies: Iterable[tuple[str, Any]]) -> list[RawRecord]:
    """Our own records from their stored bodies ({"k", "c", "e"}), checked at once for
    numbers beyond orjson."""
    bodies = list(bodies)
    texts = [text for _, body in bodies for text in (body["c"], *(body.get("e") or ()))]
    loads = _orjson_loads if _within_64_bits(texts) else json.loads
    return [RawRecord(record_id, body["k"], loads(body["c"]), [loads(e) for e in body.get("e") or ()])
            for record_id, body in bodies]


def _strict_json(text: object, where: str) -> dict[str, Any]:
    """A JSON object from its stored text, which must be the canonical serialisation
    (``records.canonical_json``) that every honest writer stores. That one comparison
    refuses NaN and infinities (canonical_json cannot write them), lone surrogates (an
    escape that the canonical form writes differently) and any second spelling of the same
    value, so every device hashes and folds the same bytes."""
    if not isinstance(text, str) or len(text) > MAX_JSON_TEXT:
        raise InvalidRecordError(where, "must be a JSON text of at most 256 KiB")
    for loads in (_orjson_loads, json.loads):  # the second only when the first was inexact
        try:
            value = loads(text)
        except ValueError as exc:
            raise InvalidRecordError(where, f"invalid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidRecordError(where, "must be a JSON object")
        if matches_canonical(value, text):  # orjson's comparison where it is exact
            return value
        try:
            canonical = canonical_json(value)
        except ValueError:  # NaN, Infinity, 1e999
            raise InvalidRecordError(where, "invalid JSON: holds NaN or an infinite number") from None
        if canonical == text:
            return value
    raise InvalidRecordError(where, "not in canonical form (compact, floats as repr, no escapes but the necessary ones)")


@dataclass(frozen=True)
class ImportOutcome:
    """What a plain import did: whether anything new arrived, and whether some of it
    waits for missing dependencies."""

    changed: bool
    pending: bool


@dataclass(frozen=True)
class CheckedImport:
    """What a checked import (``PartitionDoc.import_checked``) did: whether anything was
    new, the records it touched, and the update blob to store for it (the peer's blob as it
    came, or one export of what a list of blobs added)."""

    changed: bool
    touched: frozenset[str]
    update: bytes = b""
    # The new versions of the touched records, decoded strictly: a first import judged on
    # its state (every record), or an import judged by its operations (``previous`` given).
    records: list[RawRecord] | None = None
    detached: bool = False  # the document was left detached (``import_checked``)


# A partition with more update rows than this since its snapshot gets a new snapshot
# where that is cheap (a rebuild worker has the document loaded; an import into a
# partition that is not hot has it loaded for the import): every load of the document
# pays for its tail (on a school S learner whose snapshot alone loads in 0.6-0.7 ms, the
# first update row adds ~0.55 ms, each further one ~0.06 ms), and a receiver's partitions
# grow one update row a sync. A snapshot costs about 2 ms more than the import (attach,
# export, 220 KB written), once in 8.
COMPACT_TAIL = 8


def import_compact_point(partition: str) -> int:
    """The tail length past which an import into ``partition`` (not hot) stores a
    snapshot: COMPACT_TAIL give or take half, fixed per partition, so that partitions
    that grow together (a receiver's learners, one update row each a sync) do not all
    take their snapshot in the same sync (school S's 50: a 0.34 s sync every ninth)."""
    return COMPACT_TAIL // 2 + zlib.crc32(partition.encode()) % COMPACT_TAIL


# A Loro blob starts with a 4-byte magic, a 16-byte checksum and a 2-byte encode mode;
# mode 4 is the (fast) updates encoding every Loro 1.x export of updates uses, and the
# importer decodes a blob by that field (a test pins this against decode_import_blob_meta,
# which reads the whole blob: 0.7 ms on a learner's partition).
_UPDATES_HEADER = (b"loro", b"\x00\x04")


def _import_detached(doc: LoroDoc, blobs: Sequence[bytes]) -> None:
    """Detach ``doc`` (its state stays as it is) and import ``blobs`` into its op log, in
    the order given (commit order: each may depend on the one before); InvalidRecordError
    for bytes Loro cannot read."""
    doc.detach()
    for blob in blobs:
        try:
            doc.import_(blob)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # loro reports undecodable bytes as a Rust panic
            raise InvalidRecordError("data", f"not a valid update: {type(exc).__name__}: {exc}") from None


def _check_update_blob(blob: bytes) -> None:
    """InvalidRecordError unless ``blob`` is a Loro update blob (not a snapshot: its
    state could say anything its operations do not)."""
    if blob[:4] == _UPDATES_HEADER[0] and blob[20:22] == _UPDATES_HEADER[1]:
        return
    try:
        meta = LoroDoc.decode_import_blob_meta(blob, False)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # undecodable bytes surface as a Rust panic
        raise InvalidRecordError("data", f"not a valid update: {type(exc).__name__}: {exc}") from None
    if meta.mode != EncodedBlobMode.Updates:  # (an older encoding of updates passes)
        mode = str(meta.mode).rsplit(".", 1)[-1]  # a pyo3 enum: no .value, despite the stub
        raise InvalidRecordError("data", f"only update blobs are accepted, not {mode}")


class NeedsDetachedImport(Exception):
    """An attached import met what only the previous state can judge (a record created
    again, creation fields written again): the document now holds the chunk; reload it
    and import detached."""


_MERGEABLE = "\U0001f91d:$" + _ROOT + ">"  # Loro's name for a mergeable child of root map r


# --- checking a peer's update by its operations ---------------------------------------
# Loro's JSON update format (``export_json_updates``): {"changes": [{"id", "deps", "lamport",
# "timestamp", "msg", "ops": [{"container": "cid:...", "counter", "content": {...}}]}]}.
# A map op's content is {"type": "insert", "key", "value"} or {"type": "delete", "key"}; a
# list op's is {"type": "insert", "pos", "value": [values]} or {"type": "delete", ...}; other
# container types have other shapes. Values: JSON scalars, binary as a list of byte ints,
# a child container as the string "🦜:cid:...", and a mergeable child as a binary *marker*
# (magic 00 'L' 'M' 01, kind byte, CRC-24 of (parent id, key, kind)) in the parent's slot.
_ROOT_CID = "cid:root-" + _ROOT + ":Map"
_RECORD_CID = re.compile("^cid:root-" + re.escape(_MERGEABLE) + "([0-9a-f]{32}):Map$")
_EVENTS_CID = re.compile("^cid:root-" + re.escape(_MERGEABLE) + "([0-9a-f]{32})>e:List$")
_CONTAINER_REF = "\U0001f99c:"  # how the JSON format writes a child container as a value
_MAP_KIND, _LIST_KIND = 0, 1  # Loro ContainerType.to_u8


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _root_cid_bytes(name: str, kind: int) -> bytes:
    encoded = name.encode()
    return bytes([0x80 | kind]) + _leb128(len(encoded)) + encoded


_MARKER_DOMAIN = b"loro.mergeable.marker.v1"


def _marker_prefix(parent_root_name: str) -> int:
    """The CRC-32 of the marker's domain and parent part (the same for every key)."""
    parent = _root_cid_bytes(parent_root_name, _MAP_KIND)
    return zlib.crc32(_MARKER_DOMAIN + _leb128(len(parent)) + parent)


_RECORD_MARKER_PREFIX = _marker_prefix(_ROOT)


def _marker(parent_root_name: str, key: str, kind: int, *, prefix: int | None = None) -> list[int]:
    """The binary value Loro stores in a map slot for ``ensure_mergeable_*(key)`` (as the
    JSON format writes it: a list of byte values). Mirrors loro_common::mergeable_marker:
    MAGIC + kind + CRC-24(domain, len-prefixed parent id bytes, len-prefixed key, kind);
    the tests compare it with what Loro writes. ``prefix``: ``_marker_prefix(parent)``,
    precomputed (a record's marker is checked for every record of an update)."""
    start = _marker_prefix(parent_root_name) if prefix is None else prefix
    key_bytes = key.encode()
    crc = zlib.crc32(_leb128(len(key_bytes)) + key_bytes + bytes([kind]), start) & 0xFFFFFF
    return [0x00, 0x4C, 0x4D, 0x01, kind, (crc >> 16) & 0xFF, (crc >> 8) & 0xFF, crc & 0xFF]


@dataclass
class _UpdateCheck:
    """What a walk over an update's operations saw (checked against the state at the end:
    Loro lists changes by peer, not causally, so a record's ops may precede its creation)."""

    created: set[str] = field(default_factory=set)          # record maps created
    lists_created: set[str] = field(default_factory=set)    # records whose "e" list was created
    written: dict[tuple[str, str], str] = field(default_factory=dict)  # (record, k|c) -> value
    records_used: set[str] = field(default_factory=set)     # records whose map was written
    lists_used: set[str] = field(default_factory=set)       # records whose "e" list was written
    text_bytes: int = 0
    containers: dict[str, tuple[str, str]] = field(default_factory=dict)  # cid -> (what, record)
    pushed: dict[str, list[str]] = field(default_factory=dict)  # record -> event texts it gains

    def _container(self, container: str) -> tuple[str, str]:
        known = self.containers.get(container)
        if known is None:
            record = _RECORD_CID.match(container)
            events = None if record else _EVENTS_CID.match(container)
            known = ("record", record.group(1)) if record else ("events", events.group(1)) if events else ("", "")
            self.containers[container] = known
        return known

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str) or value.startswith(_CONTAINER_REF):
            raise InvalidRecordError(where, "must be a string (a JSON text), not another value or a container")
        if len(value) > MAX_JSON_TEXT:
            raise InvalidRecordError(where, "must be a JSON text of at most 256 KiB")
        self.text_bytes += _utf8_length(value)
        if self.text_bytes > MAX_UPDATE_TEXT:
            raise InvalidRecordError("data", f"the update inserts more than {MAX_UPDATE_TEXT >> 20} MiB of text")
        return value

    def op(self, container: object, content: object) -> None:
        if not isinstance(container, str) or not isinstance(content, dict):
            raise InvalidRecordError("data", "an operation the layout does not know")
        kind = content.get("type")
        if container == _ROOT_CID:
            key = content.get("key")
            where = f"records.{str(key)[:40]}"
            if kind != "insert":
                raise InvalidRecordError(where, f"a {str(kind)[:20]} operation on the record map (records are never removed)")
            if not isinstance(key, str) or not _RECORD_ID.match(key):
                raise InvalidRecordError(where, "record ids are 32 lowercase hex")
            if content.get("value") != _marker(_ROOT, key, _MAP_KIND, prefix=_RECORD_MARKER_PREFIX):
                raise InvalidRecordError(where, "a record must be a mergeable map")
            self.created.add(key)
            return
        what, record_id = self._container(container)
        if what == "record":
            key = content.get("key")
            where = f"records.{record_id}.{str(key)[:40]}"
            if kind != "insert":
                raise InvalidRecordError(where, f"a {str(kind)[:20]} operation on a record: creation fields are never rewritten or removed")
            self.records_used.add(record_id)
            if key == "e":
                if content.get("value") != _marker(_MERGEABLE + record_id, "e", _LIST_KIND):
                    raise InvalidRecordError(where, "events must be a mergeable list")
                self.lists_created.add(record_id)
            elif key in ("k", "c"):
                value = self.string(content.get("value"), where)
                if self.written.setdefault((record_id, key), value) != value:
                    raise InvalidRecordError(where, "written twice with different values")
            else:
                raise InvalidRecordError(where, "a record holds exactly k, c and e")
            return
        if what == "events":
            where = f"records.{record_id}.e"
            if kind != "insert":
                raise InvalidRecordError(where, f"events were removed or rewritten (a {str(kind)[:20]} operation on an append-only list)")
            values = content.get("value")
            if not isinstance(values, list):
                raise InvalidRecordError(where, "an operation the layout does not know")
            pushed = self.pushed.setdefault(record_id, [])
            for value in values:
                pushed.append(self.string(value, where))
            if len(pushed) > MAX_UPDATE_EVENTS_PER_RECORD:
                raise InvalidRecordError(where, f"more than {MAX_UPDATE_EVENTS_PER_RECORD} events added in one update")
            self.lists_used.add(record_id)
            return
        raise InvalidRecordError("data", f"the update writes outside the partition's record layout ({container[:80]})")


_RECORD_CID_PREFIX = "cid:root-" + _MERGEABLE



def _fresh_records(value: Any, ops: int, holds_events_list: Callable[[str], bool]) -> list[RawRecord] | None:
    """The records of a document built by one first import, if its state (Loro's deep
    value with container ids) and its operation count prove that the import did nothing
    but what honest writers do; None where they do not prove it (the caller then judges
    the operations one by one, which words the refusal, or accepts what is honest but
    unusual, such as one record created twice with equal fields).

    The proof: the state holds only root map r, whose every entry is the mergeable map of
    a record holding k and c as strings and, if any, e as its mergeable list of strings;
    building that state takes one operation per map slot (r's entry, k, c, e) and one per
    list value, and Loro counts every operation (a delete or an overwrite too, and any
    write to a container the state does not show). So ``ops`` equal to that sum leaves
    no room for any other operation.

    The deep value names every non-empty container by its id, but shows an empty
    mergeable container as a bare value: an empty e reads ``[]`` whether the slot holds
    the mergeable list or a plain list value, so ``holds_events_list(record_id)`` asks
    the document which one it is. (An empty container in k or c reads ``""``, which no
    kind or JSON text is: strict decoding refuses it.) Content (kinds, JSON) is decoded
    strictly here, as ``records(strict=True)`` does: InvalidRecordError."""
    if type(value) is not dict or len(value) != 1 or type(value.get(_ROOT)) is not dict:
        return None
    root = value[_ROOT]
    if root.get("cid") != _ROOT_CID or type(root.get("value")) is not dict:
        return None
    needed = text = 0
    bodies: list[tuple[str, dict[str, Any]]] = []
    for record_id, entry in root["value"].items():
        if type(entry) is not dict or entry.get("cid") != _RECORD_CID_PREFIX + record_id + ":Map":
            return None
        body = entry.get("value")
        if type(body) is not dict or type(body.get("k")) is not str or type(body.get("c")) is not str:
            return None
        events = body.get("e")
        if events is None:
            if len(body) != 2:
                return None
            needed += 3
            bodies.append((record_id, {"k": body["k"], "c": body["c"]}))
            continue
        if len(body) != 3:
            return None
        if type(events) is list and not events:
            if not holds_events_list(record_id):
                return None
            values: list[Any] = []
        elif type(events) is dict and events.get("cid") == _RECORD_CID_PREFIX + record_id + ">e:List":
            values = events.get("value")  # type: ignore[assignment]
            if type(values) is not list or not all(type(v) is str for v in values):
                return None
        else:
            return None
        if len(values) > MAX_UPDATE_EVENTS_PER_RECORD:
            return None  # (the operation walk words the refusal)
        needed += 4 + len(values)
        text += sum(map(_utf8_length, values))
        bodies.append((record_id, {"k": body["k"], "c": body["c"], "e": values}))
    if needed != ops:
        return None
    text += sum(_utf8_length(body["k"]) + _utf8_length(body["c"]) for _, body in bodies)
    if text > MAX_UPDATE_TEXT:
        return None
    return [PartitionDoc._strict_record(record_id, body) for record_id, body in bodies]


class PartitionDoc:
    """One partition's CRDT document."""

    def __init__(self, doc: LoroDoc) -> None:
        self._doc = doc
        self._root = doc.get_map(_ROOT)

    @classmethod
    def create(cls, peer_id: int) -> "PartitionDoc":
        doc = LoroDoc()  # type: ignore[no-untyped-call]
        doc.peer_id = peer_id
        return cls(doc)

    @classmethod
    def load(cls, blobs: Sequence[bytes], peer_id: int) -> "PartitionDoc":
        """A document from a snapshot and/or update blobs (any order; fastest in commit
        order, the snapshot first, as the store keeps them)."""
        doc = LoroDoc()  # type: ignore[no-untyped-call]
        # One import at a time, not ``import_batch``: a batch detaches the document and
        # recomputes its whole state at the end, where each import onto the lazily loaded
        # snapshot applies its own changes only. A learner's snapshot with one update:
        # 1.0 ms against 2.4 (with 256 updates, 3.4 against 4.4; updates alone, no slower).
        for blob in blobs:
            doc.import_(blob)
        doc.peer_id = peer_id
        return cls(doc)

    # --- local writes ---------------------------------------------------------------
    def apply(self, mutations: Iterable[Mutation]) -> bytes:
        """Apply mutations as one commit; return the update bytes they produced."""
        before = self._doc.oplog_vv
        for mutation in mutations:
            record = self._root.ensure_mergeable_map(mutation.record_id)
            if isinstance(mutation, CreateRecord):
                record.insert("k", mutation.kind)
                record.insert("c", canonical_json(dict(mutation.fields)))
                record.ensure_mergeable_list("e")
            else:
                record.ensure_mergeable_list("e").push(canonical_json(dict(mutation.event)))
        self._doc.commit()
        update: bytes = self._doc.export(ExportMode.Updates(before))
        return update

    # --- reading --------------------------------------------------------------------
    def records(self, *, strict: bool = False) -> list[RawRecord]:
        """Decode every raw record.

        ``strict`` (a peer's data, DESIGN §6 step 4): any malformed record raises
        InvalidRecordError. Otherwise (our own committed data, validated when it came in)
        the decoding trusts the layout."""
        value: Any = self._root.get_deep_value()
        if not isinstance(value, dict):
            if strict:
                raise InvalidRecordError("document", "the root is not a map")
            return []
        if strict:
            return [self._strict_record(record_id, body) for record_id, body in value.items()]
        return _decode_bodies(value.items())

    @staticmethod
    def _strict_record(record_id: object, body: object, *, missing: bool = False) -> RawRecord:
        where = f"records.{str(record_id)[:40]}"
        if not isinstance(record_id, str) or not _RECORD_ID.match(record_id):
            raise InvalidRecordError(where, "record ids are 32 lowercase hex")
        if missing:
            raise InvalidRecordError(where, "a record disappeared")
        if not isinstance(body, dict) or set(body) - {"k", "c", "e"} or "k" not in body or "c" not in body:
            raise InvalidRecordError(where, "a record holds exactly k, c and e")
        if body["k"] not in RECORD_KINDS:
            raise InvalidRecordError(f"{where}.k", "unknown record kind")
        events = body.get("e", [])
        if not isinstance(events, list):
            raise InvalidRecordError(f"{where}.e", "events must be a list")
        return RawRecord(
            record_id,
            body["k"],
            _strict_json(body["c"], f"{where}.c"),
            [_strict_json(e, f"{where}.e") for e in events],
        )

    def record_ids(self) -> list[str]:
        return list(self._root.keys())

    def record_count(self) -> int:
        return len(self._root)

    # --- versions and sync ------------------------------------------------------------
    def version(self) -> bytes:
        """The encoded version vector of everything this document holds."""
        encoded: bytes = self._doc.oplog_vv.encode()
        return encoded

    def export_snapshot(self) -> bytes:
        data: bytes = self._doc.export(ExportMode.Snapshot())
        return data

    def export_since(self, version: bytes) -> bytes:
        """The updates a holder of ``version`` lacks."""
        data: bytes = self._doc.export(ExportMode.Updates(VersionVector.decode(version)))
        return data

    def import_(self, data: bytes) -> ImportOutcome:
        """Import update bytes unchecked (our own or already checked ones);
        InvalidRecordError if the engine cannot parse them."""
        before = self._doc.oplog_vv.encode()
        try:
            status = self._doc.import_(data)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # loro reports undecodable bytes as a Rust panic (BaseException)
            raise InvalidRecordError("data", f"not a valid update: {type(exc).__name__}: {exc}") from None
        return ImportOutcome(self._doc.oplog_vv.encode() != before, status.pending is not None)

    def check_update(self, data: bytes) -> None:
        """Refuse a peer's update bytes unless they fit the layout (``import_checked``),
        leaving this document as it was (the check runs on a fork)."""
        self.fork().import_checked(data)

    def import_checked(self, data: bytes, before_state: Callable[[frozenset[str]], None] | None = None, *,
                       holds: Callable[[str], bool] | None = None,
                       previous: Callable[[str], RawRecord | None] | None = None,
                       stay_detached: bool = False, by_state: bool = True) -> CheckedImport:
        """Import a peer's sync chunk (one update blob, or a list of them: ``split_chunk``)
        once every operation it carries fits the layout.

        **On InvalidRecordError this document may hold the refused operations**: the caller
        must discard it and reload the committed one. Loro cannot roll an import back, and
        forking a loaded document to import into costs milliseconds each time, so refusal,
        the rare case, pays instead.

        Checked by the operations themselves (so junk that a later operation deletes or
        overwrites is seen), read back in Loro's JSON form. Allowed, and nothing else:
        creating a mergeable record map under root map r (ids 32 lowercase hex); on such a
        record, inserting string values at "k" and "c" (equal to any value already there or
        elsewhere in the update) and creating its mergeable list "e"; inserting string
        values into a record's "e". Each string is at most 256 KiB; all of them at most
        MAX_UPDATE_TEXT (64 MiB). No deletes, no other container types, keys, value types,
        commit messages, snapshots, or changes whose dependencies this document lacks
        (their operations could not be read, and would be applied unchecked once the
        dependencies came). Content (kinds, JSON texts) is left to strict decoding of the
        touched records.

        Three ways, the same verdicts:

        * *by state* (a first import, into an empty document, unless ``by_state`` is
          False): imported, then judged on the state it built and its operation count
          (``_fresh_records``; a third of the cost of reading every operation back), the
          records decoded on the way (``CheckedImport.records``). Where the state does not
          prove the import honest, the document is emptied and the import judged detached.
        * *detached* (otherwise, by default): the document is detached, so the import only extends
          the op log, and the state changes only once every operation passed.
          ``before_state`` is called with the ids of the records the update touches while
          the state is still the previous one (to read their previous versions).
        * *by operations* (``holds`` and ``previous`` given: which record ids the partition
          held, and a held record's committed version): detached too, but the new version
          of each touched record is built from what the operations write (a created
          record's k, c and events; the events pushed to a held one, after ``previous``'s)
          and decoded strictly (``CheckedImport.records``), so the state never needs to
          catch up: with ``stay_detached`` the document is left detached
          (``CheckedImport.detached``: attach it before reading it again, or drop it).
          Re-attaching a loaded document recomputes its state, ~0.5 ms on a school's
          partition: most of an incremental sync's import of a partition not in memory.
          This way is taken only where the operations alone prove that records just
          grew: a chunk that creates a record the partition held, or writes "k"/"c" of a
          record it does not create, raises NeedsDetachedImport (the document holds the
          chunk: reload it and import detached).
        """
        blobs = split_chunk(data)
        for blob in blobs:
            _check_update_blob(blob)
        if by_state and self._doc.len_ops == 0:
            fresh = self._import_fresh(blobs)
            if fresh is not None:
                return fresh
        by_operations = holds is not None and previous is not None
        doc = self._doc
        start = doc.oplog_vv
        _import_detached(doc, blobs)
        if doc.export_pending_updates() is not None:  # some change still waits for its dependencies
            raise InvalidRecordError("data", "the update depends on changes this partition does not have")
        end = doc.oplog_vv
        if end.encode() == start.encode():
            doc.attach()
            return CheckedImport(changed=False, touched=frozenset())
        try:
            changes = _orjson_loads(doc.export_json_updates(start, end))["changes"]
        except (KeyError, TypeError, ValueError):
            raise InvalidRecordError("data", "the update could not be read back") from None
        check = _UpdateCheck()
        for change in changes:
            if change.get("msg") not in (None, ""):
                raise InvalidRecordError("data", "commit messages are not allowed")
            for op in change.get("ops") or ():
                check.op(op.get("container"), op.get("content"))
        if by_operations:
            assert holds is not None
            # The only two things the previous state is needed to judge.
            if any(holds(record_id) for record_id in check.created) or any(
                    record_id not in check.created for record_id, _ in check.written):
                raise NeedsDetachedImport()
        self._check_references(check, holds if by_operations else None)
        touched = frozenset(check.created | check.records_used | check.lists_used)
        update: bytes = blobs[0] if len(blobs) == 1 else doc.export(ExportMode.Updates(start))
        if by_operations:
            assert previous is not None
            records = [self._grown_record(record_id, check, previous) for record_id in sorted(touched)]
            if not stay_detached:
                doc.attach()
            return CheckedImport(changed=True, touched=touched, update=update, records=records,
                                 detached=stay_detached)
        if before_state is not None:
            before_state(touched)
        doc.attach()
        return CheckedImport(changed=True, touched=touched, update=update)

    @staticmethod
    def _grown_record(record_id: str, check: _UpdateCheck, previous: Callable[[str], RawRecord | None]
                      ) -> RawRecord:
        """A touched record's new version from what the operations wrote (judged by
        ``_check_references`` already): a created one whole, or a held one's committed
        version plus the events pushed to it."""
        pushed = check.pushed.get(record_id, [])
        if record_id in check.created:
            body: dict[str, Any] = {key: check.written[(record_id, key)] for key in ("k", "c")
                                    if (record_id, key) in check.written}
            if record_id in check.lists_created or pushed:
                body["e"] = pushed
            return PartitionDoc._strict_record(record_id, body)
        held = previous(record_id)
        if held is None:
            raise InvalidRecordError(f"records.{record_id}", "written but never created")
        where = f"records.{record_id}.e"
        return RawRecord(record_id, held.kind, held.fields, [*held.events, *(_strict_json(e, where) for e in pushed)])

    def attach(self) -> None:
        """Bring a document left detached (``import_checked(stay_detached=True)``) up to date."""
        self._doc.attach()

    @property
    def detached(self) -> bool:
        return bool(self._doc.is_detached())

    def _import_fresh(self, blobs: Sequence[bytes]) -> CheckedImport | None:
        """A first import, attached, judged on the state it builds (``_fresh_records``):
        a third of the cost of judging each operation. None where the state does not prove
        the import honest: the document is emptied again, and the caller judges the
        operations. InvalidRecordError for blobs Loro cannot read, or content that
        strict decoding refuses (both ways refuse those alike)."""
        doc = self._doc
        _import_detached(doc, blobs)  # (the operations are counted before Loro builds any state of them)
        records = None
        if (doc.len_ops <= FRESH_ATTACHED_MAX_OPS and doc.export_pending_updates() is None
                and not self._has_commit_messages()):
            doc.attach()
            records = _fresh_records(doc.get_deep_value_with_id(), doc.len_ops, self._holds_events_list)
        if records is None:
            self._doc = LoroDoc()  # type: ignore[no-untyped-call]
            self._doc.peer_id = doc.peer_id
            self._root = self._doc.get_map(_ROOT)
            return None
        update = blobs[0] if len(blobs) == 1 else doc.export(ExportMode.Updates(VersionVector()))  # type: ignore[no-untyped-call]
        return CheckedImport(changed=bool(records), touched=frozenset(r.id for r in records), update=update,
                             records=records)

    def _holds_events_list(self, record_id: str) -> bool:
        """Whether slot e of the record's map holds its mergeable events list (not a value)."""
        entry = self._root.get(record_id)
        record: Any = getattr(entry, "container", None)
        events: Any = getattr(record.get("e"), "container", None) if record is not None else None
        return isinstance(events, LoroList) and getattr(events.id, "name", None) == _MERGEABLE + record_id + ">e"

    def _has_commit_messages(self) -> bool:
        """Whether any change this document holds carries a commit message (no honest
        writer sets one; the operation walk refuses them)."""
        for peer, (_, end) in self._doc.oplog_vv.to_spans().inner().items():
            counter = 0
            while counter < end:
                change = self._doc.get_change(ID(peer, counter))
                if change is None:
                    return True  # not readable as expected: let the operation walk judge
                if change.message:
                    return True
                counter = change.id.counter + change.len
        return False

    def _check_references(self, check: _UpdateCheck, holds: Callable[[str], bool] | None = None) -> None:
        """Every record written exists or is created, and so does every "e" list pushed to;
        k and c, where they already hold a value, are written with that same value.
        ``holds``: which records the partition holds (a record it does not hold need not be
        looked up in the state)."""
        for record_id in sorted(check.records_used | check.lists_used):
            where = f"records.{record_id}"
            entry = None if holds is not None and not holds(record_id) else self._root.get(record_id)
            container: Any = getattr(entry, "container", None) if entry is not None else None
            if container is None and record_id not in check.created:
                raise InvalidRecordError(where, "written but never created")
            if record_id in check.lists_used and record_id not in check.lists_created:
                events = container.get("e") if container is not None else None
                if getattr(events, "container", None) is None:
                    raise InvalidRecordError(f"{where}.e", "events pushed to a list never created")
            if container is not None:
                for key in ("k", "c"):
                    value = check.written.get((record_id, key))
                    old = container.get(key) if value is not None else None
                    if old is not None and getattr(old, "value", None) != value:
                        raise InvalidRecordError(f"{where}.{key}", "creation fields were rewritten")

    def records_named(self, record_ids: Iterable[str], *, strict: bool = False) -> list[RawRecord]:
        """Decode the named records (a name with no record raises in strict mode)."""
        out: list[RawRecord] = []
        ours: list[tuple[str, Any]] = []
        for record_id in record_ids:
            entry = self._root.get(record_id)
            body: Any = None
            if entry is not None:
                container = getattr(entry, "container", None)
                body = container.get_deep_value() if container is not None else getattr(entry, "value", None)
            if strict:
                out.append(self._strict_record(record_id, body, missing=entry is None))
            elif isinstance(body, dict) and "k" in body and "c" in body:
                ours.append((record_id, body))
        return out if strict else _decode_bodies(ours)

    def fork(self) -> "PartitionDoc":
        return PartitionDoc(self._doc.fork())

    def deep_value(self) -> Any:
        """Plain value of the document (for comparisons in tests; never compare bytes)."""
        return self._doc.get_deep_value()
