"""Storage: the only package that touches disk (DESIGN §2, §10).

The names below load on first use: a rebuild worker (``store.rebuild``) imports only the
modules it folds with, so it starts in half the time."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.store.interface import MODEL_FILTERS, Page, RebuildReport, Store, StoreStatus
    from syncd.store.sqlite import SqliteStore, open_store

__all__ = ["MODEL_FILTERS", "Page", "RebuildReport", "Store", "StoreStatus", "SqliteStore", "open_store"]
_HOMES = {"SqliteStore": "syncd.store.sqlite", "open_store": "syncd.store.sqlite"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES.get(name, "syncd.store.interface")), name)
