"""A full rebuild's fold budget: ~25,000 raw records of 50 learners (DESIGN §5).

The rebuild must take well under a second including the SQLite writes, so ``derive`` over
every group of every partition gets at most 0.4 s on a reference machine. This test only
guards against gross regressions (1.2 s, for slow CI machines); the figure it measures is
printed with ``-s``.
"""

from __future__ import annotations

import time

import pytest

from syncd.logs.aggregate import derive
from syncd.logs.state import PartitionState
from tests.logs.workload import DATASET, school

BUDGET_SECONDS = 1.2


@pytest.fixture(scope="module")
def partitions() -> list[PartitionState]:
    return school(learners=50)


def test_the_workload_is_a_school(partitions: list[PartitionState]) -> None:
    records = sum(len(p) for p in partitions)
    assert 22_000 <= records <= 28_000
    kinds = {r.kind for p in partitions for r in p.records.values()}
    assert kinds == {"session", "attempt", "usersession"}


def test_full_rebuild_fold_is_fast(partitions: list[PartitionState]) -> None:
    best = float("inf")
    rows = 0
    for _ in range(3):
        started = time.perf_counter()
        rows = sum(len(r) for p in partitions for r in derive(p, p.groups(), DATASET).values())
        best = min(best, time.perf_counter() - started)
    print(f"\nderive: {sum(len(p) for p in partitions)} records -> {rows} rows in {best:.3f} s")
    assert rows > 25_000
    assert best < BUDGET_SECONDS


def test_refolding_one_group_after_a_write_takes_milliseconds(partitions: list[PartitionState]) -> None:
    state = partitions[0]
    group = max(state.groups(), key=lambda g: len(state.in_group(g)))
    started = time.perf_counter()
    for _ in range(20):
        derive(state, [group], DATASET)
    assert (time.perf_counter() - started) / 20 < 0.01
