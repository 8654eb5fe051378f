"""Recycling worn workers: the policy as plain logic, and the succession over stand-in handles.

``supervision.recycling`` decides (request limits with jitter, RSS and device memory growth
over the worker's own baselines, latency drift per params shape and batch size, and whether the
queue is short enough) with the evidence; ``supervision.recycler`` starts the successor first
and retires the old worker only once the successor is ready. The worker's side (the device
memory reading, absent on CPU, and a batch's params shape) is tested here too.
The stand-in harness is the supervisor tests' own (no processes); the real thing, with a
leaking chaos model under traffic: ``tests/integration/test_recycling.py``.
"""

from __future__ import annotations

import random
import socket
import sys
import types
from typing import Any

import pytest

from watchkeeper.config import ModelConfig
from watchkeeper.front import metrics
from watchkeeper.protocol.messages import BatchDone, Item, ItemResult, RunBatch, Stop, WorkerSpec
from watchkeeper.protocol.wire import BlockingChannel
from watchkeeper.supervision.kill_reasons import KillReason
from watchkeeper.supervision.recycling import (
    BASELINE_REQUESTS,
    LATENCY_BASELINE_BATCHES,
    MAX_SHAPES,
    QUIET_MAX_WAIT_S,
    RETRY_AFTER_S,
    RecycleCause,
    RecycleLimits,
    Recycling,
    quiet_enough,
)
from watchkeeper.supervision.supervisor import ModelState
from watchkeeper.supervision.worker_handle import ReplicaState, WorkerHandle
from watchkeeper.worker.loop import Worker, batch_shape
from watchkeeper.worker.memory import DeviceMemoryGauge

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
                                   "now": 30, "growth": 30, "threshold": 30, "requests_served": 30,
                                   "queue_depth": 0, "waited_s": 0.0}


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


def test_device_memory_growth_is_measured_from_the_workers_own_baseline() -> None:
    recycling = Recycling(RecycleLimits(device_growth_mb=512))
    worker = object()
    recycling.served(worker, BASELINE_REQUESTS - 1, 50.0, device_bytes=3000 * MB)
    assert recycling.check(worker, None, now=0) is None  # too early: no baseline yet
    assert recycling.wear(worker).baseline_device is None
    recycling.served(worker, 1, 50.0, device_bytes=4000 * MB)  # warm caches: the baseline
    assert recycling.check(worker, None, now=0) is None
    assert recycling.wear(worker).baseline_device == 4000 * MB
    recycling.served(worker, 50, 50.0, device_bytes=4512 * MB)  # grown by 512: not past it
    assert recycling.check(worker, None, now=0) is None
    recycling.served(worker, 1, 50.0)  # no reading with this batch: the last one stands
    assert recycling.check(worker, None, now=0) is None
    recycling.served(worker, 1, 50.0, device_bytes=4600 * MB)
    decision = recycling.check(worker, None, now=0)
    assert decision is not None and decision.cause is RecycleCause.DEVICE_MEMORY_GROWTH
    evidence = decision.evidence()
    assert evidence["cause"] == "device_memory_growth" and evidence["unit"] == "MiB"
    assert (evidence["baseline"], evidence["now"], evidence["growth"]) == (4000, 4600, 600)
    assert (evidence["threshold"], evidence["requests_served"]) == (512, 72)


def test_on_cpu_there_is_no_device_reading_and_the_check_decides_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recycling = Recycling(RecycleLimits(rss_growth_mb=None, device_growth_mb=1))
    worker = object()
    recycling.served(worker, 1000, 5.0, device_bytes=None)  # what a CPU worker sends
    assert recycling.check(worker, 10_000 * MB, now=0) is None
    assert recycling.wear(worker).baseline_device is None
    assert DeviceMemoryGauge("cpu").read() is None
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert DeviceMemoryGauge("cuda:0").read() is None  # no torch loaded: no reading either


def test_device_growth_is_off_by_default_and_on_with_a_threshold() -> None:
    assert RecycleLimits.of(ModelConfig(app="a.b:C")).device_growth_mb is None
    limits = RecycleLimits.of(ModelConfig(app="a.b:C", recycle_device_growth_mb=2048.0))
    assert limits.device_growth_mb == 2048.0 and limits.active


def test_the_device_gauge_reads_cuda_reserved_memory_at_most_once_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []

    def memory_reserved(device: str) -> int:
        reads.append(device)
        return 7 * 2**30

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(memory_reserved=memory_reserved))
    monkeypatch.setitem(sys.modules, "torch", fake)
    clock = [100.0]
    gauge = DeviceMemoryGauge("cuda:1", interval_s=1.0, clock=lambda: clock[0])
    assert gauge.read() == 7 * 2**30 and reads == ["cuda:1"]
    clock[0] += 0.5
    assert gauge.read() is None  # between readings: the front keeps the last one
    clock[0] += 0.5
    assert gauge.read() == 7 * 2**30 and len(reads) == 2
    assert DeviceMemoryGauge("cpu").read() is None  # torch loaded, but a CPU worker


def test_a_batch_shape_is_its_distinct_params() -> None:
    small, big = Item("a", {}, {"size": 256, "mode": "x"}), Item("b", {}, {"mode": "x", "size": 2048})
    assert batch_shape([small, small]) == '{"mode":"x","size":256}'
    assert batch_shape([big, small]) == '{"mode":"x","size":2048} | {"mode":"x","size":256}'
    assert batch_shape([Item("c", {}, {})]) == "{}"
    long = batch_shape([Item("d", {}, {"prompt": "x" * 1000})])
    assert len(long) < 160 and "#" in long  # kept short on the wire and in the log


@pytest.mark.parametrize("report_shapes, shape", [(True, "{}"), (False, "")])
def test_a_cpu_worker_sends_its_batch_shape_and_no_device_reading(report_shapes: bool,
                                                                   shape: str) -> None:
    """The shape only when latency recycling asks for it (it costs a JSON dump per batch)."""
    worker_end, front_end = socket.socketpair()
    with worker_end, front_end:
        spec = WorkerSpec(model="chaos", app="watchkeeper.apps.chaos:Chaos", device="cpu",
                          replica=0, heartbeat_interval_s=1.0, report_shapes=report_shapes)
        worker = Worker(spec, BlockingChannel(worker_end))
        worker.load()
        done = worker.run_batch(RunBatch(1, (Item("r", {"action": "ok"}, {}),)))
    assert done.results[0].error is None
    assert done.device_bytes is None and done.shape == shape


def drifting(recycling: Recycling, worker: object, shape: str, size: int, per_request_ms: float,
             batches: int) -> None:
    for _ in range(batches):
        recycling.served(worker, size, size * per_request_ms, shape)


def test_bigger_requests_are_not_latency_drift() -> None:
    """A worker that got bigger requests is compared with its own figure for those."""
    recycling = Recycling(RecycleLimits(rss_growth_mb=None, latency_factor=2.0))
    worker = object()
    drifting(recycling, worker, '{"size":256}', 1, 10.0, LATENCY_BASELINE_BATCHES)
    drifting(recycling, worker, '{"size":2048}', 1, 640.0, 5 * LATENCY_BASELINE_BATCHES)  # 64x work
    assert recycling.check(worker, None, now=0) is None
    drifting(recycling, worker, '{"size":256}', 1, 15.0, 3 * LATENCY_BASELINE_BATCHES)
    assert recycling.check(worker, None, now=0) is None  # 1.5x: within the factor
    drifting(recycling, worker, '{"size":2048}', 1, 1600.0, 3 * LATENCY_BASELINE_BATCHES)
    decision = recycling.check(worker, None, now=0)
    assert decision is not None and decision.cause is RecycleCause.LATENCY
    assert decision.baseline == pytest.approx(640.0) and decision.now > 2 * 640.0
    evidence = decision.evidence()
    assert evidence["params_shape"] == '{"size":2048}' and evidence["batch_size"] == 1
    assert evidence["unit"] == "ms"


def test_the_same_shape_in_another_batch_size_has_its_own_baseline() -> None:
    recycling = Recycling(RecycleLimits(rss_growth_mb=None, latency_factor=2.0))
    worker = object()
    drifting(recycling, worker, "{}", 8, 5.0, LATENCY_BASELINE_BATCHES)  # batched: cheap each
    drifting(recycling, worker, "{}", 1, 12.0, 3 * LATENCY_BASELINE_BATCHES)  # quiet: alone
    assert recycling.check(worker, None, now=0) is None
    assert set(recycling.wear(worker).latency) == {("{}", 8), ("{}", 1)}


def test_the_shapes_tracked_are_capped() -> None:
    recycling = Recycling(RecycleLimits(rss_growth_mb=None, latency_factor=2.0))
    worker = object()
    for seed in range(MAX_SHAPES):  # e.g. a seed in the params: each request a shape
        drifting(recycling, worker, f'{{"seed":{seed}}}', 1, 10.0, 1)
    drifting(recycling, worker, '{"seed":"new"}', 1, 10.0, 1)
    tracks = recycling.wear(worker).latency
    assert len(tracks) == MAX_SHAPES and ('{"seed":0}', 1) not in tracks  # the first unsettled went
    recycling = Recycling(RecycleLimits(rss_growth_mb=None, latency_factor=2.0))
    for seed in range(MAX_SHAPES):
        drifting(recycling, worker, f'{{"seed":{seed}}}', 1, 10.0, LATENCY_BASELINE_BATCHES)
    drifting(recycling, worker, '{"seed":"new"}', 1, 10.0, 1)
    tracks = recycling.wear(worker).latency
    assert len(tracks) == MAX_SHAPES and ('{"seed":"new"}', 1) not in tracks  # baselines kept


@pytest.mark.parametrize("depth, workers, waited_s, quiet", [
    (0, 1, 0.0, True), (1, 1, 0.0, False), (1, 2, 0.0, True), (2, 2, 0.0, False),
    (50, 2, QUIET_MAX_WAIT_S - 1, False), (50, 2, QUIET_MAX_WAIT_S, True), (0, 0, 0.0, True)])
def test_a_quiet_moment_is_a_short_queue_or_a_long_wait(depth: int, workers: int, waited_s: float,
                                                      quiet: bool) -> None:
    assert quiet_enough(depth, workers, waited_s) is quiet


def test_a_worn_worker_waits_for_a_short_queue_then_not_forever() -> None:
    recycling = Recycling(RecycleLimits(max_requests=10))
    worker = object()
    served(recycling, worker, 10)
    assert recycling.check(worker, None, now=1000.0, queue_depth=7, workers=2) is None  # a burst
    assert recycling.wear(worker).worn_since == 1000.0
    assert recycling.check(worker, None, now=1010.0, queue_depth=3, workers=2) is None
    decision = recycling.check(worker, None, now=1020.0, queue_depth=1, workers=2)
    assert decision is not None and decision.cause is RecycleCause.MAX_REQUESTS
    assert (decision.evidence()["queue_depth"], decision.evidence()["waited_s"]) == (1, 20.0)
    other = object()
    served(recycling, other, 10)
    assert recycling.check(other, None, now=0.0, queue_depth=40, workers=2) is None
    decision = recycling.check(other, None, now=QUIET_MAX_WAIT_S, queue_depth=40, workers=2)
    assert decision is not None and decision.waited_s == QUIET_MAX_WAIT_S  # a load that never lets up


def test_every_cause_is_a_declared_metric_label() -> None:
    assert {cause.value for cause in RecycleCause} <= set(metrics.RECYCLE_CAUSES)


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


def test_nothing_is_recycled_while_the_queue_is_long() -> None:
    async def test() -> None:
        h = RecyclingHarness(max_requests=3)
        await h.start()
        old = h.latest
        old.become_ready()
        h.serve(old, 3)
        depth = [5]
        h.supervisor.recycler.queue_depth = lambda: depth[0]
        h.recycle_worn()  # worn, but a burst is queued
        assert len(h.handles) == 1 and h.supervisor.slots[0].successor is None
        depth[0] = 0
        h.recycle_worn()
        await h.settle(0.02)
        successor = h.latest
        assert successor is not old and h.supervisor.slots[0].successor is successor
        assert h.supervisor.slots[0].replica is old and old.idle  # still first: no capacity lost
    run(test)


def test_the_device_reading_and_the_shape_of_a_batch_reach_the_wear() -> None:
    async def test() -> None:
        h = RecyclingHarness(recycle_device_growth_mb=100.0, recycle_latency_factor=2.0)
        await h.start()
        worker = h.latest
        worker.become_ready()
        results = tuple(ItemResult(f"r{i}", {}) for i in range(2))
        worker._on_message(worker, BatchDone(1, results, 8.0, None, 900 * MB, '{"size":512}'))
        wear = h.supervisor.recycler.recycling.wear(worker)
        assert wear.served == 2 and wear.device_bytes == 900 * MB
        assert wear.latency[('{"size":512}', 2)].recent_ms == pytest.approx(4.0)
    run(test)
