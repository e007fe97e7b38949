"""Raw records, the mutations that create and extend them, and derived rows.

A raw record is what apps write and peers sync (DESIGN §3). It has

* ``fields``: its **creation fields**, written once and never changed, and
* ``events``: an **append-only** list of later writes. Every event is a flat dict with
  the reserved keys ``at`` (the write's ``now``, canonical timestamp), ``device_id``
  (the device that handled the write) and ``seq`` (1, 2, ... in the order that device
  appended them to this record), plus the fields that write set.

The visible row is a pure fold of the two (``logs.aggregate``), never the CRDT engine's
last-writer-wins. Only two mutations exist, so the store can apply them to any engine.

Record kinds and their creation fields (every value JSON-compatible; ``validate.py`` holds
the exact schema):

``session`` (ContentSessionLog, SPEC §1.1 + §1.8)
    user_id, content_id, channel_id, kind, visitor_id, start_timestamp, context (dict,
    already in Kolibri's key order), repeat, mastery_level, mastery_criterion, device_id.
    Events: exactly the keys of the validated update among ``progress_delta`` |
    ``progress``, ``time_spent_delta``, ``extra_fields`` (an empty update is an event too).
``attempt`` (AttemptLog, SPEC §1.4)
    user_id, sessionlog_id, content_id and mastery_level (of the creating session, so the
    attempt's group and masterylog id need no lookup), item, start_timestamp, at (the
    creating request's now), order (position among the attempts that request created),
    device_id, and the first interaction's correct, answer, simple_answer, time_spent,
    complete, hinted, error, history (its interaction summary).
    Events: one per later interaction: ``history`` and ``time_spent`` always; ``correct``
    and, when sent, ``answer``/``simple_answer`` on a replace; ``complete``, ``hinted``,
    ``error`` only as ``true`` and only when that interaction turned them on.
``usersession`` (UserSessionLog, SPEC §1.7)
    user_id, start_timestamp, device_info, device_id. Events: heartbeats (``at`` only).
``examlog`` (ExamLog, SPEC §1.5)
    exam_id, user_id, at (creation), closed, completion_timestamp, device_id.
    Events: ``closed`` (only ``true``), ``completion_timestamp``.
``examattempt`` (ExamAttemptLog, SPEC §1.6)
    exam_id, user_id, content_id, item, start_timestamp, at, order, device_id and the
    first interaction's values as for ``attempt``. Events as for ``attempt``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Callable, Literal, Mapping, Sequence, TypeAlias, Union

import orjson

JSON: TypeAlias = Any
RecordKind = Literal["session", "attempt", "usersession", "examlog", "examattempt"]
RECORD_KINDS: tuple[RecordKind, ...] = ("session", "attempt", "usersession", "examlog", "examattempt")

# Keys every event carries; everything else in an event is a field it sets.
EVENT_META_KEYS = frozenset({"at", "device_id", "seq"})


@dataclass(frozen=True)
class CreateRecord:
    """Create raw record ``record_id`` of ``kind`` with its immutable creation fields."""

    record_id: str
    kind: RecordKind
    fields: Mapping[str, JSON]


@dataclass(frozen=True)
class AppendEvent:
    """Append one event (``at``, ``device_id``, ``seq`` + fields) to a record."""

    record_id: str
    event: Mapping[str, JSON]


Mutation: TypeAlias = Union[CreateRecord, AppendEvent]


@dataclass
class RawRecord:
    """One raw record as held by a partition."""

    id: str
    kind: RecordKind
    fields: dict[str, JSON]
    events: list[dict[str, JSON]] = field(default_factory=list)


# A group is the unit of derivation: all derived rows of a group are refolded together
# and replaced together. ("content", content_id): the sessions of that content with their
# attempts, the summary and the mastery logs. ("usersession", id). ("exam", exam_id).
GroupKey: TypeAlias = tuple[str, str]

DerivedModel = Literal[
    "contentsessionlog",
    "contentsummarylog",
    "masterylog",
    "attemptlog",
    "examlog",
    "examattemptlog",
    "usersessionlog",
]
DERIVED_MODELS: tuple[DerivedModel, ...] = (
    "contentsessionlog",
    "contentsummarylog",
    "masterylog",
    "attemptlog",
    "examlog",
    "examattemptlog",
    "usersessionlog",
)


@dataclass(frozen=True, init=False)
class DerivedRow:
    """A row as the read API returns it, plus the columns reads filter and sort on.

    ``row`` has exactly the keys of the corpus ``final_rows`` for the model, minus the
    ``_morango_*`` fields, in Kolibri's field order. ``content_id`` is the group's
    content for every model of a content group (so mastery and attempt rows filter by
    content without a join); ``sort_key`` is the row's ``start_timestamp`` or "".
    """

    model: DerivedModel
    id: str
    user_id: str | None
    content_id: str | None
    channel_id: str | None
    exam_id: str | None
    sort_key: str
    row: Mapping[str, JSON]

    def __init__(self, model: DerivedModel, id: str, user_id: str | None, content_id: str | None,
                 channel_id: str | None, exam_id: str | None, sort_key: str, row: Mapping[str, JSON]) -> None:
        # The generated frozen __init__ calls object.__setattr__ per field; a rebuild makes
        # tens of thousands of rows, so fill the instance dict directly (same result).
        fields = self.__dict__
        fields["model"] = model
        fields["id"] = id
        fields["user_id"] = user_id
        fields["content_id"] = content_id
        fields["channel_id"] = channel_id
        fields["exam_id"] = exam_id
        fields["sort_key"] = sort_key
        fields["row"] = row

    def to_json(self) -> str:
        return finite_canonical_json(self.row)  # (a fold's output: finite)


def _refuse(value: object) -> JSON:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


# json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False) builds a
# JSONEncoder and a C encoder on every call; the rows of every write go through here, so
# keep one C encoder (the one json.dumps uses: same output, byte for byte). No circular
# check: the values come from JSON and are trees.
_ENCODE: Callable[[JSON, int], Sequence[str]] | None = (
    c_make_encoder(None, _refuse, encode_basestring, None, ":", ",", False, False, False)
    if c_make_encoder is not None else None
)


def canonical_json(value: JSON) -> str:
    """The one JSON serialisation syncd hashes and stores: compact, floats as ``repr``,
    key order as given (callers build dicts in a fixed order), NaN refused."""
    if _ENCODE is None:  # no C accelerator: the pure-Python encoder
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return "".join(_ENCODE(value, 0))


def finite_canonical_json(value: JSON) -> str:
    """``canonical_json`` of a value known to hold no NaN or infinity (a fold's output: its
    inputs are validated and bounded), ten times faster for a row: orjson's text wherever
    it is canonical_json's.

    The two part only on floats below 1e-4 (orjson "0.00001", repr "1e-05"), floats orjson
    writes with an exponent ("1e+16", "1e-7": always signed), and what orjson refuses
    (integers past 64 bits, lone surrogates, keys that are not strings). So a text holding
    "e+", "e-" or "0.0000" anywhere (in a string, too: that value merely takes the slower
    way) and a refusal go to canonical_json (tests/logs/test_records.py checks the two
    agree on arbitrary finite JSON values). orjson writes NaN as null: hence "finite"."""
    try:
        fast = orjson.dumps(value)
    except (orjson.JSONEncodeError, UnicodeEncodeError):
        return canonical_json(value)
    if b"e+" in fast or b"e-" in fast or b"0.0000" in fast:
        return canonical_json(value)
    return fast.decode()


def matches_canonical(value: JSON, text: str) -> bool:
    """Whether ``canonical_json(value) == text``, for a ``text`` that is canonical (a
    stored row), answered by orjson where it can: a rebuild compares every row it refolds
    with the stored one, and orjson writes a row four times faster.

    orjson writes what canonical_json writes for almost every value; where it differs (a
    float in exponent form: "1e16" for "1e+16"; an escape spelled otherwise) its text is
    no canonical text of any value, so it cannot equal ``text``, and a mismatch is then
    settled by canonical_json. Integers beyond 64 bits and lone surrogates, which orjson
    refuses, go to canonical_json at once. (tests/logs/test_records.py checks this on
    arbitrary JSON values.) One leniency: orjson writes NaN and infinities as null, which
    canonical_json refuses; fold outputs are finite, their inputs being bounded."""
    try:
        if orjson.dumps(value) == text.encode():
            return True
    except (orjson.JSONEncodeError, UnicodeEncodeError):
        pass
    try:
        return canonical_json(value) == text
    except ValueError:
        return False
