"""The peer table: every address we might sync with, and what we know about it.

The scheduler reads it (:meth:`PeerTable.candidates`), discovery feeds it (mDNS adverts
through :meth:`~PeerTable.observe` / :meth:`~PeerTable.withdraw`, static peers from the
config at construction), and the sync engine reports outcomes
(:meth:`~PeerTable.record_success` after a proof succeeded, :meth:`~PeerTable.record_failure`
otherwise). No I/O: time is the ``now`` argument of every method (any monotonic clock in
seconds; the daemon uses ``time.monotonic``) and the backoff jitter comes from an
injected ``random.Random``.

Theory of operation
-------------------
* An **entry** is keyed by address ``(host, port)``, never by device: an advert carries
  no device id (DESIGN §7), so until a sync proof succeeds we do not know whose address
  it is. An entry remembers its sources (``mdns``, ``static``), the tag and protocol
  version of the latest advert naming it, first/last seen, and the verified device id
  and the tag it was verified under once a proof succeeded there.
* **mDNS** entries live as long as an advert names them. An advert that moves to other
  addresses, or is withdrawn (goodbye, expiry), removes the addresses it no longer
  names, **except a verified address**: an unverified advert never replaces a verified
  address. A verified address stays (a candidate under the tag it was verified with)
  until ``verified_grace`` seconds after it was last seen or synced, or until its
  device is verified at another address.
* **Static** peers (``[sync] peers``) never expire and are candidates under any tag:
  the administrator put them there; the proof decides.
* **Backoff** is kept per ``(device, address)``: the device is the one the table
  believes is at that address (``None`` while unverified), so a failing device does
  not block another device that later takes over the address. Delay after the n-th
  failure: ``min(cap, base * factor**(n-1))``, scaled by a uniform factor in
  ``[1 - jitter, 1 + jitter]``.
* **Events** (:class:`PeerSeen`, :class:`PeerGone`) are returned by the method that
  caused them and also handed to listeners (``add_listener``), in order. A listener
  that raises is logged and skipped.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "Backoff",
    "PeerAddress",
    "PeerEvent",
    "PeerGone",
    "PeerInfo",
    "PeerSeen",
    "PeerTable",
    "Source",
]

log = logging.getLogger("syncd.discovery")


class Source(enum.Enum):
    """How an address came to be known."""

    MDNS = "mdns"
    STATIC = "static"


@dataclass(frozen=True, order=True, slots=True)
class PeerAddress:
    """Where a peer's sync port is: an IP literal (IPv6 without brackets) or a host name."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if type(self.port) is not int or not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1..65535, got {self.port!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"host must be a non-empty string, got {self.host!r}")
        object.__setattr__(self, "host", _normal_host(self.host))

    @classmethod
    def parse(cls, text: str) -> PeerAddress:
        """``"host:port"``, ``"1.2.3.4:port"`` or ``"[v6]:port"`` (the config's syntax)."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isascii() or not port.isdigit():
            raise ValueError(f'expected "host:port", got {text!r}')
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            ipaddress.IPv6Address(host)  # ValueError if not
        elif ":" in host:
            raise ValueError(f"an IPv6 address needs brackets: {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _normal_host(host: str) -> str:
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower().rstrip(".") or host


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter; every value checked, none clamped."""

    base: float = 5.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        for name in ("base", "factor", "cap", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"backoff {name} must be a finite number, got {value!r}")
        if self.base <= 0:
            raise ValueError(f"backoff base must be > 0, got {self.base!r}")
        if self.factor < 1:
            raise ValueError(f"backoff factor must be >= 1, got {self.factor!r}")
        if self.cap < self.base:
            raise ValueError(f"backoff cap must be >= base, got {self.cap!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1), got {self.jitter!r}")

    def nominal(self, failures: int) -> float:
        """The delay after ``failures`` (>= 1) consecutive failures, before jitter."""
        exponent = min(max(failures, 1) - 1, 256)
        try:
            return min(self.cap, self.base * self.factor**exponent)
        except OverflowError:
            return self.cap

    def delay(self, failures: int, rng: random.Random) -> float:
        """The nominal delay scaled by a uniform factor in ``[1 - jitter, 1 + jitter]``."""
        return self.nominal(failures) * (1.0 + self.jitter * (2.0 * rng.random() - 1.0))


@dataclass(frozen=True, slots=True)
class PeerSeen:
    """An address appeared, or the advert naming it changed (tag, version, source)."""

    address: PeerAddress
    source: Source
    tag: str | None
    version: int | None
    at: float


@dataclass(frozen=True, slots=True)
class PeerGone:
    """An address left the table. ``reason``: ``goodbye`` (the advert was withdrawn),
    ``expired`` (it stopped answering, or a verified address outlived its grace),
    ``moved`` (its advert or its device now names other addresses), ``invalid`` (its
    advert became unreadable)."""

    address: PeerAddress
    reason: str
    at: float


PeerEvent = PeerSeen | PeerGone


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A snapshot of one entry (for ``GET /peers``, doctor, tests)."""

    address: PeerAddress
    sources: frozenset[Source]
    tag: str | None
    version: int | None
    first_seen: float
    last_seen: float
    advertised: bool
    device_id: str | None
    verified_tag: str | None
    failures: int
    retry_at: float | None


@dataclass(slots=True)
class _Entry:
    address: PeerAddress
    first_seen: float
    last_seen: float
    sources: set[Source] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    tag: str | None = None
    version: int | None = None
    device_id: str | None = None
    verified_tag: str | None = None
    last_success: float | None = None


@dataclass(slots=True)
class _Advert:
    addresses: frozenset[PeerAddress]
    tag: str | None
    version: int


@dataclass(slots=True)
class _Failures:
    count: int
    retry_at: float


_BackoffKey = tuple[str | None, PeerAddress]
Listener = Callable[[PeerEvent], None]


class PeerTable:
    """Addresses to sync with; see the module docstring for the rules."""

    def __init__(
        self,
        static: Iterable[str | PeerAddress] = (),
        *,
        now: float,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
        verified_grace: float = 600.0,
        max_advertised: int = 256,
    ) -> None:
        if not math.isfinite(verified_grace) or verified_grace < 0:
            raise ValueError(f"verified_grace must be >= 0, got {verified_grace!r}")
        if max_advertised < 1:
            raise ValueError(f"max_advertised must be >= 1, got {max_advertised!r}")
        self._rng = rng if rng is not None else random.Random()
        self._backoff = backoff if backoff is not None else Backoff()
        self._grace = verified_grace
        self._max_advertised = max_advertised
        self._entries: dict[PeerAddress, _Entry] = {}
        self._adverts: dict[str, _Advert] = {}
        self._failures: dict[_BackoffKey, _Failures] = {}
        self._current: dict[str, PeerAddress] = {}  # device id -> its latest verified address
        self._listeners: list[Listener] = []
        self._full_logged = False
        for peer in static:
            address = peer if isinstance(peer, PeerAddress) else PeerAddress.parse(peer)
            entry = self._entries.setdefault(address, _Entry(address, now, now))
            entry.sources.add(Source.STATIC)

    # --- listeners -------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every later event; returns a function that unsubscribes."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def _emit(self, events: list[PeerEvent]) -> list[PeerEvent]:
        for event in events:
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:  # noqa: BLE001 - one bad listener must not stop discovery
                    log.exception("peer table listener %r failed on %s", listener, event)
        return events

    # --- mDNS ------------------------------------------------------------------------

    def observe(
        self,
        name: str,
        addresses: Iterable[PeerAddress],
        *,
        tag: str | None,
        version: int,
        now: float,
    ) -> list[PeerEvent]:
        """An mDNS advert ``name`` (resolved) says: these addresses, this tag and version.

        Replaces what the same advert said before; addresses it no longer names leave
        the table unless verified, static or named by another advert.
        """
        key = name.lower()
        old = self._adverts.get(key)
        events: list[PeerEvent] = []
        accepted: set[PeerAddress] = set()
        for address in sorted(set(addresses)):
            entry = self._entries.get(address)
            if entry is None:
                if self._advertised_count() >= self._max_advertised:
                    if not self._full_logged:
                        log.warning("peer table full (%d adverts); ignoring more", self._max_advertised)
                        self._full_logged = True
                    continue
                entry = self._entries[address] = _Entry(address, now, now)
                changed = True
            else:
                changed = Source.MDNS not in entry.sources or entry.tag != tag or entry.version != version
            entry.sources.add(Source.MDNS)
            entry.names.add(key)
            entry.tag, entry.version, entry.last_seen = tag, version, now
            accepted.add(address)
            if changed:
                events.append(PeerSeen(address, Source.MDNS, tag, version, now))
        if accepted:
            self._adverts[key] = _Advert(frozenset(accepted), tag, version)
        else:
            self._adverts.pop(key, None)
        if old is not None:
            for address in sorted(old.addresses - accepted):
                events.extend(self._unname(address, key, now, "moved"))
        return self._emit(events)

    def withdraw(self, name: str, *, now: float, reason: str = "goodbye") -> list[PeerEvent]:
        """The advert ``name`` is gone (goodbye packet, or it stopped answering: ``expired``)."""
        advert = self._adverts.pop(name.lower(), None)
        if advert is None:
            return []
        events: list[PeerEvent] = []
        for address in sorted(advert.addresses):
            events.extend(self._unname(address, name.lower(), now, reason))
        return self._emit(events)

    def names(self) -> list[str]:
        """The (lowercased) names of the adverts currently in the table."""
        return sorted(self._adverts)

    def _unname(self, address: PeerAddress, key: str, now: float, reason: str) -> list[PeerEvent]:
        entry = self._entries.get(address)
        if entry is None:
            return []
        entry.names.discard(key)
        if entry.names:
            return []
        entry.sources.discard(Source.MDNS)
        if Source.STATIC in entry.sources or entry.device_id is not None:
            return []  # static peers never expire; verified ones wait out the grace period
        del self._entries[address]
        return [PeerGone(address, reason, now)]

    def _advertised_count(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.names)

    def expire(self, now: float) -> list[PeerEvent]:
        """Drop verified addresses no advert names and nobody reached for ``verified_grace``."""
        events: list[PeerEvent] = []
        for address, entry in sorted(self._entries.items()):
            if entry.names or Source.STATIC in entry.sources:
                continue
            if now - entry.last_seen > self._grace:
                del self._entries[address]
                if entry.device_id is not None and self._current.get(entry.device_id) == address:
                    del self._current[entry.device_id]
                events.append(PeerGone(address, "expired", now))
        horizon = self._backoff.cap * (1.0 + self._backoff.jitter)
        for key, failures in list(self._failures.items()):
            if key[1] not in self._entries and now - failures.retry_at > horizon:
                del self._failures[key]
        return self._emit(events)

    # --- sync outcomes ---------------------------------------------------------------

    def record_success(
        self, address: PeerAddress, device_id: str, *, tag: str, now: float
    ) -> list[PeerEvent]:
        """A sync proof with ``device_id`` under facility ``tag`` succeeded at ``address``.

        The address becomes the device's verified address (a later unverified advert
        cannot displace it); its backoff is cleared. The device's previous address is
        dropped if nothing else vouches for it (no advert, not static).
        """
        events: list[PeerEvent] = []
        entry = self._entries.get(address)
        if entry is None:  # e.g. `syncd sync host:port` on an address nobody advertised
            entry = self._entries[address] = _Entry(address, now, now)
        if entry.device_id is not None and entry.device_id != device_id:
            if self._current.get(entry.device_id) == address:
                del self._current[entry.device_id]
        entry.device_id, entry.verified_tag = device_id, tag
        entry.last_seen = entry.last_success = now
        self._failures.pop((device_id, address), None)
        self._failures.pop((None, address), None)
        previous = self._current.get(device_id)
        self._current[device_id] = address
        if previous is not None and previous != address:
            old = self._entries.get(previous)
            if old is not None and old.device_id == device_id and not old.names and Source.STATIC not in old.sources:
                del self._entries[previous]
                events.append(PeerGone(previous, "moved", now))
        return self._emit(events)

    def record_failure(self, address: PeerAddress, *, now: float) -> float:
        """A sync with ``address`` failed (unreachable, refused, bad proof): back it off.

        Returns when it may be tried again.
        """
        entry = self._entries.get(address)
        key: _BackoffKey = (entry.device_id if entry else None, address)
        failures = self._failures.get(key)
        count = 1 if failures is None else failures.count + 1
        retry_at = now + self._backoff.delay(count, self._rng)
        self._failures[key] = _Failures(count, retry_at)
        return retry_at

    def _failures_of(self, entry: _Entry) -> _Failures | None:
        return self._failures.get((entry.device_id, entry.address))

    def _usable(self, entry: _Entry, now: float) -> bool:
        failures = self._failures_of(entry)
        return failures is None or failures.retry_at <= now

    # --- what the scheduler reads ----------------------------------------------------

    def candidates(self, now: float, tag: str | None, *, min_version: int = 1) -> list[PeerAddress]:
        """Addresses worth a sync now for facility ``tag``.

        An address qualifies if it is not backed off and either is static, or its
        latest advert carries ``tag`` (and a protocol version >= ``min_version``), or it
        was verified under ``tag``. At most one address per verified device (its latest
        verified one if usable), and an advert with a usable verified address does not
        also offer its unverified ones. Verified first, then static, then by first seen.
        With no facility (``tag`` None) there is nothing to sync: ``[]``.
        """
        if tag is None:
            return []
        eligible: dict[PeerAddress, _Entry] = {}
        for address, entry in self._entries.items():
            if not self._usable(entry, now):
                continue
            advert_ok = entry.tag == tag and (entry.version is None or entry.version >= min_version)
            if Source.STATIC in entry.sources or (entry.names and advert_ok) or entry.verified_tag == tag:
                eligible[address] = entry
        chosen: dict[str, PeerAddress] = {}
        for address, entry in sorted(eligible.items(), key=lambda kv: -(kv[1].last_success or 0.0)):
            if entry.device_id is None:
                continue
            current = self._current.get(entry.device_id)
            if current in eligible:
                chosen[entry.device_id] = current
            else:
                chosen.setdefault(entry.device_id, address)
        covered = {
            name for device, address in chosen.items() for name in eligible[address].names
        }
        result: list[_Entry] = []
        for address, entry in eligible.items():
            if entry.device_id is not None:
                if chosen.get(entry.device_id) == address:
                    result.append(entry)
            elif not (entry.names & covered) or Source.STATIC in entry.sources:
                result.append(entry)
        result.sort(
            key=lambda e: (e.device_id is None, Source.STATIC not in e.sources, e.first_seen, e.address)
        )
        return [entry.address for entry in result]

    def joinable(self, now: float) -> list[PeerAddress]:
        """Where a device with no facility may look for an inviter: addresses advertised
        with some facility tag, and static peers, not backed off."""
        found = [
            entry
            for entry in self._entries.values()
            if self._usable(entry, now) and (Source.STATIC in entry.sources or (entry.names and entry.tag))
        ]
        found.sort(key=lambda e: (Source.STATIC not in e.sources, e.first_seen, e.address))
        return [entry.address for entry in found]

    def address_of(self, device_id: str) -> PeerAddress | None:
        """The latest address where ``device_id`` proved itself, if still in the table."""
        return self._current.get(device_id)

    def get(self, address: PeerAddress) -> PeerInfo | None:
        entry = self._entries.get(address)
        return None if entry is None else self._info(entry)

    def entries(self) -> list[PeerInfo]:
        """Every entry, sorted by address."""
        return [self._info(entry) for _, entry in sorted(self._entries.items())]

    def _info(self, entry: _Entry) -> PeerInfo:
        failures = self._failures_of(entry)
        return PeerInfo(
            address=entry.address,
            sources=frozenset(entry.sources),
            tag=entry.tag,
            version=entry.version,
            first_seen=entry.first_seen,
            last_seen=entry.last_seen,
            advertised=bool(entry.names),
            device_id=entry.device_id,
            verified_tag=entry.verified_tag,
            failures=failures.count if failures else 0,
            retry_at=failures.retry_at if failures else None,
        )
