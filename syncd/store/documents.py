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
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import re

from loro import ExportMode, LoroDoc, VersionVector

from syncd.errors import InvalidRecordError
from syncd.logs.records import RECORD_KINDS, CreateRecord, Mutation, RawRecord, canonical_json

_ROOT = "r"
_RECORD_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_JSON_TEXT = 256 * 1024  # one creation-field set or one event, as stored
EMPTY_VERSION: bytes = VersionVector().encode()  # type: ignore[no-untyped-call]


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def _strict_json(text: object, where: str) -> dict[str, Any]:
    if not isinstance(text, str) or len(text) > MAX_JSON_TEXT:
        raise InvalidRecordError(where, "must be a JSON text of at most 256 KiB")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise InvalidRecordError(where, f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRecordError(where, "must be a JSON object")
    return value


@dataclass(frozen=True)
class ImportOutcome:
    """What an import did: whether anything new arrived, missing dependencies, and the
    ids of the records it touched (``foreign``: it also touched containers outside the
    layout above, which no honest peer writes)."""

    changed: bool
    pending: bool
    touched: frozenset[str] = frozenset()
    foreign: bool = False


_MERGEABLE = "\U0001f91d:$" + _ROOT + ">"  # Loro's name for a mergeable child of root map r


def _touched_records(diff: Any) -> tuple[set[str], bool]:
    """Record ids named by a Loro diff batch, and whether it touched anything else."""
    touched: set[str] = set()
    foreign = False
    for container, change in diff.get_diff():
        name = getattr(container, "name", None)
        if name == _ROOT:
            updated = getattr(getattr(change, "diff", None), "updated", None) or {}
            touched.update(str(key) for key in updated)
        elif isinstance(name, str) and name.startswith(_MERGEABLE):
            touched.add(name[len(_MERGEABLE):].split(">", 1)[0])
        else:
            foreign = True
    return touched, foreign


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
        """A document from a snapshot and/or update blobs (any order)."""
        doc = LoroDoc()  # type: ignore[no-untyped-call]
        if blobs:
            doc.import_batch(list(blobs))
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
        return [
            RawRecord(record_id, body["k"], json.loads(body["c"]), [json.loads(e) for e in body.get("e") or ()])
            for record_id, body in value.items()
        ]

    @staticmethod
    def _strict_record(record_id: object, body: object) -> RawRecord:
        where = f"records.{str(record_id)[:40]}"
        if not isinstance(record_id, str) or not _RECORD_ID.match(record_id):
            raise InvalidRecordError(where, "record ids are 32 lowercase hex")
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

    def import_(self, data: bytes, *, track: bool = False) -> ImportOutcome:
        """Import update bytes; InvalidRecordError if the engine cannot parse them.
        ``track``: also find the records the import touched (a diff of the two states)."""
        before = self._doc.oplog_vv.encode()
        frontiers = self._doc.state_frontiers if track else None
        try:
            status = self._doc.import_(data)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # loro reports undecodable bytes as a Rust panic (BaseException)
            raise InvalidRecordError("data", f"not a valid update: {type(exc).__name__}: {exc}") from None
        changed = self._doc.oplog_vv.encode() != before
        touched: set[str] = set()
        foreign = False
        if frontiers is not None and changed:
            touched, foreign = _touched_records(self._doc.diff(frontiers, self._doc.state_frontiers))
        return ImportOutcome(changed, status.pending is not None, frozenset(touched), foreign)

    def records_named(self, record_ids: Iterable[str], *, strict: bool = False) -> list[RawRecord]:
        """Decode the named records (a name with no record raises in strict mode)."""
        out: list[RawRecord] = []
        for record_id in record_ids:
            entry = self._root.get(record_id)
            body: Any = None
            if entry is not None:
                container = getattr(entry, "container", None)
                body = container.get_deep_value() if container is not None else getattr(entry, "value", None)
            if strict:
                out.append(self._strict_record(record_id, body))
            elif isinstance(body, dict) and "k" in body and "c" in body:
                out.append(RawRecord(record_id, body["k"], json.loads(body["c"]), [json.loads(e) for e in body.get("e") or ()]))
        return out

    def fork(self) -> "PartitionDoc":
        return PartitionDoc(self._doc.fork())

    def deep_value(self) -> Any:
        """Plain value of the document (for comparisons in tests; never compare bytes)."""
        return self._doc.get_deep_value()
