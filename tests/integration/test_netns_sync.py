"""Real processes, real network: peer sync between daemons in network namespaces.

Each device is a real ``syncd run`` in its own namespace on a private bridge
(``tests.netns``: 198.18.0.0/15, no uplink, no default route), driven from the root
namespace over its Unix socket (a file, so reachable from anywhere). Every daemon
listens on the default peer port and has mDNS on; nobody is given a static peer, so the
only way a device finds another is multicast. Config: ``[sync] interval = 2``.

1. Server, laptop and tablet on one LAN: the server creates a facility, the laptop and
   the tablet join by invite without naming a peer (the inviter is found by mDNS), all
   three find and verify each other, learners write on every device (one learner on all
   three), and the scheduler alone brings them to byte-identical derived rows.
2. Relay: the tablet and the server cannot hear each other, only the laptop (the
   bridge's port isolation, as Wi-Fi client isolation or radio range: no frame, so no
   mDNS, ARP or TCP, passes between them). The tablet joins through the laptop's
   invite, subscribes to its own learners only, and its logs reach the server through
   the laptop while the server's new logs for those learners come back.
3. The same relay with a few thousand writes over a slow laptop link (tc tbf), the
   laptop's daemon killed (SIGKILL, a power cut) first while it receives the tablet's
   logs, then again while it forwards them to the server; each time it is switched back
   on and the sync completes with every acknowledged write on every device.

Every wait is a condition polled against a deadline; on a timeout the message carries
each daemon's peers, last sessions and log tail.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from syncd.store.sqlite import DB_FILE
from tests.daemon_harness import DaemonProcess, derived_digests, short_tempdir, wait_until
from tests.netns import NetnsLan, Node, require_netns

pytestmark = pytest.mark.slow

PORT = 7737          # every device on the default port: they are different hosts
INTERVAL = 2         # [sync] interval, seconds
CONVERGE = 60.0      # seconds allowed for a convergence once everything is in place

VIDEO = {
    "node_id": "32a941fb77c2576e8f6b294cde4c3b0c",
    "content_id": "c6f49ea527824f398f4d5d26faf19396",
    "channel_id": "6199dde695db4ee4ab392222d5af1e5c",
    "kind": "video",
}


def learner() -> str:
    return uuid.uuid4().hex


def user_partition(user: str | None, device: Device) -> str:
    return f"user:{user}" if user else f"anon:{device.device_id}"


# --- devices -----------------------------------------------------------------------------


@dataclass
class Device:
    label: str
    node: Node
    daemon: DaemonProcess

    @property
    def address(self) -> str:
        return self.node.address

    @property
    def peer_address(self) -> str:
        return f"{self.node.address}:{PORT}"

    @property
    def device_id(self) -> str:
        return str(self.daemon.ready["device_id"])

    def status(self) -> dict[str, Any]:
        return dict(self.daemon.status())

    def digests(self) -> dict[str, str]:
        return dict(self.status()["digests"])

    def peers(self) -> list[dict[str, Any]]:
        return list(self.daemon.http.get("/peers"))

    def post(self, target: str, payload: Any, expect: int = 200) -> Any:
        status, body = self.daemon.http.json("POST", target, payload)
        assert status == expect, f"{self.label}: POST {target} -> {status} {body}"
        return body

    def kill(self) -> None:
        self.daemon.kill()

    def start(self) -> None:
        self.daemon.start()
        assert self.daemon.ready["sync_port"] == PORT, self.daemon.ready

    def diagnostics(self) -> str:
        lines = [f"--- {self.label} ({self.address}, pid {self.daemon.pid}) ---"]
        if self.daemon.pid is not None:
            try:
                status = self.status()
                lines.append("digests: " + json.dumps({p[:14]: d[:10] for p, d in status["digests"].items()}))
                lines.append("last sessions: " + json.dumps(status.get("last_sessions"), default=str)[:1500])
                lines.append("peers: " + json.dumps(
                    [{k: p.get(k) for k in ("address", "sources", "tag", "device_id", "failures", "candidate")}
                     for p in self.peers()], default=str)[:1500])
            except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the failure
                lines.append(f"(status unavailable: {exc})")
        lines.extend(self.daemon.log_text().splitlines()[-40:])
        return "\n".join(lines)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, devices: Iterable[Device]) -> Any:
    """Poll ``condition()`` until it is truthy; on timeout fail with every device's state."""
    try:
        return wait_until(condition, timeout, what, interval=0.1)
    except TimeoutError as exc:
        report = "\n".join(d.diagnostics() for d in devices)
        raise AssertionError(f"{exc}\n{report}") from None


@pytest.fixture
def lan() -> Iterator[NetnsLan]:
    require_netns()
    with NetnsLan(3) as lan:
        yield lan


@pytest.fixture
def start_device(lan: NetnsLan) -> Iterator[Callable[..., Device]]:
    """Start a daemon in a node's namespace; all are killed before the LAN goes (their
    directories, logs included, are kept when ``$SYNCD_KEEP_NETNS_LOGS`` is set)."""
    made: list[Device] = []

    def start(node: Node, label: str, subscription: str | list[str] = "all") -> Device:
        daemon = DaemonProcess(
            short_tempdir("sdn"),
            name=label,
            sync={"port": PORT, "interval": INTERVAL, "subscription": subscription},
            discovery={"enabled": True},
            launcher=node.command,
        )
        device = Device(label, node, daemon)
        made.append(device)
        device.start()
        return device

    yield start
    for device in made:
        if os.environ.get("SYNCD_KEEP_NETNS_LOGS"):
            device.daemon.kill()
            print(f"\n{device.label}: {device.daemon.log_path}")
        else:
            device.daemon.cleanup()


# --- facility ----------------------------------------------------------------------------


def advertised_with(device: Device, other: Device, tag: str) -> bool:
    return any(
        p["address"] == other.peer_address and p["advertised"] and p["tag"] == tag for p in device.peers()
    )


def join_by_mdns(joiner: Device, inviter: Device, tag: str, everyone: list[Device]) -> dict[str, Any]:
    """``inviter`` issues a code; ``joiner`` joins with the code alone (no peer named),
    once mDNS has shown it the inviter under the facility's tag."""
    code = inviter.post("/facility", {"action": "invite"}, expect=201)["join_code"]
    wait_for(lambda: advertised_with(joiner, inviter, tag), 30, f"{joiner.label} to hear {inviter.label}'s advert",
             everyone)
    joined = joiner.post("/facility", {"action": "join", "code": code})
    assert joined["tag"] == tag and joined["via"] == inviter.peer_address, joined
    return dict(joined)


def create_facility(server: Device) -> str:
    created = server.post("/facility", {"action": "create", "name": "Kibera School"}, expect=201)
    return str(created["tag"])


def verified_peers(device: Device) -> dict[str, str]:
    """address -> device id of every peer this device has verified, found by mDNS alone."""
    out = {}
    for peer in device.peers():
        assert "static" not in peer["sources"], f"{device.label} has a static peer: {peer}"
        if peer["device_id"]:
            out[peer["address"]] = peer["device_id"]
    return out


# --- writes ------------------------------------------------------------------------------


@dataclass
class Written:
    """Sessions a device acknowledged: id -> (learner or None, expected time_spent)."""

    device: Device
    sessions: dict[str, tuple[str | None, float]] = field(default_factory=dict)

    def partitions(self) -> set[str]:
        return {user_partition(user, self.device) for user, _ in self.sessions.values()}


def write_sessions(device: Device, users: list[str | None], sessions_each: int, updates_each: int,
                   blob: int = 0, threads: int = 8) -> Written:
    """Start ``sessions_each`` video sessions per learner (None: anonymous) on ``device``
    and send each ``updates_each`` updates of 1 s; with ``blob`` bytes of random app state
    in every update's ``extra_fields`` (what an HTML5 app saves), so the logs do not
    compress to nothing. Every write must be acknowledged (200)."""
    http = device.daemon.http

    def one(user: str | None) -> tuple[str, tuple[str | None, float]]:
        status, body = http.json("POST", "/api/logger/trackprogress/", VIDEO, user=user)
        assert status == 200, f"{device.label}: start -> {status} {body}"
        session = str(body["session_id"])
        for _ in range(updates_each):
            update: dict[str, Any] = {"time_spent_delta": 1, "progress_delta": 0.001}
            if blob:
                update["extra_fields"] = {"contentState": {"saved": base64.b64encode(os.urandom(blob)).decode()}}
            status, body = http.json("PUT", f"/api/logger/trackprogress/{session}/", update, user=user)
            assert status == 200, f"{device.label}: update -> {status} {body}"
        return session, (user, float(updates_each))

    jobs = [user for user in users for _ in range(sessions_each)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return Written(device, dict(pool.map(one, jobs)))


def assert_holds(device: Device, *written: Written, only: Iterable[str | None] | None = None) -> None:
    """Every acknowledged session of ``written`` is on ``device``, whole (time_spent is
    the sum of every update, so a lost update shows); with ``only``, just the sessions of
    those learners are, and no other."""
    wanted = None if only is None else set(only)
    rows = {row["id"]: row for row in device.daemon.http.get("/api/logger/contentsessionlog/")}
    for batch in written:
        for session, (user, time_spent) in batch.sessions.items():
            row = rows.get(session)
            if wanted is not None and user not in wanted:
                assert row is None, f"{device.label} got {row} outside its held set"
                continue
            assert row is not None, f"{device.label} lacks session {session} written on {batch.device.label}"
            assert row["user_id"] == user and row["time_spent"] == time_spent, (device.label, batch.device.label, row)


def assert_lacks(device: Device, partitions: Iterable[str]) -> None:
    held = set(device.digests())
    assert not held & set(partitions), f"{device.label} holds {held & set(partitions)} outside its held set"


# --- 1. three devices on one LAN -----------------------------------------------------------


def test_three_devices_join_discover_and_converge_by_mdns(lan: NetnsLan, start_device: Callable[..., Device]
                                                         ) -> None:
    t0 = time.monotonic()
    server = start_device(lan.nodes[0], "server")
    laptop = start_device(lan.nodes[1], "laptop")
    tablet = start_device(lan.nodes[2], "tablet")
    everyone = [server, laptop, tablet]
    started = time.monotonic() - t0

    tag = create_facility(server)
    join_by_mdns(laptop, server, tag, everyone)
    # The tablet may also hear the laptop (a member without this invite): it is tried
    # and refuses, the server accepts.
    join_by_mdns(tablet, server, tag, everyone)
    joined = time.monotonic() - t0

    def all_verified() -> bool:
        return all(
            verified_peers(d) == {o.peer_address: o.device_id for o in everyone if o is not d} for d in everyone
        )

    wait_for(all_verified, 45, "every device to find and verify the other two by mDNS", everyone)
    discovered = time.monotonic() - t0

    shared = learner()  # one learner who used all three devices
    t_write = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(write_sessions, d, [learner(), learner(), shared], 2, 5, threads=3) for d in everyone
        ]
        written = [f.result() for f in futures]
    wrote = time.monotonic() - t_write
    partitions = set().union(*(w.partitions() for w in written))
    assert len(partitions) == 7

    def converged() -> bool:
        seen = [d.digests() for d in everyone]
        return set(seen[0]) == partitions and all(s == seen[0] for s in seen)

    wait_for(converged, CONVERGE, "all three devices to hold identical derived rows", everyone)
    synced = time.monotonic() - t_write
    for device in everyone:
        assert_holds(device, *written)
        assert device.status()["facility"]["name"] == "Kibera School"
    print(
        f"\nthree devices: started {started:.1f}s, joined {joined:.1f}s, all verified {discovered:.1f}s; "
        f"{sum(len(w.sessions) for w in written)} sessions written in {wrote:.1f}s, identical "
        f"{synced:.1f}s after writing began"
    )


# --- 2 and 3. a relay --------------------------------------------------------------------


@dataclass
class Relay:
    server: Device
    laptop: Device
    tablet: Device
    tag: str
    tablet_learners: list[str]

    @property
    def everyone(self) -> list[Device]:
        return [self.server, self.laptop, self.tablet]


def start_relay(lan: NetnsLan, start_device: Callable[..., Device], tablet_learners: list[str],
                before_join: Callable[[Device], None] = lambda _tablet: None) -> Relay:
    """Server (node 1), laptop (2), tablet (3); the tablet and the server hear only the
    laptop. The server creates the facility, the laptop joins with the server's code and
    the tablet with the laptop's, both by mDNS alone. ``before_join(tablet)`` runs
    before the tablet joins (logs written while it belonged to no facility)."""
    server_node, laptop_node, tablet_node = lan.nodes
    lan.isolate(server_node, tablet_node)
    assert server_node.isolated() and tablet_node.isolated() and not laptop_node.isolated()
    server = start_device(server_node, "server")
    laptop = start_device(laptop_node, "laptop")
    tablet = start_device(tablet_node, "tablet", subscription=tablet_learners)
    # Unicast too: the tablet reaches the laptop's peer port, not the server's.
    assert tablet_node.can_connect(laptop.address, PORT) and server_node.can_connect(laptop.address, PORT)
    assert not tablet_node.can_connect(server.address, PORT)
    relay = Relay(server, laptop, tablet, "", tablet_learners)
    relay.tag = create_facility(server)
    join_by_mdns(laptop, server, relay.tag, relay.everyone)
    before_join(tablet)
    join_by_mdns(tablet, laptop, relay.tag, relay.everyone)
    return relay


def assert_never_met(relay: Relay) -> None:
    """The tablet and the server never heard of each other: no mDNS entry, no session."""
    for device, other in ((relay.tablet, relay.server), (relay.server, relay.tablet)):
        for peer in device.peers():
            assert peer["address"] != other.peer_address and peer["device_id"] != other.device_id, (device.label, peer)


def relay_converged(relay: Relay, tablet_held: set[str]) -> bool:
    """The laptop and the server hold identical rows for everything; the tablet holds
    exactly ``tablet_held``, identical to theirs."""
    server, laptop, tablet = (d.digests() for d in relay.everyone)
    return (
        server == laptop
        and set(tablet) == tablet_held
        and all(server.get(p) == digest for p, digest in tablet.items())
    )


def test_relay_through_the_laptop(lan: NetnsLan, start_device: Callable[..., Device]) -> None:
    t0 = time.monotonic()
    relay = start_relay(lan, start_device, [learner(), learner(), learner()])
    server, laptop, tablet = relay.everyone
    t1, t2, t3 = relay.tablet_learners
    joined = time.monotonic() - t0

    visitor = learner()  # learns on the tablet, not in its subscription: held because written there
    on_tablet = write_sessions(tablet, [t1, t2, t3, visitor, None], 2, 5)
    on_server = write_sessions(server, [t1, learner()], 2, 5)   # t1 also used the server
    on_laptop = write_sessions(laptop, [learner()], 2, 5)
    t_write = time.monotonic()

    tablet_held = on_tablet.partitions() | {f"user:{t1}"}
    everything = tablet_held | on_server.partitions() | on_laptop.partitions()
    assert len(tablet_held) == 5 and len(everything) == 7

    def done() -> bool:
        return relay_converged(relay, tablet_held) and set(server.digests()) == everything

    wait_for(done, CONVERGE, "the tablet's logs to reach the server through the laptop and back", relay.everyone)
    relayed = time.monotonic() - t_write

    assert_holds(server, on_tablet, on_server, on_laptop)
    assert_holds(laptop, on_tablet, on_server, on_laptop)
    assert_holds(tablet, on_tablet)
    assert_holds(tablet, on_server, on_laptop, only=[t1, t2, t3])  # its subscription, nothing else
    assert_lacks(tablet, everything - tablet_held)
    assert_never_met(relay)
    print(f"\nrelay: joined through the laptop in {joined:.1f}s; tablet <-> server through it in {relayed:.1f}s")


def committed_digests(device: Device) -> dict[str, str]:
    """The derived-row digests a dead daemon's store holds (a copy of its SQLite files,
    so the state dir is left as the power cut left it)."""
    with tempfile.TemporaryDirectory(prefix="sdn-copy") as copy:
        for suffix in ("", "-wal", "-shm"):
            source = device.daemon.state_dir / f"{DB_FILE}{suffix}"
            if source.exists():
                shutil.copy2(source, Path(copy) / source.name)
        conn = sqlite3.connect(Path(copy) / DB_FILE)
        try:
            return derived_digests(conn)
        finally:
            conn.close()


def receiving_from(device: Device, other: Device, at_least: int) -> int:
    """The most bytes ``device`` has received on one TCP connection with ``other``'s
    peer port (either side may have opened it)."""
    best = max(
        (int(c["bytes_received"]) for c in device.node.tcp_connections(PORT)
         if str(c["peer"]).rsplit(":", 1)[0] == other.address),
        default=0,
    )
    return best if best >= at_least else 0


TABLET_LEARNERS = 10          # a shared classroom tablet
TABLET_WRITES = 3000          # 10 learners x 3 sessions x 100 updates, before joining
BLOB = 768                    # random bytes of app state per update (~1 KB as base64)
RATE_KBIT = 8000              # the laptop's link: 8 Mbit/s each way
MID_TRANSFER = 256 * 1024     # bytes into a transfer of ~3 MB: "in the middle"


def whole(device_digests: dict[str, str], reference: dict[str, str]) -> set[str]:
    """The partitions of ``reference`` that ``device_digests`` holds identically."""
    return {p for p, digest in reference.items() if device_digests.get(p) == digest}


def test_relay_through_a_laptop_switched_off_mid_sync(lan: NetnsLan, start_device: Callable[..., Device]) -> None:
    laptop_node = lan.nodes[1]
    try:
        laptop_node.shape(RATE_KBIT)
    except RuntimeError as exc:
        pytest.skip(f"cannot throttle a link here (tc tbf): {exc}")
    t0 = time.monotonic()
    learners = [learner() for _ in range(TABLET_LEARNERS)]
    updates = TABLET_WRITES // (TABLET_LEARNERS * 3)
    offline: list[Written] = []

    def write_offline(tablet: Device) -> None:
        # Weeks of learning on the tablet before it joined: a few thousand writes.
        offline.append(write_sessions(tablet, list(learners), 3, updates, blob=BLOB))

    relay = start_relay(lan, start_device, learners, before_join=write_offline)
    server, laptop, tablet = relay.everyone
    ready = time.monotonic() - t0
    on_tablet = offline[0]
    assert len(on_tablet.sessions) * updates == TABLET_WRITES
    # What only the tablet writes, as it holds it once joined: the yardstick for "mid-sync".
    tablet_only = {p: d for p, d in tablet.digests().items() if p != f"user:{learners[0]}"}
    assert len(tablet_only) == TABLET_LEARNERS - 1
    written = [on_tablet, write_sessions(server, [learners[0], learner()], 2, 5)]  # learners[0] used the server too

    # 1. Switched off while it receives the tablet's logs.
    received = wait_for(lambda: receiving_from(laptop, tablet, MID_TRANSFER), 30,
                        "the laptop to be receiving the tablet's logs", relay.everyone)
    t_off = time.monotonic()
    laptop.kill()
    laptop_had = whole(committed_digests(laptop), tablet_only)
    assert laptop_had != set(tablet_only), f"killed {received} B into the sync, yet the laptop had it all"
    laptop.start()

    # 2. Switched off again while it forwards them to the server.
    forwarded = wait_for(lambda: receiving_from(server, laptop, MID_TRANSFER), CONVERGE,
                         "the server to be receiving the tablet's logs from the laptop", relay.everyone)
    laptop.kill()
    server_had = whole(server.digests(), tablet_only)
    assert server_had != set(tablet_only), f"killed {forwarded} B into the forward, yet the server had it all"
    # Both ends keep working while the laptop is off; these must get through as well.
    written.append(write_sessions(tablet, [learners[0], learners[-1]], 1, 5))
    written.append(write_sessions(server, [learners[0]], 1, 5))
    laptop.start()

    tablet_held = {f"user:{u}" for u in learners}
    everything = tablet_held | set().union(*(w.partitions() for w in written))

    def done() -> bool:
        return relay_converged(relay, tablet_held) and set(server.digests()) == everything

    wait_for(done, CONVERGE, "the relay to complete after the laptop came back", relay.everyone)
    recovered = time.monotonic() - t_off

    for device in (server, laptop):
        assert_holds(device, *written)
    assert_holds(tablet, *written, only=learners)
    assert_never_met(relay)
    print(
        f"\nrelay, {TABLET_WRITES} tablet writes at {RATE_KBIT} kbit/s: ready {ready:.1f}s; laptop killed "
        f"{received // 1024} KB into the tablet->laptop sync (it held {len(laptop_had)}/{len(tablet_only)} "
        f"tablet-only partitions), again {forwarded // 1024} KB into laptop->server "
        f"({len(server_had)}/{len(tablet_only)} there); everything everywhere {recovered:.1f}s after the first "
        f"power cut"
    )
