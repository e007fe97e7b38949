"""The mDNS advert of a syncd daemon: service type, instance names, TXT properties.

Pure (DESIGN §7 "mDNS", STYLE ◆): no sockets, no clock, no randomness; the caller
hands in the random token of the instance name.

An advert says only what a stranger on the LAN may know::

    _syncd._tcp.local.   PTR  syncd-<16 hex>._syncd._tcp.local.
    TXT  v=<protocol version>  port=<sync port>  [tag=<facility tag, 16 hex>]

No device id, no facility id: the tag is ``HMAC(secret, "mdns-tag")[:8].hex()`` (computed
by whoever holds the secret and passed in here), so only members can tell which
facility an advert belongs to. A device with no facility advertises no tag.

Parsing is strict: the properties come from anyone on the LAN. A missing, malformed or
oversized value raises :class:`InvalidAdvertError` (a ``RemoteProtocolError``), and
nothing else; :func:`try_parse_txt` returns ``None`` instead, for zeroconf callbacks,
which must never raise. Unknown keys are ignored (a later version may add some).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from syncd.errors import RemoteProtocolError

__all__ = [
    "SERVICE_TYPE",
    "PROTOCOL_VERSION",
    "MAX_TXT_BYTES",
    "MAX_TXT_KEYS",
    "Advert",
    "InvalidAdvertError",
    "build_txt",
    "parse_txt",
    "try_parse_txt",
    "instance_name",
    "is_instance_of_service",
    "server_name",
]

SERVICE_TYPE = "_syncd._tcp.local."
# The sync protocol version a daemon speaks (docs/sync.md `hello.v`); the advert carries
# it so that a peer can skip devices it cannot talk to without connecting. Kept equal to
# ``sync.protocol.PROTOCOL_VERSION`` (this module may not import it).
PROTOCOL_VERSION = 4

# RFC 6763 §6.1-6.2: each string is at most 255 bytes and the whole record should stay
# small (ours is ~40 bytes). Anything larger is refused before any value is looked at.
MAX_TXT_BYTES = 1300
MAX_TXT_KEYS = 32
_MAX_STRING_BYTES = 255

_KEY_VERSION = b"v"
_KEY_PORT = b"port"
_KEY_TAG = b"tag"

_DECIMAL = re.compile(rb"[1-9][0-9]{0,4}")  # no sign, no spaces, no leading zero
_TAG = re.compile(rb"[0-9a-f]{16}")
_TOKEN = re.compile(r"[0-9a-f]{8,32}")


class InvalidAdvertError(RemoteProtocolError):
    """An advert on the LAN is not a valid syncd advert; ``detail`` says why."""

    code = "invalid_advert"


@dataclass(frozen=True, slots=True)
class Advert:
    """What a syncd advert's TXT record says."""

    version: int
    port: int
    tag: str | None  # 16 lowercase hex, or None: the device belongs to no facility


def _check_tag(tag: str | None) -> None:
    if tag is not None and (not isinstance(tag, str) or not _TAG.fullmatch(tag.encode("ascii", "replace"))):
        raise ValueError(f"facility tag must be 16 lowercase hex characters, got {tag!r}")


def build_txt(*, version: int, port: int, tag: str | None) -> dict[bytes, bytes]:
    """The TXT properties for our advert; ``ValueError`` on a value we would not accept."""
    if type(version) is not int or not 1 <= version <= 65535:
        raise ValueError(f"protocol version must be an integer 1..65535, got {version!r}")
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer 1..65535, got {port!r}")
    _check_tag(tag)
    txt = {_KEY_VERSION: str(version).encode(), _KEY_PORT: str(port).encode()}
    if tag is not None:
        txt[_KEY_TAG] = tag.encode("ascii")
    return txt


def _decimal(properties: Mapping[bytes, bytes | None], key: bytes, hi: int) -> int:
    value = properties.get(key)
    if value is None:
        raise InvalidAdvertError(f"TXT {key.decode()!s} is missing")
    if not isinstance(value, bytes) or not _DECIMAL.fullmatch(value) or int(value) > hi:
        raise InvalidAdvertError(f"TXT {key.decode()!s} must be a decimal 1..{hi}, got {value!r:.40}")
    return int(value)


def parse_txt(properties: Mapping[bytes, bytes | None]) -> Advert:
    """Read a peer's TXT properties (as zeroconf gives them) or raise ``InvalidAdvertError``."""
    if not isinstance(properties, Mapping):
        raise InvalidAdvertError("TXT record is not a set of properties")
    if len(properties) > MAX_TXT_KEYS:
        raise InvalidAdvertError(f"TXT record has {len(properties)} keys, at most {MAX_TXT_KEYS}")
    total = 0
    for key, value in properties.items():
        if not isinstance(key, bytes) or (value is not None and not isinstance(value, bytes)):
            raise InvalidAdvertError("TXT keys and values must be bytes")
        size = len(key) + (0 if value is None else 1 + len(value))
        if size > _MAX_STRING_BYTES:
            raise InvalidAdvertError(f"TXT entry {key[:20]!r} is {size} bytes, at most {_MAX_STRING_BYTES}")
        total += 1 + size
    if total > MAX_TXT_BYTES:
        raise InvalidAdvertError(f"TXT record is {total} bytes, at most {MAX_TXT_BYTES}")

    version = _decimal(properties, _KEY_VERSION, 65535)
    port = _decimal(properties, _KEY_PORT, 65535)
    tag: str | None = None
    if _KEY_TAG in properties:
        raw = properties[_KEY_TAG]
        if raw is None or not _TAG.fullmatch(raw):
            raise InvalidAdvertError(f"TXT tag must be 16 lowercase hex characters, got {raw!r:.40}")
        tag = raw.decode("ascii")
    return Advert(version=version, port=port, tag=tag)


def try_parse_txt(properties: object) -> tuple[Advert | None, str]:
    """``(advert, "")`` or ``(None, reason)``: never raises, for use in callbacks."""
    try:
        return parse_txt(properties), ""  # type: ignore[arg-type]
    except InvalidAdvertError as exc:
        return None, exc.detail
    except Exception as exc:  # noqa: BLE001 - a hostile value must not escape
        return None, f"unreadable TXT record ({type(exc).__name__})"


def instance_name(token: str) -> str:
    """Our instance name for this start: ``syncd-<token>._syncd._tcp.local.``.

    ``token`` is 8..32 random lowercase hex characters, fresh on every start, so the
    name says nothing about the device and a restarted daemon is a new advert.
    """
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise ValueError(f"instance token must be 8..32 lowercase hex characters, got {token!r}")
    return f"syncd-{token}.{SERVICE_TYPE}"


def server_name(token: str) -> str:
    """The SRV target (host name) we advertise: ``syncd-<token>.local.``, not the hostname."""
    instance_name(token)  # same validation
    return f"syncd-{token}.local."


def is_instance_of_service(name: str) -> bool:
    """True if ``name`` is ``<label>._syncd._tcp.local.`` (any label: other implementations
    may choose other instance names; only the TXT record decides what an advert is)."""
    if not isinstance(name, str) or not name.lower().endswith("." + SERVICE_TYPE):
        return False
    label = name[: -len(SERVICE_TYPE) - 1]
    return 0 < len(label.encode("utf-8", "replace")) <= 63
