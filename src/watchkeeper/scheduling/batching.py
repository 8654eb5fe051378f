"""Batch assembly: which queued requests a free worker takes next. A pure function.

Runs in the front process, called by the scheduler (``scheduling.scheduler``) whenever a
worker is free and requests wait; no clock, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from watchkeeper.scheduling.pending import Pending

__all__ = ["Admit", "take_batch"]

#: ``admit(pending, bytes_already_in_batch)``: the bytes a request needs at the rung it
#: gets, or None when it does not fit now.
Admit = Callable[[Pending, int], "int | None"]


def take_batch(queue: deque[Pending], max_size: int, admit: Admit | None = None) -> list[Pending]:
    """Take the next batch: up to ``max_size`` open requests that fit; a solo one goes alone.

    ``admit(pending, bytes_already_in_batch)`` says what a request needs at the rung it
    gets, or None when it does not fit now: it stays queued, in order, for a later batch.
    Requests whose future is already done (answered 504, client gone) are dropped.
    """
    batch: list[Pending] = []
    kept: list[Pending] = []
    used = 0
    while queue and len(batch) < max_size:
        pending = queue.popleft()
        if not pending.open:
            continue
        capped = pending.memory.batch_cap and len(batch) >= pending.memory.batch_cap
        if (pending.solo and batch) or capped:
            kept.append(pending)
            break
        need = admit(pending, used) if admit is not None else 0
        if need is None:
            if pending.open:
                kept.append(pending)
            continue
        batch.append(pending)
        used += need
        max_size = min(max_size, pending.memory.batch_cap or max_size)
        if pending.solo:
            break
    queue.extendleft(reversed(kept))
    return batch
