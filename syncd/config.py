"""Settings: one TOML file (tomllib) -> frozen, validated dataclasses.

Where the settings come from (DESIGN §8 "Finding the daemon"), highest first:

1. the ``path`` given to :func:`load` (``syncd run --config PATH``);
2. ``$SYNCD_CONFIG``;
3. no file: the defaults below.

``$SYNCD_SOCKET`` overrides ``api.socket`` in every case. A path key the file does not
set (and every path key without a file) falls back to the directories systemd hands the
unit: ``state_dir = $STATE_DIRECTORY``, ``socket = $RUNTIME_DIRECTORY/api.sock``; without
them ``state_dir = ./.syncd`` (relative to the working directory) and the socket lives
in the state dir. Relative paths in a file resolve against the file's directory.

The defaults live in one place, the dataclass fields, each with the check its TOML value
must pass (``metadata["check"]``); ``config.example.toml`` documents the same values and a
test keeps the two in step. Bad input is rejected, never clamped: an unknown section or
key, a wrong type (a boolean is not an integer) or a bad value raises
:class:`~syncd.errors.ConfigError` naming the file, the dotted key and what was expected.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from socket import gethostname
from typing import Any, Literal

from syncd.errors import ConfigError

__all__ = [
    "ApiSettings",
    "DeviceSettings",
    "DiscoverySettings",
    "Settings",
    "StoreSettings",
    "SyncSettings",
    "load",
    "SOCKET_NAME",
    "DEFAULT_STATE_DIR",
    "MAX_SOCKET_PATH_BYTES",
]

SOCKET_NAME = "api.sock"
DEFAULT_STATE_DIR = ".syncd"
# sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107

# Labels used as the "file" of a ConfigError that does not come from a file.
_ENV_SOCKET = "$SYNCD_SOCKET"
_NO_FILE = "(built-in defaults)"


class _Invalid(Exception):
    """A value failed its check; ``expected`` says what would have passed."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


Check = Callable[[object], Any]


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the float {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise _Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _int(lo: int, hi: int | None = None) -> Check:
    span = f"from {lo} to {hi}" if hi is not None else f">= {lo}"

    def check(value: object) -> int:
        if type(value) is not int:
            raise _Invalid(f"expected an integer {span}, got {_describe(value)}")
        if value < lo or (hi is not None and value > hi):
            raise _Invalid(f"expected an integer {span}, got {value}")
        return value

    return check


def _positive_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"expected a number of seconds > 0, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise _Invalid(f"expected a finite number of seconds > 0, got {value!r}")
    return number


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _name(value: object) -> str:
    expected = "expected a non-empty name of at most 64 characters without control characters"
    if not isinstance(value, str):
        raise _Invalid(f"{expected}, got {_describe(value)}")
    if not value.strip() or len(value) > 64 or _CONTROL.search(value):
        raise _Invalid(f"{expected}, got {value!r}")
    return value


def _path(value: object) -> Path:
    if not isinstance(value, str):
        raise _Invalid(f"expected a path (a string), got {_describe(value)}")
    if not value or "\x00" in value:
        raise _Invalid(f"expected a non-empty path without NUL characters, got {value!r}")
    return Path(os.path.expanduser(value))


def _group(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a group name (a string), got {_describe(value)}")
    if not value or value != value.strip() or _CONTROL.search(value) or ":" in value:
        raise _Invalid(f"expected a group name, got {value!r}")
    return value


_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _is_hostname(host: str) -> bool:
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        return False
    return not labels[-1].isdigit()  # "1.2.3" is neither an address nor a name


def _peer(value: object) -> str:
    expected = 'expected "host:port" (a name, an IPv4 address or [IPv6], port 1-65535)'
    if not isinstance(value, str):
        raise _Invalid(f"{expected}, got {_describe(value)}")
    host, sep, port = value.rpartition(":")
    ok = bool(sep) and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535
    if ok and host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            ok = False
    elif ok:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            ok = _is_hostname(host)
    if not ok:
        raise _Invalid(f"{expected}, got {value!r}")
    return value


def _array(item: Check, what: str) -> Check:
    def check(value: object) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"expected an array of {what}, got {_describe(value)}")
        out: list[Any] = []
        for index, element in enumerate(value):
            try:
                checked = item(element)
            except _Invalid as exc:
                raise _Invalid(f"item {index}: {exc.expected}") from None
            if checked not in out:
                out.append(checked)
        return tuple(out)

    return check


def _learner_id(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a learner id (a UUID string), got {_describe(value)}")
    try:
        return uuid.UUID(value.strip()).hex
    except ValueError:
        raise _Invalid(f"expected a learner id (a UUID), got {value!r}") from None


_learner_ids = _array(_learner_id, "learner ids (UUIDs)")


def _ipv4(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected an IPv4 address, got {_describe(value)}")
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise _Invalid(f"expected an IPv4 address, got {value!r}") from None


def _subscription(value: object) -> Literal["all"] | tuple[str, ...]:
    if value == "all":
        return "all"
    if isinstance(value, list):
        try:
            ids: tuple[str, ...] = _learner_ids(value)
        except _Invalid as exc:
            raise _Invalid(f'expected "all" or an array of learner ids: {exc.expected}') from None
        return ids
    raise _Invalid(f'expected "all" or an array of learner ids (UUIDs), got {_describe(value)}')


def _check(check: Check, *, path: bool = False) -> dict[str, Any]:
    return {"check": check, "path": path}


# --- the settings ----------------------------------------------------------------------
# Field defaults are THE defaults (config.example.toml repeats them for people).


@dataclass(frozen=True, kw_only=True)
class DeviceSettings:
    """``[device]``: who this daemon is and where it keeps its state."""

    name: str = field(default_factory=gethostname, metadata=_check(_name))
    state_dir: Path = field(metadata=_check(_path, path=True))


@dataclass(frozen=True)
class ApiSettings:
    """``[api]``: the local Unix-socket API (DESIGN §8)."""

    socket: Path = field(metadata=_check(_path, path=True))
    accept_event_time: bool = field(default=False, metadata=_check(_bool))
    max_body_bytes: int = field(default=1048576, metadata=_check(_int(1024)))
    group: str | None = field(default=None, metadata=_check(_group))


@dataclass(frozen=True)
class SyncSettings:
    """``[sync]``: the peer port, static peers, schedule and partial replication."""

    port: int = field(default=7737, metadata=_check(_int(0, 65535)))
    peers: tuple[str, ...] = field(default=(), metadata=_check(_array(_peer, '"host:port"')))
    interval: float = field(default=60.0, metadata=_check(_positive_float))
    subscription: Literal["all"] | tuple[str, ...] = field(
        default="all", metadata=_check(_subscription)
    )
    max_sessions: int = field(default=4, metadata=_check(_int(1)))


@dataclass(frozen=True)
class DiscoverySettings:
    """``[discovery]``: mDNS advertise and browse."""

    enabled: bool = field(default=True, metadata=_check(_bool))
    interfaces: tuple[str, ...] = field(default=(), metadata=_check(_array(_ipv4, "IPv4 addresses")))


@dataclass(frozen=True)
class StoreSettings:
    """``[store]``: tuning of the storage engine."""

    cache_documents: int = field(default=64, metadata=_check(_int(1)))
    cache_decoded: int = field(default=8, metadata=_check(_int(1)))
    compact_after: int = field(default=256, metadata=_check(_int(1)))
    group_commit: bool = field(default=True, metadata=_check(_bool))
    rebuild_workers: int = field(default=2, metadata=_check(_int(0, 64)))
    import_workers: int = field(default=1, metadata=_check(_int(0, 64)))
    import_workers_above: int = field(default=24 * 2**20, metadata=_check(_int(0)))


@dataclass(frozen=True)
class Settings:
    """Everything the daemon is configured with; ``source`` is the file read, if any."""

    device: DeviceSettings
    api: ApiSettings
    sync: SyncSettings = field(default_factory=SyncSettings)
    discovery: DiscoverySettings = field(default_factory=DiscoverySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    source: Path | None = None


_SECTIONS: dict[str, type[Any]] = {
    "device": DeviceSettings,
    "api": ApiSettings,
    "sync": SyncSettings,
    "discovery": DiscoverySettings,
    "store": StoreSettings,
}


# --- loading ---------------------------------------------------------------------------


def load(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] = os.environ,
) -> Settings:
    """Read, validate and resolve the settings; raise ``ConfigError`` on any problem.

    ``path`` wins over ``$SYNCD_CONFIG``; with neither, the built-in defaults apply.
    """
    if path is None and env.get("SYNCD_CONFIG"):
        path = env["SYNCD_CONFIG"]
    source = Path(os.path.abspath(path)) if path is not None else None
    label = str(source) if source is not None else _NO_FILE
    data = _read(source) if source is not None else {}
    base = source.parent if source is not None else Path.cwd()

    for name, table in data.items():
        if name not in _SECTIONS:
            raise ConfigError(label, name, f"unknown section, expected one of: {', '.join(_SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(label, name, f"expected a table [{name}], got {_describe(table)}")

    values = {name: _section(label, name, data.get(name, {}), base) for name in _SECTIONS}
    device, api = values["device"], values["api"]

    # Which "file" to blame for a socket path that is too long.
    socket_label = label if "socket" in api or "state_dir" in device else _NO_FILE
    if "state_dir" not in device:
        state = env.get("STATE_DIRECTORY", "").split(":")[0]
        device["state_dir"] = Path(state) if state else Path.cwd() / DEFAULT_STATE_DIR
    if env.get("SYNCD_SOCKET"):
        api["socket"] = Path(os.path.abspath(os.path.expanduser(env["SYNCD_SOCKET"])))
        socket_label = _ENV_SOCKET
    elif "socket" not in api:
        runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
        api["socket"] = (Path(runtime) if runtime else device["state_dir"]) / SOCKET_NAME
    size = len(os.fsencode(api["socket"]))
    if size > MAX_SOCKET_PATH_BYTES:
        raise ConfigError(
            socket_label,
            "api.socket",
            f"expected a socket path of at most {MAX_SOCKET_PATH_BYTES} bytes, "
            f"got {size} bytes ({api['socket']})",
        )

    return Settings(
        device=DeviceSettings(**device),
        api=ApiSettings(**api),
        sync=SyncSettings(**values["sync"]),
        discovery=DiscoverySettings(**values["discovery"]),
        store=StoreSettings(**values["store"]),
        source=source,
    )


def _read(source: Path) -> dict[str, Any]:
    label = str(source)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(label, "file", f"expected a readable TOML file ({exc.strerror})") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(label, f"line {line}", "expected UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\(at line (\d+), column (\d+)\)$", message)
        if where is None:  # "(at end of document)": the error is on the last line
            last = len(raw.splitlines()) or 1
            key = f"line {last}, end of file"
            message = re.sub(r"\s*\(at end of document\)$", "", message)
        else:
            key = f"line {where.group(1)}, column {where.group(2)}"
            message = message[: where.start()].rstrip()
        raise ConfigError(label, key, f"expected valid TOML: {message}") from None


def _section(label: str, section: str, table: dict[str, Any], base: Path) -> dict[str, Any]:
    """Check every key of one table; return the values given (defaults are left out)."""
    known = {f.name: f for f in fields(_SECTIONS[section])}
    out: dict[str, Any] = {}
    for key, value in table.items():
        spec = known.get(key)
        if spec is None:
            raise ConfigError(
                label, f"{section}.{key}", f"unknown key, expected one of: {', '.join(known)}"
            )
        try:
            checked = spec.metadata["check"](value)
        except _Invalid as exc:
            raise ConfigError(label, f"{section}.{key}", exc.expected) from None
        if spec.metadata["path"]:
            checked = Path(os.path.normpath(base / checked))
        out[key] = checked
    return out
