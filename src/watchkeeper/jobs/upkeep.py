"""The job store's upkeep: jobs counted per state, finished jobs deleted when they expire.

Runs in the front process, as one asyncio task of the job runner (``jobs.runner``); every
store call and file removal goes through the store's thread.
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
from watchkeeper.jobs.store_thread import StoreThread
from watchkeeper.logs import log_event

__all__ = ["COUNT_INTERVAL_S", "SWEEP_INTERVAL_S", "Upkeep"]

log = logging.getLogger("watchkeeper.jobs")

#: How often finished jobs past ``result_ttl_h`` are deleted (a quarter of it, if less).
SWEEP_INTERVAL_S = 600.0
#: How often the jobs per state are counted (for /health and /metrics).
COUNT_INTERVAL_S = 2.0


class Upkeep:
    """Counts and expiry for one job store."""

    def __init__(self, config: JobsConfig, store: SqliteJobStore, results: ResultFiles,
                 db: StoreThread) -> None:
        self.config = config
        self.store = store
        self.results = results
        self.db = db
        self.counts: dict[str, int] = {}

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Count jobs per state every ``COUNT_INTERVAL_S``; delete finished jobs (and their
        files) older than ``result_ttl_h`` every ``SWEEP_INTERVAL_S``; until ``stopping()``."""
        next_sweep = 0.0
        while not stopping():
            try:
                await self.refresh_counts()
                if time.monotonic() >= next_sweep:
                    ttl_s = self.config.result_ttl_h * 3600
                    next_sweep = time.monotonic() + min(SWEEP_INTERVAL_S, ttl_s / 4)
                    await self.sweep_expired()
            except Exception:
                log.exception("job housekeeping failed")
            await asyncio.sleep(COUNT_INTERVAL_S)

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
        """Jobs per state, for /health and /metrics."""
        self.counts = await self.db.call(self.store.counts)
        metrics.set_jobs(self.counts)
        return self.counts
