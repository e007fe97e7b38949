"""TLS for the peer port: a self-signed certificate made from the device's Ed25519 key.

TLS gives confidentiality only. Nobody verifies the chain: who a peer is comes from the
membership proof, which binds the server certificate *as the client observed it*
(``peer_certificate``), so a man in the middle with its own certificate breaks the proof.
Python's ``ssl`` (OpenSSL >= 1.1.1) serves and accepts Ed25519 certificates, so the
device key is the TLS key too (checked by ``tests/sync/test_transport.py``).

TLS 1.3 only: both ends are syncd, and 1.3 encrypts the server certificate, so a
passive listener does not learn device keys (hence device ids) from handshakes.

``device.crt`` (PEM, 0600) lives beside ``device.key`` in the state dir; it is remade
whenever it does not match the key (a new identity after a move, say).
"""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from syncd.errors import StoreError

CERT_FILE = "device.crt"
KEY_FILE = "device.key"      # written by store/statedir.py; the TLS key is the device key
_VALIDITY = datetime.timedelta(days=100 * 365)


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _matches(cert: x509.Certificate, key: Ed25519PrivateKey) -> bool:
    public = cert.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw == _raw_public(key)


def make_certificate(key: Ed25519PrivateKey, *, now: datetime.datetime | None = None) -> x509.Certificate:
    """A self-signed certificate for ``key`` (CN "syncd": no device or facility name)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncd")])
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + _VALIDITY)
        .sign(key, None)
    )


def load_or_create_certificate(state_dir: Path, key: Ed25519PrivateKey) -> bytes:
    """The DER of ``<state_dir>/device.crt``, created (0600, atomically) if missing or
    not made from ``key``."""
    path = Path(state_dir) / CERT_FILE
    if path.exists():
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            if _matches(cert, key):
                return cert.public_bytes(serialization.Encoding.DER)
        except ValueError:
            pass      # unreadable: make a new one
    cert = make_certificate(key)
    tmp = path.with_suffix(".crt.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return cert.public_bytes(serialization.Encoding.DER)


def server_ssl_context(state_dir: Path, key: Ed25519PrivateKey) -> ssl.SSLContext:
    """The peer server's context: ``device.crt`` + ``device.key`` from ``state_dir``."""
    state_dir = Path(state_dir)
    load_or_create_certificate(state_dir, key)
    key_path = state_dir / KEY_FILE
    try:
        on_disk = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{key_path}: cannot read the device key ({exc})") from None
    if not isinstance(on_disk, Ed25519PrivateKey) or _raw_public(on_disk) != _raw_public(key):
        raise StoreError(f"{key_path} is not this device's key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(state_dir / CERT_FILE, key_path)
    return ctx


def client_ssl_context() -> ssl.SSLContext:
    """Encrypt, verify nothing: the proof authenticates the server (it binds the
    certificate read back with ``peer_certificate``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes | None:
    """The DER certificate the server presented on this connection."""
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)
