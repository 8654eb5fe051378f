"""Tests of watchkeeper.front.metrics: every metric is exported from the private registry and moves."""

from __future__ import annotations

from collections.abc import Callable

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from watchkeeper.front import metrics
from watchkeeper.http.errors import STATUS
from watchkeeper.jobs.job import JobState
from watchkeeper.supervision.supervisor import ModelState
from watchkeeper.supervision.worker_handle import ReplicaState

EXPECTED_NAMES = (
    "watchkeeper_requests_total",
    "watchkeeper_request_duration_seconds",
    "watchkeeper_queue_wait_seconds",
    "watchkeeper_inference_seconds",
    "watchkeeper_queue_depth",
    "watchkeeper_replicas",
    "watchkeeper_worker_restarts_total",
    "watchkeeper_probe_success",
    "watchkeeper_probe_latency_seconds",
    "watchkeeper_model_state",
    "watchkeeper_quarantined_inputs",
    "watchkeeper_worker_rss_bytes",
    "watchkeeper_startup_seconds",
)


def value(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_render_returns_the_text_format_with_every_metric() -> None:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    for name in EXPECTED_NAMES:
        assert f"# HELP {name} " in text, name
        assert f"# TYPE {name} " in text, name
    # The whole body parses as the Prometheus text format.
    assert list(text_string_to_metric_families(text))


def test_the_registry_is_private() -> None:
    assert metrics.REGISTRY is not prometheus_client.REGISTRY
    default_body = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "watchkeeper_requests_total" not in default_body


def test_counters_and_histograms_move() -> None:
    requests = metrics.requests_of("t-count")
    assert metrics.requests_of("t-count") is requests  # label lookups made once per model
    before = value("watchkeeper_requests_total", model="t-count", status="200") or 0.0
    requests.answered(200, 0.003)
    requests.answered(200, 90.0)
    assert value("watchkeeper_requests_total", model="t-count", status="200") == before + 2
    name = "watchkeeper_request_duration_seconds"
    assert value(name + "_count", model="t-count") == 2
    assert value(name + "_bucket", model="t-count", le="0.005") == 1
    assert value(name + "_bucket", model="t-count", le="120.0") == 2

    requests.ran(queue_s=0.001, inference_s=0.02)
    assert value("watchkeeper_inference_seconds_count", model="t-count") == 1
    metrics.count_restart("t-count", "deadline")
    assert value("watchkeeper_worker_restarts_total", model="t-count", reason="deadline") == 1
    body, _ = metrics.render()
    assert b'watchkeeper_requests_total{model="t-count",status="200"}' in body


def test_buckets_cover_one_millisecond_to_two_minutes() -> None:
    assert metrics.LATENCY_BUCKETS[0] == 0.001
    assert metrics.LATENCY_BUCKETS[-1] == 120.0
    assert list(metrics.LATENCY_BUCKETS) == sorted(set(metrics.LATENCY_BUCKETS))


def test_gauges_move() -> None:
    metrics.set_model("t-gauge", "degraded", ["ready", "starting", "ready"], queue_depth=4,
                      quarantined=1)
    assert value("watchkeeper_queue_depth", model="t-gauge") == 4
    assert value("watchkeeper_quarantined_inputs", model="t-gauge") == 1
    assert value("watchkeeper_replicas", model="t-gauge", state="ready") == 2
    assert value("watchkeeper_replicas", model="t-gauge", state="busy") == 0
    assert value("watchkeeper_model_state", model="t-gauge", state="degraded") == 1
    assert value("watchkeeper_model_state", model="t-gauge", state="ready") == 0
    metrics.set_worker_rss("t-gauge", 0, 123_456_789)
    assert value("watchkeeper_worker_rss_bytes", model="t-gauge", replica="0") == 123_456_789
    metrics.set_startup("t-gauge", {"warmup": 1500.0})
    assert value("watchkeeper_startup_seconds", model="t-gauge", phase="warmup") == 1.5
    metrics.set_probe("t-gauge", False, latency_s=0.25)
    assert value("watchkeeper_probe_success", model="t-gauge") == 0
    assert value("watchkeeper_probe_latency_seconds", model="t-gauge") == 0.25


def test_jobs_move() -> None:
    metrics.set_jobs({"queued": 3, "running": 1})
    assert value("watchkeeper_jobs", state="queued") == 3
    metrics.count_job_finished("t-jobs", "succeeded", 12.0)
    assert value("watchkeeper_jobs_finished_total", model="t-jobs", state="succeeded") == 1
    metrics.count_job_requeued("t-jobs", "worker_died")
    assert value("watchkeeper_jobs_requeued_total", model="t-jobs", reason="worker_died") == 1


def test_set_state_is_one_hot() -> None:
    states = ("loading", "ready", "failed")
    metrics.set_state(metrics.MODEL_STATE, "t-state", "loading", states)
    metrics.set_state(metrics.MODEL_STATE, "t-state", "ready", states)
    got = {s: value("watchkeeper_model_state", model="t-state", state=s) for s in states}
    assert got == {"loading": 0.0, "ready": 1.0, "failed": 0.0}


# --- label values: declared here, and nothing else is recorded ------------------------------


@pytest.mark.parametrize("record", [
    lambda: metrics.count_restart("t-bad", "because"),
    lambda: metrics.set_startup("t-bad", {"compile": 1.0}),
    lambda: metrics.requests_of("t-bad").answered(418, 0.1),
    lambda: metrics.set_jobs({"paused": 1}),
    lambda: metrics.count_job_requeued("t-bad", "bored"),
    lambda: metrics.set_model("t-bad", "sleeping", [], 0, 0),
])
def test_an_undeclared_label_value_is_refused(record: Callable[[], None]) -> None:
    with pytest.raises(ValueError, match="undeclared"):
        record()


def test_declared_states_are_the_enums() -> None:
    assert set(metrics.MODEL_STATES) == {s.value for s in ModelState}
    assert set(metrics.REPLICA_STATES) == {s.value for s in ReplicaState}
    assert set(metrics.JOB_STATES) == {s.value for s in JobState}


def test_every_status_the_front_answers_is_declared() -> None:
    assert {str(code) for code in STATUS.values()} | {"200"} <= set(metrics.HTTP_STATUSES)


def test_every_startup_phase_a_worker_reports_is_declared() -> None:
    assert {"import", "prepare", "setup", "warmup", "fork"} == set(metrics.STARTUP_PHASES)
