"""/metrics during real traffic with real faults (the chaos models): each fault moves the
metric an operator's alert or board reads - a kill is a restart with its cause, a degraded
answer a degradation, a refusal an error of its type - and the gauges read from config and
from the resource monitor are there."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import CHAOS, FAST, Server, ServerFactory, wait_for

HUNGRY = {"app": "watchkeeper.apps.chaos:Hungry", "device": "cpu", "timeout_s": 10,
          "memory_limit_mb": 120, "probe_interval_s": 0}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(srv: Server) -> Samples:
    text = srv.get("/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_faults_move_the_metrics(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST}, "hungry": HUNGRY})
    before = scrape(srv)
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200
    crashed = srv.predict("chaos", {"action": "crash"}).status_code  # retried once, then refused
    assert crashed in (422, 502, 504)
    srv.wait_state("chaos", "ready")
    assert srv.predict("chaos", {"action": "hang"}).status_code == 504
    srv.wait_state("chaos", "ready")
    assert srv.predict("chaos", {"action": "raise"}).status_code == 500
    degraded = srv.predict("hungry", {"tag": "big"}, {"mb": 200})
    assert degraded.status_code == 200 and degraded.json()["degraded"], degraded.text
    srv.wait_state("chaos", "ready")
    after: dict[str, Any] = {}
    after["s"] = wait_for(lambda: (s := scrape(srv)) and value(
        s, "watchkeeper_worker_restarts_total", model="chaos", reason="deadline") >= 1 and s, 10)
    now = after["s"]
    assert moved(before, now, "watchkeeper_worker_restarts_total", model="chaos", reason="crash") >= 1
    assert moved(before, now, "watchkeeper_degradations_total", model="hungry", cause="memory") == 1
    for error, status in (("deadline_exceeded", "504"), ("model_error", "500")):
        assert moved(before, now, "watchkeeper_request_errors_total", model="chaos", error=error) >= 1
        assert moved(before, now, "watchkeeper_requests_total", model="chaos", status=status) >= 1
    errors = sum(moved(before, now, "watchkeeper_request_errors_total", model="chaos", error=e)
                 for e in ("input_quarantined", "worker_crashed", "deadline_exceeded", "model_error"))
    assert errors == 3  # the crash, the hang, the raise: one refusal each
    assert moved(before, now, "watchkeeper_request_duration_seconds_count", model="chaos") >= 1
    assert value(now, "watchkeeper_latency_target_seconds", model="chaos") == FAST["timeout_s"] / 2
    assert value(now, "watchkeeper_queue_limit", model="chaos") > 0
    assert value(now, "watchkeeper_memory_budget_bytes", budget="hungry#0") == 96 * 2**20
    assert value(now, "watchkeeper_device_memory_total_bytes", device="cpu") > 0
    data_dir = next(k for k in now if k[0] == "watchkeeper_disk_free_bytes")
    assert now[data_dir] > 0
