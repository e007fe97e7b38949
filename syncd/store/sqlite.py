"""SqliteStore: partitions as Loro documents persisted in one SQLite file.

Theory of operation (DESIGN §4, §10):

* **One writer thread** owns the only writing connection. Jobs (a function of the
  connection) queue up; the thread takes every job waiting, runs them in ONE transaction
  and commits with one fsync (WAL, ``synchronous=FULL``): group commit. Each job's
  future resolves only after COMMIT, so a write is acknowledged only once it survives
  ``kill -9`` and power loss. If a batch fails, each job is retried alone so one bad job
  cannot fail its neighbours.
* **A write** runs under its partition's asyncio lock: decide on the committed state
  (``logs.writes``, pure; an error leaves everything untouched because nothing was
  applied yet), apply the mutations to the document, refold the touched groups, then
  commit the update bytes, the derived rows and the change-feed bump together. Holding
  the lock until COMMIT means the in-memory document never shows an uncommitted write
  to anyone. A failed commit evicts the document (it holds ops that were never stored)
  and answers ``StoreUnavailableError``.
* **Reads** run on reader threads with their own connections: they see committed rows.
* **Documents** load lazily (snapshot + update tail) and are evicted least recently used.
  Only the ``cache_decoded`` most recently used of them are *hot*: they hold their Loro
  document and decoded raw records. A Loro document takes about 1.5 KB per raw record in
  memory and decoded records about twice that again, so the others keep only their index
  (each record's derivation group) and row memory, and reload the document (a snapshot
  and a short tail, about 1 ms) when next written to or imported into; a reader then
  decodes only the groups it needs.
  When a partition's tail reaches ``compact_after`` rows it is replaced by a full
  snapshot (history kept: never a shallow snapshot) in the same transaction.
* **A rebuild** refolds every partition in worker processes (``store.rebuild``) that
  read committed data and send back only the rows that differ; they are stored only if
  the partition was not written to meanwhile (its feed seq says so).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import OrderedDict, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Coroutine, Mapping, Sequence, TypeVar

from syncd.errors import InvalidRecordError, StoreUnavailableError
from syncd.logs.aggregate import derive, derive_changes
from syncd.logs.records import DERIVED_MODELS, CreateRecord, DerivedModel, DerivedRow, GroupKey, RawRecord
from syncd.logs.integrity import check_growth
from syncd.logs.partitions import matches
from syncd.logs.state import PartitionState, group_of
from syncd.logs.writes import WriteResult
from syncd.store import derived, doc_tables
from syncd.store.bulk import chunks as batches, insert_rows
from syncd.store.checkpoint import Checkpointer
from syncd.store.commits import INDEX_HEAD, PartitionCommit, index_rows, store_snapshot, write_commits
from syncd.store.first_import import FirstImport, fold_first_import
from syncd.store.import_pool import ImportPool, WorkerError
from syncd.store.doc_tables import all_partitions, read_blobs, updates_after
from syncd.store.documents import (
    EMPTY_VERSION, NeedsDetachedImport, PartitionDoc, import_compact_point, pack_updates, version_covers,
)
from syncd.store.interface import (
    Decide, ImportResult, Page, RebuildReport, StagedImport, Store, StoreStatus, Subscription,
)
from syncd.store.migrate import migrate
from syncd.store.rebuild import refold_in_workers
from syncd.store.rebuild_worker import PartitionRefold
from syncd.store.statedir import Identity, StateDirLock, establish_identity

log = logging.getLogger(__name__)

DB_FILE = "syncd.sqlite3"
NO_DATASET = "0" * 32
T = TypeVar("T")
Job = Callable[[sqlite3.Connection], None]


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode with the pragmas every connection needs."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


@dataclass
class _Queued:
    job: Callable[[sqlite3.Connection], Any] | PartitionCommit
    future: "asyncio.Future[Any]"
    result: Any = None


class _Writer:
    """The writer thread: group-commits queued jobs and resolves their futures."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop, *, group_commit: bool, max_batch: int = 1024):
        self._path = path
        self._loop = loop
        self._group_commit = group_commit
        self._max_batch = max_batch
        self._queue: "queue.SimpleQueue[_Queued | None]" = queue.SimpleQueue()
        self._checkpointer = Checkpointer(path, connect)
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="syncd-writer", daemon=True)
        self.commits = 0
        self.jobs = 0
        self._thread.start()
        self._ready.wait()
        error = self._failed_to_start()
        if error is not None:
            self._checkpointer.close()
            raise error

    def _failed_to_start(self) -> BaseException | None:
        """What stopped the thread from opening its connection (set by the thread)."""
        return self._startup_error

    async def submit(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` in a transaction; its value once COMMIT returned. A job may run
        twice (alone, after its batch failed), so it must not keep state between runs."""
        return await self.enqueue(job)

    def enqueue(self, job: Callable[[sqlite3.Connection], T]) -> "asyncio.Future[T]":
        """``submit``, queued now (before anything the caller queues next)."""
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Queued(job, future))
        return future

    def enqueue_commit(self, commit: PartitionCommit) -> "asyncio.Future[None]":
        """Queue a partition's change (``commits``); the future resolves once COMMIT
        returned. Jobs and commits commit in the order they were queued, and the commits
        queued together are stored with a few statements per table."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put(_Queued(commit, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = connect(self._path)
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # (the Checkpointer's job)
        except BaseException as exc:  # reported to the opener
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while self._group_commit and len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            error = self._commit(conn, batch)
            if error is not None and len(batch) > 1:
                for item in batch:  # isolate the failing job
                    self._resolve(item, self._commit(conn, [item]))
            else:
                for item in batch:
                    self._resolve(item, error)
            self._checkpointer.committed()
        conn.close()
        self._checkpointer.close()

    def _commit(self, conn: sqlite3.Connection, batch: Sequence[_Queued]) -> BaseException | None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            commits: list[PartitionCommit] = []  # consecutive ones, stored together
            for item in batch:
                if isinstance(item.job, PartitionCommit):
                    commits.append(item.job)
                    continue
                if commits:  # (in queue order: a job may read what the commits before it wrote)
                    write_commits(conn, commits)
                    commits = []
                item.result = item.job(conn)
            if commits:
                write_commits(conn, commits)
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return exc
        self.commits += 1
        self.jobs += len(batch)
        return None

    def _resolve(self, item: _Queued, error: BaseException | None) -> None:
        def settle() -> None:
            if item.future.done():
                return
            if error is None:
                item.future.set_result(item.result)
            else:
                item.future.set_exception(error)

        self._loop.call_soon_threadsafe(settle)


@dataclass
class _Loaded:
    """A partition held in memory: its update tail, its row memory and, once it was hot,
    its index; a hot partition also holds its document and decoded records."""

    doc: PartitionDoc | None  # None: released (SqliteStore._hot reloads it)
    next_seq: int       # seq of the next doc_updates row
    tail: int           # doc_updates rows since the snapshot
    state: PartitionState | None = None  # None: never decoded (SqliteStore._hot decodes)

    def records_named(self, record_ids: Sequence[str]) -> list[RawRecord]:
        """The state's loader: from the document held now (a released one is reloaded
        before any reader runs; a loader bound to one document object would read a stale
        one after that, and keep it alive)."""
        if self.doc is None:
            raise RuntimeError("a released partition's records were read before it was made hot")
        return self.doc.records_named(record_ids)
    # The committed derived rows of each group refolded since the load, so a write
    # stores only the rows it changed (a group not in here is rewritten whole).
    written: dict[GroupKey, dict[derived.RowKey, derived.Stored]] = field(default_factory=dict)


class SqliteStore:
    """The embedded default store. Open with ``await SqliteStore.open(state_dir, ...)``."""

    _lock: StateDirLock
    identity: Identity
    path: Path

    def __init__(self) -> None:  # use open()
        raise TypeError("use await SqliteStore.open(...)")

    @classmethod
    async def open(
        cls,
        state_dir: Path,
        *,
        cache_documents: int = 64,
        cache_decoded: int = 8,
        compact_after: int = 256,
        group_commit: bool = True,
        rebuild_workers: int = 2,
        import_workers: int = 1,
        import_workers_above: int = 24 * 2**20,
    ) -> "SqliteStore":
        self = object.__new__(cls)
        state_dir = Path(state_dir)
        self._lock = StateDirLock(state_dir)
        try:
            self._init(state_dir, cache_documents, cache_decoded, compact_after, group_commit, rebuild_workers,
                       import_workers, import_workers_above)
        except BaseException:
            self._lock.close()
            raise
        return self

    def _init(self, state_dir: Path, cache_documents: int, cache_decoded: int, compact_after: int,
              group_commit: bool, rebuild_workers: int, import_workers: int, import_workers_above: int) -> None:
        self.path = state_dir / DB_FILE
        conn = connect(self.path)
        try:
            migrate(conn)
            self.identity = establish_identity(conn, state_dir)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            self._dataset_id = str(meta.get("dataset_id", NO_DATASET))
            self._feed_seq = int(conn.execute("SELECT coalesce(max(seq), 0) FROM partition_seq").fetchone()[0])
            # The feed seq every change up to which has committed (or failed): what a
            # change-feed reader may scan up to. ``_feed_seq`` runs ahead of it while a
            # commit is in flight; a reader that took that seq as its cursor end would step
            # past a change that lands after its scan, and never offer it.
            self._committed_feed_seq = self._feed_seq
        finally:
            conn.close()
        self._digests: dict[str, str] = {}  # partition -> digest of its derived rows (status)
        self._digest_generation = 0          # moves whenever derived rows may have changed
        self._loop = asyncio.get_running_loop()
        self._writer = _Writer(self.path, self._loop, group_commit=group_commit)
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="syncd-reader")
        self._folder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncd-fold")
        self._local = threading.local()
        self._cache: OrderedDict[str, _Loaded] = OrderedDict()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._cache_documents = cache_documents
        self._decoded: OrderedDict[str, None] = OrderedDict()  # partitions whose state is decoded, LRU
        self._cache_decoded = min(cache_decoded, cache_documents)
        self._compact_after = compact_after
        self._rebuild_workers = rebuild_workers
        self._pool = ImportPool(import_workers)
        self._workers_above = import_workers_above
        self._bulk_cache = False  # the writer's page cache is BULK_WRITER_CACHE_KIB
        self._bulk_check: asyncio.TimerHandle | None = None
        self._first_import_volume = 0   # bytes of first imports lately (``_bulk_import``)
        self._first_import_at = 0.0
        self._rebuild_lock = asyncio.Lock()
        self._background: set[asyncio.Future[None]] = set()
        self._listeners: list[Callable[[str, int], None]] = []
        self._closed = False

    # --- identity -------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self.identity.device_id

    @property
    def dataset_id(self) -> str:
        return self._dataset_id

    # --- the write path ---------------------------------------------------------------
    async def write(self, partition: str, decide: Decide) -> WriteResult:
        async with self._locks[partition]:
            loaded = await self._get(partition)
            doc, state = await self._hot(partition, loaded)
            result = decide(state)  # may raise: nothing applied yet
            if not result.mutations:
                return result
            try:
                update = doc.apply(result.mutations)
                touched = state.apply(result.mutations)
                # only the rows this write can have changed, for groups whose rows we hold
                rows, partial = derive_changes(state, touched, self.dataset_id, loaded.written)
            except BaseException:
                self._evict(partition)
                raise
            created = [(m.record_id, m.kind, state.group(m.record_id)) for m in result.mutations
                       if isinstance(m, CreateRecord)]
            await self._queue_change(partition, loaded, update, rows, partial, created=created)
            return result

    def _queue_change(
        self,
        partition: str,
        loaded: _Loaded,
        update: bytes,
        rows: Mapping[GroupKey, Sequence[DerivedRow]],
        partial: Collection[GroupKey] = (),
        *,
        compact: bool = False,
        created: Sequence[tuple[str, str, GroupKey | None]] = (),
    ) -> Coroutine[Any, Any, None]:
        """Commit an applied change (caller holds the partition lock), in two steps: the
        change is queued for the writer now, and the returned coroutine (to be awaited, or
        run as a task, without fail) returns once it is durable and its bookkeeping is
        done, or raises StoreUnavailableError, the document evicted (it holds ops that were
        never stored). The caller keeps the partition lock until then: no one may see the
        document, or write after it, before it commits. ``rows`` holds every row of each
        touched group, except for the groups in ``partial``: only the rows that may have
        changed (the others are as ``loaded.written`` has them). ``compact``: store a
        snapshot now, whatever the tail's length. ``created``: the records the change
        created, (id, kind, group), for the record index."""
        # (the caller made the partition hot and has not awaited since: the document is there)
        assert loaded.doc is not None
        compact = compact or loaded.tail + 1 >= self._compact_after
        if compact and loaded.doc.detached:
            loaded.doc.attach()  # (a snapshot holds the state: it must be current)
        snapshot = loaded.doc.export_snapshot() if compact else None
        seq = loaded.next_seq
        self._feed_seq += 1
        feed_seq = self._feed_seq
        changes = []
        written = {}
        for group, group_rows in rows.items():
            previous = loaded.written.get(group)
            if group in partial and previous is not None:
                change, written[group] = derived.diff_partial(group, group_rows, previous)
            else:
                change, written[group] = derived.diff_group(group, group_rows, previous)
            if change.upserts or change.updates or change.deletes or change.replace:
                changes.append(change)
        index = index_rows(partition, [(rid, kind, group) for rid, kind, group in created if group is not None])
        committed = self._writer.enqueue_commit(PartitionCommit(
            partition, seq, update, changes, feed_seq, loaded.doc.version(), snapshot, index))
        return self._settle_change(partition, loaded, committed, seq, feed_seq, written, partial, bool(changes),
                                   snapshot is not None)

    async def _settle_change(self, partition: str, loaded: _Loaded, committed: "asyncio.Future[None]", seq: int,
                             feed_seq: int, written: dict[GroupKey, dict[derived.RowKey, derived.Stored]],
                             partial: Collection[GroupKey], rows_changed: bool, compacted: bool) -> None:
        """A queued change's bookkeeping once its commit is in (``_queue_change``)."""
        try:
            await committed
        except BaseException as exc:
            self._evict(partition)
            log.error("commit of a change to %s failed: %s", partition, exc)
            raise StoreUnavailableError(f"the change could not be stored ({exc}); nothing was kept") from exc
        finally:
            # The writer settles jobs in the order they were queued, and seqs are taken in
            # that order: every seq up to this one has committed or failed by now.
            self._committed_feed_seq = max(self._committed_feed_seq, feed_seq)
        if rows_changed:
            self._rows_changed(partition)
        for group, after in written.items():
            previous = loaded.written.get(group)
            if group in partial and previous is not None:
                previous.update(after)  # partial: ``after`` holds the changed rows only
            else:
                loaded.written[group] = after
        loaded.next_seq = seq + 1
        loaded.tail = 0 if compacted else loaded.tail + 1
        self._notify(partition, feed_seq)

    def subscribe(self, listener: Callable[[str, int], None]) -> Callable[[], None]:
        """Call ``listener(partition, feed_seq)`` after every commit that changes a
        partition; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, partition: str, seq: int) -> None:
        for listener in list(self._listeners):
            try:
                listener(partition, seq)
            except Exception:  # a listener's bug must not fail an acknowledged write
                log.exception("change listener failed")

    # --- documents in memory ------------------------------------------------------------
    async def _get(self, partition: str, stored: _Stored | None = None) -> _Loaded:
        loaded = self._cache.get(partition)
        if loaded is not None:
            self._cache.move_to_end(partition)
            return loaded
        loaded = await self._load(partition, stored)
        self._cache[partition] = loaded
        self._shrink_cache()
        return loaded

    async def _load(self, partition: str, stored: _Stored | None = None) -> _Loaded:
        """A partition from its stored blobs and index (``stored``: read already)."""
        if stored is None:
            stored = (await self._read(lambda c: _read_stored(c, [partition])))[partition]
        (snapshot_seq, blobs, last_seq), index = stored
        doc = PartitionDoc.load(blobs, self.identity.peer_id)
        loaded = _Loaded(doc, next_seq=last_seq + 1, tail=last_seq - snapshot_seq)
        # With a complete stored index the state needs no decoding: readers decode groups.
        if len(index) == doc.record_count():
            loaded.state = PartitionState.from_index(
                partition, ((rid, kind, derived.group_key(grp)) for rid, kind, grp in index), loaded.records_named)
        return loaded

    async def _load_doc(self, partition: str, blobs: list[bytes] | None = None) -> PartitionDoc:
        """A partition's committed document (``blobs``: its stored blobs, read already)."""
        if blobs is None:
            blobs = (await self._read(lambda c: read_blobs(c, partition)))[1]
        return PartitionDoc.load(blobs, self.identity.peer_id)

    async def _hot(self, partition: str, loaded: _Loaded, *, keep: bool = True, blobs: list[bytes] | None = None
                   ) -> tuple[PartitionDoc, PartitionState]:
        """A loaded partition's document and records (the caller holds its lock), made
        hot: reloaded and decoded if need be. Only the ``cache_decoded`` most recently used
        partitions stay hot; the others release their document and decoded records.

        Releasing another partition is safe even while a write holds its lock: every user
        of a document or a state reads it between two awaits, never across one (a commit
        in flight needs neither, and no one can reload the partition before it ends).
        ``keep=False`` (an import into a partition that is not hot): the partition does
        not join the hot ones, so sync traffic evicts no writer's partition, and the
        caller releases it once done. ``blobs``: the partition's stored blobs, read already."""
        if loaded.doc is None:
            loaded.doc = await self._load_doc(partition, blobs)
        doc = loaded.doc
        if loaded.state is None:  # no (complete) stored index: decode all, store the index
            loaded.state = PartitionState.from_records(partition, doc.records(), loader=loaded.records_named)
            self._store_index(partition, loaded.state.index())
        state = loaded.state
        if not keep:
            return doc, state  # the caller releases it when done (``_release``)
        self._decoded[partition] = None
        self._decoded.move_to_end(partition)
        if len(self._decoded) <= self._cache_decoded:
            return doc, state  # the usual case on the write path: nothing to release
        for name in list(self._decoded):
            if len(self._decoded) <= self._cache_decoded:
                break
            if name == partition:
                continue
            del self._decoded[name]
            held = self._cache.get(name)
            if held is not None:
                self._release(held)
        return doc, state

    @staticmethod
    def _release(loaded: _Loaded) -> None:
        """Drop a partition's document and decoded records; it keeps its index (a later
        reader decodes its groups only) and its row memory."""
        loaded.doc = None
        if loaded.state is not None:
            loaded.state.shed()

    def _store_index(self, partition: str, entries: Sequence[tuple[str, str, GroupKey]]) -> None:
        """Write a partition's record index in the background (a cache of its document:
        if the write fails, the next load decodes the partition whole again)."""
        rows = index_rows(partition, entries)

        def job(conn: sqlite3.Connection) -> None:
            insert_rows(conn, INDEX_HEAD, rows)

        def done(future: "asyncio.Future[None]") -> None:
            self._background.discard(future)
            if not future.cancelled() and future.exception() is not None:
                log.warning("the record index of %s was not stored: %s", partition, future.exception())

        if rows:
            future = asyncio.ensure_future(self._writer.submit(job))
            self._background.add(future)  # close() lets it finish
            future.add_done_callback(done)

    def _shrink_cache(self) -> None:
        for name in list(self._cache):
            if len(self._cache) <= self._cache_documents:
                break
            if self._locks[name].locked():
                continue  # in use: evict later
            del self._cache[name]
            self._decoded.pop(name, None)

    def _evict(self, partition: str) -> None:
        """Forget a partition (its document may hold operations that were never stored)."""
        self._cache.pop(partition, None)
        self._decoded.pop(partition, None)

    # --- reads --------------------------------------------------------------------------
    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> "asyncio.Future[T]":
        """``fn`` on a reader connection, handed to a reader thread now (not at the event
        loop's next turn, as a coroutine would be: a read meant to overlap work that does
        not yield, such as staging a batch of imports, would not)."""
        return self._loop.run_in_executor(self._readers, self._with_reader, fn)

    def _with_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return fn(conn)

    async def read(
        self, model: DerivedModel, filters: Mapping[str, str], *, limit: int | None = None, offset: int = 0,
        places: bool = False,
    ) -> Page:
        count, rows, where = await self._read(lambda c: derived.read_rows(c, model, filters, limit, offset,
                                                                          places=places))
        return Page(count, rows, where)

    async def status(self) -> StoreStatus:
        # Digests are kept per partition until its rows change: hashing every row of a
        # school on each call took seconds. One computed while rows changed is not kept.
        generation, known = self._digest_generation, dict(self._digests)

        def gather(conn: sqlite3.Connection) -> tuple[int, dict[str, int], dict[str, str]]:
            names = all_partitions(conn)
            fresh = {}
            for name in names:
                if name not in known and (digest := derived.partition_digest(conn, name)) is not None:
                    fresh[name] = digest
            return len(names), derived.counts(conn), fresh

        partitions, counts, fresh = await self._read(gather)
        if self._digest_generation == generation:
            self._digests.update(fresh)
        digests = dict(sorted({**known, **fresh}.items()))
        size = sum(p.stat().st_size for p in self.path.parent.glob(DB_FILE + "*") if p.is_file())
        return StoreStatus(
            device_id=self.device_id,
            epoch=self.identity.epoch,
            dataset_id=self.dataset_id,
            partitions=partitions,
            records=counts,
            store_bytes=size,
            digests=digests,
            feed_seq=self._committed_feed_seq,
            loaded_documents=sum(1 for held in self._cache.values() if held.doc is not None),
            extra={"commits": self._writer.commits, "committed_jobs": self._writer.jobs,
                   "indexed_partitions": len(self._cache), "worker_imports": self._pool.imports},
        )

    async def partitions(self) -> list[str]:
        return await self._read(all_partitions)

    async def raw_records(self, partition: str) -> PartitionState:
        """A copy of a partition's committed raw records (tests, diagnostics)."""
        async with self._locks[partition]:
            loaded = await self._get(partition)
            return (await self._hot(partition, loaded))[1].copy()

    # --- sync (SyncStore) -------------------------------------------------------------------
    @property
    def epoch(self) -> str:
        return self.identity.epoch

    @property
    def feed_seq(self) -> int:
        return self._committed_feed_seq

    async def changes_since(self, seq: int, subscription: Subscription) -> tuple[int, dict[str, bytes]]:
        # Up to the last committed seq, read before the scan: a change committing after
        # that is above it, so the next scan from the returned cursor sees it.
        current = self._committed_feed_seq
        rows = await self._read(lambda c: c.execute(
            "SELECT partition, vv FROM partition_seq WHERE seq > ? AND seq <= ? ORDER BY seq", (seq, current)
        ).fetchall())
        return current, {p: bytes(vv) for p, vv in rows if matches(subscription, p)}

    async def version_vectors(self, partitions: Sequence[str]) -> dict[str, bytes]:
        wanted = list(partitions)

        def fetch(conn: sqlite3.Connection) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for chunk in batches(wanted, 512):
                marks = ",".join("?" * len(chunk))
                for p, vv in conn.execute(f"SELECT partition, vv FROM partition_seq WHERE partition IN ({marks})", chunk):
                    found[p] = bytes(vv)
            return found

        found = await self._read(fetch)
        return {p: found.get(p, EMPTY_VERSION) for p in wanted}

    async def export_missing(self, partition: str, their_version: bytes, *, update_lists: bool = False) -> bytes:
        (data,) = await self.export_missing_batch([(partition, their_version, update_lists)])
        return data

    async def export_missing_batch(self, requests: Sequence[tuple[str, bytes, bool]]) -> list[bytes]:
        partitions = sorted({partition for partition, _, _ in requests})
        await self._acquire_all(partitions)
        try:
            # The update rows each peer lacks, as stored, for every partition whose
            # document is not in memory, read in one go: no document loaded (one with an
            # update tail takes milliseconds to load, tens in a large school).
            unloaded = [(p, vv) for p, vv, _ in requests if (held := self._cache.get(p)) is None or held.doc is None]
            stored: dict[tuple[str, bytes], list[bytes] | None] = await self._read(lambda c: {
                (p, vv): updates_after(c, p, lambda point: version_covers(vv, point)) for p, vv in unloaded
            }) if unloaded else {}
            return [await self._export(p, vv, lists, stored.get((p, vv))) for p, vv, lists in requests]
        finally:
            for partition in partitions:
                self._locks[partition].release()

    async def _acquire_all(self, partitions: Collection[str]) -> None:
        """Take the locks of ``partitions``, in one order (two callers taking several
        never deadlock), or none of them (cancelled, the ones taken are let go)."""
        taken: list[asyncio.Lock] = []
        try:
            for partition in sorted(partitions):
                lock = self._locks[partition]
                await lock.acquire()
                taken.append(lock)
        except BaseException:
            for lock in taken:
                lock.release()
            raise

    async def _export(self, partition: str, their_version: bytes, update_lists: bool, stored: list[bytes] | None
                      ) -> bytes:
        """One export (the caller holds the partition's lock; ``stored``: the update rows
        after the latest point the peer holds, if read)."""
        loaded = self._cache.get(partition)
        if loaded is not None and loaded.doc is not None:
            doc = loaded.doc
        else:
            if stored is not None and (update_lists or len(stored) <= 1):
                return pack_updates(stored) if stored else b""
            if loaded is None and not await self._held(partition):
                return b""
            # Exporting needs the document only: no decoding, and no cache churn (a full
            # sync of a large school would otherwise evict every writer's doc).
            doc = await self._load_doc(partition)
        if doc.version() == their_version:
            return b""
        return doc.export_since(their_version)

    async def _held(self, partition: str) -> bool:
        return bool(await self._read(lambda c: c.execute(
            "SELECT 1 FROM partition_seq WHERE partition = ?", (partition,)).fetchone()))

    async def import_chunk(self, partition: str, data: bytes, *, source: str) -> ImportResult:
        return await (await self.stage_import(partition, data, source=source)).committed()

    async def stage_import(self, partition: str, data: bytes, *, source: str) -> StagedImport:
        outcome, = await self.stage_imports([(partition, data)], source=source)
        if isinstance(outcome, InvalidRecordError):
            raise outcome
        return outcome

    async def stage_imports(self, chunks: Sequence[tuple[str, bytes]], *, source: str
                            ) -> list[StagedImport | InvalidRecordError]:
        partitions = [partition for partition, _ in chunks]
        if len(set(partitions)) != len(partitions):
            raise ValueError("a partition is named twice in one batch of chunks")
        await self._acquire_all(partitions)
        held = set(partitions)  # the locks not handed on yet (released at the end)
        outcomes: dict[int, StagedImport | InvalidRecordError] = {}
        in_workers: dict[int, asyncio.Future[FirstImport]] = {}
        try:
            # A batch at a time (bounded: 16 of a large school's learners hold 8 MB of
            # blobs), each read in one go (one reader round trip for an incremental sync's
            # dozens of partitions, not one each).
            # The next batch is read while this one is staged.
            subs = list(batches(range(len(chunks)), STAGE_BATCH))
            reading = self._read_batch(chunks, subs[0]) if subs else None
            for k, batch in enumerate(subs):
                assert reading is not None
                stored = await reading
                reading = self._read_batch(chunks, subs[k + 1]) if k + 1 < len(subs) else None
                await self._stage_batch(chunks, batch, stored, source, held, outcomes, in_workers)
                if any(isinstance(o, InvalidRecordError) for o in outcomes.values()):
                    break
            if reading is not None:  # (not needed after a refusal; it ends before the locks go)
                await asyncio.gather(reading, return_exceptions=True)
        finally:
            for future in in_workers.values():
                future.cancel()  # (a result no longer needed: the worker's answer is dropped)
                future.add_done_callback(_retrieve)  # (nor its failure, after a refused chunk)
            for partition in held:
                self._locks[partition].release()
        # In order, up to the first refused chunk (any staged after it commit all the same:
        # they were valid).
        ordered: list[StagedImport | InvalidRecordError] = []
        for i in range(len(chunks)):
            if i not in outcomes:
                break
            ordered.append(outcomes[i])
            if isinstance(outcomes[i], InvalidRecordError):
                break
        return ordered

    def _read_batch(self, chunks: Sequence[tuple[str, bytes]], batch: Sequence[int]
                    ) -> "asyncio.Future[dict[str, _Stored]]":
        """What the partitions of ``batch`` (indexes into ``chunks``) hold on disk, read in
        one go: the blobs of those whose document is not in memory, and the index of those
        not loaded at all (the caller holds their locks)."""
        partitions = [chunks[i][0] for i in batch]
        unloaded = [p for p in partitions if p not in self._cache]
        released = [p for p in partitions if p in self._cache and self._cache[p].doc is None]
        return self._read(lambda c: _read_stored(c, unloaded, released))  # (read while the batch before is staged)

    async def _stage_batch(self, chunks: Sequence[tuple[str, bytes]], batch: Sequence[int],
                           stored: dict[str, _Stored], source: str, held: set[str],
                           outcomes: dict[int, StagedImport | InvalidRecordError],
                           in_workers: dict[int, "asyncio.Future[FirstImport]"]) -> None:
        """stage_imports' work on the chunks at ``batch`` (indexes), in order, with what
        their partitions hold (``_read_batch``): their outcomes go into ``outcomes``; it
        stops at a refused chunk."""
        unloaded = {chunks[i][0] for i in batch if chunks[i][0] not in self._cache}
        # First imports (partitions that hold nothing yet) of a large school go partly to
        # import workers, which take them while this loop takes the others.
        first = {i for i in batch if chunks[i][0] in unloaded and not any(stored[chunks[i][0]][0][1])
                 and not stored[chunks[i][0]][1]}
        # Only a large school's first sync (``_bulk_import``) uses the workers: a small
        # school syncs faster without their start and their memory. They take as many as
        # they have room for, this loop the rest. Such a school keeps no learner's index
        # after its first import (~12 MB for the 64 most recent of a 200-learner school).
        bulk = self._bulk_import(sum(len(chunks[i][1]) for i in first))
        keep_index = not bulk
        for i in sorted(first)[:self._pool.capacity()] if bulk else ():
            partition, data = chunks[i]
            in_workers[i] = asyncio.ensure_future(self._pool.run(partition, data, self.dataset_id))
        for i in batch:
            if i in in_workers:
                continue
            partition, data = chunks[i]
            outcomes[i] = await self._stage_one(partition, data, source, stored.pop(partition, None),
                                                first=i in first, held=held, keep_index=keep_index)
            if isinstance(outcomes[i], InvalidRecordError):
                return
        for i in batch:
            future = in_workers.get(i)
            if future is None:
                continue
            partition, data = chunks[i]
            if any(isinstance(o, InvalidRecordError) for j, o in outcomes.items() if j < i):
                return  # after a refused chunk: not needed
            try:
                result = await future
            except WorkerError:  # (logged by the pool) taken here instead
                outcomes[i] = await self._stage_one(partition, data, source, None, first=True, held=held,
                                                    keep_index=keep_index)
            except InvalidRecordError as exc:
                outcomes[i] = exc
            else:
                held.discard(partition)
                outcomes[i] = self._stage_first(result, keep_index=keep_index)
            if isinstance(outcomes[i], InvalidRecordError):
                return

    async def _stage_one(self, partition: str, data: bytes, source: str, stored: _Stored | None, *, first: bool,
                         held: set[str], keep_index: bool = True) -> StagedImport | InvalidRecordError:
        """One chunk in this process: a first import whole (``first_import``), any other
        on its loaded partition. Hands the partition's lock on (out of ``held``)."""
        held.discard(partition)
        try:
            if first:
                try:
                    # In a thread: the event loop stays free to feed the import workers (and
                    # to answer the apps) during a large sync's tens of seconds of this.
                    result = await self._loop.run_in_executor(
                        self._folder, fold_first_import, partition, data, self.dataset_id, self.identity.peer_id)
                except BaseException:
                    self._locks[partition].release()
                    raise
                return self._stage_first(result, keep_index=keep_index)
            return await self._stage(partition, data, source, stored)
        except InvalidRecordError as exc:  # the peer's fault
            return exc

    def _bulk_import(self, size: int) -> bool:
        """Count ``size`` bytes of first imports; whether the first imports of the last
        minute passed ``import_workers_above`` (a large school's full sync).

        Meanwhile the writer's connection keeps BULK_WRITER_CACHE_KIB of page cache, not
        SQLite's 2 MB: such a sync inserts hundreds of thousands of rows into several
        indexes, and with 2 MB their pages are evicted and read back over and over
        (school L: the receiver's CPU 26-28 s -> 23.5-24 s, its full sync 18.9-20.0 s ->
        17.2 s). A minute after the last first import the cache shrinks again: a small
        school's sync gains nothing from it, and its receiver kept 6-12 MB more."""
        now = time.monotonic()
        if now - self._first_import_at > 60:
            self._first_import_volume = 0
        if size:
            self._first_import_at = now
            self._first_import_volume += size
        bulk = self._first_import_volume >= self._workers_above
        if bulk != self._bulk_cache and not self._closed:
            self._bulk_cache = bulk
            kib = BULK_WRITER_CACHE_KIB if bulk else WRITER_CACHE_KIB
            self._writer.enqueue(_page_cache_job(kib)).add_done_callback(_retrieve)
        if bulk and self._bulk_check is None:
            self._bulk_check = self._loop.call_later(61, self._recheck_bulk)
        return bulk

    def _recheck_bulk(self) -> None:
        self._bulk_check = None
        self._bulk_import(0)

    def _stage_first(self, result: FirstImport, *, keep_index: bool = True) -> StagedImport:
        """Stage a first import folded in full (the caller holds the partition's lock; it
        is released once the import commits). ``keep_index``: leave the partition loaded
        with its index (the next sync's import into it needs no index read)."""
        partition = result.partition
        if not result.records:  # nothing new: nothing to store
            self._locks[partition].release()
            done: asyncio.Future[None] = self._loop.create_future()
            done.set_result(None)
            return StagedImport(ImportResult(partition, changed=False, pending=False, touched_groups=0, records=0), done)
        self._feed_seq += 1
        feed_seq = self._feed_seq
        committed = self._writer.enqueue_commit(PartitionCommit(
            partition, 1, b"", result.changes, feed_seq, result.version, result.snapshot,
            [(partition, rid, kind, grp) for rid, kind, grp in result.index]))

        async def settle() -> None:
            try:
                try:
                    await committed
                except BaseException as exc:
                    log.error("commit of a first import into %s failed: %s", partition, exc)
                    raise StoreUnavailableError(f"the import could not be stored ({exc}); nothing was kept") from exc
                finally:
                    self._committed_feed_seq = max(self._committed_feed_seq, feed_seq)
                self._rows_changed(partition)
                if keep_index:  # loaded with its index only, as an import leaves a partition
                    loaded = _Loaded(None, next_seq=2, tail=0, state=None)
                    loaded.state = PartitionState.from_index(
                        partition, ((rid, kind, derived.group_key(grp)) for rid, kind, grp in result.index),
                        loaded.records_named)
                    self._cache[partition] = loaded
                    self._shrink_cache()
                self._notify(partition, feed_seq)
            finally:
                self._locks[partition].release()

        return StagedImport(ImportResult(partition, changed=True, pending=False, touched_groups=result.groups,
                                         records=result.records), self._in_background(settle()))

    async def _stage(self, partition: str, data: bytes, source: str, stored: _Stored | None) -> StagedImport:
        """stage_imports' work on one chunk; the caller acquired the partition's lock, which
        is released once the chunk commits (or at once, if it raises)."""
        lock = self._locks[partition]
        try:
            # A partition that was not loaded keeps only its index once the chunk commits
            # (a quarter of a megabyte for a large school's learner: the next sync's import
            # needs it), not the row memory of what the import wrote (three times that, for
            # the ``cache_documents`` partitions a full sync went through last); its next
            # write rewrites the groups it touches whole.
            was_loaded = partition in self._cache
            loaded = await self._get(partition, stored)
            # A partition that is not hot stays cold after the import: a full sync of a
            # school would otherwise hold the last ``cache_decoded`` learners' documents
            # and records in memory (tens of MB), and evict the partitions being written.
            hot = partition in self._decoded
            doc, state = await self._hot(partition, loaded, keep=hot, blobs=stored[0][1] if stored else None)
            try:
                result, commit = await self._import_into(partition, loaded, doc, state, data, source, hot=hot)
            finally:
                # Released now, not once committed: the commit needs neither the document
                # nor the records, and no one can reload them before the lock is released.
                if not hot:
                    self._release(loaded)
        except BaseException:
            lock.release()
            raise

        async def settle() -> None:
            try:
                if commit is not None:
                    await commit
            finally:
                if not was_loaded:
                    loaded.written.clear()
                lock.release()

        # The lock is held until the commit is in; meanwhile the caller goes on (the next
        # chunk is checked while this one commits, and commits queued together share one
        # transaction).
        return StagedImport(result, self._in_background(settle()))

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> "asyncio.Future[None]":
        """Run ``coroutine`` as a task that ``close`` waits for (a failure is for whoever
        awaits the task; it is not reported again when no one does)."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_retrieve)
        return task

    async def _import_into(self, partition: str, loaded: _Loaded, doc: PartitionDoc, state: PartitionState,
                           data: bytes, source: str, *, hot: bool = True
                           ) -> tuple[ImportResult, Coroutine[Any, Any, None] | None]:
        """stage_import's work on the loaded partition (the caller holds its lock): the
        result, and the commit to await (None: nothing new). ``hot``: the partition keeps
        its document (otherwise it is released once staged)."""
        fresh = len(state) == 0  # a first import: decode everything
        try:
            # Checked by its operations first, cheap to refuse. The document is changed
            # in place: on any refusal from here on it holds ops that are not stored,
            # so it is evicted (the except below) and reloaded from the committed rows.
            # Into a partition with records, the touched records' new versions are built
            # from the operations (the document left detached where it is released
            # anyway: its state never has to catch up); otherwise the document is
            # detached, the touched records' groups decoded while the state is the old one.
            try:
                checked = doc.import_checked(data, before_state=state.prefetch,
                                             holds=None if fresh else state.holds,
                                             previous=None if fresh else state.get, stay_detached=not hot)
            except NeedsDetachedImport:  # rare: only the previous state can judge it
                loaded.doc = doc = await self._load_doc(partition)
                checked = doc.import_checked(data, before_state=state.prefetch)
            if not checked.changed:
                return ImportResult(partition, changed=False, pending=False, touched_groups=0, records=0), None
            # Only what the chunk touched is decoded and checked; the rest is as committed.
            if checked.records is not None:  # built while it was judged
                after = checked.records
            elif fresh:
                after = doc.records(strict=True)
            else:
                after = doc.records_named(sorted(checked.touched), strict=True)
            previous = {r.id: state.get(r.id) for r in after}  # (decoded already where it matters)
            grown = check_growth({i: r for i, r in previous.items() if r is not None}, after)
            created = [(r.id, r.kind, group_of(r)) for r in grown if not state.holds(r.id)]
            touched = state.absorb(grown)  # creation fields (so groups) never change
            rows = derive(state, touched, self.dataset_id)
        except BaseException:
            self._evict(partition)
            raise
        # A peer's blob is stored as it came: every change it carries is checked, and any
        # we already had are skipped again when the document is next loaded (a list of
        # blobs is stored as one export of what it added). A first import is stored as a
        # snapshot at once: a document loads from a snapshot several times faster than
        # from the updates it was built of. A partition that is not hot is loaded again
        # for its next import: past about COMPACT_TAIL update rows it gets a snapshot too
        # (the write path's compact_after is for documents kept loaded between writes).
        compact = fresh or (not hot and loaded.tail + 1 > import_compact_point(partition))
        commit = self._queue_change(partition, loaded, checked.update, rows, compact=compact, created=created)
        log.debug("imported %d records into %s from %s", len(grown), partition, source)
        return ImportResult(partition, changed=True, pending=False, touched_groups=len(touched),
                            records=len(grown)), commit

    # --- rebuild --------------------------------------------------------------------------
    async def rebuild(self, progress: Callable[[int, int], None] | None = None) -> RebuildReport:
        """Refold every derived row from the raw logs, storing only the rows that differ.

        The folds run in ``rebuild_workers`` child processes (``store.rebuild``), so the
        event loop stays free and memory flat; a partition written to meanwhile, or one a
        worker failed on, is refolded here, one partition at a time. A partition with a
        long update tail is compacted on the way (the worker has its document loaded)."""
        async with self._rebuild_lock:
            started = time.perf_counter()
            names = await self.partitions()
            totals = {"records": 0, "rows": 0, "done": 0}
            here: list[str] = []

            def count(records: int, rows: int) -> None:
                totals["records"] += records
                totals["rows"] += rows
                totals["done"] += 1
                if progress is not None:
                    progress(totals["done"], len(names))

            async def take(refold: PartitionRefold) -> None:
                async with self._locks[refold.partition]:
                    stored = await self._writer.submit(_rebuild_diff_job(refold))
                    if stored and (refold.writes or refold.deletes):
                        self._rows_changed(refold.partition)
                    self._forget_rows(refold.partition)
                    loaded = self._cache.get(refold.partition)
                    if stored and refold.snapshot is not None and loaded is not None:
                        loaded.tail = loaded.next_seq - 1 - refold.last_update
                if stored:
                    count(refold.records, refold.rows)
                else:  # written to since the worker read it
                    here.append(refold.partition)

            workers = min(self._rebuild_workers, len(names), os.cpu_count() or 1)
            left = await refold_in_workers(self.path, self.dataset_id, names, workers, take) if workers else names
            try:
                await self._refold_here([*left, *here], count)
            finally:
                if left or here:
                    self._rows_changed(None)
            return RebuildReport(len(names), totals["records"], totals["rows"], time.perf_counter() - started,
                                 workers=workers, refolded_here=len(left) + len(here))

    def _rows_changed(self, partition: str | None) -> None:
        """Forget the status digest of a partition whose derived rows changed (None: all);
        called once the change has committed."""
        self._digest_generation += 1
        if partition is None:
            self._digests.clear()
        else:
            self._digests.pop(partition, None)

    def _forget_rows(self, partition: str) -> None:
        """Drop a partition's row memory (its next write rewrites the groups it touches)."""
        loaded = self._cache.get(partition)
        if loaded is not None:
            loaded.written.clear()

    async def _refold_here(self, names: Sequence[str], count: Callable[[int, int], None]) -> None:
        """Refold ``names`` in this process, one partition at a time."""
        pending: list[tuple[asyncio.Lock, asyncio.Future[Any]]] = []
        for done, partition in enumerate(names, start=1):
            lock = self._locks[partition]
            await lock.acquire()
            try:
                self._forget_rows(partition)
                loaded = self._cache.get(partition)
                # A partition that is not hot is loaded and decoded for its fold only.
                if loaded is not None and partition in self._decoded and loaded.state is not None:
                    state = loaded.state
                else:
                    state = PartitionState.from_records(partition, (await self._load_doc(partition)).records())
                groups = derive(state, state.groups(), self.dataset_id)
                count(len(state), sum(len(r) for r in groups.values()))
                del state
                job = _rebuild_job(partition, groups)
                pending.append((lock, asyncio.ensure_future(self._writer.submit(job))))
            except BaseException:
                lock.release()
                raise
            if len(pending) >= 16 or done == len(names):
                await self._settle(pending)
                pending = []
            await asyncio.sleep(0)  # let requests in between partitions
        await self._settle(pending)

    @staticmethod
    async def _settle(pending: list[tuple[asyncio.Lock, "asyncio.Future[Any]"]]) -> None:
        try:
            results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        finally:
            for lock, _ in pending:
                lock.release()
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise StoreUnavailableError(f"rebuild could not be stored: {errors[0]}") from errors[0]

    # --- lifecycle -------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bulk_check is not None:
            self._bulk_check.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._pool.close()
        self._folder.shutdown(wait=True)
        await self._loop.run_in_executor(None, self._writer.close)
        self._readers.shutdown(wait=True)
        self._lock.close()

    # --- other packages' tables (membership, peers, sessions) --------------------------------
    async def run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a reader connection (sees committed data only)."""
        return await self._read(fn)

    async def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` as a durable transaction of the writer thread; its return value once
        committed (it may change any row: the status digests are recomputed)."""
        try:
            return await self._writer.submit(fn)
        finally:
            self._rows_changed(None)

    async def set_dataset(self, dataset_id: str) -> RebuildReport | None:
        """Adopt the facility's ``dataset_id`` (creating or joining a facility): the
        dataset-dependent ids of every derived row change, so everything is refolded."""
        if dataset_id == self._dataset_id:
            return None

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('dataset_id', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (dataset_id,)
            )

        await self._writer.submit(save)
        self._dataset_id = dataset_id
        return await self.rebuild()

    # --- diagnostics and fault injection (tests, doctor) ------------------------------------
    async def tail_length(self, partition: str) -> int:
        """How many update rows a partition has since its snapshot."""
        return await self._read(lambda c: int(c.execute(
            "SELECT count(*) FROM doc_updates WHERE partition = ?", (partition,)).fetchone()[0]))

    async def simulate_full_disk(self, full: bool) -> None:
        """Make the writer's database unable to grow (SQLITE_FULL), as a full disk does."""
        def limit(conn: sqlite3.Connection) -> None:
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {pages if full else 2**31}")

        await self._writer.submit(limit)

    async def drop_derived_rows(self) -> None:
        """Delete every derived row (they are pure functions of the raw logs: ``rebuild``
        brings them back)."""
        def drop(conn: sqlite3.Connection) -> None:
            for model in DERIVED_MODELS:
                conn.execute(f"DELETE FROM {model}")

        try:
            await self._writer.submit(drop)
        finally:
            self._rows_changed(None)


def _retrieve(future: "asyncio.Future[Any]") -> None:
    """Mark a background future's failure as seen (whoever needed it was told)."""
    if not future.cancelled():
        future.exception()


# The most chunks a store stages from one read of what their partitions hold (a sync frame
# may complete hundreds: an incremental sync of a large school).
STAGE_BATCH = 16

# The writer connection's page cache (KiB): SQLite's default, and during a large school's
# first sync (``SqliteStore._bulk_import``).
WRITER_CACHE_KIB = 2000
BULK_WRITER_CACHE_KIB = 8192

# What a partition holds on disk: (snapshot seq, [snapshot, updates...], last seq) and its
# record index rows (record id, kind, group text).
_Stored = tuple[tuple[int, list[bytes], int], list[tuple[str, str, str]]]


def _read_stored(conn: sqlite3.Connection, partitions: Sequence[str], blobs_only: Sequence[str] = ()
                 ) -> dict[str, _Stored]:
    """The stored blobs and record index of ``partitions``, and the blobs alone of
    ``blobs_only`` (an empty index), in one read transaction."""
    conn.execute("BEGIN")
    try:
        index: dict[str, list[tuple[str, str, str]]] = {p: [] for p in partitions}
        for chunk in batches(partitions, 512):
            for partition, record_id, kind, grp in conn.execute(
                f"SELECT partition, record_id, kind, grp FROM record_index WHERE partition IN "
                f"({','.join('?' * len(chunk))})", chunk
            ):
                index[partition].append((record_id, kind, grp))
        return {p: (read_blobs(conn, p), index.get(p, [])) for p in (*partitions, *blobs_only)}
    finally:
        conn.execute("COMMIT")


def _page_cache_job(kib: int) -> Job:
    def job(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA cache_size = -{kib}")

    return job


def _rebuild_job(partition: str, groups: Mapping[GroupKey, Sequence[DerivedRow]]) -> Job:
    def job(conn: sqlite3.Connection) -> None:
        derived.replace_partition(conn, partition, groups)

    return job


def _rebuild_diff_job(refold: PartitionRefold) -> Callable[[sqlite3.Connection], bool]:
    """Store a worker's difference if the partition is still as the worker read it."""
    def job(conn: sqlite3.Connection) -> bool:
        if doc_tables.feed_seq(conn, refold.partition) != refold.seq:
            return False
        derived.write_partition_diff(conn, refold.partition, refold.writes, refold.deletes)
        if refold.snapshot is not None:
            store_snapshot(conn, refold.partition, refold.snapshot, refold.last_update, refold.version)
        return True

    return job


async def open_store(state_dir: Path, **options: Any) -> SqliteStore:
    return await SqliteStore.open(state_dir, **options)


def _implements_store(store: SqliteStore) -> Store:
    """Never called: mypy checks here that SqliteStore satisfies the Store interface."""
    return store
