"""The Service tab's reading of ``GET /metrics``: the few series it shows, and their deltas.

Runs in the UI process (a client of the HTTP API). The Prometheus text format is parsed with
``prometheus_client``'s parser into a :class:`MetricsSnapshot` holding only what the tab
uses: the request-latency histogram per model, queue depths, worker RSS, device memory, and
the counters whose increases become events (restarts by reason, degradations, recycles,
request errors). Two snapshots give the deltas: counter increases (a counter that went down
was reset, a restarted server, so its new value is the increase) and latency quantiles of
the requests answered in between, estimated from the histogram's bucket deltas the way
Prometheus' ``histogram_quantile`` does (linear inside a bucket).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "MetricsSnapshot", "Pairs", "bucket_delta", "increases", "latency_quantiles", "parse_metrics",
    "quantile"
]

#: (model, label) -> value, for counters and gauges labelled by model and one more label.
Pairs = dict[tuple[str, str], float]


@dataclass
class MetricsSnapshot:
    """What the Service tab reads from one scrape of ``/metrics``."""

    #: model -> cumulative (upper bound, count) of ``watchkeeper_request_duration_seconds``.
    latency_buckets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    latency_count: dict[str, float] = field(default_factory=dict)
    queue_depth: dict[str, float] = field(default_factory=dict)
    #: (model, replica index as text) -> resident bytes (0 while the slot has no process).
    worker_rss: Pairs = field(default_factory=dict)
    device_used: dict[str, float] = field(default_factory=dict)
    device_total: dict[str, float] = field(default_factory=dict)
    restarts: Pairs = field(default_factory=dict)
    recycles: Pairs = field(default_factory=dict)
    degradations: Pairs = field(default_factory=dict)
    errors: Pairs = field(default_factory=dict)
    quarantined: dict[str, float] = field(default_factory=dict)


#: sample name -> (attribute of MetricsSnapshot, the label paired with ``model``, or None).
_PAIRED = {
    "watchkeeper_worker_rss_bytes": ("worker_rss", "replica"),
    "watchkeeper_worker_restarts_total": ("restarts", "reason"),
    "watchkeeper_worker_recycles_total": ("recycles", "cause"),
    "watchkeeper_degradations_total": ("degradations", "cause"),
    "watchkeeper_request_errors_total": ("errors", "error"),
}
_BY_MODEL = {
    "watchkeeper_queue_depth": "queue_depth",
    "watchkeeper_quarantined_inputs": "quarantined",
    "watchkeeper_request_duration_seconds_count": "latency_count",
}
_BY_DEVICE = {
    "watchkeeper_device_memory_used_bytes": "device_used",
    "watchkeeper_device_memory_total_bytes": "device_total",
}


def parse_metrics(text: str) -> MetricsSnapshot:
    """The snapshot of one scrape. Raises ``ValueError`` on text that is not the format."""
    snap = MetricsSnapshot()
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("watchkeeper_"):
            continue
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            model = labels.get("model", "")
            if name == "watchkeeper_request_duration_seconds_bucket":
                bound = float(labels["le"])
                snap.latency_buckets.setdefault(model, []).append((bound, value))
            elif name in _PAIRED:
                attr, label = _PAIRED[name]
                getattr(snap, attr)[(model, labels.get(label, ""))] = value
            elif name in _BY_MODEL:
                getattr(snap, _BY_MODEL[name])[model] = value
            elif name in _BY_DEVICE:
                getattr(snap, _BY_DEVICE[name])[labels.get("device", "")] = value
    for buckets in snap.latency_buckets.values():
        buckets.sort()
    return snap


def increases(new: Pairs, old: Pairs) -> Pairs:
    """Counter increases from ``old`` to ``new`` (only the series that went up).

    A series absent from ``old`` counts from 0 (its first request made it); one that went
    down was reset (the server restarted), so all of its new value is the increase.
    """
    out: Pairs = {}
    for key, value in new.items():
        before = old.get(key, 0.0)
        grown = value - before if value >= before else value
        if grown > 0:
            out[key] = grown
    return out


def bucket_delta(new: list[tuple[float, float]],
                 old: list[tuple[float, float]] | None) -> list[tuple[float, float]]:
    """The histogram of the requests observed between two scrapes (cumulative counts).

    Without an older histogram, or with one whose bounds differ or that went down (a
    reset), the new one is the delta.
    """
    if not old or [b for b, _ in old] != [b for b, _ in new]:
        return list(new)
    delta = [(bound, count - before) for (bound, count), (_, before) in zip(new, old, strict=True)]
    if any(count < 0 for _, count in delta):
        return list(new)
    return delta


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of a cumulative histogram, in its unit; None when empty.

    As Prometheus' ``histogram_quantile``: linear interpolation inside the bucket that holds
    the rank, from the previous bound (0 for the first bucket); a rank in the ``+Inf``
    bucket gives the highest finite bound.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = (lower if math.isinf(bound) else bound), count
    return lower


def latency_quantiles(new: MetricsSnapshot, old: MetricsSnapshot | None,
                      qs: tuple[float, ...] = (0.5, 0.95)) -> dict[str, list[float]]:
    """Per model, the latency quantiles (seconds) of the requests answered since ``old``.

    Models without a request in between are left out, and every model without ``old`` (the
    first scrape: its histogram spans the server's whole life, not the last seconds).
    """
    out: dict[str, list[float]] = {}
    if old is None:
        return out
    for model, buckets in new.latency_buckets.items():
        before = old.latency_buckets.get(model)
        delta = bucket_delta(buckets, before)
        values = [quantile(q, delta) for q in qs]
        if all(v is not None for v in values):
            out[model] = [float(v) for v in values if v is not None]
    return out
