"""Admission by memory for one model: which requests may run now, at which rung.

Runs in the front process, called by the scheduler (no I/O, no awaits). A request comes
with its ladder (``memory.Rung``: its params, then each ``degrade`` step). Whenever a
batch is assembled for a replica, each request gets the first rung whose need fits in
what the replica's device has left (``memory.Ledger``), counting the requests already in
the batch; a request that fits no rung waits in the queue, and is refused (503
OutOfMemory, with params that would fit now) when its deadline leaves no time to wait.
A request whose smallest allowed rung needs more than the whole budget is refused at
once. Needs are the model's ``estimate_memory`` or, failing that, learned from the peaks
workers measure (``memory.Estimates``); an out-of-memory error raises them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from watchkeeper.errors import OutOfMemory
from watchkeeper.scheduling.memory_ledger import Estimates, Ledger, Rung, choose_rung
from watchkeeper.scheduling.pending import Pending
from watchkeeper.supervision.worker_handle import WorkerHandle

__all__ = ["MEASURE_EVERY", "Admission", "megabytes"]

#: Once a shape's need is learned, one batch in this many is measured again.
MEASURE_EVERY = 16


def megabytes(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


class Admission:
    """The memory gate of one model's scheduler."""

    def __init__(self, model: str, ledger_for: Callable[[WorkerHandle], Ledger | None]) -> None:
        self.model = model
        self.estimates = Estimates()
        self._ledger_for = ledger_for
        self.budget: int | None = None  # the smallest budget of a ledger seen (for submit)
        self.min_wait_s = 0.05  # the scheduler keeps this at a batch's usual service time
        self._batches = 0

    # --- on submit ---------------------------------------------------------------------

    def check_submit(self, pending: Pending) -> None:
        """Refuse now a request that could never fit, even with the whole budget free."""
        if self.budget is not None:
            self._check_budget(pending, self.budget)

    def _check_budget(self, pending: Pending, budget: int) -> None:
        """Only the model's own estimates refuse outright; a learned need makes a request
        wait to run alone (see ``admit``), so no measurement locks params out."""
        declared = [rung.estimate or 0 for rung in pending.memory.ladder]
        allowed = declared[pending.memory.rung : pending.memory.end]
        if allowed and min(allowed) > budget:
            raise self.refusal(pending, self.needs(pending), budget,
                               "more than the whole memory budget")

    def needs(self, pending: Pending) -> list[int]:
        return [self.estimates.need(rung) for rung in pending.memory.ladder]

    # --- assembling a batch --------------------------------------------------------------

    def admit(self, replica: WorkerHandle, pending: Pending, used_in_batch: int) -> int | None:
        """The need of the rung ``pending`` gets on ``replica`` now (None: it must wait)."""
        ledger = self._ledger_for(replica)
        if ledger is None:
            pending.memory.chosen, pending.memory.need = pending.memory.rung, 0
            return 0
        self.budget = ledger.budget if self.budget is None else min(self.budget, ledger.budget)
        needs = self.needs(pending)
        free = ledger.free - used_in_batch
        index = choose_rung(needs, free, pending.memory.rung, pending.memory.allow_degrade)
        smallest = pending.memory.end - 1
        declared = pending.memory.ladder[smallest].estimate or 0
        if index is None and ledger.used == used_in_batch == 0 and declared <= ledger.budget:
            # Only learned needs say nothing fits even on an empty device: run the smallest
            # allowed rung alone (holding the whole budget) rather than refuse forever.
            index = smallest
            needs = [*needs[:index], ledger.budget, *needs[index + 1 :]]
        if index is None:
            self._refuse_if_hopeless(pending, needs, free, ledger.budget)
            return None
        pending.memory.chosen, pending.memory.need = index, needs[index]
        if index > 0 and pending.memory.degrade_reason is None:
            pending.memory.degrade_reason = (
                f"memory: {self._describe(pending.memory.ladder[0])} needs {megabytes(needs[0])}, "
                f"{megabytes(max(free, 0))} of {megabytes(ledger.budget)} free on {ledger.name}"
            )
        return needs[index]

    def _refuse_if_hopeless(self, pending: Pending, needs: list[int], free: int, budget: int) -> None:
        """Fail a waiting request that can never fit, or whose deadline leaves no time."""
        try:
            self._check_budget(pending, budget)
        except OutOfMemory as exc:
            pending.fail(exc)
            return
        if pending.deadline - time.monotonic() < self.min_wait_s:
            pending.fail(self.refusal(pending, needs, free, "not enough memory free in time"))

    def refusal(self, pending: Pending, needs: list[int], free: int, why: str) -> OutOfMemory:
        fitting = [r for i, (r, n) in enumerate(zip(pending.memory.ladder, needs, strict=True))
                   if 0 < n <= max(free, 0) and i > pending.memory.rung]
        if fitting:
            suggestion = f"These params fit now: {fitting[0].params}."
        elif not pending.memory.allow_degrade and len(pending.memory.ladder) > 1:
            smallest = pending.memory.ladder[-1]
            suggestion = f"Allow degrading, or try smaller params such as {smallest.params}."
        else:
            suggestion = "Retry later, when fewer large requests are running."
        return OutOfMemory(
            f"model '{self.model}': {self._describe(pending.memory.ladder[pending.memory.rung])} needs "
            f"{megabytes(needs[pending.memory.rung])}: {why} ({megabytes(max(free, 0))} free)",
            suggestion=suggestion,
            retry_after_s=max(1.0, self.min_wait_s),
            details={"needs_bytes": needs, "free_bytes": max(free, 0)},
        )

    @staticmethod
    def _describe(rung: Rung) -> str:
        return ", ".join(f"{k}={v}" for k, v in rung.params.items()) or "the request"

    # --- after a batch -------------------------------------------------------------------

    def wants_measure(self, items: list[Pending]) -> bool:
        """Measure a batch's peak when a shape in it is not learned yet, and one batch in
        ``MEASURE_EVERY`` otherwise (each measurement costs the worker ~0.1 ms)."""
        self._batches += 1
        if self._batches % MEASURE_EVERY == 0:
            return True
        return any(not self.estimates.known(p.memory.ladder[p.memory.chosen].key) for p in items)

    def observe(self, items: list[Pending], peak_bytes: int | None) -> None:
        """Learn from a batch's measured peak (shared out evenly among its requests)."""
        if peak_bytes is None or not items:
            return
        share = peak_bytes // len(items)
        for pending in items:
            self.estimates.observe(pending.memory.ladder[pending.memory.chosen].key, share)

    def free_on(self, replica: WorkerHandle) -> int:
        ledger = self._ledger_for(replica)
        return ledger.free if ledger is not None else 0

    def out_of_memory(self, replica: WorkerHandle, pending: Pending, details: dict[str, Any],
                      batch_size: int) -> None:
        """A run of this rung ran out of memory: it needs more than was free, and more than
        we thought (a lone request: more than all that was free for it)."""
        rung = pending.memory.ladder[pending.memory.chosen]
        seen = int(details.get("peak_bytes") or 0) // max(1, batch_size)
        ledger = self._ledger_for(replica)
        free = ledger.free // max(1, batch_size) if ledger is not None else 0
        current = self.estimates.need(rung)
        self.estimates.raise_to(rung.key, max(seen, int(current * 1.5), free + 1))

    def reserve(self, replica: WorkerHandle, batch_id: int, need: int) -> None:
        ledger = self._ledger_for(replica)
        if ledger is not None:
            ledger.reserve(batch_id, need)

    def release(self, replica: WorkerHandle, batch_id: int) -> None:
        ledger = self._ledger_for(replica)
        if ledger is not None:
            ledger.release(batch_id)

    def describe(self, replicas: list[WorkerHandle]) -> list[dict[str, Any]]:
        ledgers = {id(led): led for r in replicas if (led := self._ledger_for(r)) is not None}
        return [led.to_dict() for led in ledgers.values()]
