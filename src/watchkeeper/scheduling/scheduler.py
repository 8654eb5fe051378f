"""Per-model queue, batch assembly and dispatch to idle workers.

Runs in the front process, on its event loop; no threads. State: the bounded queue of
``Pending`` requests and the table of batches in flight (one per busy replica). Every
request resolves its own future; the HTTP handler waits on it until its deadline.

Deadlines: a queued request whose deadline passes is dropped when a batch is taken (its
handler has answered 504 already). A batch in flight has a timer at its latest deadline;
when it fires, the worker is SIGKILLed (reason ``deadline``) and the supervisor replaces it.

Deaths: when a worker dies under a batch, each request in it is retried (at the head of the
queue, alone) unless its deadline has passed; a death while an input ran alone counts
against that input (``after_failure``: not a kill at a client's shorter deadline), and the
second one fails it with InputQuarantined and refuses that input for ``quarantine_s``. A
job's run (``max_runs`` set) is instead retried until it has run ``max_runs`` times.

Load shedding: a request whose expected wait and run exceed its deadline gets 503 at once;
run times are learned per kind of work and params shape (``scheduling.service_times``).

Jobs: a job's request runs alone and has a ``listener`` told when it starts and how far it
has got (``Progress`` from the worker). ``cancel`` drops a queued request, or asks the
worker to stop a running one and SIGKILLs it (reason ``cancel``) if it has not stopped
within ``cancel_grace_s``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from watchkeeper.errors import (
    BadInput,
    Cancelled,
    InputQuarantined,
    Overloaded,
    Unavailable,
    WatchkeeperError,
    error_from_type,
)
from watchkeeper.protocol.messages import BatchDone, Cancel, Item, ProbeDone, Progress, RunBatch, RunProbe
from watchkeeper.scheduling.admission import Admission
from watchkeeper.scheduling.after_failure import (
    DeathPolicy,
    OomStep,
    after_out_of_memory,
    counts_against_input,
    death_error,
)
from watchkeeper.scheduling.batching import Admit, take_batch
from watchkeeper.scheduling.pending import Kind, Outcome, Pending
from watchkeeper.scheduling.quarantine import Quarantine
from watchkeeper.scheduling.service_times import ServiceTimes
from watchkeeper.supervision.kill_reasons import KillReason
from watchkeeper.supervision.worker_handle import ReplicaState, WorkerHandle

__all__ = ["InFlight", "Scheduler"]

#: A refill (see ``Scheduler._waiting_for_stragglers``) keeps a free worker idle for at most
#: this share of a batch's mean time: with arrivals just under ``refill_wait_ms`` apart it
#: could otherwise wait for a whole batch's worth of them, one gap at a time.
REFILL_MAX_SHARE = 0.25


@dataclass(eq=False)
class InFlight:
    batch_id: int
    replica: WorkerHandle
    items: list[Pending]
    timer: asyncio.TimerHandle
    sent_at: float
    work: str = "request"  # its kind of work (Pending.work) ...
    shape: str = "{}"  # ... and params shape: whose run time it teaches (service_times)
    expected_s: float = 0.0  # what it was expected to take when it was sent


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
        refill_wait_ms: float = 0.0,
        replicas: Callable[[], Sequence[WorkerHandle]],
        on_outcome: Callable[[Pending, Outcome | None, WatchkeeperError | None], None],
        admission: Admission | None = None,
    ) -> None:
        self.model = model
        self.max_queue = max_queue
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.refill_wait_s = refill_wait_ms / 1000
        self._refill_target = 0  # the batch a worker that came free may wait for (see below)
        self.quarantine = quarantine
        self.queue: deque[Pending] = deque()
        self.inflight: dict[int, InFlight] = {}
        self.service = ServiceTimes()  # a batch's time in a worker, per kind and shape
        self.closed = False
        self.last_success_at: float | None = None
        self._replicas = replicas
        self._on_outcome = on_outcome
        self.admission = admission
        self._ids = itertools.count(1)
        self._wait_timer: asyncio.TimerHandle | None = None
        self._free_since = 0.0  # when a worker last came free

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
        if self.admission is not None and pending.kind is Kind.REQUEST:
            self.admission.check_submit(pending)
        if len(self.queue) >= self.max_queue:
            self.queue = deque(p for p in self.queue if p.open)  # drop those answered already
        if len(self.queue) >= self.max_queue and pending.kind is Kind.REQUEST:
            raise Overloaded(
                f"model '{self.model}' has {len(self.queue)} requests queued (max_queue "
                f"{self.max_queue})",
                retry_after_s=self.retry_after_s(),
            )
        if pending.kind is Kind.REQUEST:
            self._shed_if_too_late(pending)
        if pending.kind is Kind.PROBE:
            self.queue.appendleft(pending)
        else:
            self.queue.append(pending)
        self.dispatch()

    def _ready_count(self) -> int:
        return sum(1 for r in self._replicas() if r.state in (ReplicaState.READY, ReplicaState.BUSY))

    def expected_wait_s(self) -> float:
        """How long a request queued now would likely wait for a worker."""
        now = time.monotonic()
        running = [(f.expected_s, now - f.sent_at) for f in self.inflight.values()]
        return self.service.wait_s(running, len(self.queue) / self.max_batch_size, self._ready_count())

    def _shed_if_too_late(self, pending: Pending) -> None:
        """Load shedding: refuse now what would only time out in the queue."""
        wait = self.expected_wait_s()
        if not wait:
            return
        run = self.service.estimate(pending.work, pending.shape)
        left = pending.deadline - time.monotonic()
        if wait + run > left:
            raise Unavailable(
                f"model '{self.model}' is busy: the expected wait ({wait:.1f} s) and run "
                f"({run:.1f} s) exceed this request's deadline ({left:.1f} s)",
                suggestion="Retry after Retry-After, or allow a longer X-Request-Timeout.",
                retry_after_s=wait,
            )

    def retry_after_s(self) -> int:
        """Whole seconds until the queue has likely room again (at least 1)."""
        return self.service.retry_after_s(len(self.queue) / self.max_batch_size + 1, self._ready_count())

    @property
    def depth(self) -> int:
        return len(self.queue)

    # --- dispatching ---------------------------------------------------------------

    def dispatch(self) -> None:
        """Send batches to idle replicas while there is work (called on every change).

        Each idle replica is offered a batch in turn: with memory admission, what does not
        fit on one replica's device may fit on another's. What fits nowhere waits: memory
        coming free dispatches again.
        """
        if self._waiting_for_stragglers():
            return
        for replica in [r for r in self._replicas() if r.idle]:
            if not self.queue:
                return
            admit = self._admit_on(replica) if self.admission is not None else None
            batch = take_batch(self.queue, self.max_batch_size, admit)
            if batch:
                self._send(replica, batch)

    def _admit_on(self, replica: WorkerHandle) -> Admit:
        admission = self.admission
        assert admission is not None
        admission.min_wait_s = max(self.service.estimate("request"), 0.05)
        return lambda pending, used: admission.admit(replica, pending, used)

    def _waiting_for_stragglers(self) -> bool:
        """Hold a part-full batch for ``max_wait_ms`` after its oldest request came in or a
        worker came free; and refill: after a worker answered a batch of N with M more queued,
        hold fewer than N + M (at most a full batch) while the clients it just answered send
        again, each arrival waiting at most ``refill_wait_ms`` for the next, and the worker
        idle for at most REFILL_MAX_SHARE of a batch's mean time.

        Without the refill, closed-loop clients split into batches that never merge (1 and
        N - 1; at concurrency 32, two halves that take turns, the front's work for one half
        competing with the model's threads running the other).
        """
        if not self.queue or len(self.queue) >= self.max_batch_size:
            return False
        send_at = 0.0
        if self.max_wait_s > 0:
            send_at = max(self.queue[0].enqueued_at, self._free_since) + self.max_wait_s
        if self.refill_wait_s > 0 and len(self.queue) < self._refill_target:
            latest = max(self._free_since, self.queue[-1].enqueued_at)
            cap = self._free_since + REFILL_MAX_SHARE * self.service.estimate("request")
            send_at = max(send_at, min(latest + self.refill_wait_s, cap))
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

    def _send(self, replica: WorkerHandle, batch: list[Pending]) -> None:
        batch_id = next(self._ids)
        now = time.monotonic()
        for pending in batch:
            pending.runs += 1
            pending.started_at = now
            pending.replica_pid = replica.pid
        if batch[0].kind is Kind.PROBE:
            replica.send(RunProbe(batch_id))
        else:
            items = tuple(Item(p.request_id, p.inputs, p.memory.run_params) for p in batch)
            try:
                measure = self.admission is not None and self.admission.wants_measure(batch)
                replica.send(RunBatch(batch_id, items, measure))
            except Exception as exc:  # e.g. an input pickle cannot encode: nothing was sent
                self._unsendable(batch, exc)
                return
            if self.admission is not None:
                self.admission.reserve(replica, batch_id, sum(p.memory.need for p in batch))
        replica.state = ReplicaState.BUSY
        replica.reporting = False
        loop = asyncio.get_running_loop()
        latest = max(p.deadline for p in batch)
        timer = loop.call_later(max(0.0, latest - now), self._overdue, batch_id)
        work, shape = batch[0].work, batch[0].shape
        self.inflight[batch_id] = InFlight(batch_id, replica, batch, timer, now, work, shape,
                                           self.service.estimate(work, shape))
        for pending in batch:
            if pending.listener is not None:
                pending.listener.started(pending)

    def _unsendable(self, batch: list[Pending], exc: Exception) -> None:
        """A batch that could not be encoded: try its requests alone; fail a lone one."""
        if len(batch) == 1:
            error = BadInput(f"the request cannot be passed to the worker: {type(exc).__name__}")
            self._finish(batch[0], None, error)
        else:
            for pending in batch:
                pending.solo = True
            self.queue.extendleft(reversed(batch))
        asyncio.get_running_loop().call_soon(self.dispatch)

    def _overdue(self, batch_id: int) -> None:
        inflight = self.inflight.get(batch_id)
        if inflight is not None:
            inflight.replica.kill(KillReason.DEADLINE)

    # --- answers -------------------------------------------------------------------

    def on_done(self, replica: WorkerHandle, message: BatchDone | ProbeDone) -> None:
        """A worker finished a batch or probe: resolve each request, then dispatch more."""
        batch_id = message.batch_id if isinstance(message, BatchDone) else message.probe_id
        inflight = self.inflight.pop(batch_id, None)
        if replica.state is ReplicaState.BUSY:
            replica.state = ReplicaState.READY
            self._free_since = time.monotonic()
        if inflight is not None:
            inflight.timer.cancel()
            if self.admission is not None:
                self.admission.release(replica, batch_id)
            self.service.observe(inflight.work, inflight.shape, time.monotonic() - inflight.sent_at)
            if isinstance(message, ProbeDone):
                self._resolve_probe(inflight, message)
            else:
                self._refill_target = min(len(inflight.items) + len(self.queue), self.max_batch_size)
                self._resolve_batch(inflight, message)
        self.dispatch()

    def _resolve_probe(self, inflight: InFlight, message: ProbeDone) -> None:
        probe = inflight.items[0]
        if probe.open:
            probe.future.set_result(message)

    def _resolve_batch(self, inflight: InFlight, message: BatchDone) -> None:
        pid = inflight.replica.pid
        if self.admission is not None:
            self.admission.observe(inflight.items, message.peak_bytes)
        out_of_memory: list[tuple[Pending, dict[str, Any]]] = []
        for pending, result in zip(inflight.items, message.results, strict=True):
            info = result.error
            if info is not None and info.type == "out_of_memory" and self.admission is not None:
                out_of_memory.append((pending, info.details))
            elif info is not None:
                error = error_from_type(info.type, info.message, details=info.details,
                                        suggestion=info.suggestion)
                self._finish(pending, None, error)
            else:
                self._succeeded(pending, result.outputs or {}, message.infer_ms, pid)
        if out_of_memory:
            self._after_out_of_memory(inflight, out_of_memory)

    def _succeeded(self, pending: Pending, outputs: dict[str, Any], infer_ms: float,
                   pid: int | None) -> None:
        self.last_success_at = time.monotonic()
        if self.quarantine:
            self.quarantine.forgive(pending.fingerprint)
        queue_ms = ((pending.started_at or pending.enqueued_at) - pending.enqueued_at) * 1000
        outcome = Outcome(outputs, queue_ms, infer_ms, pid, pending.runs, pending.memory.degraded())
        self._finish(pending, outcome, None)

    def _after_out_of_memory(self, inflight: InFlight, failed: list[tuple[Pending, dict[str, Any]]]) -> None:
        """Split a batch in halves; retry a lone request once on its next rung; else 503."""
        assert self.admission is not None
        size = len(inflight.items)
        retry: list[Pending] = []
        for pending, details in failed:
            self.admission.out_of_memory(inflight.replica, pending, details, size)
            plan = pending.memory
            step = after_out_of_memory(plan, size)
            if step is OomStep.SPLIT:
                plan.batch_cap = max(1, size // 2)
            elif step is OomStep.SMALLER:
                plan.oom_retries += 1
                plan.rung = plan.chosen + 1
                plan.degrade_reason = f"out of memory at {plan.run_params}"
            else:
                needs = self.admission.needs(pending)
                self._finish(pending, None, self.admission.refusal(
                    pending, needs, self.admission.free_on(inflight.replica),
                    "the worker ran out of memory running it"))
                continue
            retry.append(pending)
        if any(details.get("recycle") for _, details in failed):
            inflight.replica.kill(KillReason.OOM)  # its memory did not come back
        self.queue.extendleft(reversed(retry))

    def _finish(self, pending: Pending, outcome: Outcome | None, error: WatchkeeperError | None) -> None:
        if pending.open:
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(outcome)
        self._on_outcome(pending, outcome, error)

    # --- jobs: progress and cancel ------------------------------------------------------

    def on_progress(self, replica: WorkerHandle, message: Progress) -> None:
        """A running model reported progress: tell its request's listener."""
        inflight = self.inflight.get(message.batch_id)
        if inflight is None or inflight.replica is not replica:
            return
        for pending in inflight.items:
            if pending.listener is not None and pending.open:
                pending.listener.progress(message.fraction, message.message)

    def cancel(self, pending: Pending, grace_s: float) -> None:
        """Stop a request: drop it if queued; if running, ask its worker to stop it, and
        SIGKILL the worker (reason ``cancel``) if it is still running it after ``grace_s``."""
        pending.cancelled = True
        inflight = next((f for f in self.inflight.values() if pending in f.items), None)
        if inflight is None:
            pending.fail(Cancelled("the job was cancelled before it ran"))
            return
        inflight.replica.send(Cancel(inflight.batch_id))
        loop = asyncio.get_running_loop()
        loop.call_later(grace_s, self._kill_if_running, inflight.batch_id)

    def _kill_if_running(self, batch_id: int) -> None:
        inflight = self.inflight.get(batch_id)
        if inflight is not None:
            inflight.replica.kill(KillReason.CANCEL)

    # --- deaths --------------------------------------------------------------------

    def on_replica_lost(self, replica: WorkerHandle, exit_desc: str) -> None:
        """A worker died: retry, quarantine or fail what it was running."""
        inflight = next((f for f in self.inflight.values() if f.replica is replica), None)
        if inflight is None:
            return
        del self.inflight[inflight.batch_id]
        inflight.timer.cancel()
        if self.admission is not None:
            self.admission.release(replica, inflight.batch_id)
        reason = replica.kill_reason
        counts = counts_against_input(inflight.items, reason)
        policy = DeathPolicy(self.model, self.quarantine.max_deaths, self.quarantine.quarantine_s)
        retry: list[Pending] = []
        for pending in inflight.items:
            if counts:
                pending.deaths += 1
                if self.quarantine.quarantine_s > 0:
                    self.quarantine.record_death(pending.fingerprint)
            error = death_error(pending, reason, exit_desc, now=time.monotonic(),
                                closing=self.closed, policy=policy)
            if error is None:
                pending.solo = True
                retry.append(pending)
            else:
                self._finish(pending, None, error)
        self.queue.extendleft(reversed(retry))
        self.dispatch()

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
            if self.admission is not None:
                self.admission.release(inflight.replica, inflight.batch_id)
            for pending in inflight.items:
                pending.fail(error)
        self.inflight.clear()
