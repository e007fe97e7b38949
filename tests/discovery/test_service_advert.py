"""The facility tag reaches the advert, whenever the facility is created.

A daemon starts mDNS after it reports ready, so the API answers while discovery is
still starting (a second of zeroconf set-up and name probing): a facility created then
must still be advertised with its tag, or no device can find the inviter to join.
Real SyncService, real store, real zeroconf on 127.0.0.1, a second Discovery listening.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import syncd.sync.service as service_module
from syncd.config import ApiSettings, DeviceSettings, DiscoverySettings, Settings, SyncSettings
from syncd.discovery import Discovery, PeerAddress
from syncd.discovery.mdns import local_ipv4_addresses
from syncd.store.sqlite import SqliteStore
from syncd.sync.service import SyncService
from tests.discovery.test_mdns_loopback import LO, Watcher

pytestmark = pytest.mark.skipif(LO not in local_ipv4_addresses([LO]), reason="no 127.0.0.1 here")


class GatedDiscovery(Discovery):
    """A Discovery whose start() says when it began (and waits at its door until
    ``gate`` opens) and when it began registering the advert."""

    gate: asyncio.Event
    began: asyncio.Event
    registering: asyncio.Event

    async def start(self) -> None:
        GatedDiscovery.began.set()
        await GatedDiscovery.gate.wait()
        await super().start()

    async def _readvertise(self) -> None:
        GatedDiscovery.registering.set()  # start() holds the lock from here to registered
        await super()._readvertise()


@pytest.fixture
async def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SyncService]:
    GatedDiscovery.gate = asyncio.Event()
    GatedDiscovery.began = asyncio.Event()
    GatedDiscovery.registering = asyncio.Event()
    monkeypatch.setattr(service_module, "Discovery", GatedDiscovery)
    state = tmp_path / "state"
    settings = Settings(
        device=DeviceSettings(name="server", state_dir=state),
        api=ApiSettings(socket=state / "api.sock"),
        sync=SyncSettings(port=0),
        discovery=DiscoverySettings(enabled=True, interfaces=(LO,)),
    )
    store = await SqliteStore.open(state)
    sync = SyncService(store, settings)
    try:
        await sync.start()
        yield sync
    finally:
        await sync.stop()
        await store.close()


@pytest.mark.parametrize("when", ["before zeroconf opens", "while the advert is registered"])
async def test_a_facility_created_while_discovery_starts_is_advertised_with_its_tag(
    service: SyncService, when: str
) -> None:
    assert service.sync_port is not None
    listener = Watcher()
    other = Discovery(listener.table, port=random.randint(20000, 60000), tag=None, interfaces=[LO],
                      check_interval=0)
    await other.start()
    try:
        starting = asyncio.create_task(service.start_discovery())
        await asyncio.wait_for(GatedDiscovery.began.wait(), 10)
        if when == "before zeroconf opens":
            created = await service.facility.create("Hill School")
            GatedDiscovery.gate.set()
        else:
            GatedDiscovery.gate.set()
            await asyncio.wait_for(GatedDiscovery.registering.wait(), 10)
            assert not starting.done()
            created = await service.facility.create("Hill School")
        await asyncio.wait_for(starting, 20)
        tag = str(created["tag"])
        assert service.tag() == tag

        ours = PeerAddress(LO, service.sync_port)
        await listener.wait(lambda: listener.seen(ours, tag), f"the server's advert with tag {tag}")
        assert ours in listener.table.joinable(0.0)
    finally:
        await other.stop()
