"""Every single-device Kolibri scenario replayed against a real daemon over its socket:
same statuses, same response fields, same rows (SPEC §5; corpus README)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.corpus_replay import replay_scenario
from tests.daemon_harness import DaemonProcess

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
SINGLE_DEVICE = sorted(p for p in CORPUS.glob("*.json") if not p.name.startswith("two_device"))


@pytest.mark.parametrize("path", SINGLE_DEVICE, ids=lambda p: p.stem)
def test_scenario_on_real_daemon(daemon_factory: Any, path: Path) -> None:
    scenario = json.loads(path.read_text())
    daemon: DaemonProcess = daemon_factory()

    def send(method: str, target: str, payload: Any, at: str, user: str | None) -> tuple[int, Any]:
        return daemon.http.json(method, target, payload, user=user, at=at)

    def read_rows(model: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = daemon.http.get(f"/api/logger/{urllib.parse.quote(model)}/")
        return rows

    replay_scenario(scenario, send, read_rows)
