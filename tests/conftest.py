"""Shared fixtures: real daemons in short temporary directories."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from tests.daemon_harness import DaemonProcess, short_tempdir


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., DaemonProcess]]:
    """Start real daemons; every one is killed and its directory removed afterwards."""
    made: list[DaemonProcess] = []

    def make(config: str = "", *, start: bool = True, **kwargs: object) -> DaemonProcess:
        daemon = DaemonProcess(short_tempdir(), config=config, **kwargs)  # type: ignore[arg-type]
        made.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in made:
        daemon.cleanup()


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    return daemon_factory()
