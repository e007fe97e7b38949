"""The Kolibri 0.19.5 corpus replayed through the pure domain (writes + derive), no I/O."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from syncd.logs.records import canonical_json
from tests.corpus_replay import device_learners, replay_scenario
from tests.logs.memory_driver import MemoryDevice

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
SINGLE_DEVICE = sorted(p for p in CORPUS.glob("*.json") if not p.name.startswith("two_device"))
DEVICE_1 = "1" * 64
DEVICE_2 = "2" * 64


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / name).read_text())
    return data


def dataset_of(rows: dict[str, list[dict[str, Any]]]) -> str:
    """Kolibri's facility dataset in these rows: with it, syncd's ids equal Kolibri's."""
    for model_rows in rows.values():
        for row in model_rows:
            return str(row["dataset_id"])
    return "0" * 32


def test_the_corpus_is_all_here() -> None:
    assert len(SINGLE_DEVICE) == 9
    assert (CORPUS / "two_device_handoff.json").exists()
    assert (CORPUS / "two_device_concurrent.json").exists()


@pytest.mark.parametrize("path", SINGLE_DEVICE, ids=lambda p: p.stem)
def test_single_device_scenario(path: Path) -> None:
    scenario = json.loads(path.read_text())
    device = MemoryDevice(DEVICE_1, dataset_of(scenario["final_rows"]))
    replay_scenario(scenario, device.send, device.read_rows)


@pytest.mark.parametrize("path", SINGLE_DEVICE, ids=lambda p: p.stem)
def test_summary_and_mastery_ids_equal_kolibris(path: Path) -> None:
    """With Kolibri's dataset id, the deterministic ids (SPEC §1.0, §3.4) are Kolibri's,
    and so are the foreign keys to them. (A coach quiz's random level is part of its
    mastery id, so there only the summary id can match.)"""
    scenario = json.loads(path.read_text())
    final = scenario["final_rows"]
    device = MemoryDevice(DEVICE_1, dataset_of(final))
    replay_scenario(scenario, device.send, device.read_rows)
    assert sorted(r["id"] for r in device.read_rows("contentsummarylog")) == sorted(
        r["id"] for r in final["ContentSummaryLog"])
    assert sorted(r["summarylog_id"] for r in device.read_rows("masterylog")) == sorted(
        r["summarylog_id"] for r in final["MasteryLog"])
    if all(r["mastery_level"] > 0 for r in final["MasteryLog"]):
        assert sorted(r["id"] for r in device.read_rows("masterylog")) == sorted(
            r["id"] for r in final["MasteryLog"])
        assert sorted(str(r["masterylog_id"]) for r in device.read_rows("attemptlog")) == sorted(
            str(r["masterylog_id"]) for r in final["AttemptLog"])


def test_replay_refuses_a_wrong_fold() -> None:
    """The replay itself can fail: a corpus value changed by one second is caught."""
    scenario = load("video_3_sessions.json")
    scenario["final_rows"]["ContentSummaryLog"][0]["completion_timestamp"] = "2025-01-08T09:00:16+00:00"
    device = MemoryDevice(DEVICE_1, "0" * 32)
    with pytest.raises(AssertionError, match="completion_timestamp"):
        replay_scenario(scenario, device.send, device.read_rows)


# --- two devices -------------------------------------------------------------------------
def sync(a: MemoryDevice, b: MemoryDevice) -> None:
    """A full sync both ways: each ends with the union of raw records."""
    a.merge_from(b)
    b.merge_from(a)


def test_two_device_handoff_equals_single_device_use() -> None:
    scenario = load("two_device_handoff.json")
    dataset = dataset_of(scenario["steps"][0]["rows_on_device_after"])
    devices = {"D1": MemoryDevice(DEVICE_1, dataset, seed=1), "D2": MemoryDevice(DEVICE_2, dataset, seed=2)}
    for n, step in enumerate(scenario["steps"]):
        device = devices[step["device"]]
        replay_scenario(
            {"scenario": f"handoff step {n} on {step['device']}", "requests": step["requests"],
             "final_rows": step["rows_on_device_after"]},
            device.send, device.read_rows,
        )
        sync(devices["D1"], devices["D2"])
    for name, device in devices.items():
        (final,) = scenario["final_rows"][name]
        replay_scenario({"scenario": f"handoff final on {name}", "requests": [], "final_rows": final["rows"]},
                        device.send, device.read_rows)
    assert _digest(devices["D1"]) == _digest(devices["D2"])


def _digest(device: MemoryDevice) -> list[str]:
    return sorted(row.to_json() for row in device.derived())


def _concurrent_devices() -> tuple[dict[str, Any], MemoryDevice, MemoryDevice, dict[str, str]]:
    """Each device replays its own requests (and must match its own pre-sync rows)."""
    scenario = load("two_device_concurrent.json")
    dataset = dataset_of(scenario["rows_before_sync"]["D1"][0]["rows"])
    devices = {"D1": MemoryDevice(DEVICE_1, dataset, seed=1), "D2": MemoryDevice(DEVICE_2, dataset, seed=2)}
    users: dict[str, str] = {}
    for name, device in devices.items():
        for learner, sub, user_id in device_learners(scenario, name):
            users[learner] = user_id

            def read_rows(model: str, device: MemoryDevice = device, user_id: str = user_id) -> list[dict[str, Any]]:
                return [row for row in device.read_rows(model) if row["user_id"] == user_id]

            replay_scenario(sub, device.send, read_rows)
    return scenario, devices["D1"], devices["D2"], users


def _rows(device: MemoryDevice, model: str, user_id: str) -> list[dict[str, Any]]:
    return [row for row in device.read_rows(model) if row["user_id"] == user_id]


def test_two_device_concurrent_keeps_every_contribution() -> None:
    """SPEC §4's last column: the pure fold over both devices' sessions."""
    _, d1, d2, users = _concurrent_devices()
    sync(d1, d2)
    assert _digest(d1) == _digest(d2)
    device = d1

    (video,) = _rows(device, "contentsummarylog", users["td_video"])
    assert (video["start_timestamp"], video["end_timestamp"]) == (
        "2025-01-11T09:00:00.000000+00:00", "2025-01-11T10:00:10.000000+00:00")
    assert (video["progress"], video["time_spent"], video["completion_timestamp"]) == (0.8, 30.0, None)

    user = users["td_ex_server_done"]
    (summary,) = _rows(device, "contentsummarylog", user)
    assert (summary["progress"], summary["time_spent"]) == (1.0, 33.0)
    assert summary["completion_timestamp"] == "2025-01-11T10:00:12.000000+00:00"
    assert summary["end_timestamp"] == "2025-01-11T10:00:18.000000+00:00"
    (mastery,) = _rows(device, "masterylog", user)
    assert (mastery["mastery_level"], mastery["complete"], mastery["time_spent"]) == (1, True, 33.0)
    assert mastery["completion_timestamp"] == "2025-01-11T10:00:12.000000+00:00"
    assert mastery["end_timestamp"] == "2025-01-11T10:00:18.000000+00:00"
    assert len(_rows(device, "attemptlog", user)) == 5
    assert len(_rows(device, "contentsessionlog", user)) == 2
    assert {a["masterylog_id"] for a in _rows(device, "attemptlog", user)} == {mastery["id"]}

    user = users["td_ex_client_done"]
    (summary,) = _rows(device, "contentsummarylog", user)
    assert (summary["progress"], summary["time_spent"]) == (1.0, 33.0)
    assert summary["completion_timestamp"] == "2025-01-11T09:00:18.000000+00:00"
    assert summary["end_timestamp"] == "2025-01-11T10:00:15.000000+00:00"
    (mastery,) = _rows(device, "masterylog", user)
    assert (mastery["complete"], mastery["time_spent"]) == (True, 33.0)
    assert mastery["completion_timestamp"] == "2025-01-11T09:00:18.000000+00:00"
    assert mastery["end_timestamp"] == "2025-01-11T10:00:15.000000+00:00"

    (extra,) = _rows(device, "contentsummarylog", users["td_extra"])
    assert extra["extra_fields"] == {"contentState": {"page": 4, "device": "D1"}}
    assert (extra["time_spent"], extra["end_timestamp"]) == (12.0, "2025-01-11T10:00:05.000000+00:00")


def test_two_device_concurrent_is_the_same_whichever_way_it_merges() -> None:
    _, d1, d2, _ = _concurrent_devices()
    d2.merge_from(d1)     # D2 pulls first this time
    d1.merge_from(d2)
    rows = _digest(d1)
    assert rows == _digest(d2)
    assert all(canonical_json(json.loads(row)) == row for row in rows)
