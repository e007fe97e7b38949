"""Storage: the only package that touches disk (DESIGN §2, §10)."""

from syncd.store.interface import MODEL_FILTERS, Page, RebuildReport, Store, StoreStatus
from syncd.store.sqlite import SqliteStore, open_store

__all__ = ["MODEL_FILTERS", "Page", "RebuildReport", "Store", "StoreStatus", "SqliteStore", "open_store"]
