"""POST /join/v1 over real loopback HTTP(S): FacilityService's join handler on a real
SQLite store, driven by join_via."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from unittest.mock import ANY

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from syncd.api.facility import FacilityService
from syncd.sync import join as j
from syncd.sync import membership as m
from tests.membership.helpers import Clock, SqliteRunner, bound_port, make_service, peer_app


class Inviter:
    def __init__(self, service: FacilityService, store: SqliteRunner, clock: Clock, runner: web.AppRunner, port: int):
        self.service, self.store, self.clock, self.runner, self.port = service, store, clock, runner, port

    async def invite(self) -> str:
        answer = await self.service.invite()
        return str(answer["join_code"])

    def tries_left(self, code: str) -> int | None:
        row = self.store.sync(
            lambda c: c.execute("SELECT tries_left FROM invites WHERE code_id = ?", (code[:2],)).fetchone()
        )
        return None if row is None else int(row[0])


async def serve(service: FacilityService, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(peer_app(service))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    return runner, bound_port(site)


@pytest.fixture
async def inviter(tmp_path: Path) -> AsyncIterator[Inviter]:
    clock = Clock()
    service, store = make_service(tmp_path / "inviter", clock)
    await service.load()
    await service.create("Kibera Primary")
    runner, port = await serve(service)
    yield Inviter(service, store, clock, runner, port)
    await runner.cleanup()


async def test_right_code_joins(inviter: Inviter) -> None:
    code = await inviter.invite()
    facility = await j.join_via("127.0.0.1", inviter.port, m.format_code(code), None)
    assert facility == inviter.service.current
    assert inviter.tries_left(code) is None  # one-time: gone after the join
    with pytest.raises(m.InviteUnavailableError):
        await j.join_via("127.0.0.1", inviter.port, code, None)


async def test_wrong_code_fails_locally_and_costs_a_try(inviter: Inviter) -> None:
    code = await inviter.invite()
    wrong = code[:2] + ("0" if code[2] != "0" else "1") + code[3:]
    with pytest.raises(m.WrongCodeError):
        await j.join_via("127.0.0.1", inviter.port, wrong, None)
    assert inviter.tries_left(code) == 4
    assert (await j.join_via("127.0.0.1", inviter.port, code, None)) == inviter.service.current


async def test_five_wrong_tries_kill_the_invite(inviter: Inviter) -> None:
    code = await inviter.invite()
    wrong = code[:2] + ("0" if code[2] != "0" else "1") + code[3:]
    for _ in range(5):
        with pytest.raises(m.WrongCodeError):
            await j.join_via("127.0.0.1", inviter.port, wrong, None)
    assert inviter.tries_left(code) == 0
    with pytest.raises(m.InviteUnavailableError):
        await j.join_via("127.0.0.1", inviter.port, code, None)


async def test_expired_invite_refused(inviter: Inviter) -> None:
    code = await inviter.invite()
    inviter.clock.now += 30 * 60
    with pytest.raises(m.InviteUnavailableError, match="no live invite"):
        await j.join_via("127.0.0.1", inviter.port, code, None)


async def test_unknown_code_id_refused(inviter: Inviter) -> None:
    code = await inviter.invite()
    other = f"{(int(code[:2]) + 1) % 100:02d}" + code[2:]
    with pytest.raises(m.InviteUnavailableError):
        await j.join_via("127.0.0.1", inviter.port, other, None)


async def test_invite_survives_a_restart(inviter: Inviter, tmp_path: Path) -> None:
    code = await inviter.invite()
    await inviter.runner.cleanup()
    service, _ = make_service(tmp_path / "inviter", inviter.clock)  # same state dir
    await service.load()
    runner, port = await serve(service)
    try:
        assert (await j.join_via("127.0.0.1", port, code, None)) == inviter.service.current
    finally:
        await runner.cleanup()


async def test_device_without_facility_serves_no_join(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path / "lonely")
    await service.load()
    runner, port = await serve(service)
    try:
        with pytest.raises(m.NotMemberError):
            await j.join_via("127.0.0.1", port, "1234567890", None)
    finally:
        await runner.cleanup()


async def test_replayed_and_malformed_requests_refused(inviter: Inviter) -> None:
    code = await inviter.invite()
    joiner = j.JoinerHandshake(code)
    url = f"http://127.0.0.1:{inviter.port}{j.JOIN_PATH}"
    async with aiohttp.ClientSession() as session:

        async def post(frame: bytes) -> tuple[int, bytes]:
            async with session.post(url, data=frame) as response:
                return response.status, await response.read()

        status, body = await post(j.encode_message(joiner.start()))
        reply1 = j.decode_reply(body, j.Join1Reply)
        assert status == 200 and isinstance(reply1, j.Join1Reply)
        join2 = j.encode_message(joiner.receive_join1(reply1))
        status, body = await post(join2)
        reply2 = j.decode_reply(body, j.Join2Reply)
        assert status == 200 and isinstance(reply2, j.Join2Reply)
        assert joiner.receive_join2(reply2) == inviter.service.current

        status, body = await post(join2)  # replayed join2
        assert (status, j.decode_reply(body, j.Join2Reply)) == (409, j.JoinRefusal("unknown_session", ANY))
        status, body = await post(b"\x00garbage")
        assert (status, j.decode_reply(body, j.Join1Reply)) == (400, j.JoinRefusal("malformed", ANY))
        status, body = await post(b"\x00" + bytes(j.MAX_JOIN_FRAME + 10))
        assert (status, j.decode_reply(body, j.Join1Reply)) == (413, j.JoinRefusal("malformed", ANY))


async def test_half_done_sessions_expire(inviter: Inviter) -> None:
    code = await inviter.invite()
    joiner = j.JoinerHandshake(code)
    url = f"http://127.0.0.1:{inviter.port}{j.JOIN_PATH}"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=j.encode_message(joiner.start())) as response:
            reply1 = j.decode_reply(await response.read(), j.Join1Reply)
        assert isinstance(reply1, j.Join1Reply)
        inviter.clock.now += 61  # the session's time is up (the invite itself is still live)
        async with session.post(url, data=j.encode_message(joiner.receive_join1(reply1))) as response:
            refusal = j.decode_reply(await response.read(), j.Join2Reply)
        assert response.status == 409 and isinstance(refusal, j.JoinRefusal)


async def test_not_a_syncd_inviter() -> None:
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = bound_port(site)
    try:
        with pytest.raises(j.JoinError, match="not a syncd inviter"):
            await j.join_via("127.0.0.1", port, "1234567890", None)
    finally:
        await runner.cleanup()
    with pytest.raises(j.JoinError, match="cannot reach"):
        await j.join_via("127.0.0.1", port, "1234567890", None)  # nobody listens now


def self_signed(directory: Path) -> ssl.SSLContext:
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncd")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


async def test_join_over_tls(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path / "inviter")
    await service.load()
    answer = await service.create("TLS School")
    runner, port = await serve(service, self_signed(tmp_path))
    try:
        facility = await j.join_via("127.0.0.1", port, answer["join_code"], j.join_client_ssl_context())
        assert facility == service.current
    finally:
        await runner.cleanup()


async def test_handler_caps_half_done_sessions() -> None:
    """make_join_handler with plain callables: at most max_sessions handshakes wait for join2."""
    facility = m.mint_facility("Capped", lambda n: bytes(n))
    code, invite = m.make_invite(0.0, lambda n: b"\x01" * n)
    book = {invite.code_id: invite}

    async def spend_try(code_id: str, now: float) -> m.Invite | None:
        found = book.get(code_id)
        if found is None or not found.is_live(now):
            return None
        book[code_id] = found.spend_try(now)
        return found

    async def consume(code_id: str) -> None:
        book.pop(code_id, None)

    app = web.Application()
    app.router.add_post(j.JOIN_PATH, j.make_join_handler(spend_try, consume, lambda: facility, clock=Clock(0.0), max_sessions=2))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{bound_port(site)}{j.JOIN_PATH}"
    try:
        async with aiohttp.ClientSession() as session:
            statuses = []
            for _ in range(3):
                async with session.post(url, data=j.encode_message(j.JoinerHandshake(code).start())) as response:
                    statuses.append(response.status)
                    last = j.decode_reply(await response.read(), j.Join1Reply)
        assert statuses == [200, 200, 503] and last == j.JoinRefusal("busy", ANY)
        assert book[invite.code_id].tries_left == 3  # a refused-as-busy join costs no try
    finally:
        await runner.cleanup()
