"""The peer transport for real: an aiohttp peer server on 127.0.0.1 with TLS (the
device's Ed25519 certificate) and a PeerClient, over in-memory replicas."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncd.sync import codec, tls
from syncd.sync.membership import Facility, mint_facility
from syncd.sync.messages import Error
from syncd.sync.protocol import ClientSession, Send
from syncd.sync.transport import (
    PATH, SESSION_HEADER, CertifiedResponse, MemoryPeerState, PeerClient, PeerServerConfig, SyncReport, make_peer_app,
)
from tests.sync.helpers import FACILITY, InMemoryReplica, converge_check, new_user


@dataclass(frozen=True)
class Ident:
    device_id: str
    instance_id: str
    private_key: Ed25519PrivateKey


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def write_key(state_dir: Path, key: Ed25519PrivateKey) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (state_dir / "device.key").write_bytes(pem)
    os.chmod(state_dir / "device.key", 0o600)


@dataclass
class Peer:
    replica: InMemoryReplica
    port: int
    reports: list[SyncReport]
    requests: list[tuple[str, int]]      # (session header, id of the TCP transport)
    certificate: bytes
    clock: FakeClock
    facility: list[Facility | None]


PeerFactory = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def peer_factory(tmp_path: Path) -> AsyncIterator[PeerFactory]:
    runners: list[web.AppRunner] = []

    async def make(replica: InMemoryReplica | None = None, *, config: PeerServerConfig | None = None,
                   revoked: Callable[[str], bool] = lambda _: False,
                   routes: list[web.RouteDef] | None = None, middlewares: list[Any] | None = None) -> Peer:
        replica = replica or InMemoryReplica("server")
        state_dir = tmp_path / replica.name
        write_key(state_dir, replica.key)
        context = tls.server_ssl_context(state_dir, replica.key)
        certificate = tls.load_or_create_certificate(state_dir, replica.key)
        reports: list[SyncReport] = []
        requests: list[tuple[str, int]] = []
        clock = FakeClock()
        facility: list[Facility | None] = [replica.facility]
        app = make_peer_app(replica, Ident(replica.device_id, replica.instance, replica.key), lambda: facility[0],
                            certificate=certificate, subscription=replica.subscription, is_revoked=revoked,
                            config=config, on_session=reports.append, routes=routes or (), clock=clock)

        @web.middleware
        async def count(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
            requests.append((request.headers.get(SESSION_HEADER, ""), id(request.transport)))
            return await handler(request)

        app.middlewares.append(count)
        app.middlewares.extend(middlewares or ())
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        return Peer(replica, port, reports, requests, certificate, clock, facility)

    yield make
    for runner in runners:
        await runner.cleanup()


def client_for(replica: InMemoryReplica, **kwargs: object) -> PeerClient:
    return PeerClient(replica, Ident(replica.device_id, replica.instance, replica.key), lambda: replica.facility,
                      subscription=replica.subscription, peer_state=MemoryPeerState(), timeout=10.0,
                      **kwargs)  # type: ignore[arg-type]


def populated(name: str) -> InMemoryReplica:
    r = InMemoryReplica(name)
    for _ in range(2):
        user = new_user()
        r.update(user, r.start(user), 0.3, 20.0)
    r.start(None)
    return r


async def test_full_then_noop_sync_over_tls(peer_factory: PeerFactory) -> None:
    server = await peer_factory(populated("server"))
    a = populated("a")
    async with client_for(a) as client:
        report = await client.sync("127.0.0.1", server.port)
        assert report.outcome == "ok", report.reason
        assert report.peer == server.replica.device_id and report.full
        assert len(report.partitions_in) == 3 and len(report.partitions_out) == 3 and report.records_in == 3
        assert report.bytes_in > 0 and report.bytes_out > 0 and report.clock_skew is not None
        converge_check([a, server.replica])
        first = len(server.requests)
        noop = await client.sync("127.0.0.1", server.port)
        assert noop.outcome == "ok" and noop.partitions_in == noop.partitions_out == ()
        assert len(server.requests) - first == 2                     # hello, proof: two POSTs
        assert len({t for _, t in server.requests}) == 1              # one keep-alive connection for all
        assert noop.bytes_in + noop.bytes_out < 2048
    assert [r.outcome for r in server.reports] == ["ok"]               # the no-op one is still open
    assert server.reports[0].peer == a.device_id and server.reports[0].role == "server"


async def test_the_proof_binds_the_observed_certificate(peer_factory: PeerFactory, tmp_path: Path) -> None:
    server = await peer_factory(populated("server"))
    der = tls.load_or_create_certificate(tmp_path / "server", server.replica.key)
    assert der == server.certificate
    mode = stat.S_IMODE((tmp_path / "server" / tls.CERT_FILE).stat().st_mode)
    assert mode == 0o600
    # a client seeing another certificate (a man in the middle) computes a proof the server refuses
    ctx = tls.client_ssl_context()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), response_class=CertifiedResponse) as http:
        a = populated("a")
        session = ClientSession(a.local(), os.urandom(32))
        hello = session.start(time.time())[0]
        assert isinstance(hello, Send)
        url = f"https://127.0.0.1:{server.port}{PATH}"
        async with http.post(url, data=codec.encode(hello.messages)) as resp:
            assert isinstance(resp, CertifiedResponse) and resp.peer_certificate == server.certificate
            sid = resp.headers[SESSION_HEADER]
            reply = codec.decode(await resp.read())
        outputs = session.receive(reply, time.time(), server_cert=b"a certificate the MITM made")
        outputs = session.peer_loaded(None, None)
        frame = next(o for o in outputs if isinstance(o, Send)).messages
        async with http.post(url, data=codec.encode(frame), headers={SESSION_HEADER: sid}) as resp:
            answer = codec.decode(await resp.read())
        assert isinstance(answer[0], Error) and answer[0].code == "auth"
    assert server.reports[-1].outcome == "failed" and "proof" in server.reports[-1].reason


def test_certificate_is_remade_for_a_new_key(tmp_path: Path) -> None:
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    d1 = tls.load_or_create_certificate(tmp_path, k1)
    assert tls.load_or_create_certificate(tmp_path, k1) == d1
    assert tls.load_or_create_certificate(tmp_path, k2) != d1
    write_key(tmp_path, k1)
    with pytest.raises(Exception, match="not this device's key"):
        tls.server_ssl_context(tmp_path, k2)


async def raw_tls(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=tls.client_ssl_context())


async def test_oversized_body_is_refused_before_reading(peer_factory: PeerFactory) -> None:
    server = await peer_factory()
    reader, writer = await raw_tls(server.port)
    writer.write(f"POST {PATH} HTTP/1.1\r\nHost: peer\r\nContent-Length: {100 * 2**20}\r\n\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)   # answered without one body byte sent
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"too_large" in answer
    writer.close()


async def test_concurrent_session_cap(peer_factory: PeerFactory) -> None:
    server = await peer_factory(populated("server"), config=PeerServerConfig(max_sessions=1, session_idle=30.0))
    a = populated("a")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client_ssl_context())) as http:
        hello = ClientSession(a.local(), os.urandom(32)).start(time.time())[0]
        assert isinstance(hello, Send)
        async with http.post(f"https://127.0.0.1:{server.port}{PATH}", data=codec.encode(hello.messages)) as resp:
            assert resp.status == 200           # a session half-way through its handshake
    async with client_for(populated("b")) as client:
        # an unproven session (a hello needs no secret) never keeps a member out: it is
        # evicted first when the table is full
        report = await client.sync("127.0.0.1", server.port)
        assert report.outcome == "ok", report.reason
        # a finished no-op session is quiescent: it makes room for the next one at once
        again = await client.sync("127.0.0.1", server.port)
        assert again.outcome == "ok", again.reason


async def test_stalled_body_is_cut_off_while_others_sync(peer_factory: PeerFactory) -> None:
    body_timeout = 1.5
    server = await peer_factory(populated("server"), config=PeerServerConfig(body_timeout=body_timeout))
    reader, writer = await raw_tls(server.port)
    stalled_at = time.monotonic()
    writer.write(f"POST {PATH} HTTP/1.1\r\nHost: peer\r\nContent-Length: 5000\r\n\r\n".encode() + b"\x00" * 10)
    await writer.drain()
    a = populated("a")
    async with client_for(a) as client:
        report = await client.sync("127.0.0.1", server.port)
    synced_at = time.monotonic()
    assert report.outcome == "ok", report.reason
    assert synced_at - stalled_at < body_timeout        # served while the stalled body was pending
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    assert time.monotonic() - stalled_at >= body_timeout
    assert answer.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_no_facility_serves_nothing(peer_factory: PeerFactory) -> None:
    async def join(request: web.Request) -> web.Response:
        return web.Response(text="join")

    server = await peer_factory(routes=[web.post("/join/v1", join)])
    url = f"https://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client_ssl_context())) as http:
        async with http.post(url + "/join/v1") as resp:
            assert resp.status == 200 and await resp.text() == "join"
        server.facility[0] = None
        for path in (PATH, "/join/v1"):
            async with http.post(url + path, data=b"\x00\x90") as resp:
                assert resp.status == 503 and (await resp.json())["error"] == "no_facility"
    async with client_for(populated("a")) as client:
        report = await client.sync("127.0.0.1", server.port)
    assert report.outcome == "failed" and "no_facility" in report.reason


async def test_hostile_frames_are_refused_and_the_server_keeps_serving(peer_factory: PeerFactory) -> None:
    server = await peer_factory(populated("server"))
    before = server.replica.raw_json()
    url = f"https://127.0.0.1:{server.port}{PATH}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client_ssl_context())) as http:
        for body in (os.urandom(300), b"\x00" + b"\x91" * 5000, b"\x01" + os.urandom(64), b""):
            async with http.post(url, data=body) as resp:
                assert resp.status == 400
                answer = codec.decode(await resp.read())
                assert isinstance(answer[0], Error) and answer[0].code == "protocol"
        async with http.post(url, data=b"\x00\x90", headers={SESSION_HEADER: "ab" * 32}) as resp:
            assert resp.status == 410
    assert server.replica.raw_json() == before and server.replica.cursors == {}
    assert all(r.outcome == "failed" for r in server.reports) and len(server.reports) == 4
    async with client_for(populated("a")) as client:
        assert (await client.sync("127.0.0.1", server.port)).outcome == "ok"


async def test_refusals_reach_the_report(peer_factory: PeerFactory) -> None:
    a = populated("a")
    server = await peer_factory(populated("server"), revoked=lambda device: device == a.device_id)
    before = server.replica.raw_json()
    async with client_for(a) as client:
        report = await client.sync("127.0.0.1", server.port)
    assert report.outcome == "failed" and "revoked" in report.reason
    stranger = InMemoryReplica("stranger", facility=mint_facility("Elsewhere", os.urandom))
    stranger.start(new_user())
    async with client_for(stranger) as client:
        report = await client.sync("127.0.0.1", server.port)
    assert report.outcome == "failed" and "facility" in report.reason
    assert server.replica.raw_json() == before
    async with client_for(populated("c")) as client:
        unreachable = await client.sync("127.0.0.1", 1)
    assert unreachable.outcome == "failed" and "connection" in unreachable.reason


async def test_a_member_whose_chunk_was_refused_is_turned_away_for_a_while(peer_factory: PeerFactory) -> None:
    """A refused chunk is the member's fault and would come again at once: the server turns
    the member away after its hello, for refused_backoff seconds, doubling with each
    refusal in a row; other members sync meanwhile; a good session clears the count."""
    server = await peer_factory(populated("server"))
    hostile, honest = populated("hostile"), populated("honest")
    hostile_partitions = set(hostile.docs)
    server.replica.refuse = lambda partition, data: "bad data" if partition in hostile_partitions else None
    async with client_for(hostile) as client:
        first = await client.sync("127.0.0.1", server.port)
        assert first.outcome == "failed" and "refused" in first.reason
        turned_away = await client.sync("127.0.0.1", server.port)
        assert turned_away.outcome == "failed" and "backed off" in turned_away.reason
        assert turned_away.partitions_in == () and turned_away.partitions_out == ()
        async with client_for(honest) as other:
            assert (await other.sync("127.0.0.1", server.port)).outcome == "ok"
        server.clock.now += 301  # past the first backoff: refused again, now for twice as long
        assert "refused" in (await client.sync("127.0.0.1", server.port)).reason
        server.clock.now += 301
        assert "backed off" in (await client.sync("127.0.0.1", server.port)).reason
        server.clock.now += 300
        server.replica.refuse = None  # the member was fixed
        assert (await client.sync("127.0.0.1", server.port)).outcome == "ok"


def test_ed25519_is_what_tls_serves(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    write_key(tmp_path, key)
    ctx = tls.server_ssl_context(tmp_path, key)
    assert isinstance(ctx, ssl.SSLContext) and ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert FACILITY.tag


async def test_two_sqlite_stores_converge_over_tls(tmp_path: Path) -> None:
    """The real store on both ends: full, incremental, then no-op."""
    import uuid

    from syncd.logs import writes
    from syncd.logs.partitions import user_partition
    from syncd.store.sqlite import SqliteStore

    stores = [await SqliteStore.open(tmp_path / name) for name in ("laptop", "server")]
    laptop, server_store = stores
    runner: web.AppRunner | None = None
    try:
        async def record(store: SqliteStore, user: str, second: int) -> None:
            ctx = writes.WriteContext(now=f"2025-01-06T09:00:{second:02d}.000000+00:00", user_id=user,
                                      device_id=store.device_id, dataset_id=store.dataset_id,
                                      new_id=lambda: uuid.uuid4().hex, random_quiz_level=lambda: -1)
            payload = {"node_id": "32a941fb77c2576e8f6b294cde4c3b0c", "content_id": "c6f49ea527824f398f4d5d26faf19396",
                       "channel_id": "6199dde695db4ee4ab392222d5af1e5c", "kind": "video"}
            started = await store.write(user_partition(user), lambda s: writes.start_session(s, payload, ctx))
            session = str(started.response["session_id"])
            await store.write(user_partition(user), lambda s: writes.update_session(
                s, session, {"progress_delta": 0.25, "time_spent_delta": 10.0}, ctx))

        users = [new_user() for _ in range(3)]
        await record(laptop, users[0], 1)
        await record(laptop, users[1], 2)
        await record(server_store, users[2], 3)
        await record(server_store, users[0], 4)          # the same learner on both devices
        identity = server_store.identity
        certificate = tls.load_or_create_certificate(tmp_path / "server", identity.private_key)
        app = make_peer_app(server_store, identity, lambda: FACILITY, certificate=certificate)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0,
                           ssl_context=tls.server_ssl_context(tmp_path / "server", identity.private_key))
        await site.start()
        port = runner.addresses[0][1]
        async with PeerClient(laptop, laptop.identity, lambda: FACILITY, peer_state=MemoryPeerState()) as client:
            report = await client.sync("127.0.0.1", port)
            assert report.outcome == "ok", report.reason
            assert set(await laptop.partitions()) == set(await server_store.partitions()) == \
                {user_partition(u) for u in users}
            statuses = [await s.status() for s in stores]
            assert statuses[0].digests == statuses[1].digests
            for p in await laptop.partitions():
                a, b = await laptop.raw_records(p), await server_store.raw_records(p)
                assert sorted((r.id, r.kind, str(r.fields), sorted(map(str, r.events))) for r in a.records.values()) == \
                    sorted((r.id, r.kind, str(r.fields), sorted(map(str, r.events))) for r in b.records.values())
            await record(laptop, users[2], 5)
            incremental = await client.sync("127.0.0.1", port)
            assert incremental.outcome == "ok" and incremental.partitions_out == (user_partition(users[2]),)
            assert not incremental.full
            assert (await laptop.status()).digests == (await server_store.status()).digests
            noop = await client.sync("127.0.0.1", port)
            assert noop.outcome == "ok" and noop.partitions_in == noop.partitions_out == ()
    finally:
        if runner is not None:
            await runner.cleanup()
        for store in stores:
            await store.close()


# --- pipelining: a client's imports commit while it asks for more; a server prepares exports --
class SlowCommits(InMemoryReplica):
    """A replica whose imports are staged at once but commit ``delay`` seconds later, as
    on a slow disk."""

    def __init__(self, name: str, delay: float) -> None:
        super().__init__(name)
        self.delay = delay
        self.uncommitted: list[asyncio.Future[None]] = []

    async def stage_imports(self, chunks, *, source):  # type: ignore[no-untyped-def]
        from syncd.store.interface import StagedImport

        outcomes = await super().stage_imports(chunks, source=source)
        slow = []
        loop = asyncio.get_running_loop()
        for outcome in outcomes:
            if isinstance(outcome, StagedImport):
                done: asyncio.Future[None] = loop.create_future()
                loop.call_later(self.delay, done.set_result, None)
                self.uncommitted.append(done)
                outcome = StagedImport(outcome.result, done)
            slow.append(outcome)
        return slow

    def pending(self) -> int:
        return sum(not done.done() for done in self.uncommitted)


class WatchedState(MemoryPeerState):
    """Peer state that notes, whenever a pull cursor is saved, how many imports had not
    committed yet."""

    def __init__(self, replica: SlowCommits) -> None:
        super().__init__()
        self.replica = replica
        self.saved_with_pending: list[int] = []

    async def save_pull_cursor(self, device_id: str, cursor: object) -> None:  # type: ignore[override]
        self.saved_with_pending.append(self.replica.pending())
        await super().save_pull_cursor(device_id, cursor)  # type: ignore[arg-type]


async def test_a_client_asks_for_more_while_its_imports_commit(peer_factory: PeerFactory) -> None:
    """Imports that take 0.2 s to commit: the client sends its next requests while they
    are pending (so the server sees requests arrive with imports pending), saves its
    cursor only once all of them have committed, and converges."""
    source = InMemoryReplica("server")
    for _ in range(6):
        user = new_user()
        source.update(user, source.start(user), 0.5, 30.0)
    client_replica = SlowCommits("a", delay=0.2)
    pending_at_request: list[int] = []

    @web.middleware
    async def note(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
        pending_at_request.append(client_replica.pending())
        return await handler(request)

    server = await peer_factory(source, config=PeerServerConfig(delta_budget=600), middlewares=[note])
    state = WatchedState(client_replica)
    client = PeerClient(client_replica, Ident(client_replica.device_id, client_replica.instance, client_replica.key),
                        lambda: client_replica.facility, subscription=client_replica.subscription, peer_state=state,
                        timeout=10.0, delta_budget=600)
    try:
        report = await client.sync("127.0.0.1", server.port)
    finally:
        await client.close()
    assert report.outcome == "ok", report.reason
    assert len(report.partitions_in) == 6 and len(client_replica.uncommitted) == 6
    assert max(pending_at_request) > 0, "the client waited for its commits before asking for more"
    assert state.saved_with_pending == [0], "the cursor was saved before every import committed"
    converge_check([client_replica, source])


async def test_a_server_prepares_the_next_exports_while_the_client_takes_a_frame(peer_factory: PeerFactory
                                                                                  ) -> None:
    """Exports for the next answers run between requests (after an answer went out), and
    the client gets exactly what the server holds. Every partition here is larger than a
    frame, so an answer needs at most one new export: only a prepared one makes two run
    while the server has seen the same number of requests."""
    source = InMemoryReplica("server")
    for _ in range(6):
        user = new_user()
        source.update(user, source.start(user), 0.5, 30.0)
    exported_at: list[int] = []
    server = await peer_factory(source, config=PeerServerConfig(delta_budget=200))
    plain_export = source.export_missing

    async def watched(partition: str, their_version: bytes, *, update_lists: bool = False) -> bytes:
        exported_at.append(len(server.requests))
        await asyncio.sleep(0)  # wait-ok: yields once, as a store's export does
        return await plain_export(partition, their_version, update_lists=update_lists)

    source.export_missing = watched  # type: ignore[method-assign]
    a = InMemoryReplica("a")
    async with client_for(a, delta_budget=200) as client:
        report = await client.sync("127.0.0.1", server.port)
    assert report.outcome == "ok", report.reason
    assert len(report.partitions_in) == 6 and len(exported_at) == 6
    assert min(len(source.export(p, b"\x00")) for p in report.partitions_in) > 200
    converge_check([a, source])
    assert max(exported_at.count(n) for n in exported_at) >= 2
