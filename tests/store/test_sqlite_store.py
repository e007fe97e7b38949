"""SqliteStore against the store acceptance suite, on real SQLite files."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from syncd.logs import writes
from syncd.logs.partitions import user_partition
from syncd.logs.records import DERIVED_MODELS
from syncd.logs.timestamps import format_timestamp
from syncd.store.sqlite import SqliteStore
from tests.store.acceptance import rows, start, store_acceptance_tests, update, video_start


async def open_sqlite(state_dir: Path, **options: Any) -> SqliteStore:
    return await SqliteStore.open(state_dir, **options)


globals().update(store_acceptance_tests(open_sqlite))


# --- the write path stores only the rows a write changed (derive_changes + the row memory) ----
EXERCISE = {"node_id": "e1" * 16, "content_id": "e2" * 16, "channel_id": "e3" * 16, "kind": "exercise",
            "mastery_model": {"type": "m_of_n", "m": 2, "n": 3}}
QUIZ_ID = "9a" * 16


def _ctx(store: SqliteStore, user: str, second: float) -> writes.WriteContext:
    levels = iter(range(-5, -100, -1))
    moment = datetime(2025, 1, 6, 9, tzinfo=timezone.utc) + timedelta(seconds=second)
    return writes.WriteContext(
        now=format_timestamp(moment), user_id=user, device_id=store.device_id, dataset_id=store.dataset_id,
        new_id=lambda: uuid.uuid4().hex, random_quiz_level=lambda: next(levels))


async def _mixed_workload(store: SqliteStore, user: str, offset: float) -> None:
    """Video, exercise (attempts, a retry, a repeat) and coach-quiz writes, some stamped in
    the past so that they land before what the fold already holds."""
    partition = user_partition(user)

    async def start(payload: dict[str, Any], second: float) -> str:
        c = _ctx(store, user, offset + second)
        result = await store.write(partition, lambda s: writes.start_session(s, payload, c))
        return str(result.response["session_id"])

    async def update(session: str, payload: dict[str, Any], second: float) -> Any:
        c = _ctx(store, user, offset + second)
        return (await store.write(partition, lambda s: writes.update_session(s, session, payload, c))).response

    video = await start(video_start(), 0)
    for k in range(3):
        await update(video, {"progress_delta": 0.3, "time_spent_delta": 5.0, "extra_fields": {"p": k}}, 10 + k)
    exercise = await start(EXERCISE, 20)
    answer = {"item": "q1", "correct": 1, "time_spent": 3, "answer": {"a": 1}}
    first = await update(exercise, {"progress_delta": 0.334, "interactions": [answer]}, 25)
    attempt = first["attempts"][0]["id"]
    await update(exercise, {"interactions": [{**answer, "id": attempt, "correct": 0, "time_spent": 6}]}, 27)
    await update(exercise, {"progress_delta": 0.666, "time_spent_delta": 4.0,
                            "interactions": [{**answer, "item": "q2"}, {**answer, "item": "q3"}]}, 30)
    await update(video, {"progress_delta": 0.2, "time_spent_delta": 1.0}, 5)   # in the past: a refold
    late = await start(video_start(), 3)                                         # starts before the last event
    await update(late, {"progress": 0.5, "time_spent_delta": 2.0}, 40)
    earliest = await start(video_start(), -5)           # moves the summary's start (its sort key) earlier
    await update(earliest, {"time_spent_delta": 1.0}, 41)
    await start({**video_start(), "channel_id": "c4" * 16}, 42)                 # moves the summary's channel
    again = await start({**EXERCISE, "repeat": True}, 50)
    await update(again, {"progress_delta": 1.0, "time_spent_delta": 2.0}, 55)
    quiz = await start({"quiz_id": QUIZ_ID[:-2] + f"{int(offset) % 256:02x}"}, 60)  # a submitted quiz is closed
    q = {"item": "x:1", "correct": 0, "time_spent": 2, "answer": {"r": 0}, "replace": True}
    await update(quiz, {"interactions": [q]}, 61)
    await update(quiz, {"interactions": [{**q, "correct": 1, "answer": {"r": 1}}]}, 62)
    await update(quiz, {"interactions": [{**q, "item": "x:2", "replace": False}]}, 63)
    await update(quiz, {"progress_delta": 1.0}, 64)


async def _tables(store: SqliteStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of every derived row (the digests cover the JSON only)."""
    def read(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
        return {model: conn.execute(f"SELECT * FROM {model} ORDER BY id").fetchall() for model in DERIVED_MODELS}

    return await store.run_read(read)


async def test_partial_row_writes_equal_a_rebuild(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path, compact_after=7)
    try:
        users = [uuid.uuid4().hex for _ in range(3)]
        await asyncio.gather(*(_mixed_workload(store, user, 0) for user in users))
        written = await _tables(store)
        assert all(written[m] for m in ("contentsessionlog", "contentsummarylog", "masterylog", "attemptlog"))
        await store.rebuild()
        assert await _tables(store) == written
        # after a rebuild the store knows no group's rows: the next writes replace them whole
        await asyncio.gather(*(_mixed_workload(store, user, 100) for user in users))
        written = await _tables(store)
        await store.rebuild()
        assert await _tables(store) == written
    finally:
        await store.close()


async def test_partitions_decoded_again_write_the_same_rows(tmp_path: Path) -> None:
    """With one partition kept decoded (cache_decoded=1), interleaved writes to three
    learners decode each partition again and again: the rows they store must be what a
    rebuild writes. (Row ids are random per store, so two stores are not compared.)"""
    lean = await SqliteStore.open(tmp_path / "lean", cache_decoded=1)
    roomy = await SqliteStore.open(tmp_path / "roomy")
    try:
        users = [uuid.uuid4().hex for _ in range(3)]
        for store in (lean, roomy):
            await asyncio.gather(*(_mixed_workload(store, user, 0) for user in users))
        status = await lean.status()
        assert status.loaded_documents == 1 and status.extra["indexed_partitions"] == 3
        assert (await roomy.status()).loaded_documents == 3
        written = await _tables(lean)
        await lean.rebuild()
        assert await _tables(lean) == written
    finally:
        await lean.close()
        await roomy.close()


async def test_a_row_missing_from_the_table_is_written_again(tmp_path: Path) -> None:
    """The row memory is an optimisation: an update of a row that is not in its table (rows
    dropped behind the store's back) inserts it."""
    store = await SqliteStore.open(tmp_path)
    try:
        user = uuid.uuid4().hex
        session = await start(store, user)
        await update(store, user, session, {"progress_delta": 0.1}, 1)
        await store.drop_derived_rows()
        await update(store, user, session, {"progress_delta": 0.1}, 2)
        (row,) = await rows(store, "contentsessionlog")
        (summary,) = await rows(store, "contentsummarylog")
        assert row["progress"] == summary["progress"] == 0.2
    finally:
        await store.close()


# --- a refused peer chunk leaves the partition as committed -------------------------------------
async def test_a_refused_chunk_leaves_no_trace_in_the_loaded_document(tmp_path: Path) -> None:
    """import_checked imports in place (no fork): a refusal must evict the document, so
    that neither exports nor later imports see the refused operations."""
    from loro import ExportMode, LoroDoc

    from syncd.errors import InvalidRecordError
    from syncd.store.documents import EMPTY_VERSION, PartitionDoc

    source = await open_sqlite(tmp_path / "source")
    target = await open_sqlite(tmp_path / "target")
    try:
        user = uuid.uuid4().hex
        partition = user_partition(user)
        await _mixed_workload(source, user, 0)
        honest = await source.export_missing(partition, EMPTY_VERSION)
        assert (await target.import_chunk(partition, honest, source="test")).changed
        committed = await target.export_missing(partition, EMPTY_VERSION)

        hostile = LoroDoc()  # type: ignore[no-untyped-call]
        hostile.import_(committed)
        before = hostile.oplog_vv
        record_id = PartitionDoc.load([committed], 1).record_ids()[0]
        hostile.get_map("r").ensure_mergeable_map(record_id).insert("junk", "x")
        hostile.commit()
        junk = hostile.export(ExportMode.Updates(before))
        try:
            await target.import_chunk(partition, junk, source="test")
        except InvalidRecordError:
            pass
        else:
            raise AssertionError("a write outside the layout was imported")

        after = await target.export_missing(partition, EMPTY_VERSION)
        reloaded = PartitionDoc.load([after], 1)
        assert reloaded.version() == PartitionDoc.load([committed], 1).version()
        assert "junk" not in str(reloaded.deep_value())
        # the next honest chunk still imports, and nothing was lost
        await _mixed_workload(source, user, 100)
        more = await source.export_missing(partition, reloaded.version())
        assert (await target.import_chunk(partition, more, source="test")).changed
        for model in DERIVED_MODELS:
            assert await rows(target, model) == await rows(source, model), model
    finally:
        await source.close()
        await target.close()


async def test_a_chunk_recreating_a_held_record_is_judged_on_the_previous_state(tmp_path: Path) -> None:
    """A small chunk into a partition with records is imported attached; one that creates a
    record the partition already holds (two devices minting one id) can only be judged on
    the previous state: the store reloads the document and imports it detached. Equal
    creation fields pass and change no row; other fields are refused and leave nothing."""
    from syncd.errors import InvalidRecordError
    from syncd.logs.records import CreateRecord
    from syncd.store.documents import EMPTY_VERSION, PartitionDoc

    source = await open_sqlite(tmp_path / "source")
    target = await open_sqlite(tmp_path / "target")
    try:
        user = uuid.uuid4().hex
        partition = user_partition(user)
        await _mixed_workload(source, user, 0)
        assert (await target.import_chunk(partition, await source.export_missing(partition, EMPTY_VERSION),
                                          source="test")).changed
        committed = await target.export_missing(partition, EMPTY_VERSION)
        held = PartitionDoc.load([committed], 1).records()[0]
        before = {model: await rows(target, model) for model in DERIVED_MODELS}

        def recreation(fields: dict[str, Any]) -> bytes:
            minted = PartitionDoc.create(77)  # knows nothing of the partition: a concurrent creation
            return minted.apply([CreateRecord(held.id, held.kind, fields)])

        with pytest.raises(InvalidRecordError, match="creation fields were rewritten"):
            await target.import_chunk(partition, recreation({**held.fields, "kind": "audio"}), source="test")
        after = PartitionDoc.load([await target.export_missing(partition, EMPTY_VERSION)], 1)
        assert after.version() == PartitionDoc.load([committed], 1).version()

        assert (await target.import_chunk(partition, recreation(dict(held.fields)), source="test")).changed
        assert {model: await rows(target, model) for model in DERIVED_MODELS} == before
        # and the partition goes on taking honest chunks (attached again)
        version = PartitionDoc.load([await target.export_missing(partition, EMPTY_VERSION)], 1).version()
        await _mixed_workload(source, user, 100)
        assert (await target.import_chunk(partition, await source.export_missing(partition, version),
                                          source="test")).changed
        for model in DERIVED_MODELS:
            assert await rows(target, model) == await rows(source, model), model
    finally:
        await source.close()
        await target.close()


# --- a shed state decodes group by group ------------------------------------------------------------
async def test_a_shed_state_reads_and_folds_like_a_whole_one(tmp_path: Path) -> None:
    """PartitionState.shed keeps the index and drops the records; each reader then decodes
    one group through the loader. Rows, lookups and a later write must be as on a state
    that never shed."""
    from syncd.logs.aggregate import derive
    from syncd.logs.records import AppendEvent, RawRecord
    from syncd.logs.state import PartitionState, group_of

    store = await open_sqlite(tmp_path)
    try:
        user = uuid.uuid4().hex
        partition = user_partition(user)
        await _mixed_workload(store, user, 0)
        whole = await store.raw_records(partition)
    finally:
        await store.close()
    by_id = {r.id: r for r in whole.all_records()}
    loads: list[list[str]] = []

    def loader(ids: Any) -> list[RawRecord]:
        loads.append(list(ids))
        return [RawRecord(i, by_id[i].kind, by_id[i].fields, list(by_id[i].events)) for i in ids]

    lazy = PartitionState.from_records(partition, loader(list(by_id)), loader=loader)
    loads.clear()
    lazy.shed()
    assert lazy.decoded == 0 and len(lazy) == len(whole) and lazy.groups() == whole.groups()

    def rows_of(state: PartitionState) -> list[str]:
        return [r.to_json() for rows_ in derive(state, state.groups(), "d" * 32).values() for r in rows_]

    assert rows_of(lazy) == rows_of(whole)
    assert sorted(map(tuple, loads)) == sorted(tuple(i for i in by_id if group_of(by_id[i]) == g) for g in whole.groups())

    lazy.shed()
    session = next(r for r in whole.all_records() if r.kind == "session")
    found = lazy.get(session.id)
    assert found is not None and found.events == session.events
    assert lazy.decoded == len(whole.in_group(group_of(session)))  # that group only
    assert [r.id for r in lazy.of_kind("usersession")] == [r.id for r in whole.of_kind("usersession")]

    event = {"at": "2025-01-06T12:00:00.000000+00:00", "device_id": "f" * 64, "seq": 1, "progress_delta": 0.5}
    lazy.shed()
    assert lazy.apply([AppendEvent(session.id, event)]) == whole.apply([AppendEvent(session.id, event)])
    assert rows_of(lazy) == rows_of(whole)


# --- the stored record index -------------------------------------------------------------------------
async def test_a_partition_loaded_again_decodes_only_what_is_read(tmp_path: Path) -> None:
    """Writes and imports store each new record's group (record_index), so a partition
    loaded again (a restart, or evicted from the cache) knows its groups without decoding:
    a write decodes the groups it reads. An index that does not cover the document (a
    database from before the index, or rows lost) is rebuilt by one whole decode."""
    store = await open_sqlite(tmp_path)
    user = uuid.uuid4().hex
    partition = user_partition(user)
    try:
        await _mixed_workload(store, user, 0)
        written = await _tables(store)
        total = len(await store.raw_records(partition))
    finally:
        await store.close()

    store = await open_sqlite(tmp_path)
    try:
        loaded = await store._get(partition)
        assert loaded.state is not None and loaded.state.decoded == 0 and len(loaded.state) == total
        await _mixed_workload(store, user, 100)  # writes decode what they read; rows stay right
        assert 0 < loaded.state.decoded
        after = await _tables(store)
        await store.rebuild()
        assert await _tables(store) == after and after != written
    finally:
        await store.close()

    conn = sqlite3.connect(tmp_path / "syncd.sqlite3")
    with conn:
        conn.execute("DELETE FROM record_index WHERE record_id IN "
                     "(SELECT record_id FROM record_index WHERE partition = ? LIMIT 3)", (partition,))
    conn.close()
    store = await open_sqlite(tmp_path)
    try:
        loaded = await store._get(partition)
        assert loaded.state is None  # incomplete: not trusted
        await store.raw_records(partition)  # decodes whole and stores the index again
        await store.close()
        store = await open_sqlite(tmp_path)
        loaded = await store._get(partition)
        assert loaded.state is not None and loaded.state.decoded == 0
    finally:
        await store.close()


# --- full rebuilds in worker processes (store.rebuild) ------------------------------------------------
async def _learners(store: SqliteStore, count: int) -> list[str]:
    users = [uuid.uuid4().hex for _ in range(count)]
    await asyncio.gather(*(_mixed_workload(store, user, 0) for user in users))
    return users


async def test_a_rebuild_folds_in_worker_processes(tmp_path: Path) -> None:
    """Worker processes refold every partition and the store writes back what differs:
    all rows after they were dropped, nothing on a store whose rows are right. A store
    with no workers refolds in the daemon and stores the same rows."""
    store = await open_sqlite(tmp_path / "a", rebuild_workers=2)
    alone = await open_sqlite(tmp_path / "b", rebuild_workers=0)
    try:
        for s in (store, alone):
            await _learners(s, 5)
            written = await _tables(s)
            await s.drop_derived_rows()
            report = await s.rebuild()
            assert await _tables(s) == written
            assert report.partitions == 5
            assert report.records == sum([len(await s.raw_records(p)) for p in await s.partitions()])
            assert (report.workers, report.refolded_here) == ((2, 0) if s is store else (0, 5))
            quiet = await s.rebuild()
            assert quiet.rows == report.rows and await _tables(s) == written
    finally:
        await store.close()
        await alone.close()


async def test_a_rebuild_rewrites_stored_rows_that_differ(tmp_path: Path) -> None:
    """A row whose stored JSON, channel or sort key is not what the fold gives is
    rewritten; so is a row written with the same value in another spelling (a float where
    the fold gives an int, another key order)."""
    store = await open_sqlite(tmp_path, rebuild_workers=1)
    try:
        await _learners(store, 2)
        written = await _tables(store)
        summary_id, summary_json = written["contentsummarylog"][0][0], written["contentsummarylog"][0][-1]
        summary = json.loads(summary_json)
        reordered = json.dumps(dict(reversed(list(summary.items()))), separators=(",", ":"))
        session_id, session_json = written["contentsessionlog"][0][0], written["contentsessionlog"][0][-1]
        assert '"kind":"' in session_json
        mastery_id, mastery_json = written["masterylog"][0][0], written["masterylog"][0][-1]
        level = json.loads(mastery_json)["mastery_level"]
        assert isinstance(level, int)
        as_float = mastery_json.replace(f'"mastery_level":{level}', f'"mastery_level":{level}.0')
        assert as_float != mastery_json and json.loads(as_float) == json.loads(mastery_json)

        def corrupt(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE contentsummarylog SET row = ? WHERE id = ?", (reordered, summary_id))
            conn.execute("UPDATE contentsessionlog SET row = ? WHERE id = ?",
                         (session_json.replace('"kind":"', '"kind":"x'), session_id))
            conn.execute("UPDATE masterylog SET row = ? WHERE id = ?", (as_float, mastery_id))
            conn.execute("UPDATE usersessionlog SET sort_key = 'x' WHERE rowid = (SELECT min(rowid) FROM usersessionlog)")
            conn.execute("UPDATE attemptlog SET channel_id = 'x' WHERE rowid = (SELECT min(rowid) FROM attemptlog)")

        await store.run_write(corrupt)
        assert await _tables(store) != written
        await store.rebuild()
        assert await _tables(store) == written
    finally:
        await store.close()


async def test_a_worker_result_is_not_stored_over_a_later_write(tmp_path: Path) -> None:
    """A worker refolds what was committed when it read; a write committed after that
    makes the store refold the partition itself instead of storing the stale rows."""
    from syncd.store.rebuild_worker import refold_partition
    from syncd.store.sqlite import _rebuild_diff_job

    store = await open_sqlite(tmp_path)
    try:
        (user,) = await _learners(store, 1)
        partition = user_partition(user)
        await store.drop_derived_rows()
        conn = sqlite3.connect(tmp_path / "syncd.sqlite3", isolation_level=None)
        stale = refold_partition(conn, partition, store.dataset_id)
        conn.close()
        assert stale.writes  # every row is missing
        await _mixed_workload(store, user, 200)
        after_write = await _tables(store)
        assert await store.run_write(_rebuild_diff_job(stale)) is False
        assert await _tables(store) == after_write
        await store.rebuild()
        fresh = await _tables(store)
        assert len(fresh["contentsessionlog"]) > len(after_write["contentsessionlog"])
    finally:
        await store.close()


async def test_writes_during_a_rebuild_keep_their_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Learners keep writing while the workers refold: once both end, the rows are what a
    quiet rebuild stores (it changes nothing)."""
    from syncd.store.rebuild import refold_in_workers

    store = await open_sqlite(tmp_path)
    try:
        users = await _learners(store, 6)
        await store.drop_derived_rows()
        # The workers start only once every learner has written a round, so that each
        # learner's second round begins while the rebuild is still under way (without the
        # gate a fast rebuild could end before a slow writer's first round did).
        first_rounds_done = asyncio.Event()
        writers_done_once: set[str] = set()

        async def gated_refold(*args: Any) -> Any:
            await first_rounds_done.wait()
            return await refold_in_workers(*args)

        monkeypatch.setattr("syncd.store.sqlite.refold_in_workers", gated_refold)
        rebuilding = asyncio.ensure_future(store.rebuild())

        async def keep_writing(user: str) -> int:
            rounds = 0
            while not rebuilding.done():
                rounds += 1
                await _mixed_workload(store, user, 300 * rounds)
                writers_done_once.add(user)
                if len(writers_done_once) == len(users):
                    first_rounds_done.set()
            return rounds

        rounds = await asyncio.gather(*(keep_writing(u) for u in users))
        report = await rebuilding
        assert report.workers == 2 and min(rounds) >= 2
        during = await _tables(store)
        await store.rebuild()
        assert await _tables(store) == during
    finally:
        await store.close()


@pytest.mark.parametrize("script", ["echo boom >&2; exit 3", "printf '\\301'", "cat >/dev/null; kill -9 $$"])
async def test_a_failing_worker_leaves_its_partitions_to_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, script: str
) -> None:
    """A worker that cannot run, crashes or sends garbage is logged, and the daemon refolds
    its partitions itself: the rebuild still stores every row."""
    from syncd.store import rebuild

    worker = tmp_path / "worker.sh"
    worker.write_text(f"#!/bin/sh\n{script}\n")
    worker.chmod(0o755)
    store = await open_sqlite(tmp_path / "state")
    try:
        await _learners(store, 3)
        written = await _tables(store)
        await store.drop_derived_rows()
        monkeypatch.setattr(rebuild, "WORKER_COMMAND", (str(worker),))
        report = await store.rebuild()
        assert report.refolded_here == 3 and await _tables(store) == written
        assert "rebuild worker" in caplog.text
        if "boom" in script:
            assert "boom" in caplog.text and "status 3" in caplog.text
    finally:
        await store.close()


async def test_a_rebuild_compacts_long_update_tails(tmp_path: Path) -> None:
    """A worker that loaded a document with a long update tail sends a snapshot of it: the
    store replaces the tail with it; the raw records and the rows stay as they were, and
    writes go on after it, in this store and after a restart."""
    from syncd.store.documents import COMPACT_TAIL

    async def records(store: SqliteStore, partition: str) -> list[Any]:
        return sorted((r.id, r.kind, r.fields, r.events) for r in (await store.raw_records(partition)).all_records())

    store = await open_sqlite(tmp_path, compact_after=1000)
    try:
        users = await _learners(store, 2)
        partitions = [user_partition(u) for u in users]
        assert all([await store.tail_length(p) > COMPACT_TAIL for p in partitions])
        before = [await records(store, p) for p in partitions]
        written = await _tables(store)
        await store.rebuild()
        assert [await store.tail_length(p) for p in partitions] == [0, 0]
        assert await _tables(store) == written
        await _mixed_workload(store, users[0], 500)
        assert await store.tail_length(partitions[0]) > 0
        grown = await records(store, partitions[0])
        assert len(grown) > len(before[0])
    finally:
        await store.close()
    store = await open_sqlite(tmp_path)
    try:
        assert [await records(store, p) for p in partitions] == [grown, before[1]]
        written = await _tables(store)
        await store.drop_derived_rows()
        await store.rebuild()
        assert await _tables(store) == written
    finally:
        await store.close()


async def test_imports_into_a_partition_that_is_not_hot_keep_its_tail_short(tmp_path: Path) -> None:
    """Every import into a partition that is not hot appends an update row, which each
    later load of its document pays for; the import that would make the tail longer than
    the partition's point (about COMPACT_TAIL) stores a snapshot instead. The document and
    rows stay the source's (also where a chunk grows a record held since an earlier
    import, and after a restart), and a third store receives all of it from the compacted
    one."""
    from syncd.store.documents import EMPTY_VERSION, PartitionDoc, import_compact_point

    source, target, third = [await open_sqlite(tmp_path / name) for name in ("source", "target", "third")]
    try:
        user = uuid.uuid4().hex
        partition = user_partition(user)
        point = import_compact_point(partition)
        held = await start(source, user, 0)
        tails = []
        for round_ in range(point + 3):
            if round_:
                await _mixed_workload(source, user, 100 * round_)
                await update(source, user, held, {"progress_delta": 0.01, "time_spent_delta": 1.0}, 100 * round_ + 90)
            seen = (await target.version_vectors([partition])).get(partition, EMPTY_VERSION)
            chunk = await source.export_missing(partition, seen, update_lists=True)
            assert (await target.import_chunk(partition, chunk, source="test")).changed
            tails.append(await target.tail_length(partition))
        assert tails == [0, *range(1, point + 1), 0, 1]

        async def same_as_source(store: SqliteStore) -> None:
            docs = [PartitionDoc.load([await s.export_missing(partition, EMPTY_VERSION)], 9) for s in (store, source)]
            assert docs[0].deep_value() == docs[1].deep_value()
            for model in DERIVED_MODELS:
                assert await rows(store, model, user_id=user) == await rows(source, model, user_id=user), model

        await same_as_source(target)
        assert (await third.import_chunk(partition, await target.export_missing(partition, EMPTY_VERSION),
                                         source="test")).changed
        await same_as_source(third)
        await target.close()
        target = await open_sqlite(tmp_path / "target")
        await same_as_source(target)
    finally:
        for store in (source, target, third):
            await store.close()


# --- an incremental export answers from the stored update rows ----------------------------
async def test_an_incremental_export_sends_the_stored_update_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer whose version covers a stored point gets the update rows after it, as
    stored, with no document loaded: a list of blobs if it reads lists (protocol 3), else
    one blob exported from the document. Either brings it to the same document and rows."""
    from syncd.store.documents import EMPTY_VERSION, UPDATE_LIST, PartitionDoc, split_chunk

    source = await open_sqlite(tmp_path / "source", cache_decoded=1)
    targets = [await open_sqlite(tmp_path / name) for name in ("lists", "single")]
    try:
        user, other = uuid.uuid4().hex, uuid.uuid4().hex
        partition = user_partition(user)
        await _mixed_workload(source, user, 0)
        first = await source.export_missing(partition, EMPTY_VERSION)
        for target in targets:
            assert (await target.import_chunk(partition, first, source="test")).changed
        seen = (await targets[0].version_vectors([partition]))[partition]
        await _mixed_workload(source, user, 100)  # more update rows
        await _mixed_workload(source, other, 0)   # ...and the learner's document goes cold

        loads: list[int] = []
        real_load = PartitionDoc.load.__func__  # type: ignore[attr-defined]
        monkeypatch.setattr(PartitionDoc, "load", classmethod(lambda cls, *a: loads.append(1) or real_load(cls, *a)))
        chunk = await source.export_missing(partition, seen, update_lists=True)
        assert chunk.startswith(UPDATE_LIST) and len(split_chunk(chunk)) > 1 and loads == []
        single = await source.export_missing(partition, seen)
        assert single.startswith(b"loro") and loads == [1]
        assert await source.export_missing(partition, (await source.version_vectors([partition]))[partition],
                                           update_lists=True) == b""

        for target, data in zip(targets, (chunk, single)):
            assert (await target.import_chunk(partition, data, source="test")).changed
            assert await target.version_vectors([partition]) == await source.version_vectors([partition])
            docs = [PartitionDoc.load([await s.export_missing(partition, EMPTY_VERSION)], 9) for s in (target, source)]
            assert docs[0].deep_value() == docs[1].deep_value()
            for model in DERIVED_MODELS:
                assert await rows(target, model, user_id=user) == await rows(source, model, user_id=user), model
    finally:
        for store in (source, *targets):
            await store.close()


async def test_an_export_without_a_covered_point_loads_the_document(tmp_path: Path) -> None:
    """A peer lacking part of the snapshot, or rows whose versions are unknown (stored
    before they were recorded), get an export from the document: still all they lack."""
    from syncd.store.documents import EMPTY_VERSION, PartitionDoc

    source = await open_sqlite(tmp_path / "source", cache_decoded=1, compact_after=5)
    try:
        user, other = uuid.uuid4().hex, uuid.uuid4().hex
        partition = user_partition(user)
        await _mixed_workload(source, user, 0)  # compacted on the way: a snapshot and a tail
        await _mixed_workload(source, other, 0)
        snapshots = await source.run_read(lambda c: c.execute(
            "SELECT count(*) FROM documents WHERE partition = ? AND vv != x''", (partition,)).fetchone()[0])
        assert snapshots == 1
        everything = await source.export_missing(partition, EMPTY_VERSION, update_lists=True)
        assert everything.startswith(b"loro")
        whole = PartitionDoc.load([everything], 9)
        assert whole.version() == (await source.version_vectors([partition]))[partition]

        await source.run_write(lambda c: c.execute("UPDATE doc_updates SET vv = x''"))
        await source.run_write(lambda c: c.execute("UPDATE documents SET vv = x''"))
        tail = await source.export_missing(partition, whole.version(), update_lists=True)
        assert tail == b""  # nothing lacking (the hot-free path compares the document's version)
        half = await source.export_missing(partition, EMPTY_VERSION, update_lists=True)
        assert PartitionDoc.load([half], 9).version() == whole.version()
    finally:
        await source.close()


async def test_imports_leave_the_hot_partitions_as_they_were(tmp_path: Path) -> None:
    """A sync's imports do not make their partitions hot: the learners being written to
    keep their documents in memory, and the imported ones are released once committed
    (a full sync of a school would otherwise hold ``cache_decoded`` of them); those that
    were not loaded before keep their index only, not the memory of the rows written."""
    from syncd.store.documents import EMPTY_VERSION

    source = await open_sqlite(tmp_path / "source")
    target = await open_sqlite(tmp_path / "target", cache_decoded=2)
    try:
        users = await _learners(source, 4)
        writer = uuid.uuid4().hex
        await _mixed_workload(target, writer, 0)
        assert list(target._decoded) == [user_partition(writer)]
        for user in users:
            chunk = await source.export_missing(user_partition(user), EMPTY_VERSION)
            assert (await target.import_chunk(user_partition(user), chunk, source="test")).changed
        assert list(target._decoded) == [user_partition(writer)]
        assert all(target._cache[user_partition(u)].doc is None for u in users)
        assert all(not target._cache[user_partition(u)].written for u in users)
        assert all(target._cache[user_partition(u)].state is not None for u in users)
        # a hot partition stays hot through an import
        await _mixed_workload(source, writer, 500)
        chunk = await source.export_missing(user_partition(writer), (await target.version_vectors(
            [user_partition(writer)]))[user_partition(writer)])
        await target.import_chunk(user_partition(writer), chunk, source="test")
        assert list(target._decoded) == [user_partition(writer)]
        # released partitions read, take writes and sync on as before
        await _mixed_workload(target, users[0], 900)
        chunk = await target.export_missing(user_partition(users[0]), (await source.version_vectors(
            [user_partition(users[0])]))[user_partition(users[0])])
        await source.import_chunk(user_partition(users[0]), chunk, source="test")
        for user in users:
            for model in DERIVED_MODELS:
                assert await rows(target, model, user_id=user) == await rows(source, model, user_id=user), model
    finally:
        await source.close()
        await target.close()


async def test_the_change_feed_ends_at_the_last_committed_change(tmp_path: Path) -> None:
    """A peer's scan of the change feed while a write is committing must not return a
    cursor past that write: the next scan from that cursor would skip it, and the peer
    would never be offered the change."""
    import threading

    store = await open_sqlite(tmp_path)
    gate = threading.Event()
    try:
        (user,) = await _learners(store, 1)
        cursor, _ = await store.changes_since(0, "all")
        blocked = asyncio.ensure_future(store.run_write(lambda conn: gate.wait(30)))  # holds the writer thread
        other = uuid.uuid4().hex
        write = asyncio.ensure_future(start(store, other, 5))
        deadline = asyncio.get_running_loop().time() + 10
        while store._feed_seq <= cursor:  # until the write has taken its feed seq and queued its commit
            assert asyncio.get_running_loop().time() < deadline, "the write never took its feed seq"
            await asyncio.sleep(0.005)  # wait-ok: polls the condition above, with a deadline
        during, seen = await store.changes_since(cursor, "all")
        assert user_partition(other) not in seen and during == cursor
        gate.set()
        await blocked
        await write
        after, seen = await store.changes_since(during, "all")
        assert user_partition(other) in seen and after > during
    finally:
        gate.set()  # a failed assertion must not leave the writer thread waiting
        await store.close()


async def test_status_digests_are_kept_until_the_rows_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /status reports every partition's digest; each is computed once and kept until
    that partition's rows change (a write, an import, a rebuild, a drop), and always
    equals a full scan of the tables."""
    from syncd.store import derived
    from syncd.store.documents import EMPTY_VERSION
    from tests.daemon_harness import derived_digests

    computed: list[str] = []
    real = derived.partition_digest
    monkeypatch.setattr(derived, "partition_digest", lambda conn, p: computed.append(p) or real(conn, p))

    async def check(expect_computed: set[str]) -> None:
        full_scan = await store.run_read(derived_digests)
        computed.clear()
        assert (await store.status()).digests == full_scan
        assert set(computed) == expect_computed

    store = await open_sqlite(tmp_path / "a")
    source = await open_sqlite(tmp_path / "b")
    try:
        users = await _learners(store, 3)
        parts = {user_partition(u) for u in users}
        await check(parts)
        await check(set())                      # nothing changed: nothing hashed again
        await start(store, users[0], 700)
        await check({user_partition(users[0])})
        newcomer = uuid.uuid4().hex
        await _mixed_workload(source, newcomer, 0)
        await store.import_chunk(user_partition(newcomer), await source.export_missing(
            user_partition(newcomer), EMPTY_VERSION), source="test")
        await check({user_partition(newcomer)})
        await store.run_write(lambda c: c.execute("UPDATE attemptlog SET row = '{}'"))
        await check(parts | {user_partition(newcomer)})
        await store.rebuild()                   # puts the attempts back
        await check({p for p in parts | {user_partition(newcomer)}
                     if await store.run_read(lambda c, p=p: c.execute(
                         "SELECT 1 FROM attemptlog WHERE partition = ?", (p,)).fetchone())})
        await store.drop_derived_rows()
        await check(parts | {user_partition(newcomer)})
        assert (await store.status()).digests == {}
    finally:
        await store.close()
        await source.close()


# --- first imports in import worker processes (store.import_pool) ------------------------------------
async def _first_sync(source: SqliteStore, target: SqliteStore) -> list[Any]:
    """Every partition of ``source`` into ``target`` as one batch of first imports."""
    from syncd.store.documents import EMPTY_VERSION

    chunks = [(p, await source.export_missing(p, EMPTY_VERSION)) for p in await source.partitions()]
    staged = await target.stage_imports(chunks, source="test")
    return [await s.committed() if not isinstance(s, Exception) else s for s in staged]


async def test_the_writer_keeps_a_larger_page_cache_while_a_large_school_arrives(tmp_path: Path) -> None:
    """Past ``import_workers_above`` bytes of first imports the writer's connection keeps
    BULK_WRITER_CACHE_KIB of page cache; a minute after the last first import, SQLite's
    default again. A small school's sync leaves it at the default."""
    from syncd.store.sqlite import BULK_WRITER_CACHE_KIB, WRITER_CACHE_KIB

    def writer_cache(store: SqliteStore) -> Any:
        return store._writer.submit(lambda conn: -conn.execute("PRAGMA cache_size").fetchone()[0])

    source = await open_sqlite(tmp_path / "source")
    small = await open_sqlite(tmp_path / "small")
    large = await open_sqlite(tmp_path / "large", import_workers=0, import_workers_above=1)
    try:
        await _learners(source, 3)
        assert await writer_cache(large) == WRITER_CACHE_KIB
        await _first_sync(source, small)
        assert await writer_cache(small) == WRITER_CACHE_KIB
        await _first_sync(source, large)
        assert await writer_cache(large) == BULK_WRITER_CACHE_KIB
        large._first_import_at -= 61    # a minute without first imports
        large._recheck_bulk()
        assert await writer_cache(large) == WRITER_CACHE_KIB
        assert await _tables(large) == await _tables(small) == await _tables(source)
    finally:
        for store in (source, small, large):
            await store.close()


async def test_first_imports_in_worker_processes_store_what_the_daemon_stores(tmp_path: Path) -> None:
    """A large first sync hands an import worker as many of a batch's first imports as it
    has room for, the daemon takes the rest: the target stores the same rows and raw
    records as a target that took them all itself, and the workers end once idle."""
    source = await open_sqlite(tmp_path / "source")
    alone = await open_sqlite(tmp_path / "alone", import_workers=0)
    helped = await open_sqlite(tmp_path / "helped", import_workers=1, import_workers_above=0)
    try:
        users = await _learners(source, 6)
        for target in (alone, helped):
            results = await _first_sync(source, target)
            assert all(r.changed for r in results) and len(results) == 6
        assert helped._pool._running, "the worker did not run"
        assert not alone._pool._running
        assert await _tables(helped) == await _tables(alone) == await _tables(source)
        for user in users:
            partition = user_partition(user)
            assert sorted((await helped.raw_records(partition)).index()) == \
                sorted((await alone.raw_records(partition)).index())
        # what a worker imported takes writes like any other partition: its rows stay those
        # a rebuild folds
        await _mixed_workload(helped, users[0], 700)
        written = await _tables(helped)
        await helped.drop_derived_rows()
        await helped.rebuild()
        assert await _tables(helped) == written
    finally:
        for store in (source, alone, helped):
            await store.close()


async def test_a_worker_refuses_what_the_daemon_refuses(tmp_path: Path) -> None:
    """A hostile first import handed to a worker is refused with the daemon's reason, and
    leaves nothing; the chunks before it in the batch are stored."""
    from syncd.errors import InvalidRecordError
    from syncd.store.documents import EMPTY_VERSION, PartitionDoc

    source = await open_sqlite(tmp_path / "source")
    target = await open_sqlite(tmp_path / "target", import_workers=1, import_workers_above=0)
    try:
        users = await _learners(source, 3)
        honest = [(user_partition(u), await source.export_missing(user_partition(u), EMPTY_VERSION)) for u in users]
        doc = PartitionDoc.load([honest[0][1]], 66)
        doc._doc.get_text("junk").insert(0, "not a record")  # a write outside the layout
        doc._doc.commit()
        hostile = (user_partition(uuid.uuid4().hex), doc.export_since(EMPTY_VERSION))
        staged = await target.stage_imports([honest[1], hostile, honest[2]], source="test")
        assert isinstance(staged[-1], InvalidRecordError) and "outside the partition's record layout" in str(staged[-1])
        assert len(staged) == 2 and not isinstance(staged[0], Exception)
        await staged[0].committed()
        assert hostile[0] not in await target.partitions()
        assert honest[1][0] in await target.partitions()
    finally:
        await source.close()
        await target.close()


@pytest.mark.parametrize("script", ["echo boom >&2; exit 3", "printf '\\301'", "cat >/dev/null; kill -9 $$",
                                    "head -c 10 >/dev/null; sleep 0.1; exit 0"])
async def test_a_failing_import_worker_leaves_its_chunks_to_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, script: str
) -> None:
    """An import worker that cannot run, crashes, ends early or sends garbage is logged,
    and the daemon takes its chunks itself: every partition arrives."""
    from syncd.store import import_pool

    worker = tmp_path / "worker.sh"
    worker.write_text(f"#!/bin/sh\n{script}\n")
    worker.chmod(0o755)
    monkeypatch.setattr(import_pool, "WORKER_COMMAND", (str(worker),))
    source = await open_sqlite(tmp_path / "source")
    target = await open_sqlite(tmp_path / "target", import_workers=1, import_workers_above=0)
    target._pool._timeout = 2.0  # (the one that reads and never answers)
    try:
        await _learners(source, 4)
        results = await _first_sync(source, target)
        assert all(r.changed for r in results) and len(results) == 4
        assert await _tables(target) == await _tables(source)
        assert "import worker" in caplog.text
        if "boom" in script:
            assert "boom" in caplog.text
    finally:
        await source.close()
        await target.close()


async def test_an_import_worker_outlives_a_request_given_up_on(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    """A sync that ends while a worker takes one of its chunks drops that answer when it
    comes; the worker goes on serving the next requests."""
    from syncd.store.documents import EMPTY_VERSION
    from syncd.store.import_pool import ImportPool

    source = await open_sqlite(tmp_path / "source")
    pool = ImportPool(1)
    try:
        users = await _learners(source, 3)
        chunks = [(user_partition(u), await source.export_missing(user_partition(u), EMPTY_VERSION)) for u in users]
        given_up = asyncio.ensure_future(pool.run(*chunks[0], "0" * 32))
        while not pool._running or not pool._running[0].waiting:
            await asyncio.sleep(0.001)  # wait-ok: polls until the request is on its way
        given_up.cancel()
        results = [await pool.run(partition, data, "0" * 32) for partition, data in chunks[1:]]
        assert [r.partition for r in results] == [p for p, _ in chunks[1:]]
        assert len(pool._running) == 1 and pool._running[0].alive
        assert "import worker" not in caplog.text
    finally:
        await pool.close()
        await source.close()


async def test_the_wal_is_checkpointed_beside_the_writer(tmp_path: Path) -> None:
    """The writer never checkpoints in a commit (its connection's autocheckpoint is off);
    the checkpoint thread copies the log back into the database file after commits (the
    file grows only so: nothing here checkpoints otherwise), and the log is reused rather
    than grown without end."""
    store = await open_sqlite(tmp_path)
    try:
        assert await store._writer.submit(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
        empty = store.path.stat().st_size
        written = 0
        for _ in range(3):
            await _learners(store, 4)
            written = Path(str(store.path) + "-wal").stat().st_size + store.path.stat().st_size
        deadline = asyncio.get_running_loop().time() + 10
        while store.path.stat().st_size <= empty:
            assert asyncio.get_running_loop().time() < deadline, "nothing was checkpointed into the database file"
            await asyncio.sleep(0.01)  # wait-ok: polls the file with a deadline
        assert store._writer._checkpointer.checkpoints > 0
        wal = Path(str(store.path) + "-wal").stat().st_size
        assert wal < written, f"the log ({wal} bytes) holds everything written"
    finally:
        await store.close()
