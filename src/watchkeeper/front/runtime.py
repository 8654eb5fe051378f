"""The front process's core: every model service, the job runner and the resource monitor,
started and stopped in order, and the health report built from their cached state.

Runs in the front process, on the event loop uvicorn runs. Nothing here blocks: health
answers are assembled from state kept up to date by the supervisors, probers and the
resource monitor, so they stay fast however busy the models are.

Shutdown, in order (each step bounded; ``watchkeeper.front.server`` starts it on the first
signal): stop taking requests and jobs; let accepted requests and running jobs finish
within ``grace_period_s``; fail what is left with 503 (jobs go back to the queue of the
store, to run after the restart); stop the workers (Stop, then SIGKILL after
``STOP_TIMEOUT_S``); close the job store and release the data dir; stop the resource monitor.

The drain is one task, started once (by the first signal, or by ``stop`` if no signal
came): every caller awaits that same task, so ``stop`` (uvicorn's lifespan end, which
comes as soon as no connection is open) waits for the grace period instead of cutting it
short. ``cut_grace`` (a second signal) ends the wait at once.

Health: a job store that takes no writes fails ``/health`` (``jobs.store`` says why); the
models still serve predictions, so ``/readyz`` does not change.

The web UI (``[ui] enabled``): a process of its own, kept by ``supervision.ui_keeper`` from
``start`` on (it waits for the models to settle before it starts the UI) and stopped at the
start of the drain. ``/health`` has its state under ``ui``; it never changes ``status`` or
``/readyz`` (the UI is not part of the API). Without ``[ui]`` there is no UI process at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from watchkeeper.config import Config
from watchkeeper.errors import NotFound
from watchkeeper.front import health
from watchkeeper.front.access import open_access
from watchkeeper.front.resources import ResourceMonitor, free_device_bytes, resource_status
from watchkeeper.front.service import ModelService
from watchkeeper.jobs.runner import JobRunner
from watchkeeper.logs import log_event
from watchkeeper.scheduling.memory_ledger import Ledgers
from watchkeeper.supervision.ui_keeper import UiKeeper

__all__ = ["Runtime"]

log = logging.getLogger("watchkeeper.runtime")


class Runtime:
    """All served models of one front process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.keys = open_access(config.server)  # first: a refusal starts nothing
        level = config.server.log_level
        self.ledgers = Ledgers(config.server.memory_budget_fraction, free_device_bytes)
        self.services = {
            name: ModelService(name, cfg, log_level=level, ledgers=self.ledgers,
                               cache_dir=config.server.cache_dir)
            for name, cfg in config.models.items()
        }
        server = config.server
        self.jobs = JobRunner(config.jobs, server.data_dir, self.service, list(self.services))
        self.monitor = ResourceMonitor([server.data_dir, server.cache_dir])
        self.started_at = time.time()
        self.shutting_down = False
        self._drain: asyncio.Task[None] | None = None
        self._cut = asyncio.Event()
        self.ui = UiKeeper(config.ui, server, gate=self._models_settled) if config.ui.enabled else None

    async def start(self) -> None:
        for path in (self.config.server.data_dir, self.config.server.cache_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.monitor.start()
        await asyncio.gather(*(s.start() for s in self.services.values()))
        await self.jobs.start()
        if self.ui is not None:
            self.ui.start()
        log_event(log, "server.start", models=sorted(self.services))

    def _models_settled(self) -> bool:
        """No model is still loading its first replica: the web UI may start (``UiKeeper``)."""
        return all(s.state.value != "starting" for s in self.services.values())

    async def drain(self) -> None:
        """Refuse new work; give accepted requests and running jobs ``grace_period_s``;
        fail the rest (503). Started once: a second call awaits the same drain."""
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_once())
        await asyncio.shield(self._drain)

    def cut_grace(self) -> None:
        """Stop waiting for the grace period (a second signal): fail what is left now."""
        self._cut.set()

    async def _drain_once(self) -> None:
        self.shutting_down = True
        self.jobs.drain()
        if self.ui is not None:
            self.ui.stop_soon()  # ``stop`` awaits it
        grace = self.config.server.grace_period_s
        log_event(log, "server.draining", grace_period_s=grace, jobs_running=len(self.jobs.active))
        drains = asyncio.create_task(self._drain_services(grace))
        cut = asyncio.create_task(self._wait_cut())
        await asyncio.wait({drains, cut}, return_when=asyncio.FIRST_COMPLETED)
        for waiting in (drains, cut):
            waiting.cancel()
        await asyncio.gather(drains, cut, return_exceptions=True)
        for service in self.services.values():
            service.fail_remaining()
        log_event(log, "server.drained", cut_short=self._cut.is_set())

    async def _drain_services(self, grace_s: float) -> None:
        """Every model's drain, each bounded by ``grace_s`` (``ModelService.drain``)."""
        await asyncio.gather(*(s.drain(grace_s) for s in self.services.values()))

    async def _wait_cut(self) -> None:
        await self._cut.wait()

    async def stop(self) -> None:
        await self.drain()
        if self.ui is not None:
            await self.ui.stop()
        await asyncio.gather(*(s.stop() for s in self.services.values()))
        await self.jobs.stop()
        await self.monitor.stop()
        log_event(log, "server.stop")

    def service(self, name: str) -> ModelService:
        try:
            return self.services[name]
        except KeyError:
            raise NotFound(
                f"no model named '{name}' (served here: {', '.join(sorted(self.services)) or 'none'})"
            ) from None

    # --- health --------------------------------------------------------------------

    def watch_problem(self) -> str | None:
        """Why the systemd watchdog must not be fed (``front.systemd_notify``): a model whose
        supervisor's watch task is not running; None when every watch runs."""
        for name, service in self.services.items():
            if not service.supervisor.watching():
                return f"the supervisor watch of model '{name}' is not running"
        return None

    def model_states(self) -> dict[str, str]:
        return {name: s.state.value for name, s in self.services.items()}

    def ready(self) -> tuple[bool, dict[str, str], list[str]]:
        """Ready when every model serves and none has a full queue; the states; the full."""
        states = self.model_states()
        overloaded = sorted(name for name, s in self.services.items() if s.overloaded)
        ready = health.is_ready(states, self.shutting_down, overloaded=bool(overloaded))
        return ready, states, overloaded

    def jobs_health(self, disks: Any) -> dict[str, Any]:
        """The job store's part of /health: jobs per state, whether submits are taken, and
        the store itself (writable, or why not; its size; its oldest queued job's age)."""
        data_dir = str(self.config.server.data_dir)
        free = next((d.free_bytes / 2**20 for d in disks if d.path == data_dir), None)
        wanted = self.config.jobs.min_free_disk_mb
        writable = self.jobs.health.writable
        return {
            "counts": self.jobs.counts,
            "running_here": len(self.jobs.active),
            "accepting": not self.shutting_down and writable and (free is None or free >= wanted),
            "data_dir_free_mb": None if free is None else round(free, 1),
            "min_free_disk_mb": wanted,
            "store": self.jobs.health.view(),
        }

    def health(self) -> dict[str, Any]:
        """The full report for ``GET /health``; its ``status`` is ok, degraded or fail."""
        snapshot = self.monitor.snapshot
        res_status, res_reasons = resource_status(snapshot) if snapshot else ("ok", [])
        models = {name: s.health() for name, s in self.services.items()}
        states = {name: m["state"] for name, m in models.items()}
        overloaded = any(s.overloaded for s in self.services.values())
        status = health.overall_status(states, res_status, self.shutting_down, overloaded)
        if not self.jobs.health.writable:
            status = "fail"  # jobs accepted now could not be kept: jobs.store.reason says why
        body = {
            "status": status,
            "checked_at": time.time(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "shutting_down": self.shutting_down,
            "models": models,
            "jobs": self.jobs_health(snapshot.disks if snapshot else ()),
            "resources": {
                "status": res_status,
                "reasons": res_reasons,
                "memory_budgets": self.ledgers.to_list(),
                **(snapshot.to_dict() if snapshot else {}),
            },
        }
        if self.ui is not None:
            body["ui"] = self.ui.view()
        return body
