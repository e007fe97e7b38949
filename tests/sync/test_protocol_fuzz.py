"""The (state, input) space of both session machines (h2 ``test_state_machines`` style):
a hostile peer replaces any frame of an honest session with random well-formed messages.
Whatever it sends, the honest side never raises, never takes data outside its
subscription, and a clean session from scratch afterwards still converges."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.logs.partitions import anon_partition, user_partition
from syncd.sync.messages import (
    Ack, Bye, Changes, Cursor, Delta, DeviceId, Epoch, Error, Hello, Instance, Message, Offer, Proof, Sub, Want,
)
from syncd.sync.protocol import EMPTY_VV, ClientSession, Failed, ServerSession
from tests.sync.helpers import CERT, FACILITY, InMemoryReplica, execute, new_user, sync_pair

U1, U2 = new_user(), new_user()
DONOR = InMemoryReplica("donor")
DONOR.update(U1, DONOR.start(U1))
REAL_VV = DONOR.docs[user_partition(U1)].version()
REAL_DATA = DONOR.export(user_partition(U1), EMPTY_VV)

partitions = st.sampled_from([user_partition(U1), user_partition(U2), anon_partition("ab" * 32)])
vvs = st.dictionaries(partitions, st.sampled_from([EMPTY_VV, REAL_VV]), max_size=3)
cursors = st.none() | st.builds(Cursor, st.just(Epoch("0" * 16)), st.integers(0, 50), st.just("a" * 32))
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, st.integers(0, 3), st.integers(0, 3), st.sampled_from([DeviceId("e" * 64), DeviceId("f" * 64)]),
              st.sampled_from([FACILITY.tag, "0" * 16]), st.binary(min_size=32, max_size=32),
              st.floats(0, 2e9), st.just(Epoch("1" * 16)), st.none() | st.just(Instance("2" * 32))),
    st.builds(Proof, st.binary(min_size=32, max_size=32), st.none() | st.binary(min_size=64, max_size=64),
              st.none() | st.binary(min_size=32, max_size=32)),
    st.builds(Sub, st.sampled_from(["all", frozenset({U1})]), st.none(), cursors),
    st.builds(Sub, st.none(), st.binary(min_size=16, max_size=40), cursors),
    st.builds(Changes, vvs, st.builds(Cursor, st.just(Epoch("0" * 16)), st.integers(0, 9), st.just("a" * 32)),
              st.booleans()),
    st.builds(Offer, vvs), st.builds(Want, vvs),
    st.builds(Delta, partitions, st.sampled_from([b"", b"garbage", REAL_DATA, REAL_DATA[:20]]), st.booleans()),
    st.builds(Ack, st.lists(partitions, max_size=3).map(tuple)),
    st.builds(Error, st.just("nope"), st.just("a hostile error")),
    st.just(Bye()),
)
frames = st.lists(messages, max_size=4).map(tuple)


def school() -> tuple[InMemoryReplica, InMemoryReplica]:
    tablet = InMemoryReplica("tablet", subscription=frozenset({U1}))
    server = InMemoryReplica("server")
    tablet.update(U1, tablet.start(U1))
    tablet.start(None)
    server.start(U2)
    server.update(U1, server.start(U1))
    return tablet, server


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["c", "s"]), st.integers(0, 7), frames, st.booleans(), st.booleans())
def test_hostile_frames_never_break_the_honest_side(side: str, at: int, hostile: tuple[Message, ...],
                                                    append: bool, tablet_is_client: bool) -> None:
    tablet, server = school()
    client, srv = (tablet, server) if tablet_is_client else (server, tablet)

    def tamper(who: str, trip: int, frame: tuple[Message, ...]) -> tuple[Message, ...]:
        if who == side and trip == at:
            return frame + hostile if append else hostile
        return frame

    sync_pair(client, srv, tamper=tamper, delta_budget=200)     # must not raise
    assert set(tablet.states) <= {user_partition(U1), anon_partition(tablet.device_id)}
    # A liar moves its victim's cursors (an empty want: "I have it all"); no protocol can
    # prevent that. What must hold: both stores are still valid and sync from scratch.
    tablet.cursors.clear()
    server.cursors.clear()
    clean = sync_pair(client, srv, delta_budget=200)
    assert clean.ok, (clean.client, clean.server)
    shared = [user_partition(U1), anon_partition(tablet.device_id)]
    assert tablet.raw_json(shared) == server.raw_json(shared)


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, min_size=1, max_size=5), st.booleans())
def test_random_frames_from_the_start(sequence: list[tuple[Message, ...]], as_server: bool) -> None:
    """Frames straight into a fresh machine, in any order: outputs or a failure, never an
    exception, and nothing imported before a proof."""
    tablet, server = school()
    before = server.raw_json()
    if as_server:
        session: ClientSession | ServerSession = ServerSession(server.local(), os.urandom(32), CERT)
        for frame in sequence:
            if session.state.name in ("DONE", "FAILED"):
                break
            _, ends = execute(server, session, session.receive(frame, 1.0))
            assert all(isinstance(e, Failed) for e in ends) or session.state.name == "DONE"
    else:
        session = ClientSession(tablet.local(), os.urandom(32))
        execute(tablet, session, session.start(1.0))
        for frame in sequence:
            if session.state.name in ("DONE", "FAILED"):
                break
            execute(tablet, session, session.receive(frame, 1.0, server_cert=CERT))
    assert server.raw_json() == before and tablet.cursors == {}
