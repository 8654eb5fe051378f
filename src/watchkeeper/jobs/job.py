"""What a job is, and the store interface every job store implements.

Imported by the front process only (workers never see jobs: a job reaches a worker as an
ordinary one-item batch). A :class:`Job` is an immutable snapshot of one row of the store;
the store is the only place a job's state changes, always through one of the methods of
:class:`JobStore`, each of which is one transaction and appends the events it causes.

States and the only transitions the store allows::

    queued ──start──> running ──finish──> succeeded | failed | cancelled
      │  ^               │
      │  └──requeue──────┘   (the worker or the server died; attempts < max_attempts)
      └──cancel──> cancelled

Stores are synchronous and used from one thread at a time (the front runs every call in
one dedicated thread so the event loop never waits on a disk); ``SqliteJobStore`` is the
single-instance store, a Redis store will implement the same protocol for several.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import orjson

from watchkeeper.errors import Overloaded
from watchkeeper.jobs.inputs_codec import encode_inputs

__all__ = ["ANONYMOUS_OWNER", "TERMINAL_STATES", "Job", "JobEvent", "JobState", "JobStore", "NewJob",
           "OwnerLimits", "OwnerUsage"]

#: The owner of every job when the server runs without API keys (and of jobs stored before
#: jobs had owners).
ANONYMOUS_OWNER = "anonymous"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class OwnerLimits:
    """What one owner may hold: jobs queued or running at once, and bytes of stored results
    (a submit beyond either is refused; the replay of an existing job never is)."""

    max_active_jobs: int
    max_result_bytes: int


@dataclass(frozen=True)
class OwnerUsage:
    """What one owner holds now: jobs queued or running, and bytes of stored results."""

    active_jobs: int = 0
    result_bytes: int = 0


@dataclass(frozen=True)
class NewJob:
    """What a submit stores: the request, plus what makes a retried submit the same job."""

    id: str
    model: str
    inputs: dict[str, Any]  # JSON-decoded inputs; uploaded files as bytes
    params: dict[str, Any]
    allow_degrade: bool
    max_attempts: int
    request_id: str
    idempotency_key: str | None = None
    created_at: float = 0.0  # time.time(); the store fills it in when 0
    owner: str = ANONYMOUS_OWNER  # the API key's name; Idempotency-Keys are per owner
    limits: OwnerLimits | None = None  # checked in the create's transaction; None: no quota

    @cached_property
    def stored_inputs(self) -> bytes:
        """The inputs as the store keeps them (encoded once: the hash and the store share it)."""
        return encode_inputs(self.inputs)

    @cached_property
    def request_hash(self) -> str:
        """Of model, params, allow_degrade and inputs: what makes two submits the same request
        (an Idempotency-Key reused with another body is refused)."""
        digest = hashlib.sha256()
        digest.update(self.model.encode())
        digest.update(orjson.dumps(self.params, option=orjson.OPT_SORT_KEYS))
        digest.update(b"1" if self.allow_degrade else b"0")
        digest.update(self.stored_inputs)
        return digest.hexdigest()


@dataclass(frozen=True)
class Job:
    """One job as the store holds it (inputs are read separately: they may be large)."""

    id: str
    model: str
    state: JobState
    params: dict[str, Any]
    allow_degrade: bool
    created_at: float
    updated_at: float
    attempts: int
    max_attempts: int
    request_id: str
    request_hash: str
    idempotency_key: str | None = None
    owner: str = ANONYMOUS_OWNER
    started_at: float | None = None
    finished_at: float | None = None
    progress: float = 0.0  # 0..1
    message: str = ""
    cancel_requested: bool = False
    error: dict[str, Any] | None = None  # {"type", "message", "suggestion"}
    degraded: dict[str, Any] | None = None  # as in a degraded predict answer
    result: dict[str, Any] | None = None  # watchkeeper.jobs.results.ResultMeta.to_dict()

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class JobEvent:
    """One change of a job, in order: ``seq`` counts from 1 per job (the SSE event id)."""

    job_id: str
    seq: int
    type: str  # "state" or "progress"
    at: float  # time.time()
    data: dict[str, Any] = field(default_factory=dict)


class JobStore(Protocol):
    """Durable jobs. Every method is one transaction; every change appends its events.

    Event data: a ``state`` event carries ``state``, ``attempts`` and, when set, ``error``,
    ``degraded`` and ``reason``; a ``progress`` event carries ``progress`` and ``message``.
    """

    def create(self, job: NewJob) -> tuple[Job, bool]:
        """Store a queued job; with an ``idempotency_key`` its owner already used for this
        model, return that job instead. The bool is True when a new job was created.
        Raises :class:`~watchkeeper.errors.Overloaded` when a new job would put its owner
        over ``job.limits``."""

    def create_many(self, jobs: Sequence[NewJob]) -> list[tuple[Job, bool] | Overloaded]:
        """``create`` for each of ``jobs``, in one transaction (one disk sync for a burst);
        a job refused by its owner's quota is its ``Overloaded`` error, the others are kept."""

    def get(self, job_id: str) -> Job | None: ...

    def find_by_key(self, model: str, key: str, *, owner: str) -> Job | None:
        """The job an Idempotency-Key of ``owner`` made for ``model``, if any."""

    def inputs(self, job_id: str) -> dict[str, Any]:
        """The job's inputs, exactly as submitted (bytes stay bytes)."""

    def list_jobs(self, *, state: JobState | None = None, model: str | None = None,
                  owner: str | None = None, limit: int = 100) -> list[Job]:
        """Newest first; ``owner`` None: every owner's."""

    def usage(self, owner: str) -> OwnerUsage:
        """What ``owner`` holds now (an indexed count, not a scan of the result files)."""

    def queued_models(self) -> dict[str, int]:
        """How many jobs are queued, by model."""

    def queued(self, model: str, limit: int) -> list[Job]:
        """The model's queued jobs, oldest first."""

    def start(self, job_id: str) -> Job | None:
        """queued -> running, attempts + 1; None when the job is not queued (e.g. cancelled).
        The runner calls it before it sends the run to a worker: an attempt is counted
        before it can run, or the run is not sent."""

    def progress(self, job_id: str, fraction: float, message: str) -> JobEvent | None:
        """Record progress of a running job; None when it is not running."""

    def finish(self, job_id: str, state: JobState, *, error: dict[str, Any] | None = None,
               result: dict[str, Any] | None = None, degraded: dict[str, Any] | None = None,
               refund_attempt: bool = False) -> Job:
        """running or queued -> a terminal state (progress 1.0 on success); ``refund_attempt``
        takes back the attempt of a run refused before it was sent."""

    def requeue(self, job_id: str, *, reason: str, refund_attempt: bool = False) -> Job:
        """running -> queued (its worker died, or the server stopped before it finished);
        ``refund_attempt`` takes back the attempt (a graceful shutdown is not the job's fault)."""

    def cancel(self, job_id: str) -> Job | None:
        """queued -> cancelled now; running -> cancel_requested (the runner stops it);
        terminal: unchanged. None when there is no such job."""

    def recover(self, adopt: Any = None) -> list[Job]:
        """At start-up: every running job (its server died) -> succeeded when ``adopt(job)``
        returns its complete result (result, degraded) found on disk, else queued, or failed
        when it has used all its attempts. Returns the jobs changed."""

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        """The job's events with ``seq > after``, in order."""

    def finished_before(self, when: float, limit: int = 1000) -> list[str]:
        """Ids of terminal jobs that finished before ``when`` (time.time())."""

    def delete(self, job_id: str) -> None:
        """Remove the job and its events (its result files are the caller's)."""

    def counts(self) -> dict[str, int]:
        """Jobs by state (every state present, 0 when none)."""

    def stats(self) -> tuple[int, float | None]:
        """Bytes the store takes on disk; ``created_at`` of the oldest queued job."""

    def probe(self, *, write: bool, lock_timeout_s: float) -> None:
        """Raise what a write would raise now (the store is gone, locked, full), changing
        no job; ``write``: make a real, synced commit."""

    def close(self) -> None: ...
