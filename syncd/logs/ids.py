"""Kolibri's deterministic ids (SPEC §1.0, §1.5, §3.4).

Raw records never hold a dataset-dependent id (DESIGN §5): summary, mastery and exam-log
ids are computed here when rows are derived, from the facility's ``dataset_id``. With the
same inputs every device, and Kolibri itself, gets the same ids.
"""

from __future__ import annotations

from functools import lru_cache
from hashlib import sha256


def sha2_uuid(a: str, b: str, c: str) -> str:
    """First 32 hex characters of ``sha256(a::b::c)`` (Morango's ``compute_namespaced_id``)."""
    return sha256(f"{a}::{b}::{c}".encode("utf-8")).hexdigest()[:32]


def morango_partition(dataset_id: str, user_id: str) -> str:
    """Kolibri's partition string of a user's logs (not a syncd partition)."""
    return f"{dataset_id}:user-rw:{user_id}"


@lru_cache(maxsize=8192)  # pure; every write of a learner's content asks again
def summary_id(dataset_id: str, user_id: str, content_id: str) -> str:
    """ContentSummaryLog id: one per (user, content_id)."""
    return sha2_uuid(morango_partition(dataset_id, user_id), content_id, "contentsummarylog")


@lru_cache(maxsize=8192)
def mastery_id(dataset_id: str, user_id: str, summarylog_id: str, mastery_level: int) -> str:
    """MasteryLog id: one per (user, summary log, mastery level)."""
    return sha2_uuid(
        morango_partition(dataset_id, user_id), f"{summarylog_id}:{mastery_level}", "masterylog"
    )


def examlog_id(dataset_id: str, exam_id: str, user_id: str) -> str:
    """ExamLog id: one per (exam, user); its Morango partition is the bare dataset id."""
    return sha2_uuid(dataset_id, f"{exam_id}:{user_id}", "examlog")
