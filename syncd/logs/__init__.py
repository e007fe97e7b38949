"""The pure logs domain (SPEC-logs.md): raw records, write rules, validation, folds.

No I/O, no clock, no randomness except through ``WriteContext``.
"""

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
