"""The job runner: durable jobs from the store to the models' schedulers, and back.

Runs in the front process, on its event loop. Every store call and result write goes to
one dedicated thread (``StoreThread``), in order; the loop never waits on the disk.

State: the store is the truth. In memory there is only ``active``: the jobs this process is
running now (at most one per configured replica of their model), each with its scheduler
request once submitted. A job is submitted to its model's scheduler like a predict request,
alone (never batched), with the job's deadline (``jobs.timeout_s``) and a listener that
writes each start and progress report to the store.

Lifecycle of a job here::

    submit ──> store: queued ──feed──> scheduler queue ──worker takes it──> store: running
                                                                  │ progress ──> store events
      store: succeeded <── result files written (temp + rename) <─┤ outputs
      store: failed / cancelled <─────────────────────────────────┘ error / cancel

Durability: the store is written before the client gets its 202 (submits that arrive while
one group is written are written together next: one fsync each group), and a job's attempts are
counted when a worker takes it. When the server dies, ``start`` finds the running jobs and
queues them again (or fails those with no attempts left). When a worker dies, the scheduler
runs the job again while it has runs left (``max_runs``). A graceful shutdown gives running
jobs the grace period, then puts them back in the queue with their attempt refunded.

Cancel: a queued job is cancelled in the store at once (and dropped from the scheduler's
queue if it was there); a running one is asked to stop (``Cancel`` to its worker) and the
worker is killed after ``jobs.cancel_grace_s`` if it has not.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchkeeper.config import JobsConfig
from watchkeeper.errors import (
    Cancelled,
    Conflict,
    NotFound,
    OutOfMemory,
    Overloaded,
    Unavailable,
    WatchkeeperError,
)
from watchkeeper.front import metrics
from watchkeeper.front.service import ModelService
from watchkeeper.jobs.changes import Changes
from watchkeeper.jobs.job import Job, JobEvent, JobState, NewJob
from watchkeeper.jobs.results import ResultFiles
from watchkeeper.jobs.sqlite_store import SqliteJobStore
from watchkeeper.jobs.store_thread import StoreThread
from watchkeeper.jobs.upkeep import Upkeep
from watchkeeper.logs import log_event
from watchkeeper.scheduling.pending import Outcome, Pending

__all__ = ["FEED_INTERVAL_S", "RETRY_LATER_S", "JobRunner"]

log = logging.getLogger("watchkeeper.jobs")

#: How often each model's feed looks for queued jobs when nothing woke it.
FEED_INTERVAL_S = 1.0
#: How long a job waits before it is offered again to a model that is busy or unavailable.
RETRY_LATER_S = 1.0
#: How long ``stop`` waits for the running jobs' last store writes.
STOP_TIMEOUT_S = 5.0


@dataclass(eq=False)
class Active:
    """A job this process is running: its scheduler request once submitted."""

    job: Job
    pending: Pending | None = None
    cancel: bool = False  # cancel asked before the request was submitted
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class _Listener:
    """The scheduler's callbacks for one job's request: starts and progress to the store."""

    def __init__(self, runner: JobRunner, active: Active) -> None:
        self.runner = runner
        self.active = active

    def started(self, pending: Pending) -> None:
        self.runner.started(self.active, pending)

    def progress(self, fraction: float, message: str) -> None:
        self.runner.write(self.active.job.id, self.runner.store.progress, self.active.job.id,
                          fraction, message)


class JobRunner:
    """Accepts, runs, cancels and reports durable jobs for the models of one front."""

    def __init__(self, config: JobsConfig, data_dir: Path,
                 service_of: Callable[[str], ModelService], models: list[str]) -> None:
        self.config = config
        self.store = SqliteJobStore(data_dir / "jobs.sqlite3")
        self.results = ResultFiles(data_dir / "results")
        self.db = StoreThread()
        self.changes = Changes()
        self.active: dict[str, Active] = {}
        self.stopping = False
        self._service_of = service_of
        self._models = models
        self._wake = {name: asyncio.Event() for name in models}
        self._tasks: list[asyncio.Task[None]] = []
        self._creates: list[tuple[NewJob, asyncio.Future[tuple[Job, bool]]]] = []
        self._creating = False
        self.upkeep = Upkeep(config, self.store, self.results, self.db)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Queue again what a dead server left running; remove half-written results; feed."""
        recovered = await self.db.call(self.store.recover)
        swept = await self.db.call(self.results.sweep_partial)
        for job in recovered:
            reason = "server_stopped"
            if job.state is JobState.QUEUED:
                metrics.count_job_requeued(job.model, reason)
            log_event(log, "job.recovered", job_id=job.id, model=job.model, state=job.state.value,
                      attempts=job.attempts)
        if recovered or swept:
            log_event(log, "jobs.recovered", jobs=len(recovered), partial_results_removed=swept)
        await self._warn_unserved()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._feed(name)) for name in self._models]
        self._tasks.append(loop.create_task(self.upkeep.run(lambda: self.stopping)))

    async def _warn_unserved(self) -> None:
        """Jobs queued for models this configuration does not serve wait (nothing is deleted):
        say so once at start-up, so they are not stuck unseen."""
        queued = await self.db.call(self.store.queued_models)
        unserved = {model: n for model, n in queued.items() if model not in self._models}
        if unserved:
            log_event(log, "jobs.unserved", logging.WARNING, models=unserved,
                      suggestion="Serve these models again to run their jobs, or cancel the jobs.")

    def drain(self) -> None:
        """Take no new jobs from the store (running ones finish within the grace period)."""
        self.stopping = True
        for wake in self._wake.values():
            wake.set()
        self.changes.wake_all()

    async def stop(self) -> None:
        """After the services failed what was left: wait for the last writes, close the store."""
        self.drain()
        running = [a.task for a in self.active.values() if a.task is not None]
        if running:
            await asyncio.wait(running, timeout=STOP_TIMEOUT_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.db.call(self.store.close)
        self.db.close()

    # --- requests from the HTTP layer ---------------------------------------------------

    async def submit(self, model: str, inputs: dict[str, Any], params: dict[str, Any],
                     allow_degrade: bool, request_id: str,
                     idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Store a new job (or find the one this Idempotency-Key made); True if new."""
        service = self._service_of(model)
        if self.stopping:
            raise Unavailable("the server is shutting down", retry_after_s=5)
        service.refuse_if_failed()
        service.check_params(params)
        await self._check_disk()
        new = NewJob(uuid.uuid4().hex, model, inputs, params, allow_degrade, self.config.max_attempts,
                     request_id, idempotency_key)
        job, created = await self._create(new)
        if not created and job.request_hash != new.request_hash:
            raise Conflict(
                f"Idempotency-Key '{idempotency_key}' was used for a different request (job {job.id})",
                suggestion="Use a new key for a new request.",
            )
        if created:
            metrics.count_job_submitted(model)
            log_event(log, "job.submitted", job_id=job.id, model=model, request_id=request_id,
                      params=params)
            self._wake[model].set()
        return job, created

    def _create(self, new: NewJob) -> asyncio.Future[tuple[Job, bool]]:
        """Store ``new`` with the other submits waiting now: one transaction (one fsync) for
        all of them, while the previous group is being written (group commit)."""
        future: asyncio.Future[tuple[Job, bool]] = asyncio.get_running_loop().create_future()
        self._creates.append((new, future))
        if len(self._creates) == 1 and not self._creating:
            self._creating = True
            asyncio.get_running_loop().create_task(self._write_creates())
        return future

    async def _write_creates(self) -> None:
        try:
            while self._creates:
                group, self._creates = self._creates, []
                try:
                    stored = await self.db.call(self.store.create_many, [new for new, _ in group])
                except Exception as exc:
                    for _, future in group:
                        future.set_exception(exc)
                    continue
                for (_, future), result in zip(group, stored, strict=True):
                    future.set_result(result)
        finally:
            self._creating = False

    async def _check_disk(self) -> None:
        free = self.results.free_mb()  # one statvfs: not worth a turn in the store's thread
        wanted = self.config.min_free_disk_mb
        if free < wanted:
            log_event(log, "job.refused_disk_full", logging.WARNING, free_mb=round(free, 1),
                      min_free_disk_mb=wanted)
            raise Unavailable(
                f"the data dir's disk has {free:.0f} MiB free, under jobs.min_free_disk_mb "
                f"({wanted:.0f} MiB): new jobs are refused until space is freed",
                suggestion="Retry later; an operator must free disk space.",
                retry_after_s=60, details={"free_mb": round(free, 1), "min_free_disk_mb": wanted},
            )

    async def find(self, job_id: str) -> Job | None:
        return await self.db.call(self.store.get, job_id)

    async def get(self, job_id: str) -> Job:
        job = await self.find(job_id)
        if job is None:
            raise self._not_found(job_id)
        return job

    def _not_found(self, job_id: str) -> NotFound:
        return NotFound(
            f"no job '{job_id}' (finished jobs are kept for jobs.result_ttl_h = "
            f"{self.config.result_ttl_h:g} h)",
            suggestion="GET /v1/jobs lists the jobs kept here.",
        )

    async def list_jobs(self, state: JobState | None, model: str | None, limit: int) -> list[Job]:
        return await self.db.call(self.store.list_jobs, state=state, model=model, limit=limit)

    async def events(self, job_id: str, after: int) -> list[JobEvent]:
        return await self.db.call(self.store.events, job_id, after)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now; ask a running one to stop (its worker is killed if it
        has not within ``cancel_grace_s``). A finished job is returned unchanged."""
        job = await self.db.call(self.store.cancel, job_id)
        if job is None:
            raise self._not_found(job_id)
        if job.state is JobState.CANCELLED or job.cancel_requested:
            self._stop_active(job_id)
        self.changes.changed(job_id)
        log_event(log, "job.cancel", job_id=job_id, state=job.state.value)
        return job

    def _stop_active(self, job_id: str) -> None:
        active = self.active.get(job_id)
        if active is None:
            return
        active.cancel = True
        if active.pending is not None:
            self._service_of(active.job.model).cancel(active.pending, self.config.cancel_grace_s)

    # --- feeding the schedulers --------------------------------------------------------

    async def _feed(self, model: str) -> None:
        """Keep up to one job per replica of ``model`` in its scheduler."""
        wake = self._wake[model]
        while not self.stopping:
            wake.clear()
            try:
                await self._feed_once(model)
            except Exception:  # the feed must outlive one bad step (e.g. a disk error)
                log.exception("job feed step failed", extra={"model": model})
            try:
                await asyncio.wait_for(wake.wait(), FEED_INTERVAL_S)
            except TimeoutError:
                pass

    async def _feed_once(self, model: str) -> None:
        service = self._service_of(model)
        mine = [a for a in self.active.values() if a.job.model == model]
        room = service.config.replicas - len(mine)
        if room <= 0:
            return
        queued = await self.db.call(self.store.queued, model, room + len(mine))
        for job in queued:
            if room > 0 and job.id not in self.active and not self.stopping:
                self._launch(job)
                room -= 1

    def _launch(self, job: Job) -> None:
        active = Active(job)
        self.active[job.id] = active
        active.task = asyncio.get_running_loop().create_task(self._run(active))
        active.task.add_done_callback(lambda _: self._ended(active))

    def _ended(self, active: Active) -> None:
        task = active.task
        if task is not None and not task.cancelled() and task.exception() is not None:
            # A bug, or the store failing: the job stays as the store has it (queued or
            # running) and is offered again by the feed, or recovered at the next start.
            log_event(log, "job.run_failed", logging.ERROR, job_id=active.job.id,
                      model=active.job.model, error=repr(task.exception()))
        self.active.pop(active.job.id, None)
        wake = self._wake.get(active.job.model)
        if wake is not None:
            wake.set()

    # --- running one job ---------------------------------------------------------------

    async def _run(self, active: Active) -> None:
        job = active.job
        service = self._service_of(job.model)
        inputs = await self.db.call(self.store.inputs, job.id)
        try:
            pending = await service.submit(
                job.request_id, inputs, job.params, self.config.timeout_s, job.allow_degrade,
                listener=_Listener(self, active), max_runs=max(1, job.max_attempts - job.attempts))
        except (Overloaded, Unavailable) as exc:
            if isinstance(exc, OutOfMemory):
                await self._finish(job, JobState.FAILED, error=exc)
            else:
                await asyncio.sleep(RETRY_LATER_S)  # stays queued; the feed offers it again
            return
        except WatchkeeperError as exc:
            await self._finish(job, JobState.FAILED, error=exc)
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
        except Unavailable as exc:
            if self.stopping and not isinstance(exc, OutOfMemory):
                await self._interrupted(job, pending)
            else:
                await self._finish(job, JobState.FAILED, error=exc)
        except WatchkeeperError as exc:
            await self._finish(job, JobState.FAILED, error=exc)
        else:
            await self._succeeded(job, outcome)

    async def _interrupted(self, job: Job, pending: Pending) -> None:
        """The server stopped before the job finished: queue it again, attempt refunded."""
        if pending.started_at is None:
            return  # never started: still queued in the store
        await self.write(job.id, self.store.requeue, job.id,
                         reason="the server stopped before it finished", refund_attempt=True)
        metrics.count_job_requeued(job.model, "server_stopped")
        log_event(log, "job.requeued", job_id=job.id, model=job.model, reason="shutdown")

    async def _succeeded(self, job: Job, outcome: Outcome) -> None:
        try:
            meta = await self.db.call(self.results.write, job.id, outcome.outputs)
        except (OSError, ValueError) as exc:
            error = Unavailable(f"the result could not be written: {exc}",
                                suggestion="Free disk space on the data dir, then submit again.")
            await self._finish(job, JobState.FAILED, error=error)
            return
        await self._finish(job, JobState.SUCCEEDED, result=meta.to_dict(), degraded=outcome.degraded)

    async def _finish(self, job: Job, state: JobState, *, error: WatchkeeperError | None = None,
                      result: dict[str, Any] | None = None,
                      degraded: dict[str, Any] | None = None) -> None:
        info = None if error is None else {"type": error.type, "message": error.message,
                                           "suggestion": error.suggestion}
        done: Job = await self.write(job.id, self.store.finish, job.id, state, error=info,
                                     result=result, degraded=degraded)
        metrics.count_job_finished(job.model, done.state.value, time.time() - job.created_at)
        level = logging.INFO if done.state is JobState.SUCCEEDED else logging.WARNING
        log_event(log, "job.finished", level, job_id=job.id, model=job.model, state=done.state.value,
                  attempts=done.attempts, error=info)

    # --- scheduler callbacks (sync, on the loop) ------------------------------------------

    def started(self, active: Active, pending: Pending) -> None:
        """A worker took the job's request: count the attempt (a rerun after a death too)."""
        job_id = active.job.id
        if pending.runs > 1:
            self.write(job_id, self.store.requeue, job_id, reason="its worker died while it ran")
            metrics.count_job_requeued(active.job.model, "worker_died")
        started = self.write(job_id, self.store.start, job_id)
        started.add_done_callback(lambda f: self._check_started(active, f))

    def _check_started(self, active: Active, future: asyncio.Future[Job | None]) -> None:
        if not future.cancelled() and future.exception() is None and future.result() is None:
            self._stop_active(active.job.id)  # cancelled in the store while it was queued

    def write(self, job_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Queue a store write now, in order; watchers of the job are woken when it is done."""
        future = self.db.call(fn, *args, **kwargs)
        future.add_done_callback(lambda f: self._written(job_id, f))
        return future

    def _written(self, job_id: str, future: asyncio.Future[Any]) -> None:
        self.changes.changed(job_id)
        if not future.cancelled() and future.exception() is not None:
            log_event(log, "job.store_failed", logging.ERROR, job_id=job_id,
                      error=repr(future.exception()))

    @property
    def counts(self) -> dict[str, int]:
        """Jobs per state, as last counted (for /health)."""
        return self.upkeep.counts
