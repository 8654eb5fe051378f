"""Typed messages between the front and its worker processes.

Frozen dataclasses without ``__slots__``: those pickle and unpickle in C, several times
faster than slotted ones (whose state goes through Python-level helpers).

Imported by both processes. Every message is a frozen dataclass; ``watchkeeper.protocol.wire`` frames
and pickles them over one socket per worker. The conversation of one worker::

    worker                                   front
      |-- Ready(schema, timings) ------------->|   or LoadFailed(stage, error), then exit 3/4
      |<-------------- RunBatch(id, items) ----|
      |-- Progress(id, fraction, message) ---->|   0..n while a one-item batch runs (jobs)
      |<-------------- Cancel(id) -------------|   stop that batch: its item ends "cancelled"
      |-- BatchDone(id, results, infer_ms) --->|   one ItemResult per item, in order
      |<-------------- RunProbe(id) -----------|
      |-- ProbeDone(id, ok, error, ms) ------->|
      |-- Heartbeat() ------------------------>|   every heartbeat_interval_s while idle
      |<-------------- Stop() -----------------|   finish, then exit 0

A model's template process (``watchkeeper.worker.template``) talks on its own socket::

    template                                 front
      |-- TemplateReady(fork_hazard, plans) -->|   or LoadFailed, then exit 3/4
      |<-------- ForkRequest(token, spec) + fd-|   fd: the new worker's end of its socket
      |-- Forked(token, pid) / ForkFailed ---->|   the child then speaks as a worker on fd
      |-- ChildExited(pid, returncode) ------->|   the template reaps its children
      |<-------- PlanRequest(token, params) ---|   a request's degradation ladder
      |-- Planned(token, rungs) -------------->|   (params, estimate_memory) per rung
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ExitCode",
    "WorkerSpec",
    "PERMANENT_EXITS",
    "PERMANENT_STAGES",
    "ModelSchema",
    "PROFILE_SETS_KEY",
    "not_together",
    "Item",
    "RunBatch",
    "RunProbe",
    "Cancel",
    "Stop",
    "ErrorInfo",
    "ItemResult",
    "Ready",
    "LoadFailed",
    "Heartbeat",
    "BatchDone",
    "Progress",
    "ProbeDone",
    "TemplateReady",
    "PlanRequest",
    "Planned",
    "ForkRequest",
    "Forked",
    "ForkFailed",
    "ChildExited",
    "FrontMessage",
    "WorkerMessage",
    "TemplateMessage",
]


class ExitCode(enum.IntEnum):
    """How a worker ends on purpose; any other code (or a signal) is a crash."""

    OK = 0
    LOAD_FAILED = 3  # setup() or the warm-up failed: counted against load_retries
    APP_NOT_FOUND = 4  # the app's import path cannot be imported: retrying cannot help
    BAD_SETUP = 5  # the model's options are invalid or a declared file is missing or wrong: ditto


#: Exits after which starting the worker again cannot help (the model is marked failed).
PERMANENT_EXITS = frozenset({ExitCode.APP_NOT_FOUND, ExitCode.BAD_SETUP})
#: Load stages whose failure retrying cannot help (see ``watchkeeper.worker.loading``).
PERMANENT_STAGES = frozenset({"import", "prepare"})


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to start; passed on its command line as JSON."""

    model: str
    app: str
    device: str
    replica: int
    heartbeat_interval_s: float
    threads: int = 1  # CPU threads for the model's maths libraries
    log_level: str = "info"
    memory_limit_mb: float | None = None  # address space allowed above the size after warm-up
    device_memory_gb: float | None = None  # overrides the device's, to choose a profile
    options: dict[str, Any] = field(default_factory=dict)  # the [models.NAME.options] table
    cache_dir: str = "~/.cache/watchkeeper"  # server.cache_dir, as the supervisor passes it
    report_shapes: bool = False  # send each batch's params shape (latency recycling is on)


@dataclass(frozen=True)
class ModelSchema:
    """JSON schemas of a model's inputs and params, as its worker reports them."""

    inputs: dict[str, Any]
    params: dict[str, Any]
    max_batch_size: int
    has_probe: bool
    profile: dict[str, Any] | None = None  # the parameter limits chosen for the device
    reports_progress: bool = False  # predict reports progress: long work, run it as a job


#: In ``ModelSchema.params`` when the device's profile class has several sets of limits (its
#: ``anyOf``, one branch per set): the sets in words, for the answer to values none allows.
PROFILE_SETS_KEY = "x-profile-combinations"


def not_together(values: dict[str, Any], sets_text: str) -> str:
    """The refusal of params each within bounds that no set of the profile allows together;
    the same words from the worker's check and the front's."""
    together = " with ".join(f"{name} = {value!r}" for name, value in values.items())
    return f"{together} is not allowed on this device ({sets_text})"


# --- front -> worker ---------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One request inside a batch: raw JSON-decoded inputs (files as bytes) and params."""

    request_id: str
    inputs: dict[str, Any]
    params: dict[str, Any]


@dataclass(frozen=True)
class RunBatch:
    batch_id: int
    items: tuple[Item, ...]
    measure: bool = False  # measure the batch's peak memory (costs ~0.1 ms)


@dataclass(frozen=True)
class RunProbe:
    probe_id: int


@dataclass(frozen=True)
class Cancel:
    """Stop batch ``batch_id``: the model's next progress report raises ``Cancelled``."""

    batch_id: int


@dataclass(frozen=True)
class Stop:
    """Finish the current batch (if any) and exit 0."""


# --- worker -> front ---------------------------------------------------------------


@dataclass(frozen=True)
class ErrorInfo:
    """An error a worker reports: ``type`` is a ``watchkeeper.errors`` type string."""

    type: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    suggestion: str | None = None


@dataclass(frozen=True)
class ItemResult:
    request_id: str
    outputs: dict[str, Any] | None = None
    error: ErrorInfo | None = None


@dataclass(frozen=True)
class Ready:
    pid: int
    device: str
    schema: ModelSchema
    timings_ms: dict[str, float]  # import, setup, warmup


@dataclass(frozen=True)
class LoadFailed:
    stage: str  # import | setup | warmup
    error: str
    traceback: str


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class BatchDone:
    batch_id: int
    results: tuple[ItemResult, ...]
    infer_ms: float
    peak_bytes: int | None = None  # memory the batch needed at its peak, when measurable
    device_bytes: int | None = None  # device memory the worker holds (CUDA reserved), when read
    shape: str = ""  # the batch's params shape (canonical JSON; distinct ones joined by " | ")


@dataclass(frozen=True)
class Progress:
    """How far a running batch has got (a model's ``progress`` callback); also a heartbeat."""

    batch_id: int
    fraction: float  # 0..1
    message: str


@dataclass(frozen=True)
class ProbeDone:
    probe_id: int
    ok: bool
    error: str | None
    latency_ms: float


# --- front <-> template (one SOCK_SEQPACKET socket; a ForkRequest carries the new worker's
# socket as SCM_RIGHTS) ------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateReady:
    """The template has imported (and, unless plan-only, set up) the model, never run it."""

    pid: int
    device: str
    timings_ms: dict[str, float]  # import, setup
    native_threads: int
    fork_hazard: str | None = None  # why it cannot fork (None: it can)
    plans: bool = False  # the model has estimate_memory or degrade


@dataclass(frozen=True)
class PlanRequest:
    token: int
    params: dict[str, Any]


@dataclass(frozen=True)
class Planned:
    """A request's ladder: validated params, then each ``degrade`` step, with estimates."""

    token: int
    rungs: tuple[tuple[dict[str, Any], int | None], ...] = ()
    error: ErrorInfo | None = None


@dataclass(frozen=True)
class ForkRequest:
    token: int
    spec: WorkerSpec


@dataclass(frozen=True)
class Forked:
    token: int
    pid: int
    fork_ms: float


@dataclass(frozen=True)
class ForkFailed:
    token: int
    error: str


@dataclass(frozen=True)
class ChildExited:
    """A forked worker ended; ``returncode`` as subprocess reports it (-N for signal N)."""

    pid: int
    returncode: int


FrontMessage = RunBatch | RunProbe | Cancel | Stop
WorkerMessage = Ready | LoadFailed | Heartbeat | BatchDone | Progress | ProbeDone
TemplateMessage = TemplateReady | LoadFailed | Forked | ForkFailed | ChildExited | Planned
