"""The membership proof of a sync session (DESIGN §7, docs/sync.md "Membership proof").

Pure functions (hashing, HMAC, Ed25519, AEAD; no I/O, no clock)::

    transcript = SHA-256("syncd-hello-v2" ‖ fields(hello_c) ‖ fields(hello_s))
    mac_role   = HMAC-SHA256(secret, "syncd-proof-v1" ‖ role ‖ transcript ‖ server_cert_der)
    sig_c      = Ed25519(device_key_c, "syncd-sig-v1" ‖ transcript ‖ server_cert_der)
    box        = ChaCha20-Poly1305(HMAC(secret, "syncd-seal-v1" ‖ transcript ‖ cert),
                                   nonce 0, subscription, aad "syncd-sub-v1")

``fields(h)`` is each hello field length-prefixed in a fixed order, so the transcript does
not depend on how a msgpack library happens to pack a map. Both nonces, both device
ids and both instance ids are in it; the role is in the MAC: a proof replayed into another session, relayed
from another connection (the certificate differs) or reflected to its sender fails.
The client's subscription is sealed under a key only a member can derive, so a server
that has not yet proved itself learns no learner id.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Literal

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from syncd.errors import RemoteProtocolError
from syncd.sync.membership import Facility, facility_tag
from syncd.sync.messages import Hello, Subscription

__all__ = [
    "Facility", "Role", "client_signature", "device_id_of", "facility_tag", "open_subscription",
    "proof_mac", "public_bytes", "seal_subscription", "transcript", "verify_client_key", "verify_mac",
]

Role = Literal["client", "server"]
_SEAL_NONCE = bytes(12)     # one sealing per key: the key is bound to both session nonces
_SEAL_AAD = b"syncd-sub-v1"


def _field(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _hello_fields(h: Hello) -> bytes:
    return b"".join(_field(x) for x in (
        struct.pack(">HH", h.version, h.min_version), h.device.encode("ascii"), h.tag.encode("ascii"),
        h.nonce, struct.pack(">d", h.clock), h.epoch.encode("ascii"), (h.instance or "").encode("ascii"),
    ))


def transcript(hello_c: Hello, hello_s: Hello) -> bytes:
    """The hash both proofs bind: every field of both hellos, client's first."""
    return hashlib.sha256(b"syncd-hello-v2" + _hello_fields(hello_c) + _hello_fields(hello_s)).digest()


def proof_mac(secret: bytes, role: Role, transcript_hash: bytes, server_cert: bytes) -> bytes:
    return hmac.new(secret, b"syncd-proof-v1" + role.encode() + transcript_hash + server_cert, hashlib.sha256).digest()


def verify_mac(secret: bytes, role: Role, transcript_hash: bytes, server_cert: bytes, mac: bytes) -> bool:
    """Constant-time check of a peer's MAC for ``role``."""
    return hmac.compare_digest(proof_mac(secret, role, transcript_hash, server_cert), mac)


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def device_id_of(public_key: bytes) -> str:
    """A device id: hex SHA-256 of the raw Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()


def client_signature(key: Ed25519PrivateKey, transcript_hash: bytes, server_cert: bytes) -> bytes:
    return key.sign(b"syncd-sig-v1" + transcript_hash + server_cert)


def verify_client_key(public_key: bytes, device_id: str, sig: bytes, transcript_hash: bytes, server_cert: bytes) -> str | None:
    """None if ``public_key`` is ``device_id``'s key and signed this session; else why not."""
    if not hmac.compare_digest(device_id_of(public_key), device_id):
        return "the public key does not hash to the device id"
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, b"syncd-sig-v1" + transcript_hash + server_cert)
    except (InvalidSignature, ValueError):
        return "the device signature does not verify"
    return None


def _seal_key(secret: bytes, transcript_hash: bytes, server_cert: bytes) -> bytes:
    return hmac.new(secret, b"syncd-seal-v1" + transcript_hash + server_cert, hashlib.sha256).digest()


def _sub_bytes(subscription: Subscription) -> bytes:
    return b"all" if subscription == "all" else b"".join(bytes.fromhex(u) for u in sorted(subscription))


def seal_subscription(secret: bytes, transcript_hash: bytes, server_cert: bytes, subscription: Subscription) -> bytes:
    """The client's subscription, readable only by a holder of the facility secret."""
    aead = ChaCha20Poly1305(_seal_key(secret, transcript_hash, server_cert))
    return aead.encrypt(_SEAL_NONCE, _sub_bytes(subscription), _SEAL_AAD)


def open_subscription(secret: bytes, transcript_hash: bytes, server_cert: bytes, box: bytes) -> Subscription:
    """Inverse of ``seal_subscription``; RemoteProtocolError if it does not open."""
    try:
        plain = ChaCha20Poly1305(_seal_key(secret, transcript_hash, server_cert)).decrypt(_SEAL_NONCE, box, _SEAL_AAD)
    except InvalidTag:
        raise RemoteProtocolError("the sealed subscription does not open") from None
    if plain == b"all":
        return "all"
    if len(plain) % 16:
        raise RemoteProtocolError("the sealed subscription is not a list of user ids")
    return frozenset(plain[i:i + 16].hex() for i in range(0, len(plain), 16))
