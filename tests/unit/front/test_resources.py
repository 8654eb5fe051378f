"""Tests of watchkeeper.front.resources: real readings on this machine, status grading, the monitor."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from watchkeeper.front import resources
from watchkeeper.front.resources import (
    DiskReading,
    GpuReading,
    MemoryReading,
    ResourceMonitor,
    ResourceSnapshot,
    process_rss,
    read_disk,
    read_gpus,
    read_memory,
    read_resources,
    resource_status,
)


def snapshot(
    memory: float = 10.0, disks: Sequence[float] = (), gpus: Sequence[float] = ()
) -> ResourceSnapshot:
    gib = 1 << 30
    return ResourceSnapshot(
        taken_at=1.0,
        memory=MemoryReading(16 * gib, int(16 * gib * memory / 100), 0, memory),
        disks=tuple(DiskReading(f"/d{i}", 100, 100, p) for i, p in enumerate(disks)),
        gpus=tuple(GpuReading(i, "Test GPU", 100, int(p), p) for i, p in enumerate(gpus)),
    )


# --- real readings -------------------------------------------------------------------------


def test_memory_reading_is_real() -> None:
    memory = read_memory()
    assert memory.total_bytes > 0
    assert 0 < memory.available_bytes <= memory.total_bytes
    assert memory.used_bytes + memory.available_bytes == memory.total_bytes
    assert 0.0 <= memory.percent <= 100.0


def test_disk_reading_of_tmp_path(tmp_path: Path) -> None:
    disk = read_disk(tmp_path)
    assert disk.path == str(tmp_path)
    assert disk.total_bytes > 0
    assert 0 <= disk.free_bytes <= disk.total_bytes
    assert 0.0 <= disk.percent_used <= 100.0


def test_disk_reading_of_a_path_not_made_yet_reads_its_parent(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "made" / "yet"
    disk = read_disk(missing)
    assert disk.path == str(missing)
    assert not missing.exists()
    assert disk.total_bytes == read_disk(tmp_path).total_bytes


def test_without_nvml_there_are_no_gpus() -> None:
    if resources._NVML.module() is not None:
        pytest.skip("NVML works on this machine")
    assert read_gpus() == ()
    assert read_gpus() == ()


def test_snapshot_is_json_able(tmp_path: Path) -> None:
    before = time.time()
    snap = read_resources([tmp_path, tmp_path / "later"])
    assert before <= snap.taken_at <= time.time()
    data = orjson.loads(orjson.dumps(snap.to_dict()))
    assert data["memory"]["total_bytes"] == snap.memory.total_bytes
    assert [d["path"] for d in data["disks"]] == [str(tmp_path), str(tmp_path / "later")]
    assert data["gpus"] == [g.to_dict() for g in snap.gpus]


def test_process_rss_of_a_live_and_a_gone_process() -> None:
    rss = process_rss(os.getpid())
    assert rss is not None and rss > 1_000_000
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert process_rss(child.pid) is None


# --- NVML, with a stand-in module (no GPU on the test machines) ----------------------------


class FakeNvml(SimpleNamespace):
    def __init__(self, fail_init: bool) -> None:
        super().__init__(init_calls=0, fail_init=fail_init)

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return b"Old GPU" if handle else "NVIDIA A10"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=24 << 30, used=(12 << 30) * (handle + 1), free=0)


@pytest.mark.parametrize("fail_init", [True, False])
def test_nvml_is_started_once(monkeypatch: pytest.MonkeyPatch, fail_init: bool) -> None:
    fake = FakeNvml(fail_init)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(resources, "_NVML", resources._Nvml())
    first, second = read_gpus(), read_gpus()
    assert fake.init_calls == 1
    if fail_init:
        assert first == second == ()
    else:
        assert (
            first
            == second
            == (
                GpuReading(0, "NVIDIA A10", 24 << 30, 12 << 30, 50.0),
                GpuReading(1, "Old GPU", 24 << 30, 24 << 30, 100.0),
            )
        )


# --- resource_status -----------------------------------------------------------------------


def test_status_ok_below_the_warning_line() -> None:
    assert resource_status(snapshot(50.0, disks=[85.0], gpus=[10.0])) == ("ok", [])


def test_status_warning() -> None:
    status, reasons = resource_status(snapshot(85.1, disks=[20.0]))
    assert status == "warning"
    assert reasons == ["memory 85.1% used (warning above 85%)"]


def test_status_critical_wins_and_every_reason_is_listed() -> None:
    status, reasons = resource_status(snapshot(90.0, disks=[20.0, 99.0], gpus=[96.0]))
    assert status == "critical"
    assert len(reasons) == 3
    assert reasons[0].startswith("memory 90.0%")
    assert reasons[1] == "disk /d1 99.0% used (critical above 95%)"
    assert reasons[2].startswith("gpu 0 (Test GPU) memory 96.0%")


def test_status_critical_stays_critical_after_a_warning() -> None:
    status, _ = resource_status(snapshot(99.0, disks=[90.0]))
    assert status == "critical"


def test_status_custom_thresholds() -> None:
    assert resource_status(snapshot(70.0), 60.0, 80.0)[0] == "warning"
    assert resource_status(snapshot(70.0), 50.0, 65.0)[0] == "critical"
    with pytest.raises(ValueError):
        resource_status(snapshot(), 90.0, 80.0)


# --- ResourceMonitor -----------------------------------------------------------------------


def test_monitor_reads_at_start_and_refreshes(tmp_path: Path) -> None:
    async def scenario() -> None:
        monitor = ResourceMonitor([tmp_path], interval_s=0.05)
        assert monitor.snapshot is None
        monitor.start()
        first = monitor.snapshot
        assert first is not None
        assert first.disks[0].path == str(tmp_path)
        deadline = time.monotonic() + 10.0
        while monitor.snapshot is first and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert monitor.snapshot is not first
        await monitor.stop()
        last = monitor.snapshot
        await asyncio.sleep(0.15)
        assert monitor.snapshot is last
        await monitor.stop()  # a second stop is harmless

    asyncio.run(scenario())


def test_monitor_keeps_the_old_snapshot_when_a_reading_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="watchkeeper.front.resources")
    calls = 0

    def flaky(paths: Sequence[Path]) -> ResourceSnapshot:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError("stale file handle")
        return read_resources(paths)

    async def scenario() -> None:
        monitor = ResourceMonitor([tmp_path], interval_s=0.02, reader=flaky)
        monitor.start()
        good = monitor.snapshot
        assert good is not None
        deadline = time.monotonic() + 10.0
        while calls < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert calls >= 4
        assert monitor.snapshot is good
        await monitor.stop()

    asyncio.run(scenario())
    failures = [r for r in caplog.records if r.getMessage() == "resources.read_failed"]
    assert len(failures) >= 3
    assert [r.levelno for r in failures[:2]] == [logging.WARNING, logging.DEBUG]
    assert failures[0].exc_info is not None
    assert failures[0].error == "OSError: stale file handle"  # type: ignore[attr-defined]


def test_monitor_needs_a_running_loop_and_a_positive_interval() -> None:
    with pytest.raises(RuntimeError):
        ResourceMonitor().start()
    with pytest.raises(ValueError):
        ResourceMonitor(interval_s=0)


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, watchkeeper.front.resources; print('torch' in sys.modules)"
    command = [sys.executable, "-c", code]
    out = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
