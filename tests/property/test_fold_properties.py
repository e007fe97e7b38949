"""Properties of the folds (SPEC §3, DESIGN §3): same raw records, same bytes; concurrent
appends to one record merge by the SPEC's per-field rules."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.logs.aggregate import derive, derive_changes
from syncd.logs.folds import fold_attempt, fold_content, fold_session, normalise_progress
from syncd.logs.records import AppendEvent, CreateRecord, GroupKey, Mutation, RawRecord
from syncd.logs.state import PartitionState
from syncd.logs.validate import validate_record
from syncd.store import derived

USER = "a1" * 16
CONTENT = "c0" * 16
DATASET = "d" * 32
DEVICES = ("1" * 64, "2" * 64, "3" * 64)
T0 = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
LEVELS = (None, 1, 2, -5, -9)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ts(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def hex32(n: int) -> str:
    return f"{n:032x}"


# --- strategies --------------------------------------------------------------------------------
progress_values = st.sampled_from([0.0, 0.001, 0.1, 0.2, 0.201, 0.3, 0.301, 0.333, 0.334, 0.4, 0.5, 0.7, 1.0])
seconds_values = st.sampled_from([0.0, 0.1, 0.2, 0.3, 1.0, 5.0, 6.5, 120.0])


@st.composite
def update_fields(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    which = draw(st.sampled_from(["delta", "absolute", "none"]))
    if which == "delta":
        fields["progress_delta"] = draw(progress_values)
    elif which == "absolute":
        fields["progress"] = draw(progress_values)
    if draw(st.booleans()):
        fields["time_spent_delta"] = draw(seconds_values)
    if draw(st.integers(0, 3)) == 0:
        fields["extra_fields"] = {"page": draw(st.integers(0, 3))}
    return fields


def numbered(draw: st.DrawFn, start: int, count: int, make: Any) -> list[dict[str, Any]]:
    """``count`` events from random devices at random times (clocks may step back), each
    device numbering its own events 1, 2, ..."""
    seqs = {device: 0 for device in DEVICES}
    events = []
    for _ in range(count):
        device = draw(st.sampled_from(DEVICES))
        seqs[device] += 1
        at = start + draw(st.integers(-20, 90))
        events.append({"at": ts(at), "device_id": device, "seq": seqs[device], **make(draw)})
    return events


@st.composite
def sessions(draw: st.DrawFn, n: int) -> RawRecord:
    start = draw(st.integers(0, 300))
    level = draw(st.sampled_from(LEVELS))
    context: dict[str, Any] = {"node_id": "e0" * 16}
    if level is not None:
        context["mastery_level"] = level
    events = numbered(draw, start, draw(st.integers(0, 6)), lambda d: d(update_fields()))
    return RawRecord(hex32(1000 + n), "session", {
        "user_id": USER, "content_id": CONTENT, "channel_id": draw(st.sampled_from([None, "cc" * 16])),
        "kind": "exercise", "visitor_id": None, "start_timestamp": ts(start), "context": context,
        "repeat": draw(st.booleans()), "mastery_level": level,
        "mastery_criterion": None if level is None else {"type": "quiz" if level < 0 else "m_of_n", "m": 1, "n": 2},
        "device_id": draw(st.sampled_from(DEVICES)),
    }, events)


def interaction_fields(draw: st.DrawFn) -> dict[str, Any]:
    correct = draw(st.sampled_from([0.0, 0.5, 1.0]))
    fields: dict[str, Any] = {"history": {"type": "answer", "answer": {"r": correct}, "correct": correct},
                              "time_spent": draw(seconds_values)}
    for key in ("complete", "hinted", "error"):
        if draw(st.integers(0, 3)) == 0:
            fields[key] = True
    if draw(st.booleans()):
        fields["correct"] = correct
        if draw(st.booleans()):
            fields["answer"] = {"r": correct}
        if draw(st.booleans()):
            fields["simple_answer"] = str(correct)
    return fields


@st.composite
def attempts(draw: st.DrawFn, n: int) -> RawRecord:
    created = draw(st.integers(0, 300))
    spent = draw(seconds_values)
    correct = draw(st.sampled_from([0.0, 1.0]))
    events = numbered(draw, created, draw(st.integers(0, 5)), interaction_fields)
    return RawRecord(hex32(2000 + n), "attempt", {
        "user_id": USER, "sessionlog_id": hex32(1000), "content_id": CONTENT,
        "mastery_level": draw(st.sampled_from(LEVELS)), "item": draw(st.sampled_from(["x:1", "x:2", "q"])),
        "start_timestamp": ts(created - int(spent)), "at": ts(created), "order": draw(st.integers(0, 2)),
        "device_id": draw(st.sampled_from(DEVICES)), "correct": correct, "answer": {"r": correct},
        "simple_answer": "", "time_spent": spent, "complete": draw(st.booleans()), "hinted": draw(st.booleans()),
        "error": False, "history": {"type": "answer", "answer": {"r": correct}, "correct": correct},
    }, events)


@st.composite
def content_groups(draw: st.DrawFn) -> list[RawRecord]:
    records = [draw(sessions(n)) for n in range(draw(st.integers(1, 4)))]
    records += [draw(attempts(n)) for n in range(draw(st.integers(0, 5)))]
    return records


def derived_bytes(records: list[RawRecord]) -> list[str]:
    state = PartitionState.from_records("user:" + USER, records)
    return [row.to_json() for rows in derive(state, state.groups(), DATASET).values() for row in rows]


def shuffled(records: list[RawRecord], seed: int) -> list[RawRecord]:
    rng = random.Random(seed)
    copies = [RawRecord(r.id, r.kind, dict(r.fields), rng.sample(r.events, len(r.events))) for r in records]
    rng.shuffle(copies)
    return copies


# --- properties --------------------------------------------------------------------------------
@SETTINGS
@given(content_groups(), st.integers(0, 2**32))
def test_arrival_order_never_changes_a_byte(records: list[RawRecord], seed: int) -> None:
    for record in records:
        validate_record(record)
    assert derived_bytes(shuffled(records, seed)) == derived_bytes(records)


@SETTINGS
@given(content_groups(), st.integers(0, 2**32))
def test_merging_two_replicas_in_either_order_gives_the_same_rows(records: list[RawRecord], seed: int) -> None:
    """Split every record's events between two devices' copies; the union is the same
    whichever replica receives the other's records."""
    rng = random.Random(seed)
    left: list[RawRecord] = []
    right: list[RawRecord] = []
    for record in records:
        mine = [e for e in record.events if rng.random() < 0.5]
        left.append(RawRecord(record.id, record.kind, record.fields, mine))
        right.append(RawRecord(record.id, record.kind, record.fields, [e for e in record.events if e not in mine]))

    def union(a: list[RawRecord], b: list[RawRecord]) -> list[RawRecord]:
        theirs = {r.id: r for r in b}
        return [RawRecord(r.id, r.kind, r.fields, r.events + theirs[r.id].events) for r in a]

    assert derived_bytes(union(left, right)) == derived_bytes(union(right, left)) == derived_bytes(records)


@SETTINGS
@given(attempts(0))
def test_concurrent_attempt_writes_merge_by_the_spec_rules(record: RawRecord) -> None:
    """SPEC §3.6: end max; complete/hinted/error OR; completion earliest non-null; correct,
    answer, simple_answer, time_spent from the latest write by (at, device_id, seq), the
    creation counting as (at, "", 0); the history keeps every append."""
    f = record.fields
    writes = [((f["at"], "", 0), dict(f))] + [((e["at"], e["device_id"], e["seq"]), e) for e in record.events]
    view = fold_attempt(record)
    assert view.end_timestamp == max(key[0] for key, _ in writes)
    for name in ("complete", "hinted", "error"):
        assert getattr(view, name) == any(w.get(name) for _, w in writes)
    completions = [key[0] for key, w in writes if w.get("complete")]
    assert view.completion_timestamp == (min(completions) if completions else None)
    for name in ("correct", "answer", "simple_answer", "time_spent"):
        latest = max((key, w[name]) for key, w in writes if name in w)[1]
        assert getattr(view, name) == latest, name
    ordered_events = sorted(record.events, key=lambda e: (e["at"], e["device_id"], e["seq"]))
    assert view.interaction_history == [f["history"]] + [e["history"] for e in ordered_events]


@SETTINGS
@given(sessions(0))
def test_concurrent_session_updates_keep_each_devices_order(record: RawRecord) -> None:
    """SPEC §3.1/§3.3: each device's updates stay in its seq order (eff_at); devices
    interleave by (eff_at, device_id); the row folds them in that order."""
    view = fold_session(record)
    assert len(view.updates) == len(record.events)
    for device in DEVICES:
        seqs = [e["seq"] for _, e in view.updates if e["device_id"] == device]
        assert seqs == sorted(seqs)
    keys = [key for key, _ in view.updates]
    assert keys == sorted(keys)
    progress, time_spent, end = 0.0, 0.0, record.fields["start_timestamp"]
    for _, e in view.updates:
        end = e["at"]
        if "progress_delta" in e:
            progress = normalise_progress(progress + e["progress_delta"])
        elif "progress" in e:
            progress = normalise_progress(e["progress"])
        time_spent += e.get("time_spent_delta", 0.0)
    assert (view.progress, view.time_spent, view.end_timestamp) == (progress, time_spent, end)


def reference_summary(records: list[RawRecord]) -> dict[str, Any]:
    """SPEC §3.1 + §3.4 written out as plainly as possible (no fast paths)."""
    events = []
    for r in records:
        if r.kind != "session":
            continue
        start, sid = r.fields["start_timestamp"], r.id
        events.append(((start, start, sid, "", 0), r, None))
        for device in DEVICES:
            eff = start
            for e in sorted((e for e in r.events if e["device_id"] == device), key=lambda e: e["seq"]):
                eff = max(eff, e["at"])
                events.append(((eff, start, sid, device, e["seq"]), r, e))
    events.sort(key=lambda t: t[0])
    s: dict[str, Any] = {}
    m: dict[int, dict[str, Any]] = {}
    for _, r, u in events:
        f = r.fields
        level = f["mastery_level"]
        if u is None:
            if not s:
                s = {"start": f["start_timestamp"], "progress": 0.0, "time": 0.0, "extra": {}, "done": None}
            s["end"], s["channel"] = f["start_timestamp"], f["channel_id"]
            if f["repeat"]:
                s["progress"] = 0.0
            if level is not None and level not in m:
                m[level] = {"start": f["start_timestamp"], "end": f["start_timestamp"], "complete": False,
                            "done": None, "time": 0.0}
            continue
        was = s["progress"] >= 1
        s["end"] = u["at"]
        if "progress_delta" in u:
            s["progress"] = normalise_progress(s["progress"] + u["progress_delta"])
        elif "progress" in u:
            s["progress"] = normalise_progress(u["progress"])
        if "time_spent_delta" in u:
            s["time"] += u["time_spent_delta"]
        if s["progress"] >= 1 and not was:
            s["done"] = u["at"]
        if "extra_fields" in u:
            s["extra"] = u["extra_fields"]
        if level is not None:
            log, touched = m[level], False
            if u.get("time_spent_delta"):
                log["time"] += u["time_spent_delta"]
                touched = True
            if s["progress"] >= 1 and not log["complete"]:
                log["complete"], log["done"], touched = True, u["at"], True
            if touched:
                log["end"] = u["at"]
    return {"summary": s, "mastery": m}


@SETTINGS
@given(content_groups())
def test_the_summary_fold_equals_the_plain_spec_algorithm(records: list[RawRecord]) -> None:
    result = fold_content(CONTENT, records, with_summary=True)
    summary, expected = result.summary, reference_summary(records)
    assert summary is not None
    s = expected["summary"]
    assert (summary.start_timestamp, summary.end_timestamp, summary.channel_id, summary.progress,
            summary.time_spent, summary.extra_fields, summary.completion_timestamp) == (
        s["start"], s["end"], s["channel"], s["progress"], s["time"], s["extra"], s["done"])
    assert set(result.mastery) == set(expected["mastery"])
    for level, log in result.mastery.items():
        m = expected["mastery"][level]
        assert (log.start_timestamp, log.end_timestamp, log.complete, log.completion_timestamp, log.time_spent) == (
            m["start"], m["end"], m["complete"], m["done"], m["time"])
    assert 0.0 <= summary.progress <= 1.0
    # quiz duplicates: one presented attempt per (level < 0, item)
    keys = [(a.mastery_level, a.item) for a in result.attempts if a.mastery_level is not None and a.mastery_level < 0]
    assert len(keys) == len(set(keys))


# --- incremental folding (logs/incremental.py) -------------------------------------------------
def arrivals(records: list[RawRecord], rng: random.Random) -> list[Mutation]:
    """Every record's creation and every event as mutations, in a random order in which a
    record is created before its events (events may arrive in any order otherwise)."""
    pending = {r.id: [AppendEvent(r.id, dict(e)) for e in rng.sample(r.events, len(r.events))] for r in records}
    created: list[Mutation] = []
    order: list[Mutation] = []
    waiting = [CreateRecord(r.id, r.kind, dict(r.fields)) for r in records]
    rng.shuffle(waiting)
    while waiting or any(pending.values()):
        ready = [rid for rid, events in pending.items() if events and any(
            isinstance(m, CreateRecord) and m.record_id == rid for m in created)]
        if waiting and (not ready or rng.random() < 0.4):
            mutation: Mutation = waiting.pop()
            created.append(mutation)
        else:
            mutation = pending[rng.choice(ready)].pop(0)
        order.append(mutation)
    return order


def in_time_order(records: list[RawRecord]) -> list[Mutation]:
    """The mutations as one device with a forward clock writes them: creations at their
    time, events at theirs (never before their record's creation; ties: creations first),
    so most events sort last."""
    keyed: list[tuple[tuple[str, int, str, int], Mutation]] = []
    for r in records:
        created_at: str = r.fields["start_timestamp"] if r.kind == "session" else r.fields["at"]
        keyed.append(((created_at, 0, r.id, 0), CreateRecord(r.id, r.kind, dict(r.fields))))
        for e in r.events:
            keyed.append(((max(e["at"], created_at), 1, r.id, e["seq"]), AppendEvent(r.id, dict(e))))
    keyed.sort(key=lambda item: item[0])
    return [m for _, m in keyed]


def full_rows(records: list[RawRecord]) -> dict[str, str]:
    """Every derived row, folded from scratch: (model, id) -> JSON."""
    state = PartitionState.from_records("user:" + USER, [RawRecord(r.id, r.kind, r.fields, list(r.events))
                                                         for r in records])
    return {f"{row.model}:{row.id}": row.to_json()
            for rows in derive(state, state.groups(), DATASET).values() for row in rows}


def replay(mutations: list[Mutation], rng: random.Random) -> int:
    """Apply ``mutations`` one by one to a state with memoised folds, storing rows as the
    store does (partial rows for groups whose rows it holds); after each step the stored
    rows, ``derive`` on the memo and a fold from scratch must agree byte for byte.
    Returns how many steps extended the memoised fold instead of refolding."""
    state = PartitionState("user:" + USER)
    written: dict[GroupKey, dict[derived.RowKey, derived.Stored]] = {}
    extended = 0
    for mutation in mutations:
        if rng.random() < 0.7:
            state.content_fold(CONTENT)  # a write decides on the memoised fold first
        memo = state.cached_fold(CONTENT)
        touched = state.apply([mutation])
        extended += memo is not None and state.cached_fold(CONTENT) is memo
        rows, partial = derive_changes(state, touched, DATASET, written)
        for group, group_rows in rows.items():
            previous = written.get(group)
            if group in partial and previous is not None:
                _, changed = derived.diff_partial(group, group_rows, previous)
                previous.update(changed)
            else:
                _, written[group] = derived.diff_group(group, group_rows, previous)
        records = list(state.records.values())
        expected = full_rows(records)
        stored = {f"{model}:{rid}": digest for rows_ in written.values() for (model, rid), (digest, _, _) in rows_.items()}
        assert stored == {key: derived.row_digest(text) for key, text in expected.items()}
        memo_rows = {f"{row.model}:{row.id}": row.to_json()
                     for rows_ in derive(state, state.groups(), DATASET).values() for row in rows_}
        assert memo_rows == expected
    return extended


def with_cloned_seqs(records: list[RawRecord], rng: random.Random) -> list[RawRecord]:
    """Some sessions get a second event with an existing (device, seq), as a cloned device
    writes (integrity.py keeps both; the fold orders them by their JSON)."""
    out = []
    for r in records:
        events = list(r.events)
        if r.kind == "session" and events and rng.random() < 0.5:
            twin = dict(rng.choice(events))
            twin["time_spent_delta"] = 7.0
            twin["at"] = ts(rng.randrange(0, 400))
            events.insert(rng.randrange(len(events) + 1), twin)
        out.append(RawRecord(r.id, r.kind, r.fields, events))
    return out


@SETTINGS
@given(content_groups(), st.integers(0, 2**32))
def test_incremental_folds_equal_full_folds_in_any_arrival_order(records: list[RawRecord], seed: int) -> None:
    rng = random.Random(seed)
    replay(arrivals(records, rng), rng)


@SETTINGS
@given(content_groups(), st.integers(0, 2**32))
def test_incremental_folds_survive_repeated_seqs(records: list[RawRecord], seed: int) -> None:
    rng = random.Random(seed)
    cloned = with_cloned_seqs(records, rng)
    replay(in_time_order(cloned), rng)
    replay(arrivals(cloned, rng), rng)


@SETTINGS
@given(content_groups(), st.integers(0, 2**32))
def test_incremental_folds_equal_full_folds_for_local_writes(records: list[RawRecord], seed: int) -> None:
    """Writes in time order (the usual case) extend the memoised fold; it stays exact."""
    rng = random.Random(seed)
    mutations = in_time_order(records)
    extended = replay(mutations, rng)
    assert extended > 0 or len(mutations) < 3


@SETTINGS
@given(content_groups(), st.integers(0, 2**32))
def test_the_write_path_previews_equal_a_full_fold(records: list[RawRecord], seed: int) -> None:
    """``after_start``/``after_update`` (what start and update responses use) give what
    folding the group with the new event gives, whenever they answer."""
    rng = random.Random(seed)
    sessions_ = [r for r in records if r.kind == "session"]
    target = rng.choice(sessions_)
    before = [RawRecord(r.id, r.kind, r.fields, list(r.events)) for r in records if r is not target or r.events]
    if target.events:  # preview the target's last event as an update
        last = max(target.events, key=lambda e: (e["device_id"], e["seq"]))
        base = [RawRecord(r.id, r.kind, r.fields, [e for e in r.events if e is not last]) if r.id == target.id else r
                for r in before]
        fold = PartitionState.from_records("user:" + USER, base).content_fold(CONTENT)
        session_before = next(r for r in base if r.id == target.id)
        preview = fold.after_update(session_before, last)
        if preview is not None:
            summary, log = preview
            full = fold_content(CONTENT, records, with_summary=True)
            assert full.summary == summary
            level = target.fields["mastery_level"]
            assert log == (full.mastery[level] if level is not None else None)
    else:  # preview the target's start
        base = [r for r in records if r.id != target.id]
        fold = PartitionState.from_records("user:" + USER, base).content_fold(CONTENT)
        started = fold.after_start(target.fields, target.id)
        if started is not None:
            full = fold_content(CONTENT, records, with_summary=True)
            assert (full.summary, full.mastery) == started
