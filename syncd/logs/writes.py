"""Kolibri's write semantics (SPEC §2) as pure transitions.

(view, request, context) -> WriteResult(mutations, response), or a ``LogError``.
Nothing here reads a clock, draws random numbers or touches disk: ``WriteContext``
carries ``now`` and the id / level generators.

Every decision (which mastery log a start binds to, whether it is refused, which attempt
a replace finds) is taken on the derived state folded from ``state`` (SPEC §3.7) and is
recorded in the raw records, so the folds never repeat it. Errors are raised before any
mutation is returned, so a refused request leaves no trace. Responses are computed by
folding the group as it will be after the write: the state's memoised fold of the group
(``PartitionState.content_fold``) with the new event folded on when it sorts last, else
the whole group refolded with it.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from syncd.errors import InvalidRecordError, NotFoundError, PermissionDeniedError
from syncd.logs.folds import (
    IN_A_ROW,
    QUIZ_LIKE,
    AttemptView,
    MasteryView,
    fold_content,
    fold_session,
    fold_summary,
    last_interaction,
)
from syncd.logs.ids import mastery_id, summary_id
from syncd.logs.interactions import apply_interactions, attempt_output, next_seq
from syncd.logs.records import JSON, AppendEvent, CreateRecord, Mutation, RawRecord
from syncd.logs.requests import StartRequest, parse_heartbeat, parse_start, parse_update
from syncd.logs.state import PartitionState
from syncd.logs.timestamps import Timestamp, seconds_between

UNCHECKED_HEADER = "X-Syncd-Unchecked"
COACH_QUIZ_CRITERION: dict[str, JSON] = {"type": "quiz", "coach_assigned": True}
PRE_POST_NAMESPACE = uuid.UUID("7c9e4b1a-3d5f-4a8e-9c2b-6d0e1f2a3b4c")
CONTEXT_ORDER = ("node_id", "quiz_id", "lesson_id", "mastery_level", "course_session_id", "unit_id")
USER_SESSION_GAP = 300.0   # seconds; strictly more starts a new UserSessionLog
MIN_QUIZ_LEVEL = -2**31


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


# --- start ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Target:
    """What a start is about, after SPEC §2.1 step 1."""

    content_id: str
    channel_id: str | None
    kind: str
    mastery_model: dict[str, JSON] | None
    context: dict[str, JSON]
    unchecked: tuple[str, ...]


def start_session(state: PartitionState, payload: Any, ctx: WriteContext) -> WriteResult:
    """POST /api/logger/trackprogress/ (SPEC §2.1)."""
    request = parse_start(payload)
    target = _target(request, ctx.user_id)
    content_id = target.content_id
    before = state.content_fold(content_id) if ctx.user_id is not None else None
    level: int | None = None
    criterion: JSON = None
    if before is not None and target.mastery_model is not None:
        level, criterion = _bind_mastery(content_id, before.mastery, target.mastery_model, request.repeat, ctx)
    context = dict(target.context)
    if level is not None:
        context["mastery_level"] = level
    context = {key: context[key] for key in CONTEXT_ORDER if key in context}

    session_id = ctx.new_id()
    fields: dict[str, JSON] = {
        "user_id": ctx.user_id,
        "content_id": content_id,
        "channel_id": target.channel_id,
        "kind": target.kind,
        "visitor_id": _visitor(ctx) if ctx.user_id is None else None,
        "start_timestamp": ctx.now,
        "context": context,
        "repeat": request.repeat,
        "mastery_level": level,
        "mastery_criterion": criterion,
        "device_id": ctx.device_id,
    }
    create = CreateRecord(session_id, "session", fields)
    headers = {UNCHECKED_HEADER: ", ".join(target.unchecked)} if target.unchecked else {}

    response: dict[str, JSON]
    if before is None:
        response = {"progress": 0.0, "extra_fields": {}, "time_spent": 0.0, "complete": False}
        if target.mastery_model is not None:
            response.update(mastery_criterion=target.mastery_model, pastattempts=[], totalattempts=0)
    else:
        # the group as it will be after the write: the new start event folded on (or, if
        # it does not sort last, the whole group refolded)
        extended = before.after_start(fields, session_id)
        if extended is not None:
            summary, mastery = extended
        else:
            records = state.in_group(("content", content_id))
            after = fold_content(content_id, [*records, RawRecord(session_id, "session", dict(fields))],
                                 with_summary=True)
            assert after.summary is not None  # the new session's start event creates it
            summary, mastery = after.summary, after.mastery
        response = {"progress": summary.progress, "extra_fields": summary.extra_fields,
                    "time_spent": summary.time_spent, "complete": summary.progress >= 1}
        if level is not None:
            log = mastery[level]
            attempts = before.attempts_of_level(level)  # a start changes no attempt
            response.update(
                mastery_criterion=log.mastery_criterion,
                pastattempts=_past_attempts(attempts, log.mastery_criterion),
                totalattempts=len(attempts),
                complete=log.complete,
                time_spent=log.time_spent,
            )
    response["session_id"] = session_id
    response["context"] = context
    return WriteResult([create], response, headers)


def _target(request: StartRequest, user_id: str | None) -> _Target:
    """SPEC §2.1 step 1: content, channel, kind, mastery model and context of a start.
    Assignment checks need Exam/Lesson/CourseSession data syncd does not hold: they are
    skipped and named in ``unchecked``; anonymous callers are still refused."""
    if request.node_id is not None:
        context: dict[str, JSON] = {"node_id": request.node_id}
        unchecked: list[str] = []
        if request.lesson_id is not None:
            _require_user(user_id, "a lesson")
            context["lesson_id"] = request.lesson_id
            unchecked.append("lesson-assignment")
        if request.course_session_id is not None:
            _require_user(user_id, "a course")
            context["course_session_id"] = request.course_session_id
            unchecked.append("course-assignment")
        assert request.content_id is not None and request.kind is not None  # parse_start checked
        return _Target(request.content_id, request.channel_id, request.kind, request.mastery_model,
                       context, tuple(unchecked))
    if request.quiz_id is not None:
        _require_user(user_id, "a quiz")
        return _Target(request.quiz_id, None, "quiz", dict(COACH_QUIZ_CRITERION),
                       {"quiz_id": request.quiz_id}, ("quiz-assignment",))
    assert request.unit_id is not None and request.course_session_id is not None
    assert request.test_type is not None
    user = _require_user(user_id, "a course")
    course, unit, test_type = request.course_session_id, request.unit_id, request.test_type
    content_id = uuid.uuid5(PRE_POST_NAMESPACE, f"{course}:{unit}:{test_type}").hex
    even = int(hashlib.md5(f"{user}:{course}:{unit}".encode()).hexdigest()[-1], 16) % 2 == 0
    version = ("A" if test_type == "pre" else "B") if even else ("B" if test_type == "pre" else "A")
    model: dict[str, JSON] = {"type": "pre_post_test", "version": version, "test_type": test_type}
    return _Target(content_id, None, "quiz", model,
                   {"course_session_id": course, "unit_id": unit}, ("course-assignment",))


def _require_user(user_id: str | None, what: str) -> str:
    if user_id is None:
        raise PermissionDeniedError(f"Cannot access {what} if not logged in")
    return user_id


def _visitor(ctx: WriteContext) -> str | None:
    """The anonymous visitor id as Kolibri stores it (a UUID), or None if absent or bad."""
    if ctx.visitor_id is None:
        return None
    try:
        return uuid.UUID(hex=ctx.visitor_id).hex
    except ValueError:
        return None


def is_coach_quiz(criterion: JSON) -> bool:
    return (isinstance(criterion, dict) and criterion.get("type") == "quiz"
            and bool(criterion.get("coach_assigned")))


def _bind_mastery(content_id: str, logs: Mapping[int, MasteryView], model: dict[str, JSON], repeat: bool,
                  ctx: WriteContext) -> tuple[int, JSON]:
    """SPEC §2.1 step 4: the mastery level (and its criterion) a new session binds to,
    given the mastery logs of the summary before the start."""
    assert ctx.user_id is not None
    quiz_like = model["type"] in QUIZ_LIKE
    candidates = [m for m in logs.values() if (m.mastery_level < 0 if quiz_like else m.mastery_level > 0)]
    pick: MasteryView | None = None
    if candidates:
        sid = summary_id(ctx.dataset_id, ctx.user_id, content_id)
        # complete ascending, end descending, [syncd] then id ascending
        candidates.sort(key=lambda m: mastery_id(ctx.dataset_id, ctx.user_id or "", sid, m.mastery_level))
        candidates.sort(key=lambda m: m.end_timestamp, reverse=True)
        candidates.sort(key=lambda m: m.complete)
        pick = candidates[0]
    if pick is None or (pick.complete and repeat):
        if quiz_like:
            return _fresh_quiz_level(ctx, logs), model
        level = pick.mastery_level + 1 if pick is not None else 1
        if level in logs:  # [syncd] Kolibri raises an IntegrityError here
            level = max(lv for lv in logs if lv > 0) + 1
        return level, model
    if pick.complete and is_coach_quiz(pick.mastery_criterion):
        raise PermissionDeniedError("This coach assigned quiz has been submitted")
    return pick.mastery_level, pick.mastery_criterion


def _fresh_quiz_level(ctx: WriteContext, logs: Mapping[int, MasteryView]) -> int:
    """A random negative level not yet used by this summary."""
    for _ in range(64):
        level = ctx.random_quiz_level()
        if not MIN_QUIZ_LEVEL <= level <= -1:
            raise ValueError(f"random_quiz_level returned {level}, outside [-2**31, -1]")
        if level not in logs:
            return level
    raise ValueError("random_quiz_level keeps returning levels already in use")


def _past_attempts(attempts: list[AttemptView], criterion: JSON) -> list[dict[str, JSON]]:
    """The start response's ``pastattempts`` (SPEC §2.1): newest first, capped by type;
    quizzes get all of them in creation order."""
    kind = criterion.get("type") if isinstance(criterion, dict) else None
    if kind in QUIZ_LIKE:
        chosen = sorted(attempts, key=lambda a: a.created)  # Kolibri: unordered, i.e. insertion order
    else:
        newest = sorted(attempts, key=lambda a: (a.start_timestamp, a.created), reverse=True)
        limit = 10
        if kind == "m_of_n":
            n = criterion.get("n") if isinstance(criterion, dict) else None
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                limit = n
        elif isinstance(kind, str) and kind in IN_A_ROW:
            limit = IN_A_ROW[kind]
        chosen = newest[:limit]
    return [attempt_output(a) for a in chosen]


# --- update --------------------------------------------------------------------------
def update_session(state: PartitionState, session_id: str, payload: Any, ctx: WriteContext) -> WriteResult:
    """PUT /api/logger/trackprogress/<session_id>/ (SPEC §2.2)."""
    request = parse_update(payload)
    session = _find_session(state, session_id, ctx.user_id)
    fields = session.fields
    headers: dict[str, str] = {}
    if "quiz_id" in fields["context"]:
        _require_user(ctx.user_id, "a quiz")
        headers[UNCHECKED_HEADER] = "quiz-assignment"

    fold = state.content_fold(fields["content_id"]) if ctx.user_id is not None else None
    seq = fold.next_seq(session.id, ctx.device_id) if fold is not None else None
    event: dict[str, JSON] = {"at": ctx.now, "device_id": ctx.device_id,
                              "seq": seq if seq is not None else next_seq(session, ctx.device_id),
                              **request.event_fields()}
    mutations: list[Mutation] = [AppendEvent(session.id, event)]
    level: int | None = fields["mastery_level"]
    if fold is None:
        updated = RawRecord(session.id, session.kind, fields, [*session.events, event])
        complete = fold_session(updated).progress >= 1
    else:
        extended = fold.after_update(session, event)
        if extended is not None:
            complete = extended[0].progress >= 1
        else:  # the update does not sort last: refold the group with it
            updated = RawRecord(session.id, session.kind, fields, [*session.events, event])
            records = [r for r in state.in_group(("content", fields["content_id"])) if r.kind == "session"]
            after, _ = fold_summary([fold_session(updated if r.id == session.id else r) for r in records])
            assert after is not None
            complete = after.progress >= 1
        if level is not None:
            log = fold.mastery.get(level)
            if log is None:
                raise InvalidRecordError("mastery_level",
                                         "Invalid mastery_level value, this session has not been started.")
            # Kolibri: complete it if this update completes it, else refuse a submitted quiz
            if log.complete and is_coach_quiz(log.mastery_criterion):
                raise PermissionDeniedError("Cannot update a finished coach assigned quiz")

    response: dict[str, JSON] = {"complete": complete}
    if request.interactions is not None:
        attempt_mutations, outputs = apply_interactions(
            state, session, request.interactions, user_id=ctx.user_id, device_id=ctx.device_id,
            now=ctx.now, new_id=ctx.new_id)
        mutations.extend(attempt_mutations)
        response["attempts"] = outputs
    return WriteResult(mutations, response, headers)


def _find_session(state: PartitionState, session_id: str, user_id: str | None) -> RawRecord:
    """The caller's own session, else 404 (malformed id, unknown, someone else's; anonymous
    callers only reach anonymous sessions)."""
    record = state.get(session_id) if isinstance(session_id, str) else None  # ids are canonical already
    if record is None:
        try:
            key = uuid.UUID(hex=session_id).hex if isinstance(session_id, str) else None
        except ValueError:
            key = None
        record = state.get(key) if key is not None else None
    if record is None or record.kind != "session" or record.fields["user_id"] != user_id:
        raise NotFoundError(f"no content session {session_id!r} for this caller")
    return record


# --- heartbeat -------------------------------------------------------------------------
def heartbeat(state: PartitionState, payload: Any, ctx: WriteContext) -> WriteResult:
    """PUT /api/auth/session/current/ (SPEC §2.3)."""
    request = parse_heartbeat(payload)
    mutations: list[Mutation] = []
    headers: dict[str, str] = {}
    if ctx.user_id is None:
        # Anonymous callers get (or keep) a visitor id that their session starts record.
        headers["Set-Cookie"] = f"visitor_id={_visitor(ctx) or ctx.new_id()}"
    elif request.active:
        latest: tuple[str, str] | None = None
        latest_record: RawRecord | None = None
        for record in state.of_kind("usersession"):
            if record.fields["user_id"] != ctx.user_id:
                continue
            rank = (last_interaction(record), record.id)
            if latest is None or rank > latest:
                latest, latest_record = rank, record
        if latest is None or latest_record is None or seconds_between(latest[0], ctx.now) > USER_SESSION_GAP:
            mutations.append(CreateRecord(ctx.new_id(), "usersession", {
                "user_id": ctx.user_id,
                "start_timestamp": ctx.now,
                "device_info": request.device_info,
                "device_id": ctx.device_id,
            }))
        else:
            mutations.append(AppendEvent(latest_record.id, {
                "at": ctx.now, "device_id": ctx.device_id, "seq": next_seq(latest_record, ctx.device_id),
            }))
    response: dict[str, JSON] = {"user_id": ctx.user_id, "id": "current", "server_time": ctx.now}
    return WriteResult(mutations, response, headers)
