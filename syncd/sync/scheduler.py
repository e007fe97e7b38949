"""When to sync whom (DESIGN §6 last paragraph).

Every candidate address (the peer table's: advertised with our facility tag, static, or
verified) is synced on a jittered interval, soon after local writes (debounced, so a
burst of writes makes one session), and on demand. At most ``max_sessions`` run at
once, and one per address. A failed session backs the (device, address) off in the
peer table, which then leaves it out of the candidates until its time comes. Clock and
RNG are injected.

``SyncPlan`` is the pure part (who is due when); ``Scheduler`` is the asyncio shell that
runs sessions.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Iterable, Protocol, TypeVar

from syncd.discovery.peers import PeerAddress, PeerTable

log = logging.getLogger(__name__)


class Outcome(Protocol):
    """What a finished session tells the scheduler."""

    @property
    def peer(self) -> str | None:
        """The device id the peer proved (None if it never got that far)."""
        ...

    @property
    def ok(self) -> bool:
        """False: the session failed (the address is backed off)."""
        ...


O = TypeVar("O", bound=Outcome)


@dataclass
class SyncPlan:
    """Pure bookkeeping of when each address is next due."""

    interval: float
    debounce: float = 2.0
    jitter: float = 0.2          # +-20 % of the interval, so devices do not sync in lockstep
    rng: random.Random = field(default_factory=random.Random)
    _due: dict[PeerAddress, float] = field(default_factory=dict)

    def due(self, now: float, candidates: Iterable[PeerAddress], running: set[PeerAddress]) -> list[PeerAddress]:
        """Candidates whose time has come (a new candidate is due at once)."""
        ready = []
        for address in candidates:
            if address in running:
                continue
            if self._due.setdefault(address, now) <= now:
                ready.append(address)
        return ready

    def next_wakeup(self, now: float, candidates: Iterable[PeerAddress], running: set[PeerAddress]) -> float:
        times = [self._due.get(a, now) for a in candidates if a not in running]
        return min(times, default=now + self.interval)

    def finished(self, address: PeerAddress, now: float) -> None:
        spread = self.interval * self.jitter
        self._due[address] = now + self.interval + self.rng.uniform(-spread, spread)

    def local_change(self, now: float) -> None:
        """A local write: everyone is due within ``debounce`` (not later than planned)."""
        soon = now + self.debounce
        for address, when in self._due.items():
            self._due[address] = min(when, soon)

    def request(self, now: float) -> None:
        for address in self._due:
            self._due[address] = now


class Scheduler(Generic[O]):
    """Runs sync sessions as the plan says; ``run()`` until cancelled."""

    def __init__(
        self,
        *,
        table: PeerTable,
        tag: Callable[[], str | None],
        run_session: Callable[[PeerAddress], Awaitable[O]],
        plan: SyncPlan,
        max_sessions: int,
        clock: Callable[[], float],
    ) -> None:
        self._table = table
        self._tag = tag
        self._run_session = run_session
        self._plan = plan
        self._max = max_sessions
        self._clock = clock
        self._wake = asyncio.Event()
        self._running: dict[PeerAddress, asyncio.Task[O | None]] = {}
        # One session per address at a time: an on-demand sync asked for while a scheduled
        # one runs waits for it (two sessions with one peer would import the same chunks
        # twice and starve each other; the server expires the slower one).
        self._one_at_a_time: defaultdict[PeerAddress, asyncio.Lock] = defaultdict(asyncio.Lock)

    def local_change(self) -> None:
        self._plan.local_change(self._clock())
        self._wake.set()

    def poke(self) -> None:
        """Re-read the candidates now (a peer appeared, the facility changed)."""
        self._wake.set()

    async def sync_now(self, address: PeerAddress | None = None) -> list[O | None]:
        """Sync one address (even one nobody advertised) or every candidate now, and wait
        for those sessions; None marks a session that raised."""
        if address is not None:
            return [await self._session(address)]
        now = self._clock()
        targets = self._table.candidates(now, self._tag())
        results: list[O | None] = []
        for start in range(0, len(targets), self._max):
            batch = targets[start : start + self._max]
            results.extend(await asyncio.gather(*(self._session(a) for a in batch)))
        return results

    async def run(self) -> None:
        while True:
            now = self._clock()
            candidates = self._table.candidates(now, self._tag())
            running = set(self._running)
            for address in self._plan.due(now, candidates, running):
                if len(self._running) >= self._max:
                    break
                self._start(address)
            wake_at = self._plan.next_wakeup(now, candidates, set(self._running))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.05, wake_at - now))
            except asyncio.TimeoutError:
                pass

    def _start(self, address: PeerAddress) -> None:
        task = asyncio.ensure_future(self._session(address))
        self._running[address] = task

        def done(_: "asyncio.Task[O | None]") -> None:
            self._running.pop(address, None)
            self._wake.set()

        task.add_done_callback(done)

    async def _session(self, address: PeerAddress) -> O | None:
        async with self._one_at_a_time[address]:
            return await self._session_alone(address)

    async def _session_alone(self, address: PeerAddress) -> O | None:
        tag = self._tag()
        try:
            outcome = await self._run_session(address)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: back off, keep serving
            retry_at = self._table.record_failure(address, now=self._clock())
            log.warning("sync with %s failed: %s (next try in %.0f s)", address, exc, retry_at - self._clock())
            self._plan.finished(address, self._clock())
            return None
        if not outcome.ok:
            retry_at = self._table.record_failure(address, now=self._clock())
            log.info("sync with %s did not complete (next try in %.0f s)", address, retry_at - self._clock())
        elif tag is not None and outcome.peer is not None:
            self._table.record_success(address, outcome.peer, tag=tag, now=self._clock())
        self._plan.finished(address, self._clock())
        return outcome

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
