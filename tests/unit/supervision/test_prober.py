"""The deep probe's decisions (``supervision.prober``) over stand-ins: when it runs, when it
skips, and that a busy replica is never counted as a failure. Real probes of real workers:
``tests/integration/test_health_truth.py``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from watchkeeper.protocol.messages import ProbeDone
from watchkeeper.supervision.prober import FAILURES_TO_UNREADY, Prober
from watchkeeper.supervision.worker_handle import ReplicaState


class Replica:
    def __init__(self, state: ReplicaState) -> None:
        self.state, self.pid = state, 1234

    @property
    def idle(self) -> bool:
        return self.state is ReplicaState.READY


class Supervisor:
    def __init__(self, *states: ReplicaState) -> None:
        self._replicas = [Replica(s) for s in states]
        self.unready_reason: str | None = None
        self.recycled: list[Any] = []

    @property
    def ready_count(self) -> int:
        return sum(1 for r in self._replicas if r.state in (ReplicaState.READY, ReplicaState.BUSY))

    def replicas(self) -> list[Replica]:
        return self._replicas

    def recycle(self, replica: Replica, reason: Any) -> None:
        self.recycled.append(replica)


class Scheduler:
    """Answers each probe at once with ``ok``, or never (then the probe times out)."""

    def __init__(self, ok: bool | None) -> None:
        self.ok = ok
        self.submitted = 0
        self.last_success_at: float | None = None

    def submit(self, pending: Any) -> None:
        self.submitted += 1
        pending.replica_pid = 1234
        if self.ok is not None:
            pending.future.set_result(ProbeDone(1, self.ok, None if self.ok else "wrong", 1.0))


def prober(supervisor: Supervisor, scheduler: Scheduler) -> Prober:
    return Prober("m", interval_s=30, timeout_s=0.05, scheduler=scheduler,  # type: ignore[arg-type]
                  supervisor=supervisor, has_probe=lambda: True)  # type: ignore[arg-type]


def test_a_busy_replica_is_skipped_never_failed() -> None:
    async def test() -> None:
        sup, sched = Supervisor(ReplicaState.BUSY), Scheduler(ok=None)
        p = prober(sup, sched)
        for _ in range(FAILURES_TO_UNREADY + 1):
            result = await p.probe_once()
            assert result is not None and result.ok and result.skipped == "every replica is busy"
        assert sched.submitted == 0 and p.failures == 0 and sup.unready_reason is None
    asyncio.run(test())


def test_a_free_replica_is_probed_and_failures_count() -> None:
    async def test() -> None:
        sup, sched = Supervisor(ReplicaState.BUSY, ReplicaState.READY), Scheduler(ok=False)
        p = prober(sup, sched)
        for _ in range(FAILURES_TO_UNREADY):
            result = await p.probe_once()
            assert result is not None and not result.ok and result.skipped is None
        assert sup.unready_reason is not None and sup.recycled
        sup._replicas[1].state = ReplicaState.BUSY  # busy now: the verdict stays as it was
        skipped = await p.probe_once()
        assert skipped is not None and not skipped.ok and skipped.skipped
        assert p.failures == FAILURES_TO_UNREADY and sched.submitted == FAILURES_TO_UNREADY
    asyncio.run(test())


def test_a_recent_real_success_skips_the_probe() -> None:
    async def test() -> None:
        sup, sched = Supervisor(ReplicaState.READY), Scheduler(ok=True)
        sched.last_success_at = time.monotonic()
        result = await prober(sup, sched).probe_once()
        assert result is not None and result.skipped == "a real request succeeded"
        assert sched.submitted == 0
    asyncio.run(test())
