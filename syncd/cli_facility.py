"""``syncd facility``: create, invite, join, show, revoke, rotate (DESIGN §7, §9).

Each command is options + one ``POST``/``GET /facility`` through ``SyncdClient`` +
rendering. Exit status as every syncd command: 0 ok, 1 failure (the daemon refused, a
wrong code, no inviter found), 2 usage or config error, 3 daemon not running.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from syncd import render
from syncd.cli_common import EXIT_FAILURE, call, config_option, fail, json_option, socket_option

__all__ = ["facility"]

def _request(socket: str | None, config_path: str | None, method: str, body: dict[str, Any] | None = None) -> Any:
    """One call to ``/facility``; failures become messages and exit statuses."""
    status, answer = call(socket, config_path, lambda c: c.request(method, "/facility", json=body), timeout=120)
    if not 200 <= status < 300:
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            detail = answer.get("detail") or ""
            fail(f"{detail} ({answer['error']})" if detail else answer["error"], EXIT_FAILURE)
        fail(f"the daemon answered HTTP {status}: {answer}", EXIT_FAILURE)
    if not isinstance(answer, dict):
        fail(f"expected a JSON object from the daemon, got {type(answer).__name__}", EXIT_FAILURE)
    return answer


def _echo(text: str) -> None:
    click.echo(text, nl=False)


@click.group()
def facility() -> None:
    """Create, join and manage this device's facility (its school).

    A device belongs to at most one facility. Members share a secret; new devices get it
    by a one-time join code (`invite` on a member, `join CODE` on the new device) or by
    a join file for offline joins.
    """


@facility.command()
@click.argument("name")
@json_option
@socket_option
@config_option
def create(name: str, as_json: bool, socket: str | None, config_path: str | None) -> None:
    """Create a facility named NAME on this device and issue its first join code."""
    answer = _request(socket, config_path, "POST", {"action": "create", "name": name})
    if as_json:
        _echo(render.json_text({key: answer[key] for key in ("facility_id", "join_code", "expires_at")}))
        return
    _echo(
        f"Created facility {answer['name']!r} ({answer['facility_id']}).\n"
        + _invite_text(answer)
    )


def _invite_text(answer: dict[str, Any]) -> str:
    code = answer["join_code_display"]
    return (
        f"Join code: {code}  (valid until {answer['expires_at']}, {answer['tries']} tries)\n"
        f"On the new device run:  syncd facility join {code}\n"
    )


@facility.command()
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write a join file (offline joins) instead of issuing a code; - for stdout.",
)
@json_option
@socket_option
@config_option
def invite(path: str | None, as_json: bool, socket: str | None, config_path: str | None) -> None:
    """Issue a one-time join code (10 digits, 30 minutes, 5 tries)."""
    if path is not None:
        answer = _request(socket, config_path, "POST", {"action": "invite", "file": True})
        text = answer["join_file"] + "\n"
        if path == "-":
            _echo(text)
            return
        _write_private(Path(path), text)
        message = {"join_file": path}
        _echo(
            render.json_text(message)
            if as_json
            else f"Join file written to {path}. Whoever holds it can join this facility: "
            "keep it safe and delete it once used.\n"
        )
        return
    answer = _request(socket, config_path, "POST", {"action": "invite"})
    if as_json:
        _echo(render.json_text({key: answer[key] for key in ("join_code", "expires_at", "tries")}))
        return
    _echo(_invite_text(answer))


def _write_private(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}", EXIT_FAILURE)


@facility.command()
@click.argument("code", required=False)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Join with a join file instead of a code; - for stdin.",
)
@click.option("--peer", metavar="HOST:PORT", help="The inviting device (default: find it by mDNS or the static peers).")
@json_option
@socket_option
@config_option
def join(
    code: str | None, path: str | None, peer: str | None, as_json: bool, socket: str | None, config_path: str | None
) -> None:
    """Join the facility of the member that gave CODE (or of a join file).

    The device keeps its logs and syncs them to the facility. Refused if the device
    already belongs to another facility.
    """
    if (code is None) == (path is None):
        raise click.UsageError("give a join CODE or --file F (one of them)")
    if path is not None:
        if peer is not None:
            raise click.UsageError("--peer goes with a join code, not with --file")
        body: dict[str, Any] = {"action": "join_file", "join_file": _read_join_file(path)}
    else:
        body = {"action": "join", "code": code}
        if peer is not None:
            host, _, port = peer.rpartition(":")
            if not host or not port.isdigit():
                raise click.UsageError(f"--peer is HOST:PORT (or [IPv6]:PORT), not {peer!r}")
            body["peer"] = peer
    answer = _request(socket, config_path, "POST", body)
    if as_json:
        _echo(render.json_text(answer))
        return
    _echo(f"Joined facility {answer['name']!r} ({answer['facility_id']}) via {answer['via']}.\n")


def _read_join_file(path: str) -> str:
    try:
        text = sys.stdin.read(4096) if path == "-" else Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"cannot read the join file {path}: {exc}") from None
    return text.strip()


@facility.command()
@json_option
@socket_option
@config_option
def show(as_json: bool, socket: str | None, config_path: str | None) -> None:
    """Show the facility, the devices known in it, and live invites (never the secret)."""
    answer = _request(socket, config_path, "GET")
    if as_json:
        _echo(render.json_text(answer))
        return
    if answer.get("facility") is None:
        _echo(f"device_id  {answer['device_id']}\nThis device belongs to no facility: `syncd facility create NAME` or `syncd facility join CODE`.\n")
        return
    _echo(render.key_values({"device_id": answer["device_id"], **answer["facility"]}))
    rows = [
        {
            "device_id": row["device_id"] + (" (this device)" if row["this_device"] else ""),
            "first_seen": row["first_seen"],
            "last_seen": row["last_seen"],
            "revoked": row["revoked"],
        }
        for row in answer.get("devices", [])
    ]
    _echo("\n" + render.table(rows, ("device_id", "first_seen", "last_seen", "revoked")))
    invites = answer.get("invites", [])
    if invites:
        _echo("\n" + render.table(invites, ("code_id", "expires_at", "tries_left")))


@facility.command()
@click.argument("device")
@json_option
@socket_option
@config_option
def revoke(device: str, as_json: bool, socket: str | None, config_path: str | None) -> None:
    """Revoke DEVICE (its 64-hex device id): once the revocation has spread, every
    member refuses it. A stolen device also knows the secret: rotate (or re-create)."""
    answer = _request(socket, config_path, "POST", {"action": "revoke", "device_id": device})
    if as_json:
        _echo(render.json_text(answer))
        return
    state = "was already revoked" if answer["already"] else "is revoked"
    _echo(f"Device {answer['device_id']} {state} (at {answer['revoked_at']}).\n")


@facility.command()
@json_option
@socket_option
@config_option
def rotate(as_json: bool, socket: str | None, config_path: str | None) -> None:
    """Make a new secret for the remaining devices (not built yet)."""
    answer = _request(socket, config_path, "POST", {"action": "rotate"})
    _echo(render.json_text(answer) if as_json else render.key_values(answer))
