"""The join handshake as pairs wired in memory (h11 ConnectionPair style), and its codec."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import msgpack
import pytest

from syncd.errors import LocalProtocolError, RemoteProtocolError
from syncd.sync import join as j
from syncd.sync import membership as m

FAC = m.mint_facility("Kibera Primary", os.urandom)


@dataclass
class InviterShell:
    """The bookkeeping the real shell does around InviterHandshake: spend a try per
    join1 (refusing a dead invite), consume the invite on success."""

    invite: m.Invite
    now: float = 0.0
    consumed: bool = False
    sessions: dict[bytes, j.InviterHandshake] = field(default_factory=dict)

    def join1(self, request: j.Join1Request) -> j.Join1Reply:
        if self.consumed:
            raise m.InviteUnavailableError("used")
        spent_from = self.invite
        self.invite = self.invite.spend_try(self.now)  # raises once dead
        handshake = j.InviterHandshake(spent_from, FAC, os.urandom(16))
        reply = handshake.receive_join1(request)
        self.sessions[handshake.sid] = handshake
        return reply

    def join2(self, request: j.Join2Request) -> j.Join2Reply:
        handshake = self.sessions.pop(request.sid, None)
        if handshake is None:
            raise RemoteProtocolError("unknown session")
        reply = handshake.receive_join2(request)
        self.consumed = True
        return reply


def wire(message: j.JoinMessage) -> bytes:
    return j.encode_message(message)


def run_join(code: str, shell: InviterShell) -> m.Facility:
    """A full handshake, every message through the codec both ways."""
    joiner = j.JoinerHandshake(code)
    request1 = j.decode_request(wire(joiner.start()))
    assert isinstance(request1, j.Join1Request)
    reply1 = j.decode_reply(wire(shell.join1(request1)), j.Join1Reply)
    assert isinstance(reply1, j.Join1Reply)
    request2 = j.decode_request(wire(joiner.receive_join1(reply1)))
    assert isinstance(request2, j.Join2Request)
    reply2 = j.decode_reply(wire(shell.join2(request2)), j.Join2Reply)
    assert isinstance(reply2, j.Join2Reply)
    return joiner.receive_join2(reply2)


def other_code(code: str) -> str:
    """Same code id (so it reaches the same invite), different password digits."""
    return code[:2] + f"{(int(code[2:]) + 1) % 10**8:08d}"


def test_right_code_both_sides_end_with_the_facility() -> None:
    code, invite = m.make_invite(0.0, os.urandom)
    shell = InviterShell(invite)
    facility = run_join(m.format_code(code), shell)
    assert facility == FAC
    assert facility.secret == FAC.secret
    assert shell.consumed and shell.invite.tries_left == 4


def test_wrong_code_fails_at_the_joiner_and_uses_a_try() -> None:
    code, invite = m.make_invite(0.0, os.urandom)
    shell = InviterShell(invite)
    joiner = j.JoinerHandshake(other_code(code))
    reply = shell.join1(joiner.start())
    with pytest.raises(m.WrongCodeError, match="wrong"):
        joiner.receive_join1(reply)
    assert joiner.state is j.JoinState.FAILED
    assert shell.invite.tries_left == 4


def test_wrong_confirm_fails_at_the_inviter() -> None:
    """A joiner that ignores its local failure and sends join2 anyway."""
    code, invite = m.make_invite(0.0, os.urandom)
    shell = InviterShell(invite)
    joiner = j.JoinerHandshake(other_code(code))
    reply = shell.join1(joiner.start())
    with pytest.raises(m.WrongCodeError):
        shell.join2(j.Join2Request(reply.sid, os.urandom(32)))
    assert not shell.consumed


def test_five_wrong_tries_kill_the_invite() -> None:
    code, invite = m.make_invite(0.0, os.urandom)
    shell = InviterShell(invite)
    for _ in range(5):
        joiner = j.JoinerHandshake(other_code(code))
        with pytest.raises(m.WrongCodeError):
            joiner.receive_join1(shell.join1(joiner.start()))
    assert shell.invite.tries_left == 0
    with pytest.raises(m.InviteUnavailableError):
        run_join(code, shell)  # even the right code: the invite is dead


def test_abandoned_handshakes_use_tries_too() -> None:
    """A joiner can check its guess from join1's answer alone, so join1 is what costs."""
    code, invite = m.make_invite(0.0, os.urandom)
    shell = InviterShell(invite)
    for _ in range(5):
        shell.join1(j.JoinerHandshake(other_code(code)).start())
    with pytest.raises(m.InviteUnavailableError):
        shell.join1(j.JoinerHandshake(code).start())


def test_expired_invite_refused() -> None:
    code, invite = m.make_invite(0.0, os.urandom)
    shell = InviterShell(invite, now=30 * 60)
    with pytest.raises(m.InviteUnavailableError):
        run_join(code, shell)


def test_replayed_messages_refused() -> None:
    code, invite = m.make_invite(0.0, os.urandom)
    shell = InviterShell(invite)
    joiner = j.JoinerHandshake(code)
    request1 = joiner.start()
    reply1 = shell.join1(request1)
    request2 = joiner.receive_join1(reply1)
    handshake = shell.sessions[request2.sid]
    reply2 = shell.join2(request2)
    assert joiner.receive_join2(reply2) == FAC

    # the inviter: join2 of a finished session, join1 twice on one handshake
    with pytest.raises(RemoteProtocolError):
        handshake.receive_join2(request2)
    with pytest.raises(RemoteProtocolError):
        handshake.receive_join1(request1)
    with pytest.raises(RemoteProtocolError, match="unknown session"):
        shell.join2(request2)
    # the joiner: every step once
    with pytest.raises(LocalProtocolError):
        joiner.receive_join1(reply1)
    with pytest.raises(LocalProtocolError):
        joiner.receive_join2(reply2)
    with pytest.raises(LocalProtocolError):
        joiner.start()


def test_messages_of_another_session_refused() -> None:
    code, invite = m.make_invite(0.0, os.urandom)
    shell = InviterShell(invite)
    first = j.JoinerHandshake(code)
    first_reply1 = shell.join1(first.start())
    first_request2 = first.receive_join1(first_reply1)

    second = j.JoinerHandshake(code)
    second_reply1 = shell.join1(second.start())
    # a join1 answer captured from another session does not confirm
    third = j.JoinerHandshake(code)
    third.start()
    with pytest.raises(m.WrongCodeError):
        third.receive_join1(first_reply1)
    # a join2 of the first session replayed into the second
    with pytest.raises(m.WrongCodeError):
        shell.join2(j.Join2Request(second_reply1.sid, first_request2.confirm))
    # a box of the first session handed to a joiner of the second
    first_box = shell.join2(first_request2)
    fourth = j.JoinerHandshake(code)
    fourth_reply1 = InviterShell(invite).join1(fourth.start())
    fourth.receive_join1(fourth_reply1)
    with pytest.raises(RemoteProtocolError, match="box"):
        fourth.receive_join2(first_box)


def test_reflected_pake_refused() -> None:
    code, _ = m.make_invite(0.0, os.urandom)
    joiner = j.JoinerHandshake(code)
    request = joiner.start()
    with pytest.raises(RemoteProtocolError):
        joiner.receive_join1(j.Join1Reply(os.urandom(16), request.pake, os.urandom(32)))


def test_secret_crosses_only_inside_the_box() -> None:
    code, invite = m.make_invite(0.0, os.urandom)
    shell = InviterShell(invite)
    joiner = j.JoinerHandshake(code)
    request1 = joiner.start()
    reply1 = shell.join1(request1)
    request2 = joiner.receive_join1(reply1)
    reply2 = shell.join2(request2)
    assert joiner.receive_join2(reply2) == FAC
    for message in (request1, reply1, request2, reply2):
        frame = wire(message)
        assert FAC.secret not in frame and FAC.secret.hex().encode() not in frame
        assert code.encode() not in frame and m.code_hash(code) not in frame
        assert FAC.facility_id.encode() not in frame and FAC.name.encode() not in frame


# --- codec ---------------------------------------------------------------------------------


def test_codec_round_trip() -> None:
    messages: list[j.JoinMessage] = [
        j.Join1Request("42", b"A" + bytes(32)),
        j.Join2Request(bytes(16), bytes(32)),
    ]
    for message in messages:
        assert j.decode_request(j.encode_message(message)) == message
    reply1 = j.Join1Reply(bytes(16), b"B" + bytes(32), bytes(32))
    assert j.decode_reply(j.encode_message(reply1), j.Join1Reply) == reply1
    refusal = j.JoinRefusal("no_invite", "none here")
    assert j.decode_reply(j.encode_message(refusal), j.Join2Reply) == refusal


def frame(*messages: object) -> bytes:
    packed: bytes = msgpack.packb(list(messages), use_bin_type=True)
    return b"\x00" + packed


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01" + msgpack.packb([{"t": "join1"}]),                      # compressed flag
        frame(),                                                           # no message
        frame({"t": "join1", "code_id": "42", "pake": bytes(33)}, {"t": "join1"}),
        frame({"t": "join1", "code_id": "42", "pake": bytes(32)}),        # short pake
        frame({"t": "join1", "code_id": "4x", "pake": bytes(33)}),
        frame({"t": "join1", "code_id": "42", "pake": "x" * 33}),         # str for bytes
        frame({"t": "join1", "code_id": "42", "pake": bytes(33), "more": 1}),
        frame({"t": "join2", "sid": bytes(16)}),
        frame({"t": "join3"}),
        frame([1, 2]),
        b"\x00" + b"\xc1",                                                 # never-used msgpack byte
        b"\x00" + msgpack.packb([{"t": "join1", "code_id": "42", "pake": bytes(33)}])[:-3],  # truncated
        b"\x00" + b"\xdd\xff\xff\xff\xff",                                 # array of 4G entries
        b"\x00" + b"\x91" * 5000,                                          # deeply nested
        b"\x00" + bytes(5000),                                             # over the frame cap
    ],
)
def test_bad_frames_are_remote_protocol_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        j.decode_request(data)


def test_random_frames_never_raise_anything_else() -> None:
    rng = random.Random(4)
    good = j.encode_message(j.Join1Request("42", b"A" + bytes(32)))
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        for decode in (j.decode_request, lambda b: j.decode_reply(b, j.Join1Reply)):
            try:
                decode(bytes(data))
            except RemoteProtocolError:
                pass
