"""The shared replay driver catches every kind of divergence (it is a test oracle too)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.corpus_replay import Comparison, replay_scenario, snapshot_points
from tests.logs.memory_driver import MemoryDevice

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
QUIZ = json.loads((CORPUS / "coach_quiz_replace_and_submit.json").read_text())
EXTRA = json.loads((CORPUS / "extra_fields_replace.json").read_text())

Change = Callable[[dict[str, Any]], None]


def _replay(scenario: dict[str, Any]) -> None:
    device = MemoryDevice("1" * 64, "0" * 32)
    replay_scenario(scenario, device.send, device.read_rows)


MUTATIONS: dict[str, Change] = {
    "a status": lambda s: s["requests"][7].update(status=200),
    "a response value": lambda s: s["requests"][4]["response"].update(time_spent=61.0),
    "a response key": lambda s: s["requests"][4]["response"].pop("totalattempts"),
    "pastattempts order": lambda s: s["requests"][4]["response"]["pastattempts"].reverse(),
    "a positive level for a quiz": lambda s: s["requests"][4]["response"]["context"].update(mastery_level=5),
    "a different quiz level later": lambda s: s["requests"][4]["response"]["context"].update(mastery_level=-1),
    "a row float": lambda s: s["final_rows"]["MasteryLog"][0].update(time_spent=77.001),
    "a row timestamp": lambda s: s["final_rows"]["ContentSummaryLog"][0].update(
        completion_timestamp="2025-01-06T09:30:16+00:00"),
    "a row list": lambda s: s["final_rows"]["AttemptLog"][1]["interaction_history"].pop(),
    "a row bool": lambda s: s["final_rows"]["AttemptLog"][0].update(complete=True),
    "a missing row": lambda s: s["final_rows"]["AttemptLog"].pop(),
    "a snapshot row": lambda s: s["snapshots"][0]["rows"]["AttemptLog"].pop(),
    "a mapped foreign key": lambda s: s["final_rows"]["AttemptLog"][2].update(
        sessionlog_id=s["final_rows"]["ContentSessionLog"][0]["id"]),
    "an extra row key": lambda s: s["final_rows"]["ContentSessionLog"][0].update(node_id="x"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_changed_expectation_fails_the_replay(name: str) -> None:
    scenario = copy.deepcopy(QUIZ)
    MUTATIONS[name](scenario)
    with pytest.raises(AssertionError):
        _replay(scenario)


def test_the_untouched_scenario_passes_and_tolerances_hold() -> None:
    scenario = copy.deepcopy(QUIZ)
    scenario["final_rows"]["MasteryLog"][0]["time_spent"] = 77.0 + 1e-12           # floats to 1e-9
    scenario["final_rows"]["MasteryLog"][0]["end_timestamp"] = "2025-01-06T10:30:17+01:00"  # same instant
    scenario["final_rows"]["MasteryLog"][0]["id"] = "f" * 32                          # ids are not compared
    scenario["final_rows"]["MasteryLog"][0]["dataset_id"] = "e" * 32
    _replay(scenario)


def test_snapshots_are_taken_after_the_right_request() -> None:
    """Three requests share 09:00:10 in extra_fields_replace; the snapshot follows the first."""
    assert {index: [s["label"] for s in snaps] for index, snaps in snapshot_points(EXTRA).items()} == {
        2: ["after session 1"]}
    assert sorted(snapshot_points(QUIZ)) == [3, 6]


def test_values_compare_by_type_too() -> None:
    compare = Comparison()
    assert compare.values(1, True, "x")          # a bool is not a number
    assert compare.values(None, 0, "x")
    assert not compare.values(0, 0.0, "x")       # Kolibri's fresh 0 is syncd's 0.0
    assert not compare.values("2025-01-06T09:00:00+00:00", "2025-01-06T09:00:00.000000+00:00", "x")
    assert compare.values("2025-01-06T09:00:00+00:00", "2025-01-06T09:00:00.000001+00:00", "x")
