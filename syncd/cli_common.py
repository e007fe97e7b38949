"""What every ``syncd`` command shares: exit statuses, the common options, ``call``
(find the daemon, run one client call, turn failures into messages and exit statuses)
and ``Progress`` (a progress bar on stderr for long work).

Exit status (DESIGN §9)::

    0  ok
    1  failure (the daemon refused or failed the request, the connection broke)
    2  usage or config error
    3  daemon not running (no socket, or nothing listening on it)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click

from syncd.client import ApiError, ClientError, DaemonNotRunning, SyncdClient, locate_socket
from syncd.errors import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

T = TypeVar("T")


class Progress:
    """A progress bar on stderr for people, opened at the first (done, total) report
    (click draws it only on a terminal; elsewhere it writes the label once)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: Any = None
        self._done = 0

    def update(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def fail(message: str, status: int) -> NoReturn:
    click.echo(f"syncd: {message}", err=True)
    raise SystemExit(status)


def config_error(exc: ConfigError) -> NoReturn:
    fail(f"config error: {exc}", EXIT_USAGE)


def call(
    socket: str | None,
    config_path: str | None,
    action: Callable[[SyncdClient], Awaitable[T]],
    *,
    timeout: float = 30,
) -> T:
    """Find the daemon, run one client call, turn failures into exit statuses."""

    async def call() -> T:
        async with SyncdClient(path, timeout=timeout) as client:
            return await action(client)

    try:
        path = locate_socket(socket, config_path=config_path)
        return asyncio.run(call())
    except ConfigError as exc:
        config_error(exc)
    except DaemonNotRunning as exc:
        fail(f"{exc} (start it with `syncd run`)", EXIT_NOT_RUNNING)
    except ApiError as exc:
        fail(f"the daemon refused: {exc}", EXIT_FAILURE)
    except ClientError as exc:
        fail(str(exc), EXIT_FAILURE)


socket_option = click.option(
    "--socket",
    type=click.Path(dir_okay=False),
    help="The daemon's API socket (default: $SYNCD_SOCKET, the config, "
    "/run/syncd/api.sock, ./.syncd/api.sock).",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file (default: $SYNCD_CONFIG, else the built-in defaults).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
