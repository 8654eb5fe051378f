"""Every Prometheus metric watchkeeper exports, declared here and nowhere else.

Runs in the front process. Workers never touch these objects: they report figures (RSS,
start-up phase durations, inference time) in their messages and the front records them.
The metrics live in a private :data:`REGISTRY`, not prometheus_client's global one, so
importing a library that registers its own metrics cannot change what ``/metrics`` shows;
:func:`render` is that endpoint's body.

Label values used across the project:

- ``status``: the HTTP status code as a string (``"200"``, ``"503"``).
- ``state`` of a model or replica: the names of the model and replica state enums.
- ``reason`` of a worker restart: one of :data:`RESTART_REASONS`.
- ``phase`` of start-up: one of :data:`STARTUP_PHASES`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

__all__ = [
    "INFERENCE_SECONDS",
    "JOBS",
    "JOBS_FINISHED_TOTAL",
    "JOBS_REQUEUED_TOTAL",
    "JOBS_SUBMITTED_TOTAL",
    "JOB_DURATION_SECONDS",
    "LATENCY_BUCKETS",
    "MODEL_STATE",
    "PROBE_LATENCY_SECONDS",
    "PROBE_SUCCESS",
    "QUARANTINED_INPUTS",
    "QUEUE_DEPTH",
    "QUEUE_WAIT_SECONDS",
    "REGISTRY",
    "REPLICAS",
    "REQUESTS_TOTAL",
    "REQUEST_DURATION_SECONDS",
    "RESTART_REASONS",
    "STARTUP_PHASES",
    "STARTUP_SECONDS",
    "WORKER_RESTARTS_TOTAL",
    "WORKER_RSS_BYTES",
    "render",
    "set_state",
]

REGISTRY = CollectorRegistry(auto_describe=True)
# The front's own CPU, memory and open files (process_*), read from /proc at scrape time.
ProcessCollector(registry=REGISTRY)

#: Seconds, from 1 ms to the longest inference timeout a model is expected to have (120 s).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0,
)  # fmt: skip

#: Why the supervisor replaced a worker (``reason`` label of WORKER_RESTARTS_TOTAL).
RESTART_REASONS: tuple[str, ...] = (
    "crash", "deadline", "heartbeat", "probe", "load_failed", "load_timeout", "operator", "oom",
    "cancel",
)  # fmt: skip

#: Start-up phases of a worker (``phase`` label of STARTUP_SECONDS).
STARTUP_PHASES: tuple[str, ...] = ("import", "setup", "fork", "warmup")

_P = "watchkeeper_"

REQUESTS_TOTAL = Counter(
    _P + "requests", "Requests answered, by model and HTTP status: error rate and traffic.",
    ("model", "status"), registry=REGISTRY,
)  # fmt: skip
REQUEST_DURATION_SECONDS = Histogram(
    _P + "request_duration_seconds", "Time from request received to response sent: what clients wait.",
    ("model",), buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
QUEUE_WAIT_SECONDS = Histogram(
    _P + "queue_wait_seconds", "Time a request waited for a worker: high means too few replicas.",
    ("model",), buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
INFERENCE_SECONDS = Histogram(
    _P + "inference_seconds", "Time the model spent in predict: rising at equal load means a leak.",
    ("model",), buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
QUEUE_DEPTH = Gauge(
    _P + "queue_depth", "Requests waiting for a worker now: near max_queue means 429s are next.",
    ("model",), registry=REGISTRY,
)  # fmt: skip
REPLICAS = Gauge(
    _P + "replicas", "Worker replicas per state: how many can serve and how many are restarting.",
    ("model", "state"), registry=REGISTRY,
)  # fmt: skip
WORKER_RESTARTS_TOTAL = Counter(
    _P + "worker_restarts", "Workers replaced, by reason: a rising rate is a crash loop or a hang.",
    ("model", "reason"), registry=REGISTRY,
)  # fmt: skip
PROBE_SUCCESS = Gauge(
    _P + "probe_success", "1 if the last canary inference gave the right answer, else 0.",
    ("model",), registry=REGISTRY,
)  # fmt: skip
PROBE_LATENCY_SECONDS = Gauge(
    _P + "probe_latency_seconds", "Duration of the last canary inference: the model's speed at rest.",
    ("model",), registry=REGISTRY,
)  # fmt: skip
MODEL_STATE = Gauge(
    _P + "model_state", "1 for the state a model is in now, 0 for the others.",
    ("model", "state"), registry=REGISTRY,
)  # fmt: skip
QUARANTINED_INPUTS = Gauge(
    _P + "quarantined_inputs", "Inputs refused because they killed workers: nonzero needs a look.",
    ("model",), registry=REGISTRY,
)  # fmt: skip
WORKER_RSS_BYTES = Gauge(
    _P + "worker_rss_bytes", "Resident memory of each worker: steady growth is a memory leak.",
    ("model", "replica"), registry=REGISTRY,
)  # fmt: skip
STARTUP_SECONDS = Gauge(
    _P + "startup_seconds", "Seconds the last worker start spent per phase: import, setup, warmup.",
    ("model", "phase"), registry=REGISTRY,
)  # fmt: skip

JOBS = Gauge(
    _P + "jobs", "Jobs in the store per state: a growing queued count means too few replicas.",
    ("state",), registry=REGISTRY,
)  # fmt: skip
JOBS_SUBMITTED_TOTAL = Counter(
    _P + "jobs_submitted", "Jobs accepted (202), by model; retried submits with a known key excluded.",
    ("model",), registry=REGISTRY,
)  # fmt: skip
JOBS_FINISHED_TOTAL = Counter(
    _P + "jobs_finished", "Jobs that reached a final state (succeeded, failed, cancelled), by model.",
    ("model", "state"), registry=REGISTRY,
)  # fmt: skip
JOBS_REQUEUED_TOTAL = Counter(
    _P + "jobs_requeued", "Job runs to be run again: the worker died or the server stopped under them.",
    ("model", "reason"), registry=REGISTRY,
)  # fmt: skip
JOB_DURATION_SECONDS = Histogram(
    _P + "job_duration_seconds", "Time from a job's submit to its final state, by model.",
    ("model",), buckets=LATENCY_BUCKETS + (300.0, 600.0, 1800.0, 3600.0), registry=REGISTRY,
)  # fmt: skip


def set_state(gauge: Gauge, model: str, current: str, states: Iterable[str]) -> None:
    """Set ``gauge{model, state}`` to 1 for ``current`` and 0 for every other of ``states``.

    For one-hot state gauges such as :data:`MODEL_STATE`; ``current`` need not be in ``states``.
    """
    for state in states:
        gauge.labels(model=model, state=state).set(1.0 if state == current else 0.0)
    gauge.labels(model=model, state=current).set(1.0)


def render() -> tuple[bytes, str]:
    """Return the body and the content type of the ``/metrics`` response."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
