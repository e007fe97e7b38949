"""The peer table: adverts in, candidates out; backoff; the verified-address rule."""

from __future__ import annotations

import random

import pytest

from syncd.discovery.peers import (
    Backoff,
    PeerAddress,
    PeerEvent,
    PeerGone,
    PeerSeen,
    PeerTable,
    Source,
)

TAG = "00112233445566aa"
OTHER = "ffeeddccbbaa9988"
A1 = PeerAddress("198.18.0.1", 7737)
A2 = PeerAddress("198.18.0.2", 7737)
A3 = PeerAddress("198.18.0.3", 7737)
DEV = "d" * 64
DEV2 = "e" * 64


def table(**kwargs: object) -> tuple[PeerTable, list[PeerEvent]]:
    events: list[PeerEvent] = []
    t = PeerTable(now=0.0, rng=random.Random(1), **kwargs)  # type: ignore[arg-type]
    t.add_listener(events.append)
    return t, events


# --- addresses ---------------------------------------------------------------------------


def test_address_parse_and_format() -> None:
    assert PeerAddress.parse("198.18.0.1:7737") == A1
    assert PeerAddress.parse("School-Server.local.:80") == PeerAddress("school-server.local", 80)
    v6 = PeerAddress.parse("[fe80::0001]:7737")
    assert v6.host == "fe80::1" and str(v6) == "[fe80::1]:7737"
    assert str(A1) == "198.18.0.1:7737"
    for bad in ["198.18.0.1", "host:0", "host:65536", "fe80::1:7737", "[nothost]:1", "h:x"]:
        with pytest.raises(ValueError):
            PeerAddress.parse(bad)


# --- backoff -----------------------------------------------------------------------------


def test_backoff_validates_instead_of_clamping() -> None:
    for kwargs in [{"base": 0}, {"factor": 0.5}, {"cap": 1.0, "base": 2.0}, {"jitter": 1.0}, {"jitter": -0.1},
                   {"base": float("nan")}, {"cap": float("inf")}, {"base": True}]:
        with pytest.raises(ValueError):
            Backoff(**kwargs)  # type: ignore[arg-type]


def test_backoff_grows_exponentially_to_the_cap() -> None:
    b = Backoff(base=5.0, factor=2.0, cap=300.0, jitter=0.2)
    assert [b.nominal(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert b.nominal(10_000) == 300.0  # no overflow


def test_backoff_jitter_stays_in_bounds_and_varies() -> None:
    b = Backoff(base=5.0, factor=2.0, cap=300.0, jitter=0.2)
    rng = random.Random(7)
    for n in range(1, 12):
        delays = [b.delay(n, rng) for _ in range(500)]
        assert min(delays) >= b.nominal(n) * 0.8
        assert max(delays) <= b.nominal(n) * 1.2
        assert max(delays) - min(delays) > b.nominal(n) * 0.3, "jitter actually spreads the retries"
    assert Backoff(jitter=0.0).delay(3, rng) == 20.0


def test_failures_back_off_a_candidate_and_success_clears_it() -> None:
    t, _ = table(backoff=Backoff(base=5.0, factor=2.0, cap=60.0, jitter=0.2))
    t.observe("n1", [A1], tag=TAG, version=1, now=0.0)
    now = 0.0
    waits = []
    for n in range(1, 7):
        retry_at = t.record_failure(A1, now=now)
        nominal = min(60.0, 5.0 * 2 ** (n - 1))
        assert nominal * 0.8 <= retry_at - now <= nominal * 1.2
        assert t.candidates(now, TAG) == []
        assert t.candidates(retry_at - 0.001, TAG) == []
        assert t.candidates(retry_at, TAG) == [A1]
        waits.append(retry_at - now)
        now = retry_at
    assert waits[3] > waits[0] * 4  # it grew
    info = t.get(A1)
    assert info is not None and info.failures == 6
    t.record_success(A1, DEV, tag=TAG, now=now)
    assert t.candidates(now, TAG) == [A1]
    info = t.get(A1)
    assert info is not None and info.failures == 0 and info.retry_at is None


def test_backoff_is_per_device_and_address() -> None:
    t, _ = table()
    t.observe("n1", [A1], tag=TAG, version=1, now=0.0)
    t.record_success(A1, DEV, tag=TAG, now=0.0)
    for _ in range(5):
        t.record_failure(A1, now=1.0)  # DEV at A1 keeps failing
    assert t.candidates(2.0, TAG) == []
    # Another member now answers at that address (DHCP gave it DEV's old lease).
    t.record_success(A1, DEV2, tag=TAG, now=3.0)
    assert t.candidates(3.0, TAG) == [A1]
    assert t.address_of(DEV2) == A1 and t.address_of(DEV) is None


# --- adverts and events ------------------------------------------------------------------


def test_adverts_come_and_go_with_events() -> None:
    t, events = table()
    returned = t.observe("Peer1._syncd._tcp.local.", [A1], tag=TAG, version=1, now=1.0)
    assert returned == events == [PeerSeen(A1, Source.MDNS, TAG, 1, 1.0)]
    assert t.observe("peer1._syncd._tcp.local.", [A1], tag=TAG, version=1, now=2.0) == [], "no change, no event"
    assert t.get(A1).last_seen == 2.0  # type: ignore[union-attr]
    assert t.observe("peer1._syncd._tcp.local.", [A1], tag=OTHER, version=1, now=3.0) == [
        PeerSeen(A1, Source.MDNS, OTHER, 1, 3.0)
    ]
    moved = t.observe("peer1._syncd._tcp.local.", [A2], tag=OTHER, version=1, now=4.0)
    assert moved == [PeerSeen(A2, Source.MDNS, OTHER, 1, 4.0), PeerGone(A1, "moved", 4.0)]
    assert t.withdraw("PEER1._syncd._tcp.local.", now=5.0) == [PeerGone(A2, "goodbye", 5.0)]
    assert t.entries() == [] and t.names() == []
    assert len(events) == 5


def test_an_advert_naming_no_address_is_a_withdrawal() -> None:
    t, _ = table()
    t.observe("n", [A1], tag=TAG, version=1, now=0.0)
    assert t.observe("n", [], tag=TAG, version=1, now=1.0) == [PeerGone(A1, "moved", 1.0)]
    assert t.names() == [] and t.entries() == []


def test_tag_decides_candidacy() -> None:
    t, _ = table()
    t.observe("ours", [A1], tag=TAG, version=1, now=0.0)
    t.observe("theirs", [A2], tag=OTHER, version=1, now=0.0)
    t.observe("nofacility", [A3], tag=None, version=1, now=0.0)
    assert t.candidates(0.0, TAG) == [A1]
    assert t.candidates(0.0, OTHER) == [A2]
    assert t.candidates(0.0, None) == [], "no facility: nothing to sync"
    assert {info.address for info in t.entries()} == {A1, A2, A3}, "seen, even if not a candidate"
    assert t.joinable(0.0) == [A1, A2]


def test_min_version() -> None:
    t, _ = table()
    t.observe("old", [A1], tag=TAG, version=1, now=0.0)
    t.observe("new", [A2], tag=TAG, version=2, now=0.0)
    assert t.candidates(0.0, TAG, min_version=2) == [A2]


def test_a_listener_that_raises_does_not_stop_the_table() -> None:
    t, events = table()

    def bad(event: PeerEvent) -> None:
        raise RuntimeError("boom")

    remove = t.add_listener(bad)
    t.observe("n", [A1], tag=TAG, version=1, now=0.0)
    remove()
    t.observe("n", [A2], tag=TAG, version=1, now=0.0)
    assert len(events) == 3


def test_advert_count_is_capped() -> None:
    t, _ = table(max_advertised=2)
    t.observe("a", [A1], tag=TAG, version=1, now=0.0)
    t.observe("b", [A2], tag=TAG, version=1, now=0.0)
    assert t.observe("c", [A3], tag=TAG, version=1, now=0.0) == []
    assert t.get(A3) is None


# --- the verified-address rule -----------------------------------------------------------


def test_unverified_advert_never_replaces_a_verified_address() -> None:
    t, events = table()
    t.observe("n", [A1], tag=TAG, version=1, now=0.0)
    t.record_success(A1, DEV, tag=TAG, now=1.0)
    # The advert now points elsewhere (a spoofer, or a move we have not verified).
    t.observe("n", [A2], tag=TAG, version=1, now=2.0)
    assert t.address_of(DEV) == A1
    assert PeerGone(A1, "moved", 2.0) not in events
    info = t.get(A1)
    assert info is not None and info.device_id == DEV and not info.advertised
    assert set(t.candidates(2.0, TAG)) == {A1, A2}, "both are tried; the proof decides"
    # An advert claiming the verified address under another facility does not take it away.
    t.observe("spoof", [A1], tag=OTHER, version=1, now=3.0)
    assert A1 in t.candidates(3.0, TAG)
    # Withdrawn adverts do not remove it either.
    t.withdraw("spoof", now=4.0)
    t.withdraw("n", now=4.0)
    assert t.candidates(4.0, TAG) == [A1]


def test_device_verified_at_a_new_address_drops_the_old_one() -> None:
    t, events = table()
    t.observe("n", [A1], tag=TAG, version=1, now=0.0)
    t.record_success(A1, DEV, tag=TAG, now=0.0)
    t.observe("n", [A2], tag=TAG, version=1, now=1.0)
    assert t.record_success(A2, DEV, tag=TAG, now=2.0) == [PeerGone(A1, "moved", 2.0)]
    assert t.address_of(DEV) == A2
    assert t.candidates(2.0, TAG) == [A2]


def test_one_address_per_verified_device() -> None:
    t, _ = table()
    t.observe("multihomed", [A1, A2], tag=TAG, version=1, now=0.0)
    assert set(t.candidates(0.0, TAG)) == {A1, A2}
    t.record_success(A2, DEV, tag=TAG, now=1.0)
    assert t.candidates(1.0, TAG) == [A2], "the advert's other address is the same device"
    retry = t.record_failure(A2, now=2.0)
    assert t.candidates(2.0, TAG) == [A1], "fall back while the verified address is backed off"
    assert t.candidates(retry, TAG) == [A2]


def test_verified_unadvertised_address_expires_after_grace() -> None:
    t, events = table(verified_grace=100.0)
    t.observe("n", [A1], tag=TAG, version=1, now=0.0)
    t.record_success(A1, DEV, tag=TAG, now=10.0)
    t.withdraw("n", now=20.0, reason="expired")
    assert t.expire(110.0) == []
    assert t.expire(110.1) == [PeerGone(A1, "expired", 110.1)]
    assert t.address_of(DEV) is None and t.candidates(111.0, TAG) == []


# --- static peers ------------------------------------------------------------------------


def test_static_peers_never_expire_and_match_any_tag() -> None:
    server = PeerAddress.parse("school-server.local:7737")
    t, events = table(static=["school-server.local:7737", A1])
    assert t.candidates(0.0, TAG) == [A1, server]
    assert t.candidates(0.0, OTHER) != []
    assert t.candidates(0.0, None) == []
    t.observe("n", [A1], tag=OTHER, version=1, now=1.0)
    t.withdraw("n", now=2.0)
    assert t.expire(10_000.0) == []
    info = t.get(A1)
    assert info is not None and info.sources == frozenset({Source.STATIC})
    assert {i.address for i in t.entries()} == {A1, server}
    assert not any(isinstance(e, PeerGone) for e in events)
    assert t.joinable(0.0) == [A1, server]


def test_static_peer_is_backed_off_like_any_other() -> None:
    t, _ = table(static=[A1])
    retry = t.record_failure(A1, now=0.0)
    assert t.candidates(0.0, TAG) == []
    assert t.candidates(retry, TAG) == [A1]


def test_candidates_order_verified_static_then_first_seen() -> None:
    t, _ = table(static=[A3])
    t.observe("b", [A2], tag=TAG, version=1, now=1.0)
    t.observe("a", [A1], tag=TAG, version=1, now=2.0)
    assert t.candidates(3.0, TAG) == [A3, A2, A1]
    t.record_success(A1, DEV, tag=TAG, now=3.0)
    assert t.candidates(3.0, TAG) == [A1, A3, A2]
