"""The job runner: durable jobs from the store to the models' schedulers, and back.

Runs in the front process, on its event loop. Every store call and result write goes to
one dedicated thread (``StoreThread``), in order; the loop never waits on the disk.

State: the store is the truth. In memory there is only ``active``: the jobs this process is
running now (at most one per configured replica of their model), and the store's health
(``StoreHealth``). Each active job is one attempt (``jobs.attempt``): counted in the store
first, then submitted to its model's scheduler like a predict request, alone, with the
job's deadline (``jobs.timeout_s``).

Lifecycle of a job here::

    submit ──> store: queued ──feed──> store: running (attempt counted) ──> scheduler ──> worker
                                                                  │ progress ──> store events
      store: succeeded <── result files + manifest written <──────┤ outputs
      store: failed / cancelled / queued again <──────────────────┘ error / cancel / death

Durability: the store is written before the client gets its 202 (submits that arrive while
one group is written are written together next: one fsync each group). At start-up the data
dir is locked (``jobs.data_dir_lock``: one server per data dir) and ``jobs.recovery`` makes
the store and the result files agree. A graceful shutdown gives running jobs the grace
period, then puts them back in the queue with their attempt refunded.

Faults of the store: see ``jobs.store_health``. While it fails, submits get 503, the feed
starts nothing, and finished attempts hold their outcome until it can be written.

Idempotency: a submit with an Idempotency-Key looks the key up first (before any check that
could refuse it), and compares the request as the client sent it (params before the model's
schema fills in defaults): a retry gets the job the first submit made, whatever changed since.

Owners: every job has one (the API key that submitted it; ``anonymous`` without keys).
``get``, ``cancel`` and ``list_jobs`` take the owner whose jobs the caller may see (None:
every owner's, for ``admin``); another owner's job is "not found". A submit's quotas
(``jobs.quotas``) are checked by the store in the create's transaction, after the
Idempotency-Key lookup, so a replay is never refused by a quota.

Cancel: a queued job is cancelled in the store at once (and dropped from the scheduler's
queue if it was there); a running one is asked to stop (``Cancel`` to its worker) and the
worker is killed after ``jobs.cancel_grace_s`` if it has not.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from watchkeeper.config import JobsConfig
from watchkeeper.errors import Conflict, NotFound, Overloaded, Unavailable
from watchkeeper.front import metrics
from watchkeeper.front.service import ModelService
from watchkeeper.jobs.attempt import Active, Attempts
from watchkeeper.jobs.changes import Changes
from watchkeeper.jobs.data_dir_lock import DataDirLock
from watchkeeper.jobs.job import ANONYMOUS_OWNER, Job, JobEvent, JobState, NewJob, OwnerLimits
from watchkeeper.jobs.recovery import recover
from watchkeeper.jobs.results import ResultFiles
from watchkeeper.jobs.sqlite_store import SqliteJobStore
from watchkeeper.jobs.store_health import STORE_ERRORS, StoreHealth
from watchkeeper.jobs.store_thread import StoreThread
from watchkeeper.jobs.upkeep import Upkeep
from watchkeeper.logs import log_event

__all__ = ["FEED_INTERVAL_S", "STOP_TIMEOUT_S", "JobRunner"]

log = logging.getLogger("watchkeeper.jobs")

T = TypeVar("T")

#: How often each model's feed looks for queued jobs when nothing woke it.
FEED_INTERVAL_S = 1.0
#: How long ``stop`` waits for the running jobs' last store writes (then they are cancelled).
STOP_TIMEOUT_S = 5.0


class JobRunner:
    """Accepts, runs, cancels and reports durable jobs for the models of one front."""

    def __init__(self, config: JobsConfig, data_dir: Path,
                 service_of: Callable[[str], ModelService], models: list[str]) -> None:
        self.config = config
        self.lock = DataDirLock.acquire(data_dir)
        try:
            self.store = SqliteJobStore(data_dir / "jobs.sqlite3",
                                        busy_timeout_s=config.store_write_timeout_s)
        except BaseException:
            self.lock.release()
            raise
        self.results = ResultFiles(data_dir / "results")
        self.health = StoreHealth(self.store.path)
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
        self.attempts = Attempts(config, self.store, self.results, self.db, self.health, self.write,
                                 lambda: self.stopping)
        self.upkeep = Upkeep(config, self.store, self.results, self.db, self.health)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Make the store and the result files agree (``jobs.recovery``); start feeding."""
        recovered = await self.db.call(recover, self.store, self.results)
        for job in recovered.jobs:
            if job.state is JobState.QUEUED:
                metrics.count_job_requeued(job.model, "server_stopped")
            event = "job.result_adopted" if job.state is JobState.SUCCEEDED else "job.recovered"
            log_event(log, event, job_id=job.id, model=job.model, state=job.state.value,
                      attempts=job.attempts)
        if recovered.jobs or recovered.partial_files or recovered.orphan_results:
            log_event(log, "jobs.recovered", jobs=len(recovered.jobs),
                      results_adopted=len(recovered.adopted),
                      partial_results_removed=recovered.partial_files,
                      orphan_results_removed=len(recovered.orphan_results))
        await self._warn_unserved()
        await self.upkeep.refresh_counts()
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
        """After the services failed what was left: wait for the last writes (then cancel
        what still waits, e.g. on a failing store), close the store, release the data dir."""
        self.drain()
        running = [a.task for a in self.active.values() if a.task is not None]
        if running:
            _, late = await asyncio.wait(running, timeout=STOP_TIMEOUT_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.db.call(self.store.close)
        self.db.close()
        self.results.close()
        self.lock.release()

    # --- requests from the HTTP layer ---------------------------------------------------

    async def submit(self, model: str, inputs: dict[str, Any], params: dict[str, Any],
                     allow_degrade: bool, request_id: str, idempotency_key: str | None = None,
                     *, owner: str = ANONYMOUS_OWNER,
                     limits: OwnerLimits | None = None) -> tuple[Job, bool]:
        """Store a new job of ``owner`` (or find the one its Idempotency-Key made); True if
        new. Over ``limits`` (counted in the store's create transaction): ``Overloaded``."""
        service = self._service_of(model)
        new = NewJob(uuid.uuid4().hex, model, inputs, params, allow_degrade, self.config.max_attempts,
                     request_id, idempotency_key, owner=owner, limits=limits)
        if idempotency_key is not None:
            found = await self._ask(self._replay, new)
            if found is not None:
                return found, False
        if self.stopping:
            raise Unavailable("the server is shutting down", retry_after_s=5)
        if not self.health.writable:
            raise self.health.refusal()
        service.refuse_if_failed()
        service.check_params(orjson.loads(orjson.dumps(params)))  # fills defaults: a copy
        self._check_disk()
        job, created = await self._create(new)
        if not created:
            self._same_request(job, new)
            return job, False
        metrics.count_job_submitted(model)
        log_event(log, "job.submitted", job_id=job.id, model=model, request_id=request_id,
                  params=params)
        self._wake[model].set()
        return job, True

    def _replay(self, new: NewJob) -> Job | None:
        """In the store's thread: the job this key made, if the request is the same."""
        assert new.idempotency_key is not None
        job = self.store.find_by_key(new.model, new.idempotency_key, owner=new.owner)
        if job is not None:
            self._same_request(job, new)  # hashes the request here, off the event loop
        return job

    @staticmethod
    def _same_request(job: Job, new: NewJob) -> None:
        if job.request_hash != new.request_hash:
            raise Conflict(
                f"Idempotency-Key '{new.idempotency_key}' was used for a different request "
                f"(job {job.id})",
                suggestion="Use a new key for a new request.",
            )

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
                    error = self._store_error(exc)
                    for _, future in group:
                        future.set_exception(error)
                    continue
                for (_, future), result in zip(group, stored, strict=True):
                    if isinstance(result, Overloaded):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._creating = False

    def _check_disk(self) -> None:
        try:
            free = self.results.free_mb()  # one statvfs: not worth a turn in the store's thread
        except OSError as exc:
            raise self._store_error(exc) from None
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

    def _store_error(self, exc: BaseException) -> BaseException:
        """A store failure as the client sees it (503 naming the store); others unchanged."""
        if isinstance(exc, STORE_ERRORS):
            self.health.failed(exc)
            return self.health.refusal()
        return exc

    async def _ask(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call for the HTTP layer: a failing store is a 503, not a 500; a store
        that is gone or replaced answers nothing (what its open file says is not kept)."""
        failure = self.health.failure
        if failure is not None and failure.permanent:
            raise self.health.refusal()
        try:
            return await self.db.call(fn, *args)
        except STORE_ERRORS as exc:
            raise self._store_error(exc) from None

    async def find(self, job_id: str) -> Job | None:
        return await self._ask(self.store.get, job_id)

    async def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job; NotFound also when it is not ``owner``'s (None: anyone's), so another
        owner does not learn that it exists."""
        job = await self.find(job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise self._not_found(job_id)
        return job

    def _not_found(self, job_id: str) -> NotFound:
        return NotFound(
            f"no job '{job_id}' (finished jobs are kept for jobs.result_ttl_h = "
            f"{self.config.result_ttl_h:g} h)",
            suggestion="GET /v1/jobs lists the jobs kept here.",
        )

    async def list_jobs(self, state: JobState | None, model: str | None, limit: int,
                        owner: str | None = None) -> list[Job]:
        """Newest first; ``owner``'s jobs only (None: everyone's)."""
        return await self._ask(lambda: self.store.list_jobs(state=state, model=model, owner=owner,
                                                            limit=limit))

    async def events(self, job_id: str, after: int) -> list[JobEvent]:
        return await self._ask(self.store.events, job_id, after)

    async def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel a queued job now; ask a running one to stop (its worker is killed if it
        has not within ``cancel_grace_s``). A finished job is returned unchanged; a job
        that is not ``owner``'s (None: anyone's) is not found."""
        if owner is not None:
            await self.get(job_id, owner)  # owners never change: no race with the cancel
        job = await self._ask(self.store.cancel, job_id)
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
        if not self.health.writable or not self.attempts.may_start(service):
            return  # an attempt could not be counted, or would wait for the model
        mine = [a for a in self.active.values() if a.job.model == model]
        room = service.config.replicas - len(mine)
        if room <= 0:
            return
        queued = await self.db.call(self.store.queued, model, room + len(mine))
        for job in queued:
            if room > 0 and job.id not in self.active and not self.stopping:
                self._launch(job, service)
                room -= 1

    def _launch(self, job: Job, service: ModelService) -> None:
        active = Active(job)
        self.active[job.id] = active
        active.task = asyncio.get_running_loop().create_task(self.attempts.run(active, service))
        active.task.add_done_callback(lambda _: self._ended(active))

    def _ended(self, active: Active) -> None:
        task = active.task
        if task is not None and not task.cancelled() and task.exception() is not None:
            # A bug: the job stays as the store has it (queued or running) and is offered
            # again by the feed, or recovered at the next start.
            log_event(log, "job.run_failed", logging.ERROR, job_id=active.job.id,
                      model=active.job.model, error=repr(task.exception()))
        self.active.pop(active.job.id, None)
        wake = self._wake.get(active.job.model)
        if wake is not None:
            wake.set()

    # --- store writes ----------------------------------------------------------------------

    def write(self, job_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Queue a store write now, in order; watchers of the job are woken when it is done,
        and a failure of the disk marks the store failing."""
        future = self.db.call(fn, *args, **kwargs)
        future.add_done_callback(lambda f: self._written(job_id, f))
        return future

    def _written(self, job_id: str, future: asyncio.Future[Any]) -> None:
        self.changes.changed(job_id)
        exc = None if future.cancelled() else future.exception()
        if isinstance(exc, STORE_ERRORS):
            self.health.failed(exc)
        elif exc is not None:
            log_event(log, "job.store_failed", logging.ERROR, job_id=job_id, error=repr(exc))

    @property
    def counts(self) -> dict[str, int]:
        """Jobs per state, as last counted (for /health)."""
        return self.upkeep.counts
