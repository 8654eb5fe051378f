"""The deep health check: a real canary inference per model, on a timer.

Runs in the front process as one asyncio task per model. Every ``probe_interval_s`` it
sends the model's probe through the normal queue to a real worker, which runs the model's
``probe()`` example and checks its output. The probe is skipped when a real request
succeeded within the interval (that already proved the model works), and when every
replica is busy: a probe queued behind a long job would time out and blame a worker that
is only working (a busy worker is watched by its request's deadline, and by its heartbeat
when it reports progress); the next turn probes once a replica is free. Two failures in a row
mark the model unready and recycle the worker that failed; while failing, it probes again
after ``RETRY_INTERVAL_S``, doubling per failure up to the interval, so a healed model is
ready again soon and a broken one is not recycled in a tight loop.

Health endpoints only read ``last``: they never run inference inline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from watchkeeper.errors import WatchkeeperError
from watchkeeper.front import metrics
from watchkeeper.logs import log_event
from watchkeeper.protocol.messages import ProbeDone
from watchkeeper.scheduling.pending import Kind, Pending
from watchkeeper.scheduling.scheduler import Scheduler
from watchkeeper.supervision.kill_reasons import KillReason
from watchkeeper.supervision.supervisor import Supervisor

__all__ = ["ProbeResult", "Prober", "FAILURES_TO_UNREADY", "RETRY_INTERVAL_S"]

log = logging.getLogger("watchkeeper.prober")

FAILURES_TO_UNREADY = 2
RETRY_INTERVAL_S = 1.0


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    at: float  # wall-clock time (time.time())
    latency_ms: float | None
    error: str | None = None
    skipped: str | None = None  # why no inference ran (a recent real success)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Prober:
    """Runs one model's probe on a timer and keeps the last result."""

    def __init__(
        self,
        model: str,
        *,
        interval_s: float,
        timeout_s: float,
        scheduler: Scheduler,
        supervisor: Supervisor,
        has_probe: Callable[[], bool],
    ) -> None:
        self.model = model
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.scheduler = scheduler
        self.supervisor = supervisor
        self.has_probe = has_probe
        self.failures = 0
        self.last: ProbeResult | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.next_delay_s())
            try:
                await self.probe_once()
            except Exception:  # a probe bug must not end the probing
                log.exception("probe loop step failed", extra={"model": self.model})

    def next_delay_s(self) -> float:
        """The interval, or while failing 1 s doubling per failure (so a broken model is
        recycled with back-off, and a healed one is ready again soon)."""
        if not self.failures:
            return self.interval_s
        return min(self.interval_s, RETRY_INTERVAL_S * 2 ** (self.failures - 1))

    async def probe_once(self) -> ProbeResult | None:
        """Probe now unless there is no point; returns the new result (None: not probed)."""
        if self.supervisor.ready_count == 0 or not self.has_probe():
            return None
        if not any(replica.idle for replica in self.supervisor.replicas()):
            return self._skip("every replica is busy")
        last_success = self.scheduler.last_success_at
        if not self.failures and last_success and time.monotonic() - last_success < self.interval_s:
            self.last = ProbeResult(True, time.time(), None, skipped="a real request succeeded")
            metrics.set_probe(self.model, True)
            return self.last
        result, replica_pid = await self._run()
        self._record(result, replica_pid)
        return result

    def _skip(self, why: str) -> ProbeResult:
        """No inference now; the verdict (and the failures in a row) stay what they were."""
        ok = self.last.ok if self.last is not None else True
        error = self.last.error if self.last is not None else None
        self.last = ProbeResult(ok, time.time(), None, error, skipped=why)
        return self.last

    async def _run(self) -> tuple[ProbeResult, int | None]:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = Pending(self.model, f"probe-{int(now * 1000)}", {}, {}, now + self.timeout_s,
                          loop.create_future(), kind=Kind.PROBE, solo=True)
        try:
            self.scheduler.submit(pending)
            done: ProbeDone = await asyncio.wait_for(pending.future, self.timeout_s)
        except (WatchkeeperError, TimeoutError) as exc:
            message = getattr(exc, "message", None) or f"no answer within {self.timeout_s:.1f} s"
            return ProbeResult(False, time.time(), None, message), pending.replica_pid
        result = ProbeResult(done.ok, time.time(), round(done.latency_ms, 2), done.error)
        return result, pending.replica_pid

    def _record(self, result: ProbeResult, replica_pid: int | None) -> None:
        self.last = result
        latency_s = None if result.latency_ms is None else result.latency_ms / 1000
        metrics.set_probe(self.model, result.ok, latency_s)
        if result.ok:
            self.failures = 0
            self.supervisor.unready_reason = None
            return
        self.failures += 1
        log_event(log, "probe.failed", logging.WARNING, model=self.model, error=result.error,
                  failures=self.failures)
        if self.failures >= FAILURES_TO_UNREADY:
            self.supervisor.unready_reason = f"deep probe failed {self.failures} times: {result.error}"
            self._recycle(replica_pid)

    def _recycle(self, replica_pid: int | None) -> None:
        for replica in self.supervisor.replicas():
            if replica.pid == replica_pid:
                self.supervisor.recycle(replica, KillReason.PROBE)
                return
