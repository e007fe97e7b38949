"""The ``syncd`` command: each command is options + one SyncdClient call + rendering.

Exit status (DESIGN §9)::

    0  ok
    1  failure (the daemon refused or failed the request, the connection broke)
    2  usage or config error
    3  daemon not running (no socket, or nothing listening on it)

Every command but ``run`` finds the daemon's socket with ``client.locate_socket``:
``--socket``, ``$SYNCD_SOCKET``, the config's ``api.socket`` (``--config`` or
``$SYNCD_CONFIG``), then the first of ``/run/syncd/api.sock`` and ``./.syncd/api.sock``
that exists.
"""

from __future__ import annotations

from typing import Any

import click

from syncd import __version__, config, render
from syncd.cli_common import (
    EXIT_FAILURE,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_USAGE,
    Progress,
    call,
    config_error,
    config_option,
    json_option,
    socket_option,
)
from syncd.cli_facility import facility
from syncd.errors import ConfigError

__all__ = ["main", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_NOT_RUNNING"]

# `syncd logs <name>` -> (API model, columns shown to people, what --content filters on)
LOG_VIEWS: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "sessions": (
        "contentsessionlog",
        ("start_timestamp", "user_id", "content_id", "kind", "progress", "time_spent"),
        "content_id",
    ),
    "summaries": (
        "contentsummarylog",
        ("user_id", "content_id", "kind", "progress", "time_spent", "completion_timestamp"),
        "content_id",
    ),
    "mastery": (
        "masterylog",
        ("start_timestamp", "user_id", "summarylog_id", "mastery_level", "complete", "time_spent"),
        "content_id",
    ),
    "attempts": (
        "attemptlog",
        ("start_timestamp", "user_id", "item", "correct", "complete", "hinted", "time_spent"),
        "content_id",
    ),
    "usersessions": (
        "usersessionlog",
        ("start_timestamp", "user_id", "last_interaction_timestamp", "device_info"),
        None,
    ),
    "exams": (
        "examlog",
        ("user_id", "exam_id", "closed", "completion_timestamp"),
        "exam_id",
    ),
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syncd")
def main() -> None:
    """syncd keeps learner activity logs in step between the devices of a school.

    Exit status: 0 ok, 1 failure, 2 usage or config error, 3 daemon not running.
    """


@main.command()
@config_option
@click.option(
    "--print-ready",
    is_flag=True,
    help="Print one JSON line {socket, sync_port, device_id} once the API answers.",
)
def run(config_path: str | None, print_ready: bool) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    try:
        settings = config.load(config_path)
    except ConfigError as exc:
        config_error(exc)
    from syncd import daemon  # the daemon's dependencies load only for `run`

    raise SystemExit(daemon.run(settings, print_ready=print_ready))


@main.command()
@json_option
@socket_option
@config_option
def status(as_json: bool, socket: str | None, config_path: str | None) -> None:
    """Show the daemon's device, facility, sync port and store figures."""
    answer = call(socket, config_path, lambda client: client.status())
    click.echo(render.json_text(answer) if as_json else render.key_values(answer), nl=False)


@main.command()
@click.argument("kind", type=click.Choice(list(LOG_VIEWS)))
@click.option("--user", help="Only this learner (a UUID).")
@click.option("--content", help="Only this content item (exams: this exam id).")
@json_option
@socket_option
@config_option
def logs(
    kind: str,
    user: str | None,
    content: str | None,
    as_json: bool,
    socket: str | None,
    config_path: str | None,
) -> None:
    """List the logs of one kind, sorted by start time."""
    model, columns, content_filter = LOG_VIEWS[kind]
    filters: dict[str, Any] = {"user_id": user}
    if content is not None:
        if content_filter is None:
            raise click.UsageError(f"--content does not apply to {kind}")
        filters[content_filter] = content
    rows = call(socket, config_path, lambda client: client.read(model, **filters))
    click.echo(render.json_text(rows) if as_json else render.table(rows, columns), nl=False)


main.add_command(facility)


PEER_COLUMNS = ("address", "device_id", "sources", "tag", "candidate", "last_seen")
REBUILD_COLUMNS = ("partitions", "records", "rows", "seconds", "workers", "refolded_here")
SESSION_COLUMNS = ("address", "peer", "outcome", "partitions_in", "partitions_out", "records_in",
                   "bytes_in", "bytes_out", "duration", "reason")


@main.command()
@json_option
@socket_option
@config_option
def peers(as_json: bool, socket: str | None, config_path: str | None) -> None:
    """List the peers this daemon knows (mDNS and static) and their last session."""
    rows = call(socket, config_path, lambda client: client.peers())
    if as_json:
        click.echo(render.json_text(rows), nl=False)
        return
    for row in rows:
        row["sources"] = ",".join(row.get("sources") or ())
        row["device_id"] = (row.get("device_id") or "")[:12]
    click.echo(render.table(rows, PEER_COLUMNS), nl=False)


@main.command()
@click.argument("peer", required=False)
@json_option
@socket_option
@config_option
def sync(peer: str | None, as_json: bool, socket: str | None, config_path: str | None) -> None:
    """Sync now with PEER (host:port) or with every peer in reach, and wait for it."""
    answer = call(socket, config_path, lambda client: client.sync(peer), timeout=600)
    sessions = answer.get("sessions", [])
    if as_json:
        click.echo(render.json_text(answer), nl=False)
    else:
        for row in sessions:
            row["peer"] = (row.get("peer") or "")[:12]
        click.echo(render.table(sessions, SESSION_COLUMNS) if sessions else "no peer to sync with\n", nl=False)
    if any(s.get("outcome") != "ok" for s in sessions) or (peer and not sessions):
        raise SystemExit(EXIT_FAILURE)


@main.command()
@json_option
@socket_option
@config_option
def rebuild(as_json: bool, socket: str | None, config_path: str | None) -> None:
    """Refold every derived row (summaries, mastery, session views) from the raw logs and
    store the rows that differ; waits for it, showing the partitions done on stderr
    (not with --json)."""
    if as_json:
        answer = call(socket, config_path, lambda client: client.rebuild(), timeout=3600)
        click.echo(render.json_text(answer), nl=False)
        return
    bar = Progress("rebuilding partitions")
    try:
        answer = call(socket, config_path, lambda client: client.rebuild(bar.update), timeout=3600)
    finally:
        bar.close()
    click.echo(render.table([{**answer, "seconds": round(float(answer["seconds"]), 3)}], REBUILD_COLUMNS), nl=False)
