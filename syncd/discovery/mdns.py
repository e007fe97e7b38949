"""mDNS: advertise our sync port and feed the peers we hear about into a PeerTable.

:class:`Discovery` owns one ``AsyncZeroconf`` (IPv4) on the running event loop:

* **Advertise** ``syncd-<random>._syncd._tcp.local.`` (a fresh name per start, SRV
  target ``syncd-<random>.local.``, not the hostname) with the TXT of
  :mod:`syncd.discovery.txt`, once the sync port is known and the host has an
  address. :meth:`Discovery.update` changes the tag or port (facility joined, port
  bound) and re-announces.
* **Browse** ``_syncd._tcp.local.`` with an ``AsyncServiceBrowser``. Callbacks only
  schedule work; a resolve task per name (coalesced, at most ``_MAX_RESOLVING`` at
  once) reads SRV/TXT/A, checks the TXT strictly and calls
  :meth:`PeerTable.observe`. Our own advert (by name, or by one of our addresses
  with our port: a stale advert of our previous run) is ignored.
* **Check** every ``check_interval`` seconds (:meth:`Discovery.check`):
  1. interfaces: snapshot the host's IPv4 addresses (``ifaddr``, in an executor:
     it is a blocking netlink call); on a change, ``async_update_interfaces`` (zeroconf
     >= 0.150 reconciles its sockets) and re-register with the new addresses;
  2. liveness and changes: zeroconf only reports a service gone on a goodbye or when its PTR
     record expires, and it keeps PTRs for at least ``_DNS_PTR_MIN_TTL`` (~19 min).
     A device switched off sends no goodbye. So we watch each advert's SRV record in
     zeroconf's cache: past half its TTL we ask for it again (one multicast query
     for all of them); once it has expired unanswered the advert is withdrawn
     (``PeerGone(reason="expired")``) and its records dropped from the cache, so
     that the device is seen anew when it comes back. Live adverts are re-read from
     the cache, so an address that expired (a device that moved) leaves the table;
  3. every ``query_interval`` a PTR query (with known answers, RFC 6762 §7.1) so a
     device that comes back without re-announcing (its link was cut, not its power)
     is found again;
  4. ``PeerTable.expire``.
  How long a silent device stays: about ``record_ttl`` (the TTL *it* advertised for
  its SRV/A records) plus one check interval.

Nothing here blocks the loop except zeroconf's constructor (socket set-up). Every
zeroconf callback is wrapped: an exception never escapes into zeroconf.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Awaitable, Final

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf, current_time_millis
from zeroconf import DNSOutgoing, DNSQuestion  # type: ignore[attr-defined]  # public, not in __all__
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from syncd.discovery.peers import PeerAddress, PeerTable
from syncd.discovery.txt import (
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    build_txt,
    instance_name,
    is_instance_of_service,
    server_name,
    try_parse_txt,
)

__all__ = ["Discovery", "local_ipv4_addresses"]

log = logging.getLogger("syncd.discovery")

# DNS wire constants (RFC 1035 / 2782); zeroconf keeps its own copies private.
_FLAGS_QR_QUERY: Final = 0x0000
_CLASS_IN: Final = 1
_TYPE_PTR: Final = 12
_TYPE_TXT: Final = 16
_TYPE_SRV: Final = 33

_MAX_RESOLVING = 8
_MAX_TRACKED = 512  # bound on names remembered as unresolved or rejected (hostile LANs)
_DEFAULT_OTHER_TTL = 4500  # PTR/TXT, RFC 6762 §10


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP


def local_ipv4_addresses(only: Sequence[str] | None = None) -> tuple[str, ...]:
    """The host's IPv4 addresses worth advertising, sorted. Blocking (netlink).

    With ``only``, those of its addresses the host has now (loopback allowed: tests);
    otherwise every address but loopback and link-local.
    """
    found: set[str] = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.add(ip.ip)
    if only is not None:
        return tuple(sorted(address for address in set(only) if address in found))
    usable = (
        address
        for address in found
        if not ipaddress.IPv4Address(address).is_loopback and not ipaddress.IPv4Address(address).is_link_local
    )
    return tuple(sorted(usable))


def _check_interfaces(interfaces: Sequence[str] | None) -> tuple[str, ...] | None:
    if interfaces is None:
        return None
    out = []
    for address in interfaces:
        out.append(str(ipaddress.IPv4Address(address)))  # ValueError if not IPv4
    if not out:
        raise ValueError("interfaces must name at least one IPv4 address (or be None: all)")
    return tuple(out)


class Discovery:
    """Advertise this daemon and browse for peers; see the module docstring.

    ``table`` receives what is found. ``port`` is our bound sync port (None: not yet
    known, nothing advertised), ``tag`` our facility tag (None: no facility, the advert
    carries no tag). ``interfaces``: IPv4 addresses to use (None: every interface).
    ``check_interval`` 0 disables the periodic task (tests call :meth:`check`).
    ``record_ttl`` is the TTL of our SRV/A records: how long peers keep us after we
    go silent. ``clock`` gives the ``now`` handed to the table.
    """

    def __init__(
        self,
        table: PeerTable,
        *,
        port: int | None = None,
        tag: str | None = None,
        version: int = PROTOCOL_VERSION,
        interfaces: Sequence[str] | None = None,
        check_interval: float = 10.0,
        query_interval: float = 60.0,
        record_ttl: int = 120,
        resolve_timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        token: str | None = None,
    ) -> None:
        build_txt(version=version, port=port or 1, tag=tag)  # validates now, not later
        if check_interval < 0 or query_interval <= 0 or resolve_timeout <= 0:
            raise ValueError("check_interval must be >= 0, query_interval and resolve_timeout > 0")
        if type(record_ttl) is not int or not 1 <= record_ttl <= 4500:
            raise ValueError(f"record_ttl must be an integer 1..4500, got {record_ttl!r}")
        self._table = table
        self._port = port
        self._tag = tag
        self._version = version
        self._interfaces = _check_interfaces(interfaces)
        self._check_interval = check_interval
        self._query_interval = query_interval
        self._record_ttl = record_ttl
        self._resolve_timeout_ms = int(resolve_timeout * 1000)
        self._clock = clock
        token = token if token is not None else secrets.token_hex(8)
        self._name = instance_name(token)
        self._server = server_name(token)

        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None  # registered advert
        self._announcing: Awaitable[None] | None = None  # the registration's announcements
        self._addresses: tuple[str, ...] = ()  # our current IPv4 addresses
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._unresolved: dict[str, str] = {}  # key -> name: browsed but not (yet) resolved
        self._known: dict[str, str] = {}  # key -> name: adverts we put in the table
        self._rejected: set[str] = set()  # keys whose invalid advert was already logged
        self._semaphore = asyncio.Semaphore(_MAX_RESOLVING)
        self._last_query = 0.0
        self._stopping = False

    # --- public ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """Our instance name (zeroconf may rename it on a conflict)."""
        return self._info.name if self._info is not None else self._name

    @property
    def advertised(self) -> bool:
        """True while our service is registered."""
        return self._info is not None

    @property
    def addresses(self) -> tuple[str, ...]:
        """The IPv4 addresses we advertise (or would, once the port is known)."""
        return self._addresses

    async def start(self) -> None:
        """Open zeroconf, start browsing and advertise (if the port is known).

        Returns once the advert is registered (probing takes ~1.5 s).
        """
        if self._aiozc is not None:
            raise RuntimeError("Discovery already started")
        loop = asyncio.get_running_loop()
        self._addresses = await loop.run_in_executor(None, local_ipv4_addresses, self._interfaces)
        interfaces: Any = list(self._interfaces) if self._interfaces is not None else None
        self._aiozc = (
            AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
            if interfaces is not None
            else AsyncZeroconf(ip_version=IPVersion.V4Only)
        )
        try:
            self._browser = AsyncServiceBrowser(self._aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
            async with self._lock:
                await self._readvertise()
            self._last_query = self._clock()
            if self._check_interval > 0:
                self._ticker = asyncio.create_task(self._tick_forever(), name="syncd-discovery-check")
        except BaseException:
            await self.stop()
            raise
        log.info(
            "mDNS: browsing %s; advertising %s on %s",
            SERVICE_TYPE,
            self.name if self._info else "nothing yet",
            ", ".join(self._addresses) or "no address",
        )

    async def update(self, *, tag: str | None | _Keep = KEEP, port: int | None | _Keep = KEEP) -> None:
        """Change what we advertise (facility joined or left, port bound) and re-announce.

        May be called at any time: before :meth:`start` (or while it is still opening
        zeroconf) the new values go into the first registration; during the
        registration it waits for it and then re-announces. The owner must therefore
        route changes here from before it calls :meth:`start`, not from after it returns.
        """
        new_tag = self._tag if isinstance(tag, _Keep) else tag
        new_port = self._port if isinstance(port, _Keep) else port
        build_txt(version=self._version, port=new_port or 1, tag=new_tag)  # ValueError if bad
        async with self._lock:
            self._tag, self._port = new_tag, new_port
            if self._aiozc is not None:
                await self._readvertise()

    async def check(self) -> None:
        """One round of the periodic work: interfaces, liveness, re-query, expiry."""
        if self._aiozc is None or self._stopping:
            return
        for step in (self._check_interfaces, self._check_liveness):
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed round must not end discovery
                log.exception("mDNS check failed in %s", step.__name__)
        self._table.expire(self._clock())

    async def stop(self) -> None:
        """Stop browsing, send goodbyes, close the sockets. Idempotent; an instance is
        not restarted after ``stop`` (make a new one)."""
        self._stopping = True
        tasks = [t for t in (self._ticker, *self._resolving.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._ticker = None
        self._resolving.clear()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
            self._browser = None
        if self._aiozc is not None:
            aiozc, self._aiozc = self._aiozc, None
            try:
                await aiozc.async_close()  # goodbyes for our advert, then close
            except Exception:  # noqa: BLE001 - closing must not raise at shutdown
                log.exception("mDNS: error while closing zeroconf")
        self._info = None

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- advertising -----------------------------------------------------------------

    def _desired(self) -> AsyncServiceInfo | None:
        if self._port is None or not self._addresses:
            return None
        return AsyncServiceInfo(
            SERVICE_TYPE,
            self._info.name if self._info is not None else self._name,
            port=self._port,
            properties=build_txt(version=self._version, port=self._port, tag=self._tag),
            server=self._server,
            host_ttl=self._record_ttl,
            other_ttl=max(self._record_ttl, _DEFAULT_OTHER_TTL),
            parsed_addresses=list(self._addresses),
        )

    async def _readvertise(self) -> None:
        """Make the registered advert match the desired one. Caller holds ``_lock``."""
        aiozc = self._aiozc
        assert aiozc is not None
        desired = self._desired()
        current = self._info
        if desired is None:
            if current is not None:
                self._info = None
                await (await aiozc.async_unregister_service(current))
                log.info("mDNS: withdrew %s (no port or no address)", current.name)
            return
        if current is None:
            # The registration's announcements go on in the background, with this TXT;
            # an update must wait for them, or an old one could be the last a peer hears.
            self._announcing = await aiozc.async_register_service(desired, allow_name_change=True)
            self._info = desired
            log.info("mDNS: advertising %s port %d on %s", desired.name, desired.port, ", ".join(self._addresses))
            return
        if (
            current.port == desired.port
            and current.properties == desired.properties
            and sorted(current.parsed_addresses()) == sorted(desired.parsed_addresses())
        ):
            return
        if self._announcing is not None:
            await self._announcing
            self._announcing = None
        self._info = desired
        await (await aiozc.async_update_service(desired))
        log.info("mDNS: re-announced %s port %d on %s", desired.name, desired.port, ", ".join(self._addresses))

    # --- browsing --------------------------------------------------------------------

    def _is_own(self, name: str) -> bool:
        return name.lower() in (self._name.lower(), self.name.lower())

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """zeroconf's callback (in the loop): schedule work, never raise."""
        try:
            if self._stopping or self._is_own(name) or not is_instance_of_service(name):
                return
            key = name.lower()
            if state_change is ServiceStateChange.Removed:
                self._dirty.discard(key)
                self._unresolved.pop(key, None)
                task = self._resolving.pop(key, None)
                if task is not None:
                    task.cancel()
                self._known.pop(key, None)
                self._table.withdraw(name, now=self._clock(), reason="goodbye")
            else:
                self._schedule_resolve(name)
        except Exception:  # noqa: BLE001
            log.exception("mDNS: error handling %s %s", state_change, name)

    def _schedule_resolve(self, name: str) -> None:
        key = name.lower()
        if key in self._resolving:
            self._dirty.add(key)
            return
        task = asyncio.create_task(self._resolve_loop(name), name=f"syncd-resolve-{key[:40]}")
        self._resolving[key] = task

    async def _resolve_loop(self, name: str) -> None:
        key = name.lower()
        try:
            while True:
                self._dirty.discard(key)
                async with self._semaphore:
                    await self._resolve(name)
                if key not in self._dirty or self._stopping:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("mDNS: error resolving %s", name)
        finally:
            if self._resolving.get(key) is asyncio.current_task():
                del self._resolving[key]

    async def _resolve(self, name: str) -> None:
        aiozc = self._aiozc
        if aiozc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(aiozc.zeroconf, self._resolve_timeout_ms):
            if len(self._unresolved) < _MAX_TRACKED:
                self._unresolved[name.lower()] = name  # retried while its PTR lasts
            return
        self._apply(name, info)

    def _apply(self, name: str, info: AsyncServiceInfo) -> None:
        """Check a resolved advert and put what it says in the table."""
        key = name.lower()
        self._unresolved.pop(key, None)
        advert, reason = try_parse_txt(info.properties)
        if advert is not None and info.port != advert.port:
            reason = f"SRV port {info.port} differs from TXT port {advert.port}"
            advert = None
        if advert is None:
            if key not in self._rejected:
                if len(self._rejected) >= _MAX_TRACKED:
                    self._rejected.clear()
                self._rejected.add(key)
                log.warning("mDNS: ignoring advert %s: %s", name, reason)
            self._known.pop(key, None)
            self._table.withdraw(name, now=self._clock(), reason="invalid")
            return
        self._rejected.discard(key)
        own = set(self._addresses) | {"127.0.0.1"}
        addresses = [
            PeerAddress(address, advert.port)
            for address in info.parsed_addresses(IPVersion.V4Only)
            if not (address in own and advert.port == self._port)
        ]
        if not addresses:
            return  # our own advert (e.g. from our previous run)
        self._known[key] = name
        self._table.observe(name, addresses, tag=advert.tag, version=advert.version, now=self._clock())

    # --- periodic checks -------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval)
            await self.check()

    async def _check_interfaces(self) -> None:
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(None, local_ipv4_addresses, self._interfaces)
        if addresses == self._addresses or self._aiozc is None:
            return
        log.info("mDNS: addresses changed: %s -> %s", ", ".join(self._addresses) or "-", ", ".join(addresses) or "-")
        self._addresses = addresses
        if self._interfaces is None:
            await self._aiozc.async_update_interfaces()
        async with self._lock:
            await self._readvertise()

    async def _check_liveness(self) -> None:
        aiozc = self._aiozc
        if aiozc is None:
            return
        zc = aiozc.zeroconf
        cache = zc.cache
        now_ms = current_time_millis()
        refresh = DNSOutgoing(_FLAGS_QR_QUERY)
        asked = False
        for key, name in list(self._known.items()):
            records = [r for r in cache.async_all_by_details(name, _TYPE_SRV, _CLASS_IN) if not r.is_expired(now_ms)]
            if not records:
                log.info("mDNS: %s stopped answering", name)
                self._forget(name)
                self._table.withdraw(name, now=self._clock(), reason="expired")
                continue
            # Re-read the advert from the cache: zeroconf reports new records, but not
            # the expiry of an address superseded by a cache-flush (a moved device).
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if info.load_from_cache(zc, now_ms):
                self._apply(name, info)
            elif key not in self._resolving:
                self._schedule_resolve(name)
            if all(r.get_remaining_ttl(now_ms) < r.ttl / 2 for r in records):
                refresh.add_question(DNSQuestion(name, _TYPE_SRV, _CLASS_IN))
                refresh.add_question(DNSQuestion(name, _TYPE_TXT, _CLASS_IN))
                asked = True
        if asked:
            zc.async_send(refresh)
        for key, name in list(self._unresolved.items()):
            if cache.current_entry_with_name_and_alias(SERVICE_TYPE, name) is None:
                del self._unresolved[key]  # its PTR is gone: nothing left to resolve
            elif key not in self._resolving:
                self._schedule_resolve(name)
        if self._clock() - self._last_query >= self._query_interval:
            self._last_query = self._clock()
            self._send_ptr_query(zc, now_ms)

    def _forget(self, name: str) -> None:
        """Drop a silent advert's records from zeroconf's cache, so that when the device
        answers again the browser reports it as new (zeroconf would otherwise keep its
        PTR for ~19 min and never tell us)."""
        aiozc = self._aiozc
        key = name.lower()
        self._known.pop(key, None)
        if aiozc is None:
            return
        cache = aiozc.zeroconf.cache
        stale = [
            r
            for r in cache.async_all_by_details(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN)
            if getattr(r, "alias", "").lower() == key
        ]
        stale += cache.async_entries_with_name(name)
        cache.async_remove_records(stale)

    def _send_ptr_query(self, zc: Zeroconf, now_ms: float) -> None:
        out = DNSOutgoing(_FLAGS_QR_QUERY)
        out.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
        for record in zc.cache.async_all_by_details(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN):
            if record.get_remaining_ttl(now_ms) > record.ttl / 2:
                out.add_answer_at_time(record, now_ms)
        zc.async_send(out)
