"""Recycling a worn worker without losing capacity: its successor is started first.

Runs in the front process, on its event loop, for the supervisor (``supervision.supervisor``),
which calls it from its watch loop (``recycle_worn``, after each RSS reading), with each
batch's result (``served``: its requests, time, params shape and device memory), when a
successor is ready (``take_over``) and when any worker exits (``exited``: it handles the
exits of retiring workers and successors, and hands the slots' own back to the supervisor).
What makes a worker worn is ``supervision.recycling``'s policy; this is the sequence:

1. A worn worker is found (one recycle at a time per model, none while a slot is starting),
   at a quiet moment: the model READY and its queue short (``queue_depth``, the scheduler's,
   wired by ``front.service``; ``recycling.quiet_enough``), or after the longest wait for one.
   ``worker.recycle`` is logged with the evidence and counted by cause; a successor is made
   for the same slot (``Slot.successor``) and started (forked from the template when there
   is one), while the old worker keeps serving.
2. The successor is ready: it takes the slot; the old worker becomes ``Slot.retiring``
   (``WorkerHandle.retiring``: the scheduler sends it no new work) and is sent Stop, which
   it reads after the batch it runs, if any: that batch is answered. If it has not exited
   after ``stop_timeout_s`` (the model's ``timeout_s`` and 5 s) it is frozen and SIGKILLed
   (reason ``heartbeat``; logged with ``recycle`` true); it is not restarted.
3. A successor that could not start, or died before it was ready, leaves the old worker in
   place, left alone for ``recycling.RETRY_AFTER_S``. If the old worker dies meanwhile, the
   supervisor gives its slot to the successor instead of starting another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from watchkeeper.front import metrics
from watchkeeper.logs import log_event
from watchkeeper.protocol.messages import BatchDone, Stop
from watchkeeper.supervision.kill_reasons import KillReason
from watchkeeper.supervision.recycling import Recycle, RecycleLimits, Recycling
from watchkeeper.supervision.slot import Slot
from watchkeeper.supervision.worker_handle import WorkerHandle, describe_exit

__all__ = ["Recycler"]

log = logging.getLogger("watchkeeper.supervisor")


class Recycler:
    """Replaces the worn workers of one model, each by a successor started first."""

    def __init__(self, model: str, config: Any, stop_timeout_s: float,
                 make_worker: Callable[[int], WorkerHandle],
                 start_worker: Callable[[WorkerHandle], Awaitable[None]],
                 on_lost: Callable[[WorkerHandle, str], None]) -> None:
        self.model = model
        self.recycling = Recycling(RecycleLimits.of(config))  # every worker's wear
        self.stop_timeout_s = stop_timeout_s  # how long a retiring worker has to exit
        self._make_worker = make_worker  # a handle for slot N (not started)
        self._start_worker = start_worker  # starts it; OSError if it cannot
        self._on_lost = on_lost  # the scheduler: what the worker ran is retried
        #: The model's queue depth (the scheduler's, set by ``front.service``; 0 unset).
        self.queue_depth: Callable[[], int] = lambda: 0

    def served(self, replica: WorkerHandle, done: BatchDone) -> None:
        """A worker answered a batch: its wear (requests, time per params shape, device memory)."""
        self.recycling.served(replica, len(done.results), done.infer_ms, done.shape, done.device_bytes)

    def recycle_worn(self, slots: Sequence[Slot], *, quiet: bool) -> None:
        """Start a successor for the first worn worker while ``quiet`` (the model READY) and
        the queue is short (or the worker has waited long enough for it), unless a start or a
        recycle is under way (one at a time: replicas never recycle together)."""
        if not quiet or any(s.spawning or s.successor or s.retiring for s in slots):
            return
        now, depth = time.monotonic(), self.queue_depth()
        for slot in slots:
            replica = slot.replica
            decision = self.recycling.check(replica, slot.rss_bytes, now, queue_depth=depth,
                                             workers=len(slots)) if replica else None
            if replica is not None and decision is not None:
                self._start_successor(slot, replica, decision)
                return

    def _start_successor(self, slot: Slot, replica: WorkerHandle, decision: Recycle) -> None:
        log_event(log, "worker.recycle", model=self.model, replica=slot.index, pid=replica.pid,
                  **decision.evidence())
        metrics.count_recycle(self.model, decision.cause.value)
        successor = slot.successor = self._make_worker(slot.index)
        asyncio.get_running_loop().create_task(self._start(slot, successor))

    async def _start(self, slot: Slot, successor: WorkerHandle) -> None:
        try:
            await self._start_worker(successor)
        except OSError as exc:
            log_event(log, "worker.recycle_failed", logging.WARNING, model=self.model,
                      replica=slot.index, error=str(exc))
            if successor is slot.successor:
                slot.successor = None
                self._hold(slot)
            return
        how = "forked" if successor.forked_from is not None else "spawned"
        log_event(log, "worker.start", model=self.model, replica=slot.index, pid=successor.pid,
                  how=how, recycle=True)

    def adopt(self, slot: Slot) -> None:
        """The slot's worker died while its successor starts: the successor takes the slot
        (and the restart the supervisor schedules finds it taken)."""
        if slot.successor is not None:
            slot.replica, slot.successor = slot.successor, None

    def take_over(self, slot: Slot) -> None:
        """The successor is ready: it takes the slot; the old worker finishes and stops."""
        old, slot.replica, slot.successor = slot.replica, slot.successor, None
        if old is None or not old.alive:
            return
        slot.retiring, old.retiring = old, True
        old.send(Stop())  # read after the batch it runs, if any: that batch is answered
        # A worker whose loop turns reads Stop within a heartbeat, and a batch it runs is
        # killed at its deadline: one still there after stop_timeout_s is frozen.
        asyncio.get_running_loop().call_later(self.stop_timeout_s, old.kill, KillReason.HEARTBEAT)

    def exited(self, slot: Slot, replica: WorkerHandle, returncode: int) -> bool:
        """A worker exited: its wear is forgotten. If it was a retiring worker, or a successor
        that died before it was ready, its exit is handled here (True); else the supervisor's."""
        self.recycling.forget(replica)
        if replica is slot.replica:
            return False
        desc = describe_exit(returncode)
        retired = replica is slot.retiring
        log_event(log, "worker.exit", logging.INFO if retired else logging.WARNING,
                  model=self.model, replica=slot.index, pid=replica.pid, exit_code=returncode,
                  exit=desc, killed_for=replica.kill_reason, recycle=True)
        self._on_lost(replica, desc)  # a batch it was running, if any, is retried
        if retired:
            slot.retiring = None
        elif replica is slot.successor:
            slot.successor = None
            self._hold(slot)
        return True

    def _hold(self, slot: Slot) -> None:
        if slot.replica is not None:
            self.recycling.hold(slot.replica, time.monotonic())
