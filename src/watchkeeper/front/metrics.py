"""Every Prometheus metric watchkeeper exports, declared here and nowhere else.

Runs in the front process. Workers never touch these objects: they report figures (RSS,
start-up phase durations, inference time) in their messages and the front records them.
The metrics live in a private :data:`REGISTRY`, not prometheus_client's global one, so
importing a library that registers its own metrics cannot change what ``/metrics`` shows;
:func:`render` is that endpoint's body.

Other modules record through the functions below, never through ``.labels()`` (a test
checks): each label whose values are a closed set is checked against the tuple that lists
them, so a new value is declared here first.

- ``status``: the HTTP status code, one of :data:`HTTP_STATUSES` (the ``http`` package
  chooses it; a test checks its table against this list).
- ``state`` of a model, a replica or a job: :data:`MODEL_STATES`, :data:`REPLICA_STATES`,
  :data:`JOB_STATES` (tests check them against the enums).
- ``reason`` of a worker restart: :data:`RESTART_REASONS`; of a template restart:
  :data:`TEMPLATE_RESTART_REASONS`; of a web UI restart: :data:`UI_RESTART_REASONS`; of a job
  requeue: :data:`REQUEUE_REASONS`.
- ``phase`` of start-up: :data:`STARTUP_PHASES`.
- ``reason`` a connection was closed by the front: :data:`CONNECTION_CLOSE_REASONS`; ``cap``
  that refused an event stream: :data:`STREAM_CAPS`.
- ``fault`` of the job store: :data:`STORE_FAULTS` (a test checks it against the enum).
- ``model`` and ``replica``: the configured names and replica indexes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
    "CONNECTIONS_CLOSED_TOTAL", "CONNECTIONS_OPEN", "CONNECTION_CLOSE_REASONS", "DEGRADATIONS_TOTAL",
    "DEGRADE_CAUSES", "DEVICE_MEMORY_TOTAL_BYTES", "DEVICE_MEMORY_USED_BYTES", "DISK_FREE_BYTES",
    "DISK_SIZE_BYTES", "ERROR_TYPES", "EVENT_STREAMS", "EVENT_STREAMS_REFUSED_TOTAL", "HTTP_STATUSES",
    "INFERENCE_SECONDS", "JOBS", "JOBS_FINISHED_TOTAL", "JOBS_OLDEST_QUEUED_SECONDS",
    "JOBS_REQUEUED_TOTAL", "JOBS_SUBMITTED_TOTAL", "JOB_DURATION_SECONDS", "JOB_STATES",
    "JOB_STORE_BYTES", "JOB_STORE_FAILURES_TOTAL", "JOB_STORE_WRITABLE", "LATENCY_BUCKETS",
    "LATENCY_TARGET_FRACTION", "LATENCY_TARGET_SECONDS", "MEMORY_BUDGET_BYTES", "MEMORY_BUDGET_FRACTION",
    "MEMORY_RESERVED_BYTES", "MODEL_STATE", "MODEL_STATES", "ModelRequests", "PROBE_LATENCY_SECONDS",
    "PROBE_SUCCESS", "QUARANTINED_INPUTS", "QUEUE_DEPTH", "QUEUE_EXPECTED_WAIT_SECONDS", "QUEUE_LIMIT",
    "QUEUE_WAIT_SECONDS", "RECYCLE_CAUSES", "REGISTRY", "REPLICAS", "REPLICA_STATES", "REQUESTS_TOTAL",
    "REQUEST_DURATION_SECONDS", "REQUEST_ERRORS_TOTAL", "REQUEUE_REASONS", "RESTART_REASONS",
    "STARTUP_PHASES", "STARTUP_SECONDS", "STORE_FAULTS", "STREAM_CAPS", "TEMPLATE_RESTARTS_TOTAL",
    "TEMPLATE_RESTART_REASONS", "UI_RESTARTS_TOTAL", "UI_RESTART_REASONS", "WORKER_RECYCLES_TOTAL",
    "WORKER_RESTARTS_TOTAL", "WORKER_RSS_BYTES", "count_connection_closed", "count_job_finished",
    "count_job_requeued", "count_job_store_failure", "count_job_submitted", "count_recycle",
    "count_restart", "count_stream_refused", "count_template_restart", "count_ui_restart", "render",
    "requests_of", "set_connections", "set_event_streams", "set_job_store", "set_jobs", "set_model",
    "set_model_limits", "set_probe", "set_resources", "set_startup", "set_state", "set_worker_rss",
]

REGISTRY = CollectorRegistry(auto_describe=True)
# The front's own CPU, memory and open files (process_*), read from /proc at scrape time.
ProcessCollector(registry=REGISTRY)

#: Seconds, from 1 ms to the longest inference timeout a model is expected to have (120 s).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0,
)  # fmt: skip

#: Why the supervisor replaced a worker (``reason`` label of WORKER_RESTARTS_TOTAL): a
#: crash, a load failure, or a kill (``supervision.kill_reasons.KillReason``) it restarts after.
RESTART_REASONS: tuple[str, ...] = ("crash", "load_failed", "deadline", "heartbeat", "probe",
                                    "load_timeout", "operator", "oom", "cancel", "bad_frame", "template")
#: Why a model's template process was replaced (``reason`` label of TEMPLATE_RESTARTS_TOTAL):
#: it went silent (``frozen``: no heartbeat, no answer to a plan or a fork in time), sent a
#: frame the front cannot read (``bad_frame``), or exited by itself (``exit``).
TEMPLATE_RESTART_REASONS: tuple[str, ...] = ("frozen", "bad_frame", "exit")
#: Start-up phases of a worker (``phase`` label of STARTUP_SECONDS).
STARTUP_PHASES: tuple[str, ...] = ("import", "prepare", "setup", "fork", "warmup")
#: HTTP statuses a predict request is answered with (``status`` label of REQUESTS_TOTAL).
HTTP_STATUSES: tuple[str, ...] = ("200", "400", "401", "403", "404", "405", "409", "413", "422", "429",
                                  "500", "502", "503", "504")
#: States of a model, a replica and a job (``state`` labels).
MODEL_STATES: tuple[str, ...] = ("starting", "ready", "degraded", "recovering", "unready", "failed",
                                 "stopping")
REPLICA_STATES: tuple[str, ...] = ("starting", "ready", "busy", "stopping", "dead")
JOB_STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
#: Why a job's run is to be run again (``reason`` label of JOBS_REQUEUED_TOTAL).
REQUEUE_REASONS: tuple[str, ...] = ("server_stopped", "worker_died")
#: Why the job store takes no writes (``fault`` label of JOB_STORE_FAILURES_TOTAL).
STORE_FAULTS: tuple[str, ...] = ("gone", "replaced", "busy", "full", "read_only", "io_error")

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
TEMPLATE_RESTARTS_TOTAL = Counter(
    _P + "template_restarts", "Template processes replaced, by reason: frozen means it stopped answering.",
    ("model", "reason"), registry=REGISTRY,
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
JOB_STORE_WRITABLE = Gauge(
    _P + "job_store_writable", "1 while the job store takes writes; 0 while it fails (submits get 503).",
    registry=REGISTRY,
)  # fmt: skip
JOB_STORE_FAILURES_TOTAL = Counter(
    _P + "job_store_failures", "Times the job store began to fail, by fault (gone, busy, full, ...).",
    ("fault",), registry=REGISTRY,
)  # fmt: skip
JOB_STORE_BYTES = Gauge(
    _P + "job_store_bytes", "Size of the job store's database and write-ahead log, in bytes.",
    registry=REGISTRY,
)  # fmt: skip
JOBS_OLDEST_QUEUED_SECONDS = Gauge(
    _P + "jobs_oldest_queued_seconds", "Age of the oldest queued job (0: none): growing means none start.",
    registry=REGISTRY,
)  # fmt: skip
JOB_DURATION_SECONDS = Histogram(
    _P + "job_duration_seconds", "Time from a job's submit to its final state, by model.",
    ("model",), buckets=LATENCY_BUCKETS + (300.0, 600.0, 1800.0, 3600.0), registry=REGISTRY,
)  # fmt: skip


def _checked(value: str, allowed: tuple[str, ...], label: str) -> str:
    """``value`` if this module declares it for ``label``; a ValueError (a bug) if not."""
    if value not in allowed:
        raise ValueError(f"undeclared {label} label value {value!r} (declared: {allowed})")
    return value


class ModelRequests:
    """One model's request metrics, their label lookups done once (the predict hot path)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._answered: dict[int, Any] = {}
        self._request_seconds = REQUEST_DURATION_SECONDS.labels(model)
        self._inference_seconds = INFERENCE_SECONDS.labels(model)
        self._queue_wait_seconds = QUEUE_WAIT_SECONDS.labels(model)

    def answered(self, status: int, seconds: float, error: str | None = None) -> None:
        """A request was answered with ``status`` after ``seconds`` (``error``: its type)."""
        counter = self._answered.get(status)
        if counter is None:
            counter = REQUESTS_TOTAL.labels(self.model, _checked(str(status), HTTP_STATUSES, "status"))
            self._answered[status] = counter
        counter.inc()
        self._request_seconds.observe(seconds)
        if error is not None:
            REQUEST_ERRORS_TOTAL.labels(self.model, _checked(error, ERROR_TYPES, "error")).inc()

    def ran(self, queue_s: float, inference_s: float, degraded: dict[str, Any] | None = None) -> None:
        """A request waited ``queue_s`` for a worker, then ran for ``inference_s`` (on a
        lower rung when ``degraded``: its ``reason`` says ``memory: ...`` or an out-of-memory)."""
        self._queue_wait_seconds.observe(queue_s)
        self._inference_seconds.observe(inference_s)
        if degraded is not None:
            cause = "memory" if str(degraded.get("reason", "")).startswith("memory") else "out_of_memory"
            DEGRADATIONS_TOTAL.labels(self.model, cause).inc()


_REQUESTS: dict[str, ModelRequests] = {}


def requests_of(model: str) -> ModelRequests:
    """The request metrics of ``model`` (made on first use, then shared)."""
    found = _REQUESTS.get(model)
    if found is None:
        found = _REQUESTS[model] = ModelRequests(model)
    return found


def count_restart(model: str, reason: str) -> None:
    WORKER_RESTARTS_TOTAL.labels(model, _checked(reason, RESTART_REASONS, "reason")).inc()


def count_template_restart(model: str, reason: str) -> None:
    TEMPLATE_RESTARTS_TOTAL.labels(model, _checked(reason, TEMPLATE_RESTART_REASONS, "reason")).inc()


def set_startup(model: str, timings_ms: dict[str, float]) -> None:
    """The duration of each start-up phase of the last worker (or template) that loaded."""
    for phase, ms in timings_ms.items():
        STARTUP_SECONDS.labels(model, _checked(phase, STARTUP_PHASES, "phase")).set(ms / 1000)


def set_worker_rss(model: str, replica: int, rss_bytes: int | None) -> None:
    WORKER_RSS_BYTES.labels(model, str(replica)).set(rss_bytes or 0)


def set_probe(model: str, ok: bool, latency_s: float | None = None) -> None:
    PROBE_SUCCESS.labels(model).set(1 if ok else 0)
    if latency_s is not None:
        PROBE_LATENCY_SECONDS.labels(model).set(latency_s)


def set_model(model: str, state: str, replica_states: list[str], queue_depth: int,
              quarantined: int) -> None:
    """A model's gauges, read at scrape time: its state (one-hot), replicas per state, its
    queue and its quarantined inputs."""
    set_state(MODEL_STATE, model, _checked(state, MODEL_STATES, "state"), MODEL_STATES)
    for replica_state in REPLICA_STATES:
        REPLICAS.labels(model, replica_state).set(replica_states.count(replica_state))
    QUEUE_DEPTH.labels(model).set(queue_depth)
    QUARANTINED_INPUTS.labels(model).set(quarantined)


def count_job_submitted(model: str) -> None:
    JOBS_SUBMITTED_TOTAL.labels(model).inc()


def count_job_finished(model: str, state: str, seconds: float) -> None:
    JOBS_FINISHED_TOTAL.labels(model, _checked(state, JOB_STATES, "state")).inc()
    JOB_DURATION_SECONDS.labels(model).observe(max(0.0, seconds))


def count_job_requeued(model: str, reason: str) -> None:
    JOBS_REQUEUED_TOTAL.labels(model, _checked(reason, REQUEUE_REASONS, "reason")).inc()


def set_jobs(counts: dict[str, int]) -> None:
    """Jobs per state in the store."""
    for state, count in counts.items():
        JOBS.labels(_checked(state, JOB_STATES, "state")).set(count)


def set_job_store(writable: bool, db_bytes: int, oldest_queued_s: float | None) -> None:
    """The job store's gauges: writable or not, its size, its oldest queued job's age."""
    JOB_STORE_WRITABLE.set(1 if writable else 0)
    JOB_STORE_BYTES.set(db_bytes)
    JOBS_OLDEST_QUEUED_SECONDS.set(oldest_queued_s or 0.0)


def count_job_store_failure(fault: str) -> None:
    JOB_STORE_FAILURES_TOTAL.labels(_checked(fault, STORE_FAULTS, "fault")).inc()


def set_state(gauge: Gauge, model: str, current: str, states: Iterable[str]) -> None:
    """Set ``gauge{model, state}`` to 1 for ``current`` and 0 for every other of ``states``.

    For one-hot state gauges such as :data:`MODEL_STATE`; ``current`` need not be in ``states``.
    """
    for state in states:
        gauge.labels(model=model, state=state).set(1.0 if state == current else 0.0)
    gauge.labels(model=model, state=current).set(1.0)


#: Why the front closed a client connection itself (``reason`` label of
#: CONNECTIONS_CLOSED_TOTAL; ``http.connections`` decides): a request head or body that did
#: not arrive in time, a head over the limit, a request the HTTP parser refused, a connection
#: that sent nothing within the header timeout, an idle connection closed to make room past
#: ``server.max_connections``, or one served over capacity (probes only, then closed).
CONNECTION_CLOSE_REASONS: tuple[str, ...] = ("header_timeout", "body_timeout", "head_too_large",
                                             "bad_request", "silent", "evicted", "over_capacity")
#: Which cap refused an event stream (``cap`` label of EVENT_STREAMS_REFUSED_TOTAL).
STREAM_CAPS: tuple[str, ...] = ("per_job", "total")

CONNECTIONS_OPEN = Gauge(
    _P + "connections_open", "Client connections open now (limit: server.max_connections).",
    registry=REGISTRY,
)  # fmt: skip
CONNECTIONS_CLOSED_TOTAL = Counter(
    _P + "connections_closed", "Client connections the front closed itself, by reason: slow or "
    "silent clients, oversized or malformed requests, and the connection cap at work.",
    ("reason",), registry=REGISTRY,
)  # fmt: skip
EVENT_STREAMS = Gauge(
    _P + "event_streams", "Job event streams open now (limit: jobs.max_streams).", registry=REGISTRY,
)  # fmt: skip
EVENT_STREAMS_REFUSED_TOTAL = Counter(
    _P + "event_streams_refused", "Job event streams refused with 503 by a cap "
    "(per_job: jobs.max_streams_per_job; total: jobs.max_streams).", ("cap",), registry=REGISTRY,
)  # fmt: skip


def count_connection_closed(reason: str) -> None:
    CONNECTIONS_CLOSED_TOTAL.labels(_checked(reason, CONNECTION_CLOSE_REASONS, "reason")).inc()


def set_connections(open_now: int) -> None:
    CONNECTIONS_OPEN.set(open_now)


def count_stream_refused(cap: str) -> None:
    EVENT_STREAMS_REFUSED_TOTAL.labels(_checked(cap, STREAM_CAPS, "cap")).inc()


def set_event_streams(open_now: int) -> None:
    EVENT_STREAMS.set(open_now)


#: Error types a request can be answered with (``error`` label of REQUEST_ERRORS_TOTAL; a
#: test checks it against ``watchkeeper.errors``). Why a request ran degraded (``cause`` of
#: DEGRADATIONS_TOTAL): admission chose a lower rung (``memory``), or it ran out of memory.
ERROR_TYPES: tuple[str, ...] = (
    "internal_error", "bad_input", "invalid_input", "payload_too_large", "unauthenticated",
    "forbidden", "not_found", "conflict", "cancelled", "input_quarantined", "overloaded",
    "unavailable", "out_of_memory", "deadline_exceeded", "worker_crashed", "model_error",
)  # fmt: skip
DEGRADE_CAUSES: tuple[str, ...] = ("memory", "out_of_memory")
#: A model's latency target is this share of its ``timeout_s``: past it, a slowdown of the
#: same size again makes requests time out (504). The alert compares the p95 with it.
LATENCY_TARGET_FRACTION = 0.5

REQUEST_ERRORS_TOTAL = Counter(_P + "request_errors", "Requests answered with an error, by model and "
                               "error type (a refusal's reason).", ("model", "error"), registry=REGISTRY)
DEGRADATIONS_TOTAL = Counter(_P + "degradations", "Requests answered with smaller params than asked, "
                             "by model and cause.", ("model", "cause"), registry=REGISTRY)
LATENCY_TARGET_SECONDS = Gauge(_P + "latency_target_seconds", "The p95 latency a model should stay "
                               "under: half its timeout_s.", ("model",), registry=REGISTRY)
QUEUE_LIMIT = Gauge(_P + "queue_limit", "A model's max_queue: a request past it gets 429.", ("model",),
                    registry=REGISTRY)
QUEUE_EXPECTED_WAIT_SECONDS = Gauge(_P + "queue_expected_wait_seconds", "How long a request queued "
                                    "now would likely wait (for shedding).", ("model",), registry=REGISTRY)
MEMORY_BUDGET_BYTES = Gauge(_P + "memory_budget_bytes", "Memory requests may hold at once on a budget "
                            "(a device, or a model's own).", ("budget",), registry=REGISTRY)
MEMORY_RESERVED_BYTES = Gauge(_P + "memory_reserved_bytes", "Memory reserved now by the batches running "
                              "on a budget.", ("budget",), registry=REGISTRY)
MEMORY_BUDGET_FRACTION = Gauge(_P + "memory_budget_fraction", "server.memory_budget_fraction: a device's "
                               "memory share to use.", registry=REGISTRY)
DEVICE_MEMORY_USED_BYTES = Gauge(_P + "device_memory_used_bytes", "Memory in use on a device (cpu: "
                                 "RAM not available; cuda:N: NVML).", ("device",), registry=REGISTRY)
DEVICE_MEMORY_TOTAL_BYTES = Gauge(_P + "device_memory_total_bytes", "Memory of a device.", ("device",),
                                  registry=REGISTRY)
DISK_FREE_BYTES = Gauge(_P + "disk_free_bytes", "Free bytes on the disk of the data dir, of the cache.",
                        ("path",), registry=REGISTRY)
DISK_SIZE_BYTES = Gauge(_P + "disk_size_bytes", "Size of the disk of the data dir, of the model cache.",
                        ("path",), registry=REGISTRY)


def set_model_limits(model: str, timeout_s: float, max_queue: int, expected_wait_s: float,
                     budgets: list[dict[str, Any]], budget_fraction: float | None) -> None:
    """A model's figures read at scrape time: its latency target, queue limit, expected wait
    and its memory budgets (``Ledger.to_dict()``: device, budget_bytes, reserved_bytes)."""
    LATENCY_TARGET_SECONDS.labels(model).set(timeout_s * LATENCY_TARGET_FRACTION)
    QUEUE_LIMIT.labels(model).set(max_queue)
    QUEUE_EXPECTED_WAIT_SECONDS.labels(model).set(expected_wait_s)
    for budget in budgets:
        MEMORY_BUDGET_BYTES.labels(budget["device"]).set(budget["budget_bytes"])
        MEMORY_RESERVED_BYTES.labels(budget["device"]).set(budget["reserved_bytes"])
    if budget_fraction is not None:
        MEMORY_BUDGET_FRACTION.set(budget_fraction)


def set_resources(devices: list[tuple[str, int, int]], disks: list[tuple[str, int, int]]) -> None:
    """The resource monitor's latest reading: (device, used, total) and (path, free, size) bytes."""
    for device, used, total in devices:
        DEVICE_MEMORY_USED_BYTES.labels(device).set(used)
        DEVICE_MEMORY_TOTAL_BYTES.labels(device).set(total)
    for path, free, size in disks:
        DISK_FREE_BYTES.labels(path).set(free)
        DISK_SIZE_BYTES.labels(path).set(size)


def render() -> tuple[bytes, str]:
    """Return the body and the content type of the ``/metrics`` response."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


#: Why the supervisor replaced a live worker (``cause`` label of WORKER_RECYCLES_TOTAL):
#: ``supervision.recycling.RecycleCause``.
RECYCLE_CAUSES: tuple[str, ...] = ("max_requests", "rss_growth", "device_memory_growth", "latency")
WORKER_RECYCLES_TOTAL = Counter(
    _P + "worker_recycles", "Live workers replaced (a fresh one started first), by cause: max_requests, "
    "rss_growth, device_memory_growth (leaks), latency (drift).", ("model", "cause"), registry=REGISTRY,
)  # fmt: skip


def count_recycle(model: str, cause: str) -> None:
    WORKER_RECYCLES_TOTAL.labels(model, _checked(cause, RECYCLE_CAUSES, "cause")).inc()


#: Why the front started the web UI again (``reason`` of UI_RESTARTS_TOTAL; ``supervision.ui_keeper``).
UI_RESTART_REASONS: tuple[str, ...] = ("exit", "unresponsive", "start_timeout", "port_taken")
UI_RESTARTS_TOTAL = Counter(_P + "ui_restarts", "Web UI process restarts, by reason: it exited, hung, "
                            "never answered, or its port was taken.", ("reason",), registry=REGISTRY)


def count_ui_restart(reason: str) -> None:
    UI_RESTARTS_TOTAL.labels(_checked(reason, UI_RESTART_REASONS, "reason")).inc()
