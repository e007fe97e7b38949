"""PartitionDoc.load: a document from its stored blobs (a snapshot and the update tail
after it) is the document that wrote them, whatever order the blobs come in.

The store passes them in commit order, snapshot first; load imports them one at a time
(faster than Loro's batch import there), so an update met before the changes it depends
on must wait in Loro's pending queue and apply once they arrive."""

from __future__ import annotations

import random
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.logs.records import AppendEvent, CreateRecord, Mutation
from syncd.store.documents import COMPACT_TAIL, PartitionDoc, import_compact_point


def _writes(doc: PartitionDoc, count: int, held: list[str]) -> list[bytes]:
    """``count`` commits, each creating a record or appending to one held already."""
    updates = []
    for i in range(count):
        batch: list[Mutation]
        if held and i % 2:
            batch = [AppendEvent(held[i % len(held)], {"at": "2025-01-06T09:00:00.000000+00:00", "seq": i})]
        else:
            rid = uuid.uuid4().hex
            held.append(rid)
            batch = [CreateRecord(rid, "session", {"user_id": "u1" * 16, "kind": "video"})]
        updates.append(doc.apply(batch))
    return updates


@settings(max_examples=30, deadline=None)
@given(before=st.integers(0, 6), after=st.integers(0, 12), order=st.sampled_from(["commit", "reversed", "shuffled"]),
       seed=st.randoms(use_true_random=False))
def test_loaded_document_is_the_written_one_in_any_order(before: int, after: int, order: str, seed: random.Random) -> None:
    doc, held = PartitionDoc.create(1), list[str]()
    _writes(doc, before, held)
    blobs = [doc.export_snapshot(), *_writes(doc, after, held)]
    if order == "reversed":
        blobs.reverse()
    elif order == "shuffled":
        seed.shuffle(blobs)

    loaded = PartitionDoc.load(blobs, 2)

    assert loaded.version() == doc.version()
    assert sorted(loaded.records(), key=lambda r: r.id) == sorted(doc.records(), key=lambda r: r.id)
    assert not loaded.detached


def test_updates_alone_load_without_a_snapshot() -> None:
    doc, held = PartitionDoc.create(1), list[str]()
    updates = _writes(doc, 5, held)

    loaded = PartitionDoc.load(list(reversed(updates)), 2)

    assert loaded.version() == doc.version()
    assert {r.id for r in loaded.records()} == set(held)


def test_partitions_take_their_snapshots_at_different_tail_lengths() -> None:
    """An import's compaction point is COMPACT_TAIL give or take half, fixed per
    partition, and spread: a school's learners do not all compact in one sync."""
    points = [import_compact_point(f"user:{uuid.uuid4().hex}") for _ in range(200)]
    assert all(COMPACT_TAIL // 2 <= p < COMPACT_TAIL // 2 + COMPACT_TAIL for p in points)
    assert len(set(points)) == COMPACT_TAIL
    assert import_compact_point("user:" + "a" * 32) == import_compact_point("user:" + "a" * 32)
