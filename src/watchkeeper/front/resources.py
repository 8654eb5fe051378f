"""Memory, disk and GPU readings for ``/health``, and the RSS of worker processes.

Runs in the front process, which must stay small and never hang: nothing here imports
torch. GPU figures come from NVML (``pynvml``, from the ``nvidia-ml-py`` package, the
``gpu`` extra); without the package or a driver there are simply no GPU readings.

:class:`ResourceMonitor` keeps the latest :class:`ResourceSnapshot`. One asyncio task
refreshes it every ``interval_s`` seconds, reading in a thread, so ``/health`` only copies
a value: a slow ``statvfs`` on a stuck network disk makes the snapshot old (see
``taken_at``), never the health check slow. A reading that raises is logged and the
previous snapshot kept. :func:`resource_status` turns a snapshot into ok / warning /
critical with the reasons, with the thresholds of the source service (85 % / 95 %).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from watchkeeper.front import metrics
from watchkeeper.logs import log_event

__all__ = [
    "free_device_bytes",
    "uses_gpu",
    "DiskReading",
    "GpuReading",
    "MemoryReading",
    "ResourceMonitor",
    "ResourceSnapshot",
    "process_rss",
    "read_disk",
    "read_gpus",
    "read_memory",
    "read_resources",
    "resource_status",
]

log = logging.getLogger(__name__)

#: Seconds between two readings of a ResourceMonitor.
DEFAULT_INTERVAL_S = 2.0


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """System memory; ``used_bytes`` is memory not available to a new process."""

    total_bytes: int
    used_bytes: int
    available_bytes: int
    percent: float

    def to_dict(self) -> dict[str, Any]:
        """Return the reading as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DiskReading:
    """The file system holding ``path``; ``percent_used`` as ``df`` shows it."""

    path: str
    total_bytes: int
    free_bytes: int
    percent_used: float

    def to_dict(self) -> dict[str, Any]:
        """Return the reading as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """Memory of one GPU as NVML reports it (all processes, not only ours)."""

    index: int
    name: str
    total_bytes: int
    used_bytes: int
    percent: float

    def to_dict(self) -> dict[str, Any]:
        """Return the reading as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ResourceSnapshot:
    """All readings taken at ``taken_at`` (``time.time()``)."""

    taken_at: float
    memory: MemoryReading
    disks: tuple[DiskReading, ...]
    gpus: tuple[GpuReading, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the snapshot as a JSON-able dict (lists for the tuples)."""
        return {
            "taken_at": self.taken_at,
            "memory": self.memory.to_dict(),
            "disks": [disk.to_dict() for disk in self.disks],
            "gpus": [gpu.to_dict() for gpu in self.gpus],
        }


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole > 0 else 0.0


def read_memory() -> MemoryReading:
    """Read system memory (psutil.virtual_memory)."""
    vm = psutil.virtual_memory()
    used = vm.total - vm.available
    return MemoryReading(
        total_bytes=vm.total,
        used_bytes=used,
        available_bytes=vm.available,
        percent=_percent(used, vm.total),
    )


def read_disk(path: Path | str) -> DiskReading:
    """Read the file system of ``path``, or of its nearest existing parent if it is not made yet.

    The reading reports ``path`` as asked, so a data directory created later keeps its name.
    """
    existing = Path(os.path.abspath(path))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    return DiskReading(
        path=str(path),
        total_bytes=usage.total,
        free_bytes=usage.free,
        percent_used=_percent(usage.used, usage.used + usage.free),
    )


class _Nvml:
    """NVML, initialised at most once per process; a failed start is remembered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tried = False
        self._module: ModuleType | None = None

    def module(self) -> ModuleType | None:
        """Return the initialised pynvml module, or None if NVML cannot be used here."""
        with self._lock:
            if not self._tried:
                self._tried = True
                self._module = self._init()
            return self._module

    @staticmethod
    def _init() -> ModuleType | None:
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception as exc:
            log_event(log, "resources.nvml_unavailable", logging.DEBUG, error=str(exc))
            return None
        module: ModuleType = pynvml
        return module


_NVML = _Nvml()


def read_gpus() -> tuple[GpuReading, ...]:
    """Read the memory of every GPU through NVML; an empty tuple when NVML is unavailable.

    NVML is initialised on the first call only; if that fails it is not tried again.
    An NVML error on a device after a successful start (a GPU fallen off the bus) raises.
    """
    nvml = _NVML.module()
    if nvml is None:
        return ()
    readings = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        name = nvml.nvmlDeviceGetName(handle)
        if isinstance(name, bytes):  # older nvidia-ml-py versions
            name = name.decode(errors="replace")
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        total, used = int(memory.total), int(memory.used)
        readings.append(GpuReading(index, str(name), total, used, _percent(used, total)))
    return tuple(readings)


def free_device_bytes(device: str) -> int:
    """Memory free now on ``device``: available RAM for ``cpu``, NVML's free for ``cuda:N``."""
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        for gpu in read_gpus():
            if gpu.index == index:
                return gpu.total_bytes - gpu.used_bytes
    return read_memory().available_bytes


def uses_gpu(device: str) -> bool:
    """Whether a model configured for ``device`` will run on a GPU here."""
    return device.startswith("cuda") or (device == "auto" and bool(read_gpus()))


def read_resources(paths: Sequence[Path]) -> ResourceSnapshot:
    """Read memory, the disks of ``paths`` and every GPU, now."""
    return ResourceSnapshot(
        taken_at=time.time(),
        memory=read_memory(),
        disks=tuple(read_disk(path) for path in paths),
        gpus=read_gpus(),
    )


def process_rss(pid: int) -> int | None:
    """Return the resident memory of process ``pid`` in bytes; None if it is gone or unreadable."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class ResourceMonitor:
    """Keeps the latest :class:`ResourceSnapshot`, refreshed by an asyncio task.

    ``start()`` takes the first reading at once, then a task on the running loop reads
    again every ``interval_s`` seconds in a worker thread. ``snapshot`` is None only
    before ``start()`` or while no reading has succeeded yet.
    """

    def __init__(
        self,
        paths: Sequence[Path] = (),
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        reader: Callable[[Sequence[Path]], ResourceSnapshot] = read_resources,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.paths: tuple[Path, ...] = tuple(paths)
        self.interval_s = interval_s
        self._reader = reader
        self._snapshot: ResourceSnapshot | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error: str | None = None

    @property
    def snapshot(self) -> ResourceSnapshot | None:
        """The latest successful reading."""
        return self._snapshot

    def start(self) -> None:
        """Take one reading now, then refresh on the running loop (call from a coroutine)."""
        if self._task is not None and not self._task.done():
            return
        loop = asyncio.get_running_loop()
        self._refresh_sync()
        self._task = loop.create_task(self._run(), name="watchkeeper.front.resources")

    async def stop(self) -> None:
        """Stop refreshing; the last snapshot stays readable. A reading in flight is abandoned."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                snapshot = await asyncio.to_thread(self._reader, self.paths)
            except Exception as exc:
                self._failed(exc)
            else:
                self._succeeded(snapshot)

    def _refresh_sync(self) -> None:
        try:
            snapshot = self._reader(self.paths)
        except Exception as exc:
            self._failed(exc)
        else:
            self._succeeded(snapshot)

    def _succeeded(self, snapshot: ResourceSnapshot) -> None:
        self._snapshot = snapshot
        metrics.set_resources(
            [("cpu", snapshot.memory.used_bytes, snapshot.memory.total_bytes)]
            + [(f"cuda:{gpu.index}", gpu.used_bytes, gpu.total_bytes) for gpu in snapshot.gpus],
            [(disk.path, disk.free_bytes, disk.total_bytes) for disk in snapshot.disks])
        if self._last_error is not None:
            log_event(log, "resources.recovered", previous_error=self._last_error)
            self._last_error = None

    def _failed(self, exc: Exception) -> None:
        """Log the first failure of a run with its traceback, repeats only at DEBUG."""
        error = f"{type(exc).__name__}: {exc}"
        repeat = error == self._last_error
        self._last_error = error
        age_s = None if self._snapshot is None else round(time.time() - self._snapshot.taken_at, 1)
        log_event(
            log,
            "resources.read_failed",
            logging.DEBUG if repeat else logging.WARNING,
            exc_info=None if repeat else exc,
            error=error,
            snapshot_age_s=age_s,
        )


def resource_status(
    snapshot: ResourceSnapshot,
    warn_percent: float = 85.0,
    critical_percent: float = 95.0,
) -> tuple[str, list[str]]:
    """Grade a snapshot: ``("ok" | "warning" | "critical", reasons)``.

    Memory, each disk and each GPU's memory count alike: above ``critical_percent`` is
    critical, above ``warn_percent`` a warning; the worst one is the status. Each reason
    names the resource and its figure, e.g. ``"disk /data 96.0% used (critical above 95%)"``.
    """
    if warn_percent > critical_percent:
        raise ValueError(
            f"warn_percent {warn_percent} is above critical_percent {critical_percent}"
        )
    measured = [("memory", snapshot.memory.percent)]
    measured += [(f"disk {disk.path}", disk.percent_used) for disk in snapshot.disks]
    measured += [(f"gpu {gpu.index} ({gpu.name}) memory", gpu.percent) for gpu in snapshot.gpus]
    status, reasons = "ok", []
    for what, percent in measured:
        if percent > critical_percent:
            status = "critical"
            reasons.append(f"{what} {percent:.1f}% used (critical above {critical_percent:g}%)")
        elif percent > warn_percent:
            status = "critical" if status == "critical" else "warning"
            reasons.append(f"{what} {percent:.1f}% used (warning above {warn_percent:g}%)")
    return status, reasons
