"""SqliteStore against the store acceptance suite, on real SQLite files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syncd.store.sqlite import SqliteStore
from tests.store.acceptance import store_acceptance_tests


async def open_sqlite(state_dir: Path, **options: Any) -> SqliteStore:
    return await SqliteStore.open(state_dir, **options)


globals().update(store_acceptance_tests(open_sqlite))
