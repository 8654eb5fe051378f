"""Memory admission: what a request needs, what a device has left, which rung fits.

Runs in the front process; pure bookkeeping, tested without processes.

- A request's **ladder** is its params followed by the model's ``degrade`` steps, each
  with the model's ``estimate_memory`` (or None). The template process computes it
  (``watchkeeper.worker.template``); this module only reads it.
- :class:`Estimates` learns what each params shape really needs from the peaks workers
  report: it jumps up on a surprise (and on an out-of-memory error) and decays slowly.
- :class:`Ledger` is one device's budget and what running batches have reserved of it.
- :func:`choose_rung` picks the first rung that fits; the scheduler sends the request
  with that rung's params and tells the client it was degraded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "Ledgers",
    "Rung",
    "Estimates",
    "Ledger",
    "choose_rung",
    "shape_key",
    "SURPRISE_MARGIN",
    "DECAY",
]

#: An estimate learned from a surprise is the peak seen times this (room for variance).
SURPRISE_MARGIN = 1.2
#: Per observation below the estimate, the estimate moves this much toward it.
DECAY = 0.98
#: Shapes remembered (least recently used are forgotten).
MAX_SHAPES = 10_000
#: A learned need not confirmed by a run for this long is forgotten (conditions change:
#: other models unload, a leak is recycled), so no params stay refused for good.
LEARNED_TTL_S = 600.0


@dataclass(frozen=True)
class Rung:
    """One step of a request's ladder: params to run and the model's estimate (bytes)."""

    params: dict[str, Any]
    estimate: int | None = None

    @property
    def key(self) -> str:
        return shape_key(self.params)


def shape_key(params: dict[str, Any]) -> str:
    """Params that need the same memory share a key (canonical JSON)."""
    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()


class Estimates:
    """Learned per-shape memory needs (bytes), from the peaks that workers measure."""

    def __init__(self, max_shapes: int = MAX_SHAPES, ttl_s: float = LEARNED_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._needs: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (need, when)
        self._max = max_shapes
        self._ttl_s = ttl_s
        self._clock = clock

    def get(self, key: str) -> int:
        entry = self._needs.get(key)
        if entry is None:
            return 0
        if self._clock() - entry[1] > self._ttl_s:
            del self._needs[key]
            return 0
        self._needs.move_to_end(key)
        return int(entry[0])

    def known(self, key: str) -> bool:
        """A need was learned for this shape (and has not expired)."""
        return key in self._needs and bool(self.get(key) or key in self._needs)

    def observe(self, key: str, peak: int) -> None:
        """A request of this shape peaked at ``peak`` bytes."""
        current = self.get(key)
        if not current or peak > current:
            self._set(key, peak * SURPRISE_MARGIN)
        else:
            self._set(key, max(float(peak), current * DECAY + peak * (1 - DECAY)))

    def raise_to(self, key: str, need: int) -> None:
        """An out-of-memory error: this shape needs at least ``need`` bytes."""
        self._set(key, max(float(need), float(self.get(key))))

    def clear(self) -> None:
        self._needs.clear()

    def _set(self, key: str, value: float) -> None:
        self._needs[key] = (value, self._clock())
        self._needs.move_to_end(key)
        while len(self._needs) > self._max:
            self._needs.popitem(last=False)

    def need(self, rung: Rung, budget: int | None = None) -> int:
        """What a rung needs: the model's estimate or what was learned, whichever is more.

        A learned need is capped at ``budget``: at worst the request waits to run alone,
        it is never refused outright on a measurement (only on the model's own estimate).
        """
        learned = self.get(rung.key)
        if budget is not None:
            learned = min(learned, budget)
        return max(rung.estimate or 0, learned)


@dataclass
class Ledger:
    """One device's memory budget (bytes) and what batches in flight have reserved."""

    name: str
    budget: int
    reserved: dict[int, int] = field(default_factory=dict)

    @property
    def used(self) -> int:
        return sum(self.reserved.values())

    @property
    def free(self) -> int:
        return self.budget - self.used

    def reserve(self, batch_id: int, need: int) -> None:
        if need > 0:
            self.reserved[batch_id] = need

    def release(self, batch_id: int) -> None:
        self.reserved.pop(batch_id, None)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.name, "budget_bytes": self.budget, "reserved_bytes": self.used,
                "free_bytes": self.free, "batches": len(self.reserved)}


def choose_rung(needs: list[int], free: int, start: int = 0, allow_degrade: bool = True) -> int | None:
    """The first rung from ``start`` whose need fits in ``free`` (None: none fits now).

    Without ``allow_degrade`` only rung ``start`` is considered.
    """
    last = len(needs) if allow_degrade else min(start + 1, len(needs))
    for index in range(start, last):
        if needs[index] <= free:
            return index
    return None


class Ledgers:
    """Every device's ledger in this front, created when first needed.

    Keys: ``model#i`` for a worker with its own ``memory_limit_mb`` (its own address space),
    ``model@device`` for a model with its own ``memory_budget_mb``, else the device
    (``cpu``, ``cuda:0``), shared by every model on it. A shared device's budget is
    ``fraction`` of what was free when its first worker became ready (weights loaded).
    """

    def __init__(self, fraction: float, free_bytes: Callable[[str], int]) -> None:
        self.fraction = fraction
        self._free_bytes = free_bytes
        self._ledgers: dict[str, Ledger] = {}

    def get(self, model: str, index: int, device: str, limit_mb: float | None,
            budget_mb: float | None) -> Ledger:
        if limit_mb:
            key, budget = f"{model}#{index}", (budget_mb or self.fraction * limit_mb) * 2**20
        elif budget_mb:
            key, budget = f"{model}@{device}", budget_mb * 2**20
        else:
            key, budget = device, 0.0
        ledger = self._ledgers.get(key)
        if ledger is None:
            budget = budget or self.fraction * self._free_bytes(device)
            ledger = self._ledgers[key] = Ledger(key, int(budget))
        return ledger

    def to_list(self) -> list[dict[str, Any]]:
        return [ledger.to_dict() for ledger in self._ledgers.values()]

