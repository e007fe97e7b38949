"""Pure membership rules: facility, tag, codes and invites, join files, revocations."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncd.sync import membership as m

FAC = m.Facility("a" * 32, "b" * 32, "Kibera Primary", bytes(range(32)))


class CountingRng:
    """Deterministic bytes: a counter, so tests can see exactly what was drawn."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, size: int) -> bytes:
        out = hashlib.sha256(self.n.to_bytes(8, "big")).digest()[:size]
        self.n += 1
        return out


# --- facility and tag --------------------------------------------------------------------


def test_facility_tag_is_hmac_of_mdns_tag() -> None:
    expected = hmac.new(FAC.secret, b"mdns-tag", hashlib.sha256).digest()[:8].hex()
    assert m.facility_tag(FAC.secret) == expected == FAC.tag
    assert len(expected) == 16
    assert m.facility_tag(bytes(32)) != expected


def test_mint_facility_shapes_and_hides_secret() -> None:
    facility = m.mint_facility("École Sainte-Marie", os.urandom)
    assert len(facility.facility_id) == 32 and len(facility.dataset_id) == 32
    assert facility.facility_id != facility.dataset_id
    assert len(facility.secret) == 32
    assert facility.secret.hex() not in repr(facility) and "secret" not in repr(facility)


@pytest.mark.parametrize("name", ["", " padded", "x" * 101, "tab\there", 7])
def test_bad_facility_names_refused(name: object) -> None:
    with pytest.raises(m.InvalidFacilityError):
        m.mint_facility(name, os.urandom)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        {"facility_id": "A" * 32},
        {"facility_id": "a" * 31},
        {"dataset_id": "g" * 32},
        {"secret": bytes(31)},
        {"secret": "x" * 32},
    ],
)
def test_facility_fields_validated(fields: dict[str, object]) -> None:
    with pytest.raises(m.InvalidFacilityError):
        replace(FAC, **fields)  # type: ignore[arg-type]


def test_membership_rules() -> None:
    m.check_can_create(None)
    with pytest.raises(m.AlreadyMemberError):
        m.check_can_create(FAC)
    m.check_can_join(None, FAC)
    m.check_can_join(FAC, replace(FAC, secret=bytes(32)))  # same facility, newer secret: fine
    with pytest.raises(m.AlreadyMemberError, match="at most one facility"):
        m.check_can_join(FAC, replace(FAC, facility_id="c" * 32))
    with pytest.raises(m.AlreadyMemberError):
        m.check_can_join(FAC, replace(FAC, dataset_id="c" * 32))
    m.check_can_revoke("1" * 64, "2" * 64)
    with pytest.raises(m.InvalidRevocationError):
        m.check_can_revoke("1" * 64, "1" * 64)
    with pytest.raises(m.InvalidRevocationError):
        m.check_can_revoke("1" * 64, "xyz")


# --- codes and invites -------------------------------------------------------------------------


def test_make_invite_shape() -> None:
    code, invite = m.make_invite(1000.0, CountingRng())
    assert len(code) == 10 and code.isdigit()
    assert invite.code_id == code[:2]
    assert invite.code_hash == m.code_hash(code) and len(invite.code_hash) == 32
    assert invite.expires_at == 1000.0 + 30 * 60
    assert invite.tries_left == 5
    assert code not in repr(invite)
    assert m.format_code(code) == f"{code[:2]}-{code[2:6]}-{code[6:]}"


def test_make_invite_avoids_live_code_ids() -> None:
    taken = {f"{i:02d}" for i in range(0, 95, 5)}  # 19 live invites: one more fits
    drawn = {m.make_invite(0.0, os.urandom, taken=taken)[1].code_id for _ in range(200)}
    assert drawn and not drawn & taken
    with pytest.raises(m.MembershipError, match="already live"):
        m.make_invite(0.0, os.urandom, taken=taken | {"99"})


def test_code_digits_are_rejection_sampled() -> None:
    draws = [b"\xff" * 8, (1234567890).to_bytes(8, "big")]  # the first is above the limit
    code, _ = m.make_invite(0.0, lambda size: draws.pop(0))
    assert code == "1234567890"


def test_parse_code() -> None:
    assert m.parse_code("12-3456-7890") == "1234567890"
    assert m.parse_code(" 12 3456 7890\n") == "1234567890"
    assert m.code_id_of("12-3456-7890") == "12"
    assert m.code_hash("12-3456-7890") == m.code_hash("1234567890")
    for bad in ["123456789", "12345678901", "12345a7890", "", "１２３４５６７８９０"]:
        with pytest.raises(m.InvalidCodeError):
            m.parse_code(bad)


def test_invite_tries_and_expiry() -> None:
    _, invite = m.make_invite(0.0, os.urandom)
    for left in (4, 3, 2, 1, 0):
        invite = invite.spend_try(10.0)
        assert invite.tries_left == left
    assert not invite.is_live(10.0)
    with pytest.raises(m.InviteUnavailableError):
        invite.spend_try(10.0)
    _, fresh = m.make_invite(0.0, os.urandom)
    assert fresh.is_live(30 * 60 - 0.001)
    assert not fresh.is_live(30 * 60)
    with pytest.raises(m.InviteUnavailableError):
        fresh.spend_try(30 * 60)


# --- join files -----------------------------------------------------------------------------


def test_join_file_round_trip() -> None:
    text = m.encode_join_file(FAC)
    assert text.startswith("syncd-join:1:") and text.isascii() and "=" not in text
    assert len(text) < 400  # fits a QR code comfortably
    assert m.decode_join_file(text) == FAC
    assert m.decode_join_file(text + "\n") == FAC
    unicode_name = replace(FAC, name="École Ñandú 学校")
    assert m.decode_join_file(m.encode_join_file(unicode_name)) == unicode_name


def _payload(text: str) -> dict[str, str]:
    body = text[len(m.JOIN_FILE_PREFIX):]
    result: dict[str, str] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return result


def _wrap(raw: bytes) -> str:
    return m.JOIN_FILE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_join_file_tampering_refused() -> None:
    text = m.encode_join_file(FAC)
    fields = _payload(text)
    # every single-character change in the payload is refused
    body_start = len(m.JOIN_FILE_PREFIX)
    for index in range(body_start, len(text)):
        swapped = "A" if text[index] != "A" else "B"
        with pytest.raises(m.InvalidJoinFileError):
            m.decode_join_file(text[:index] + swapped + text[index + 1:])
    # a changed field with a stale check
    forged = dict(fields, name="Other School")
    with pytest.raises(m.InvalidJoinFileError, match="check"):
        m.decode_join_file(_wrap(json.dumps(forged, separators=(",", ":")).encode()))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-10],                                   # truncated
        lambda t: t.replace("syncd-join:1:", "syncd-join:2:"),  # other version
        lambda t: t + "==",                                  # padding
        lambda t: t[:20] + "*" + t[21:],                    # outside the alphabet
        lambda t: "",
        lambda t: t + "A" * 3000,                            # too long
    ],
)
def test_garbled_join_files_refused(mangle: object) -> None:
    with pytest.raises(m.InvalidJoinFileError):
        m.decode_join_file(mangle(m.encode_join_file(FAC)))  # type: ignore[operator]


def compact(value: object) -> str:
    return _wrap(json.dumps(value, separators=(",", ":")).encode())


def test_join_file_structure_strict() -> None:
    fields = _payload(m.encode_join_file(FAC))
    assert m.decode_join_file(compact(fields)) == FAC
    with pytest.raises(m.InvalidJoinFileError):
        m.decode_join_file(compact(dict(fields, extra="1")))
    with pytest.raises(m.InvalidJoinFileError):
        m.decode_join_file(compact({k: v for k, v in fields.items() if k != "check"}))
    with pytest.raises(m.InvalidJoinFileError):
        m.decode_join_file(compact(dict(fields, secret=fields["secret"].upper())))
    with pytest.raises(m.InvalidJoinFileError, match="canonical"):
        m.decode_join_file(_wrap(json.dumps(fields, indent=1).encode()))  # same fields, other bytes
    with pytest.raises(m.InvalidJoinFileError):
        m.decode_join_file(_wrap(b'{"facility_id":"a","facility_id":"b"}'))
    with pytest.raises(m.InvalidJoinFileError):
        m.decode_join_file(_wrap(b"[1, 2]"))
    with pytest.raises(m.InvalidJoinFileError):
        m.decode_join_file(_wrap(b"\xff\xfe"))


# --- revocations --------------------------------------------------------------------------------


def test_revocation_sign_verify_round_trip() -> None:
    key = Ed25519PrivateKey.generate()
    revocation = m.sign_revocation(FAC.facility_id, "d" * 64, 1_700_000_000.25, key)
    m.verify_revocation(revocation, FAC.facility_id)
    assert revocation.by_device == hashlib.sha256(revocation.by_key).hexdigest()
    data = m.encode_revocation(revocation)
    assert m.decode_revocation(data, FAC.facility_id) == revocation


@pytest.mark.parametrize(
    "change",
    [
        {"device_id": "e" * 64},
        {"revoked_at": 1_700_000_000.5},
        {"by_device": "f" * 64},
        {"signature": bytes(64)},
        {"by_key": Ed25519PrivateKey.generate().public_key().public_bytes_raw()},
        {"revoked_at": float("nan")},
        {"signature": b"short"},
    ],
)
def test_tampered_revocation_refused(change: dict[str, object]) -> None:
    revocation = m.sign_revocation(FAC.facility_id, "d" * 64, 1_700_000_000.25, Ed25519PrivateKey.generate())
    with pytest.raises(m.InvalidRevocationError):
        m.verify_revocation(replace(revocation, **change), FAC.facility_id)  # type: ignore[arg-type]


def test_revocation_bound_to_facility_and_signer() -> None:
    key = Ed25519PrivateKey.generate()
    revocation = m.sign_revocation(FAC.facility_id, "d" * 64, 5.0, key)
    with pytest.raises(m.InvalidRevocationError, match="signature"):
        m.verify_revocation(revocation, "c" * 32)
    # a consistent (key, id) pair that did not sign it
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    forged = replace(revocation, by_key=other, by_device=hashlib.sha256(other).hexdigest())
    with pytest.raises(m.InvalidRevocationError, match="signature"):
        m.verify_revocation(forged, FAC.facility_id)


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"[]", b'{"device_id": 1}', b"NaN", b"x" * 2000]
)
def test_garbled_revocations_refused(data: bytes) -> None:
    with pytest.raises(m.InvalidRevocationError):
        m.decode_revocation(data, FAC.facility_id)


def test_merge_revocations_earliest_wins_in_any_order() -> None:
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    late = m.sign_revocation(FAC.facility_id, "d" * 64, 20.0, k1)
    early = m.sign_revocation(FAC.facility_id, "d" * 64, 10.0, k2)
    other = m.sign_revocation(FAC.facility_id, "e" * 64, 30.0, k1)
    one = m.merge_revocations({}, [late, early, other])
    two = m.merge_revocations(m.merge_revocations({}, [other, early]), [late])
    assert one == two
    assert one["d" * 64] == early and one["e" * 64] == other
