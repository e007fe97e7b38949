"""The pure logs domain (SPEC-logs.md): raw records, write rules, validation, folds.

No I/O, no clock, no randomness except through ``WriteContext``. The names below load on
first use, so a process that folds (a rebuild worker) imports no write rules.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.logs.aggregate import derive
    from syncd.logs.folds import ContentFold, fold_attempt, fold_content, fold_session
    from syncd.logs.ids import examlog_id, mastery_id, morango_partition, sha2_uuid, summary_id
    from syncd.logs.partitions import anon_partition, normalise_uuid, user_of, user_partition
    from syncd.logs.records import (
        DERIVED_MODELS,
        RECORD_KINDS,
        AppendEvent,
        CreateRecord,
        DerivedRow,
        GroupKey,
        Mutation,
        RawRecord,
        canonical_json,
    )
    from syncd.logs.state import PartitionState, group_of
    from syncd.logs.timestamps import Timestamp, canonical, format_timestamp, parse_timestamp
    from syncd.logs.validate import validate_record
    from syncd.logs.writes import WriteContext, WriteResult, heartbeat, start_session, update_session

__all__ = [
    "DERIVED_MODELS",
    "RECORD_KINDS",
    "AppendEvent",
    "ContentFold",
    "CreateRecord",
    "DerivedRow",
    "GroupKey",
    "Mutation",
    "PartitionState",
    "RawRecord",
    "Timestamp",
    "WriteContext",
    "WriteResult",
    "anon_partition",
    "canonical",
    "canonical_json",
    "derive",
    "examlog_id",
    "fold_attempt",
    "fold_content",
    "fold_session",
    "format_timestamp",
    "group_of",
    "heartbeat",
    "mastery_id",
    "morango_partition",
    "normalise_uuid",
    "parse_timestamp",
    "sha2_uuid",
    "start_session",
    "summary_id",
    "update_session",
    "user_of",
    "user_partition",
    "validate_record",
]
_HOMES = {
    "DERIVED_MODELS": "syncd.logs.records",
    "RECORD_KINDS": "syncd.logs.records",
    "AppendEvent": "syncd.logs.records",
    "ContentFold": "syncd.logs.folds",
    "CreateRecord": "syncd.logs.records",
    "DerivedRow": "syncd.logs.records",
    "GroupKey": "syncd.logs.records",
    "Mutation": "syncd.logs.records",
    "PartitionState": "syncd.logs.state",
    "RawRecord": "syncd.logs.records",
    "Timestamp": "syncd.logs.timestamps",
    "WriteContext": "syncd.logs.writes",
    "WriteResult": "syncd.logs.writes",
    "anon_partition": "syncd.logs.partitions",
    "canonical": "syncd.logs.timestamps",
    "canonical_json": "syncd.logs.records",
    "derive": "syncd.logs.aggregate",
    "examlog_id": "syncd.logs.ids",
    "fold_attempt": "syncd.logs.folds",
    "fold_content": "syncd.logs.folds",
    "fold_session": "syncd.logs.folds",
    "format_timestamp": "syncd.logs.timestamps",
    "group_of": "syncd.logs.state",
    "heartbeat": "syncd.logs.writes",
    "mastery_id": "syncd.logs.ids",
    "morango_partition": "syncd.logs.ids",
    "normalise_uuid": "syncd.logs.partitions",
    "parse_timestamp": "syncd.logs.timestamps",
    "sha2_uuid": "syncd.logs.ids",
    "start_session": "syncd.logs.writes",
    "summary_id": "syncd.logs.ids",
    "update_session": "syncd.logs.writes",
    "user_of": "syncd.logs.partitions",
    "user_partition": "syncd.logs.partitions",
    "validate_record": "syncd.logs.validate",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
