"""The scheduler's record of one request, from the moment it is accepted until its future
is resolved; what a request's answer carries; who listens to a job's runs.

Runs in the front process, on its event loop; plain data with no I/O. A ``Pending`` holds:

- who and what: model, request id, inputs and params, kind (a request or a probe), its
  future, its deadline (and whether it is the model's own ``timeout_s`` or a client's
  shorter one) and, for a job, its listener and ``max_runs``;
- its place and time: when it was queued and sent, the worker that ran it last, whether
  it must run alone;
- its memory plan (:class:`MemoryPlan`): the ladder of params admission may choose from,
  the rung chosen, the bytes reserved, and what an out-of-memory taught;
- its runs and deaths: how often it was sent, how many worker deaths count against it,
  whether it was cancelled.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from watchkeeper.errors import WatchkeeperError
from watchkeeper.scheduling.memory_ledger import Rung, shape_key
from watchkeeper.scheduling.quarantine import fingerprint

__all__ = ["Kind", "MemoryPlan", "Outcome", "Pending", "RunListener", "WORK_KINDS"]

#: What a worker runs, for its service-time estimates (``Pending.work``).
WORK_KINDS = ("request", "job", "probe")


class Kind(enum.Enum):
    REQUEST = "request"
    PROBE = "probe"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request's answer, with where its time went."""

    outputs: dict[str, Any]
    queue_ms: float
    infer_ms: float
    worker_pid: int | None
    runs: int
    degraded: dict[str, Any] | None = None


class RunListener(Protocol):
    """Told about one request's runs (a job's runner listens to its job's request)."""

    def started(self, pending: Pending) -> None:
        """The request was sent to a worker (once per run)."""

    def progress(self, fraction: float, message: str) -> None:
        """The running model reported progress."""


@dataclass(eq=False)
class MemoryPlan:
    """Which params a request may run with, and what admission by memory decided for it."""

    ladder: list[Rung] = field(default_factory=list)  # its params, then each degrade step
    allow_degrade: bool = True
    rung: int = 0  # the largest rung it may still run at (raised after an out-of-memory)
    chosen: int = 0  # the rung it was last admitted at
    need: int = 0  # bytes reserved for it while it runs
    degrade_reason: str | None = None
    batch_cap: int = 0  # after a batch ran out of memory: the most it may share a batch with
    oom_retries: int = 0

    @property
    def run_params(self) -> dict[str, Any]:
        return self.ladder[self.chosen].params

    @property
    def end(self) -> int:
        """One past the last rung it may run at (only its current rung without degrading)."""
        return len(self.ladder) if self.allow_degrade else self.rung + 1

    def degraded(self) -> dict[str, Any] | None:
        """The ``degraded`` part of a response, when it ran on a lower rung."""
        if self.chosen == 0:
            return None
        return {"from": self.ladder[0].params, "to": self.ladder[self.chosen].params,
                "reason": self.degrade_reason or "out of memory at the larger params"}


@dataclass(eq=False)
class Pending:
    """A request from the moment it is accepted until its future is resolved."""

    model: str
    request_id: str
    inputs: dict[str, Any]
    params: dict[str, Any]
    deadline: float  # time.monotonic() by which the client must have an answer
    future: asyncio.Future[Any]
    model_deadline: bool = True  # the deadline is the model's timeout_s, not a client's shorter one
    kind: Kind = Kind.REQUEST
    listener: RunListener | None = None  # a job's runner
    memory: MemoryPlan = field(default_factory=MemoryPlan)  # (no ladder: its params alone)
    # place and time
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    replica_pid: int | None = None  # the worker that ran it last
    solo: bool = False  # must run alone (a probe, a job, or a retry after a batch died)
    # runs and deaths
    runs: int = 0  # times sent to a worker
    deaths: int = 0  # worker deaths counted against this input
    max_runs: int | None = None  # a job: runs allowed before a worker death fails it
    cancelled: bool = False
    _fp: str | None = None

    def __post_init__(self) -> None:
        if not self.memory.ladder:
            self.memory.ladder = [Rung(self.params)]

    @property
    def open(self) -> bool:
        return not self.future.done()

    @property
    def work(self) -> str:
        """``request``, ``job`` or ``probe``: what its run time may be compared with."""
        if self.kind is Kind.PROBE:
            return "probe"
        return "job" if self.listener is not None or self.max_runs is not None else "request"

    @property
    def shape(self) -> str:
        """Its params as the key of the run time of requests like it (canonical JSON)."""
        return shape_key(self.memory.run_params)

    @property
    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = fingerprint(self.model, self.inputs, self.params)
        return self._fp

    def fail(self, error: WatchkeeperError) -> None:
        if self.open:
            self.future.set_exception(error)
