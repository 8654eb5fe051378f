"""Per-model queue, batch assembly and dispatch to idle workers.

Runs in the front process, on its event loop; no threads. State: the bounded queue of
``Pending`` requests and the table of batches in flight (one per busy replica). Every
request resolves its own future; the HTTP handler waits on it until its deadline.

Deadlines: a queued request whose deadline passes is dropped when a batch is taken (its
handler has answered 504 already). A batch in flight has a timer at its latest deadline;
when it fires, the worker is SIGKILLed (reason ``deadline``) and the supervisor replaces it.

Deaths: when a worker dies under a batch, each request in it is retried (at the head of the
queue, alone) unless its deadline has passed; a death while an input ran alone counts
against that input, and the second one fails it with InputQuarantined and refuses that
input for ``quarantine_s``.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchkeeper.errors import (
    DeadlineExceeded,
    InputQuarantined,
    Overloaded,
    Unavailable,
    WatchkeeperError,
    WorkerCrashed,
    error_from_type,
)
from watchkeeper.messages import BatchDone, Item, ProbeDone, RunBatch, RunProbe
from watchkeeper.quarantine import Quarantine, fingerprint
from watchkeeper.replica import Replica, ReplicaState

__all__ = ["Kind", "Pending", "Outcome", "InFlight", "take_batch", "Scheduler"]

#: Weight of the newest batch in the running mean of service time (for Retry-After).
_EWMA_ALPHA = 0.2


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


@dataclass(eq=False)
class Pending:
    """A request from the moment it is accepted until its future is resolved."""

    model: str
    request_id: str
    inputs: dict[str, Any]
    params: dict[str, Any]
    deadline: float  # time.monotonic() by which the client must have an answer
    future: asyncio.Future[Any]
    kind: Kind = Kind.REQUEST
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    runs: int = 0  # times sent to a worker
    deaths: int = 0  # worker deaths counted against this input
    solo: bool = False  # must run alone (a probe, or a retry after a batch died)
    replica_pid: int | None = None  # the worker that ran it last
    _fp: str | None = None

    @property
    def open(self) -> bool:
        return not self.future.done()

    @property
    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = fingerprint(self.model, self.inputs, self.params)
        return self._fp

    def fail(self, error: WatchkeeperError) -> None:
        if self.open:
            self.future.set_exception(error)


@dataclass(eq=False)
class InFlight:
    batch_id: int
    replica: Replica
    items: list[Pending]
    timer: asyncio.TimerHandle
    sent_at: float


def take_batch(queue: deque[Pending], max_size: int) -> list[Pending]:
    """Pop the next batch: up to ``max_size`` open requests; a solo request goes alone.

    Requests whose future is already done (answered 504, client gone) are dropped.
    """
    batch: list[Pending] = []
    while queue and len(batch) < max_size:
        head = queue[0]
        if not head.open:
            queue.popleft()
            continue
        if head.solo and batch:
            break
        batch.append(queue.popleft())
        if head.solo:
            break
    return batch


class Scheduler:
    """Queue and dispatch for one model; the supervisor tells it about replicas."""

    def __init__(
        self,
        model: str,
        *,
        max_queue: int,
        max_batch_size: int,
        max_wait_ms: float,
        quarantine: Quarantine,
        replicas: Callable[[], Sequence[Replica]],
        on_outcome: Callable[[Pending, Outcome | None, WatchkeeperError | None], None],
    ) -> None:
        self.model = model
        self.max_queue = max_queue
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.quarantine = quarantine
        self.queue: deque[Pending] = deque()
        self.inflight: dict[int, InFlight] = {}
        self.service_s = 0.0  # running mean of a batch's time in a worker
        self.closed = False
        self.last_success_at: float | None = None
        self._replicas = replicas
        self._on_outcome = on_outcome
        self._ids = itertools.count(1)
        self._wait_timer: asyncio.TimerHandle | None = None

    # --- accepting -----------------------------------------------------------------

    def submit(self, pending: Pending) -> None:
        """Queue a request, or raise Overloaded / Unavailable / InputQuarantined now."""
        if self.closed:
            raise Unavailable("the server is shutting down", retry_after_s=5)
        if self.quarantine and pending.kind is Kind.REQUEST:
            left = self.quarantine.refused_for(pending.fingerprint)
            if left:
                raise InputQuarantined(
                    f"this input killed {self.quarantine.max_deaths} workers of model "
                    f"'{self.model}'; it is refused for another {left:.0f} s",
                    retry_after_s=left,
                )
        if len(self.queue) >= self.max_queue:
            self._drop_answered()
        if len(self.queue) >= self.max_queue and pending.kind is Kind.REQUEST:
            raise Overloaded(
                f"model '{self.model}' has {len(self.queue)} requests queued (max_queue "
                f"{self.max_queue})",
                retry_after_s=self.retry_after_s(),
            )
        if pending.solo:
            self.queue.appendleft(pending)
        else:
            self.queue.append(pending)
        self.dispatch()

    def _drop_answered(self) -> None:
        self.queue = deque(p for p in self.queue if p.open)

    def retry_after_s(self) -> int:
        """Whole seconds until the queue has likely room again (at least 1)."""
        ready = sum(1 for r in self._replicas() if r.state in (ReplicaState.READY, ReplicaState.BUSY))
        batches = len(self.queue) / self.max_batch_size + 1
        return max(1, math.ceil(batches * max(self.service_s, 0.05) / max(ready, 1)))

    @property
    def depth(self) -> int:
        return len(self.queue)

    # --- dispatching ---------------------------------------------------------------

    def dispatch(self) -> None:
        """Send batches to idle replicas while there is work (called on every change)."""
        while self.queue:
            replica = next((r for r in self._replicas() if r.idle), None)
            if replica is None or self._waiting_for_stragglers():
                return
            batch = take_batch(self.queue, self.max_batch_size)
            if batch:
                self._send(replica, batch)

    def _waiting_for_stragglers(self) -> bool:
        """Hold a part-full batch until ``max_wait_ms`` after its oldest request came in."""
        if self.max_wait_s <= 0 or len(self.queue) >= self.max_batch_size:
            return False
        send_at = self.queue[0].enqueued_at + self.max_wait_s
        now = time.monotonic()
        if send_at <= now:
            return False
        if self._wait_timer is None:
            loop = asyncio.get_running_loop()
            self._wait_timer = loop.call_later(send_at - now, self._stragglers_waited)
        return True

    def _stragglers_waited(self) -> None:
        self._wait_timer = None
        self.dispatch()

    def _send(self, replica: Replica, batch: list[Pending]) -> None:
        batch_id = next(self._ids)
        now = time.monotonic()
        for pending in batch:
            pending.runs += 1
            pending.started_at = now
            pending.replica_pid = replica.pid
        if batch[0].kind is Kind.PROBE:
            replica.send(RunProbe(batch_id))
        else:
            items = tuple(Item(p.request_id, p.inputs, p.params) for p in batch)
            replica.send(RunBatch(batch_id, items))
        replica.state = ReplicaState.BUSY
        loop = asyncio.get_running_loop()
        latest = max(p.deadline for p in batch)
        timer = loop.call_later(max(0.0, latest - now), self._overdue, batch_id)
        self.inflight[batch_id] = InFlight(batch_id, replica, batch, timer, now)

    def _overdue(self, batch_id: int) -> None:
        inflight = self.inflight.get(batch_id)
        if inflight is not None:
            inflight.replica.kill("deadline")

    # --- answers -------------------------------------------------------------------

    def on_done(self, replica: Replica, message: BatchDone | ProbeDone) -> None:
        """A worker finished a batch or probe: resolve each request, then dispatch more."""
        batch_id = message.batch_id if isinstance(message, BatchDone) else message.probe_id
        inflight = self.inflight.pop(batch_id, None)
        if replica.state is ReplicaState.BUSY:
            replica.state = ReplicaState.READY
        if inflight is not None:
            inflight.timer.cancel()
            elapsed = time.monotonic() - inflight.sent_at
            self.service_s += _EWMA_ALPHA * (elapsed - self.service_s)
            if isinstance(message, ProbeDone):
                self._resolve_probe(inflight, message)
            else:
                self._resolve_batch(inflight, message)
        self.dispatch()

    def _resolve_probe(self, inflight: InFlight, message: ProbeDone) -> None:
        probe = inflight.items[0]
        if probe.open:
            probe.future.set_result(message)

    def _resolve_batch(self, inflight: InFlight, message: BatchDone) -> None:
        pid = inflight.replica.pid
        for pending, result in zip(inflight.items, message.results, strict=True):
            if result.error is not None:
                info = result.error
                error = error_from_type(info.type, info.message, details=info.details,
                                        suggestion=info.suggestion)
                self._finish(pending, None, error)
                continue
            self.last_success_at = time.monotonic()
            if self.quarantine:
                self.quarantine.forgive(pending.fingerprint)
            queue_ms = ((pending.started_at or pending.enqueued_at) - pending.enqueued_at) * 1000
            outcome = Outcome(result.outputs or {}, queue_ms, message.infer_ms, pid, pending.runs)
            self._finish(pending, outcome, None)

    def _finish(self, pending: Pending, outcome: Outcome | None, error: WatchkeeperError | None) -> None:
        if pending.open:
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(outcome)
        self._on_outcome(pending, outcome, error)

    # --- deaths --------------------------------------------------------------------

    def on_replica_lost(self, replica: Replica, exit_desc: str) -> None:
        """A worker died: retry, quarantine or fail what it was running."""
        inflight = next((f for f in self.inflight.values() if f.replica is replica), None)
        if inflight is None:
            return
        del self.inflight[inflight.batch_id]
        inflight.timer.cancel()
        reason = replica.kill_reason
        counts = (len(inflight.items) == 1 and reason in (None, "deadline")
                  and inflight.items[0].kind is Kind.REQUEST)
        retry: list[Pending] = []
        for pending in inflight.items:
            if counts:
                pending.deaths += 1
                if self.quarantine.quarantine_s > 0:
                    self.quarantine.record_death(pending.fingerprint)
            error = self._death_error(pending, reason, exit_desc)
            if error is None:
                pending.solo = True
                retry.append(pending)
            else:
                self._finish(pending, None, error)
        self.queue.extendleft(reversed(retry))
        self.dispatch()

    def _death_error(self, pending: Pending, reason: str | None, exit_desc: str) -> WatchkeeperError | None:
        """Why this request cannot be retried, or None when it can."""
        if reason == "deadline" or time.monotonic() >= pending.deadline:
            return DeadlineExceeded(self._deadline_message(pending))
        if pending.kind is Kind.PROBE:
            return Unavailable(f"the worker died during the probe ({exit_desc})")
        if pending.deaths >= self.quarantine.max_deaths and self.quarantine.quarantine_s <= 0:
            return WorkerCrashed(
                f"this request killed {pending.deaths} workers of model '{self.model}' "
                f"(last: {exit_desc})"
            )
        if pending.deaths >= self.quarantine.max_deaths:
            return InputQuarantined(
                f"this input killed {pending.deaths} workers of model '{self.model}' (last: "
                f"{exit_desc}); it is refused for {self.quarantine.quarantine_s:.0f} s",
                retry_after_s=self.quarantine.quarantine_s,
            )
        if self.closed:
            return Unavailable(f"the worker died ({exit_desc}) while the server shuts down",
                               retry_after_s=5)
        return None

    def _deadline_message(self, pending: Pending) -> str:
        total = pending.deadline - pending.enqueued_at
        return f"model '{self.model}' did not answer within {total:.1f} s"

    # --- shutting down ---------------------------------------------------------------

    def close(self) -> None:
        """Accept nothing new; what is queued or running may still finish."""
        self.closed = True

    @property
    def idle(self) -> bool:
        return not self.inflight and not any(p.open for p in self.queue)

    def fail_all(self, error: WatchkeeperError) -> None:
        """Fail every queued and running request (the end of a shutdown's grace period)."""
        for pending in self.queue:
            pending.fail(error)
        self.queue.clear()
        for inflight in self.inflight.values():
            inflight.timer.cancel()
            for pending in inflight.items:
                pending.fail(error)
        self.inflight.clear()
