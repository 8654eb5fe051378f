"""Keeps one model's template process alive, so workers are forked instead of loaded.

Runs in the front process, as one asyncio task per model. The keeper starts the template
(``watchkeeper.supervision.template_handle``), waits for it to load the model, and hands it out to
the supervisor for every worker start; when the template dies it starts another.

- A template that fails to load counts as a load failure of the model
  (``on_load_failed(reason, fatal)`` says how long to back off, or None once the model is
  FAILED; ``fatal`` when the app cannot even be imported).
- A template that reports forking unsafe (CUDA, threads) is replaced by a plan-only one
  (the class imported, never set up): workers are spawned the ordinary way from then on,
  and requests are still planned (``estimate_memory``, ``degrade``). GPU models and
  ``fork_from_template = false`` start plan-only.
- A template that stops answering is frozen: :meth:`TemplateKeeper.kill_if_frozen` (a step
  of the supervisor's watch loop) kills one silent for ``heartbeat_timeout_s``; a fork or a
  plan that times out does the same (``TemplateHandle.freeze``). It is replaced like one
  that died, and ``last_exit`` says why (``/health``, ``template.frozen`` in the logs,
  ``watchkeeper_template_restarts_total{reason="frozen"}``).
- A template that dies ``MAX_TEMPLATE_DEATHS`` times after loading is given up: a model
  that breaks its template should not take its workers down with it again and again.

Stopping (``stop``, and the first half of ``restart``) waits for the keeping task to end
before anything else: a restart then always starts a fresh task, whether or not waiting
for the old template's death had to yield (Python 3.12's ``wait_for`` does not when the
handle is dead already). Spawns waiting in :meth:`planner` through a restart go on waiting
for the new template.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from watchkeeper.front import metrics
from watchkeeper.logs import log_event
from watchkeeper.protocol.messages import PERMANENT_STAGES, WorkerSpec
from watchkeeper.supervision.template_handle import TemplateHandle, TemplateState
from watchkeeper.supervision.worker_handle import describe_exit

__all__ = ["MAX_TEMPLATE_DEATHS", "TEMPLATE_STOP_TIMEOUT_S", "TemplateFactory", "TemplateKeeper"]

log = logging.getLogger("watchkeeper.template")

MAX_TEMPLATE_DEATHS = 3
#: How long a stop waits for the keeping task to end, then for the killed template to exit.
TEMPLATE_STOP_TIMEOUT_S = 5.0

#: Makes the handle of a new template (``TemplateHandle`` itself; tests pass stand-ins).
TemplateFactory = Callable[[WorkerSpec, bool], TemplateHandle]


class TemplateKeeper:
    """One model's template: started on demand, replaced when it dies or freezes."""

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        load_timeout_s: float,
        on_load_failed: Callable[[str, bool], float | None],
        forking: bool = True,
        template_factory: TemplateFactory = TemplateHandle,
    ) -> None:
        self.spec = spec
        self.load_timeout_s = load_timeout_s
        self.forking = forking
        self.running = True
        self.handle: TemplateHandle | None = None
        self.fork_off_reason: str | None = None if forking else "turned off, or a GPU model"
        self.deaths = 0
        self.given_up = False  # it died MAX_TEMPLATE_DEATHS times: workers are spawned
        self.last_exit: str | None = None  # how the last loaded template ended, and why
        self.last_exit_at: float | None = None
        self._on_load_failed = on_load_failed
        self._factory = template_factory
        self._task: asyncio.Task[None] | None = None
        self._restarting = False
        self._changed = asyncio.Event()

    def start(self) -> None:
        """Start keeping a template (again, after a stop or a FAILED model)."""
        if self.running and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._keep())

    async def restart(self) -> None:
        """Load afresh (an operator restart): a new template, its death count forgotten."""
        self._restarting = True
        try:
            await self._end()
            self.deaths, self.given_up = 0, False
            self.running = True
            self.start()
        finally:
            self._restarting = False
            self._notify()

    async def stop(self) -> None:
        """Stop keeping: end the task, kill the template; spawns waiting get None."""
        self.running = False
        await self._end()
        self._notify()

    async def _end(self) -> None:
        task, handle = self._task, self.handle
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=TEMPLATE_STOP_TIMEOUT_S)
        if handle is not None:
            handle.kill("stopped")
            try:
                await asyncio.wait_for(handle.wait_dead(), TEMPLATE_STOP_TIMEOUT_S)
            except TimeoutError:
                log_event(log, "template.stuck", logging.ERROR, model=self.spec.model)

    async def template(self) -> TemplateHandle | None:
        """A ready template to fork from, or None: spawn instead (forking off, or failing)."""
        handle = await self.planner() if self.forking else None
        return handle if handle is not None and handle.can_fork else None

    async def planner(self) -> TemplateHandle | None:
        """The ready template (forking or plan-only), or None when there is none to wait for."""
        while self._keeping:
            handle = self.handle
            if handle is not None and handle.state is TemplateState.READY and (
                    handle.can_fork or not self.forking):
                return handle
            self._changed.clear()
            await self._changed.wait()
        return None

    @property
    def _keeping(self) -> bool:
        """A template is coming: the task runs, or a restart is about to start one."""
        task = self._task
        return self.running and (self._restarting or (task is not None and not task.done()))

    def kill_if_frozen(self, heartbeat_timeout_s: float) -> None:
        """A step of the supervisor's watch: kill a ready template silent for too long."""
        handle = self.handle
        if handle is not None and handle.silent_for(time.monotonic()) > heartbeat_timeout_s:
            handle.freeze(f"no heartbeat for {heartbeat_timeout_s:.1f} s")

    def _notify(self) -> None:
        self._changed.set()

    def _stop_forking(self, reason: str) -> None:
        self.forking = False
        self.fork_off_reason = reason
        log_event(log, "template.no_fork", logging.WARNING, model=self.spec.model, reason=reason)

    async def _keep(self) -> None:
        try:
            while self.running:
                delay = await self._run_one()
                if delay is None:
                    return
                await asyncio.sleep(delay)
        finally:
            self._notify()

    async def _run_one(self) -> float | None:
        """Run one template until it dies; the delay before the next, or None to stop."""
        handle = self.handle = self._factory(self.spec, not self.forking)
        try:
            await handle.start()
        except OSError as exc:
            return self._on_load_failed(f"could not start the template: {exc}", False)
        state = await handle.wait_settled(self.load_timeout_s)
        if state is TemplateState.READY and self.forking and not handle.can_fork:
            self._stop_forking(f"forking is unsafe: {handle.fork_hazard}")
            handle.kill("unsafe")  # it holds the model's weights: come back plan-only
            return 0.0
        self._notify()
        if state is TemplateState.READY:
            metrics.set_startup(self.spec.model, handle.timings_ms)
            await handle.wait_dead()
            self._notify()
            return self._died(handle)
        handle.kill("load_failed")
        reason = handle.error or f"the template did not load within {self.load_timeout_s:.0f} s"
        return self._on_load_failed(reason, handle.failed_stage in PERMANENT_STAGES)

    def _died(self, handle: TemplateHandle) -> float | None:
        self.deaths += 1
        returncode = handle.returncode if handle.returncode is not None else handle.poll()
        exit_desc = describe_exit(returncode) if returncode is not None else "gone"
        if handle.kill_reason is not None:
            exit_desc += f", killed: {handle.kill_reason}"
            exit_desc += f" ({handle.kill_detail})" if handle.kill_detail else ""
        self.last_exit, self.last_exit_at = exit_desc, time.time()
        reason = handle.kill_reason if handle.kill_reason in ("frozen", "bad_frame") else "exit"
        metrics.count_template_restart(self.spec.model, reason)
        log_event(log, "template.exit", logging.WARNING, model=self.spec.model, pid=handle.pid,
                  returncode=returncode, exit=exit_desc, deaths=self.deaths)
        if self.deaths >= MAX_TEMPLATE_DEATHS:
            self.running, self.given_up = False, True
            log_event(log, "template.given_up", logging.ERROR, model=self.spec.model,
                      deaths=self.deaths)
            return None
        return 0.0
