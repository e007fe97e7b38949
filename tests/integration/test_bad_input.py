"""Bad input over the real socket: a clear error, the right status, nothing changed."""

from __future__ import annotations

import json
import socket
from typing import Any, Iterator

import pytest

from tests.daemon_harness import DaemonProcess

USER = "c8b02965e827a69fa3d876d554f55903"
AT = "2025-01-06T09:00:00+00:00"
VIDEO = {
    "node_id": "32a941fb77c2576e8f6b294cde4c3b0c",
    "content_id": "c6f49ea527824f398f4d5d26faf19396",
    "channel_id": "6199dde695db4ee4ab392222d5af1e5c",
    "kind": "video",
}


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    from tests.daemon_harness import short_tempdir

    d = DaemonProcess(short_tempdir(), config="").start()
    try:
        yield d
    finally:
        d.cleanup()


def fingerprint(d: DaemonProcess) -> tuple[Any, Any, Any]:
    status = d.status()
    return status["feed_seq"], status["digests"], status["records"]


@pytest.fixture
def session(shared_daemon: DaemonProcess) -> str:
    status, body = shared_daemon.http.json("POST", "/api/logger/trackprogress/", VIDEO, user=USER, at=AT)
    assert status == 200, body
    return str(body["session_id"])


def assert_refused(d: DaemonProcess, status: int, body: Any, expected: int, code: str | None = None) -> None:
    assert status == expected, body
    assert isinstance(body, dict) and body.get("error") and body.get("detail"), body
    if code:
        assert body["error"] == code, body


def raw_json(d: DaemonProcess, method: str, target: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, body = d.http.raw(method, target, data, {"Content-Type": "application/json", **(headers or {})})
    return status, json.loads(body) if body else None


@pytest.mark.parametrize(
    "data",
    [b"{", b"[1,", b"\xff\xfe", b'{"progress_delta": NaN}', b'{"time_spent_delta": Infinity}', b"nul"],
)
def test_malformed_json(shared_daemon: DaemonProcess, session: str, data: bytes) -> None:
    before = fingerprint(shared_daemon)
    status, body = raw_json(shared_daemon, "PUT", f"/api/logger/trackprogress/{session}/", data, {"X-Syncd-User": USER})
    assert_refused(shared_daemon, status, body, 400, "malformed_json")
    assert fingerprint(shared_daemon) == before


@pytest.mark.parametrize(
    "payload",
    [
        {"progress_delta": "NaN"},
        {"time_spent_delta": "Infinity"},
        {"progress_delta": 1.5},
        {"progress_delta": -0.1},
        {"time_spent_delta": -1},
        {"progress": 0.5, "progress_delta": 0.1},
        {"extra_fields": "not an object"},
        {"progress_delta": "abc"},
        {"interactions": [{"item": "q1", "correct": 1, "time_spent": 3}]},
        {"interactions": "nope"},
        [1, 2],
        "text",
    ],
)
def test_bad_update_bodies(shared_daemon: DaemonProcess, session: str, payload: Any) -> None:
    before = fingerprint(shared_daemon)
    status, body = shared_daemon.http.json(
        "PUT", f"/api/logger/trackprogress/{session}/", payload, user=USER, at=AT
    )
    assert_refused(shared_daemon, status, body, 400)
    assert fingerprint(shared_daemon) == before


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"node_id": VIDEO["node_id"]},
        {**VIDEO, "kind": "nonsense"},
        {**VIDEO, "content_id": "not-a-uuid"},
        {**VIDEO, "kind": "exercise"},
        {**VIDEO, "mastery_model": {"type": "m_of_n"}},
        {**VIDEO, "kind": "exercise", "mastery_model": {"type": "m_of_n", "m": 0, "n": 5}},
        {**VIDEO, "quiz_id": "32a941fb77c2576e8f6b294cde4c3b0c"},
    ],
)
def test_bad_start_bodies(shared_daemon: DaemonProcess, payload: Any) -> None:
    before = fingerprint(shared_daemon)
    status, body = shared_daemon.http.json("POST", "/api/logger/trackprogress/", payload, user=USER, at=AT)
    assert_refused(shared_daemon, status, body, 400)
    assert fingerprint(shared_daemon) == before


def test_unknown_and_foreign_sessions_are_404(shared_daemon: DaemonProcess, session: str) -> None:
    before = fingerprint(shared_daemon)
    for target, user in [
        ("/api/logger/trackprogress/00000000000000000000000000000000/", USER),
        ("/api/logger/trackprogress/not-a-uuid/", USER),
        (f"/api/logger/trackprogress/{session}/", "11111111111111111111111111111111"),
        (f"/api/logger/trackprogress/{session}/", None),
    ]:
        status, body = shared_daemon.http.json("PUT", target, {"time_spent_delta": 1}, user=user, at=AT)
        assert_refused(shared_daemon, status, body, 404)
    assert fingerprint(shared_daemon) == before


@pytest.mark.parametrize(
    "headers, code",
    [
        ({"X-Syncd-User": ""}, "invalid_header"),
        ({"X-Syncd-User": "bob"}, "invalid_header"),
        ({"X-Syncd-User": USER, "X-Syncd-Event-Time": "yesterday"}, "invalid_event_time"),
        ({"X-Syncd-User": USER, "X-Syncd-Event-Time": "2025-01-06T09:00:00"}, "invalid_event_time"),
        ({"X-Syncd-Visitor": "zzz"}, "invalid_header"),
    ],
)
def test_bad_headers(shared_daemon: DaemonProcess, headers: dict[str, str], code: str) -> None:
    before = fingerprint(shared_daemon)
    status, body = raw_json(shared_daemon, "POST", "/api/logger/trackprogress/", json.dumps(VIDEO).encode(), headers)
    assert_refused(shared_daemon, status, body, 400, code)
    assert fingerprint(shared_daemon) == before


def test_event_time_refused_when_disabled(daemon_factory: Any) -> None:
    d = daemon_factory(config="")
    d.config_path.write_text(d.config_path.read_text().replace("accept_event_time = true", "accept_event_time = false"))
    d.stop()
    d.start()
    status, body = d.http.json("POST", "/api/logger/trackprogress/", VIDEO, user=USER, at=AT)
    assert_refused(d, status, body, 400, "event_time_disabled")
    status, body = d.http.json("POST", "/api/logger/trackprogress/", VIDEO, user=USER)
    assert status == 200, body


def test_body_over_limit_refused_before_read(shared_daemon: DaemonProcess, session: str) -> None:
    before = fingerprint(shared_daemon)
    # Declare 50 MB and send only the headers: the daemon must answer without waiting.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(shared_daemon.socket))
    sock.sendall(
        (
            f"PUT /api/logger/trackprogress/{session}/ HTTP/1.1\r\nHost: syncd\r\n"
            f"X-Syncd-User: {USER}\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
        ).encode()
    )
    reply = sock.recv(65536).decode(errors="replace")
    sock.close()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "body_too_large" in reply
    assert fingerprint(shared_daemon) == before


def test_chunked_body_over_limit_refused(shared_daemon: DaemonProcess, session: str) -> None:
    before = fingerprint(shared_daemon)
    big = json.dumps({"extra_fields": {"x": "y" * 2_000_000}}).encode()

    def chunks() -> Any:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    import http.client

    from tests.daemon_harness import _UnixConnection

    conn = _UnixConnection(str(shared_daemon.socket), 30)
    try:
        conn.request(
            "PUT", f"/api/logger/trackprogress/{session}/", body=chunks(),
            headers={"X-Syncd-User": USER, "Content-Type": "application/json"}, encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 413
    except (BrokenPipeError, ConnectionResetError, http.client.HTTPException):
        pass  # the daemon may cut the stream off as soon as it passes the limit
    finally:
        conn.close()
    assert fingerprint(shared_daemon) == before


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/api/logger/contentsessionlog/?bogus=1", 400),
        ("/api/logger/masterylog/?channel_id=6199dde695db4ee4ab392222d5af1e5c", 400),
        ("/api/logger/usersessionlog/?content_id=6199dde695db4ee4ab392222d5af1e5c", 400),
        ("/api/logger/contentsessionlog/?user_id=bob", 400),
        ("/api/logger/contentsessionlog/?page_size=0", 400),
        ("/api/logger/contentsessionlog/?page=2", 400),
        ("/api/logger/nosuchlog/", 404),
    ],
)
def test_bad_reads(shared_daemon: DaemonProcess, target: str, expected: int) -> None:
    status, body = shared_daemon.http.json("GET", target)
    assert_refused(shared_daemon, status, body, expected)


def test_reads_paginate(shared_daemon: DaemonProcess, session: str) -> None:
    everything = shared_daemon.http.get("/api/logger/contentsessionlog/")
    assert isinstance(everything, list) and everything
    page = shared_daemon.http.get("/api/logger/contentsessionlog/?page_size=1")
    assert page["count"] == len(everything) and page["results"] == everything[:1]
    assert page["previous"] is None
    assert (page["next"] is None) == (len(everything) == 1)
    for row in everything:
        assert not any(key.startswith("_morango") for key in row)
        assert "_syncd" not in row
    debug = shared_daemon.http.get("/api/logger/contentsessionlog/?debug=1")
    assert all(row["_syncd"]["partition"].startswith("user:") for row in debug)
