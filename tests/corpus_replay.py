"""Replay a recorded Kolibri 0.19.5 scenario against any syncd transport and compare.

Shared by the pure tests (an in-memory driver) and the real-daemon tests (HTTP over the
Unix socket). The transport is two callables:

* ``send(method, path, payload, at_iso, user_id_or_None) -> (status, json_body)``;
* ``read_rows(model) -> rows`` with ``model`` the lower-case model name
  (``"contentsessionlog"``...), rows as the read API returns them.

Comparison rules (corpus README): every status code; every response field, except that
ids syncd returns (``session_id``, attempt ``id``) are *mapped* to Kolibri's (and must stay
consistent); rows as multisets matched by content, ignoring ``id`` and foreign-key ids
(``summarylog_id``, ``masterylog_id``, ``sessionlog_id``), ``dataset_id`` and the
``_morango_*`` fields; floats equal to 1e-9; timestamps equal as instants; a coach quiz's
(negative) mastery level may be any negative number, consistently mapped. Session and
attempt row ids that are known through the mapping must be the mapped ones. A syncd row
must have exactly Kolibri's keys minus ``_morango_*``.

Heartbeat responses: Kolibri answers with account data syncd does not hold (username,
facility, roles) and a wall-clock ``server_time``; only ``id`` and ``user_id`` are
compared, and ``server_time`` must be a timestamp.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator

Send = Callable[[str, str, Any, str, "str | None"], "tuple[int, Any]"]
ReadRows = Callable[[str], "list[dict[str, Any]]"]

MODELS = {
    "ContentSessionLog": "contentsessionlog",
    "ContentSummaryLog": "contentsummarylog",
    "MasteryLog": "masterylog",
    "AttemptLog": "attemptlog",
    "UserSessionLog": "usersessionlog",
    "ExamLog": "examlog",
    "ExamAttemptLog": "examattemptlog",
}
IGNORED_ROW_KEYS = frozenset({"dataset_id", "summarylog_id", "masterylog_id"})
MAPPED_ROW_KEYS = frozenset({"id", "sessionlog_id"})   # compared only when the mapping knows them
FLOAT_TOLERANCE = 1e-9
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d")
_START_OPS = frozenset({"fe_start", "raw_start"})


class OneToOne:
    """A consistent one-to-one mapping from Kolibri's values to syncd's."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.forward: dict[Any, Any] = {}
        self.backward: dict[Any, Any] = {}

    def bind(self, kolibri: Any, syncd: Any, where: str) -> list[str]:
        known = self.forward.get(kolibri)
        if known is not None and known != syncd:
            return [f"{where}: {self.what} {kolibri!r} was mapped to {known!r}, now {syncd!r}"]
        back = self.backward.get(syncd)
        if back is not None and back != kolibri:
            return [f"{where}: syncd {self.what} {syncd!r} already stands for {back!r}, now for {kolibri!r}"]
        self.forward[kolibri] = syncd
        self.backward[syncd] = kolibri
        return []

    def translate(self, value: Any) -> Any:
        """Replace every known Kolibri id (whole strings or path segments) by syncd's."""
        if isinstance(value, str):
            if value in self.forward:
                return self.forward[value]
            if "/" in value:
                return "/".join(self.forward.get(part, part) for part in value.split("/"))
            return value
        if isinstance(value, list):
            return [self.translate(item) for item in value]
        if isinstance(value, dict):
            return {key: self.translate(item) for key, item in value.items()}
        return value


class Comparison:
    """The mappings one replay builds up, and the value comparison rules."""

    def __init__(self) -> None:
        self.ids = OneToOne("id")
        self.levels = OneToOne("quiz mastery level")

    def values(self, expected: Any, actual: Any, where: str, key: str | None = None) -> list[str]:
        if key == "mastery_level" and _is_int(expected) and expected < 0:
            if not _is_int(actual) or actual >= 0:
                return [f"{where}: expected a negative mastery level, got {actual!r}"]
            return self.levels.bind(expected, actual, where)
        if expected is None or isinstance(expected, bool) or actual is None or isinstance(actual, bool):
            same = expected is actual  # None, True and False are singletons; 1 is not True
            return [] if same else [f"{where}: expected {expected!r}, got {actual!r}"]
        if _is_number(expected):
            if not _is_number(actual) or not math.isclose(expected, actual, rel_tol=0, abs_tol=FLOAT_TOLERANCE):
                return [f"{where}: expected {expected!r}, got {actual!r}"]
            return []
        if isinstance(expected, str):
            if isinstance(actual, str) and _TIMESTAMP.match(expected) and _TIMESTAMP.match(actual):
                try:
                    if _instant(expected) == _instant(actual):
                        return []
                except ValueError:
                    pass
            return [] if expected == actual else [f"{where}: expected {expected!r}, got {actual!r}"]
        if isinstance(expected, list):
            if not isinstance(actual, list) or len(actual) != len(expected):
                return [f"{where}: expected {expected!r}, got {actual!r}"]
            problems: list[str] = []
            for n, (e, a) in enumerate(zip(expected, actual)):
                problems += self.values(e, a, f"{where}[{n}]")
            return problems
        if isinstance(expected, dict):
            if not isinstance(actual, dict):
                return [f"{where}: expected an object, got {actual!r}"]
            if set(expected) != set(actual):
                return [f"{where}: keys differ: expected {sorted(expected)}, got {sorted(actual)}"]
            problems = []
            for k, e in expected.items():
                problems += self.values(e, actual[k], f"{where}.{k}", k)
            return problems
        return [] if expected == actual else [f"{where}: expected {expected!r}, got {actual!r}"]

    # --- responses -------------------------------------------------------------------
    def response(self, request: dict[str, Any], actual: Any, where: str) -> list[str]:
        expected = request["response"]
        if request["path"].startswith("/api/auth/session/"):
            return self._heartbeat(expected, actual, where)
        if not isinstance(actual, dict) or not isinstance(expected, dict):
            return self.values(expected, actual, where)
        if set(expected) != set(actual):
            return [f"{where}: response keys differ: expected {sorted(expected)}, got {sorted(actual)}"]
        problems: list[str] = []
        for key, value in expected.items():
            if key == "session_id":
                problems += self.ids.bind(value, actual[key], f"{where}.session_id")
            elif key in ("attempts", "pastattempts"):
                problems += self._attempts(value, actual[key], f"{where}.{key}")
            else:
                problems += self.values(value, actual[key], f"{where}.{key}", key)
        return problems

    def _attempts(self, expected: Any, actual: Any, where: str) -> list[str]:
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {len(expected)} attempts, got {actual!r}"]
        problems: list[str] = []
        for n, (e, a) in enumerate(zip(expected, actual)):
            if not isinstance(a, dict) or set(a) != set(e):
                problems.append(f"{where}[{n}]: expected keys {sorted(e)}, got {a!r}")
                continue
            problems += self.ids.bind(e["id"], a["id"], f"{where}[{n}].id")
            for key in e:
                if key != "id":
                    problems += self.values(e[key], a[key], f"{where}[{n}].{key}", key)
        return problems

    def _heartbeat(self, expected: Any, actual: Any, where: str) -> list[str]:
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        problems = self.values("current", actual.get("id"), f"{where}.id")
        problems += self.values(expected.get("user_id"), actual.get("user_id"), f"{where}.user_id")
        stamp = actual.get("server_time")
        try:
            _instant(stamp)
        except (TypeError, ValueError):
            problems.append(f"{where}.server_time: not a timestamp: {stamp!r}")
        return problems

    # --- rows ------------------------------------------------------------------------
    def rows(self, expected_rows: dict[str, list[dict[str, Any]]], read_rows: ReadRows,
             where: str) -> list[str]:
        problems: list[str] = []
        for model, expected in expected_rows.items():
            actual = read_rows(MODELS[model])
            problems += self._match_rows(model, expected, actual, f"{where} {model}")
        return problems

    def _match_rows(self, model: str, expected: list[dict[str, Any]], actual: list[dict[str, Any]],
                    where: str) -> list[str]:
        if len(expected) != len(actual):
            return [f"{where}: expected {len(expected)} rows, got {len(actual)}:\n  "
                    + "\n  ".join(repr(row) for row in actual)]
        unmatched = list(range(len(actual)))
        problems: list[str] = []
        for n, row in enumerate(expected):
            best: list[str] | None = None
            for index in unmatched:
                diff = self._row(row, actual[index], f"{where}[{n}]")
                if not diff:
                    unmatched.remove(index)
                    # bind the ids this row maps (after the match, so a failed try binds nothing)
                    self._bind_row_ids(row, actual[index], f"{where}[{n}]")
                    best = []
                    break
                if best is None or len(diff) < len(best):
                    best = diff
            if best:
                problems.append(f"{where}[{n}]: no matching row for {_strip(row)!r}; closest differs:\n    "
                                + "\n    ".join(best))
        return problems

    def _row(self, expected: dict[str, Any], actual: dict[str, Any], where: str) -> list[str]:
        keys = {k for k in expected if not k.startswith("_morango_")}
        if set(actual) != keys:
            return [f"{where}: keys differ: expected {sorted(keys)}, got {sorted(actual)}"]
        problems: list[str] = []
        for key in keys:
            if key in IGNORED_ROW_KEYS:
                continue
            if key in MAPPED_ROW_KEYS:
                mapped = self.ids.forward.get(expected[key])
                if mapped is not None and mapped != actual[key]:
                    problems.append(f"{where}.{key}: expected the mapped id {mapped!r}, got {actual[key]!r}")
                continue
            problems += self.values(expected[key], actual[key], f"{where}.{key}", key)
        return problems

    def _bind_row_ids(self, expected: dict[str, Any], actual: dict[str, Any], where: str) -> None:
        for key in MAPPED_ROW_KEYS & set(expected):
            if expected[key] is not None and expected[key] not in self.ids.forward:
                self.ids.bind(expected[key], actual[key], where)


def replay_scenario(scenario: dict[str, Any], send: Send, read_rows: ReadRows) -> None:
    """Replay ``scenario['requests']`` through ``send`` and assert statuses, responses,
    ``snapshots`` (each checked right after the request it follows) and ``final_rows``."""
    name = scenario.get("scenario", "?")
    user_id = scenario_user(scenario)
    requests: list[dict[str, Any]] = scenario["requests"]
    checkpoints = snapshot_points(scenario)
    compare = Comparison()
    problems: list[str] = []
    for index, request in enumerate(requests):
        where = f"{name} request {index} ({request['method']} {request['path']} at {request['at']})"
        status, body = send(request["method"], compare.ids.translate(request["path"]),
                            compare.ids.translate(request["payload"]), request["at"], user_id)
        if status != request["status"]:
            problems.append(f"{where}: status {status}, expected {request['status']}; body {body!r}")
        elif 200 <= status < 300:
            problems += compare.response(request, body, where)
        for snapshot in checkpoints.get(index, ()):
            problems += compare.rows(snapshot["rows"], read_rows, f"{name} snapshot {snapshot.get('label')!r}")
        if problems:
            break  # later requests depend on this one; report the first divergence
    if not problems:
        problems += compare.rows(scenario["final_rows"], read_rows, f"{name} final_rows")
    if problems:
        raise AssertionError("\n".join(problems))


def device_learners(scenario: dict[str, Any], device: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    """A multi-device scenario's requests on ``device``, learner by learner: (learner name,
    a single-learner scenario whose final rows are that device's rows before the sync,
    the learner's user id)."""
    for group in scenario["requests"][device]:
        learner = group["name"].split("@")[0]
        (before,) = [u for u in scenario["rows_before_sync"][device] if u["user"] == learner]
        sub = {"scenario": group["name"], "requests": group["requests"], "final_rows": before["rows"]}
        user_id = scenario_user(sub)
        assert user_id is not None
        yield learner, sub, user_id


def scenario_user(scenario: dict[str, Any]) -> str | None:
    """The learner of a scenario: the ``user_id`` of its rows (None when all are anonymous)."""
    for rows in _all_row_sets(scenario):
        for model_rows in rows.values():
            for row in model_rows:
                if row.get("user_id"):
                    return str(row["user_id"])
    return None


def snapshot_points(scenario: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """Index of the request after which each snapshot was taken.

    A snapshot's ``at`` is the virtual clock when it was taken, and several requests can
    share that instant (a start in the same second as the previous session's last update).
    So the snapshot follows the last request that is not later than ``at`` and not past
    the number of starts and heartbeats the script had issued before its ``snapshot`` op
    (those ops map one-to-one onto requests; without a script, the snapshot's session rows
    give the number of starts)."""
    requests: list[dict[str, Any]] = scenario["requests"]
    snapshots: list[dict[str, Any]] = scenario.get("snapshots") or []
    budgets = _script_budgets(scenario.get("steps") or [])
    points: dict[int, list[dict[str, Any]]] = {}
    for n, snapshot in enumerate(snapshots):
        if n < len(budgets):
            starts, heartbeats = budgets[n]
        else:
            starts, heartbeats = len(snapshot["rows"].get("ContentSessionLog", [])), len(requests)
        limit = _instant(snapshot["at"])
        chosen = -1
        seen_starts = seen_heartbeats = 0
        for index, request in enumerate(requests):
            seen_starts += request["kind"] == "start"
            seen_heartbeats += request["kind"] == "session_heartbeat"
            if _instant(request["at"]) > limit or seen_starts > starts or seen_heartbeats > heartbeats:
                break
            chosen = index
        if chosen < 0:
            raise AssertionError(f"snapshot {snapshot.get('label')!r} precedes every request")
        points.setdefault(chosen, []).append(snapshot)
    return points


def _script_budgets(steps: Iterable[dict[str, Any]]) -> list[tuple[int, int]]:
    budgets: list[tuple[int, int]] = []
    starts = heartbeats = 0
    for step in steps:
        op = step.get("op")
        if op in _START_OPS:
            starts += 1
        elif op == "heartbeat":
            heartbeats += 1
        elif op == "snapshot":
            budgets.append((starts, heartbeats))
    return budgets


def _all_row_sets(scenario: dict[str, Any]) -> Iterable[dict[str, list[dict[str, Any]]]]:
    yield scenario.get("final_rows") or {}
    for snapshot in scenario.get("snapshots") or []:
        yield snapshot["rows"]


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_morango_") and k not in IGNORED_ROW_KEYS}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _instant(text: Any) -> datetime:
    if not isinstance(text, str):
        raise TypeError("not a string")
    candidate = text.strip().replace(" ", "T", 1)
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    moment = datetime.fromisoformat(candidate)
    if moment.tzinfo is None:
        raise ValueError("timestamp without offset")
    return moment
