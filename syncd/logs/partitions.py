"""Partition keys (DESIGN §1): one CRDT document per learner, one per device's anonymous logs."""

from __future__ import annotations

import re
import uuid

USER_PREFIX = "user:"
ANON_PREFIX = "anon:"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def normalise_uuid(value: str) -> str:
    """Any standard textual UUID form -> 32 lowercase hex; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("not a UUID")
    if len(value) == 32 and _HEX32.match(value):  # already canonical (every request's learner)
        return value
    text = value.strip()
    if not text:
        raise ValueError("not a UUID")
    return uuid.UUID(text).hex


def user_partition(user_id: str) -> str:
    return USER_PREFIX + user_id


def anon_partition(device_id: str) -> str:
    return ANON_PREFIX + device_id


def is_valid_partition(partition: str) -> bool:
    if partition.startswith(USER_PREFIX):
        return bool(_HEX32.match(partition[len(USER_PREFIX):]))
    if partition.startswith(ANON_PREFIX):
        return bool(_HEX64.match(partition[len(ANON_PREFIX):]))
    return False


def user_of(partition: str) -> str | None:
    """The learner of a ``user:`` partition, None for ``anon:``."""
    return partition[len(USER_PREFIX):] if partition.startswith(USER_PREFIX) else None


def matches(subscription: "str | frozenset[str]", partition: str) -> bool:
    """Whether a subscription ("all" or a set of user ids) covers ``partition``: "all"
    covers everything, including every device's anonymous partition; a list covers
    only its learners."""
    if subscription == "all":
        return True
    user = user_of(partition)
    return user is not None and not isinstance(subscription, str) and user in subscription
