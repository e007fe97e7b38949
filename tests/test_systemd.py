"""syncd.systemd: sd_notify datagrams received on a real AF_UNIX socket."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd import systemd


@pytest.fixture
def receiver() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a short path, as systemd's notify socket is."""
    directory = tempfile.mkdtemp(prefix="syncd-", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)  # a bound on the wait, not a sleep: recv returns on arrival
    yield sock, path
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def test_path_socket_gets_each_message(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    env = {"NOTIFY_SOCKET": path}
    assert systemd.ready(env=env)
    assert sock.recv(4096) == b"READY=1"
    assert systemd.status("syncing with 2 peers\nsecond line", env=env)
    assert sock.recv(4096) == b"STATUS=syncing with 2 peers second line"
    assert systemd.watchdog(env=env)
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert systemd.stopping(env=env)
    assert sock.recv(4096) == b"STOPPING=1"
    assert systemd.notify("EXTEND_TIMEOUT_USEC=5000000", env=env)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=5000000"


def test_abstract_namespace_socket() -> None:
    name = f"syncd-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert systemd.ready(env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_default_env_is_os_environ(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert systemd.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"


@pytest.mark.parametrize("address", [None, "", "vsock:2:1234", "relative/path"])
def test_no_op_without_a_usable_notify_socket(address: str | None) -> None:
    env = {} if address is None else {"NOTIFY_SOCKET": address}
    assert systemd.ready(env=env) is False
    assert systemd.status("x", env=env) is False
    assert systemd.watchdog(env=env) is False
    assert systemd.stopping(env=env) is False


def test_unreachable_socket_returns_false(tmp_path: Path) -> None:
    assert systemd.ready(env={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "abc"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert systemd.watchdog_interval(env=env) == expected
