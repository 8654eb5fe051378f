"""The metrics the alerts and the board read (front/metrics.py): error types, degradations,
the figures read at scrape time from config and admission, and the resource readings."""

from __future__ import annotations

import inspect

import pytest

from watchkeeper import errors
from watchkeeper.front import metrics
from watchkeeper.front.resources import (
    DiskReading,
    GpuReading,
    MemoryReading,
    ResourceMonitor,
    ResourceSnapshot,
)


def sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_error_types_are_the_error_trees() -> None:
    types = {cls.type for _, cls in inspect.getmembers(errors, inspect.isclass)
             if issubclass(cls, errors.WatchkeeperError) and cls is not errors.ConfigError}
    assert types == set(metrics.ERROR_TYPES)


def test_an_error_is_counted_by_its_type_and_an_unknown_type_is_a_bug() -> None:
    requests = metrics.requests_of("ops-a")
    requests.answered(503, 0.1, "out_of_memory")
    requests.answered(200, 0.1)
    assert sample("watchkeeper_request_errors_total", model="ops-a", error="out_of_memory") == 1
    with pytest.raises(ValueError, match="undeclared error"):
        requests.answered(503, 0.1, "no_such_error")


def test_degradations_are_counted_by_cause() -> None:
    requests = metrics.requests_of("ops-b")
    requests.ran(0.0, 0.1, {"from": {}, "to": {}, "reason": "memory: mb=200 needs 201 MB"})
    requests.ran(0.0, 0.1, {"from": {}, "to": {}, "reason": "out of memory at {'mb': 200}"})
    requests.ran(0.0, 0.1, None)
    assert sample("watchkeeper_degradations_total", model="ops-b", cause="memory") == 1
    assert sample("watchkeeper_degradations_total", model="ops-b", cause="out_of_memory") == 1


def test_scrape_time_figures_of_a_model() -> None:
    budget = {"device": "ops-c#0", "budget_bytes": 1000, "reserved_bytes": 250}
    metrics.set_model_limits("ops-c", 30.0, 64, 2.5, [budget], 0.8)
    assert sample("watchkeeper_latency_target_seconds", model="ops-c") == 15.0
    assert sample("watchkeeper_queue_limit", model="ops-c") == 64
    assert sample("watchkeeper_queue_expected_wait_seconds", model="ops-c") == 2.5
    assert sample("watchkeeper_memory_budget_bytes", budget="ops-c#0") == 1000
    assert sample("watchkeeper_memory_reserved_bytes", budget="ops-c#0") == 250
    assert sample("watchkeeper_memory_budget_fraction") == 0.8


def test_resource_readings_become_gauges() -> None:
    snapshot = ResourceSnapshot(0.0, MemoryReading(100, 60, 40, 60.0),
                                (DiskReading("/ops/data", 1000, 90, 91.0),),
                                (GpuReading(1, "gpu", 24, 18, 75.0),))
    monitor = ResourceMonitor(reader=lambda paths: snapshot)
    monitor._refresh_sync()
    assert sample("watchkeeper_device_memory_used_bytes", device="cpu") == 60
    assert sample("watchkeeper_device_memory_total_bytes", device="cuda:1") == 24
    assert sample("watchkeeper_disk_free_bytes", path="/ops/data") == 90
    assert sample("watchkeeper_disk_size_bytes", path="/ops/data") == 1000
