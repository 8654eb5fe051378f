"""The Grafana board (deploy/grafana/watchkeeper.json): valid, importable dashboard JSON whose
every query names only metrics a real server's /metrics exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import CHAOS, FAST, Servers

BOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "watchkeeper.json"
#: Words in a PromQL expression that name a metric: ours, the process collector's, ``up``.
METRIC_NAME = re.compile(r"\b(?:watchkeeper|process)_[a-z_]+\b")
#: The sample names a family of each type exposes.
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created")}


def board() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(BOARD.read_text())
    return loaded


def queries(dashboard: dict[str, Any]) -> list[str]:
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    return [t["expr"] for p in panels for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


def exported_names(scrape: str) -> set[str]:
    """Every sample name the scrape declares, a family's samples included even when it has none yet."""
    names = set()
    for family in text_string_to_metric_families(scrape):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_the_board_is_importable_dashboard_json() -> None:
    dashboard = board()
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}" and panel["targets"], panel["title"]


def test_the_board_shows_what_the_issue_asks_for() -> None:
    names = set().union(*(metric_names(q) for q in queries(board())))
    for wanted in ("watchkeeper_requests_total", "watchkeeper_request_duration_seconds_bucket",
                   "watchkeeper_queue_depth", "watchkeeper_queue_expected_wait_seconds",
                   "watchkeeper_replicas", "watchkeeper_worker_restarts_total",
                   "watchkeeper_probe_success", "watchkeeper_device_memory_used_bytes",
                   "watchkeeper_worker_rss_bytes", "watchkeeper_jobs", "watchkeeper_degradations_total",
                   "watchkeeper_request_errors_total"):
        assert wanted in names, wanted


def test_the_name_check_sees_an_unknown_metric() -> None:
    scrape = "# TYPE watchkeeper_x_seconds histogram\nwatchkeeper_x_seconds_bucket{le=\"+Inf\"} 1\n"
    exported = exported_names(scrape)
    assert metric_names("rate(watchkeeper_x_seconds_bucket[5m])") <= exported
    assert not metric_names("rate(watchkeeper_y_seconds_bucket[5m])") <= exported


def test_every_query_names_metrics_of_a_real_scrape(tmp_path: Path) -> None:
    servers = Servers(tmp_path)
    try:
        srv = servers.start({"chaos": {"app": CHAOS, **FAST}})
        assert srv.predict("chaos", {"action": "ok"}).status_code == 200
        scrape = srv.get("/metrics").text
    finally:
        servers.stop_all()
    exported = exported_names(scrape)
    missing = {q: sorted(metric_names(q) - exported) for q in queries(board())}
    assert not {q: m for q, m in missing.items() if m}
