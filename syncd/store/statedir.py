"""The state directory: its exclusive lock and this device's identity.

* The directory is locked with ``flock`` for the life of the daemon: two daemons on one
  state dir would reuse CRDT op ids and silently drop writes (DESIGN §3).
* ``device_id`` = hex SHA-256 of the device's Ed25519 public key (``device.key``, 0600).
* Every start takes a fresh random 64-bit Loro peer id, committed to ``meta`` before the
  first write, so a restart never reuses an op id of a write that was not committed.
* Every start also takes a random *instance id* (32 hex), which peer sync puts in its
  hellos: a state dir cloned together with /etc/machine-id keeps the device id, key and
  epoch below, and only the instance tells the clones apart (docs/sync.md "Instances").
* ``meta`` remembers the machine id the identity was made on. A state dir that shows up
  on another machine (a cloned tablet image, a copied backup) gets a new device id and a
  new epoch, with a loud log line: peers then treat it as a new device.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from syncd.errors import StoreError

log = logging.getLogger(__name__)

KEY_FILE = "device.key"
LOCK_FILE = "lock"


class StateDirLockedError(StoreError):
    """Another daemon holds the state directory."""

    code = "state_dir_locked"


@dataclass(frozen=True)
class Identity:
    device_id: str
    epoch: str
    peer_id: int
    instance_id: str            # random per start: tells this daemon from a clone of its state dir
    private_key: Ed25519PrivateKey
    public_key: bytes


class StateDirLock:
    """An exclusive ``flock`` on ``<state_dir>/lock``; released on close or process death."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise StateDirLockedError(
                f"state dir {state_dir} is in use by another syncd (pid {holder}); "
                "stop it first or use another state_dir"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def machine_id() -> str:
    """This machine's id (systemd's machine-id); ``SYNCD_MACHINE_ID`` overrides it so tests
    can play a state dir moved to another machine."""
    override = os.environ.get("SYNCD_MACHINE_ID")
    if override:
        return override.strip()
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(candidate).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return "unknown"


def _load_or_create_key(path: Path, *, fresh: bool) -> Ed25519PrivateKey:
    if path.exists() and not fresh:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise StoreError(f"{path} is not an Ed25519 key")
        return loaded
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return key


def _public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def establish_identity(conn: sqlite3.Connection, state_dir: Path) -> Identity:
    """Read or create the identity in ``meta`` (autocommit ``conn``) and commit a fresh
    peer id for this start."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    here = machine_id()
    key_path = state_dir / KEY_FILE
    moved = "machine_id" in meta and meta["machine_id"] != here
    key = _load_or_create_key(key_path, fresh=moved)
    device_id = hashlib.sha256(_public_bytes(key)).hexdigest()
    epoch = meta.get("epoch", "")
    if moved or meta.get("device_id") != device_id or not epoch:
        if moved:
            log.warning(
                "state dir %s was made on machine %s and now runs on %s: "
                "taking a new device id %s and a new epoch", state_dir, meta["machine_id"], here, device_id
            )
        epoch = secrets.token_hex(8)
    peer_id = secrets.randbits(64)
    instance_id = secrets.token_hex(16)
    conn.execute("BEGIN IMMEDIATE")
    for name, value in (("device_id", device_id), ("epoch", epoch), ("machine_id", here), ("peer_id", str(peer_id)),
                        ("instance_id", instance_id)):
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (name, value))
    conn.execute("COMMIT")
    return Identity(device_id, epoch, peer_id, instance_id, key, _public_bytes(key))
