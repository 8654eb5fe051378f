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
- A template that dies ``MAX_TEMPLATE_DEATHS`` times after loading is given up: a model
  that breaks its template should not take its workers down with it again and again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from watchkeeper.front import metrics
from watchkeeper.logs import log_event
from watchkeeper.protocol.messages import WorkerSpec
from watchkeeper.supervision.template_handle import TemplateHandle, TemplateState

__all__ = ["TemplateKeeper", "MAX_TEMPLATE_DEATHS"]

log = logging.getLogger("watchkeeper.template")

MAX_TEMPLATE_DEATHS = 3


class TemplateKeeper:
    """One model's template: started on demand, replaced when it dies."""

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        load_timeout_s: float,
        on_load_failed: Callable[[str, bool], float | None],
        forking: bool = True,
    ) -> None:
        self.spec = spec
        self.load_timeout_s = load_timeout_s
        self.forking = forking
        self.running = True
        self.handle: TemplateHandle | None = None
        self.fork_off_reason: str | None = None if forking else "turned off, or a GPU model"
        self.deaths = 0
        self._on_load_failed = on_load_failed
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def start(self) -> None:
        """Start keeping a template (again, after a stop or a FAILED model)."""
        if self.running and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._keep())

    async def restart(self) -> None:
        """Load afresh (an operator restart): a new template, its death count forgotten."""
        await self.stop()
        self.deaths = 0
        self.running = True
        self.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.handle is not None:
            self.handle.kill()
            try:
                await asyncio.wait_for(self.handle.wait_dead(), 5)
            except TimeoutError:
                log_event(log, "template.stuck", logging.ERROR, model=self.spec.model)
        self._notify()

    async def template(self) -> TemplateHandle | None:
        """A ready template to fork from, or None: spawn instead (forking off, or failing)."""
        handle = await self.planner() if self.forking else None
        return handle if handle is not None and handle.can_fork else None

    async def planner(self) -> TemplateHandle | None:
        """The ready template (forking or plan-only), or None when there is none to wait for."""
        while self.running and self._task is not None and not self._task.done():
            handle = self.handle
            if handle is not None and handle.state is TemplateState.READY and (
                    handle.can_fork or not self.forking):
                return handle
            self._changed.clear()
            await self._changed.wait()
        return None

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
        handle = self.handle = TemplateHandle(self.spec, plan_only=not self.forking)
        try:
            await handle.start()
        except OSError as exc:
            return self._on_load_failed(f"could not start the template: {exc}", False)
        state = await handle.wait_settled(self.load_timeout_s)
        if state is TemplateState.READY and self.forking and not handle.can_fork:
            self._stop_forking(f"forking is unsafe: {handle.fork_hazard}")
            handle.kill()  # it holds the model's weights: come back plan-only
            return 0.0
        self._notify()
        if state is TemplateState.READY:
            metrics.set_startup(self.spec.model, handle.timings_ms)
            await handle.wait_dead()
            self._notify()
            return self._died(handle)
        handle.kill()
        reason = handle.error or f"the template did not load within {self.load_timeout_s:.0f} s"
        return self._on_load_failed(reason, handle.failed_stage == "import")

    def _died(self, handle: TemplateHandle) -> float | None:
        self.deaths += 1
        log_event(log, "template.exit", logging.WARNING, model=self.spec.model, pid=handle.pid,
                  returncode=handle.poll(), deaths=self.deaths)
        if self.deaths >= MAX_TEMPLATE_DEATHS:
            self.running = False
            log_event(log, "template.given_up", logging.ERROR, model=self.spec.model,
                      deaths=self.deaths)
            return None
        return 0.0
