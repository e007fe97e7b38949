"""A tablet that holds a list of learners: it pulls a learner it does not hold before a
start, so the start decides on that learner's history, and from then on holds them."""

from __future__ import annotations

from typing import Any, Callable

from tests.daemon_harness import DaemonProcess, wait_until

VIDEO = {
    "node_id": "32a941fb77c2576e8f6b294cde4c3b0c",
    "content_id": "c6f49ea527824f398f4d5d26faf19396",
    "channel_id": "6199dde695db4ee4ab392222d5af1e5c",
    "kind": "video",
}
HELD = "11111111111111111111111111111111"
VISITOR = "22222222222222222222222222222222"


def test_start_for_an_unheld_learner_pulls_them_first(daemon_factory: Callable[..., DaemonProcess]) -> None:
    server = daemon_factory()
    status, made = server.http.json("POST", "/facility", {"action": "create", "name": "School"})
    assert status == 201, made
    # the visiting learner's history exists only on the server
    server.http.session(VIDEO, {"progress_delta": 0.5, "time_spent_delta": 20.0}, user=VISITOR,
                        start_at="2025-01-06T09:00:00+00:00", update_at="2025-01-06T09:00:20+00:00")

    address = f"127.0.0.1:{server.ready['sync_port']}"
    tablet = daemon_factory(start=False)
    tablet.config_path.write_text(tablet.config_path.read_text().replace(
        "[sync]\nport = 0\n", f'[sync]\nport = 0\nsubscription = ["{HELD}"]\npeers = ["{address}"]\n'))
    tablet.start()
    status, joined = tablet.http.json("POST", "/facility", {"action": "join", "code": made["join_code"], "peer": address})
    assert status == 200, joined
    # the tablet's first syncs bring only what it holds
    wait_until(lambda: tablet.http.json("POST", "/sync", {"peer": address})[1]["sessions"][0]["outcome"] == "ok",
               30, "a first sync")
    assert tablet.http.get(f"/api/logger/contentsummarylog/?user_id={VISITOR}") == []

    status, resumed = tablet.http.json("POST", "/api/logger/trackprogress/", VIDEO, user=VISITOR,
                                       at="2025-01-07T09:00:00+00:00")
    assert status == 200, resumed
    assert resumed["progress"] == 0.5 and resumed["time_spent"] == 20.0, resumed

    def server_has_the_new_session() -> Any:
        tablet.http.json("POST", "/sync", {"peer": address})
        sessions = server.http.get(f"/api/logger/contentsessionlog/?user_id={VISITOR}")
        return len(sessions) == 2

    wait_until(server_has_the_new_session, 30, "the visitor's new session to reach the server")
    assert tablet.status()["digests"][f"user:{VISITOR}"] == server.status()["digests"][f"user:{VISITOR}"]
