"""`syncd facility ...` against real admin apps on Unix sockets (each device on its own
thread and loop), joins over loopback TCP: the CLI → API → FacilityService → store path."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from syncd.api.facility import FacilityService
from syncd.cli_facility import facility
from syncd.client import SyncdClient
from syncd.sync import membership as m
from tests.daemon_harness import short_tempdir
from tests.membership.helpers import DeviceThread, bound_port, make_service, peer_app


@pytest.fixture
def devices() -> Iterator[list[DeviceThread]]:
    made: list[DeviceThread] = []
    base = short_tempdir("fac")
    for name in "abcd":
        made.append(DeviceThread(base / name).start())
    yield made
    for device in made:
        device.stop()
    shutil.rmtree(base, ignore_errors=True)


def cli(device: DeviceThread, *args: str) -> Result:
    result = CliRunner().invoke(facility, [args[0], "--socket", str(device.socket_path), *args[1:]])
    return result


def ok_json(device: DeviceThread, *args: str) -> Any:
    result = cli(device, *args, "--json")
    assert result.exit_code == 0, result.output
    value = json.loads(result.output)
    assert isinstance(value, dict)
    return value


def test_create_invite_join_show_revoke(devices: list[DeviceThread], tmp_path: Path) -> None:
    a, b, c, d = devices
    created = ok_json(a, "create", "Kibera Primary")
    assert set(created) == {"facility_id", "join_code", "expires_at"}
    assert re.fullmatch(r"[0-9]{10}", str(created["join_code"]))
    assert str(created["expires_at"]).endswith("+00:00")

    again = cli(a, "create", "Another")
    assert again.exit_code == 1 and "already_member" in again.output

    # B joins with the first code, naming A's peer port
    joined = ok_json(b, "join", str(created["join_code"]), "--peer", f"127.0.0.1:{a.port}")
    assert joined["facility_id"] == created["facility_id"] and joined["via"] == f"127.0.0.1:{a.port}"
    assert ok_json(b, "show")["facility"] == ok_json(a, "show")["facility"]

    # C: a wrong code first (fails, one try spent), then the right one
    invite = ok_json(a, "invite")
    code = str(invite["join_code"])
    wrong = code[:2] + ("0" if code[2] != "0" else "1") + code[3:]
    failed = cli(c, "join", wrong, "--peer", f"127.0.0.1:{a.port}")
    assert failed.exit_code == 1 and "wrong_code" in failed.output
    assert ok_json(a, "show")["invites"] == [{"code_id": code[:2], "expires_at": invite["expires_at"], "tries_left": 4}]
    human = cli(c, "join", f"{code[:2]}-{code[2:6]}-{code[6:]}", "--peer", f"127.0.0.1:{a.port}")
    assert human.exit_code == 0 and "Joined facility 'Kibera Primary'" in human.output

    # D belongs to another facility: joining A's is refused and D stays where it was
    other = ok_json(d, "create", "Other School")
    code = str(ok_json(a, "invite")["join_code"])
    refused = cli(d, "join", code, "--peer", f"127.0.0.1:{a.port}")
    assert refused.exit_code == 1 and "already_member" in refused.output and "at most one facility" in refused.output
    assert ok_json(d, "show")["facility"]["facility_id"] == other["facility_id"]

    # show never tells the secret, in either form
    assert a.service.current is not None
    secret = a.service.current.secret
    for args in (("show",), ("show", "--json")):
        text = cli(a, *args).output
        assert secret.hex() not in text and "secret" not in text
    shown = ok_json(a, "show")
    assert [dev["this_device"] for dev in shown["devices"]] == [True]

    # revoke B
    revoked = ok_json(a, "revoke", b.service.device_id)
    assert revoked["already"] is False and revoked["by_device"] == a.service.device_id
    assert ok_json(a, "revoke", b.service.device_id)["already"] is True
    rows = {dev["device_id"]: dev for dev in ok_json(a, "show")["devices"]}
    assert rows[b.service.device_id]["revoked"] is True
    assert "yes" in cli(a, "show").output
    self_revoke = cli(a, "revoke", a.service.device_id)
    assert self_revoke.exit_code == 1 and "itself" in self_revoke.output


def test_join_file_round_trip(devices: list[DeviceThread], tmp_path: Path) -> None:
    a, b, *_ = devices
    created = ok_json(a, "create", "Offline School")
    path = tmp_path / "school.join"
    written = cli(a, "invite", "--file", str(path))
    assert written.exit_code == 0 and path.stat().st_mode & 0o077 == 0
    assert path.read_text().startswith(m.JOIN_FILE_PREFIX)
    joined = ok_json(b, "join", "--file", str(path))
    assert joined["facility_id"] == created["facility_id"] and joined["via"] == "join_file"
    path.write_text(path.read_text()[:-5] + "AAAA\n")
    c = devices[2]
    garbled = cli(c, "join", "--file", str(path))
    assert garbled.exit_code == 1 and "invalid_join_file" in garbled.output


def test_exit_codes(devices: list[DeviceThread], tmp_path: Path) -> None:
    a = devices[0]
    assert cli(a, "join").exit_code == 2                              # neither code nor file
    assert cli(a, "join", "1234567890", "--file", "x").exit_code == 2  # both
    assert cli(a, "join", "1234567890", "--peer", "nohost").exit_code == 2
    bad = cli(a, "join", "12345", "--peer", "127.0.0.1:1")
    assert bad.exit_code == 1 and "invalid_code" in bad.output
    nobody = cli(a, "join", "1234567890")
    assert nobody.exit_code == 1 and "no_inviter" in nobody.output
    assert cli(a, "invite").exit_code == 1                           # no facility yet
    rotate = cli(a, "rotate")
    assert rotate.exit_code == 1 and "not built yet" in rotate.output
    missing = CliRunner().invoke(facility, ["show", "--socket", str(tmp_path / "none.sock")])
    assert missing.exit_code == 3


def test_admin_api_validates_bodies(devices: list[DeviceThread]) -> None:
    a = devices[0]

    async def post(body: object) -> tuple[int, object]:
        async with SyncdClient(a.socket_path) as client:
            return await client.request("POST", "/facility", json=body)

    for body, code in [
        ({"action": "dance"}, "unknown_action"),
        ({"action": "create"}, "invalid_field"),
        ({"action": "create", "name": "X", "extra": 1}, "invalid_field"),
        ({"action": "create", "name": 5}, "invalid_field"),
        ({"action": "create", "name": " "}, "invalid_facility"),
        ({"action": "join", "code": "1234567890", "peer": "nohostport"}, "invalid_peer"),
        ({"action": "invite", "file": "yes"}, "invalid_field"),
        ([1], "invalid_body"),
    ]:
        status, answer = a.run(post(body))
        assert status == 400 and isinstance(answer, dict) and answer["error"] == code, (body, answer)


async def test_join_asks_find_inviters_and_calls_on_change(tmp_path: Path) -> None:
    from aiohttp import web

    inviter, _ = make_service(tmp_path / "inviter")
    await inviter.load()
    code = (await inviter.create("Found By mDNS"))["join_code"]
    runner = web.AppRunner(peer_app(inviter))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = bound_port(site)
    changes: list[m.Facility] = []
    asked: list[int] = []

    async def find_inviters() -> list[tuple[str, int]]:
        asked.append(1)
        return [("127.0.0.1", 1), ("127.0.0.1", port)]  # the first is not listening

    async def on_change(facility: m.Facility) -> None:
        changes.append(facility)

    joiner: FacilityService
    joiner, _ = make_service(tmp_path / "joiner", find_inviters=find_inviters, on_change=on_change)
    await joiner.load()
    try:
        answer = await joiner.join(code)
    finally:
        await runner.cleanup()
    assert asked == [1] and answer["via"] == f"127.0.0.1:{port}"
    assert changes == [inviter.current] and joiner.current == inviter.current
    assert inviter.current is not None
    assert (await joiner.show())["facility"]["facility_id"] == inviter.current.facility_id
