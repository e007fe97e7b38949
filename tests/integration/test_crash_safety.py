"""A write acknowledged to a caller survives ``kill -9``: real daemon, real SIGKILL at
random moments, load from another process."""

from __future__ import annotations

import collections
import random
import subprocess
import sys
from pathlib import Path

from tests.daemon_harness import DaemonProcess, wait_until

WRITER = Path(__file__).with_name("crash_writer.py")


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.endswith(b"\n"))


def test_acknowledged_writes_survive_sigkill(daemon: DaemonProcess) -> None:
    rng = random.Random()
    acks, stop = daemon.root / "acks.log", daemon.root / "stop"
    writer = subprocess.Popen([sys.executable, str(WRITER), str(daemon.socket), str(acks), str(stop), "6"])
    try:
        for _ in range(5):
            # A random moment: after a random number of further acknowledged writes.
            target = count_lines(acks) + rng.randint(30, 300)
            wait_until(lambda: count_lines(acks) >= target, 120, f"{target} acknowledged writes")
            daemon.kill()
            daemon.start()
        target = count_lines(acks) + 50
        wait_until(lambda: count_lines(acks) >= target, 120, "writes after the last restart")
    finally:
        stop.touch()
        writer.wait(60)

    sessions: set[str] = set()
    updates: collections.Counter[str] = collections.Counter()
    for line in acks.read_text().splitlines():
        kind, _user, session = line.split()
        (sessions.add(session) if kind == "S" else updates.update([session]))
    rows = {row["id"]: row for row in daemon.http.get("/api/logger/contentsessionlog/")}
    missing = sessions - rows.keys()
    assert not missing, f"acknowledged session starts lost: {sorted(missing)[:5]}"
    short = {s: (rows[s]["time_spent"], n) for s, n in updates.items() if rows[s]["time_spent"] < n}
    assert not short, f"acknowledged updates lost (time_spent, acknowledged): {short}"
    assert sum(updates.values()) > 200
    # The summaries are the folds of what survived.
    per_user: collections.Counter[str] = collections.Counter()
    for row in rows.values():
        per_user[row["user_id"]] += row["time_spent"]
    summaries = daemon.http.get("/api/logger/contentsummarylog/")
    assert {r["user_id"]: r["time_spent"] for r in summaries} == dict(per_user)
