"""Memory in a worker process: peak measurement, out-of-memory detection, the hard limit.

Runs in worker processes. The environment they start with (glibc settings that make the
limit and the peak meter see real use) is ``watchkeeper.supervision.worker_env``'s.

- :class:`PeakMeter` measures how much memory one batch needed at its peak: on CUDA
  ``max_memory_allocated`` since a reset; on CPU the resident-set high-water mark
  (``VmHWM``, reset through ``/proc/self/clear_refs``) above the size before the batch.
  The front learns per-shape needs from these peaks (``watchkeeper.scheduling.memory_ledger.Estimates``).
- :func:`is_out_of_memory` recognises the ways a model runs out of memory:
  ``MemoryError``, ``torch.cuda.OutOfMemoryError``, and allocator errors of torch
  (CPU) and OpenCV that arrive as other exception types.
- :func:`apply_limit` caps the worker's address space (``RLIMIT_AS``) at its size after
  warm-up plus ``memory_limit_mb``, so an allocation past it fails with a real
  MemoryError instead of the kernel's OOM killer taking the process.
- :class:`DeviceMemoryGauge` reads the device memory the worker holds (CUDA: its caching
  allocator's ``memory_reserved``; nothing on CPU) at most once per ``interval_s``; the
  reading goes with the batch's result to the front, which recycles a worker whose device
  memory keeps growing (``watchkeeper.supervision.recycling``).
"""

from __future__ import annotations

import gc
import re
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DeviceMemoryGauge", "PeakMeter", "apply_limit", "is_out_of_memory", "oom_details",
           "release_memory", "rss_bytes"]

_STATUS_FIELD = re.compile(rb"^(VmHWM|VmRSS|VmSize):\s+(\d+) kB", re.M)
_OOM_TEXT = ("out of memory", "can't allocate memory", "insufficient memory",
             "cannot allocate memory", "failed to allocate")


def _status() -> dict[bytes, int]:
    try:
        with open("/proc/self/status", "rb") as f:
            text = f.read()
    except OSError:
        return {}
    return {name: int(kb) * 1024 for name, kb in _STATUS_FIELD.findall(text)}


def rss_bytes() -> int:
    return _status().get(b"VmRSS", 0)


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakMeter:
    """Measures one batch's peak memory above what the process held before it."""

    def __init__(self, device: str) -> None:
        torch = sys.modules.get("torch")
        self._cuda = torch if device.startswith("cuda") and torch is not None else None
        self._device = device
        self._base = 0
        self._valid = False

    def start(self) -> None:
        if self._cuda is not None:
            self._cuda.cuda.reset_peak_memory_stats(self._device)
            self._base = self._cuda.cuda.memory_allocated(self._device)
            self._valid = True
        else:
            self._valid = _reset_high_water_mark()
            self._base = rss_bytes()

    def peak(self) -> int | None:
        """Bytes above the start at the peak (None where it cannot be measured)."""
        if not self._valid:
            return None
        if self._cuda is not None:
            return max(0, int(self._cuda.cuda.max_memory_allocated(self._device)) - self._base)
        return max(0, _status().get(b"VmHWM", 0) - self._base)


class DeviceMemoryGauge:
    """The device memory this worker holds, read at most once per ``interval_s`` (each read
    builds the allocator's whole statistics dict): None on CPU, without torch, or between
    readings."""

    def __init__(self, device: str, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        torch = sys.modules.get("torch")
        self._cuda = torch if device.startswith("cuda") and torch is not None else None
        self._device = device
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None

    def read(self) -> int | None:
        """Bytes reserved on the device now, when a reading is due; else None."""
        if self._cuda is None:
            return None
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            return None
        self._last = now
        return int(self._cuda.cuda.memory_reserved(self._device))


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(t in text for t in _OOM_TEXT)


def release_memory(device: str) -> None:
    """Give back what a failed batch held: Python garbage, and CUDA's cache."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and device.startswith("cuda"):
        torch.cuda.empty_cache()


def apply_limit(limit_mb: float | None) -> int | None:
    """Cap the address space at its current size + ``limit_mb``; the cap in bytes."""
    if not limit_mb:
        return None
    cap = _status().get(b"VmSize", 0) + int(limit_mb * 2**20)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return cap


def oom_details(meter: PeakMeter, rss_at_ready: int, limit_mb: float | None) -> dict[str, Any]:
    """What the front needs after an OOM: the peak seen, and whether to recycle us."""
    rss = rss_bytes()
    grown = rss - rss_at_ready
    recycle = bool(limit_mb) and grown > 0.5 * (limit_mb or 0) * 2**20
    return {"peak_bytes": meter.peak(), "rss_bytes": rss, "grown_bytes": grown, "recycle": recycle}
