"""Helpers shared by the benchmark scripts: a daemon process, RSS, percentiles."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

SYNCD = str(Path(sys.executable).with_name("syncd"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_mb(pid: int, *, children: bool = True) -> float:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    if children:
        total += sum(c.memory_info().rss for c in proc.children(recursive=True))
    return total / 1e6


class Daemon:
    """A syncd daemon in a fresh short temp dir (or on a given state dir)."""

    def __init__(self, *, extra_config: str = "", root: Path | None = None) -> None:
        self.owns_root = root is None  # a temp dir of ours: removed by stop() (SYNCD_BENCH_KEEP=1 keeps it)
        self.root = root or Path(tempfile.mkdtemp(prefix="sdb", dir="/tmp"))
        self.socket = self.root / "api.sock"
        self.config = self.root / "syncd.toml"
        self.config.write_text(
            '[device]\nname = "bench"\nstate_dir = "state"\n[api]\nsocket = "api.sock"\n'
            "accept_event_time = true\n[sync]\nport = 0\n[discovery]\nenabled = false\n" + extra_config
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}

    def start(self) -> "Daemon":
        self.proc = subprocess.Popen(
            [SYNCD, "run", "--config", str(self.config), "--print-ready"],
            stdout=subprocess.PIPE, stderr=open(self.root / "daemon.log", "ab"),
            env={**os.environ, "SYNCD_LOG_LEVEL": "WARNING"},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        line = b""
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("daemon failed to start: " + (self.root / "daemon.log").read_text())
            if select.select([self.proc.stdout], [], [], 1)[0]:
                line += os.read(self.proc.stdout.fileno(), 4096)
        self.ready = json.loads(line)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        if self.owns_root and not os.environ.get("SYNCD_BENCH_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)  # a school's state is hundreds of MB


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
