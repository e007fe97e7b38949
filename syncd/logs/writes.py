"""Kolibri's write semantics (SPEC §2) as pure transitions.

(view, request, context) -> WriteResult(mutations, response), or a ``LogError``.
Nothing here reads a clock, draws random numbers or touches disk: ``WriteContext``
carries ``now`` and the id / level generators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from syncd.logs.records import JSON, Mutation
from syncd.logs.state import PartitionState
from syncd.logs.timestamps import Timestamp


@dataclass(frozen=True)
class WriteContext:
    now: Timestamp                      # canonical UTC text, read once per request
    user_id: str | None                 # 32-hex learner id, None = anonymous
    device_id: str                      # this device (64 hex)
    dataset_id: str                     # facility dataset (32 zeros without facility)
    new_id: Callable[[], str]           # fresh random 32-hex record id
    random_quiz_level: Callable[[], int]  # random int in [-2**31, -1]
    visitor_id: str | None = None       # anonymous visitor (X-Syncd-Visitor)


@dataclass(frozen=True)
class WriteResult:
    mutations: list[Mutation]
    response: Mapping[str, JSON]
    headers: Mapping[str, str] = field(default_factory=dict)


def start_session(state: PartitionState, payload: Any, ctx: WriteContext) -> WriteResult:
    """POST /api/logger/trackprogress/ (SPEC §2.1)."""
    raise NotImplementedError


def update_session(state: PartitionState, session_id: str, payload: Any, ctx: WriteContext) -> WriteResult:
    """PUT /api/logger/trackprogress/<session_id>/ (SPEC §2.2)."""
    raise NotImplementedError


def heartbeat(state: PartitionState, payload: Any, ctx: WriteContext) -> WriteResult:
    """PUT /api/auth/session/current/ (SPEC §2.3)."""
    raise NotImplementedError
