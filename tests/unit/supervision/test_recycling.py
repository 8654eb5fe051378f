"""Recycling worn workers: the policy as plain logic, and the succession over stand-in handles.

``supervision.recycling`` decides (request limits with jitter, RSS growth over the worker's
own baseline, latency drift per batch size) with the evidence; ``supervision.recycler``
starts the successor first and retires the old worker only once the successor is ready.
The stand-in harness is the supervisor tests' own (no processes); the real thing, with a
leaking chaos model under traffic: ``tests/integration/test_recycling.py``.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from watchkeeper.front import metrics
from watchkeeper.protocol.messages import BatchDone, ItemResult, Stop
from watchkeeper.supervision.kill_reasons import KillReason
from watchkeeper.supervision.recycling import (
    BASELINE_REQUESTS,
    LATENCY_BASELINE_BATCHES,
    RETRY_AFTER_S,
    RecycleCause,
    RecycleLimits,
    Recycling,
)
from watchkeeper.supervision.supervisor import ModelState
from watchkeeper.supervision.worker_handle import ReplicaState, WorkerHandle

from .test_supervisor import Harness, StandIn, run

MB = 2**20


def served(recycling: Recycling, worker: object, requests: int, infer_ms: float = 10.0) -> None:
    for _ in range(requests):
        recycling.served(worker, 1, infer_ms)


# --- the policy ---------------------------------------------------------------------------


def test_max_requests_with_jitter_is_drawn_once_per_worker() -> None:
    recycling = Recycling(RecycleLimits(max_requests=100, max_requests_jitter=50), random.Random(7))
    limits = [recycling.wear(object()).request_limit for _ in range(40)]
    assert all(100 <= limit <= 150 for limit in limits)
    assert len(set(limits)) > 10  # replicas do not recycle together
    worker = object()
    assert recycling.wear(worker).request_limit == recycling.wear(worker).request_limit


def test_max_requests_recycles_at_the_limit_and_not_before() -> None:
    recycling = Recycling(RecycleLimits(max_requests=30))
    worker = object()
    served(recycling, worker, 29)
    assert recycling.check(worker, None, now=0) is None
    served(recycling, worker, 1)
    decision = recycling.check(worker, None, now=0)
    assert decision is not None and decision.cause is RecycleCause.MAX_REQUESTS
    assert decision.evidence() == {"cause": "max_requests", "unit": "requests", "baseline": 0,
                                   "now": 30, "growth": 30, "threshold": 30, "requests_served": 30}


def test_rss_growth_is_measured_from_the_workers_own_baseline() -> None:
    recycling = Recycling(RecycleLimits(rss_growth_mb=100))
    worker = object()
    served(recycling, worker, BASELINE_REQUESTS - 1)
    assert recycling.check(worker, 900 * MB, now=0) is None  # too early: no baseline yet
    assert recycling.wear(worker).baseline_rss is None
    served(recycling, worker, 1)
    assert recycling.check(worker, 500 * MB, now=0) is None  # the baseline: 500 MiB
    assert recycling.check(worker, 600 * MB, now=0) is None  # grown by 100: not past it
    decision = recycling.check(worker, 601 * MB, now=0)
    assert decision is not None and decision.cause is RecycleCause.RSS_GROWTH
    evidence = decision.evidence()
    assert (evidence["baseline"], evidence["now"], evidence["growth"]) == (500, 601, 101)
    assert (evidence["unit"], evidence["threshold"], evidence["requests_served"]) == ("MiB", 100, 20)


def test_an_unread_rss_decides_nothing() -> None:
    recycling = Recycling(RecycleLimits(rss_growth_mb=1))
    worker = object()
    served(recycling, worker, BASELINE_REQUESTS)
    assert recycling.check(worker, None, now=0) is None
    assert recycling.check(worker, 100 * MB, now=0) is None  # the baseline
    assert recycling.check(worker, None, now=0) is None


@pytest.mark.parametrize("factor, slow_ms, recycles", [(3.0, 25.0, False), (3.0, 40.0, True)])
def test_latency_drift_per_batch_size(factor: float, slow_ms: float, recycles: bool) -> None:
    recycling = Recycling(RecycleLimits(rss_growth_mb=None, latency_factor=factor))
    worker = object()
    for _ in range(LATENCY_BASELINE_BATCHES):
        recycling.served(worker, 4, 40.0)  # 10 ms per request
        recycling.served(worker, 1, 50.0)  # another size: its own baseline
    for _ in range(3 * LATENCY_BASELINE_BATCHES):
        recycling.served(worker, 4, 4 * slow_ms)
    decision = recycling.check(worker, None, now=0)
    assert (decision is not None) is recycles
    if decision is not None:
        assert decision.cause is RecycleCause.LATENCY
        assert decision.baseline == pytest.approx(10.0)
        assert decision.now > 3 * decision.baseline


def test_latency_is_not_judged_before_its_average_settles() -> None:
    recycling = Recycling(RecycleLimits(rss_growth_mb=None, latency_factor=2.0))
    worker = object()
    served(recycling, worker, LATENCY_BASELINE_BATCHES, infer_ms=10.0)
    served(recycling, worker, LATENCY_BASELINE_BATCHES - 1, infer_ms=1000.0)
    assert recycling.check(worker, None, now=0) is None
    served(recycling, worker, 1, infer_ms=1000.0)
    assert recycling.check(worker, None, now=0) is not None


def test_everything_off_decides_nothing_and_keeps_nothing() -> None:
    recycling = Recycling(RecycleLimits())
    worker = object()
    served(recycling, worker, 10_000)
    assert recycling.check(worker, 10_000 * MB, now=0) is None
    assert recycling.wear(worker).latency == {}  # no moving average kept when off


def test_a_held_worker_is_left_alone_for_a_while_then_forgotten() -> None:
    recycling = Recycling(RecycleLimits(max_requests=1))
    worker = object()
    served(recycling, worker, 1)
    recycling.hold(worker, now=100.0)
    assert recycling.check(worker, None, now=100.0 + RETRY_AFTER_S - 1) is None
    assert recycling.check(worker, None, now=100.0 + RETRY_AFTER_S) is not None
    recycling.forget(worker)
    assert recycling.wear(worker).served == 0


# --- the succession, over stand-in handles -------------------------------------------------


class Recorded(StandIn):
    """A stand-in that keeps what it was sent, idle as the real handle is (not retiring)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sent: list[object] = []
        self.retiring = False

    def send(self, message: object) -> None:
        self.sent.append(message)

    @property
    def idle(self) -> bool:
        return self.state is ReplicaState.READY and not self.retiring


def test_a_retiring_worker_handle_is_not_idle() -> None:
    async def test() -> None:
        h = Harness()
        handle = WorkerHandle(h.supervisor._spec(0), lambda r, m: None, lambda r, c: None)
        handle.state = ReplicaState.READY
        assert handle.idle
        handle.retiring = True
        assert not handle.idle and handle.alive
    run(test)


class RecyclingHarness(Harness):
    def make(self, spec: Any, on_message: Any, on_exit: Any) -> Any:
        handle = Recorded(spec, on_message, on_exit)
        self.handles.append(handle)
        return handle

    def serve(self, handle: StandIn, requests: int) -> None:
        results = tuple(ItemResult(f"r{i}", {}) for i in range(requests))
        handle._on_message(handle, BatchDone(1, results, 5.0))

    def recycle_worn(self) -> None:
        sup = self.supervisor
        sup.recycler.recycle_worn(sup.slots, quiet=sup.state is ModelState.READY)


def recycles(cause: str) -> float:
    return metrics.WORKER_RECYCLES_TOTAL.labels("m", cause)._value.get()


def test_the_successor_starts_first_and_the_old_worker_retires_once_it_is_ready() -> None:
    async def test() -> None:
        h = RecyclingHarness(max_requests=3)
        await h.start()
        old = h.latest
        old.become_ready()
        h.serve(old, 3)
        before = recycles("max_requests")
        h.recycle_worn()
        assert recycles("max_requests") == before + 1
        await h.settle(0.02)
        slot = h.supervisor.slots[0]
        successor = h.latest
        assert successor is not old and slot.successor is successor
        assert slot.replica is old and old.idle and not old.sent  # it still serves meanwhile
        h.recycle_worn()
        assert len(h.handles) == 2  # one recycle at a time
        successor.become_ready()
        assert slot.replica is successor and slot.retiring is old
        assert old.retiring and not old.idle  # the scheduler sends it nothing new
        assert isinstance(old.sent[-1], Stop)
        assert h.supervisor.ready_count == 1 and h.supervisor.state is ModelState.READY
        old.exit(0)  # it finished its batch and stopped
        await h.settle(0.02)
        assert slot.retiring is None and len(h.handles) == 2  # no restart: nothing lost
        assert h.lost == ["exit code 0 (ok)"]
        assert h.supervisor.slots[0].crash_streak == 0
    run(test)


def test_nothing_is_recycled_while_the_model_is_not_ready() -> None:
    async def test() -> None:
        h = RecyclingHarness(max_requests=1, replicas=2)
        await h.start()
        h.handles[0].become_ready()
        h.serve(h.handles[0], 5)
        h.recycle_worn()  # replica 1 is still starting: not quiet
        assert len(h.handles) == 2
        h.handles[1].become_ready()
        h.recycle_worn()
        assert len(h.handles) == 3
    run(test)


def test_if_the_old_worker_dies_its_successor_takes_the_slot() -> None:
    async def test() -> None:
        h = RecyclingHarness(max_requests=1)
        await h.start()
        old = h.latest
        old.become_ready()
        h.serve(old, 1)
        h.recycle_worn()
        await h.settle(0.02)
        successor = h.latest
        old.kill(KillReason.HEARTBEAT)
        await h.settle()
        slot = h.supervisor.slots[0]
        assert slot.replica is successor and slot.successor is None
        assert len(h.handles) == 2  # the restart found the slot taken
        successor.become_ready()
        assert h.supervisor.state is ModelState.READY
    run(test)


def test_a_successor_that_dies_loading_leaves_the_old_worker_serving() -> None:
    async def test() -> None:
        h = RecyclingHarness(max_requests=1)
        await h.start()
        old = h.latest
        old.become_ready()
        h.serve(old, 1)
        h.recycle_worn()
        await h.settle(0.02)
        h.latest.exit(3)
        await h.settle(0.02)
        slot = h.supervisor.slots[0]
        assert slot.replica is old and slot.successor is None and old.idle
        assert h.supervisor.load_failures == 0
        h.recycle_worn()
        assert len(h.handles) == 2  # held back for RETRY_AFTER_S, not retried in a loop
        assert old.state is ReplicaState.READY
    run(test)
