"""When a live worker is worn out and should be replaced: baselines, thresholds, the evidence.

Runs in the front process, on its event loop, called by the supervisor
(``supervision.supervisor``); no processes and no clock of its own (the caller passes
``now``), so the policy is tested as plain logic. State: one :class:`Wear` per worker
handle, forgotten when the worker exits.

A worker is recycled (replaced by a fresh one, started first) for one of three causes:

- ``max_requests``: it has served its request limit, ``max_requests`` plus a random
  ``0..max_requests_jitter`` drawn once per worker (as gunicorn does), so replicas started
  together do not recycle together.
- ``rss_growth``: its resident memory grew more than ``recycle_rss_growth_mb`` above its own
  baseline, the first reading after it served ``BASELINE_REQUESTS`` requests (warm-up and
  the first requests have grown its caches by then; growth beyond that is a leak).
- ``latency``: for one batch size, its recent time per request (a moving average) is more
  than ``recycle_latency_factor`` times its own baseline, the mean of its first
  ``LATENCY_BASELINE_BATCHES`` batches of that size.

The per-request cost is a counter (and, only with the latency check on, a moving average).
After a replacement failed to start, the worker is not tried again for ``RETRY_AFTER_S``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BASELINE_REQUESTS", "LATENCY_BASELINE_BATCHES", "RETRY_AFTER_S", "Recycle", "RecycleCause",
    "RecycleLimits", "Recycling", "Wear", "decide",
]

#: Requests a worker serves before its RSS baseline is read.
BASELINE_REQUESTS = 20
#: Batches of one size whose mean time is the latency baseline for that size.
LATENCY_BASELINE_BATCHES = 10
#: Weight of the newest batch in the moving average of the time per request.
LATENCY_EWMA_WEIGHT = 0.2
#: How long a worker whose replacement failed to start is left alone.
RETRY_AFTER_S = 60.0
_MB = 2**20


class RecycleCause(enum.StrEnum):
    """Why a live worker was replaced (the ``cause`` label of the recycle metric)."""

    MAX_REQUESTS = "max_requests"
    RSS_GROWTH = "rss_growth"
    LATENCY = "latency"


@dataclass(frozen=True, slots=True)
class RecycleLimits:
    """The thresholds of one model (``ModelConfig``'s recycle keys)."""

    max_requests: int = 0  # 0: off
    max_requests_jitter: int = 0
    rss_growth_mb: float | None = None  # None: off
    latency_factor: float | None = None  # None: off

    @classmethod
    def of(cls, config: Any) -> RecycleLimits:
        """The limits of a ``ModelConfig``."""
        return cls(config.max_requests, config.max_requests_jitter,
                   config.recycle_rss_growth_mb or None, config.recycle_latency_factor)

    @property
    def active(self) -> bool:
        return bool(self.max_requests) or self.rss_growth_mb is not None or self.tracks_latency

    @property
    def tracks_latency(self) -> bool:
        return self.latency_factor is not None


@dataclass(slots=True)
class _Latency:
    """Time per request of one batch size: the baseline's sum, then a moving average."""

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
    """What one worker has served and how it has grown since its baseline."""

    request_limit: int  # 0: none
    served: int = 0
    baseline_rss: int | None = None
    latency: dict[int, _Latency] = field(default_factory=dict)
    not_before: float = 0.0  # its replacement failed to start: left alone until then


@dataclass(frozen=True, slots=True)
class Recycle:
    """A decision to recycle a worker, with its evidence (as logged in ``worker.recycle``)."""

    cause: RecycleCause
    baseline: float  # requests (max_requests), bytes (rss_growth), ms per request (latency)
    now: float
    threshold: float
    served: int

    @property
    def growth(self) -> float:
        return self.now - self.baseline

    def evidence(self) -> dict[str, Any]:
        """The log fields: baseline, now, growth, threshold (MiB for RSS) and requests served."""
        scale = _MB if self.cause is RecycleCause.RSS_GROWTH else 1
        unit = {RecycleCause.RSS_GROWTH: "MiB", RecycleCause.LATENCY: "ms"}.get(self.cause, "requests")
        return {"cause": self.cause.value, "unit": unit, "baseline": round(self.baseline / scale, 1),
                "now": round(self.now / scale, 1), "growth": round(self.growth / scale, 1),
                "threshold": round(self.threshold / scale, 2), "requests_served": self.served}


def decide(wear: Wear, limits: RecycleLimits, rss_bytes: int | None) -> Recycle | None:
    """Whether a worker should be recycled now, and why (the first cause that applies)."""
    if wear.request_limit and wear.served >= wear.request_limit:
        return Recycle(RecycleCause.MAX_REQUESTS, 0, wear.served, wear.request_limit, wear.served)
    if limits.rss_growth_mb is not None and wear.baseline_rss is not None and rss_bytes is not None:
        allowed = limits.rss_growth_mb * _MB
        if rss_bytes - wear.baseline_rss > allowed:
            return Recycle(RecycleCause.RSS_GROWTH, wear.baseline_rss, rss_bytes, allowed, wear.served)
    if limits.latency_factor is not None:
        return _latency_drift(wear, limits.latency_factor)
    return None


def _latency_drift(wear: Wear, factor: float) -> Recycle | None:
    """The first batch size whose recent time per request exceeds ``factor`` x its baseline,
    once the average has seen as many batches again as its baseline."""
    for track in wear.latency.values():
        baseline = track.baseline_ms
        settled = track.batches >= 2 * LATENCY_BASELINE_BATCHES
        if baseline is not None and settled and track.recent_ms > factor * baseline:
            return Recycle(RecycleCause.LATENCY, baseline, track.recent_ms, factor, wear.served)
    return None


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

    def served(self, worker: object, requests: int, infer_ms: float) -> None:
        """A batch of ``requests`` done in ``infer_ms`` (called per batch: keep it cheap)."""
        wear = self.wear(worker)
        wear.served += requests
        if self.limits.tracks_latency and requests:
            wear.latency.setdefault(requests, _Latency()).observe(infer_ms / requests)

    def check(self, worker: object, rss_bytes: int | None, now: float) -> Recycle | None:
        """Read the baseline once it is due, then decide (None while held back or off)."""
        if not self.limits.active:
            return None
        wear = self.wear(worker)
        if wear.baseline_rss is None and wear.served >= BASELINE_REQUESTS:
            wear.baseline_rss = rss_bytes
        return decide(wear, self.limits, rss_bytes) if now >= wear.not_before else None

    def hold(self, worker: object, now: float) -> None:
        """Its replacement failed to start: leave it alone for RETRY_AFTER_S."""
        self.wear(worker).not_before = now + RETRY_AFTER_S

    def forget(self, worker: object) -> None:
        self._wear.pop(worker, None)
