"""PUT /api/auth/session/current/ (SPEC §2.3) and the UserSessionLog fold (§3.9)."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.logs import writes
from syncd.logs.state import PartitionState
from tests.logs.helpers import OTHER_DEVICE, USER, Learner, ts
from tests.logs.memory_driver import MemoryDevice

ACTIVE = {"active": True, "os": {"name": "Android", "major": "12"}, "browser": {"name": "Chrome", "major": "120"}}


def test_gaps_over_300_seconds_start_a_new_row() -> None:
    learner = Learner()
    for seconds in (0, 240, 480, 780, 781 + 300, 1081 + 301):
        status, body = learner.beat(ACTIVE, seconds)
        assert status == 200
        assert (body["id"], body["user_id"], body["server_time"]) == ("current", USER, ts(seconds))
    rows = sorted(learner.rows("usersessionlog"), key=lambda r: r["start_timestamp"])
    assert [(r["start_timestamp"], r["last_interaction_timestamp"]) for r in rows] == [
        (ts(0), ts(780)), (ts(1081), ts(1081)), (ts(1382), ts(1382))]
    assert rows[0] == {"id": rows[0]["id"], "dataset_id": "d" * 32, "user_id": USER, "channels": "",
                       "start_timestamp": ts(0), "last_interaction_timestamp": ts(780), "pages": "",
                       "device_info": "Android,12/Chrome,120"}
    assert list(rows[0]) == ["id", "dataset_id", "user_id", "channels", "start_timestamp",
                             "last_interaction_timestamp", "pages", "device_info"]


def test_exactly_300_seconds_extends() -> None:
    learner = Learner()
    learner.beat(ACTIVE, 0)
    learner.beat(ACTIVE, 300)
    assert learner.row("usersessionlog")["last_interaction_timestamp"] == ts(300)


@pytest.mark.parametrize("payload", [{"active": False}, {}, {"active": 0}, {"active": ""}, {"active": None}])
def test_inactive_heartbeats_change_nothing(payload: dict[str, Any]) -> None:
    learner = Learner()
    learner.beat(ACTIVE, 0)
    before = learner.raw_count()
    status, body = learner.beat(payload, 100)
    assert status == 200 and body["id"] == "current"
    assert learner.raw_count() == before


@pytest.mark.parametrize("payload, info", [
    ({"active": True}, ",/,"),
    ({"active": True, "os": {"name": None, "major": 12}, "browser": {"name": "X"}}, "None,12/X,"),
    ({"active": "yes", "os": "Linux", "browser": {"name": "B" * 200, "major": "1"}}, ",/" + "B" * 98),
])
def test_device_info(payload: dict[str, Any], info: str) -> None:
    learner = Learner()
    learner.beat(payload)
    assert learner.row("usersessionlog")["device_info"] == info


@pytest.mark.parametrize("payload", [None, [], "active", 1])
def test_a_body_that_is_not_an_object_is_400(payload: Any) -> None:
    learner = Learner()
    status, _ = learner.beat(payload)
    assert status == 400 and learner.raw_count() == 0


def test_anonymous_callers_get_a_visitor_cookie_and_no_row() -> None:
    state = PartitionState("anon:" + "1" * 64)
    ids = iter(["ab" * 16, "cd" * 16])
    ctx = writes.WriteContext(now=ts(0), user_id=None, device_id="1" * 64, dataset_id="d" * 32,
                              new_id=lambda: next(ids), random_quiz_level=lambda: -1)
    result = writes.heartbeat(state, ACTIVE, ctx)
    assert result.mutations == [] and result.headers == {"Set-Cookie": "visitor_id=" + "ab" * 16}
    assert result.response == {"user_id": None, "id": "current", "server_time": ts(0)}
    known = writes.heartbeat(state, ACTIVE, writes.WriteContext(**{**ctx.__dict__, "visitor_id": "EF" * 16}))
    assert known.headers == {"Set-Cookie": "visitor_id=" + "ef" * 16}


def test_the_latest_row_is_chosen_among_every_device_s_rows() -> None:
    tablet = Learner()
    laptop = Learner(device=MemoryDevice(OTHER_DEVICE, "d" * 32, seed=9))
    tablet.beat(ACTIVE, 0)
    laptop.beat(ACTIVE, 200)
    tablet.device.merge_from(laptop.device)
    tablet.beat(ACTIVE, 450)   # 250 s after the laptop's row: extends it, not the tablet's
    rows = sorted(tablet.rows("usersessionlog"), key=lambda r: r["start_timestamp"])
    assert [(r["start_timestamp"], r["last_interaction_timestamp"]) for r in rows] == [
        (ts(0), ts(0)), (ts(200), ts(450))]
    laptop.device.merge_from(tablet.device)
    assert sorted(r.to_json() for r in laptop.device.derived()) == sorted(r.to_json() for r in tablet.device.derived())


def test_last_interaction_is_the_max_even_when_a_clock_stepped_back() -> None:
    learner = Learner()
    learner.beat(ACTIVE, 100)
    learner.beat(ACTIVE, 50)
    assert learner.row("usersessionlog")["last_interaction_timestamp"] == ts(100)
