"""ClientSession against ServerSession in memory (h11 ConnectionPair style), with two
in-memory replicas holding real Loro documents, real write rules and the real folds."""

from __future__ import annotations

import dataclasses
import os

import pytest

from syncd.errors import LocalProtocolError
from syncd.logs.partitions import anon_partition, user_partition
from syncd.sync import auth, codec, protocol
from syncd.sync.membership import mint_facility
from syncd.discovery import txt
from syncd.sync.messages import Changes, Error, Hello, Instance, Message, Proof, Sub
from syncd.sync.protocol import (
    PROTOCOL_VERSION, ClientSession, Failed, LoadPeer, Send, ServerSession, State, scope_hash,
)
from tests.sync.helpers import CERT, InMemoryReplica, PairResult, converge_check, new_user, sync_pair


def school() -> tuple[InMemoryReplica, InMemoryReplica, list[str]]:
    a, b = InMemoryReplica("a"), InMemoryReplica("b")
    users = [new_user() for _ in range(3)]
    s = a.start(users[0])
    a.update(users[0], s)
    a.start(users[1])
    a.start(None)
    b.start(users[2])
    b.update(users[2], b.start(users[2]), 0.5, 30.0)
    return a, b, users


def kinds(frame: tuple[Message, ...]) -> list[str]:
    return [type(m).__name__ for m in frame]


def test_full_sync_moves_everything_both_ways() -> None:
    a, b, users = school()
    result = sync_pair(a, b)
    assert result.ok, result
    converge_check([a, b])
    assert set(a.states) == set(b.states) == {*(user_partition(u) for u in users), anon_partition(a.device_id)}
    assert result.client is not None and result.server is not None
    assert result.client.partitions_in == (user_partition(users[2]),)
    assert set(result.client.partitions_out) == {user_partition(users[0]), user_partition(users[1]),
                                                 anon_partition(a.device_id)}
    assert result.server.records_in == 3 and result.client.records_in == 2
    assert result.server.full and "first sync" in result.server.full_reason
    assert result.client.peer == b.device_id and result.server.peer == a.device_id
    assert result.server.peer_public_key == auth.public_bytes(a.key)
    # pull then push, both cursors saved
    assert [kinds(f) for _, f in result.frames][4:] == [
        ["Want"], ["Delta"], ["Ack", "Offer"], ["Want"], ["Delta"] * 3, ["Ack"], ["Ack", "Bye"]]
    pull, push = a.cursors[b.device_id]
    assert pull is not None and pull.cursor.epoch == b.epoch and push is not None and push.cursor.epoch == a.epoch
    assert pull.instance == push.instance == b.instance       # kept with the server instance they came from


def test_revocations_travel_both_ways_after_the_proofs() -> None:
    a, b, _ = school()
    a.revocations, b.revocations = (b"from-a",), (b"from-b-1", b"from-b-2")
    result = sync_pair(a, b)
    assert result.ok, result
    assert a.revocations_heard == [(b.device_id, b"from-b-1"), (b.device_id, b"from-b-2")]
    assert b.revocations_heard == [(a.device_id, b"from-a")]
    for sender, frame in result.frames[:2]:  # the hellos carry none
        assert not any(isinstance(m, Sub) for m in frame)


def test_noop_sync_is_two_round_trips() -> None:
    a, b, _ = school()
    assert sync_pair(a, b).ok
    before = (a.raw_json(), b.raw_json(), a.feed_seq, b.feed_seq)
    result = sync_pair(a, b)
    assert result.ok and result.round_trips == 2
    assert [kinds(f) for _, f in result.frames] == [["Hello"], ["Hello"], ["Proof", "Sub"], ["Proof", "Sub", "Changes"]]
    assert result.client is not None and not result.client.full and result.client.partitions_in == ()
    assert result.client.delta_bytes_in == result.client.delta_bytes_out == 0
    assert (a.raw_json(), b.raw_json(), a.feed_seq, b.feed_seq) == before
    # and the other direction, once it has a cursor too
    assert sync_pair(b, a).ok
    assert sync_pair(b, a).round_trips == 2


def test_pulled_partitions_are_not_offered_back() -> None:
    a, b, users = school()
    assert sync_pair(a, b).ok
    b.update(users[2], b.start(users[2]))
    result = sync_pair(a, b)
    assert result.ok and result.client is not None
    assert result.client.partitions_in == (user_partition(users[2]),) and result.client.partitions_out == ()
    assert not any(k == "Offer" for _, f in result.frames for k in kinds(f))
    assert sync_pair(a, b).round_trips == 2


def test_incremental_sync_sends_only_what_changed() -> None:
    a, b, users = school()
    assert sync_pair(a, b).ok
    session = a.start(users[0])
    a.update(users[0], session, 0.2, 12.0)
    result = sync_pair(a, b)
    assert result.ok and result.client is not None and result.server is not None
    assert result.client.partitions_out == (user_partition(users[0]),)
    assert not result.server.full and result.server.full_reason == ""
    assert result.server.records_in == 1
    converge_check([a, b])
    assert sync_pair(a, b).round_trips == 2


def big_replica(users: int = 4, updates: int = 6) -> InMemoryReplica:
    a = InMemoryReplica("a")
    for _ in range(users):
        user = new_user()
        for _ in range(2):
            s = a.start(user)
            for _ in range(updates):
                a.update(user, s)
    return a


@pytest.mark.parametrize("drop_response", [True, False])
def test_interrupted_then_resumed(drop_response: bool) -> None:
    """Cut the connection after k requests, for every k; the next session completes and
    nothing is duplicated. Small delta budget: partitions arrive in several pieces."""
    reference = big_replica()
    full = sync_pair(reference, InMemoryReplica("probe"), delta_budget=700)
    assert full.ok and full.round_trips > 6
    for k in range(1, full.round_trips + 1):
        a = big_replica()
        b = InMemoryReplica("b")
        b.start(new_user())
        cut = sync_pair(b, a, drop_after=k, drop_response=drop_response, delta_budget=700)
        assert cut.client is not None
        pull, _ = b.cursors.get(a.device_id, (None, None))
        if cut.client.outcome == "failed":
            # the pull cursor is saved only once everything wanted was committed
            assert pull is None or set(a.states) <= set(b.states)
        resumed = sync_pair(b, a, delta_budget=700)
        assert resumed.ok, (k, resumed.client)
        converge_check([a, b])
        assert a.event_count() == b.event_count() == len(a.acknowledged) + len(b.acknowledged)
        for partition, record, event in a.acknowledged + b.acknowledged:
            assert a.holds(partition, record, event) and b.holds(partition, record, event)
        assert sync_pair(b, a).round_trips == 2


def test_push_seq_advances_only_after_every_offer_is_acked() -> None:
    a = big_replica(users=2)
    b = InMemoryReplica("b")
    full = sync_pair(a, b, delta_budget=500)
    assert full.ok
    a2, b2 = big_replica(users=2), InMemoryReplica("b2")
    pushes = [i for i, (side, f) in enumerate(full.frames) if side == "c" and "Delta" in kinds(f)]
    cut_at = (pushes[0] // 2) + 1          # the request carrying the first push
    cut = sync_pair(a2, b2, drop_after=cut_at, delta_budget=500)
    assert cut.client is not None and cut.client.outcome == "failed"
    assert a2.cursors[b2.device_id][1] is None
    assert sync_pair(a2, b2, delta_budget=500).ok
    converge_check([a2, b2])


def test_epoch_change_forces_a_full_exchange() -> None:
    a, b, users = school()
    assert sync_pair(a, b).ok
    b.restore()                           # a restore is a new start too: the client drops its cursors
    result = sync_pair(a, b)
    assert result.ok and result.server is not None and result.server.full and result.client is not None
    assert "no cursor" in result.server.full_reason and "another instance" in result.client.full_reason
    # the server checks the epoch itself, whatever the client sends
    assert sync_pair(a, b).ok
    instance = b.instance
    b.restore()
    b.instance = instance
    result = sync_pair(a, b)
    assert result.ok and result.server is not None and result.server.full
    assert "epoch" in result.server.full_reason
    # the client's own epoch changing (it was restored) invalidates its scope too
    a.restore()
    result = sync_pair(a, b)
    assert result.ok and result.server is not None and result.server.full
    assert "subscription or epoch" in result.server.full_reason
    a.start(users[0])
    assert sync_pair(a, b).ok
    converge_check([a, b])


def test_subscription_filters_and_changes() -> None:
    server = InMemoryReplica("server")
    u1, u2 = new_user(), new_user()
    server.start(u1)
    server.start(u2)
    server.start(None)
    tablet = InMemoryReplica("tablet", subscription=frozenset({u1}))
    tablet.start(None)                    # the tablet's own anonymous logs
    result = sync_pair(tablet, server)
    assert result.ok
    assert set(tablet.states) == {user_partition(u1), anon_partition(tablet.device_id)}
    assert anon_partition(tablet.device_id) in server.states   # server is "all": it takes it
    for _, frame in result.frames:
        for m in frame:
            assert u2 not in repr(m) and anon_partition(server.device_id) not in repr(m)
    tablet.subscription = frozenset({u1, u2})
    result = sync_pair(tablet, server)
    assert result.ok and result.server is not None and result.server.full
    assert "subscription" in result.server.full_reason
    assert user_partition(u2) in tablet.states
    # a server subscribed to some learners gets nothing else pushed to it
    narrow = InMemoryReplica("narrow", subscription=frozenset({u2}))
    assert sync_pair(tablet, narrow).ok
    assert set(narrow.states) == {user_partition(u2)}


def test_no_learner_id_before_the_proof() -> None:
    u = new_user()
    tablet = InMemoryReplica("tablet", subscription=frozenset({u}))
    server = InMemoryReplica("server")
    result = sync_pair(tablet, server)
    assert result.ok
    for _, frame in result.frames[:3]:
        assert u not in repr(frame) and bytes.fromhex(u) not in repr(frame).encode()


def assert_refused(result_client: object, result_server: object, needle: str) -> None:
    for summary in (result_client, result_server):
        assert summary is not None and getattr(summary, "outcome") == "failed"
    assert needle in getattr(result_server, "reason") or needle in getattr(result_client, "reason")


def nothing_moved(a: InMemoryReplica, b: InMemoryReplica, before: tuple[object, ...]) -> None:
    assert (a.raw_json(), b.raw_json(), dict(a.cursors), dict(b.cursors)) == before


def test_wrong_facility_is_refused_at_hello() -> None:
    a, b, _ = school()
    other = InMemoryReplica("other", facility=mint_facility("Other School", os.urandom))
    other.start(new_user())
    before = (other.raw_json(), b.raw_json(), dict(other.cursors), dict(b.cursors))
    result = sync_pair(other, b)
    assert result.round_trips == 1
    assert result.server is not None and "another facility" in result.server.reason
    assert result.client is not None and result.client.outcome == "failed"
    nothing_moved(other, b, before)


def test_wrong_proof_is_refused() -> None:
    a, b, _ = school()
    before = (a.raw_json(), b.raw_json(), dict(a.cursors), dict(b.cursors))

    def flip(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "c" and isinstance(frame[0], Proof):
            p = frame[0]
            return (dataclasses.replace(p, mac=bytes([p.mac[0] ^ 1]) + p.mac[1:]),) + frame[1:]
        return frame

    result = sync_pair(a, b, tamper=flip)
    assert result.server is not None and "proof does not verify" in result.server.reason
    assert result.client is not None and result.client.outcome == "failed"
    assert isinstance(result.frames[-1][1][0], Error) or result.frames[-1][0] == "c"
    nothing_moved(a, b, before)


def test_reflected_proofs_are_refused() -> None:
    a, b, _ = school()
    hellos: dict[str, Hello] = {}

    def reflect_server_proof_as_client(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if isinstance(frame[0], Hello):
            hellos[side] = frame[0]
        if side == "c" and isinstance(frame[0], Proof):
            t = auth.transcript(hellos["c"], hellos["s"])
            return (Proof(auth.proof_mac(a.facility.secret, "server", t, CERT), frame[0].sig, frame[0].pub),) + frame[1:]
        return frame

    result = sync_pair(a, b, tamper=reflect_server_proof_as_client)
    assert result.server is not None and "proof does not verify" in result.server.reason

    captured: dict[str, Proof] = {}

    def echo_client_proof(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "c" and isinstance(frame[0], Proof):
            captured["c"] = frame[0]
        if side == "s" and isinstance(frame[0], Proof):
            return (Proof(captured["c"].mac),) + frame[1:]
        return frame

    before = (a.raw_json(), b.raw_json())
    result = sync_pair(a, b, tamper=echo_client_proof)
    assert result.client is not None and "server's proof does not verify" in result.client.reason
    assert (a.raw_json(), b.raw_json()) == before


def test_signature_and_key_are_checked() -> None:
    a, b, _ = school()
    stranger = InMemoryReplica("stranger")

    def swap_key(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "c" and isinstance(frame[0], Proof):
            return (dataclasses.replace(frame[0], pub=auth.public_bytes(stranger.key)),) + frame[1:]
        return frame

    result = sync_pair(a, b, tamper=swap_key)
    assert result.server is not None and "does not hash to the device id" in result.server.reason

    def bad_sig(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "c" and isinstance(frame[0], Proof):
            return (dataclasses.replace(frame[0], sig=bytes(64)),) + frame[1:]
        return frame

    result = sync_pair(a, b, tamper=bad_sig)
    assert result.server is not None and "signature does not verify" in result.server.reason


def test_version_below_the_minimum_is_refused() -> None:
    a, b, _ = school()

    def old(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "c" and isinstance(frame[0], Hello):
            return (dataclasses.replace(frame[0], version=0, min_version=0),)
        return frame

    result = sync_pair(a, b, tamper=old)
    assert result.round_trips == 1
    assert result.server is not None and "protocol version 0" in result.server.reason
    assert result.client is not None and "peer refused: version" in result.client.reason

    def demanding(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "s" and isinstance(frame[0], Hello):
            return (dataclasses.replace(frame[0], version=7, min_version=5),)
        return frame

    result = sync_pair(a, b, tamper=demanding)
    assert result.client is not None and "not compatible" in result.client.reason


def test_a_self_connection_is_refused() -> None:
    """A daemon that reaches its own peer port (its own mDNS advert, a static peer naming
    itself): the same device id AND the same instance. Nothing is stored, no cursor."""
    a, _, _ = school()
    a.cursors.clear()
    before = (a.raw_json(), dict(a.cursors))
    result = sync_pair(a, a)
    assert result.round_trips == 1
    assert result.server is not None and "own device id and instance" in result.server.reason
    assert result.client is not None and "peer refused: own_device" in result.client.reason
    assert (a.raw_json(), dict(a.cursors)) == before


def assert_holds_every_acknowledged_write(replicas: list[InMemoryReplica]) -> None:
    for writer in replicas:
        for holder in replicas:
            missing = [w for w in writer.acknowledged if not holder.holds(*w)]
            assert not missing, f"{holder.name} lacks {len(missing)} writes of {writer.name}: {missing[:3]}"


def cloned_tablet() -> tuple[InMemoryReplica, InMemoryReplica, str, str]:
    """A tablet with logs and a clone of its whole state dir that kept the machine id (same
    key, device id, epoch, feed, cursors). Both then write: to the same record of a shared
    learner, new sessions, and a learner of their own; the clone's feed runs further."""
    shared = new_user()
    a = InMemoryReplica("original")
    session = a.start(shared)
    a.update(shared, session)
    a.start(new_user())
    b = a.clone("clone")
    assert (b.device_id, b.epoch, b.feed_seq) == (a.device_id, a.epoch, a.feed_seq) and b.instance != a.instance
    a.update(shared, session, 0.1, 4.0)
    a.start(new_user())
    b.update(shared, session, 0.2, 8.0)
    b.start(shared)
    own = new_user()
    b.update(own, b.start(own), 0.3, 16.0)
    b.update(own, b.start(own), 0.3, 32.0)
    return a, b, shared, session


def test_a_clone_with_our_device_id_is_accepted_and_both_converge() -> None:
    a, b, shared, session = cloned_tablet()
    result = sync_pair(b, a)
    assert result.ok, result
    assert result.client is not None and result.server is not None
    assert result.client.clone and result.server.clone
    assert result.client.peer == result.server.peer == a.device_id
    assert result.client.peer_instance == a.instance and result.server.peer_instance == b.instance
    assert sync_pair(a, b).ok
    converge_check([a, b])
    assert_holds_every_acknowledged_write([a, b])
    # a stranger is no clone
    other = InMemoryReplica("other")
    result = sync_pair(other, a)
    assert result.ok and result.client is not None and not result.client.clone


def test_a_cursor_from_another_instance_is_not_used() -> None:
    """A school server S pulls from and pushes to two clones of one tablet in turn. Both
    have the same device id and epoch, but their change feeds diverged: S must not use the
    cursors it got from one with the other (it would skip writes); it does a full exchange."""
    a, b, _, _ = cloned_tablet()
    s = InMemoryReplica("server")
    s.start(new_user())
    first = sync_pair(s, a)
    assert first.ok
    pull, push = s.cursors[a.device_id]
    assert pull is not None and push is not None and pull.instance == push.instance == a.instance
    # the clone's feed runs further than the original's: that cursor would skip its writes
    assert a.feed_seq < b.feed_seq and pull.cursor.epoch == b.epoch

    result = sync_pair(s, b)
    assert result.ok and result.client is not None and result.server is not None
    assert result.server.full and "no cursor" in result.server.full_reason
    assert "another instance" in result.client.full_reason
    (sub_c,) = [m for side, f in result.frames if side == "c" for m in f if isinstance(m, Sub)]
    assert sub_c.cursor is None, "the cursor of the original went to its clone"
    kept = s.cursors[b.device_id][0]
    assert kept is not None and kept.instance == b.instance    # replaced: now kept for the clone's instance

    for _ in range(2):                    # and round again: each time a full exchange, nothing lost
        for tablet in (a, b):
            again = sync_pair(s, tablet)
            assert again.ok and again.client is not None and "another instance" in again.client.full_reason
    converge_check([s, a, b])
    assert_holds_every_acknowledged_write([s, a, b])


def test_a_restarted_server_costs_one_full_exchange() -> None:
    a, b, _ = school()
    assert sync_pair(a, b).ok
    steady = sync_pair(a, b)
    assert steady.ok and steady.server is not None and not steady.server.full
    b.restart()                           # same state dir, a new instance
    result = sync_pair(a, b)
    assert result.ok and result.server is not None and result.server.full and result.client is not None
    assert "another instance" in result.client.full_reason
    after = sync_pair(a, b)
    assert after.ok and after.server is not None and not after.server.full
    converge_check([a, b])


def test_hellos_without_an_instance_are_refused() -> None:
    a, b, _ = school()

    def version_1(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "c" and isinstance(frame[0], Hello):
            return (dataclasses.replace(frame[0], version=1, min_version=1, instance=None),)
        return frame

    result = sync_pair(a, b, tamper=version_1)
    assert result.server is not None and "protocol version 1 (min 1)" in result.server.reason
    assert result.client is not None and "peer refused: version" in result.client.reason

    def no_instance(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "s" and isinstance(frame[0], Hello):
            return (dataclasses.replace(frame[0], instance=None),)
        return frame

    result = sync_pair(a, b, tamper=no_instance)
    assert result.client is not None and "no instance" in result.client.reason


def test_the_proofs_bind_the_instances() -> None:
    """A man in the middle who swaps the instance in a hello (to make a device take its
    clone for itself, or a restart for the same instance) breaks the proofs."""
    a, b, _ = school()
    before = (a.raw_json(), b.raw_json(), dict(a.cursors), dict(b.cursors))

    def swap(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "c" and isinstance(frame[0], Hello):
            return (dataclasses.replace(frame[0], instance=Instance("0" * 32)),)
        return frame

    result = sync_pair(a, b, tamper=swap)
    assert result.server is not None and "proof does not verify" in result.server.reason
    nothing_moved(a, b, before)


def test_the_advert_names_the_protocol_version() -> None:
    assert txt.PROTOCOL_VERSION == PROTOCOL_VERSION


def sync_with_an_older_client(monkeypatch: pytest.MonkeyPatch, version: int
                              ) -> tuple[PairResult, InMemoryReplica, InMemoryReplica]:
    """A school synced by a client whose hello says ``version``: the module speaks its
    own version again once that hello is out, so the server side is this version's
    answer to an older peer (the client's later frames are this module's)."""
    a, b, _ = school()
    ours = protocol.PROTOCOL_VERSION
    monkeypatch.setattr(protocol, "PROTOCOL_VERSION", version)

    def back_to_ours(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "c" and isinstance(frame[0], Hello):
            assert frame[0].version == version
            monkeypatch.setattr(protocol, "PROTOCOL_VERSION", ours)
        return frame

    result = sync_pair(a, b, tamper=back_to_ours)
    assert result.client is not None and result.client.outcome == "ok", result.client
    assert a.raw_json() == b.raw_json()
    return result, a, b


def test_update_lists_are_asked_for_only_from_peers_that_read_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protocol 3 lets an export be a list of stored update blobs; a version-2 peer gets
    single blobs."""
    a, b, _ = school()
    result = sync_pair(a, b)
    assert result.client is not None and result.client.outcome == "ok"
    assert b.exports and all(e.update_lists for e in b.exports)

    result, a, b = sync_with_an_older_client(monkeypatch, 2)
    assert b.exports and not any(e.update_lists for e in b.exports)


def test_large_frames_are_zstd_for_peers_that_read_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protocol 4 compresses large frames with zstd; a version-3 peer gets zlib frames,
    and the two still converge."""
    a, b, _ = school()
    result = sync_pair(a, b)
    assert result.client is not None and result.client.outcome == "ok"
    assert ("s", codec.ZSTD) in result.encodings and ("s", codec.ZLIB) not in result.encodings

    result, a, b = sync_with_an_older_client(monkeypatch, 3)
    assert ("s", codec.ZLIB) in result.encodings and ("s", codec.ZSTD) not in result.encodings


def test_revoked_device_gets_no_data() -> None:
    a, b, _ = school()
    before = (a.raw_json(), b.raw_json(), dict(a.cursors), dict(b.cursors))
    result = sync_pair(a, b, revoked=lambda device: device == a.device_id)
    assert result.server is not None and "revoked" in result.server.reason
    assert not any(isinstance(m, Changes) for _, f in result.frames for m in f)
    nothing_moved(a, b, before)


def test_refused_chunk_stores_nothing_and_fails_the_session() -> None:
    a, b, users = school()
    b.refuse = lambda partition, data: "events were removed or rewritten" if partition == user_partition(users[0]) else None
    result = sync_pair(a, b)
    assert result.server is not None and "refused" in result.server.reason
    assert result.client is not None and "peer refused: refused" in result.client.reason
    assert user_partition(users[0]) not in b.states
    assert a.cursors[b.device_id][1] is None          # push not recorded as done
    b.refuse = None
    assert sync_pair(a, b).ok
    converge_check([a, b])


def test_server_listing_outside_the_subscription_is_refused() -> None:
    u = new_user()
    tablet = InMemoryReplica("tablet", subscription=frozenset({u}))
    server = InMemoryReplica("server")
    server.start(new_user())
    other = next(iter(server.states))

    def leak(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "s" and len(frame) == 3 and isinstance(frame[2], Changes):
            return frame[:2] + (dataclasses.replace(frame[2], vvs={other: server.docs[other].version()}),)
        return frame

    result = sync_pair(tablet, server, tamper=leak)
    assert result.client is not None and "outside the subscription" in result.client.reason
    assert other not in tablet.states


def test_unsealed_client_subscription_is_refused() -> None:
    a, b, _ = school()

    def unseal(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if side == "c" and len(frame) == 2 and isinstance(frame[1], Sub):
            return (frame[0], Sub("all", None, None))
        return frame

    result = sync_pair(a, b, tamper=unseal)
    assert result.server is not None and "must be sealed" in result.server.reason


def test_clock_skew_is_measured() -> None:
    a, b, _ = school()
    result = sync_pair(a, b, server_now=1_700_000_000.0 + 400.0)
    assert result.ok and result.client is not None and result.server is not None
    assert result.client.clock_skew == pytest.approx(400.0)
    assert result.server.clock_skew == pytest.approx(-400.0)


def test_the_session_enforces_its_driving_rules() -> None:
    a, b, _ = school()
    client = ClientSession(a.local(), os.urandom(32))
    out = client.start(1.0)
    assert isinstance(out[0], Send) and client.state is State.AWAIT_HELLO
    server = ServerSession(b.local(), os.urandom(32), CERT)
    hello_s = server.receive(out[0].messages, 1.0)
    assert isinstance(hello_s[0], Send)
    step = client.receive(hello_s[0].messages, 1.0, server_cert=CERT)
    assert isinstance(step[-1], LoadPeer)
    with pytest.raises(LocalProtocolError):
        client.receive((), 1.0)                       # the request must be answered first
    with pytest.raises(LocalProtocolError):
        client.versions_ready({})                     # not the pending request
    client.peer_loaded(None, None)
    changed = client.receive(hello_s[0].messages, 1.0, server_cert=b"another certificate")
    assert isinstance(changed[-1], Failed) and "certificate changed" in changed[-1].reason
    # a frame that does not fit the state fails the session with an error to the peer
    fresh = ServerSession(b.local(), os.urandom(32), CERT)
    bad = fresh.receive((Sub("all", None, None),), 1.0)
    assert isinstance(bad[0], Send) and isinstance(bad[0].messages[0], Error)
    assert isinstance(bad[-1], Failed) and fresh.state is State.FAILED


def test_scope_hash_depends_on_epoch_and_subscription() -> None:
    u = new_user()
    assert scope_hash("0" * 16, "all") != scope_hash("1" * 16, "all")
    assert scope_hash("0" * 16, frozenset({u})) != scope_hash("0" * 16, "all")
    assert scope_hash("0" * 16, frozenset({u, "a" * 32})) == scope_hash("0" * 16, frozenset({"a" * 32, u}))


def test_an_unacknowledged_push_does_not_advance_the_push_seq() -> None:
    a, b, _ = school()

    def drop_acks(side: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        from syncd.sync.messages import Ack
        if side == "s" and len(frame) == 1 and isinstance(frame[0], Ack) and frame[0].partitions:
            return (Ack(frame[0].partitions[:-1]),)
        return frame

    result = sync_pair(a, b, tamper=drop_acks)
    assert result.client is not None and "did not acknowledge" in result.client.reason
    assert a.cursors[b.device_id][0] is not None and a.cursors[b.device_id][1] is None
    result = sync_pair(a, b)                  # the next session offers again; nothing is lacking
    assert result.ok and a.cursors[b.device_id][1] is not None


def test_a_restored_tablet_gets_its_own_anonymous_logs_back() -> None:
    u = new_user()
    tablet = InMemoryReplica("tablet", subscription=frozenset({u}))
    server = InMemoryReplica("server")
    empty = tablet.backup()
    tablet.start(None)
    tablet.start(u)
    assert sync_pair(tablet, server).ok
    tablet.restore(empty)                          # back to before it wrote anything
    assert tablet.states == {}
    result = sync_pair(tablet, server)
    assert result.ok and result.server is not None and result.server.full
    assert set(tablet.states) == {anon_partition(tablet.device_id), user_partition(u)}
    converge_check([tablet, server])
    # and the other way round: a restored tablet serving an "all" client gets it pushed back
    tablet.restore(empty)
    result = sync_pair(server, tablet)
    assert result.ok and anon_partition(tablet.device_id) in tablet.states
    converge_check([tablet, server])
