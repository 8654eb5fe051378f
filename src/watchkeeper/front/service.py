"""One served model: its supervisor, scheduler, prober and quarantine, behind one facade.

Runs in the front process. The HTTP layer calls ``predict``, ``describe`` and ``health``;
nothing here knows about HTTP. Params are checked in the front against the JSON schema the
worker reported (a quick 422 without queueing); the worker checks again with pydantic.

A request's deadline starts when it arrives and covers everything: its plan (the template's
ladder for its params, waited for at most what is left of the deadline and
``PLAN_TIMEOUT_S``), its wait in the queue and its run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import fastjsonschema

from watchkeeper.config import DEFAULT_CACHE_DIR, ModelConfig
from watchkeeper.errors import (
    DeadlineExceeded,
    InvalidInput,
    Unavailable,
    WatchkeeperError,
    error_from_type,
)
from watchkeeper.front import metrics
from watchkeeper.logs import log_event
from watchkeeper.protocol.messages import PROFILE_SETS_KEY, ModelSchema, not_together
from watchkeeper.scheduling.admission import Admission
from watchkeeper.scheduling.memory_ledger import Ledger, Ledgers, Rung, shape_key
from watchkeeper.scheduling.pending import MemoryPlan, Outcome, Pending, RunListener
from watchkeeper.scheduling.quarantine import Quarantine
from watchkeeper.scheduling.scheduler import Scheduler
from watchkeeper.supervision.prober import Prober
from watchkeeper.supervision.supervisor import ModelState, Supervisor
from watchkeeper.supervision.template_handle import ForkError, TemplateState
from watchkeeper.supervision.worker_handle import WorkerHandle

__all__ = ["ModelService", "MAX_PLANS"]

log = logging.getLogger("watchkeeper.service")

#: Ladders remembered per model (one per distinct params; least recently used go first).
MAX_PLANS = 4096


class ModelService:
    """Everything the front runs for one configured model."""

    def __init__(self, name: str, config: ModelConfig, *, log_level: str = "info",
                 ledgers: Ledgers | None = None, cache_dir: Path = Path(DEFAULT_CACHE_DIR)) -> None:
        self.name = name
        self.config = config
        self._ledgers = ledgers
        self._plans: OrderedDict[str, list[Rung]] = OrderedDict()
        self.admission = Admission(name, self._ledger_for)
        self.schema: ModelSchema | None = None
        self._check_params: Any = None
        self.quarantine = Quarantine(config.quarantine_s)
        self.requests = metrics.requests_of(name)  # answered ones are counted by the HTTP layer
        self.supervisor = Supervisor(
            name,
            config,
            log_level=log_level,
            on_ready=lambda replica: self.scheduler.dispatch(),
            on_done=lambda replica, message: self.scheduler.on_done(replica, message),
            on_lost=lambda replica, desc: self.scheduler.on_replica_lost(replica, desc),
            on_failed=lambda reason: self.scheduler.fail_all(self._failed_error()),
            on_progress=lambda replica, message: self.scheduler.on_progress(replica, message),
            cache_dir=cache_dir,
        )
        self.supervisor.schema_callback = self._set_schema
        self.scheduler = Scheduler(
            name,
            max_queue=config.max_queue,
            max_batch_size=1,  # raised to the model's own limit once a worker reports it
            max_wait_ms=config.max_wait_ms,
            refill_wait_ms=config.refill_wait_ms,
            quarantine=self.quarantine,
            replicas=self.supervisor.replicas,
            on_outcome=self._observe,
            admission=self.admission if config.memory_admission else None,
        )
        self.supervisor.recycler.queue_depth = lambda: self.scheduler.depth  # a quiet moment
        self.prober = Prober(
            name,
            interval_s=config.probe_interval_s,
            timeout_s=config.timeout_s,
            scheduler=self.scheduler,
            supervisor=self.supervisor,
            has_probe=lambda: bool(self.schema and self.schema.has_probe),
        )

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        await self.supervisor.start()
        self.prober.start()

    async def drain(self, timeout_s: float) -> None:
        """Stop taking requests and wait up to ``timeout_s`` for those accepted to finish."""
        self.scheduler.close()
        deadline = time.monotonic() + timeout_s
        while not self.scheduler.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def fail_remaining(self) -> None:
        """The end of a shutdown's grace period: whatever has not finished gets 503."""
        self.scheduler.close()
        self.scheduler.fail_all(
            Unavailable("the server is shutting down", suggestion="Retry on another instance.",
                        retry_after_s=5)
        )

    async def stop(self) -> None:
        await self.prober.stop()
        self.fail_remaining()
        await self.supervisor.stop()

    async def restart(self) -> None:
        self.admission.estimates.clear()
        self._plans.clear()
        await self.supervisor.restart()

    @property
    def state(self) -> ModelState:
        return self.supervisor.state

    @property
    def overloaded(self) -> bool:
        """The queue is full: new requests get 429 (and /readyz says so)."""
        return self.scheduler.depth >= self.config.max_queue

    # --- requests ------------------------------------------------------------------

    async def predict(
        self, request_id: str, inputs: dict[str, Any], params: dict[str, Any], timeout_s: float,
        allow_degrade: bool = True,
    ) -> Outcome:
        """Queue one request and wait for its answer until its deadline."""
        deadline = time.monotonic() + timeout_s
        pending = await self.submit(request_id, inputs, params, timeout_s, allow_degrade,
                                    deadline=deadline)
        return await self.outcome(pending, timeout_s)

    async def submit(
        self, request_id: str, inputs: dict[str, Any], params: dict[str, Any], timeout_s: float,
        allow_degrade: bool = True, *, listener: RunListener | None = None,
        max_runs: int | None = None, deadline: float | None = None,
    ) -> Pending:
        """Check and queue one request (a job's runs alone, told to ``listener``), due at
        ``deadline`` (``time.monotonic()``; default: ``timeout_s`` from now)."""
        deadline = deadline if deadline is not None else time.monotonic() + timeout_s
        self.refuse_if_failed()
        self.check_params(params)
        ladder = await self.plan(params, deadline, timeout_s)
        loop = asyncio.get_running_loop()
        pending = Pending(self.name, request_id, inputs, params, deadline, loop.create_future(),
                          model_deadline=timeout_s >= self.config.timeout_s,
                          memory=MemoryPlan(ladder, allow_degrade),
                          listener=listener, max_runs=max_runs, solo=listener is not None)
        self.scheduler.submit(pending)
        return pending

    async def outcome(self, pending: Pending, timeout_s: float) -> Outcome:
        """Wait for a queued request's answer; DeadlineExceeded after ``timeout_s``.

        A timer fails the future at its deadline (cheaper than ``asyncio.wait_for``, which
        wraps every request in a second future).
        """
        left = max(0.0, pending.deadline - time.monotonic())
        timer = asyncio.get_running_loop().call_later(left, self._expire, pending, timeout_s)
        try:
            return await pending.future
        finally:
            timer.cancel()

    def cancel(self, pending: Pending, grace_s: float) -> None:
        """Stop a submitted request: dropped if queued; if running, its worker is asked to
        stop and SIGKILLed (reason ``cancel``) when it has not within ``grace_s``."""
        self.scheduler.cancel(pending, grace_s)

    def _expire(self, pending: Pending, timeout_s: float) -> None:
        waited = "queued" if pending.started_at is None else "running"
        pending.fail(DeadlineExceeded(
            f"model '{self.name}' did not answer within {timeout_s:.1f} s (it was {waited})",
            details={"timeout_s": timeout_s, "phase": waited},
        ))

    async def plan(self, params: dict[str, Any], deadline: float, timeout_s: float) -> list[Rung]:
        """The request's ladder from the model's template (cached per params), within the
        request's deadline: DeadlineExceeded when planning used it up. Without a template
        that answers (none, frozen, dead), the params alone."""
        handle = self.supervisor.keeper.handle
        if handle is None or handle.state is not TemplateState.READY or not handle.plans:
            return [Rung(params)]
        key = shape_key(params)
        ladder = self._plans.get(key)
        if ladder is not None:
            return ladder
        try:
            planned = await handle.plan(params, deadline - time.monotonic())
        except (ForkError, TimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"model '{self.name}' did not answer within {timeout_s:.1f} s (it was being planned)",
                    details={"timeout_s": timeout_s, "phase": "planning"}) from None
            log_event(log, "plan.failed", logging.WARNING, model=self.name,
                      error=str(exc) or "no answer in time")
            return [Rung(params)]
        if planned.error is not None:
            info = planned.error
            raise error_from_type(info.type, info.message, details=info.details)
        ladder = [Rung(p, estimate) for p, estimate in planned.rungs] or [Rung(params)]
        self._plans[key] = ladder
        while len(self._plans) > MAX_PLANS:
            self._plans.popitem(last=False)
        return ladder

    def _ledger_for(self, replica: WorkerHandle) -> Ledger | None:
        if self._ledgers is None or replica.device is None:
            return None
        cfg = self.config
        return self._ledgers.get(self.name, replica.index, replica.device, cfg.memory_limit_mb,
                                 cfg.memory_budget_mb)

    def refuse_if_failed(self) -> None:
        if self.supervisor.failed_reason is not None:
            raise self._failed_error()

    def _failed_error(self) -> Unavailable:
        return Unavailable(
            f"model '{self.name}' is FAILED: {self.supervisor.failed_reason}",
            suggestion=f"Fix the cause, then POST /admin/models/{self.name}/restart.",
            retry_after_s=60,
        )

    def check_params(self, params: dict[str, Any]) -> None:
        """Check params against the model's published schema (when a worker has sent it): each
        field first, then the device profile's sets together (its ``anyOf``), so a bad field
        is named as such even where the profile has sets."""
        if self._check_params is None:
            return
        try:
            for check in self._check_params:
                check(params)
        except fastjsonschema.JsonSchemaValueException as exc:
            field = "params" + (exc.name or "data")[len("data") :]
            message = (exc.message or "").replace(exc.name or "data", field, 1)
            if exc.rule == "anyOf" and field == "params":  # the profile's sets (worker.profiles)
                message = self._not_together(params)
            raise InvalidInput(message, details={"errors": [{"field": field, "message": message}]}) from None

    def _not_together(self, params: dict[str, Any]) -> str:
        """Values each within bounds that none of the device profile's sets allows together."""
        assert self.schema is not None
        schema = self.schema.params
        names = {n for one in schema.get("anyOf", []) for n in one.get("properties", {})}
        return not_together({n: v for n, v in params.items() if n in names}, schema.get(PROFILE_SETS_KEY, ""))

    def _set_schema(self, schema: ModelSchema) -> None:
        if self.schema == schema:
            return
        self.schema = schema
        fields = {k: v for k, v in schema.params.items() if k != "anyOf"}
        sets = [fastjsonschema.compile({"anyOf": schema.params["anyOf"]})] if "anyOf" in schema.params else []
        self._check_params = [fastjsonschema.compile(fields), *sets]
        wanted = self.config.max_batch_size or schema.max_batch_size
        self.scheduler.max_batch_size = max(1, min(wanted, schema.max_batch_size))

    def _observe(self, pending: Pending, outcome: Outcome | None, error: WatchkeeperError | None) -> None:
        if outcome is not None:
            self.requests.ran(outcome.queue_ms / 1000, outcome.infer_ms / 1000, outcome.degraded)

    # --- views -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The public description for ``GET /v1/models/{name}``."""
        schema = self.schema
        return {
            "name": self.name,
            "state": self.state.value,
            "replicas": {"configured": len(self.supervisor.slots), "ready": self.supervisor.ready_count},
            "timeout_s": self.config.timeout_s,
            "max_queue": self.config.max_queue,
            "max_batch_size": self.scheduler.max_batch_size,
            "memory": self.admission.describe(self.supervisor.replicas()),
            "inputs_schema": schema.inputs if schema else None,
            "params_schema": schema.params if schema else None,
            "profile": schema.profile if schema else None,
            "reports_progress": schema.reports_progress if schema else False,
        }

    def health(self) -> dict[str, Any]:
        """This model's part of ``GET /health``."""
        sup = self.supervisor
        return {
            "state": sup.state.value,
            "reason": sup.failed_reason or sup.unready_reason,
            "ready_replicas": sup.ready_count,
            "load_failures": sup.load_failures,
            "replicas": [self._slot_health(slot) for slot in sup.slots],
            "queue_depth": self.scheduler.depth,
            "overloaded": self.overloaded,
            "in_flight": sum(len(f.items) for f in self.scheduler.inflight.values()),
            "memory": self.admission.describe(self.supervisor.replicas()),
            "quarantined_inputs": len(self.quarantine),
            "probe": self.prober.last.to_dict() if self.prober.last else None,
            "template": self._template_health(),
        }

    def _template_health(self) -> dict[str, Any]:
        keeper = self.supervisor.keeper
        handle = keeper.handle
        if handle is None:
            return {"state": "starting", "forking": keeper.forking}
        body = {
            "state": handle.state.value,
            "pid": handle.pid if not handle.dead else None,
            "forking": keeper.forking,
            "fork_off_reason": keeper.fork_off_reason,
            "plans": handle.plans,
            "startup_ms": handle.timings_ms,
            "error": handle.error,
            "deaths": keeper.deaths,
            "last_exit": keeper.last_exit,  # how the last loaded one ended: frozen, bad_frame...
            "last_exit_at": keeper.last_exit_at,
        }
        if keeper.given_up:
            body.update(state="off", forking=False, reason="the template died too often")
        return body

    def refresh_gauges(self) -> None:
        """Set the gauges that are read at scrape time from the current state."""
        states = [s.replica.state.value if s.replica else "dead" for s in self.supervisor.slots]
        metrics.set_model(self.name, self.state.value, states, self.scheduler.depth,
                          len(self.quarantine))
        metrics.set_model_limits(self.name, self.config.timeout_s, self.config.max_queue,
                                 self.scheduler.expected_wait_s(),
                                 self.admission.describe(self.supervisor.replicas()),
                                 self._ledgers.fraction if self._ledgers else None)

    @staticmethod
    def _slot_health(slot: Any) -> dict[str, Any]:
        replica = slot.replica
        alive = replica is not None and replica.alive
        return {
            "index": slot.index,
            "pid": replica.pid if alive else None,
            "state": replica.state.value if replica is not None else "dead",
            "restarts": max(0, slot.starts - 1),
            "last_exit": slot.last_exit,
            "last_exit_at": slot.last_exit_at,
            "last_load_error": slot.last_load_error,
            "rss_bytes": slot.rss_bytes if alive else None,
            "startup_ms": replica.timings_ms if replica is not None else {},
        }
