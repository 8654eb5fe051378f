"""The supervisor of one model's worker processes.

Runs in the front process, on its event loop. State: one ``Slot`` per configured replica
(the current ``WorkerHandle`` of its worker and its history: restarts, last exit), the model-wide count of
load failures in a row, and whether the model is FAILED or unready.

The watch loop (``_watch``, every ``WATCH_INTERVAL_S``) is a list of named steps:
``kill_frozen()`` (an idle worker, or a busy one that has reported progress, silent for
``heartbeat_timeout_s``), ``kill_frozen_template()`` (the template silent as long),
``kill_slow_loaders()`` (not ready within ``load_timeout_s``), ``sample_rss()`` and
``recycle_worn()`` (``supervision.recycler``) after each reading.
Exits are not polled: each replica reports its own at once (pidfd).

Spawns: a slot has at most one start under way (``Slot.spawning``, set until its worker
exists or the start gave up): a restart, a timer and an exit never start a second one for
the same slot, which would leave a worker nobody tracks.

Restarts: a worker killed on purpose (deadline, heartbeat, probe, operator, cancel) comes back at
once; a crash comes back after ``restart_delay`` (0 s, then doubling to
``restart_backoff_max_s``); a worker that never became ready counts as a load failure, and
``load_retries`` of those in a row mark the model FAILED until an operator restarts it.
An app that cannot be imported (exit 4) is FAILED at once: retrying cannot help.

Recycling: a worn worker (``supervision.recycling``) is replaced while the model is READY,
one at a time, by a successor started first (``supervision.recycler``: no capacity lost).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchkeeper.config import DEFAULT_CACHE_DIR, ModelConfig
from watchkeeper.front import metrics
from watchkeeper.front.resources import process_rss, uses_gpu
from watchkeeper.logs import log_event
from watchkeeper.protocol.messages import (
    PERMANENT_EXITS,
    BatchDone,
    LoadFailed,
    ProbeDone,
    Progress,
    Ready,
    Stop,
    WorkerSpec,
)
from watchkeeper.supervision.kill_reasons import KillReason
from watchkeeper.supervision.recycler import Recycler
from watchkeeper.supervision.restart_policy import (
    GiveUp,
    decide_load_failure,
    decide_restart,
    restart_delay,
)
from watchkeeper.supervision.slot import Slot
from watchkeeper.supervision.template_handle import ForkError, TemplateHandle
from watchkeeper.supervision.template_keeper import TemplateFactory, TemplateKeeper
from watchkeeper.supervision.worker_handle import ReplicaState, WorkerHandle, describe_exit

__all__ = ["ModelState", "Slot", "Supervisor", "WATCH_INTERVAL_S", "WorkerFactory"]

log = logging.getLogger("watchkeeper.supervisor")

#: Makes the handle of a new worker (``WorkerHandle`` itself; tests pass stand-ins, so the
#: restart policy above the handles runs without processes).
WorkerFactory = Callable[
    [WorkerSpec, Callable[[WorkerHandle, Any], None], Callable[[WorkerHandle, int], None]],
    WorkerHandle,
]

WATCH_INTERVAL_S = 0.2
#: How often each worker's resident memory is read for /health and /metrics.
RSS_INTERVAL_S = 2.0
#: How long workers get to exit after Stop before they are SIGKILLed.
STOP_TIMEOUT_S = 5.0


class ModelState(enum.Enum):
    STARTING = "starting"  # no replica has become ready yet
    READY = "ready"  # every replica is ready
    DEGRADED = "degraded"  # some replicas are ready, others are (re)starting
    RECOVERING = "recovering"  # was ready, now no replica is
    UNREADY = "unready"  # the deep probe failed twice in a row
    FAILED = "failed"  # loading failed load_retries times; needs an operator
    STOPPING = "stopping"


class Supervisor:
    """Keeps ``replicas`` workers of one model alive, and knows the model's state."""

    def __init__(
        self,
        model: str,
        config: ModelConfig,
        *,
        log_level: str,
        on_ready: Callable[[WorkerHandle], None],
        on_done: Callable[[WorkerHandle, BatchDone | ProbeDone], None],
        on_lost: Callable[[WorkerHandle, str], None],
        on_failed: Callable[[str], None] = lambda reason: None,
        on_progress: Callable[[WorkerHandle, Progress], None] = lambda replica, message: None,
        worker_factory: WorkerFactory = WorkerHandle,
        template_factory: TemplateFactory = TemplateHandle,
        cache_dir: Path = Path(DEFAULT_CACHE_DIR),
    ) -> None:
        self.model = model
        self.config = config
        self.cache_dir = cache_dir  # server.cache_dir: where the model's declared files live
        self.log_level = log_level
        self.slots = [Slot(i) for i in range(config.replicas)]
        self.load_failures = 0
        self.failed_reason: str | None = None
        self.unready_reason: str | None = None
        self.stopping = False
        self.ever_ready = False
        self.schema_callback: Callable[[Any], None] | None = None
        self._on_ready = on_ready
        self._on_done = on_done
        self._on_lost = on_lost
        self._on_failed = on_failed
        self._on_progress = on_progress
        self._worker_factory = worker_factory
        self._watch_task: asyncio.Task[None] | None = None
        self._last_rss_at = 0.0
        self.recycler = Recycler(model, config, config.timeout_s + STOP_TIMEOUT_S,
                                 self._make_worker, self._start_worker, on_lost)
        self.keeper = TemplateKeeper(
            self._spec(-1),
            load_timeout_s=config.load_timeout_s,
            on_load_failed=self._template_load_failed,
            forking=config.fork_from_template and not uses_gpu(config.device),
            template_factory=template_factory,
        )

    # --- queries -------------------------------------------------------------------

    def replicas(self) -> list[WorkerHandle]:
        """Every live worker: the slots' own, and a recycle's successor and retiring one."""
        handles = (h for s in self.slots for h in (s.replica, s.successor, s.retiring))
        return [h for h in handles if h is not None and h.alive]

    def watching(self) -> bool:
        """The watch task runs (``front.systemd_notify`` feeds systemd's watchdog only then)."""
        return self._watch_task is not None and not self._watch_task.done()

    @property
    def ready_count(self) -> int:
        serving = (ReplicaState.READY, ReplicaState.BUSY)
        return sum(1 for s in self.slots if s.replica is not None and s.replica.state in serving)

    @property
    def state(self) -> ModelState:
        if self.stopping:
            return ModelState.STOPPING
        if self.failed_reason is not None:
            return ModelState.FAILED
        if self.unready_reason is not None:
            return ModelState.UNREADY
        ready = self.ready_count
        if ready == 0:
            return ModelState.RECOVERING if self.ever_ready else ModelState.STARTING
        return ModelState.DEGRADED if ready < len(self.slots) else ModelState.READY

    # --- start and stop ---------------------------------------------------------------

    async def start(self) -> None:
        """Start loading (returns at once: readiness is reported as workers come up)."""
        self.keeper.start()
        for slot in self.slots:
            self._start_spawn(slot)
        self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Ask every worker to stop, SIGKILL those still there after STOP_TIMEOUT_S."""
        self.stopping = True
        if self._watch_task is not None:
            self._watch_task.cancel()
        for slot in self.slots:
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
        live = self.replicas()
        for replica in live:
            replica.send(Stop())
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for replica in live:
            if not await replica.wait_dead(max(0.0, deadline - time.monotonic())):
                replica.kill(KillReason.SHUTDOWN)
        for replica in live:
            await replica.wait_dead(STOP_TIMEOUT_S)
        await self.keeper.stop()

    async def restart(self) -> None:
        """Operator restart: forget FAILED and back-off, load afresh, replace every worker."""
        self.failed_reason = None
        self.unready_reason = None
        self.load_failures = 0
        await self.keeper.restart()
        for slot in self.slots:
            slot.crash_streak = 0
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
                slot.restart_timer = None
            if slot.replica is not None and slot.replica.alive:
                slot.replica.kill(KillReason.OPERATOR)  # its exit starts the replacement
            else:
                self._start_spawn(slot)  # unless one is under way (it waits for the new template)

    def recycle(self, replica: WorkerHandle, reason: KillReason) -> None:
        """Replace a worker that is alive but not trusted (e.g. its probe failed)."""
        replica.kill(reason)

    # --- spawning ----------------------------------------------------------------------

    def _spec(self, index: int) -> WorkerSpec:
        cfg = self.config
        return WorkerSpec(
            model=self.model,
            app=cfg.app,
            device=cfg.device,
            replica=index,
            heartbeat_interval_s=min(1.0, cfg.heartbeat_timeout_s / 4),
            threads=cfg.threads or max(1, len(os.sched_getaffinity(0)) // cfg.replicas),
            log_level=self.log_level,
            memory_limit_mb=cfg.memory_limit_mb,
            device_memory_gb=cfg.device_memory_gb,
            options=dict(cfg.options),
            cache_dir=str(self.cache_dir),
            report_shapes=cfg.recycle_latency_factor is not None,
        )

    def _start_spawn(self, slot: Slot) -> None:
        """Start the slot's worker in a task, unless a start is already under way."""
        if not slot.spawning:
            slot.spawning = True
            asyncio.get_running_loop().create_task(self._spawn(slot))

    async def _spawn(self, slot: Slot) -> None:
        """Start the slot's worker: forked from the template when there is one, else spawned."""
        slot.spawning = True
        try:
            await self._spawn_now(slot)
        finally:
            slot.spawning = False

    async def _spawn_now(self, slot: Slot) -> None:
        slot.restart_timer = None
        template = await self.keeper.template()
        if self.stopping or self.failed_reason is not None:
            return
        if slot.replica is not None and slot.replica.alive:
            return  # already replaced (a restart raced this start)
        replica = slot.replica = self._make_worker(slot.index)
        slot.starts += 1
        try:
            await self._start_replica(replica, template)
        except OSError as exc:
            slot.last_exit = f"could not start: {exc}"
            log_event(log, "worker.start_failed", logging.ERROR, model=self.model, error=str(exc))
            self._schedule_start(slot, restart_delay(self.load_failures + 2))
            return
        how = "forked" if replica.forked_from is not None else "spawned"
        log_event(log, "worker.start", model=self.model, replica=slot.index, pid=replica.pid, how=how)

    def _make_worker(self, index: int) -> WorkerHandle:
        return self._worker_factory(self._spec(index), self._message, self._exited)

    async def _start_worker(self, replica: WorkerHandle) -> None:
        template = await self.keeper.template()
        if self.stopping or self.failed_reason is not None:
            raise OSError("the model is stopping or failed")
        await self._start_replica(replica, template)

    async def _start_replica(self, replica: WorkerHandle, template: TemplateHandle | None) -> None:
        if template is not None:
            try:
                await replica.start(template)
                return
            except ForkError as exc:
                log_event(log, "worker.fork_failed", logging.WARNING, model=self.model,
                          replica=replica.index, error=str(exc))
        await replica.start()

    def _template_load_failed(self, reason: str, fatal: bool) -> float | None:
        """The template could not load the model: a load failure (None: the model FAILED)."""
        for slot in self.slots:
            slot.last_load_error = reason
        metrics.count_restart(self.model, "load_failed")
        self.load_failures, delay, give_up = decide_load_failure(
            self.load_failures, app_not_found=fatal, load_retries=self.config.load_retries,
            backoff_cap_s=self.config.restart_backoff_max_s)
        if give_up is not None:
            self.fail(self._give_up_reason(give_up, reason))
        return delay

    def _schedule_start(self, slot: Slot, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        slot.restart_timer = loop.call_later(delay_s, self._start_spawn, slot)

    # --- what workers say -------------------------------------------------------------------

    def _message(self, replica: WorkerHandle, message: Any) -> None:
        if isinstance(message, Progress):
            replica.reporting = True
            self._on_progress(replica, message)
        elif isinstance(message, BatchDone | ProbeDone):
            self.slots[replica.index].crash_streak = 0
            if isinstance(message, BatchDone):
                self.recycler.served(replica, message)  # its wear: requests, time, memory
            self._on_done(replica, message)
        elif isinstance(message, Ready):
            self._replica_ready(replica, message)
        elif isinstance(message, LoadFailed):
            error = f"{message.stage}: {message.error}"
            self.slots[replica.index].last_load_error = error
            log_event(log, "worker.load_failed", logging.ERROR, model=self.model,
                      replica=replica.index, pid=replica.pid, stage=message.stage,
                      error=message.error, traceback=message.traceback)

    def _replica_ready(self, replica: WorkerHandle, message: Ready) -> None:
        if replica.state is not ReplicaState.STARTING:
            return
        replica.state = ReplicaState.READY
        replica.ready_at = time.monotonic()
        replica.schema = message.schema
        replica.device = message.device
        replica.timings_ms = {**replica.timings_ms, **message.timings_ms}
        self.load_failures = 0
        self.ever_ready = True
        if replica is self.slots[replica.index].successor:
            self.recycler.take_over(self.slots[replica.index])
        self.slots[replica.index].rss_bytes = process_rss(replica.pid) if replica.pid else None
        if self.schema_callback is not None:
            self.schema_callback(message.schema)
        metrics.set_startup(self.model, replica.timings_ms)
        log_event(log, "worker.ready", model=self.model, replica=replica.index, pid=replica.pid,
                  device=message.device, startup_ms=message.timings_ms,
                  since_spawn_ms=round((replica.ready_at - replica.started_at) * 1000, 1))
        self._on_ready(replica)

    def _exited(self, replica: WorkerHandle, returncode: int) -> None:
        slot = self.slots[replica.index]
        if self.recycler.exited(slot, replica, returncode):  # a successor or a retiring worker
            return
        reason = replica.kill_reason
        desc = describe_exit(returncode) + (f", killed: {reason}" if reason else "")
        desc += f" ({replica.kill_detail})" if replica.kill_detail else ""
        slot.last_exit, slot.last_exit_at = desc, time.time()
        level = logging.INFO if self.stopping else logging.WARNING if reason else logging.ERROR
        log_event(log, "worker.exit", level, model=self.model, replica=replica.index,
                  pid=replica.pid, exit_code=returncode, exit=desc, killed_for=reason)
        self._on_lost(replica, desc)
        if self.stopping or self.failed_reason is not None:
            return
        decision = decide_restart(
            reason, was_ready=replica.ready_at is not None,
            app_not_found=returncode in PERMANENT_EXITS, crash_streak=slot.crash_streak,
            load_failures=self.load_failures, load_retries=self.config.load_retries,
            backoff_cap_s=self.config.restart_backoff_max_s)
        metrics.count_restart(self.model, decision.label)
        slot.crash_streak, self.load_failures = decision.crash_streak, decision.load_failures
        self.recycler.adopt(slot)  # a recycle's successor, if one is starting, takes the slot
        if decision.give_up is not None:
            why = slot.last_load_error or slot.last_exit or "the worker exited while loading"
            self.fail(self._give_up_reason(decision.give_up, why))
        elif decision.delay_s is not None:
            self._schedule_start(slot, decision.delay_s)

    def _give_up_reason(self, give_up: GiveUp, why: str) -> str:
        if give_up is GiveUp.APP_NOT_FOUND:
            return f"the app '{self.config.app}' cannot be loaded: {why}"
        return f"loading failed {self.load_failures} times in a row; last: {why}"

    def fail(self, reason: str) -> None:
        """Mark the model FAILED: no more restarts until ``restart()``."""
        self.failed_reason = reason
        for slot in self.slots:
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
                slot.restart_timer = None
        for replica in self.replicas():
            replica.kill(KillReason.MODEL_FAILED)
        asyncio.get_running_loop().create_task(self.keeper.stop())
        log_event(log, "model.failed", logging.ERROR, model=self.model, reason=reason)
        self._on_failed(reason)

    # --- the watch loop ------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                self.kill_frozen()
                self.kill_frozen_template()
                self.kill_slow_loaders()
                if self.sample_rss():  # wear is judged on fresh readings only
                    self.recycler.recycle_worn(self.slots, quiet=self.state is ModelState.READY)
            except Exception:  # the watch must outlive any one bad step
                log.exception("supervisor watch step failed", extra={"model": self.model})

    def kill_frozen(self) -> None:
        """An idle worker sends a heartbeat every loop turn, and a busy one whose model
        reports progress sends each report: silence from either means it is frozen."""
        now = time.monotonic()
        for replica in self.replicas():
            watched = replica.idle or (replica.reporting and replica.state is ReplicaState.BUSY)
            if watched and now - replica.last_seen > self.config.heartbeat_timeout_s:
                replica.kill(KillReason.HEARTBEAT)

    def kill_frozen_template(self) -> None:
        """The template sends a heartbeat every idle turn too: silence means it is frozen."""
        self.keeper.kill_if_frozen(self.config.heartbeat_timeout_s)

    def kill_slow_loaders(self) -> None:
        now = time.monotonic()
        for replica in self.replicas():
            starting = replica.state is ReplicaState.STARTING
            if starting and now - replica.started_at > self.config.load_timeout_s:
                replica.kill(KillReason.LOAD_TIMEOUT)

    def sample_rss(self) -> bool:
        """Read each worker's RSS every RSS_INTERVAL_S; True when it did."""
        now = time.monotonic()
        if now - self._last_rss_at < RSS_INTERVAL_S:
            return False
        self._last_rss_at = now
        for slot in self.slots:
            replica = slot.replica
            pid = replica.pid if replica is not None and replica.alive else None
            slot.rss_bytes = process_rss(pid) if pid is not None else None
            metrics.set_worker_rss(self.model, slot.index, slot.rss_bytes)
        return True
