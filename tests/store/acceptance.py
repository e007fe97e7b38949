"""The store acceptance suite: every Store backend must pass these (automerge-repo's
``runStorageAdapterTests`` shape). A backend's test module calls
``store_acceptance_tests(open_backend)`` and binds the returned tests into its namespace.

``open_backend(state_dir, **options)`` opens the backend on a state directory; reopening
the same directory must give back everything committed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from syncd.errors import InvalidRecordError, StoreError, StoreUnavailableError
from syncd.logs import writes
from syncd.logs.partitions import user_partition
from syncd.logs.state import PartitionState
from syncd.logs.writes import WriteContext, WriteResult

Opener = Callable[..., Awaitable[Any]]

_counter = itertools.count(1)
CONTENT = "c6f49ea527824f398f4d5d26faf19396"
CHANNEL = "6199dde695db4ee4ab392222d5af1e5c"
NODE = "32a941fb77c2576e8f6b294cde4c3b0c"


def ctx(store: Any, user: str, second: int) -> WriteContext:
    return WriteContext(
        now=f"2025-01-06T09:{second // 60:02d}:{second % 60:02d}.000000+00:00",
        user_id=user,
        device_id=store.device_id,
        dataset_id=store.dataset_id,
        new_id=lambda: uuid.uuid4().hex,
        random_quiz_level=lambda: -next(_counter),
    )


def video_start(content: str = CONTENT) -> dict[str, Any]:
    return {"node_id": NODE, "content_id": content, "channel_id": CHANNEL, "kind": "video"}


async def start(store: Any, user: str, second: int = 0, content: str = CONTENT) -> str:
    c = ctx(store, user, second)
    result = await store.write(user_partition(user), lambda s: writes.start_session(s, video_start(content), c))
    return str(result.response["session_id"])


async def update(store: Any, user: str, session: str, payload: dict[str, Any], second: int) -> WriteResult:
    c = ctx(store, user, second)
    result: WriteResult = await store.write(user_partition(user), lambda s: writes.update_session(s, session, payload, c))
    return result


async def rows(store: Any, model: str, **filters: str) -> list[dict[str, Any]]:
    page = await store.read(model, filters)
    return [json.loads(r) for r in page.rows]


def store_acceptance_tests(open_backend: Opener) -> dict[str, Callable[..., Awaitable[None]]]:
    async def test_write_then_read(tmp_path: Path) -> None:
        store = await open_backend(tmp_path)
        try:
            user = uuid.uuid4().hex
            session = await start(store, user)
            await update(store, user, session, {"progress_delta": 0.3, "time_spent_delta": 10.0}, 10)
            (summary,) = await rows(store, "contentsummarylog")
            assert summary["progress"] == pytest.approx(0.3) and summary["time_spent"] == 10.0
            (row,) = await rows(store, "contentsessionlog", user_id=user)
            assert row["id"] == session and row["end_timestamp"].startswith("2025-01-06T09:00:10")
        finally:
            await store.close()

    async def test_refused_write_changes_nothing(tmp_path: Path) -> None:
        store = await open_backend(tmp_path)
        try:
            user = uuid.uuid4().hex
            session = await start(store, user)
            before = await store.status()
            with pytest.raises(InvalidRecordError):
                await update(store, user, session, {"progress_delta": 2.0}, 5)
            after = await store.status()
            assert after.feed_seq == before.feed_seq and after.digests == before.digests
            state: PartitionState = await store.raw_records(user_partition(user))
            assert [r.events for r in state.records.values()] == [[]]
        finally:
            await store.close()

    async def test_everything_committed_survives_reopen(tmp_path: Path) -> None:
        store = await open_backend(tmp_path)
        users = [uuid.uuid4().hex for _ in range(3)]
        for i, user in enumerate(users):
            session = await start(store, user, i)
            for k in range(5):
                await update(store, user, session, {"time_spent_delta": 1.5, "progress_delta": 0.1}, 10 + k)
        status = await store.status()
        snapshot = {u: (await store.raw_records(user_partition(u))).records for u in users}
        await store.close()
        store = await open_backend(tmp_path)
        try:
            again = await store.status()
            assert again.digests == status.digests and again.feed_seq == status.feed_seq
            for user in users:
                assert (await store.raw_records(user_partition(user))).records == snapshot[user]
        finally:
            await store.close()

    async def test_lru_keeps_few_documents_and_loses_nothing(tmp_path: Path) -> None:
        store = await open_backend(tmp_path, cache_documents=2)
        try:
            users = [uuid.uuid4().hex for _ in range(6)]
            sessions = {u: await start(store, u) for u in users}
            for round_ in range(3):
                for user in users:
                    await update(store, user, sessions[user], {"time_spent_delta": 1.0}, 20 + round_)
            status = await store.status()
            assert status.loaded_documents <= 2
            for user in users:
                (row,) = await rows(store, "contentsessionlog", user_id=user)
                assert row["time_spent"] == 3.0
        finally:
            await store.close()

    async def test_compaction_keeps_history_and_state(tmp_path: Path) -> None:
        store = await open_backend(tmp_path, compact_after=3)
        user = uuid.uuid4().hex
        session = await start(store, user)
        for k in range(10):
            await update(store, user, session, {"time_spent_delta": 1.0}, 10 + k)
        state_before = (await store.raw_records(user_partition(user))).records
        await store.close()
        store = await open_backend(tmp_path, compact_after=3)
        try:
            assert (await store.raw_records(user_partition(user))).records == state_before
            (row,) = await rows(store, "contentsessionlog")
            assert row["time_spent"] == 10.0
            assert await store.tail_length(user_partition(user)) < 3
        finally:
            await store.close()

    async def test_failed_commit_answers_unavailable_and_keeps_nothing(tmp_path: Path) -> None:
        store = await open_backend(tmp_path, compact_after=10_000)
        try:
            user = uuid.uuid4().hex
            session = await start(store, user)
            before = await store.status()
            await store.simulate_full_disk(True)
            with pytest.raises(StoreUnavailableError):
                await update(store, user, session, {"time_spent_delta": 7.0, "extra_fields": {"x": "y" * 60_000}}, 30)
            await store.simulate_full_disk(False)
            after = await store.status()
            assert after.digests == before.digests
            state: PartitionState = await store.raw_records(user_partition(user))
            assert all(not r.events for r in state.records.values())
            # the store works again, and the failed write never shows up
            await update(store, user, session, {"time_spent_delta": 1.0}, 31)
            (row,) = await rows(store, "contentsessionlog")
            assert row["time_spent"] == 1.0
        finally:
            await store.close()

    async def test_concurrent_writes_are_group_committed(tmp_path: Path) -> None:
        store = await open_backend(tmp_path)
        try:
            users = [uuid.uuid4().hex for _ in range(40)]
            await asyncio.gather(*(start(store, u, i) for i, u in enumerate(users)))
            status = await store.status()
            assert len(await rows(store, "contentsessionlog")) == 40
            assert status.extra["committed_jobs"] >= 40
            assert status.extra["commits"] < status.extra["committed_jobs"]
        finally:
            await store.close()

    async def test_state_dir_is_locked(tmp_path: Path) -> None:
        store = await open_backend(tmp_path)
        try:
            with pytest.raises(StoreError, match="in use"):
                await open_backend(tmp_path)
        finally:
            await store.close()

    async def test_identity_stable_peer_id_fresh(tmp_path: Path) -> None:
        first = await open_backend(tmp_path)
        device, epoch, peer = first.device_id, first.identity.epoch, first.identity.peer_id
        await first.close()
        second = await open_backend(tmp_path)
        try:
            assert second.device_id == device and second.identity.epoch == epoch
            assert second.identity.peer_id != peer
        finally:
            await second.close()

    async def test_moved_state_dir_takes_new_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SYNCD_MACHINE_ID", "machine-a")
        first = await open_backend(tmp_path)
        device, epoch = first.device_id, first.identity.epoch
        await first.close()
        monkeypatch.setenv("SYNCD_MACHINE_ID", "machine-b")
        second = await open_backend(tmp_path)
        try:
            assert second.device_id != device and second.identity.epoch != epoch
        finally:
            await second.close()

    async def test_rebuild_restores_identical_rows(tmp_path: Path) -> None:
        store = await open_backend(tmp_path)
        try:
            for i in range(4):
                user = uuid.uuid4().hex
                session = await start(store, user, i)
                await update(store, user, session, {"progress_delta": 0.5, "time_spent_delta": 3.0}, 10 + i)
            before = await store.status()
            await store.drop_derived_rows()
            assert sum((await store.status()).records.values()) == 0
            report = await store.rebuild()
            assert report.partitions == 4 and report.records == 4
            after = await store.status()
            assert after.digests == before.digests and after.records == before.records
        finally:
            await store.close()

    async def test_reads_filter_sort_and_page(tmp_path: Path) -> None:
        store = await open_backend(tmp_path)
        try:
            user_a, user_b = uuid.uuid4().hex, uuid.uuid4().hex
            other = uuid.uuid4().hex
            await start(store, user_a, 5)
            await start(store, user_b, 3)
            await start(store, user_a, 1, content=other)
            all_rows = await rows(store, "contentsessionlog")
            assert [r["start_timestamp"][17:19] for r in all_rows] == ["01", "03", "05"]
            assert {r["user_id"] for r in await rows(store, "contentsessionlog", user_id=user_a)} == {user_a}
            assert len(await rows(store, "contentsessionlog", content_id=other)) == 1
            page = await store.read("contentsessionlog", {}, limit=2, offset=2)
            assert page.count == 3 and len(page.rows) == 1
        finally:
            await store.close()

    return {name: fn for name, fn in locals().items() if name.startswith("test_")}
