"""The job store's upkeep: its health checked, jobs counted per state, expired jobs deleted.

Runs in the front process, as one asyncio task of the job runner (``jobs.runner``); every
store call, file check and removal goes through the store's thread. Every
``CHECK_INTERVAL_S``:

- the store is checked (:meth:`Upkeep.check`): its file is still the one opened, no other
  process holds its write lock for more than ``LOCK_PROBE_TIMEOUT_S``, the results directory
  is still there and takes a new file; while the store is failing, a real synced commit is
  made too, so that a store that came back is seen writable again;
- jobs are counted per state, and the store's size and oldest queued job measured.

Every ``SWEEP_INTERVAL_S`` (a quarter of ``result_ttl_h`` if less) finished jobs past
``result_ttl_h`` are deleted with their files, unless the store is failing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from watchkeeper.config import JobsConfig
from watchkeeper.front import metrics
from watchkeeper.jobs.results import ResultFiles
from watchkeeper.jobs.sqlite_store import SqliteJobStore
from watchkeeper.jobs.store_health import STORE_ERRORS, StoreHealth
from watchkeeper.jobs.store_thread import StoreThread
from watchkeeper.logs import log_event

__all__ = ["CHECK_INTERVAL_S", "LOCK_PROBE_TIMEOUT_S", "SWEEP_INTERVAL_S", "Upkeep"]

log = logging.getLogger("watchkeeper.jobs")

#: How often finished jobs past ``result_ttl_h`` are deleted (a quarter of it, if less).
SWEEP_INTERVAL_S = 600.0
#: How often the store is checked and the jobs per state counted (for /health and /metrics):
#: the longest an idle server's /health may say ok about a store that fails.
CHECK_INTERVAL_S = 2.0
#: Longest a check waits for the store's write lock before it counts the store as locked.
LOCK_PROBE_TIMEOUT_S = 0.5


class Upkeep:
    """Checks, counts and expiry for one job store."""

    def __init__(self, config: JobsConfig, store: SqliteJobStore, results: ResultFiles,
                 db: StoreThread, health: StoreHealth) -> None:
        self.config = config
        self.store = store
        self.results = results
        self.db = db
        self.health = health
        self.counts: dict[str, int] = {}

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Check, count and sweep (see the module) until ``stopping()``."""
        next_sweep = 0.0
        while not stopping():
            try:
                await self.check()
                await self.refresh_counts()
                if self.health.writable and time.monotonic() >= next_sweep:
                    ttl_s = self.config.result_ttl_h * 3600
                    next_sweep = time.monotonic() + min(SWEEP_INTERVAL_S, ttl_s / 4)
                    await self.sweep_expired()
            except Exception:
                log.exception("job housekeeping failed")
            await asyncio.sleep(CHECK_INTERVAL_S)

    async def check(self) -> bool:
        """Check the store (see the module); True when it takes writes."""
        try:
            await self.db.call(self._check, not self.health.writable)
        except STORE_ERRORS as exc:
            self.health.failed(exc)
            return False
        self.health.passed()
        return self.health.writable

    def _check(self, write: bool) -> None:
        self.store.probe(write=write, lock_timeout_s=LOCK_PROBE_TIMEOUT_S)
        self.results.probe()

    async def sweep_expired(self) -> int:
        before = time.time() - self.config.result_ttl_h * 3600
        expired = await self.db.call(self.store.finished_before, before)
        for job_id in expired:
            await self.db.call(self.results.remove, job_id)
            await self.db.call(self.store.delete, job_id)
        if expired:
            log_event(log, "jobs.expired", removed=len(expired))
        return len(expired)

    async def refresh_counts(self) -> dict[str, int]:
        """Jobs per state, the store's size and its oldest queued job, for /health and /metrics."""
        self.counts = await self.db.call(self.store.counts)
        metrics.set_jobs(self.counts)
        self.health.measured(*await self.db.call(self.store.stats))
        return self.counts
