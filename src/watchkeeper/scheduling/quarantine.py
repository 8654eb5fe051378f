"""Poison-input quarantine: inputs that kill workers are refused for a while.

Runs in the front process. Pure bookkeeping with an injected clock, tested without processes.
An input is known by its fingerprint (:func:`fingerprint`); each worker death it causes
while running alone is recorded, and at ``max_deaths`` deaths it is refused until
``quarantine_s`` after the last one. A success forgives it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["fingerprint", "Quarantine", "Verdict"]


def _digest_bytes(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes:" + hashlib.blake2b(value, digest_size=16).hexdigest()
    return repr(value)


def fingerprint(model: str, inputs: dict[str, Any], params: dict[str, Any]) -> str:
    """A stable digest of one request's content (key order and file names do not matter)."""
    canonical = orjson.dumps(
        [model, inputs, params], default=_digest_bytes, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


@dataclass
class Verdict:
    deaths: int
    last_at: float  # clock time of the last death
    until: float  # clock time the quarantine ends (0 when not quarantined)

    def expired(self, now: float, quarantine_s: float) -> bool:
        return (self.until or self.last_at + quarantine_s) <= now


class Quarantine:
    """Counts worker deaths per input fingerprint and says which inputs are refused."""

    def __init__(
        self, quarantine_s: float, max_deaths: int = 2, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.quarantine_s = quarantine_s
        self.max_deaths = max_deaths
        self._clock = clock
        self._entries: dict[str, Verdict] = {}

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        self._expire()
        return sum(1 for v in self._entries.values() if v.until)

    def record_death(self, fp: str) -> Verdict:
        """One more worker died running this input alone; returns its updated verdict."""
        now = self._clock()
        self._expire()
        verdict = self._entries.setdefault(fp, Verdict(0, now, 0.0))
        verdict.deaths += 1
        verdict.last_at = now
        if verdict.deaths >= self.max_deaths:
            verdict.until = now + self.quarantine_s
        return verdict

    def refused_for(self, fp: str) -> float:
        """Seconds this input stays refused (0 when it is not)."""
        verdict = self._entries.get(fp)
        if verdict is None or not verdict.until:
            return 0.0
        left = verdict.until - self._clock()
        if left <= 0:
            del self._entries[fp]
            return 0.0
        return left

    def forgive(self, fp: str) -> None:
        """The input ran fine: forget its deaths."""
        self._entries.pop(fp, None)

    def _expire(self) -> None:
        now = self._clock()
        stale = [fp for fp, v in self._entries.items() if v.expired(now, self.quarantine_s)]
        for fp in stale:
            del self._entries[fp]
