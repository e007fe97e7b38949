"""The ``Store`` interface (Syncthing's ``db.DB`` analogue): what the API and, later, the
sync shell may ask of storage. ``SqliteStore`` implements it; any later backend must pass
``tests/store/acceptance.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence

from syncd.errors import InvalidRecordError
from syncd.logs.records import DerivedModel
from syncd.logs.state import PartitionState
from syncd.logs.writes import WriteResult

Decide = Callable[[PartitionState], WriteResult]

# Filters each model's reads accept (DESIGN §8); anything else is a 400 upstream.
MODEL_FILTERS: Mapping[DerivedModel, frozenset[str]] = {
    "contentsessionlog": frozenset({"user_id", "content_id", "channel_id"}),
    "contentsummarylog": frozenset({"user_id", "content_id", "channel_id"}),
    "masterylog": frozenset({"user_id", "content_id"}),
    "attemptlog": frozenset({"user_id", "content_id"}),
    "examlog": frozenset({"user_id", "exam_id"}),
    "examattemptlog": frozenset({"user_id", "exam_id", "content_id"}),
    "usersessionlog": frozenset({"user_id"}),
}


@dataclass(frozen=True)
class Page:
    """A read result: ``rows`` are JSON texts, ``count`` all rows matching the filters;
    ``places`` (when asked for) each row's (partition, derivation group)."""

    count: int
    rows: list[str]
    places: list[tuple[str, str]] | None = None


@dataclass(frozen=True)
class RebuildReport:
    partitions: int
    records: int
    rows: int
    seconds: float
    workers: int = 0        # child processes that refolded (0: all in the daemon)
    refolded_here: int = 0  # partitions the daemon refolded itself (written to meanwhile)


@dataclass(frozen=True)
class StoreStatus:
    device_id: str
    epoch: str
    dataset_id: str
    partitions: int
    records: Mapping[str, int]          # derived rows per model
    store_bytes: int
    digests: Mapping[str, str]          # partition -> sha256 of its derived rows
    feed_seq: int
    loaded_documents: int
    extra: Mapping[str, Any] = field(default_factory=dict)


Subscription = Literal["all"] | frozenset[str]   # "all", or the learners' 32-hex user ids


@dataclass(frozen=True)
class ImportResult:
    """What importing one delta chunk into a partition did."""

    partition: str
    changed: bool                 # False: nothing new (a repeated chunk)
    pending: bool                 # the chunk depends on updates not yet received
    touched_groups: int           # derivation groups refolded
    records: int                  # raw records the chunk created or extended


@dataclass(frozen=True)
class StagedImport:
    """A chunk checked, validated and queued for commit (``SyncStore.stage_import``):
    ``result`` says what it does; ``committed()`` returns it once it is durable, or raises
    StoreUnavailableError (then nothing of it was kept)."""

    result: ImportResult
    done: "asyncio.Future[None]"

    async def committed(self) -> ImportResult:
        await self.done
        return self.result


class SyncStore(Protocol):
    """What the sync shell needs of storage (DESIGN §6). Partition names are validated
    by the caller."""

    @property
    def epoch(self) -> str: ...

    @property
    def feed_seq(self) -> int: ...

    async def changes_since(self, seq: int, subscription: Subscription) -> tuple[int, dict[str, bytes]]:
        """(current feed seq, {partition: encoded version vector}) of the held partitions
        matching ``subscription`` whose last change has a feed number above ``seq``."""
        ...

    async def version_vectors(self, partitions: Sequence[str]) -> dict[str, bytes]:
        """Encoded version vectors (an empty vector for partitions not held)."""
        ...

    async def export_missing(self, partition: str, their_version: bytes, *, update_lists: bool = False) -> bytes:
        """The updates of ``partition`` a holder of ``their_version`` lacks (b"" if none):
        one Loro update blob or, if ``update_lists`` (the peer speaks protocol 3), possibly
        a list of them (``documents.pack_updates``)."""
        ...

    async def export_missing_batch(self, requests: Sequence[tuple[str, bytes, bool]]) -> list[bytes]:
        """``export_missing`` for each (partition, their version, update_lists), in order
        (a sync frame's worth: what the store holds read in one go)."""
        ...

    async def import_chunk(self, partition: str, data: bytes, *, source: str) -> ImportResult:
        """Import a peer's chunk, check its operations and validate what it touched
        (``logs.validate``) before anyone can read it, then commit it with the refolded
        rows in one transaction. Raises InvalidRecordError (the peer's fault: nothing
        stored, nothing left in memory) or StoreUnavailableError. A repeated chunk
        changes nothing."""
        ...

    async def stage_imports(self, chunks: Sequence[tuple[str, bytes]], *, source: str
                            ) -> list[StagedImport | InvalidRecordError]:
        """``stage_import`` for several partitions' chunks (a sync frame's), in order, what
        they hold on disk read in one go. Stops at the first refused chunk: the list then
        ends with its InvalidRecordError (the chunks before it are staged, those after it
        not looked at). Other errors propagate."""
        ...

    async def stage_import(self, partition: str, data: bytes, *, source: str) -> StagedImport:
        """``import_chunk`` up to the commit, which is queued and not waited for: returns
        once the chunk is checked and validated (InvalidRecordError as there), so the
        next chunk can be checked while this one commits. Until ``committed()`` returns,
        the partition is as before to everyone else; the caller must await it before
        acknowledging the chunk or moving any cursor past it."""
        ...


class Store(SyncStore, Protocol):
    @property
    def device_id(self) -> str: ...

    @property
    def dataset_id(self) -> str:
        """The facility's dataset id (32 zeros on a device with no facility)."""
        ...

    async def write(self, partition: str, decide: Decide) -> WriteResult:
        """Decide on the committed state, apply, commit durably, then return.

        ``decide`` may raise (a ``LogError``): then nothing is applied. The result is
        returned only after the commit; a failed commit raises StoreUnavailableError and
        leaves nothing behind."""
        ...

    async def read(
        self, model: DerivedModel, filters: Mapping[str, str], *, limit: int | None = None, offset: int = 0,
        places: bool = False,
    ) -> Page:
        """Committed rows; ``places`` adds where each comes from (``?debug=1`` reads)."""
        ...

    async def status(self) -> StoreStatus: ...

    def subscribe(self, listener: Callable[[str, int], None]) -> Callable[[], None]:
        """Call ``listener(partition, feed_seq)`` after each commit; returns unsubscribe."""
        ...

    async def rebuild(self, progress: Callable[[int, int], None] | None = None) -> RebuildReport: ...

    async def close(self) -> None: ...
