"""How long a batch takes in a worker, learned per kind of work and per params shape.

Runs in the front process, used by the scheduler (``scheduling.scheduler``) for load
shedding (would the wait and the run exceed a request's deadline?), Retry-After, the
memory admission's wait and the refill's cap. Pure bookkeeping: no clock, no I/O.

One running mean for everything would let one 8 s job stand for every 0.2 s predict (and
shed them with 503s), or a probe's milliseconds for a job's minutes. So the means are kept
apart by kind of work (``request``, ``job``, ``probe``: ``Pending.work``) and, within a
kind, by the params' shape (``Pending.shape``: a 2048-pixel cartoon is not a 256-pixel
one). A shape not seen yet is estimated by its kind's mean; a kind not seen yet by 0 s.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["MAX_SHAPES", "ServiceTimes"]

#: Weight of the newest batch in each running mean.
ALPHA = 0.2
#: Shapes remembered (least recently seen go first).
MAX_SHAPES = 256


def _mean(old: float | None, seconds: float) -> float:
    """A running mean, started at the first sample rather than at 0."""
    return seconds if old is None else old + ALPHA * (seconds - old)


class ServiceTimes:
    """Running means of a batch's time in a worker, per kind and per (kind, shape)."""

    def __init__(self, max_shapes: int = MAX_SHAPES) -> None:
        self._kinds: dict[str, float] = {}
        self._shapes: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max_shapes = max_shapes

    def observe(self, kind: str, shape: str, seconds: float) -> None:
        """A batch of ``kind`` whose (first) request has params ``shape`` took ``seconds``."""
        self._kinds[kind] = _mean(self._kinds.get(kind), seconds)
        key = (kind, shape)
        self._shapes[key] = _mean(self._shapes.pop(key, None), seconds)
        while len(self._shapes) > self._max_shapes:
            self._shapes.popitem(last=False)

    def estimate(self, kind: str, shape: str | None = None) -> float:
        """Seconds a batch of ``kind`` (and ``shape``, when known) likely takes; 0 unknown."""
        if shape is not None:
            found = self._shapes.get((kind, shape))
            if found is not None:
                return found
        return self._kinds.get(kind, 0.0)

    def wait_s(self, running: Iterable[tuple[float, float]], queued_batches: float, ready: int) -> float:
        """How long a request queued now would likely wait for a worker: what the batches
        in flight likely have left (``(expected_s, elapsed_s)`` each), then the queued
        batches of requests, shared by the ``ready`` replicas (0 when there are none)."""
        if not ready:
            return 0.0
        left = sum(max(0.0, expected - elapsed) for expected, elapsed in running)
        return (left + queued_batches * self.estimate("request")) / ready

    def retry_after_s(self, batches: float, ready: int) -> int:
        """Whole seconds (at least 1) until ``batches`` of requests have likely run."""
        return max(1, math.ceil(batches * max(self.estimate("request"), 0.05) / max(ready, 1)))
