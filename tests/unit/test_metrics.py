"""Tests of watchkeeper.front.metrics: every metric is exported from the private registry and moves."""

from __future__ import annotations

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from watchkeeper.front import metrics

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
    before = value("watchkeeper_requests_total", model="t-count", status="200") or 0.0
    metrics.REQUESTS_TOTAL.labels(model="t-count", status="200").inc()
    metrics.REQUESTS_TOTAL.labels(model="t-count", status="200").inc()
    assert value("watchkeeper_requests_total", model="t-count", status="200") == before + 2

    metrics.REQUEST_DURATION_SECONDS.labels(model="t-count").observe(0.003)
    metrics.REQUEST_DURATION_SECONDS.labels(model="t-count").observe(90.0)
    name = "watchkeeper_request_duration_seconds"
    assert value(name + "_count", model="t-count") == 2
    assert value(name + "_bucket", model="t-count", le="0.005") == 1
    assert value(name + "_bucket", model="t-count", le="120.0") == 2

    metrics.WORKER_RESTARTS_TOTAL.labels(model="t-count", reason="deadline").inc()
    assert value("watchkeeper_worker_restarts_total", model="t-count", reason="deadline") == 1
    body, _ = metrics.render()
    assert b'watchkeeper_requests_total{model="t-count",status="200"}' in body


def test_buckets_cover_one_millisecond_to_two_minutes() -> None:
    assert metrics.LATENCY_BUCKETS[0] == 0.001
    assert metrics.LATENCY_BUCKETS[-1] == 120.0
    assert list(metrics.LATENCY_BUCKETS) == sorted(set(metrics.LATENCY_BUCKETS))


def test_gauges_move() -> None:
    metrics.QUEUE_DEPTH.labels(model="t-gauge").set(5)
    metrics.QUEUE_DEPTH.labels(model="t-gauge").dec()
    assert value("watchkeeper_queue_depth", model="t-gauge") == 4
    metrics.WORKER_RSS_BYTES.labels(model="t-gauge", replica="0").set(123_456_789)
    assert value("watchkeeper_worker_rss_bytes", model="t-gauge", replica="0") == 123_456_789
    metrics.STARTUP_SECONDS.labels(model="t-gauge", phase="warmup").set(1.5)
    assert value("watchkeeper_startup_seconds", model="t-gauge", phase="warmup") == 1.5


def test_set_state_is_one_hot() -> None:
    states = ("loading", "ready", "failed")
    metrics.set_state(metrics.MODEL_STATE, "t-state", "loading", states)
    metrics.set_state(metrics.MODEL_STATE, "t-state", "ready", states)
    got = {s: value("watchkeeper_model_state", model="t-state", state=s) for s in states}
    assert got == {"loading": 0.0, "ready": 1.0, "failed": 0.0}
