"""The Service tab's rolling window: one sample per refresh over the last minutes, as plots.

Runs in the UI process (a client of the HTTP API). Each refresh adds a :class:`Sample` (the
latency quantiles of the requests answered since the previous scrape, queue depth per model,
memory used per device and resident memory per worker); samples older than the window are
dropped, so a page open all day holds at most ``WINDOW_S / refresh`` samples. The frames
are long-form (``time``, ``value``, ``series``) for ``gr.LinePlot``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from watchkeeper.ui.service_metrics import MetricsSnapshot, latency_quantiles

__all__ = ["MAX_POINTS", "MIB", "Sample", "WINDOW_S", "Window", "sample_of"]

#: How far back the plots reach, in seconds.
WINDOW_S = 600.0
#: Most samples drawn per plot (every n-th one past it, the newest always): the frames go to
#: the browser every refresh, so a full window costs the same as a few minutes.
MAX_POINTS = 150
MIB = 1024.0 * 1024.0


@dataclass
class Sample:
    """One refresh's readings; ``t`` is the UI's clock (Unix seconds)."""

    t: float
    #: model -> (p50, p95) in milliseconds, for the requests answered since the last scrape.
    latency_ms: dict[str, tuple[float, float]] = field(default_factory=dict)
    queue: dict[str, float] = field(default_factory=dict)
    #: series name (``cpu used``, ``chaos #0 RSS``) -> MiB.
    memory_mib: dict[str, float] = field(default_factory=dict)


def sample_of(t: float, health: dict[str, Any] | None, new: MetricsSnapshot | None,
              old: MetricsSnapshot | None) -> Sample:
    """The sample of one refresh from what it read (either reading may be missing)."""
    sample = Sample(t=t)
    if new is not None:
        for model, (p50, p95) in latency_quantiles(new, old).items():
            sample.latency_ms[model] = (p50 * 1000.0, p95 * 1000.0)
        sample.queue = dict(new.queue_depth)
        for device, used in new.device_used.items():
            sample.memory_mib[f"{device} used"] = used / MIB
    models = (health or {}).get("models")
    if isinstance(models, dict):
        for name, model in models.items():
            if not isinstance(model, dict):
                continue
            if new is None and isinstance(model.get("queue_depth"), int | float):
                sample.queue[name] = float(model["queue_depth"])
            for replica in model.get("replicas") or []:
                rss = replica.get("rss_bytes") if isinstance(replica, dict) else None
                if isinstance(rss, int | float) and replica.get("pid") is not None:
                    sample.memory_mib[f"{name} #{replica.get('index')} RSS"] = rss / MIB
    elif new is not None:
        for (model, replica), rss in new.worker_rss.items():
            if rss > 0:
                sample.memory_mib[f"{model} #{replica} RSS"] = rss / MIB
    return sample


class Window:
    """The samples of the last ``span_s`` seconds, oldest first."""

    def __init__(self, span_s: float = WINDOW_S) -> None:
        self.span_s = span_s
        self.samples: deque[Sample] = deque()

    def add(self, sample: Sample) -> None:
        """Append ``sample`` and drop the samples older than the window (by its time)."""
        self.samples.append(sample)
        while self.samples and self.samples[0].t < sample.t - self.span_s:
            self.samples.popleft()

    def drawn(self) -> list[Sample]:
        """The samples drawn: all of them, or every n-th (ending with the newest) past ``MAX_POINTS``."""
        samples = list(self.samples)
        step = -(-len(samples) // MAX_POINTS)
        return samples if step <= 1 else samples[::-1][::step][::-1]

    def _frame(self, rows: list[tuple[float, float, str]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=["time", "value", "series"])
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        return frame

    def latency(self) -> pd.DataFrame:
        """p50 and p95 per model (ms); a model without requests in a refresh has no point."""
        rows = [(s.t, value, f"{model} {name}")
                for s in self.drawn() for model, pair in s.latency_ms.items()
                for name, value in zip(("p50", "p95"), pair, strict=True)]
        return self._frame(rows)

    def queue(self) -> pd.DataFrame:
        """Requests waiting per model."""
        return self._frame([(s.t, v, m) for s in self.drawn() for m, v in s.queue.items()])

    def memory(self) -> pd.DataFrame:
        """Memory used per device and resident memory per worker (MiB)."""
        return self._frame([(s.t, v, n) for s in self.drawn() for n, v in s.memory_mib.items()])
