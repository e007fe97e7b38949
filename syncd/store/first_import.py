"""A peer's chunk into a partition that holds nothing, taken whole: checked, validated,
folded, its rows and snapshot ready to store.

This is most of a full sync's work (every learner of a school arrives so), and it needs
nothing of the store but the facility's dataset id: the daemon runs it in-process, or, for
a large school, in import worker processes (``store.import_workers``) beside the event
loop, so a full sync uses both cores. Both run this one function; its result travels
between processes as plain values (``to_wire`` / ``from_wire``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import msgpack

from syncd.logs.aggregate import derive
from syncd.logs.integrity import check_growth
from syncd.logs.state import PartitionState, group_of
from syncd.store import derived
from syncd.store.documents import PartitionDoc


@dataclass(frozen=True)
class FirstImport:
    """What a first import brings: ``records`` new raw records in ``groups`` derivation
    groups, every group's rows (``changes``, each replacing its group), the record index
    entries (id, kind, group text), and the document's snapshot and version vector."""

    partition: str
    records: int
    groups: int
    changes: Sequence[derived.GroupChange]
    index: Sequence[tuple[str, str, str]]
    snapshot: bytes
    version: bytes


def fold_first_import(partition: str, data: bytes, dataset_id: str, peer_id: int) -> FirstImport:
    """Take ``data`` into an empty document of ``partition``; InvalidRecordError if it is
    refused (as ``PartitionDoc.import_checked`` and ``logs.integrity`` judge)."""
    doc = PartitionDoc.create(peer_id)
    checked = doc.import_checked(data)
    records = checked.records if checked.records is not None else doc.records(strict=True)
    grown = check_growth({}, records)
    state = PartitionState.from_records(partition, ())
    touched = state.absorb(grown)
    rows = derive(state, touched, dataset_id)
    changes = [derived.diff_group(group, group_rows, None)[0] for group, group_rows in rows.items()]
    index = [(r.id, r.kind, derived.group_text(group_of(r))) for r in grown]
    return FirstImport(partition, len(grown), len(touched), changes, index, doc.export_snapshot(), doc.version())


def to_wire(result: FirstImport) -> list[Any]:
    return [result.partition, result.records, result.groups,
            [[change.group[0], change.group[1], change.upserts] for change in result.changes],
            result.index, result.snapshot, result.version]


def from_wire(item: Any) -> FirstImport:
    """A worker's result; TypeError or ValueError if it is not one."""
    partition, records, groups, changes, index, snapshot, version = item
    if not isinstance(snapshot, bytes) or not isinstance(version, bytes) or not isinstance(partition, str):
        raise TypeError("a first import's partition, snapshot and version are a string and bytes")
    return FirstImport(
        partition, int(records), int(groups),
        [derived.GroupChange((str(kind), str(key)), [tuple(values) for values in upserts], (), replace=True)
         for kind, key, upserts in changes],
        [(str(rid), str(kind), str(grp)) for rid, kind, grp in index],
        snapshot, version,
    )


def pack(item: Any) -> bytes:
    data: bytes = msgpack.packb(item)
    return data
