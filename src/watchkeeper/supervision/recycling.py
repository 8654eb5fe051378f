"""When a live worker is worn out and should be replaced: baselines, thresholds, the evidence.

Runs in the front process, on its event loop, called by the supervisor
(``supervision.supervisor``); no processes and no clock of its own (the caller passes
``now``), so the policy is tested as plain logic. State: one :class:`Wear` per worker
handle, forgotten when the worker exits.

A worker is recycled (replaced by a fresh one, started first) for one of four causes:

- ``max_requests``: it has served its request limit, ``max_requests`` plus a random
  ``0..max_requests_jitter`` drawn once per worker (as gunicorn does), so replicas started
  together do not recycle together.
- ``rss_growth``: its resident memory grew more than ``recycle_rss_growth_mb`` above its own
  baseline, the first reading after it served ``BASELINE_REQUESTS`` requests (warm-up and
  the first requests have grown its caches by then; growth beyond that is a leak).
- ``device_memory_growth``: the same for the device memory it holds (CUDA: what its caching
  allocator reserved, which the worker reads and sends with its batch results,
  ``worker.memory.DeviceMemoryGauge``), past ``recycle_device_growth_mb``. On CPU there is
  no reading and the check is off.
- ``latency``: for one params shape and batch size, its recent time per request (a moving
  average) is more than ``recycle_latency_factor`` times its own baseline, the mean of its
  first ``LATENCY_BASELINE_BATCHES`` batches of that shape and size. A worker that got
  bigger requests is compared with its own figure for those, never with smaller ones. At
  most ``MAX_SHAPES`` shapes are tracked per worker: a new one evicts the first tracked shape
  that has no baseline yet, or is not tracked when all have one.

A worn worker is recycled at a quiet moment (:func:`quiet_enough`): the model's queue holds
fewer requests than the model has workers, or the worker has waited ``QUIET_MAX_WAIT_S``
since it was first found worn, so a recycle (a successor's load, which competes with the
serving workers for CPU, memory and disk) does not land in a burst.

The per-request cost is a counter (and, only with the latency check on, a moving average).
After a replacement failed to start, the worker is not tried again for ``RETRY_AFTER_S``.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BASELINE_REQUESTS", "LATENCY_BASELINE_BATCHES", "MAX_SHAPES", "QUIET_MAX_WAIT_S",
    "RETRY_AFTER_S", "Recycle", "RecycleCause", "RecycleLimits", "Recycling", "Wear", "decide",
    "quiet_enough",
]

#: Requests a worker serves before its RSS and device memory baselines are read.
BASELINE_REQUESTS = 20
#: Batches of one shape and size whose mean time is the latency baseline for them.
LATENCY_BASELINE_BATCHES = 10
#: Weight of the newest batch in the moving average of the time per request.
LATENCY_EWMA_WEIGHT = 0.2
#: Params shapes (with batch sizes) whose latency one worker tracks.
MAX_SHAPES = 32
#: How long a worn worker waits for a short queue before it is recycled anyway.
QUIET_MAX_WAIT_S = 300.0
#: How long a worker whose replacement failed to start is left alone.
RETRY_AFTER_S = 60.0
_MB = 2**20
#: A latency track's key: the params shape (``BatchDone.shape``) and the batch size.
ShapeKey = tuple[str, int]


class RecycleCause(enum.StrEnum):
    """Why a live worker was replaced (the ``cause`` label of the recycle metric)."""

    MAX_REQUESTS = "max_requests"
    RSS_GROWTH = "rss_growth"
    DEVICE_MEMORY_GROWTH = "device_memory_growth"
    LATENCY = "latency"


_IN_MIB = (RecycleCause.RSS_GROWTH, RecycleCause.DEVICE_MEMORY_GROWTH)


@dataclass(frozen=True, slots=True)
class RecycleLimits:
    """The thresholds of one model (``ModelConfig``'s recycle keys)."""

    max_requests: int = 0  # 0: off
    max_requests_jitter: int = 0
    rss_growth_mb: float | None = None  # None: off
    latency_factor: float | None = None  # None: off
    device_growth_mb: float | None = None  # None: off

    @classmethod
    def of(cls, config: Any) -> RecycleLimits:
        """The limits of a ``ModelConfig``."""
        return cls(config.max_requests, config.max_requests_jitter,
                   config.recycle_rss_growth_mb or None, config.recycle_latency_factor,
                   config.recycle_device_growth_mb or None)

    @property
    def active(self) -> bool:
        return (bool(self.max_requests) or self.rss_growth_mb is not None
                or self.device_growth_mb is not None or self.tracks_latency)

    @property
    def tracks_latency(self) -> bool:
        return self.latency_factor is not None


@dataclass(slots=True)
class _Latency:
    """Time per request of one shape and size: the baseline's sum, then a moving average."""

    batches: int = 0
    baseline_sum_ms: float = 0.0
    recent_ms: float = 0.0

    @property
    def baseline_ms(self) -> float | None:
        if self.batches < LATENCY_BASELINE_BATCHES:
            return None
        return self.baseline_sum_ms / LATENCY_BASELINE_BATCHES

    def observe(self, per_request_ms: float) -> None:
        self.batches += 1
        if self.batches <= LATENCY_BASELINE_BATCHES:
            self.baseline_sum_ms += per_request_ms
            self.recent_ms = self.baseline_sum_ms / self.batches
        else:
            self.recent_ms += LATENCY_EWMA_WEIGHT * (per_request_ms - self.recent_ms)


@dataclass(slots=True)
class Wear:
    """What one worker has served and how it has grown since its baselines."""

    request_limit: int  # 0: none
    served: int = 0
    baseline_rss: int | None = None
    device_bytes: int | None = None  # its latest device memory reading (None: none, e.g. CPU)
    baseline_device: int | None = None
    latency: dict[ShapeKey, _Latency] = field(default_factory=dict)
    worn_since: float | None = None  # first found worn (waiting for a quiet moment since)
    not_before: float = 0.0  # its replacement failed to start: left alone until then

    def track(self, key: ShapeKey) -> _Latency | None:
        """The latency track of ``key``, made if there is room (see the module's docstring)."""
        found = self.latency.get(key)
        if found is None:
            if len(self.latency) >= MAX_SHAPES:
                unsettled = next((k for k, t in self.latency.items() if t.baseline_ms is None), None)
                if unsettled is None:
                    return None
                del self.latency[unsettled]
            found = self.latency[key] = _Latency()
        return found


@dataclass(frozen=True, slots=True)
class Recycle:
    """A decision to recycle a worker, with its evidence (as logged in ``worker.recycle``)."""

    cause: RecycleCause
    baseline: float  # requests (max_requests), bytes (memory growth), ms per request (latency)
    now: float
    threshold: float
    served: int
    shape: ShapeKey | None = None  # latency: the params shape and batch size that drifted
    queue_depth: int = 0  # the model's queue when the recycle was started
    waited_s: float = 0.0  # since the worker was first found worn

    @property
    def growth(self) -> float:
        return self.now - self.baseline

    def evidence(self) -> dict[str, Any]:
        """The log fields: baseline, now, growth, threshold (MiB for memory), requests
        served, the queue depth and the wait for it (and, for latency, the params shape)."""
        scale = _MB if self.cause in _IN_MIB else 1
        unit = "MiB" if self.cause in _IN_MIB else "ms" if self.cause is RecycleCause.LATENCY else "requests"
        found = {"cause": self.cause.value, "unit": unit, "baseline": round(self.baseline / scale, 1),
                 "now": round(self.now / scale, 1), "growth": round(self.growth / scale, 1),
                 "threshold": round(self.threshold / scale, 2), "requests_served": self.served,
                 "queue_depth": self.queue_depth, "waited_s": round(self.waited_s, 1)}
        if self.shape is not None:
            found["params_shape"], found["batch_size"] = self.shape
        return found


def decide(wear: Wear, limits: RecycleLimits, rss_bytes: int | None) -> Recycle | None:
    """Whether a worker should be recycled now, and why (the first cause that applies)."""
    if wear.request_limit and wear.served >= wear.request_limit:
        return Recycle(RecycleCause.MAX_REQUESTS, 0, wear.served, wear.request_limit, wear.served)
    grown = (_grown(RecycleCause.RSS_GROWTH, limits.rss_growth_mb, wear.baseline_rss, rss_bytes, wear)
             or _grown(RecycleCause.DEVICE_MEMORY_GROWTH, limits.device_growth_mb,
                       wear.baseline_device, wear.device_bytes, wear))
    if grown is not None:
        return grown
    if limits.latency_factor is not None:
        return _latency_drift(wear, limits.latency_factor)
    return None


def _grown(cause: RecycleCause, limit_mb: float | None, baseline: int | None, now: int | None,
           wear: Wear) -> Recycle | None:
    if limit_mb is None or baseline is None or now is None or now - baseline <= limit_mb * _MB:
        return None
    return Recycle(cause, baseline, now, limit_mb * _MB, wear.served)


def _latency_drift(wear: Wear, factor: float) -> Recycle | None:
    """The first shape whose recent time per request exceeds ``factor`` x its baseline,
    once the average has seen as many batches again as its baseline."""
    for key, track in wear.latency.items():
        baseline = track.baseline_ms
        settled = track.batches >= 2 * LATENCY_BASELINE_BATCHES
        if baseline is not None and settled and track.recent_ms > factor * baseline:
            return Recycle(RecycleCause.LATENCY, baseline, track.recent_ms, factor, wear.served, key)
    return None


def quiet_enough(queue_depth: int, workers: int, worn_for_s: float) -> bool:
    """Whether a worn worker may be recycled now: the queue holds fewer requests than the
    model has workers (each waiting one is taken at a worker's next turn: no burst), or it
    has waited ``QUIET_MAX_WAIT_S`` (a load that never lets up is not a burst to wait out)."""
    return queue_depth < max(1, workers) or worn_for_s >= QUIET_MAX_WAIT_S


class Recycling:
    """The wear of every live worker of one model, keyed by its handle."""

    def __init__(self, limits: RecycleLimits, rng: random.Random | None = None) -> None:
        self.limits = limits
        self._rng = rng or random.Random()
        self._wear: dict[object, Wear] = {}

    def wear(self, worker: object) -> Wear:
        found = self._wear.get(worker)
        if found is None:
            jitter = self._rng.randint(0, self.limits.max_requests_jitter)
            limit = self.limits.max_requests + jitter if self.limits.max_requests else 0
            found = self._wear[worker] = Wear(limit)
        return found

    def served(self, worker: object, requests: int, infer_ms: float, shape: str = "",
               device_bytes: int | None = None) -> None:
        """A batch of ``requests`` of params ``shape`` done in ``infer_ms``, and the device
        memory the worker held after it, when read (called per batch: keep it cheap)."""
        wear = self.wear(worker)
        wear.served += requests
        if device_bytes is not None:
            wear.device_bytes = device_bytes
        if self.limits.tracks_latency and requests:
            track = wear.track((shape, requests))
            if track is not None:
                track.observe(infer_ms / requests)

    def check(self, worker: object, rss_bytes: int | None, now: float, *, queue_depth: int = 0,
              workers: int = 1) -> Recycle | None:
        """Read the baselines once they are due, then decide; None while held back, off, or
        worn but waiting for a quiet moment (``quiet_enough``)."""
        if not self.limits.active:
            return None
        wear = self.wear(worker)
        if wear.served >= BASELINE_REQUESTS:
            if wear.baseline_rss is None:
                wear.baseline_rss = rss_bytes
            if wear.baseline_device is None:
                wear.baseline_device = wear.device_bytes
        decision = decide(wear, self.limits, rss_bytes) if now >= wear.not_before else None
        if decision is None:
            return None
        if wear.worn_since is None:
            wear.worn_since = now
        waited = now - wear.worn_since
        if not quiet_enough(queue_depth, workers, waited):
            return None
        return dataclasses.replace(decision, queue_depth=queue_depth, waited_s=waited)

    def hold(self, worker: object, now: float) -> None:
        """Its replacement failed to start: leave it alone for RETRY_AFTER_S."""
        self.wear(worker).not_before = now + RETRY_AFTER_S

    def forget(self, worker: object) -> None:
        self._wear.pop(worker, None)
