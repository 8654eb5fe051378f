"""One attempt of a durable job: counted in the store, run by its model, its end written.

Runs in the front process, on its event loop, as one task per job the runner launched
(``jobs.runner``); store calls and result writes go to the store's thread.

An attempt, in order::

    store: running, attempts + 1 (committed) ──> scheduler: one run, alone (max_runs 1)
        ──> outcome ──> result files + manifest ──> store: succeeded | failed | cancelled
                    └─> the worker died: store: queued (attempt kept), or failed at max_attempts
                    └─> the server stops: store: queued (attempt refunded)

- **The attempt is committed before the run is sent.** If the commit fails, nothing is
  sent and the job stays queued; a refusal before sending (the model busy or unavailable)
  refunds it. A worker death ends the attempt: the job goes back to the store's queue and
  the next attempt is counted like the first, so a job never runs more often than its
  ``attempts`` say.
- **A final state that cannot be written is kept, not lost or re-run.** While the store
  fails, the attempt keeps its outcome and writes it again every ``COMMIT_RETRY_S`` (the job
  stays in the runner's active set, so it is not started again) until the store takes it
  or the server stops; then recovery adopts the result files at the next start.
- A result that does not fit on the disk (ENOSPC, EFBIG) fails the job; a results directory
  that is gone or will not take writes is a store failure (the outcome is kept, as above).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from watchkeeper.config import JobsConfig
from watchkeeper.errors import (
    Cancelled,
    OutOfMemory,
    Overloaded,
    Unavailable,
    WatchkeeperError,
    WorkerCrashed,
)
from watchkeeper.front import metrics
from watchkeeper.front.health import SERVING_STATES
from watchkeeper.front.service import ModelService
from watchkeeper.jobs.job import Job, JobState
from watchkeeper.jobs.results import ResultFiles, ResultMeta
from watchkeeper.jobs.sqlite_store import SqliteJobStore
from watchkeeper.jobs.store_health import STORE_ERRORS, StoreHealth
from watchkeeper.jobs.store_thread import StoreThread
from watchkeeper.logs import log_event
from watchkeeper.scheduling.pending import Outcome, Pending

__all__ = ["COMMIT_RETRY_S", "RETRY_LATER_S", "Active", "Attempts", "Write"]

log = logging.getLogger("watchkeeper.jobs")

#: How long a job waits before it is offered again to a model that refused it (busy).
RETRY_LATER_S = 1.0
#: While the store fails: how often a finished attempt tries again to write its final state.
COMMIT_RETRY_S = 1.0
#: Result writes that fail because this result does not fit: the job fails (not the store).
_TOO_BIG = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

#: The runner's store write: queued now, in order; watchers are woken when it is done.
Write = Callable[..., "asyncio.Future[Any]"]


@dataclass(eq=False)
class Active:
    """A job this process is running: its scheduler request once submitted."""

    job: Job
    pending: Pending | None = None
    cancel: bool = False  # cancel asked before the request was submitted
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class _Listener:
    """The scheduler's callbacks for one attempt's run: its start logged, its progress stored."""

    def __init__(self, attempts: Attempts, active: Active) -> None:
        self.attempts = attempts
        self.active = active

    def started(self, pending: Pending) -> None:
        job = self.active.job
        log_event(log, "job.run_started", job_id=job.id, model=job.model, attempt=job.attempts,
                  pid=pending.replica_pid)

    def progress(self, fraction: float, message: str) -> None:
        if self.attempts.health.writable:  # progress is not worth a write that would wait
            job_id = self.active.job.id
            self.attempts.write(job_id, self.attempts.store.progress, job_id, fraction, message)


class Attempts:
    """Runs attempts of jobs for one job runner."""

    def __init__(self, config: JobsConfig, store: SqliteJobStore, results: ResultFiles,
                 db: StoreThread, health: StoreHealth, write: Write,
                 stopping: Callable[[], bool]) -> None:
        self.config = config
        self.store = store
        self.results = results
        self.db = db
        self.health = health
        self.write = write
        self.stopping = stopping

    @staticmethod
    def may_start(service: ModelService) -> bool:
        """The model can take a job now: serving, with room in its queue."""
        return service.state.value in SERVING_STATES and not service.overloaded

    async def run(self, active: Active, service: ModelService) -> None:
        """Count an attempt of ``active.job`` in the store, then run it (see the module)."""
        inputs = await self.db.call(self.store.inputs, active.job.id)
        try:
            claimed: Job | None = await self.write(active.job.id, self.store.start, active.job.id)
        except STORE_ERRORS as exc:  # not counted, so not sent: it stays queued
            log_event(log, "job.not_started", logging.WARNING, job_id=active.job.id,
                      model=active.job.model, error=repr(exc))
            return
        if claimed is None:
            return  # cancelled (or no longer queued) meanwhile
        active.job = job = claimed
        try:
            pending = await service.submit(
                job.request_id, inputs, job.params, self.config.timeout_s, job.allow_degrade,
                listener=_Listener(self, active), max_runs=1)
        except (Overloaded, Unavailable) as exc:
            if isinstance(exc, OutOfMemory):
                await self._finish(job, JobState.FAILED, error=exc, refund_attempt=True)
            else:  # queued again, attempt refunded; the feed offers it again
                await self._commit(job, self.store.requeue, job.id, refund_attempt=True,
                                   reason=f"its model refused it for now: {exc.message}")
                await asyncio.sleep(RETRY_LATER_S)
            return
        except WatchkeeperError as exc:
            await self._finish(job, JobState.FAILED, error=exc, refund_attempt=True)
            return
        active.pending = pending
        if active.cancel:
            service.cancel(pending, self.config.cancel_grace_s)
        await self._await_outcome(active, service, pending)

    async def _await_outcome(self, active: Active, service: ModelService, pending: Pending) -> None:
        job = active.job
        try:
            outcome = await service.outcome(pending, self.config.timeout_s)
        except Cancelled as exc:
            await self._finish(job, JobState.CANCELLED, error=exc)
        except WorkerCrashed as exc:
            await self._after_death(job, exc)
        except Unavailable as exc:
            if self.stopping() and not isinstance(exc, OutOfMemory):
                await self._interrupted(job)
            else:
                await self._finish(job, JobState.FAILED, error=exc)
        except WatchkeeperError as exc:
            await self._finish(job, JobState.FAILED, error=exc)
        else:
            await self._succeeded(job, outcome)

    async def _after_death(self, job: Job, exc: WorkerCrashed) -> None:
        """The worker died under the run: the job goes back to the queue while it has
        attempts left (this one stays counted), else it fails."""
        if job.attempts >= job.max_attempts:
            error = WorkerCrashed(f"its worker died under each of its {job.attempts} attempts "
                                  f"(max_attempts {job.max_attempts}); last: {exc.message}")
            await self._finish(job, JobState.FAILED, error=error)
            return
        await self._commit(job, self.store.requeue, job.id,
                           reason=f"its worker died while it ran: {exc.message}")
        metrics.count_job_requeued(job.model, "worker_died")
        log_event(log, "job.requeued", job_id=job.id, model=job.model, reason="worker_died",
                  attempts=job.attempts)

    async def _interrupted(self, job: Job) -> None:
        """The server stopped before the job finished: queue it again, attempt refunded."""
        await self._commit(job, self.store.requeue, job.id, refund_attempt=True,
                           reason="the server stopped before it finished")
        metrics.count_job_requeued(job.model, "server_stopped")
        log_event(log, "job.requeued", job_id=job.id, model=job.model, reason="shutdown")

    async def _succeeded(self, job: Job, outcome: Outcome) -> None:
        while True:
            try:
                meta: ResultMeta = await self.db.call(self.results.write, job.id, outcome.outputs,
                                                      outcome.degraded)
                break
            except ValueError as exc:
                await self._unwritable(job, exc)
                return
            except OSError as exc:
                if exc.errno in _TOO_BIG:
                    await self._unwritable(job, exc)
                    return
                self.health.failed(exc)  # the data dir itself: keep the outcome, try again
                await asyncio.sleep(COMMIT_RETRY_S)
        await self._finish(job, JobState.SUCCEEDED, result=meta.to_dict(), degraded=outcome.degraded)

    async def _unwritable(self, job: Job, exc: Exception) -> None:
        error = Unavailable(f"the result could not be written: {exc}",
                            suggestion="Free disk space on the data dir, then submit again.")
        await self._finish(job, JobState.FAILED, error=error)

    async def _finish(self, job: Job, state: JobState, *, error: WatchkeeperError | None = None,
                      result: dict[str, Any] | None = None, degraded: dict[str, Any] | None = None,
                      refund_attempt: bool = False) -> None:
        info = None if error is None else {"type": error.type, "message": error.message,
                                           "suggestion": error.suggestion}
        done = await self._commit(job, self.store.finish, job.id, state, error=info, result=result,
                                  degraded=degraded, refund_attempt=refund_attempt)
        metrics.count_job_finished(job.model, done.state.value, time.time() - job.created_at)
        level = logging.INFO if done.state is JobState.SUCCEEDED else logging.WARNING
        log_event(log, "job.finished", level, job_id=job.id, model=job.model, state=done.state.value,
                  attempts=done.attempts, error=info)

    async def _commit(self, job: Job, fn: Callable[..., Job], *args: Any, **kwargs: Any) -> Job:
        """Write one of the job's state changes; while the store fails, keep it and write it
        again every COMMIT_RETRY_S until it is written (or the runner's stop cancels this)."""
        waited = False
        while True:
            try:
                done: Job = await self.write(job.id, fn, *args, **kwargs)
                if waited:
                    log_event(log, "job.state_written", job_id=job.id, state=done.state.value)
                return done
            except STORE_ERRORS as exc:
                if not waited:
                    log_event(log, "job.state_pending", logging.WARNING, job_id=job.id,
                              model=job.model, change=getattr(fn, "__name__", "?"), error=repr(exc))
                waited = True
                await asyncio.sleep(COMMIT_RETRY_S)
