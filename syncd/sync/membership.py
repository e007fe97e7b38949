"""Facility membership, pure: facilities, join codes, join files, revocations (DESIGN §7).

No I/O, no clock, no global randomness: ``now`` and ``rng`` (``rng(n) -> n random
bytes``, e.g. ``secrets.token_bytes``) are parameters.

* **Facility** ``{facility_id, dataset_id, name, secret}``: the unit of trust. The
  256-bit ``secret`` is what membership proofs, the mDNS tag and bundle keys derive from;
  it never appears in a ``repr`` and never crosses the network outside the join box.
* **Join code**: 10 digits, shown as ``12-3456-7890``. The first two digits are the
  public ``code_id`` (a "nameplate", as in magic-wormhole): it tells the inviter which of
  its live invites the joiner means, and is sent in the clear. The SPAKE2 password is
  ``code_hash(code)``: 26.6 bits of the code nobody on the wire learns, guessable only
  online, one guess per handshake, and every handshake spends one of the invite's 5 tries
  (see ``sync/join.py`` for why the try is spent at the start, not on failure). Digits
  only: a 4-word form would add a word list and nothing an SPAKE2 code needs.
* **Join file**: ``syncd-join:1:<base64url(json)>``, the facility itself (full entropy)
  for offline joins, with an 8-byte check so a garbled copy (OCR, truncation) is refused
  rather than joined to a facility that does not exist.
* **Revocation**: ``(device_id, revoked_at, by_device, by_key, signature)``, signed with
  the revoking device's Ed25519 key over the facility id too, so it verifies anywhere
  without a lookup and cannot be replayed into another facility. Every member holds the
  secret, so the signature says *who* revoked, not that they were allowed to: any
  non-revoked member may revoke. A revocation is permanent; the earliest one wins.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import struct
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from syncd.errors import SyncdError

__all__ = [
    "AlreadyMemberError",
    "CODE_DIGITS",
    "Facility",
    "INVITE_TRIES",
    "INVITE_TTL_S",
    "InvalidCodeError",
    "InvalidFacilityError",
    "InvalidJoinFileError",
    "InvalidRevocationError",
    "Invite",
    "InviteUnavailableError",
    "JOIN_FILE_PREFIX",
    "MembershipError",
    "NotMemberError",
    "Revocation",
    "Rng",
    "WrongCodeError",
    "check_can_create",
    "check_can_join",
    "check_can_revoke",
    "code_hash",
    "code_id_of",
    "decode_join_file",
    "decode_revocation",
    "encode_join_file",
    "encode_revocation",
    "facility_tag",
    "format_code",
    "make_invite",
    "merge_revocations",
    "mint_facility",
    "parse_code",
    "sign_revocation",
    "verify_revocation",
]

Rng = Callable[[int], bytes]

INVITE_TTL_S = 30 * 60
INVITE_TRIES = 5
CODE_DIGITS = 10
CODE_ID_DIGITS = 2
MAX_LIVE_INVITES = 20            # of the 100 code ids, so a fresh one is quick to draw
MAX_NAME_CHARS = 100             # Kolibri's Facility.name max_length
JOIN_FILE_PREFIX = "syncd-join:1:"
MAX_JOIN_FILE_CHARS = 2048

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


# --- errors ---------------------------------------------------------------------------


class MembershipError(SyncdError):
    """A membership operation was refused."""

    code = "membership_error"
    status = 409


class AlreadyMemberError(MembershipError):
    """This device already belongs to a (different) facility."""

    code = "already_member"
    status = 409


class NotMemberError(MembershipError):
    """This device belongs to no facility (create or join one first)."""

    code = "no_facility"
    status = 409


class InvalidFacilityError(MembershipError):
    """Facility fields out of shape (ids not 32 hex, empty name, short secret, ...)."""

    code = "invalid_facility"
    status = 400


class InvalidCodeError(MembershipError):
    """The text is not a join code (10 digits; spaces and dashes are ignored)."""

    code = "invalid_code"
    status = 400


class WrongCodeError(MembershipError):
    """The join handshake failed: the code is wrong (or the other side is not the inviter)."""

    code = "wrong_code"
    status = 403


class InviteUnavailableError(MembershipError):
    """No live invite for this code here: unknown, expired, used, or out of tries."""

    code = "no_invite"
    status = 404


class InvalidJoinFileError(MembershipError):
    """A join file that is not exactly what ``encode_join_file`` writes."""

    code = "invalid_join_file"
    status = 400


class InvalidRevocationError(MembershipError):
    """A revocation that is malformed, for another facility, or badly signed."""

    code = "invalid_revocation"
    status = 400


# --- the facility ---------------------------------------------------------------------


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidFacilityError("the facility name must be text")
    if name != name.strip() or not name:
        raise InvalidFacilityError("the facility name must be non-empty, without leading or trailing spaces")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidFacilityError(f"the facility name is over {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise InvalidFacilityError("the facility name holds control characters")
    return name


@dataclass(frozen=True)
class Facility:
    """A school. Construction validates every field; the secret never shows in a repr."""

    facility_id: str
    dataset_id: str
    name: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for label, value in (("facility_id", self.facility_id), ("dataset_id", self.dataset_id)):
            if not isinstance(value, str) or not _HEX32.match(value):
                raise InvalidFacilityError(f"{label} must be 32 lowercase hex digits")
        _check_name(self.name)
        if not isinstance(self.secret, bytes) or len(self.secret) != 32:
            raise InvalidFacilityError("the facility secret must be 32 bytes")

    @property
    def tag(self) -> str:
        return facility_tag(self.secret)


def mint_facility(name: str, rng: Rng) -> Facility:
    """A new facility: random ids and a 256-bit secret."""
    _check_name(name)
    return Facility(rng(16).hex(), rng(16).hex(), name, rng(32))


def facility_tag(secret: bytes) -> str:
    """HMAC-SHA256(secret, "mdns-tag")[:8] as 16 hex: in hellos and the mDNS TXT. It tells
    members of one facility apart from others without naming the facility."""
    return hmac.new(secret, b"mdns-tag", hashlib.sha256).digest()[:8].hex()


# --- pure rules -------------------------------------------------------------------------


def check_can_create(current: Facility | None) -> None:
    """A device belongs to at most one facility."""
    if current is not None:
        raise AlreadyMemberError(
            f"this device already belongs to facility {current.name!r} ({current.facility_id}); "
            "a device belongs to at most one facility"
        )


def check_can_join(current: Facility | None, incoming: Facility) -> None:
    """Joining keeps the device's data, so it is refused if the device is in another
    facility. Joining the facility it is already in is allowed (a device that missed a
    secret rotation joins again); the dataset id of one facility never changes."""
    if current is None:
        return
    if current.facility_id != incoming.facility_id:
        raise AlreadyMemberError(
            f"this device belongs to facility {current.name!r} ({current.facility_id}), "
            f"not {incoming.name!r} ({incoming.facility_id}); a device belongs to at most one facility"
        )
    if current.dataset_id != incoming.dataset_id:
        raise AlreadyMemberError(
            f"facility {current.facility_id} has dataset {current.dataset_id} here but "
            f"{incoming.dataset_id} at the inviter; refusing to mix them"
        )


def check_can_revoke(own_device_id: str, device_id: str) -> None:
    if not isinstance(device_id, str) or not _HEX64.match(device_id):
        raise InvalidRevocationError("a device id is 64 lowercase hex digits")
    if device_id == own_device_id:
        raise InvalidRevocationError("a device cannot revoke itself; revoke it from another member")


# --- join codes and invites --------------------------------------------------------------


def _random_below(bound: int, rng: Rng) -> int:
    """Uniform in [0, bound) by rejection sampling (no modulo bias)."""
    span = 1 << 64
    limit = span - span % bound
    while True:
        value = int.from_bytes(rng(8), "big")
        if value < limit:
            return value % bound


def parse_code(text: str) -> str:
    """The canonical 10 digits of a join code typed by a person ("12-3456 7890")."""
    if not isinstance(text, str):
        raise InvalidCodeError("a join code is text")
    digits = re.sub(r"[\s-]", "", text)
    if not re.fullmatch(rf"[0-9]{{{CODE_DIGITS}}}", digits):
        raise InvalidCodeError(f"a join code is {CODE_DIGITS} digits (spaces and dashes are ignored)")
    return digits


def format_code(code: str) -> str:
    """``1234567890`` -> ``12-3456-7890`` (the code id first)."""
    code = parse_code(code)
    return f"{code[:2]}-{code[2:6]}-{code[6:]}"


def code_id_of(code: str) -> str:
    """The public part of a code: which invite the joiner means."""
    return parse_code(code)[:CODE_ID_DIGITS]


def code_hash(code: str) -> bytes:
    """The SPAKE2 password of a code. Stored instead of the code itself."""
    return hashlib.sha256(b"syncd-join-code-v1\x00" + parse_code(code).encode("ascii")).digest()


@dataclass(frozen=True)
class Invite:
    """An invite as the inviter keeps it: the code is not kept, only its hash."""

    code_id: str
    code_hash: bytes = field(repr=False)
    expires_at: float
    tries_left: int

    def is_live(self, now: float) -> bool:
        return now < self.expires_at and self.tries_left > 0

    def spend_try(self, now: float) -> Invite:
        """The invite with one try fewer; refused once it is dead (expired or used up)."""
        if not self.is_live(now):
            raise InviteUnavailableError(f"invite {self.code_id} has expired or has no tries left")
        return replace(self, tries_left=self.tries_left - 1)


def make_invite(now: float, rng: Rng, taken: Collection[str] = ()) -> tuple[str, Invite]:
    """(code, invite): a fresh 10-digit code whose code id is not in ``taken`` (the code
    ids of this device's live invites), valid 30 minutes, 5 tries."""
    if len(set(taken)) >= MAX_LIVE_INVITES:
        raise MembershipError(f"{MAX_LIVE_INVITES} invites are already live here; wait for some to expire")
    while True:
        code = f"{_random_below(10**CODE_DIGITS, rng):0{CODE_DIGITS}d}"
        if code[:CODE_ID_DIGITS] not in taken:
            break
    return code, Invite(code[:CODE_ID_DIGITS], code_hash(code), now + INVITE_TTL_S, INVITE_TRIES)


# --- join files ----------------------------------------------------------------------------


def _join_file_check(facility_id: str, dataset_id: str, name: str, secret: bytes) -> str:
    body = "\x00".join((facility_id, dataset_id, name)).encode("utf-8")
    return hmac.new(secret, b"syncd-join-file-v1\x00" + body, hashlib.sha256).digest()[:8].hex()


def encode_join_file(facility: Facility) -> str:
    """The facility as one line of ASCII (QR-able). Whoever holds it is a member."""
    fields = {
        "facility_id": facility.facility_id,
        "dataset_id": facility.dataset_id,
        "name": facility.name,
        "secret": facility.secret.hex(),
        "check": _join_file_check(facility.facility_id, facility.dataset_id, facility.name, facility.secret),
    }
    raw = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return JOIN_FILE_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise InvalidJoinFileError("the join file repeats a field")
    return dict(pairs)


def _refuse_constant(name: str) -> Any:
    raise InvalidJoinFileError(f"the join file holds {name}")


def decode_join_file(text: str) -> Facility:
    """The facility of a join file; anything but exactly what ``encode_join_file`` wrote
    (surrounding whitespace aside) raises ``InvalidJoinFileError``."""
    if not isinstance(text, str):
        raise InvalidJoinFileError("a join file is text")
    text = text.strip()
    if len(text) > MAX_JOIN_FILE_CHARS:
        raise InvalidJoinFileError(f"a join file is at most {MAX_JOIN_FILE_CHARS} characters")
    if not text.startswith(JOIN_FILE_PREFIX):
        raise InvalidJoinFileError(f"a join file starts with {JOIN_FILE_PREFIX!r}")
    payload = text[len(JOIN_FILE_PREFIX):]
    if not _B64URL.match(payload) or len(payload) % 4 == 1:
        raise InvalidJoinFileError("the join file is garbled (not base64url)")
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        fields = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidJoinFileError("the join file is garbled") from None
    expected = {"facility_id", "dataset_id", "name", "secret", "check"}
    if not isinstance(fields, dict) or set(fields) != expected:
        raise InvalidJoinFileError(f"the join file must hold exactly {sorted(expected)}")
    if not all(isinstance(fields[key], str) for key in expected):
        raise InvalidJoinFileError("every field of a join file is text")
    if not _HEX64.match(fields["secret"]) or not re.fullmatch(r"[0-9a-f]{16}", fields["check"]):
        raise InvalidJoinFileError("the join file's secret or check is not lowercase hex of the right length")
    try:
        facility = Facility(fields["facility_id"], fields["dataset_id"], fields["name"], bytes.fromhex(fields["secret"]))
    except InvalidFacilityError as exc:
        raise InvalidJoinFileError(f"the join file's facility is invalid: {exc.detail}") from None
    check = _join_file_check(facility.facility_id, facility.dataset_id, facility.name, facility.secret)
    if not hmac.compare_digest(check, fields["check"]):
        raise InvalidJoinFileError("the join file's check does not match: it was altered or garbled")
    if encode_join_file(facility) != text:
        raise InvalidJoinFileError("the join file is not in canonical form")
    return facility


# --- revocations ------------------------------------------------------------------------------


def _public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _revocation_payload(facility_id: str, device_id: str, revoked_at: float, by_device: str) -> bytes:
    return b"\x00".join(
        (b"syncd-revoke-v1", facility_id.encode(), device_id.encode(), struct.pack(">d", revoked_at), by_device.encode())
    )


@dataclass(frozen=True)
class Revocation:
    """``by_device`` (= SHA-256 of ``by_key``) revoked ``device_id`` at ``revoked_at``."""

    device_id: str
    revoked_at: float
    by_device: str
    by_key: bytes
    signature: bytes


def sign_revocation(facility_id: str, device_id: str, now: float, key: Ed25519PrivateKey) -> Revocation:
    public = _public_bytes(key)
    by_device = hashlib.sha256(public).hexdigest()
    signature = key.sign(_revocation_payload(facility_id, device_id, now, by_device))
    return Revocation(device_id, now, by_device, public, signature)


def verify_revocation(revocation: Revocation, facility_id: str) -> None:
    """Raise ``InvalidRevocationError`` unless ``revocation`` is well formed, for
    ``facility_id``, and signed by the key whose hash is ``by_device``."""
    r = revocation
    if not (isinstance(r.device_id, str) and _HEX64.match(r.device_id)):
        raise InvalidRevocationError("the revoked device id is not 64 hex")
    if not (isinstance(r.by_device, str) and _HEX64.match(r.by_device)):
        raise InvalidRevocationError("the revoking device id is not 64 hex")
    if not isinstance(r.revoked_at, float) or not math.isfinite(r.revoked_at) or r.revoked_at < 0:
        raise InvalidRevocationError("revoked_at is not a finite time")
    if not isinstance(r.by_key, bytes) or len(r.by_key) != 32 or not isinstance(r.signature, bytes) or len(r.signature) != 64:
        raise InvalidRevocationError("a revocation carries a 32-byte key and a 64-byte signature")
    if not hmac.compare_digest(hashlib.sha256(r.by_key).hexdigest(), r.by_device):
        raise InvalidRevocationError("the revoking key does not hash to the revoking device id")
    try:
        Ed25519PublicKey.from_public_bytes(r.by_key).verify(
            r.signature, _revocation_payload(facility_id, r.device_id, r.revoked_at, r.by_device)
        )
    except (InvalidSignature, ValueError):
        raise InvalidRevocationError("the revocation's signature does not verify for this facility") from None


def encode_revocation(revocation: Revocation) -> bytes:
    """Canonical JSON bytes (stored in ``devices.revocation``, synced as they are)."""
    r = revocation
    value = {
        "device_id": r.device_id,
        "revoked_at": r.revoked_at,
        "by_device": r.by_device,
        "by_key": r.by_key.hex(),
        "signature": r.signature.hex(),
    }
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("ascii")


def decode_revocation(data: bytes, facility_id: str) -> Revocation:
    """Parse and verify; anything off raises ``InvalidRevocationError``."""
    if not isinstance(data, bytes) or len(data) > 1024:
        raise InvalidRevocationError("a revocation is at most 1 KiB of JSON")
    try:
        value = json.loads(data.decode("ascii"), parse_constant=_refuse_revocation_constant)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRevocationError("the revocation is not JSON") from None
    keys = {"device_id", "revoked_at", "by_device", "by_key", "signature"}
    if not isinstance(value, dict) or set(value) != keys:
        raise InvalidRevocationError(f"a revocation holds exactly {sorted(keys)}")
    at = value["revoked_at"]
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        raise InvalidRevocationError("revoked_at is not a number")
    try:
        by_key = bytes.fromhex(value["by_key"])
        signature = bytes.fromhex(value["signature"])
    except (TypeError, ValueError):
        raise InvalidRevocationError("by_key and signature are hex") from None
    revocation = Revocation(value["device_id"], float(at), value["by_device"], by_key, signature)
    verify_revocation(revocation, facility_id)
    return revocation


def _refuse_revocation_constant(name: str) -> Any:
    raise InvalidRevocationError(f"the revocation holds {name}")


def merge_revocations(
    known: Mapping[str, Revocation], incoming: Iterable[Revocation]
) -> dict[str, Revocation]:
    """The union, keyed by revoked device: per device the earliest revocation wins (ties:
    the smaller revoking device id), so every device converges on the same list."""
    merged = dict(known)
    for revocation in incoming:
        current = merged.get(revocation.device_id)
        if current is None or (revocation.revoked_at, revocation.by_device) < (current.revoked_at, current.by_device):
            merged[revocation.device_id] = revocation
    return merged
