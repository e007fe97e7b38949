"""Real processes, real network: discovery by mDNS alone between network namespaces.

Three devices on a private bridge (198.18.0.0/15, no uplink, no default route): A and B
in one facility, C in another. Each runs ``tests/discovery/mdns_peer.py`` (the real
``Discovery`` on every interface of its namespace, the default the daemon uses) and
prints what it sees. Nothing is configured but the tag and the port: they must find
each other by multicast. Then C's cable is pulled (no goodbye) and plugged back in.

Every wait is a condition with a deadline. The short record TTL (4 s) and check
interval keep the test quick; the mechanism is the one the daemon runs with 120 s.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.discovery.txt import PROTOCOL_VERSION
from tests.netns import JsonLines, NetnsLan, Node, require_netns

PEER_SCRIPT = Path(__file__).resolve().parents[1] / "discovery" / "mdns_peer.py"
REPO = Path(__file__).resolve().parents[2]
PORT = 7737  # every device uses the default port: they are different hosts
TTL = 4

pytestmark = pytest.mark.slow


@pytest.fixture
def lan() -> Iterator[NetnsLan]:
    require_netns()
    with NetnsLan(3) as lan:
        yield lan


def start_peer(lan: NetnsLan, node: Node, tag: str, label: str) -> JsonLines:
    proc = node.popen(
        [
            sys.executable, str(PEER_SCRIPT),
            "--port", str(PORT), "--tag", tag,
            "--ttl", str(TTL), "--check-interval", "0.5", "--query-interval", "2",
            "--log-level", "INFO",
        ],
        cwd=str(REPO),
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return JsonLines(proc, label)


def seen(host: str, **fields: Any) -> Any:
    return lambda e: e["event"] == "seen" and e["host"] == host and all(e.get(k) == v for k, v in fields.items())


def gone(host: str) -> Any:
    return lambda e: e["event"] == "gone" and e["host"] == host


def test_devices_find_each_other_by_mdns_alone(lan: NetnsLan) -> None:
    a, b, c = lan.nodes
    school, other = secrets.token_hex(8), secrets.token_hex(8)
    t0 = time.monotonic()
    out = {
        "A": start_peer(lan, a, school, "A"),
        "B": start_peer(lan, b, school, "B"),
        "C": start_peer(lan, c, other, "C"),
    }
    for label, node in (("A", a), ("B", b), ("C", c)):
        ready = out[label].wait_for(lambda e: e["event"] == "ready", 30, f"{label} ready")
        assert ready["addresses"] == [node.address], "advertises its LAN address only (no loopback)"

    # Everyone sees everyone, with the advertised tag and port, by multicast alone.
    facts = {
        ("A", b): dict(tag=school, candidate=True),
        ("A", c): dict(tag=other, candidate=False),
        ("B", a): dict(tag=school, candidate=True),
        ("B", c): dict(tag=other, candidate=False),
        ("C", a): dict(tag=school, candidate=False),
        ("C", b): dict(tag=school, candidate=False),
    }
    for (label, node), want in facts.items():
        event = out[label].wait_for(seen(node.address), 30, f"{label} to see {node.name}")
        assert event["port"] == PORT and event["version"] == PROTOCOL_VERSION and event["source"] == "mdns"
        assert event["tag"] == want["tag"] and event["candidate"] is want["candidate"], event
    discovered = time.monotonic() - t0
    for label, node in (("A", a), ("B", b), ("C", c)):
        assert out[label].find(seen(node.address)) is None, f"{label} ignores its own advert"

    mark = len(out["A"])
    out["A"].send("candidates")
    answer = out["A"].wait_for(lambda e: e["event"] == "candidates", 10, "A's candidates", start=mark)
    assert answer["addresses"] == [f"{b.address}:{PORT}"], "C is seen but is no candidate for A"

    # C's cable is pulled: no goodbye. A and B drop it once its records go unanswered.
    marks = {label: len(lines) for label, lines in out.items()}
    t_cut = time.monotonic()
    c.cut()
    for label in ("A", "B"):
        event = out[label].wait_for(gone(c.address), 30, f"{label} to drop C", start=marks[label])
        assert event["reason"] == "expired"
    noticed = time.monotonic() - t_cut
    for label in ("A", "B"):
        assert out[label].find(gone(a.address if label == "B" else b.address), start=marks[label]) is None

    # Plugged back in (same process, same name, no new announcement): found again.
    marks = {label: len(lines) for label, lines in out.items()}
    t_back = time.monotonic()
    c.restore()
    for label in ("A", "B"):
        event = out[label].wait_for(seen(c.address), 30, f"{label} to see C again", start=marks[label])
        assert event["tag"] == other and event["candidate"] is False
    for node in (a, b):
        out["C"].wait_for(seen(node.address), 30, f"C to see {node.name} again", start=marks["C"])
    refound = time.monotonic() - t_back

    # A clean stop says goodbye: A drops B at once, not after a TTL.
    mark = len(out["A"])
    t_stop = time.monotonic()
    out["B"].send("quit")
    out["B"].wait_for(lambda e: e["event"] == "stopped", 20, "B to stop")
    event = out["A"].wait_for(gone(b.address), 10, "A to hear B's goodbye", start=mark)
    assert event["reason"] == "goodbye"
    goodbye = time.monotonic() - t_stop

    print(
        f"\nmDNS in namespaces: discovered all in {discovered:.1f}s, cut noticed in {noticed:.1f}s "
        f"(TTL {TTL}s), refound in {refound:.1f}s, goodbye in {goodbye:.1f}s"
    )
    for label, lines in out.items():
        assert not [e for e in lines.lines if e["event"] == "non-json"], lan.stderr_of(lines.proc)


@pytest.fixture
def lan2() -> Iterator[NetnsLan]:
    require_netns()
    with NetnsLan(2) as lan:
        yield lan


def test_address_changes_are_reannounced(lan2: NetnsLan) -> None:
    """A tablet whose daemon started before it had a network, then changes address."""
    a, b = lan2.nodes
    tag = secrets.token_hex(8)
    b.del_address(b.address)  # B boots with no LAN address yet
    out_a = start_peer(lan2, a, tag, "A")
    out_b = start_peer(lan2, b, tag, "B")
    assert out_b.wait_for(lambda e: e["event"] == "ready", 30, "B ready")["addresses"] == []
    out_a.wait_for(lambda e: e["event"] == "ready", 30, "A ready")

    # B gets its address: its next check rebinds zeroconf and advertises; both find each other.
    t0 = time.monotonic()
    b.add_address(b.address)
    out_a.wait_for(seen(b.address, tag=tag, candidate=True), 30, "A to see B once B has an address")
    out_b.wait_for(seen(a.address, tag=tag, candidate=True), 30, "B to see A once B has an address")
    joined = time.monotonic() - t0

    # B moves to another address (new lease): A follows, and drops the old one.
    moved_to = f"198.18.{lan2.run}.{100 + b.index}"
    mark = len(out_a)
    t1 = time.monotonic()
    b.add_address(moved_to)
    b.del_address(b.address)
    out_a.wait_for(seen(moved_to, tag=tag), 30, "A to see B's new address", start=mark)
    event = out_a.wait_for(gone(b.address), 30, "A to drop B's old address", start=mark)
    assert event["reason"] == "moved"
    moved = time.monotonic() - t1
    print(f"\nmDNS address changes: advertised {joined:.1f}s after the address came, move followed in {moved:.1f}s")
