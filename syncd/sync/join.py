"""The join handshake (docs/sync.md "Joining"): SPAKE2 over ``POST /join/v1``.

Theory of operation. The joiner knows a 10-digit code; the inviter knows the code's hash
(``membership.code_hash``), the SPAKE2 password of both sides (joiner = ``SPAKE2_A``,
inviter = ``SPAKE2_B``, identities ``b"syncd-joiner"`` / ``b"syncd-inviter"``)::

    joiner                                              inviter
    join1 {code_id, pake: A}          ─────────────►    spends one try of invite code_id
                                                        (none live: error no_invite)
                                      ◄─────────────    join1 {sid, pake: B, confirm: mac_B}
    checks mac_B: a wrong code fails
    HERE, locally (WrongCodeError)
    join2 {sid, confirm: mac_A}       ─────────────►    checks mac_A (error wrong_code)
                                      ◄─────────────    join2 {box}: the invite is used up
    opens the box: the Facility

    K            = SPAKE2 key (32 bytes)
    mac_X        = HMAC-SHA256(HKDF(K, "syncd-join-confirm-v1"), role ‖ transcript)
    transcript   = SHA-256("syncd-join-v1" ‖ code_id ‖ sid ‖ A ‖ B)
    box          = ChaCha20-Poly1305(HKDF(K, "syncd-join-v1"), nonce 0, msgpack(facility),
                                     aad = transcript)      -- the key is used once

**Why the try is spent at join1, not when join2 fails.** The inviter confirms first, so
a joiner learns whether its guess was right from the join1 answer alone and need never
send join2. If only a failed join2 cost a try, an attacker could guess without limit.
Spending the try up front bounds guessing at 5 per invite whatever the attacker does.
SPAKE2 lets each handshake test exactly one password, so 5 tries of a 10^8 password
space is the whole exposure.

The core (``JoinerHandshake``, ``InviterHandshake``, the message codec) is sans-I/O:
messages in, messages out. The shell is ``make_join_handler`` (aiohttp, the inviter's
peer app) and ``join_via`` (the joiner's client). SPAKE2 is pure Python (~20 ms per side
on x86, more on a Pi), so the shell runs it in a thread.

Frames: byte 0 = ``0x00`` then a msgpack array holding one map, as the sync codec's
plain frames; join frames are never compressed and are at most ``MAX_JOIN_FRAME`` bytes.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import aiohttp
import msgpack
from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B  # type: ignore[import-untyped]
from spake2.spake2 import SPAKEError  # type: ignore[import-untyped]

from syncd.errors import LocalProtocolError, RemoteProtocolError, SyncdError
from syncd.sync.membership import (
    Facility,
    InvalidFacilityError,
    Invite,
    InviteUnavailableError,
    NotMemberError,
    Rng,
    WrongCodeError,
    code_hash,
    code_id_of,
    parse_code,
)

__all__ = [
    "InviterHandshake",
    "Join1Reply",
    "Join1Request",
    "Join2Reply",
    "Join2Request",
    "JoinError",
    "JoinRefusal",
    "JoinState",
    "JoinerHandshake",
    "JOIN_PATH",
    "MAX_JOIN_FRAME",
    "decode_reply",
    "decode_request",
    "encode_message",
    "join_client_ssl_context",
    "join_via",
    "make_join_handler",
]

log = logging.getLogger(__name__)

JOIN_PATH = "/join/v1"
MAX_JOIN_FRAME = 4096
CONTENT_TYPE = "application/octet-stream"
ID_JOINER = b"syncd-joiner"
ID_INVITER = b"syncd-inviter"
PAKE_LEN = 33          # side byte + Ed25519 element
SID_LEN = 16
MAC_LEN = 32
_PLAIN = b"\x00"
_NONCE = bytes(12)


class JoinError(SyncdError):
    """The join could not be carried out with that inviter (unreachable, refused, not a
    syncd peer). ``WrongCodeError`` and ``InviteUnavailableError`` are told apart."""

    code = "join_failed"
    status = 502


# --- messages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Join1Request:
    code_id: str
    pake: bytes


@dataclass(frozen=True)
class Join1Reply:
    sid: bytes
    pake: bytes
    confirm: bytes


@dataclass(frozen=True)
class Join2Request:
    sid: bytes
    confirm: bytes


@dataclass(frozen=True)
class Join2Reply:
    box: bytes = field(repr=False)


@dataclass(frozen=True)
class JoinRefusal:
    """``{t: "error", code, detail}``: the inviter refused (codes: ``no_invite``,
    ``wrong_code``, ``unknown_session``, ``no_facility``, ``malformed``, ``busy``)."""

    code: str
    detail: str


JoinMessage = Join1Request | Join1Reply | Join2Request | Join2Reply | JoinRefusal
M = TypeVar("M", Join1Reply, Join2Reply)


def _to_wire(message: JoinMessage) -> dict[str, Any]:
    if isinstance(message, Join1Request):
        return {"t": "join1", "code_id": message.code_id, "pake": message.pake}
    if isinstance(message, Join1Reply):
        return {"t": "join1", "sid": message.sid, "pake": message.pake, "confirm": message.confirm}
    if isinstance(message, Join2Request):
        return {"t": "join2", "sid": message.sid, "confirm": message.confirm}
    if isinstance(message, Join2Reply):
        return {"t": "join2", "box": message.box}
    return {"t": "error", "code": message.code, "detail": message.detail}


def encode_message(message: JoinMessage) -> bytes:
    packed: bytes = msgpack.packb([_to_wire(message)], use_bin_type=True)
    frame = _PLAIN + packed
    if len(frame) > MAX_JOIN_FRAME:
        raise LocalProtocolError(f"a join frame of {len(frame)} bytes is over {MAX_JOIN_FRAME}")
    return frame


def _unpack(frame: bytes) -> dict[str, Any]:
    if not isinstance(frame, bytes) or not frame:
        raise RemoteProtocolError("empty join frame")
    if len(frame) > MAX_JOIN_FRAME:
        raise RemoteProtocolError(f"join frame over {MAX_JOIN_FRAME} bytes", status_hint=413)
    if frame[:1] != _PLAIN:
        raise RemoteProtocolError("a join frame starts with 0x00 (join frames are never compressed)")
    try:
        value = msgpack.unpackb(
            frame[1:],
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=1024,
            max_bin_len=1024,
            max_array_len=4,
            max_map_len=8,
            max_ext_len=0,
        )
    except (ValueError, msgpack.UnpackException):  # ExtraData, FormatError, StackError are ValueErrors
        raise RemoteProtocolError("a join frame that is not msgpack") from None
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise RemoteProtocolError("a join frame holds one message")
    message: dict[str, Any] = value[0]
    return message


def _fields(message: dict[str, Any], spec: dict[str, tuple[type, int | None]]) -> dict[str, Any]:
    """Check that ``message`` holds exactly ``t`` and ``spec``'s keys, each of its type
    (and, for bytes/str with a length, exactly that length)."""
    if set(message) != set(spec) | {"t"}:
        raise RemoteProtocolError(f"join message {message.get('t')!r} must hold exactly {sorted(spec)}")
    for key, (kind, length) in spec.items():
        value = message[key]
        if type(value) is not kind:
            raise RemoteProtocolError(f"join message field {key} must be {kind.__name__}")
        if length is not None and isinstance(value, (bytes, str)) and len(value) != length:
            raise RemoteProtocolError(f"join message field {key} must be {length} long")
    return message


def decode_request(frame: bytes) -> Join1Request | Join2Request:
    """A joiner's frame, as the inviter reads it; anything off is ``RemoteProtocolError``."""
    message = _unpack(frame)
    if message.get("t") == "join1":
        body = _fields(message, {"code_id": (str, 2), "pake": (bytes, PAKE_LEN)})
        if not body["code_id"].isdigit():
            raise RemoteProtocolError("code_id must be 2 digits")
        return Join1Request(body["code_id"], body["pake"])
    if message.get("t") == "join2":
        body = _fields(message, {"sid": (bytes, SID_LEN), "confirm": (bytes, MAC_LEN)})
        return Join2Request(body["sid"], body["confirm"])
    raise RemoteProtocolError(f"unknown join message type {message.get('t')!r}")


def decode_reply(frame: bytes, expected: type[M]) -> M | JoinRefusal:
    """An inviter's frame, as the joiner reads it: the ``expected`` reply or a refusal."""
    message = _unpack(frame)
    if message.get("t") == "error":
        body = _fields(message, {"code": (str, None), "detail": (str, None)})
        return JoinRefusal(body["code"], body["detail"])
    if expected is Join1Reply and message.get("t") == "join1":
        body = _fields(message, {"sid": (bytes, SID_LEN), "pake": (bytes, PAKE_LEN), "confirm": (bytes, MAC_LEN)})
        return Join1Reply(body["sid"], body["pake"], body["confirm"])
    if expected is Join2Reply and message.get("t") == "join2":
        body = _fields(message, {"box": (bytes, None)})
        return Join2Reply(body["box"])
    raise RemoteProtocolError(f"expected {expected.__name__}, got join message {message.get('t')!r}")


# --- key schedule ---------------------------------------------------------------------------


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def _transcript(code_id: str, sid: bytes, pake_a: bytes, pake_b: bytes) -> bytes:
    return hashlib.sha256(b"\x00".join((b"syncd-join-v1", code_id.encode("ascii"), sid, pake_a, pake_b))).digest()


def _confirm(key: bytes, role: bytes, transcript: bytes) -> bytes:
    return hmac.new(_hkdf(key, b"syncd-join-confirm-v1"), role + b"\x00" + transcript, hashlib.sha256).digest()


def _seal(key: bytes, transcript: bytes, facility: Facility) -> bytes:
    plain: bytes = msgpack.packb(
        {"facility_id": facility.facility_id, "dataset_id": facility.dataset_id, "name": facility.name, "secret": facility.secret},
        use_bin_type=True,
    )
    return ChaCha20Poly1305(_hkdf(key, b"syncd-join-v1")).encrypt(_NONCE, plain, transcript)


def _open(key: bytes, transcript: bytes, box: bytes) -> Facility:
    try:
        plain = ChaCha20Poly1305(_hkdf(key, b"syncd-join-v1")).decrypt(_NONCE, box, transcript)
    except InvalidTag:
        raise RemoteProtocolError("the join box does not open under the agreed key") from None
    try:
        value = msgpack.unpackb(plain, raw=False, strict_map_key=True, max_ext_len=0)
    except (ValueError, msgpack.UnpackException):
        raise RemoteProtocolError("the join box does not hold msgpack") from None
    if not isinstance(value, dict) or set(value) != {"facility_id", "dataset_id", "name", "secret"}:
        raise RemoteProtocolError("the join box does not hold a facility")
    try:
        return Facility(value["facility_id"], value["dataset_id"], value["name"], value["secret"])
    except InvalidFacilityError as exc:
        raise RemoteProtocolError(f"the join box holds an invalid facility: {exc.detail}") from None


def _finish(pake: Any, inbound: bytes) -> bytes:
    try:
        key = pake.finish(inbound)
    except (SPAKEError, ValueError, TypeError):
        raise RemoteProtocolError("the other side's SPAKE2 message is invalid") from None
    assert isinstance(key, bytes)
    return key


# --- the two sides -------------------------------------------------------------------------


class JoinState(enum.Enum):
    IDLE = "idle"
    SENT_JOIN1 = "sent_join1"           # joiner
    SENT_JOIN2 = "sent_join2"           # joiner
    AWAIT_JOIN2 = "await_join2"         # inviter
    DONE = "done"
    FAILED = "failed"


class JoinerHandshake:
    """The joiner's side: ``start()`` → send; ``receive_join1(reply)`` → send;
    ``receive_join2(reply)`` → the ``Facility``. Each step once, in order; any failure
    leaves the handshake ``FAILED`` for good."""

    def __init__(self, code: str, *, entropy: Rng = os.urandom) -> None:
        code = parse_code(code)
        self.code_id = code_id_of(code)
        self._pake = SPAKE2_A(code_hash(code), idA=ID_JOINER, idB=ID_INVITER, entropy_f=entropy)
        self.state = JoinState.IDLE
        self._pake_a = b""
        self._key = b""
        self._sid = b""
        self._transcript = b""

    def _expect(self, state: JoinState) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"joiner is {self.state.value}, not {state.value}")

    def start(self) -> Join1Request:
        self._expect(JoinState.IDLE)
        self._pake_a = self._pake.start()
        self.state = JoinState.SENT_JOIN1
        return Join1Request(self.code_id, self._pake_a)

    def receive_join1(self, reply: Join1Reply) -> Join2Request:
        self._expect(JoinState.SENT_JOIN1)
        self.state = JoinState.FAILED
        self._key = _finish(self._pake, reply.pake)
        self._sid = reply.sid
        self._transcript = _transcript(self.code_id, reply.sid, self._pake_a, reply.pake)
        if not hmac.compare_digest(_confirm(self._key, b"inviter", self._transcript), reply.confirm):
            raise WrongCodeError(
                "the join code is wrong (or expired at the inviter and reused): ask the inviting "
                "device for a new code with `syncd facility invite`"
            )
        self.state = JoinState.SENT_JOIN2
        return Join2Request(reply.sid, _confirm(self._key, b"joiner", self._transcript))

    def receive_join2(self, reply: Join2Reply) -> Facility:
        self._expect(JoinState.SENT_JOIN2)
        self.state = JoinState.FAILED
        facility = _open(self._key, self._transcript, reply.box)
        self.state = JoinState.DONE
        return facility


class InviterHandshake:
    """The inviter's side for one join1 whose try was already spent:
    ``receive_join1(request)`` → reply; ``receive_join2(request)`` → the box, or
    ``WrongCodeError``. Each step once, in order."""

    def __init__(self, invite: Invite, facility: Facility, sid: bytes, *, entropy: Rng = os.urandom) -> None:
        if len(sid) != SID_LEN:
            raise LocalProtocolError(f"a session id is {SID_LEN} bytes")
        self.invite = invite
        self.sid = sid
        self._facility = facility
        self._pake = SPAKE2_B(invite.code_hash, idA=ID_JOINER, idB=ID_INVITER, entropy_f=entropy)
        self.state = JoinState.IDLE
        self._key = b""
        self._transcript = b""

    def receive_join1(self, request: Join1Request) -> Join1Reply:
        if self.state is not JoinState.IDLE:
            raise RemoteProtocolError("join1 was already received for this session")
        self.state = JoinState.FAILED
        if request.code_id != self.invite.code_id:
            raise LocalProtocolError("the request is for another invite")
        pake_b = self._pake.start()
        self._key = _finish(self._pake, request.pake)
        self._transcript = _transcript(request.code_id, self.sid, request.pake, pake_b)
        self.state = JoinState.AWAIT_JOIN2
        return Join1Reply(self.sid, pake_b, _confirm(self._key, b"inviter", self._transcript))

    def receive_join2(self, request: Join2Request) -> Join2Reply:
        if self.state is not JoinState.AWAIT_JOIN2:
            raise RemoteProtocolError(f"join2 is not expected now (session is {self.state.value})")
        self.state = JoinState.FAILED
        if not hmac.compare_digest(request.sid, self.sid):
            raise RemoteProtocolError("join2 for another session")
        if not hmac.compare_digest(_confirm(self._key, b"joiner", self._transcript), request.confirm):
            raise WrongCodeError("the joiner used a wrong code")
        self.state = JoinState.DONE
        return Join2Reply(_seal(self._key, self._transcript, self._facility))


# --- the inviter's shell: POST /join/v1 ---------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SpendTry = Callable[[str, float], Awaitable[Invite | None]]
ConsumeInvite = Callable[[str], Awaitable[None]]
CurrentFacility = Callable[[], Facility | None]


def _reply(message: JoinMessage, status: int = 200) -> web.Response:
    return web.Response(body=encode_message(message), status=status, content_type=CONTENT_TYPE)


def _refuse(status: int, code: str, detail: str) -> web.Response:
    return _reply(JoinRefusal(code, detail), status)


async def _read_capped(stream: aiohttp.StreamReader, declared: int | None, limit: int) -> bytes | None:
    """A whole body, or None if it is over ``limit`` (refused on the declared length
    before a byte is read)."""
    if declared is not None and declared > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None


def make_join_handler(
    spend_try: SpendTry,
    consume: ConsumeInvite,
    current_facility: CurrentFacility,
    *,
    clock: Callable[[], float] = time.time,
    entropy: Rng = os.urandom,
    session_ttl: float = 60.0,
    max_sessions: int = 16,
) -> Handler:
    """The ``POST /join/v1`` handler of the inviter's peer app.

    ``spend_try(code_id, now)`` atomically takes one try from the live invite
    ``code_id`` and returns it as it was, or None if there is none (durably: a restart
    must not give tries back). ``consume(code_id)`` kills the invite after a join.
    ``current_facility()`` is what is handed out. Half-done handshakes live in memory for
    ``session_ttl`` seconds, at most ``max_sessions`` at once.
    """
    pending: dict[bytes, tuple[InviterHandshake, float]] = {}

    def purge(now: float) -> None:
        for sid in [sid for sid, (_, deadline) in pending.items() if deadline <= now]:
            del pending[sid]

    async def handle(request: web.Request) -> web.StreamResponse:
        peer = request.remote or "?"
        body = await _read_capped(request.content, request.content_length, MAX_JOIN_FRAME)
        if body is None:
            return _refuse(413, "malformed", f"a join frame is at most {MAX_JOIN_FRAME} bytes")
        try:
            message = decode_request(body)
        except RemoteProtocolError as exc:
            log.warning("join from %s refused: %s", peer, exc.detail)
            return _refuse(400, "malformed", exc.detail)
        now = clock()
        purge(now)
        if isinstance(message, Join1Request):
            return await join1(message, now, peer)
        return await join2(message, peer)

    async def join1(message: Join1Request, now: float, peer: str) -> web.Response:
        facility = current_facility()
        if facility is None:
            return _refuse(409, "no_facility", "this device belongs to no facility")
        if len(pending) >= max_sessions:
            return _refuse(503, "busy", "too many joins in progress; try again in a minute")
        invite = await spend_try(message.code_id, now)
        if invite is None:
            log.warning("join from %s: no live invite %s", peer, message.code_id)
            return _refuse(404, "no_invite", f"no live invite {message.code_id} here (expired, used, or out of tries)")
        sid = entropy(SID_LEN)
        handshake = InviterHandshake(invite, facility, sid, entropy=entropy)
        try:
            reply = await asyncio.to_thread(handshake.receive_join1, message)
        except RemoteProtocolError as exc:
            log.warning("join from %s refused: %s (a try of invite %s used)", peer, exc.detail, message.code_id)
            return _refuse(400, "malformed", exc.detail)
        pending[sid] = (handshake, now + session_ttl)
        log.info("join from %s: invite %s, %d tries left", peer, invite.code_id, invite.tries_left - 1)
        return _reply(reply)

    async def join2(message: Join2Request, peer: str) -> web.Response:
        entry = pending.pop(message.sid, None)
        if entry is None:
            return _refuse(409, "unknown_session", "no join in progress with this session id (expired or finished)")
        handshake = entry[0]
        try:
            reply = handshake.receive_join2(message)
        except WrongCodeError:
            log.warning("join from %s: wrong code for invite %s", peer, handshake.invite.code_id)
            return _refuse(403, "wrong_code", "the join code is wrong")
        except RemoteProtocolError as exc:
            return _refuse(400, "malformed", exc.detail)
        await consume(handshake.invite.code_id)
        log.info("join from %s: invite %s used, facility handed over", peer, handshake.invite.code_id)
        return _reply(reply)

    return handle


# --- the joiner's shell --------------------------------------------------------------------------


def join_client_ssl_context() -> ssl.SSLContext:
    """TLS for the join client. The inviter's certificate is self-signed and the joiner
    has nothing yet to check it against: SPAKE2 authenticates the inviter and the box
    is encrypted under the PAKE key, so TLS here only hides the exchange."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _url(host: str, port: int, tls: bool) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{'https' if tls else 'http'}://{shown}:{port}{JOIN_PATH}"


def _raise_refusal(refusal: JoinRefusal, where: str) -> NoReturn:
    detail = f"{where}: {refusal.detail}"
    if refusal.code == "no_invite":
        raise InviteUnavailableError(detail)
    if refusal.code == "wrong_code":
        raise WrongCodeError(detail)
    if refusal.code == "no_facility":
        raise NotMemberError(detail)
    raise JoinError(f"{where} refused the join ({refusal.code}): {refusal.detail}")


async def _post(session: aiohttp.ClientSession, url: str, frame: bytes, ssl_context: ssl.SSLContext | None) -> tuple[int, bytes]:
    async with session.post(
        url, data=frame, headers={"Content-Type": CONTENT_TYPE}, ssl=ssl_context if ssl_context is not None else True
    ) as response:
        body = await _read_capped(response.content, response.content_length, MAX_JOIN_FRAME)
        if body is None:
            raise RemoteProtocolError(f"join reply over {MAX_JOIN_FRAME} bytes", status_hint=413)
        return response.status, body


async def join_via(
    host: str,
    port: int,
    code: str,
    ssl_context: ssl.SSLContext | None,
    *,
    timeout: float = 20.0,
    entropy: Rng = os.urandom,
) -> Facility:
    """Run the join handshake with the inviter at ``host:port`` (HTTPS with
    ``ssl_context``; plain HTTP if None, for tests) and return the facility.

    Raises ``InvalidCodeError`` (not a code), ``WrongCodeError`` (found locally),
    ``InviteUnavailableError`` (no live invite with this code id there), ``JoinError``
    (unreachable, refused, not a syncd peer) or ``RemoteProtocolError``.
    """
    handshake = JoinerHandshake(code, entropy=entropy)
    where = f"{host}:{port}"
    url = _url(host, port, ssl_context is not None)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            request1 = await asyncio.to_thread(handshake.start)
            status, body = await _post(session, url, encode_message(request1), ssl_context)
            reply1 = _decode_or_fail(body, Join1Reply, status, where)
            request2 = await asyncio.to_thread(handshake.receive_join1, reply1)
            status, body = await _post(session, url, encode_message(request2), ssl_context)
            reply2 = _decode_or_fail(body, Join2Reply, status, where)
            return handshake.receive_join2(reply2)
    except (aiohttp.ClientError, OSError) as exc:
        raise JoinError(f"cannot reach the inviter at {where}: {exc}") from None
    except asyncio.TimeoutError:
        raise JoinError(f"the inviter at {where} did not answer within {timeout} s") from None


def _decode_or_fail(body: bytes, expected: type[M], status: int, where: str) -> M:
    try:
        reply = decode_reply(body, expected)
    except RemoteProtocolError as exc:
        if status != 200:
            raise JoinError(f"{where} is not a syncd inviter (HTTP {status})") from None
        raise RemoteProtocolError(f"{where}: {exc.detail}") from None
    if isinstance(reply, JoinRefusal):
        _raise_refusal(reply, where)
    if status != 200:
        raise JoinError(f"{where} answered HTTP {status} with a {expected.__name__}")
    return reply

