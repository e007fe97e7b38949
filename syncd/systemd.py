"""sd_notify(3) without a dependency: one datagram to ``$NOTIFY_SOCKET``.

Under a ``Type=notify`` unit systemd sets ``NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace); outside systemd every function here is a no-op returning False.
The daemon calls :func:`ready` once the API socket exists, :func:`status` with a short
human line, :func:`watchdog` at half of :func:`watchdog_interval` from the event loop
(so a stuck loop stops the pings), and :func:`stopping` when shutdown begins.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval"]


def notify(state: str, *, env: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` (newline-separated ``KEY=value`` lines) to systemd.

    True if the datagram was sent; False without ``$NOTIFY_SOCKET``, for an address
    family we do not speak (``vsock:``), or if sending failed (systemd gone): a daemon
    must not die because its supervisor cannot be told something.
    """
    address = env.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), target)
    except OSError:
        return False
    return True


def ready(*, env: Mapping[str, str] = os.environ) -> bool:
    """Start-up is finished: the API answers."""
    return notify("READY=1", env=env)


def status(text: str, *, env: Mapping[str, str] = os.environ) -> bool:
    """One line shown by ``systemctl status`` (newlines are flattened)."""
    line = " ".join(text.splitlines())
    return notify(f"STATUS={line}", env=env)


def stopping(*, env: Mapping[str, str] = os.environ) -> bool:
    """Shutdown has begun."""
    return notify("STOPPING=1", env=env)


def watchdog(*, env: Mapping[str, str] = os.environ) -> bool:
    """Keep-alive ping for ``WatchdogSec=``."""
    return notify("WATCHDOG=1", env=env)


def watchdog_interval(*, env: Mapping[str, str] = os.environ) -> float | None:
    """The watchdog timeout in seconds (ping at half of it), or None if not enabled.

    As sd_watchdog_enabled(3): ``$WATCHDOG_USEC`` must be a positive integer and, when
    ``$WATCHDOG_PID`` is set, name this process.
    """
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isascii() or not usec.isdigit() or int(usec) <= 0:
        return None
    return int(usec) / 1_000_000
