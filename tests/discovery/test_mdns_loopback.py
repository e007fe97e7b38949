"""Two real Discovery instances over multicast on the loopback interface, in-process.

Everything is real zeroconf on 127.0.0.1 (nothing leaves the machine). Other
processes on this host may advertise on lo too, so every assertion filters by the
random tags and ports of this test. Waits are on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import AsyncIterator, Callable

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from syncd.discovery import SERVICE_TYPE, Discovery, PeerAddress, PeerEvent, PeerGone, PeerSeen, PeerTable
from syncd.discovery.mdns import local_ipv4_addresses
from syncd.discovery.txt import build_txt, instance_name, server_name

LO = "127.0.0.1"

pytestmark = pytest.mark.skipif(LO not in local_ipv4_addresses([LO]), reason="no 127.0.0.1 here")


class Watcher:
    """A PeerTable whose events wake waiters."""

    def __init__(self) -> None:
        self.table = PeerTable(now=0.0, rng=random.Random(0))
        self.events: list[PeerEvent] = []
        self._changed = asyncio.Event()
        self.table.add_listener(self._on_event)

    def _on_event(self, event: PeerEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; events: {self.events}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    def seen(self, address: PeerAddress, tag: str | None = None) -> bool:
        return any(
            isinstance(e, PeerSeen) and e.address == address and (tag is None or e.tag == tag) for e in self.events
        )

    def gone(self, address: PeerAddress, reason: str | None = None) -> bool:
        return any(
            isinstance(e, PeerGone) and e.address == address and (reason is None or e.reason == reason)
            for e in self.events
        )


def _port() -> int:
    return random.randint(20000, 60000)


@contextlib.asynccontextmanager
async def running(discovery: Discovery) -> AsyncIterator[Discovery]:
    await discovery.start()
    try:
        yield discovery
    finally:
        await discovery.stop()


async def test_two_daemons_find_each_other_and_follow_updates() -> None:
    tag_a, tag_b, tag_c = (secrets.token_hex(8) for _ in range(3))
    port_a, port_b = _port(), _port() + 1
    wa, wb = Watcher(), Watcher()
    a = Discovery(wa.table, port=port_a, tag=tag_a, interfaces=[LO], check_interval=0.5)
    b = Discovery(wb.table, port=port_b, tag=tag_b, interfaces=[LO], check_interval=0.5)
    A, B = PeerAddress(LO, port_a), PeerAddress(LO, port_b)
    async with running(a), running(b):
        assert a.advertised and a.addresses == (LO,)
        await wa.wait(lambda: wa.seen(B, tag_b), "A to see B")
        await wb.wait(lambda: wb.seen(A, tag_a), "B to see A")
        assert wa.table.get(A) is None, "our own advert is ignored"
        assert B not in wa.table.candidates(0.0, tag_a), "another facility's advert is no candidate"
        assert B in wa.table.candidates(0.0, tag_b)

        # B joins A's facility: the advert's tag changes, A sees it as a candidate.
        await b.update(tag=tag_a)
        await wa.wait(lambda: wa.seen(B, tag_a), "A to see B's new tag")
        assert B in wa.table.candidates(0.0, tag_a)

        # B's sync port changes (restart on another port): the old address leaves.
        new_b = PeerAddress(LO, port_b + 1)
        await b.update(port=port_b + 1)
        await wa.wait(lambda: wa.seen(new_b, tag_a) and wa.gone(B, "moved"), "A to follow B's port")

        # B leaves its facility: still seen, no longer a candidate.
        await b.update(tag=None)
        await wa.wait(lambda: wa.seen(new_b) and wa.table.get(new_b).tag is None, "B to drop its tag")  # type: ignore[union-attr]
        assert new_b not in wa.table.candidates(0.0, tag_a)

        await b.stop()
        await wa.wait(lambda: wa.gone(new_b, "goodbye"), "A to hear B's goodbye")
        assert wa.table.get(new_b) is None
        assert not wb.gone(A), "B never lost A while it ran"


async def test_no_port_no_advert_until_update() -> None:
    tag = secrets.token_hex(8)
    port = _port()
    wa, wb = Watcher(), Watcher()
    a = Discovery(wa.table, port=None, tag=tag, interfaces=[LO], check_interval=0)
    b = Discovery(wb.table, port=_port(), tag=tag, interfaces=[LO], check_interval=0)
    async with running(a), running(b):
        assert not a.advertised
        await wa.wait(lambda: bool(wa.table.candidates(0.0, tag)), "A (not advertising) still browses")
        await a.update(port=port)
        assert a.advertised
        await wb.wait(lambda: wb.seen(PeerAddress(LO, port), tag), "B to see A once it has a port")


async def _silent_advert(name: str, port: int, tag: str, ttl: int) -> tuple[AsyncZeroconf, AsyncServiceInfo]:
    zc = AsyncZeroconf(interfaces=[LO], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(
        SERVICE_TYPE, name, port=port, properties=build_txt(version=1, port=port, tag=tag),
        server=server_name(name[6:22]), host_ttl=ttl, parsed_addresses=[LO],
    )
    await zc.async_register_service(info)
    return zc, info


async def _vanish(zc: AsyncZeroconf, info: AsyncServiceInfo) -> None:
    """Close without a goodbye: a device switched off."""
    zc.zeroconf.registry.async_remove(info)
    await zc.async_close()


async def test_silent_peer_expires_and_is_found_again() -> None:
    tag = secrets.token_hex(8)
    token = secrets.token_hex(8)
    name, port = instance_name(token), _port()
    peer = PeerAddress(LO, port)
    wb = Watcher()
    b = Discovery(wb.table, port=_port(), tag=tag, interfaces=[LO], check_interval=0.25, query_interval=1.0)
    async with running(b):
        zc, info = await _silent_advert(name, port, tag, ttl=3)
        await wb.wait(lambda: wb.seen(peer, tag), "B to see the peer")

        # While the peer answers, B keeps it: its SRV record is refreshed past its TTL.
        cache = b._aiozc.zeroconf.cache  # type: ignore[union-attr]
        first = cache.get_by_details(name, 33, 1)
        assert first is not None
        first_created = first.created
        await wb.wait(
            lambda: (r := cache.get_by_details(name, 33, 1)) is not None and r.created > first_created + 4000,
            "B to refresh the peer's records past their first TTL",
        )
        assert not wb.gone(peer)

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await _vanish(zc, info)
        await wb.wait(lambda: wb.gone(peer, "expired"), "B to notice the silent peer", timeout=20)
        assert loop.time() - t0 < 3 + 3, "gone within about its TTL plus a check"
        assert peer not in wb.table.candidates(0.0, tag)

        # It comes back (same name, no goodbye in between): B finds it again.
        wb.events.clear()
        zc, info = await _silent_advert(name, port, tag, ttl=3)
        try:
            await wb.wait(lambda: wb.seen(peer, tag), "B to see the peer again")
        finally:
            await zc.async_close()


async def test_invalid_adverts_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    tag = secrets.token_hex(8)
    wb = Watcher()
    b = Discovery(wb.table, port=_port(), tag=tag, interfaces=[LO], check_interval=0)
    bad_port, good_port = _port(), _port() + 1
    zc = AsyncZeroconf(interfaces=[LO], ip_version=IPVersion.V4Only)
    try:
        async with running(b):
            # TXT port disagrees with SRV port; and a TXT with an uppercase tag.
            for n, (srv, props) in enumerate(
                [
                    (bad_port, {b"v": b"1", b"port": b"1", b"tag": tag.encode()}),
                    (bad_port, {b"v": b"1", b"port": str(bad_port).encode(), b"tag": tag.upper().encode()}),
                    (good_port, build_txt(version=1, port=good_port, tag=tag)),
                ]
            ):
                token = secrets.token_hex(8)
                info = AsyncServiceInfo(
                    SERVICE_TYPE, instance_name(token), port=srv, properties=props,
                    server=server_name(token), parsed_addresses=[LO],
                )
                await zc.async_register_service(info)
            await wb.wait(lambda: wb.seen(PeerAddress(LO, good_port), tag), "the valid advert")
            await wb.wait(
                lambda: sum("ignoring advert" in r.getMessage() for r in caplog.records) >= 2,
                "both invalid adverts to be refused",
            )
            assert any("differs from TXT port" in r.getMessage() for r in caplog.records)
            assert any("tag must be" in r.getMessage() for r in caplog.records)
            assert wb.table.get(PeerAddress(LO, bad_port)) is None
            assert wb.table.get(PeerAddress(LO, 1)) is None
    finally:
        await zc.async_close()
