"""A revoked device is refused everywhere once the revocation has spread: it travels
signed with every sync session, and each device keeps it."""

from __future__ import annotations

from typing import Any, Callable

from tests.daemon_harness import DaemonProcess


def sync(d: DaemonProcess, other: DaemonProcess) -> dict[str, Any]:
    status, answer = d.http.json("POST", "/sync", {"peer": f"127.0.0.1:{other.ready['sync_port']}"})
    assert status == 200, answer
    (session,) = answer["sessions"]
    return dict(session)


def join(d: DaemonProcess, inviter: DaemonProcess) -> None:
    status, invite = inviter.http.json("POST", "/facility", {"action": "invite"})
    assert status in (200, 201), invite
    status, joined = d.http.json("POST", "/facility", {"action": "join", "code": invite["join_code"],
                                                       "peer": f"127.0.0.1:{inviter.ready['sync_port']}"})
    assert status == 200, joined


def revoked_on(d: DaemonProcess, device_id: str) -> bool:
    shown = d.http.get("/facility")
    return any(row["device_id"] == device_id and row.get("revoked_at") for row in shown["devices"])


def test_a_revocation_spreads_and_the_device_is_refused_everywhere(daemon_factory: Callable[..., DaemonProcess]) -> None:
    a, b, c = daemon_factory(name="a"), daemon_factory(name="b"), daemon_factory(name="c")
    status, made = a.http.json("POST", "/facility", {"action": "create", "name": "School"})
    assert status == 201, made
    join(b, a)
    join(c, a)
    assert sync(c, a)["outcome"] == "ok" and sync(c, b)["outcome"] == "ok", "before: c is a member"
    assert sync(b, a)["outcome"] == "ok"

    status, answer = a.http.json("POST", "/facility", {"action": "revoke", "device_id": c.ready["device_id"]})
    assert status == 200, answer
    assert not revoked_on(b, c.ready["device_id"]), "b has not heard of it yet"
    assert sync(c, b)["outcome"] == "ok", "until it spreads, b still serves c"

    assert sync(b, a)["outcome"] == "ok"          # the revocation travels with the session
    assert revoked_on(b, c.ready["device_id"])
    for server in (a, b):
        refused = sync(c, server)
        assert refused["outcome"] == "failed" and "revoked" in refused["reason"], refused
    # ...and the revoked device cannot serve members either
    refused = sync(b, c)
    assert refused["outcome"] == "failed" and "revoked" in refused["reason"], refused
