"""PartitionDoc.import_checked: a peer's update is judged by its operations.

Honest updates (PartitionDoc.apply with CreateRecord / AppendEvent, relayed, merged,
derived from snapshots) pass; anything outside the layout is refused with a reason, also
when the final state would not show it, and cheaply (a 1 MiB text insert into a non-empty
document is refused well under a second). Every case is judged every way: detached (the
state untouched until the verdict) and attached (state first, operations after), where the
attached way either gives the same verdict or defers to the detached one; and, as the
first sync of a peer holding the same document would bring it (everything from the empty
version, into an empty document), by state (``_fresh_records``) and by operations, where
both refuse what is hostile and the state way accepts what is honest."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loro import EncodedBlobMode, ExportMode, LoroDoc, LoroList, LoroMap, LoroText, VersionVector

from syncd.errors import InvalidRecordError
from syncd.logs.records import AppendEvent, CreateRecord, Mutation, RawRecord, canonical_json
from syncd.store import documents
from syncd.store.documents import (
    EMPTY_VERSION,
    CheckedImport,
    NeedsDetachedImport,
    PartitionDoc,
    _decode_bodies,
    _marker,
    _strict_json,
)

BIG = 10 * 2**20


def _rid() -> str:
    return uuid.uuid4().hex


def _create(rid: str, **fields: Any) -> CreateRecord:
    return CreateRecord(rid, "session", {"user_id": "u1" * 16, "kind": "video", **fields})


def _event(rid: str, seq: int, device: str = "d1" * 16, **fields: Any) -> AppendEvent:
    return AppendEvent(rid, {"at": "2025-01-06T09:00:00.000000+00:00", "device_id": device, "seq": seq, **fields})


def _doc(peer: int, *batches: list[Mutation]) -> tuple[PartitionDoc, list[bytes]]:
    doc = PartitionDoc.create(peer)
    return doc, [doc.apply(batch) for batch in batches]


def _batch(*groups: Iterable[Mutation]) -> list[Mutation]:
    return [m for group in groups for m in group]


def _with_events(rid: str, events: int, **pad: Any) -> list[Mutation]:
    mutations: list[Mutation] = [_create(rid, **pad)]
    mutations.extend(_event(rid, n, **pad) for n in range(1, events + 1))
    return mutations


def _map() -> LoroMap:
    return LoroMap()  # type: ignore[no-untyped-call]


def _list() -> LoroList:
    return LoroList()  # type: ignore[no-untyped-call]


def _text() -> LoroText:
    return LoroText()  # type: ignore[no-untyped-call]


def _vv0() -> VersionVector:
    return VersionVector()  # type: ignore[no-untyped-call]


def _seeded(peer: int = 1, records: int = 5, events: int = 3) -> tuple[PartitionDoc, list[str]]:
    """A non-empty document: ``records`` records with ``events`` events each."""
    ids = [_rid() for _ in range(records)]
    doc = PartitionDoc.create(peer)
    doc.apply(_batch(*(_with_events(rid, events) for rid in ids)))
    return doc, ids


def _loro(doc: PartitionDoc, peer: int) -> LoroDoc:
    """A raw Loro replica of ``doc``: what a hostile member edits."""
    raw = LoroDoc()  # type: ignore[no-untyped-call]
    raw.import_(doc.export_snapshot())
    raw.peer_id = peer
    return raw


class Hostile(bytes):
    """A hostile member's update, and ``whole``: everything its replica holds, as its first
    sync to a device holding nothing would bring it."""

    whole: bytes


def _edit(doc: PartitionDoc, edit: Callable[[LoroDoc], object]) -> Hostile:
    """The update bytes a hostile member produces by ``edit`` on its replica of ``doc``."""
    raw = _loro(doc, 666)
    before = raw.oplog_vv
    edit(raw)
    raw.commit()
    data = Hostile(raw.export(ExportMode.Updates(before)))
    data.whole = raw.export(ExportMode.Updates(_vv0()))
    return data


def _record(raw: LoroDoc, rid: str) -> Any:
    return raw.get_map("r").ensure_mergeable_map(rid)


def _events(raw: LoroDoc, rid: str) -> Any:
    return _record(raw, rid).ensure_mergeable_list("e")


def _by_operations(doc: PartitionDoc, data: bytes) -> CheckedImport | None:
    """``data`` imported into a fork of ``doc``, the touched records built from the
    operations (None: deferred to the detached way, as the store then does)."""
    held = {r.id: r for r in doc.records(strict=True)}
    try:
        return doc.fork().import_checked(data, holds=held.__contains__, previous=held.get, stay_detached=True,
                                         by_state=False)
    except NeedsDetachedImport:
        return None


def _same_records(a: Iterable[RawRecord], b: Iterable[RawRecord]) -> bool:
    """The same records, each with the same events in any order (a list's order is
    Loro's to merge; the folds sort)."""
    def key(records: Iterable[RawRecord]) -> dict[str, Any]:
        return {r.id: (r.kind, canonical_json(r.fields), sorted(canonical_json(e) for e in r.events)) for r in records}
    return key(a) == key(b)


def _passes(doc: PartitionDoc, data: bytes) -> None:
    """``data`` passes every way, touching the same records (by its operations: with the
    same new versions as the state shows after it); so does everything ``doc`` holds once
    ``data`` is in, into an empty document, and there the state way accepts it (unless a
    record was created twice, which only the operations can tell)."""
    fork = doc.fork()
    detached = fork.import_checked(data, by_state=False)
    by_operations = _by_operations(doc, data)
    if by_operations is not None:
        assert (by_operations.changed, by_operations.touched) == (detached.changed, detached.touched)
        assert not by_operations.changed or (by_operations.records is not None and by_operations.detached)
        assert _same_records(by_operations.records or [], fork.records_named(sorted(detached.touched), strict=True))
    if doc.version() == EMPTY_VERSION:
        by_state = PartitionDoc.create(8).import_checked(data)
        assert (by_state.changed, by_state.touched) == (detached.changed, detached.touched)
    whole = doc.fork()
    whole.import_(data)
    everything = whole.export_since(EMPTY_VERSION)
    by_operations = PartitionDoc.create(8).import_checked(everything, by_state=False)
    by_state = PartitionDoc.create(8).import_checked(everything)
    assert (by_state.changed, by_state.touched) == (by_operations.changed, by_operations.touched)
    created_twice = any(len(re.findall(rid.encode(), everything)) > 1 for rid in by_state.touched) and \
        by_state.records is None
    assert by_state.records is not None or created_twice, "the state way deferred an honest first import"
    if by_state.records is not None:
        assert sorted(r.id for r in by_state.records) == sorted(by_state.touched)
        assert {r.id: r for r in by_state.records} == {r.id: r for r in whole.records(strict=True)}


def _refused(doc: PartitionDoc, data: bytes, match: str) -> InvalidRecordError:
    before = doc.version()
    with pytest.raises(InvalidRecordError, match=match) as info:
        doc.fork().import_checked(data, by_state=False)
    with pytest.raises(InvalidRecordError):  # (on an empty document: by state, where it proves)
        doc.check_update(data)
    assert doc.version() == before  # nothing applied
    whole = getattr(data, "whole", None)
    if whole is not None:  # the hostile replica's first sync: refused both ways (where the
        # operations carry the whole history, a rewrite may read as a double write)
        for by_state in (False, True):
            with pytest.raises(InvalidRecordError):
                PartitionDoc.create(8).import_checked(whole, by_state=by_state)
    try:
        accepted = _by_operations(doc, data)
    except InvalidRecordError as exc:
        assert re.search(match, str(exc)), exc
    else:
        assert accepted is None, "the way by operations accepted what the detached way refused"
    return info.value


# --- honest updates pass ------------------------------------------------------------------
def test_the_marker_matches_loro() -> None:
    for rid in [_rid() for _ in range(20)] + ["0" * 32, "f" * 32]:
        raw = LoroDoc()  # type: ignore[no-untyped-call]
        record = raw.get_map("r").ensure_mergeable_map(rid)
        record.ensure_mergeable_list("e")
        raw.commit()
        ops = json.loads(raw.export_json_updates(_vv0(), raw.oplog_vv))["changes"][0]["ops"]
        assert ops[0]["content"]["value"] == _marker("r", rid, 0)
        assert ops[1]["content"]["value"] == _marker("\U0001f91d:$r>" + rid, "e", 1)


def test_single_creation_passes_into_an_empty_and_a_non_empty_document() -> None:
    rid = _rid()
    _, (update,) = _doc(2, [_create(rid), _event(rid, 1)])
    _passes(PartitionDoc.create(1), update)
    seeded, _ = _seeded()
    _passes(seeded, update)


def test_many_records_and_events_pass() -> None:
    ids = [_rid() for _ in range(200)]
    _, (update,) = _doc(2, _batch(*(_with_events(rid, 10) for rid in ids)))
    seeded, _ = _seeded()
    _passes(seeded, update)
    _passes(PartitionDoc.create(1), update)


def test_an_append_to_an_existing_record_passes() -> None:
    seeded, ids = _seeded()
    peer = PartitionDoc.load([seeded.export_snapshot()], 2)
    _passes(seeded, peer.apply([_event(ids[0], 4), _event(ids[1], 4)]))


def test_concurrent_appends_from_two_peers_and_their_relay_pass() -> None:
    origin, ids = _seeded()
    b = PartitionDoc.load([origin.export_snapshot()], 2)
    c = PartitionDoc.load([origin.export_snapshot()], 3)
    from_b = b.apply([_event(ids[0], 1, device="b" * 32), _event(ids[0], 2, device="b" * 32)])
    from_c = c.apply([_event(ids[0], 1, device="c" * 32)])
    _passes(origin, from_b)
    _passes(origin, from_c)
    # b merges c's append and relays both to the origin as one update
    version = origin.version()
    _passes(b, from_c)
    b.import_(from_c)
    _passes(origin, b.export_since(version))
    # and each import in turn still passes
    origin.import_(from_b)
    _passes(origin, from_c)


def test_concurrent_creation_of_one_record_with_equal_fields_passes() -> None:
    rid = _rid()
    b, (from_b,) = _doc(2, [_create(rid), _event(rid, 1, device="b" * 32)])
    c, (from_c,) = _doc(3, [_create(rid), _event(rid, 1, device="c" * 32)])
    b.import_(from_c)
    relayed = b.export_since(EMPTY_VERSION)  # two creations of rid in one update
    _passes(PartitionDoc.create(1), relayed)
    _passes(c, from_b)  # c already holds k and c: the same values come again


def test_snapshot_derived_updates_pass() -> None:
    origin, ids = _seeded()
    loaded = PartitionDoc.load([origin.export_snapshot()], 2)
    rid = _rid()
    _passes(origin, loaded.apply([_create(rid), _event(rid, 1), _event(ids[2], 4)]))
    # the initial sync of a whole partition, exported from a snapshot-loaded copy
    _passes(PartitionDoc.create(3), loaded.export_since(EMPTY_VERSION))


def test_a_chunk_into_a_non_empty_document_is_judged_by_its_operations() -> None:
    """The touched records' new versions come from the operations, the document left
    detached (its state still the old one), and match what attaching it shows."""
    seeded, ids = _seeded()
    peer = PartitionDoc.load([seeded.export_snapshot()], 2)
    rid = _rid()
    update = peer.apply([_create(rid), _event(rid, 1), _event(ids[0], 4)])
    fork = seeded.fork()
    held = {r.id: r for r in seeded.records(strict=True)}
    checked = fork.import_checked(update, holds=held.__contains__, previous=held.get, stay_detached=True)
    assert checked.detached and fork.detached and checked.touched == {rid, ids[0]}
    assert checked.records is not None and {r.id: len(r.events) for r in checked.records} == {rid: 1, ids[0]: 4}
    assert rid not in fork.record_ids()  # the state is still the old one
    fork.attach()
    assert _same_records(checked.records, fork.records_named([ids[0], rid], strict=True))
    # a chunk creating a record the document holds is left to the detached way
    _, (creation,) = _doc(3, [_create(ids[1])])
    assert _by_operations(seeded, creation) is None


def test_an_update_already_held_passes() -> None:
    origin, _ = _seeded()
    _passes(origin, origin.export_since(EMPTY_VERSION))


# --- hostile updates are refused ----------------------------------------------------------
def test_a_value_set_then_deleted_is_refused() -> None:
    seeded, ids = _seeded()

    def edit(raw: LoroDoc) -> None:
        _record(raw, ids[0]).insert("zz", "y" * BIG)
        raw.commit()
        _record(raw, ids[0]).delete("zz")

    _refused(seeded, _edit(seeded, edit), "at most 256 KiB|k, c and e")
    # small, so the key and the delete are what is refused
    small = _edit(seeded, lambda raw: (_record(raw, ids[0]).insert("zz", "y"), _record(raw, ids[0]).delete("zz")))
    _refused(seeded, small, "k, c and e")
    # a delete on its own
    _refused(seeded, _edit(seeded, lambda raw: _record(raw, ids[0]).delete("k")), "delete operation on a record: creation fields")


def test_a_child_container_later_deleted_is_refused() -> None:
    seeded, ids = _seeded()

    def edit(raw: LoroDoc) -> None:
        child = _record(raw, ids[0]).insert_container("c", _map())
        child.insert("blob", "y" * BIG)
        raw.commit()
        _record(raw, ids[0]).delete("c")

    _refused(seeded, _edit(seeded, edit), "must be a string")


def test_nan_is_refused_even_when_deleted_again() -> None:
    seeded, ids = _seeded()

    def edit(raw: LoroDoc) -> None:
        _record(raw, ids[0]).insert("k", float("nan"))
        raw.commit()
        _record(raw, ids[0]).delete("k")

    _refused(seeded, _edit(seeded, edit), "must be a string")
    _refused(seeded, _edit(seeded, lambda raw: _events(raw, ids[0]).push(float("nan"))), "must be a string")


def test_an_event_deleted_and_pushed_again_is_refused() -> None:
    seeded, ids = _seeded()

    def edit(raw: LoroDoc) -> None:
        text = _events(raw, ids[0]).get(0).value
        _events(raw, ids[0]).delete(0, 1)
        _events(raw, ids[0]).push(text)

    _refused(seeded, _edit(seeded, edit), r"records\.[0-9a-f]{32}\.e: events were removed or rewritten \(a delete")


def test_removing_a_record_is_refused() -> None:
    seeded, ids = _seeded()
    _refused(seeded, _edit(seeded, lambda raw: raw.get_map("r").delete(ids[0])), "records are never removed")


@pytest.mark.parametrize("name, edit, match", [
    ("root text", lambda raw, rid: raw.get_text("junk").insert(0, "y"), "outside the partition's record layout"),
    ("root map", lambda raw, rid: raw.get_map("junk").insert("blob", "y"), "outside the partition's record layout"),
    ("root list", lambda raw, rid: raw.get_list("r").push("y"), "outside the partition's record layout"),
    ("counter", lambda raw, rid: raw.get_counter("n").increment(1), "outside the partition's record layout"),
    ("tree", lambda raw, rid: raw.get_tree("t").create(), "outside the partition's record layout"),
    ("movable list", lambda raw, rid: raw.get_movable_list("m").push("y"), "outside the partition's record layout"),
    ("mergeable text in a record", lambda raw, rid: _record(raw, _rid()).ensure_mergeable_text("k"), "must be a string"),
    ("mergeable text as events", lambda raw, rid: _record(raw, _rid()).ensure_mergeable_text("e"),
     "events must be a mergeable list"),
    ("mergeable counter", lambda raw, rid: _record(raw, rid).ensure_mergeable_counter("x"), "k, c and e"),
    ("mergeable child of events' record", lambda raw, rid: _record(raw, _rid()).ensure_mergeable_map("e"),
     "events must be a mergeable list"),
    ("plain list as events", lambda raw, rid: _record(raw, _rid()).insert_container("e", _list()),
     "events must be a mergeable list"),
    ("text in a record", lambda raw, rid: _record(raw, rid).insert_container("c", _text()), "must be a string"),
    ("container in events", lambda raw, rid: _events(raw, rid).insert_container(0, _map()), "must be a string"),
    ("other key", lambda raw, rid: _record(raw, rid).insert("x", "y"), "k, c and e"),
    ("int kind", lambda raw, rid: _record(raw, _rid()).insert("k", 5), "must be a string"),
    ("binary creation", lambda raw, rid: _record(raw, _rid()).insert("c", b"{}"), "must be a string"),
    ("null event", lambda raw, rid: _events(raw, rid).push(None), "must be a string"),
    ("dict event", lambda raw, rid: _events(raw, rid).push({"a": 1}), "must be a string"),
    ("string record", lambda raw, rid: raw.get_map("r").insert(_rid(), "x"), "must be a mergeable map"),
    ("plain map record", lambda raw, rid: raw.get_map("r").insert_container(_rid(), _map()),
     "must be a mergeable map"),
    ("mergeable list record", lambda raw, rid: raw.get_map("r").ensure_mergeable_list(_rid()),
     "must be a mergeable map"),
    ("bad record id", lambda raw, rid: raw.get_map("r").ensure_mergeable_map("NOT-HEX"), "32 lowercase hex"),
    ("nested record", lambda raw, rid: _record(raw, rid).ensure_mergeable_map("x").insert("k", "v"), "k, c and e"),
    ("long event", lambda raw, rid: _events(raw, rid).push("{" + "y" * 2**18 + "}"), "at most 256 KiB"),
    ("rewritten kind", lambda raw, rid: _record(raw, rid).insert("k", "attempt"), "creation fields were rewritten"),
])
def test_writes_outside_the_layout_are_refused(name: str, edit: Callable[[LoroDoc, str], Any], match: str) -> None:
    seeded, ids = _seeded()
    _refused(seeded, _edit(seeded, lambda raw: edit(raw, ids[0])), match)


def test_creation_fields_written_twice_differently_are_refused() -> None:
    seeded, _ = _seeded()
    rid = _rid()

    def edit(raw: LoroDoc) -> None:
        _record(raw, rid).insert("c", "{" + "y" * 1000 + "}")
        raw.commit()
        _record(raw, rid).insert("c", "{}")
        _record(raw, rid).insert("k", "session")
        _record(raw, rid).ensure_mergeable_list("e")

    _refused(seeded, _edit(seeded, edit), "written twice with different values")


def test_a_commit_message_is_refused() -> None:
    seeded, ids = _seeded()

    def edit(raw: LoroDoc) -> None:
        raw.set_next_commit_message("y" * 1000)
        _events(raw, ids[0]).push("{}")

    _refused(seeded, _edit(seeded, edit), "commit messages")


def test_the_total_text_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_UPDATE_TEXT", 2**20)
    seeded, ids = _seeded()
    _refused(seeded, _edit(seeded, lambda raw: [_events(raw, ids[0]).push("{" + "y" * 2**17 + "}") for _ in range(9)]),
             "more than 1 MiB of text")


def test_events_added_to_one_record_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_UPDATE_EVENTS_PER_RECORD", 100)
    seeded, ids = _seeded(events=0)  # (so a first sync of the result holds 100 a record too)
    _refused(seeded, _edit(seeded, lambda raw: [_events(raw, ids[0]).push("{}") for _ in range(101)]),
             "more than 100 events")
    _passes(seeded, _edit(seeded, lambda raw: [_events(raw, rid).push("{}") for rid in ids for _ in range(100)]))


def test_snapshots_garbage_and_updates_with_missing_dependencies_are_refused() -> None:
    seeded, ids = _seeded()
    _refused(seeded, seeded.export_snapshot(), "only update blobs")
    _refused(seeded, b"\x00" * 64, "not a valid update")
    _refused(seeded, seeded.export_since(EMPTY_VERSION)[:-3], "not a valid update")
    # an update whose history starts after something the document never got
    peer = PartitionDoc.load([seeded.export_snapshot()], 2)
    peer.apply([_event(ids[0], 4)])
    version = peer.version()
    later = peer.apply([_event(ids[0], 5)])
    assert version
    _refused(seeded, later, "does not have")
    for by_state in (True, False):  # and as a first import
        with pytest.raises(InvalidRecordError, match="does not have"):
            PartitionDoc.create(8).import_checked(later, by_state=by_state)


def test_the_update_header_check_agrees_with_loro() -> None:
    """``_check_update_blob`` reads the encode mode from the header instead of decoding the
    whole blob: it must agree with Loro's own reading of it."""
    seeded, _ = _seeded()
    raw = _loro(seeded, 3)
    shallow = raw.export(ExportMode.ShallowSnapshot(raw.oplog_frontiers))
    for blob in (seeded.export_snapshot(), shallow, seeded.export_since(EMPTY_VERSION),
                 raw.export(ExportMode.Updates(_vv0()))):
        is_updates = LoroDoc.decode_import_blob_meta(blob, False).mode == EncodedBlobMode.Updates
        if is_updates:
            documents._check_update_blob(blob)
        else:
            with pytest.raises(InvalidRecordError, match="only update blobs"):
                documents._check_update_blob(blob)
    for blob in (seeded.export_snapshot(), shallow):  # into an empty document too
        with pytest.raises(InvalidRecordError, match="only update blobs"):
            PartitionDoc.create(4).import_checked(blob)


def _first_sync(*edits: Callable[[Any, str], object]) -> bytes:
    """What a hostile member's first sync brings: one honest record, then ``edits`` to its
    map (given the record map and its id), all from the empty version."""
    raw = LoroDoc()  # type: ignore[no-untyped-call]
    raw.peer_id = 666
    rid = _rid()
    record = _record(raw, rid)
    record.insert("k", "session")
    record.insert("c", canonical_json({"user_id": "u1" * 16, "kind": "video"}))
    for edit in edits:
        edit(record, rid)
    raw.commit()
    data: bytes = raw.export(ExportMode.Updates(_vv0()))
    return data


@pytest.mark.parametrize("name, edits", [
    # empty containers read as bare values in Loro's deep value: the state alone cannot tell them
    ("plain empty list as events", [lambda rec, rid: rec.insert("e", [])]),
    ("plain list of a text as events", [lambda rec, rid: rec.insert("e", ["{}"])]),
    ("empty plain child list as events", [lambda rec, rid: rec.insert_container("e", _list())]),
    ("empty mergeable map as events", [lambda rec, rid: rec.ensure_mergeable_map("e")]),
    ("empty mergeable text as events", [lambda rec, rid: rec.ensure_mergeable_text("e")]),
    ("empty mergeable text as the kind", [lambda rec, rid: rec.delete("k"), lambda rec, rid: rec.ensure_mergeable_text("k")]),
    ("empty text as the creation fields", [lambda rec, rid: rec.insert_container("c", _text())]),
    # operations the final state does not show
    ("a key set and deleted", [lambda rec, rid: rec.ensure_mergeable_list("e"), lambda rec, rid: rec.insert("x", 1),
                               lambda rec, rid: rec.delete("x")]),
    ("a delete of nothing", [lambda rec, rid: rec.ensure_mergeable_list("e"), lambda rec, rid: rec.delete("nothing")]),
    ("an event pushed and deleted", [lambda rec, rid: rec.ensure_mergeable_list("e").push("{}"),
                                     lambda rec, rid: rec.ensure_mergeable_list("e").delete(0, 1)]),
    ("the kind rewritten", [lambda rec, rid: rec.ensure_mergeable_list("e"), lambda rec, rid: rec.insert("k", "attempt")]),
])
def test_a_first_import_is_accepted_by_state_only_where_that_proves_it_honest(name: str, edits: list[Callable[[Any, str], object]]) -> None:
    data = _first_sync(*edits)
    for by_state in (True, False):
        with pytest.raises(InvalidRecordError):
            PartitionDoc.create(8).import_checked(data, by_state=by_state)


def test_a_first_import_by_state_reads_the_records_as_strict_decoding_does() -> None:
    origin, ids = _seeded(records=40, events=2)
    bare = [_rid() for _ in range(5)]  # records with no events: an empty mergeable list
    origin.apply([_create(rid) for rid in bare])
    data = origin.export_since(EMPTY_VERSION)
    checked = PartitionDoc.create(8).import_checked(data)
    assert checked.records is not None
    assert checked.touched == set(ids) | set(bare)
    assert {r.id: r for r in checked.records} == {r.id: r for r in origin.records(strict=True)}
    # a record the state cannot prove (one id created twice, relayed) takes the operation walk
    twin, (first,) = _doc(3, [_create(ids[0]), _event(ids[0], 1, device="c" * 32)])
    twin.import_(data)
    relayed = twin.export_since(EMPTY_VERSION)
    checked = PartitionDoc.create(8).import_checked(relayed)
    assert checked.records is None and checked.touched == set(ids) | set(bare)


def test_writes_to_a_record_never_created_are_refused() -> None:
    """Operations on a mergeable record's container without its marker in r: invisible in the
    state, but stored, and shown as soon as anyone creates the record."""
    seeded, _ = _seeded()
    rid = _rid()
    crafted = {
        "schema_version": 1, "start_version": {}, "peers": ["777"],
        "changes": [{"id": "0@0", "timestamp": 0, "deps": [], "lamport": 0, "msg": None, "ops": [
            {"container": f"cid:root-\U0001f91d:$r>{rid}:Map", "counter": 0,
             "content": {"type": "insert", "key": "c", "value": "{}"}}]}],
    }
    raw = LoroDoc()  # type: ignore[no-untyped-call]
    raw.import_json_updates(json.dumps(crafted))
    _refused(seeded, raw.export(ExportMode.Updates(_vv0())), "written but never created")


def test_events_pushed_to_a_held_record_whose_list_was_never_created_are_refused() -> None:
    """A record held without its events list (a peer created it with k and c only), then
    an event pushed to the list's container id without the list's marker in the record:
    invisible in the state, but stored, and shown as soon as anyone creates the list.
    Refused every way, the way by operations too (it judges a held record by the state)."""
    seeded, _ = _seeded()
    rid = _rid()
    raw = _loro(seeded, 555)
    before = raw.oplog_vv
    record = _record(raw, rid)
    record.insert("k", "session")
    record.insert("c", canonical_json({"user_id": "u1" * 16, "kind": "video"}))
    raw.commit()
    seeded.import_checked(raw.export(ExportMode.Updates(before)))
    assert [r.id for r in seeded.records_named([rid], strict=True)] == [rid]
    crafted = {
        "schema_version": 1, "start_version": {}, "peers": ["778"],
        "changes": [{"id": "0@0", "timestamp": 0, "deps": [], "lamport": 0, "msg": None, "ops": [
            {"container": f"cid:root-\U0001f91d:$r>{rid}>e:List", "counter": 0,
             "content": {"type": "insert", "pos": 0, "value": [canonical_json({"seq": 1})]}}]}],
    }
    pusher = LoroDoc()  # type: ignore[no-untyped-call]
    pusher.import_json_updates(json.dumps(crafted))
    _refused(seeded, pusher.export(ExportMode.Updates(_vv0())), "events pushed to a list never created")


# --- cost ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, edit", [
    ("root text", lambda raw: raw.get_text("junk").insert(0, "y" * 2**20)),
    ("text in a record", lambda raw: raw.get_map("r").ensure_mergeable_map(_rid()).ensure_mergeable_text("e")
     .insert(0, "y" * 2**20)),
    ("movable list", lambda raw: raw.get_movable_list("m").insert(0, "y" * 2**20)),
    ("list of many values", lambda raw: [raw.get_list("l").push(n) for n in range(100_000)]),
])
def test_a_hostile_large_insert_is_refused_quickly(name: str, edit: Callable[[LoroDoc], Any]) -> None:
    seeded, _ = _seeded(records=50, events=20)
    data = _edit(seeded, edit)
    started = time.perf_counter()
    _refused(seeded, data, ".")
    assert time.perf_counter() - started < 0.5


def test_an_honest_large_update_is_checked_quickly() -> None:
    seeded, _ = _seeded(records=50, events=20)
    ids = [_rid() for _ in range(1000)]
    peer = PartitionDoc.load([seeded.export_snapshot()], 2)
    update = peer.apply(_batch(*(_with_events(rid, 5, pad="y" * 200) for rid in ids)))
    assert len(update) > 1_000_000
    started = time.perf_counter()
    seeded.check_update(update)
    assert time.perf_counter() - started < 1.0


# --- strict decoding ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"a":1e999}', '{"a":-1e999}', '{"a":NaN}', '{"a":Infinity}'])
def test_strict_json_refuses_non_finite_numbers(text: str) -> None:
    with pytest.raises(InvalidRecordError, match="invalid JSON"):
        _strict_json(text, "records.x.e")
    assert _strict_json('{"a":1500.0}', "x") == {"a": 1500.0}


@pytest.mark.parametrize("text", ['{"a":1.5e3}', '{"a": 1}', '{"a":"\\u00e9"}', '{"a":"\\ud800"}', '{"a":1.50}'])
def test_strict_json_refuses_a_second_spelling(text: str) -> None:
    """Only the canonical text is stored anywhere: every device hashes the same bytes."""
    with pytest.raises(InvalidRecordError, match="canonical form"):
        _strict_json(text, "records.x.e")


def test_a_touched_record_that_is_gone_is_reported_as_disappeared() -> None:
    seeded, _ = _seeded()
    with pytest.raises(InvalidRecordError, match="a record disappeared"):
        seeded.records_named([_rid()], strict=True)


@pytest.mark.parametrize("text", ['{"a":123456789012345678901234567890}', '{"a":-9223372036854775809}', '{"a":[1.5,"é",null,true]}'])
def test_strict_json_reads_what_the_standard_library_reads(text: str) -> None:
    """orjson decodes where it can; what it refuses (integers beyond 64 bits) falls back to
    the standard library, so a canonical text is never refused for the decoder's sake."""
    import json

    assert _strict_json(text, "x") == json.loads(text)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=5))
def test_our_own_texts_read_back_exactly(value: dict[str, Any]) -> None:
    """A stored (canonical) text reads back to the value it was written from, integers
    beyond 64 bits and all: its serialisation is the same text again."""
    text = canonical_json(value)
    (record,) = _decode_bodies([("a" * 32, {"k": "session", "c": text, "e": [text]})])
    assert canonical_json(record.fields) == text and canonical_json(record.events[0]) == text


@pytest.mark.parametrize("number", [2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**18)])
def test_a_stored_record_keeps_integers_beyond_64_bits(number: int) -> None:
    rid = _rid()
    doc, _ = _doc(7, [_create(rid, n=number), _event(rid, 1, n=[number])])
    for (record,) in (doc.records(), doc.records_named([rid])):
        assert record.fields["n"] == number and type(record.fields["n"]) is int
        assert record.events[0]["n"] == [number] and type(record.events[0]["n"][0]) is int


# --- lists of update blobs (protocol 3) -------------------------------------------------
def _tail(records: int = 3) -> tuple[PartitionDoc, bytes, list[bytes], PartitionDoc]:
    """(base document, its snapshot, three later update blobs, the source with all of it)."""
    source, ids = _seeded(records=records)
    snapshot = source.export_snapshot()
    blobs = [source.apply([_event(rid, 10 + i)]) for i, rid in enumerate(ids[:3])]
    return PartitionDoc.load([snapshot], 2), snapshot, blobs, source


def test_a_list_of_update_blobs_imports_like_the_blobs_one_by_one() -> None:
    base, snapshot, blobs, source = _tail()
    chunk = documents.pack_updates(blobs)
    assert chunk.startswith(documents.UPDATE_LIST) and documents.split_chunk(chunk) == blobs
    assert documents.pack_updates(blobs[:1]) == blobs[0]  # one blob travels as itself
    checked = base.import_checked(chunk)
    assert checked.changed and len(checked.touched) == 3
    assert base.version() == source.version() and base.deep_value() == source.deep_value()
    # what the store keeps for the list: one update that brings the base to the same state
    again = PartitionDoc.load([snapshot, checked.update], 3)
    assert again.version() == source.version() and again.deep_value() == source.deep_value()


@pytest.mark.parametrize("payload, match", [
    (b"\xc1", "malformed update list"),
    (b"\x91\x01\x02", "malformed update list"),              # trailing bytes
    (b"\x81\xa1a\x01", "malformed update list"),            # a map
    (b"\x01", "non-empty list of update blobs"),             # a scalar
    (b"\x90", "non-empty list of update blobs"),            # empty
    (b"\x92\xc4\x01x\x01", "non-empty list of update blobs"),  # not all bytes
])
def test_a_malformed_update_list_is_refused(payload: bytes, match: str) -> None:
    base, _, _, _ = _tail()
    _refused(base, documents.UPDATE_LIST + payload, match)


def test_an_update_list_with_a_snapshot_or_a_gap_is_refused() -> None:
    base, _, blobs, source = _tail()
    _refused(base, documents.pack_updates([blobs[0], source.export_snapshot()]), "only update blobs")
    _refused(base, documents.pack_updates([blobs[0], b"loro-but-not-really"]), "not a valid update")
    # the second blob's change depends on the first, which the list leaves out
    chained = [source.apply([_event(rid, 20)]) for rid in source.record_ids()[:2]]
    _refused(base, documents.pack_updates([blobs[0], chained[1]]), "depends on changes")


def test_version_covers_compares_version_vectors() -> None:
    doc, ids = _seeded()
    early = doc.version()
    doc.apply([_event(ids[0], 9)])
    late = doc.version()
    other, _ = _seeded(peer=9)
    assert documents.version_covers(late, early) and documents.version_covers(late, late)
    assert not documents.version_covers(early, late)
    assert not documents.version_covers(late, other.version())
    assert documents.version_covers(late, EMPTY_VERSION)
    assert not documents.version_covers(b"\xff\xff", late)
