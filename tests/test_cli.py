"""The ``syncd`` CLI: exit statuses, socket lookup order, rendering (fake daemon)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from syncd import cli, client
from syncd.client import ApiError, DaemonNotRunning, SyncdClient, locate_socket
from syncd.errors import ConfigError
from tests.daemon_harness import DaemonProcess, UnixHTTP
from tests.test_client_unit import FakeDaemon, fake, short_dir  # noqa: F401 (fixtures)

SYNCD = Path(sys.executable).parent / "syncd"
LEARNER = "c8b02965e827a69fa3d876d554f55903"
CONTENT = "c6f49ea527824f398f4d5d26faf19396"
SUMMARY: dict[str, object] = {
    "id": "a564e5bbbfd62f5ca9d558b0078d29b4",
    "dataset_id": "daeb3a0a179c9b323eeeb8a33a71151e",
    "user_id": LEARNER,
    "content_id": CONTENT,
    "channel_id": "6199dde695db4ee4ab392222d5af1e5c",
    "start_timestamp": "2025-01-06T09:00:00.000000+00:00",
    "end_timestamp": "2025-01-08T09:00:15.000000+00:00",
    "completion_timestamp": None,
    "time_spent": 45.0,
    "progress": 0.301,
    "kind": "video",
    "extra_fields": {},
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No SYNCD_* variables; an empty working directory; no well-known socket exists."""
    for name in ("SYNCD_CONFIG", "SYNCD_SOCKET", "STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(
        client, "WELL_KNOWN_SOCKETS", (tmp_path / "run" / "api.sock", Path(".syncd/api.sock"))
    )
    yield cwd


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)


def stale_socket(path: Path) -> Path:
    """A socket file with nobody listening: what `kill -9` leaves behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    return path


# --- no daemon ---------------------------------------------------------------------------


def test_status_without_a_daemon_real_process(tmp_path: Path) -> None:
    if Path("/run/syncd/api.sock").exists():
        pytest.skip("a system daemon is running here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    done = subprocess.run(
        [str(SYNCD), "status"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == ""
    assert "syncd: daemon not running: no socket at /run/syncd/api.sock or .syncd/api.sock" in done.stderr
    assert "syncd run" in done.stderr
    assert "Traceback" not in done.stderr


def test_status_without_a_daemon(tmp_path: Path) -> None:
    result = invoke("status")
    assert result.exit_code == 3
    assert "daemon not running" in result.stderr
    assert str(tmp_path / "run" / "api.sock") in result.stderr
    assert result.stdout == ""


def test_named_socket_missing_exits_3(tmp_path: Path) -> None:
    result = invoke("status", "--socket", str(tmp_path / "nope.sock"))
    assert result.exit_code == 3
    assert f"no socket at {tmp_path / 'nope.sock'}" in result.stderr


def test_stale_socket_exits_3(short_dir: Path) -> None:  # noqa: F811
    stale = stale_socket(short_dir / "api.sock")
    result = invoke("logs", "sessions", "--socket", str(stale))
    assert result.exit_code == 3
    assert f"nothing listening on {stale}" in result.stderr


def test_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[api]\nsocket = 1\n")
    result = invoke("status", "--config", str(bad))
    assert result.exit_code == 2
    assert f"syncd: config error: {bad}: api.socket: expected a path" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert invoke("logs", "bogus").exit_code == 2
    assert invoke("status", "--bogus").exit_code == 2
    result = invoke("logs", "usersessions", "--content", CONTENT)
    assert result.exit_code == 2
    assert "--content does not apply to usersessions" in result.stderr


# --- socket lookup order -----------------------------------------------------------------


def test_lookup_order(tmp_path: Path, clean_env: Path) -> None:
    flag, env_sock, conf_sock, other = (tmp_path / f"{n}.sock" for n in ("flag", "env", "conf", "other"))
    conf = tmp_path / "syncd.toml"
    conf.write_text(f'[api]\nsocket = "{conf_sock.name}"\n')
    other_conf = tmp_path / "other.toml"
    other_conf.write_text(f'[api]\nsocket = "{other.name}"\n')
    run_dir_sock, local_sock = tmp_path / "run" / "api.sock", clean_env / ".syncd" / "api.sock"
    everything = {"SYNCD_SOCKET": str(env_sock), "SYNCD_CONFIG": str(other_conf)}

    assert locate_socket(flag, config_path=conf, env=everything) == flag
    assert locate_socket(None, config_path=conf, env=everything) == env_sock
    assert locate_socket(None, config_path=conf, env={"SYNCD_CONFIG": str(other_conf)}) == conf_sock
    assert locate_socket(None, env={"SYNCD_CONFIG": str(other_conf)}) == other
    # named ones win whether or not they exist; the well-known ones only if they exist
    with pytest.raises(DaemonNotRunning):
        locate_socket(None, env={})
    stale_socket(local_sock)
    assert locate_socket(None, env={}) == local_sock
    stale_socket(run_dir_sock)
    assert locate_socket(None, env={}) == run_dir_sock
    assert locate_socket(None, env={"SYNCD_SOCKET": "rel.sock"}) == clean_env / "rel.sock"


def test_lookup_with_a_bad_config_raises_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[api]\nsocket = true\n")
    with pytest.raises(ConfigError):
        locate_socket(None, env={"SYNCD_CONFIG": str(bad)})


def test_flag_beats_env_end_to_end(fake: FakeDaemon, tmp_path: Path) -> None:  # noqa: F811
    fake.replies[("GET", "/status")] = (200, {"device_id": "d"})
    missing = str(tmp_path / "missing.sock")
    ok = invoke("status", "--socket", str(fake.socket_path), env={"SYNCD_SOCKET": missing})
    assert ok.exit_code == 0, ok.stderr
    # and a named socket that is missing does not fall back to one that works
    stale = invoke("status", "--socket", missing, env={"SYNCD_SOCKET": str(fake.socket_path)})
    assert stale.exit_code == 3


def test_env_then_config_end_to_end(fake: FakeDaemon, tmp_path: Path) -> None:  # noqa: F811
    fake.replies[("GET", "/status")] = (200, {"device_id": "d"})
    conf = tmp_path / "syncd.toml"
    conf.write_text(f'[api]\nsocket = "{fake.socket_path}"\n')
    assert invoke("status", env={"SYNCD_SOCKET": str(fake.socket_path)}).exit_code == 0
    assert invoke("status", "--config", str(conf)).exit_code == 0
    assert invoke("status", env={"SYNCD_CONFIG": str(conf)}).exit_code == 0
    # SYNCD_SOCKET beats the config
    missing = str(tmp_path / "missing.sock")
    assert invoke("status", "--config", str(conf), env={"SYNCD_SOCKET": missing}).exit_code == 3


def test_well_known_socket_is_found(
    fake: FakeDaemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path  # noqa: F811
) -> None:
    fake.replies[("GET", "/status")] = (200, {"device_id": "d"})
    monkeypatch.setattr(client, "WELL_KNOWN_SOCKETS", (tmp_path / "none.sock", fake.socket_path))
    assert invoke("status").exit_code == 0
    assert [s.path for s in fake.seen] == ["/status"]


# --- rendering ---------------------------------------------------------------------------

STATUS = {
    "device_id": "d" * 64,
    "device_name": "teacher laptop",
    "sync_port": 7737,
    "facility": None,
    "records": {"contentsessionlog": 3, "contentsummarylog": 1},
    "digests": {f"user:{i:032x}": "ab" for i in range(20)},
}


def test_status_for_people(fake: FakeDaemon) -> None:  # noqa: F811
    fake.replies[("GET", "/status")] = (200, STATUS)
    result = invoke("status", "--socket", str(fake.socket_path))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["device_id", "d" * 64]
    assert "records.contentsessionlog  3" in result.stdout
    assert lines[3].split() == ["facility", "-"]
    assert any(line.split() == ["digests", "20", "entries"] for line in lines)
    # values start in one column
    assert len({line.index(line.split()[1]) for line in lines}) == 1


def test_status_json(fake: FakeDaemon) -> None:  # noqa: F811
    fake.replies[("GET", "/status")] = (200, STATUS)
    result = invoke("status", "--json", "--socket", str(fake.socket_path))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == STATUS


def test_logs_table(fake: FakeDaemon) -> None:  # noqa: F811
    second = dict(SUMMARY, id="b" * 32, progress=1.0, time_spent=12.5, completion_timestamp="2025-01-09T10:00:00.000000+00:00")
    fake.replies[("GET", "/api/logger/contentsummarylog/")] = (200, [SUMMARY, second])
    result = invoke("logs", "summaries", "--user", LEARNER, "--socket", str(fake.socket_path))
    assert result.exit_code == 0, result.stderr
    assert fake.seen[0].query == {"user_id": LEARNER}
    header, first, last = result.stdout.splitlines()
    assert header.split() == ["USER_ID", "CONTENT_ID", "KIND", "PROGRESS", "TIME_SPENT", "COMPLETION_TIMESTAMP"]
    assert first.split() == [LEARNER, CONTENT, "video", "0.301", "45", "-"]
    assert last.split() == [LEARNER, CONTENT, "video", "1", "12.5", "2025-01-09T10:00:00.000000+00:00"]
    # numbers are right-aligned: the columns end at the same place
    assert first.index("45") + 2 == last.index("12.5") + 4
    assert len(header) >= len(first)


def test_logs_json_and_filters(fake: FakeDaemon) -> None:  # noqa: F811
    fake.replies[("GET", "/api/logger/contentsessionlog/")] = (200, [])
    fake.replies[("GET", "/api/logger/examlog/")] = (200, [{"exam_id": CONTENT, "closed": True}])
    sock = str(fake.socket_path)
    result = invoke("logs", "sessions", "--content", CONTENT, "--json", "--socket", sock)
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])
    result = invoke("logs", "exams", "--content", CONTENT, "--json", "--socket", sock)
    assert json.loads(result.stdout) == [{"exam_id": CONTENT, "closed": True}]
    assert [s.query for s in fake.seen] == [{"content_id": CONTENT}, {"exam_id": CONTENT}]
    empty = invoke("logs", "sessions", "--socket", sock)
    assert empty.stdout.split() == ["START_TIMESTAMP", "USER_ID", "CONTENT_ID", "KIND", "PROGRESS", "TIME_SPENT"]


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("sessions", "contentsessionlog"),
        ("summaries", "contentsummarylog"),
        ("mastery", "masterylog"),
        ("attempts", "attemptlog"),
        ("usersessions", "usersessionlog"),
        ("exams", "examlog"),
    ],
)
def test_logs_kinds_map_to_models(fake: FakeDaemon, kind: str, model: str) -> None:  # noqa: F811
    fake.replies[("GET", f"/api/logger/{model}/")] = (200, [])
    assert invoke("logs", kind, "--socket", str(fake.socket_path)).exit_code == 0


def test_refused_request_exits_1(fake: FakeDaemon) -> None:  # noqa: F811
    fake.replies[("GET", "/api/logger/masterylog/")] = (
        400,
        {"error": "invalid_filter", "detail": "user_id: not a UUID"},
    )
    result = invoke("logs", "mastery", "--user", "x", "--socket", str(fake.socket_path))
    assert result.exit_code == 1
    assert "syncd: the daemon refused: 400 invalid_filter: user_id: not a UUID" in result.stderr


# --- against a real daemon (tests/conftest.py starts `syncd run` processes) --------------

VIDEO = {
    "node_id": "32a941fb77c2576e8f6b294cde4c3b0c",
    "content_id": CONTENT,
    "channel_id": "6199dde695db4ee4ab392222d5af1e5c",
    "kind": "video",
}


async def write_one_video_session(socket_path: Path) -> tuple[str, list[dict[str, Any]]]:
    async with SyncdClient(socket_path, user=LEARNER) as api:
        started = await api.start_session(VIDEO, event_time="2025-01-06T09:00:00+00:00")
        await api.update_session(
            started["session_id"],
            {"progress_delta": 0.3, "time_spent_delta": 10.0},
            event_time="2025-01-06T09:00:10+00:00",
        )
        with pytest.raises(ApiError) as info:
            await api.update_session("0" * 32, {}, event_time="2025-01-06T09:00:20+00:00")
        assert info.value.status == 404
        return started["session_id"], await api.read("contentsummarylog", user_id=LEARNER)


def test_client_and_cli_against_a_real_daemon(daemon: DaemonProcess) -> None:
    # CliRunner runs its own event loop, so this test is synchronous.
    session_id, rows = asyncio.run(write_one_video_session(daemon.socket))
    assert [(r["progress"], r["time_spent"]) for r in rows] == [(0.3, 10.0)]

    sock = str(daemon.socket)
    status = invoke("status", "--json", "--socket", sock)
    assert status.exit_code == 0, status.stderr
    assert json.loads(status.stdout)["device_id"] == daemon.ready["device_id"]
    table = before_rebuild = invoke("logs", "summaries", "--user", LEARNER, "--socket", sock)
    assert table.exit_code == 0, table.stderr
    assert table.stdout.splitlines()[1].split() == [LEARNER, CONTENT, "video", "0.3", "10", "-"]
    # found through the daemon's own config file (relative socket path in it)
    via_config = invoke("logs", "sessions", "--json", env={"SYNCD_CONFIG": str(daemon.config_path)})
    assert via_config.exit_code == 0, via_config.stderr
    assert [r["id"] for r in json.loads(via_config.stdout)] == [session_id]
    rebuilt = invoke("rebuild", "--json", "--socket", sock)
    assert rebuilt.exit_code == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout)
    # one learner; a real worker process refolded it, from the daemon's own environment
    assert (report["partitions"], report["records"], report["workers"], report["refolded_here"]) == (1, 1, 1, 0)
    table = invoke("rebuild", "--socket", sock)
    assert table.exit_code == 0, table.stderr
    assert table.stdout.split()[:6] == ["PARTITIONS", "RECORDS", "ROWS", "SECONDS", "WORKERS", "REFOLDED_HERE"]
    assert "rebuilding partitions" in table.stderr  # people see progress; --json output stays clean
    assert rebuilt.stderr == ""
    # the API streams the progress it reports (application/x-ndjson), and refuses what it does not know
    http = UnixHTTP(daemon.socket)
    status, headers, data = http.raw("POST", "/rebuild?progress=1")
    lines = [json.loads(line) for line in data.splitlines()]
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    assert lines[0] == {"done": 1, "total": 1} and lines[-1]["report"]["partitions"] == 1
    assert http.json("POST", "/rebuild?progress=2")[0] == 400
    assert http.json("POST", "/rebuild?verbose=1")[0] == 400
    assert invoke("logs", "summaries", "--user", LEARNER, "--socket", sock).stdout == before_rebuild.stdout


def test_status_after_the_daemon_stops_or_dies(daemon_factory: Callable[..., DaemonProcess]) -> None:
    stopped = daemon_factory()
    assert invoke("status", "--socket", str(stopped.socket)).exit_code == 0
    assert stopped.stop() == 0
    gone = invoke("status", "--socket", str(stopped.socket))
    assert (gone.exit_code, "no socket at" in gone.stderr) == (3, True)

    killed = daemon_factory()
    killed.kill()  # SIGKILL leaves the socket file behind
    assert killed.socket.exists()
    dead = invoke("status", "--socket", str(killed.socket))
    assert (dead.exit_code, "nothing listening" in dead.stderr) == (3, True)
