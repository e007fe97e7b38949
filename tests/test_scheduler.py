"""The sync scheduler: who is due when (pure plan) and the asyncio runner."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pytest

from syncd.discovery.peers import PeerAddress, PeerTable
from syncd.sync.scheduler import Scheduler, SyncPlan

A, B = PeerAddress.parse("198.18.0.1:7737"), PeerAddress.parse("198.18.0.2:7737")


def test_new_candidates_are_due_at_once_then_after_a_jittered_interval() -> None:
    plan = SyncPlan(interval=60, rng=random.Random(1))
    assert plan.due(100.0, [A, B], set()) == [A, B]
    plan.finished(A, 100.0)
    assert plan.due(101.0, [A, B], set()) == [B]
    plan.finished(B, 100.0)
    wake = plan.next_wakeup(101.0, [A, B], set())
    assert 100 + 48 <= wake <= 100 + 72
    assert plan.due(100 + 73, [A, B], set()) == [A, B]


def test_jitter_spreads_devices() -> None:
    plan = SyncPlan(interval=60, rng=random.Random(7))
    times = set()
    for _ in range(20):
        plan.finished(A, 0.0)
        times.add(round(plan.next_wakeup(0.0, [A], set()), 3))
    assert len(times) > 10 and all(48 <= t <= 72 for t in times)


def test_local_change_brings_everyone_forward_but_never_back() -> None:
    plan = SyncPlan(interval=60, debounce=2, rng=random.Random(1))
    plan.due(0.0, [A, B], set())
    plan.finished(A, 0.0)
    plan.finished(B, 0.0)
    plan.local_change(10.0)
    assert plan.due(11.9, [A, B], set()) == []
    assert plan.due(12.0, [A, B], set()) == [A, B]
    plan.local_change(0.0)  # an earlier "soon" wins, a later one never delays
    assert plan.next_wakeup(0.0, [A, B], set()) == 2.0


def test_running_peers_are_not_due() -> None:
    plan = SyncPlan(interval=60)
    assert plan.due(0.0, [A, B], {A}) == [B]


@dataclass(frozen=True)
class Done:
    peer: str | None
    ok: bool = True


async def test_failures_back_off_and_successes_verify() -> None:
    now = [1000.0]
    table = PeerTable([str(A), str(B)], now=now[0], rng=random.Random(3))
    calls: list[PeerAddress] = []

    async def session(address: PeerAddress) -> Done:
        calls.append(address)
        if address == B:
            raise ConnectionRefusedError("down")
        return Done("a" * 64)

    scheduler: Scheduler[Done] = Scheduler(
        table=table, tag=lambda: "0123456789abcdef", run_session=session,
        plan=SyncPlan(interval=60), max_sessions=2, clock=lambda: now[0],
    )
    results = await scheduler.sync_now()
    assert sorted(calls) == sorted([A, B]) and Done("a" * 64) in results and None in results
    assert table.candidates(now[0], "0123456789abcdef") == [A], "B is backed off"
    assert table.address_of("a" * 64) == A, "A is verified"
    now[0] += 3600
    assert B in table.candidates(now[0], "0123456789abcdef")


async def test_run_syncs_due_peers_and_respects_the_cap() -> None:
    table = PeerTable([f"198.18.0.{i}:7737" for i in range(1, 6)], now=0.0)
    running = 0
    peak = 0
    finished: list[PeerAddress] = []
    release = asyncio.Event()

    async def session(address: PeerAddress) -> Done:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        finished.append(address)
        return Done(str(address.port) * 4)

    scheduler: Scheduler[Done] = Scheduler(
        table=table, tag=lambda: "0123456789abcdef", run_session=session,
        plan=SyncPlan(interval=3600), max_sessions=2, clock=lambda: 0.0,
    )
    task = asyncio.ensure_future(scheduler.run())
    try:
        async with asyncio.timeout(10):
            while running < 2:
                await asyncio.sleep(0.01)  # wait-ok: polling a condition under a deadline
            release.set()
            while len(finished) < 5:
                await asyncio.sleep(0.01)  # wait-ok: polling a condition under a deadline
        assert peak == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await scheduler.close()


async def test_sessions_with_one_address_run_one_at_a_time() -> None:
    """Two on-demand syncs with one peer (or one beside a scheduled session) run one
    after the other; another peer's session runs beside them."""
    table = PeerTable([str(A), str(B)], now=0.0)
    running: dict[PeerAddress, int] = {A: 0, B: 0}
    peak: dict[PeerAddress, int] = {A: 0, B: 0}
    gate = asyncio.Event()

    async def session(address: PeerAddress) -> Done:
        running[address] += 1
        peak[address] = max(peak[address], running[address])
        await gate.wait()
        running[address] -= 1
        return Done(str(address.port) * 4)

    scheduler: Scheduler[Done] = Scheduler(
        table=table, tag=lambda: "0123456789abcdef", run_session=session,
        plan=SyncPlan(interval=3600), max_sessions=4, clock=lambda: 0.0,
    )
    calls = [asyncio.ensure_future(scheduler.sync_now(address)) for address in (A, A, B)]
    async with asyncio.timeout(10):
        while running[A] + running[B] < 2:
            await asyncio.sleep(0.01)  # wait-ok: polling a condition under a deadline
        assert running == {A: 1, B: 1}
        gate.set()
        results = await asyncio.gather(*calls)
    assert all(r == [Done(str(a.port) * 4)] for r, a in zip(results, (A, A, B)))
    assert peak == {A: 1, B: 1}
