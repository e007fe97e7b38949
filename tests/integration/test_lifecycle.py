"""Daemon start-up and shutdown as a user meets them: a real process, a real socket."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from typing import Callable

from tests.daemon_harness import SYNCD, DaemonProcess, UnixHTTP, wait_until


def test_socket_exists_only_when_api_answers(daemon_factory: Callable[..., DaemonProcess]) -> None:
    d = daemon_factory(start=False)
    assert not d.socket.exists()
    proc = subprocess.Popen([SYNCD, "run", "--config", str(d.config_path)], stderr=subprocess.DEVNULL)
    try:
        wait_until(d.socket.exists, 60, "the socket file")
        # The first request after the file appears must succeed: no retry.
        status = UnixHTTP(d.socket).get("/status")
        assert len(status["device_id"]) == 64
        assert stat.S_IMODE(d.socket.stat().st_mode) == 0o660
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert not d.socket.exists(), "a clean stop removes the socket"


def test_second_daemon_on_same_state_dir_refuses(daemon: DaemonProcess) -> None:
    second = subprocess.run(
        [SYNCD, "run", "--config", str(daemon.config_path)], capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 1
    assert "in use by another syncd" in second.stderr
    assert daemon.status()["device_id"] == daemon.ready["device_id"], "the first daemon is unharmed"


def test_restart_after_kill_over_stale_socket(daemon: DaemonProcess) -> None:
    device_id = daemon.ready["device_id"]
    daemon.kill()
    assert daemon.socket.exists(), "kill -9 leaves the socket file behind"
    daemon.start()
    assert daemon.status()["device_id"] == device_id


def test_each_start_takes_a_fresh_peer_id(daemon: DaemonProcess) -> None:
    def peer_id() -> str:
        with sqlite3.connect(daemon.state_dir / "syncd.sqlite3") as conn:
            return str(conn.execute("SELECT value FROM meta WHERE key = 'peer_id'").fetchone()[0])

    first = peer_id()
    daemon.stop()
    daemon.start()
    assert peer_id() != first


def test_state_files_are_private(daemon: DaemonProcess) -> None:
    key = daemon.state_dir / "device.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.state_dir.stat().st_mode) & 0o077 == 0
    assert os.path.getsize(key) > 0
