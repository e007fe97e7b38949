"""Real daemons as separate processes, driven over their real Unix socket.

``DaemonProcess`` writes a config, starts ``syncd run --print-ready`` and waits for its
ready line (a condition, not a sleep). ``UnixHTTP`` is a tiny synchronous HTTP client
over a Unix socket, so tests can see raw status codes and send malformed bodies.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

SYNCD = str(Path(sys.executable).with_name("syncd"))

Launcher = Callable[[Sequence[str]], list[str]]


def toml_value(value: Any) -> str:
    """A TOML literal for the few value types configs use (strings, booleans, numbers,
    arrays of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def _table(name: str, values: Mapping[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())


def short_tempdir(prefix: str = "sd") -> Path:
    """A short directory path: Unix socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def derived_digests(conn: sqlite3.Connection) -> dict[str, str]:
    """Every partition's ``derived.partition_digest`` read straight from a database file's
    tables (what GET /status reports, without the daemon's cache)."""
    from syncd.logs.records import DERIVED_MODELS
    from syncd.store.derived import partition_digest

    names = sorted({p for model in DERIVED_MODELS for (p,) in conn.execute(f"SELECT DISTINCT partition FROM {model}")})
    return {p: d for p in names if (d := partition_digest(conn, p)) is not None}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("syncd", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class UnixHTTP:
    """Synchronous HTTP over a Unix socket; one connection per request (simple, robust)."""

    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def raw(
        self, method: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request(method, target, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def json(
        self,
        method: str,
        target: str,
        payload: Any = None,
        *,
        user: str | None = None,
        at: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if user is not None:
            all_headers["X-Syncd-User"] = user
        if at is not None:
            all_headers["X-Syncd-Event-Time"] = at
        body = None if payload is None else json.dumps(payload).encode()
        status, _, data = self.raw(method, target, body, all_headers)
        return status, (json.loads(data) if data else None)

    def get(self, target: str) -> Any:
        status, body = self.json("GET", target)
        if status != 200:
            raise AssertionError(f"GET {target} -> {status} {body}")
        return body

    def session(self, start: Mapping[str, Any], update: Mapping[str, Any], *, user: str,
                start_at: str, update_at: str) -> str:
        """Start a content session and update it once (both must answer 200); its id."""
        status, started = self.json("POST", "/api/logger/trackprogress/", start, user=user, at=start_at)
        assert status == 200, started
        session_id = str(started["session_id"])
        status, updated = self.json("PUT", f"/api/logger/trackprogress/{session_id}/", update, user=user, at=update_at)
        assert status == 200, updated
        return session_id


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``condition()`` until it is truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # wait-ok: polling a condition with a deadline


class DaemonProcess:
    """One ``syncd run`` process with its own state dir and socket.

    ``sync`` and ``discovery`` override keys of those tables (defaults: ``[sync] port =
    0``, ``[discovery] enabled = false``); ``config`` is appended verbatim after them, so
    it may only add other tables. ``launcher`` wraps the command line, e.g.
    ``Node.command`` of ``tests.netns`` to run the daemon inside a network namespace
    (``ip netns exec`` execs it: the process is the daemon itself). The Unix socket is a
    file, so it answers from any namespace.
    """

    def __init__(
        self,
        root: Path,
        *,
        config: str = "",
        name: str = "d1",
        env: Mapping[str, str] | None = None,
        sync: Mapping[str, Any] | None = None,
        discovery: Mapping[str, Any] | None = None,
        launcher: Launcher | None = None,
    ):
        self.root = root
        self.name = name
        self.state_dir = root / "state"
        self.socket = root / "api.sock"
        self.config_path = root / "syncd.toml"
        self.log_path = root / "daemon.log"
        self.env = {**os.environ, **(env or {})}
        self.launcher = launcher
        self.config_path.write_text(
            f'[device]\nname = "{name}"\nstate_dir = "state"\n'
            f'[api]\nsocket = "api.sock"\naccept_event_time = true\n'
            + _table("sync", {"port": 0, **(sync or {})})
            + _table("discovery", {"enabled": False, **(discovery or {})})
            + config
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}
        self.http = UnixHTTP(self.socket)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 60.0) -> "DaemonProcess":
        log = open(self.log_path, "ab")
        command = [SYNCD, "run", "--config", str(self.config_path), "--print-ready"]
        self.proc = subprocess.Popen(
            self.launcher(command) if self.launcher is not None else command,
            stdout=subprocess.PIPE,
            stderr=log,
            env=self.env,
        )
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                self.kill()
                raise RuntimeError(f"daemon did not become ready; log:\n{self.log_text()}")
            readable, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if readable:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                line += chunk
        self.ready = json.loads(line.decode())
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> Any:
        return self.http.get("/status")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL, as a power cut would leave it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(30)
            self.proc = None

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
