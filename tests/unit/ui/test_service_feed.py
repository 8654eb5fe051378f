"""The Service tab's reading of the API: parsing /metrics, deltas, latency quantiles, the
rolling window, and the events derived from two real readings of a server (captured below
from ``watchkeeper serve`` with a chaos model, before and after a crash and a hang)."""

from __future__ import annotations

import copy
import json
import math
import socket
from typing import Any

import httpx
import pytest

from watchkeeper.ui.service_events import Changes, Event
from watchkeeper.ui.service_feed import Problem, Reading, ServiceFeed, read_service
from watchkeeper.ui.service_metrics import (
    MetricsSnapshot,
    bucket_delta,
    increases,
    latency_quantiles,
    parse_metrics,
    quantile,
)
from watchkeeper.ui.service_window import MAX_POINTS, Sample, Window, sample_of

#: ``GET /metrics`` of a real server (chaos, 2 replicas), trimmed to the families the tab reads
#: (plus one it ignores; ``# HELP`` lines and ``_created`` series left out), before and after:
#: 12 requests (10 fast), a ``crash`` input (two workers died, the input was quarantined) and a
#: ``hang`` (its worker killed at the 2 s deadline).
SCRAPE_A = """\
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 6.7837952e+07
# TYPE watchkeeper_request_duration_seconds histogram
watchkeeper_request_duration_seconds_bucket{le="0.001",model="chaos"} 19.0
watchkeeper_request_duration_seconds_bucket{le="0.0025",model="chaos"} 40.0
watchkeeper_request_duration_seconds_bucket{le="0.005",model="chaos"} 50.0
watchkeeper_request_duration_seconds_bucket{le="0.01",model="chaos"} 51.0
watchkeeper_request_duration_seconds_bucket{le="0.025",model="chaos"} 90.0
watchkeeper_request_duration_seconds_bucket{le="0.05",model="chaos"} 109.0
watchkeeper_request_duration_seconds_bucket{le="0.1",model="chaos"} 192.0
watchkeeper_request_duration_seconds_bucket{le="0.25",model="chaos"} 284.0
watchkeeper_request_duration_seconds_bucket{le="0.5",model="chaos"} 348.0
watchkeeper_request_duration_seconds_bucket{le="1.0",model="chaos"} 348.0
watchkeeper_request_duration_seconds_bucket{le="2.5",model="chaos"} 349.0
watchkeeper_request_duration_seconds_bucket{le="5.0",model="chaos"} 349.0
watchkeeper_request_duration_seconds_bucket{le="10.0",model="chaos"} 349.0
watchkeeper_request_duration_seconds_bucket{le="15.0",model="chaos"} 349.0
watchkeeper_request_duration_seconds_bucket{le="30.0",model="chaos"} 349.0
watchkeeper_request_duration_seconds_bucket{le="60.0",model="chaos"} 349.0
watchkeeper_request_duration_seconds_bucket{le="120.0",model="chaos"} 349.0
watchkeeper_request_duration_seconds_bucket{le="+Inf",model="chaos"} 349.0
watchkeeper_request_duration_seconds_count{model="chaos"} 349.0
watchkeeper_request_duration_seconds_sum{model="chaos"} 46.487652794002756
# TYPE watchkeeper_queue_depth gauge
watchkeeper_queue_depth{model="chaos"} 0.0
# TYPE watchkeeper_worker_restarts_total counter
watchkeeper_worker_restarts_total{model="chaos",reason="crash"} 5.0
watchkeeper_worker_restarts_total{model="chaos",reason="deadline"} 1.0
# TYPE watchkeeper_model_state gauge
watchkeeper_model_state{model="chaos",state="starting"} 0.0
watchkeeper_model_state{model="chaos",state="ready"} 1.0
watchkeeper_model_state{model="chaos",state="degraded"} 0.0
watchkeeper_model_state{model="chaos",state="recovering"} 0.0
watchkeeper_model_state{model="chaos",state="unready"} 0.0
watchkeeper_model_state{model="chaos",state="failed"} 0.0
watchkeeper_model_state{model="chaos",state="stopping"} 0.0
# TYPE watchkeeper_quarantined_inputs gauge
watchkeeper_quarantined_inputs{model="chaos"} 0.0
# TYPE watchkeeper_worker_rss_bytes gauge
watchkeeper_worker_rss_bytes{model="chaos",replica="0"} 3.8211584e+07
watchkeeper_worker_rss_bytes{model="chaos",replica="1"} 3.8293504e+07
# TYPE watchkeeper_request_errors_total counter
watchkeeper_request_errors_total{error="input_quarantined",model="chaos"} 1.0
watchkeeper_request_errors_total{error="deadline_exceeded",model="chaos"} 1.0
# TYPE watchkeeper_device_memory_used_bytes gauge
watchkeeper_device_memory_used_bytes{device="cpu"} 2.04888064e+09
# TYPE watchkeeper_device_memory_total_bytes gauge
watchkeeper_device_memory_total_bytes{device="cpu"} 2.5276194816e+10
"""
SCRAPE_B = """\
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 6.7837952e+07
# TYPE watchkeeper_request_duration_seconds histogram
watchkeeper_request_duration_seconds_bucket{le="0.001",model="chaos"} 19.0
watchkeeper_request_duration_seconds_bucket{le="0.0025",model="chaos"} 40.0
watchkeeper_request_duration_seconds_bucket{le="0.005",model="chaos"} 50.0
watchkeeper_request_duration_seconds_bucket{le="0.01",model="chaos"} 51.0
watchkeeper_request_duration_seconds_bucket{le="0.025",model="chaos"} 100.0
watchkeeper_request_duration_seconds_bucket{le="0.05",model="chaos"} 120.0
watchkeeper_request_duration_seconds_bucket{le="0.1",model="chaos"} 203.0
watchkeeper_request_duration_seconds_bucket{le="0.25",model="chaos"} 295.0
watchkeeper_request_duration_seconds_bucket{le="0.5",model="chaos"} 359.0
watchkeeper_request_duration_seconds_bucket{le="1.0",model="chaos"} 359.0
watchkeeper_request_duration_seconds_bucket{le="2.5",model="chaos"} 361.0
watchkeeper_request_duration_seconds_bucket{le="5.0",model="chaos"} 361.0
watchkeeper_request_duration_seconds_bucket{le="10.0",model="chaos"} 361.0
watchkeeper_request_duration_seconds_bucket{le="15.0",model="chaos"} 361.0
watchkeeper_request_duration_seconds_bucket{le="30.0",model="chaos"} 361.0
watchkeeper_request_duration_seconds_bucket{le="60.0",model="chaos"} 361.0
watchkeeper_request_duration_seconds_bucket{le="120.0",model="chaos"} 361.0
watchkeeper_request_duration_seconds_bucket{le="+Inf",model="chaos"} 361.0
watchkeeper_request_duration_seconds_count{model="chaos"} 361.0
watchkeeper_request_duration_seconds_sum{model="chaos"} 48.733842704000615
# TYPE watchkeeper_queue_depth gauge
watchkeeper_queue_depth{model="chaos"} 0.0
# TYPE watchkeeper_worker_restarts_total counter
watchkeeper_worker_restarts_total{model="chaos",reason="crash"} 7.0
watchkeeper_worker_restarts_total{model="chaos",reason="deadline"} 2.0
# TYPE watchkeeper_model_state gauge
watchkeeper_model_state{model="chaos",state="starting"} 0.0
watchkeeper_model_state{model="chaos",state="ready"} 1.0
watchkeeper_model_state{model="chaos",state="degraded"} 0.0
watchkeeper_model_state{model="chaos",state="recovering"} 0.0
watchkeeper_model_state{model="chaos",state="unready"} 0.0
watchkeeper_model_state{model="chaos",state="failed"} 0.0
watchkeeper_model_state{model="chaos",state="stopping"} 0.0
# TYPE watchkeeper_quarantined_inputs gauge
watchkeeper_quarantined_inputs{model="chaos"} 1.0
# TYPE watchkeeper_worker_rss_bytes gauge
watchkeeper_worker_rss_bytes{model="chaos",replica="0"} 3.8203392e+07
watchkeeper_worker_rss_bytes{model="chaos",replica="1"} 3.7986304e+07
# TYPE watchkeeper_request_errors_total counter
watchkeeper_request_errors_total{error="input_quarantined",model="chaos"} 2.0
watchkeeper_request_errors_total{error="deadline_exceeded",model="chaos"} 2.0
# TYPE watchkeeper_device_memory_used_bytes gauge
watchkeeper_device_memory_used_bytes{device="cpu"} 1.358934016e+09
# TYPE watchkeeper_device_memory_total_bytes gauge
watchkeeper_device_memory_total_bytes{device="cpu"} 2.5276194816e+10
"""
#: ``GET /health`` of the same server at the same moments (``jobs`` and ``clients`` left out).
HEALTH_A: dict[str, Any] = json.loads(
    '{"status": "ok", "checked_at": 1796456311.360666, "uptime_s": 478.0, "shutting_down": false, "models'
    '": {"chaos": {"state": "ready", "reason": null, "ready_replicas": 2, "load_failures": 0, "replicas":'
    ' [{"index": 0, "pid": 7981, "state": "ready", "restarts": 5, "last_exit": "signal SIGKILL", "last_ex'
    'it_at": 1796456280.9018521, "last_load_error": null, "rss_bytes": 38211584, "startup_ms": {"fork": 2'
    '.11, "warmup": 2.28}}, {"index": 1, "pid": 3499, "state": "ready", "restarts": 1, "last_exit": "exit'
    ' code 13", "last_exit_at": 1796455849.980438, "last_load_error": null, "rss_bytes": 38293504, "start'
    'up_ms": {"fork": 1.89, "warmup": 0.96}}], "queue_depth": 0, "overloaded": false, "in_flight": 0, "me'
    'mory": [{"device": "cpu", "budget_bytes": 19607152230, "reserved_bytes": 0, "free_bytes": 1960715223'
    '0, "batches": 0}], "quarantined_inputs": 0, "probe": {"ok": true, "at": 1796456308.5758748, "latency'
    '_ms": 0.1, "error": null, "skipped": null}, "template": {"state": "ready", "pid": 3061, "forking": t'
    'rue, "fork_off_reason": null, "plans": false, "startup_ms": {"import": 55.05, "prepare": 0.06, "setu'
    'p": 0.01}, "error": null, "deaths": 0, "last_exit": null, "last_exit_at": null}}}, "resources": {"st'
    'atus": "ok", "reasons": [], "memory": {"total_bytes": 25276194816, "used_bytes": 2048880640, "availa'
    'ble_bytes": 23227314176, "percent": 8.1}, "disks": [{"path": "/tmp/h2/srv/data", "total_bytes": 2705'
    '53174016, "free_bytes": 82300211200, "percent_used": 24.5}], "gpus": []}}')
HEALTH_B: dict[str, Any] = json.loads(
    '{"status": "ok", "checked_at": 1796456314.843478, "uptime_s": 481.5, "shutting_down": false, "models'
    '": {"chaos": {"state": "ready", "reason": null, "ready_replicas": 2, "load_failures": 0, "replicas":'
    ' [{"index": 0, "pid": 8622, "state": "ready", "restarts": 7, "last_exit": "signal SIGKILL, killed: d'
    'eadline", "last_exit_at": 1796456313.8194094, "last_load_error": null, "rss_bytes": 37982208, "start'
    'up_ms": {"fork": 1.62, "warmup": 0.8}}, {"index": 1, "pid": 8609, "state": "ready", "restarts": 2, "'
    'last_exit": "exit code 13", "last_exit_at": 1796456311.7820935, "last_load_error": null, "rss_bytes"'
    ': 37986304, "startup_ms": {"fork": 3.92, "warmup": 0.68}}], "queue_depth": 0, "overloaded": false, "'
    'in_flight": 0, "memory": [{"device": "cpu", "budget_bytes": 19607152230, "reserved_bytes": 0, "free_'
    'bytes": 19607152230, "batches": 0}], "quarantined_inputs": 1, "probe": {"ok": true, "at": 1796456313'
    '.5752974, "latency_ms": null, "error": null, "skipped": "a real request succeeded"}, "template": {"s'
    'tate": "ready", "pid": 3061, "forking": true, "fork_off_reason": null, "plans": false, "startup_ms":'
    ' {"import": 55.05, "prepare": 0.06, "setup": 0.01}, "error": null, "deaths": 0, "last_exit": null, "'
    'last_exit_at": null}}}, "resources": {"status": "ok", "reasons": [], "memory": {"total_bytes": 25276'
    '194816, "used_bytes": 1358934016, "available_bytes": 23917260800, "percent": 5.4}, "disks": [{"path"'
    ': "/tmp/h2/srv/data", "total_bytes": 270553174016, "free_bytes": 82304380928, "percent_used": 24.5}]'
    ', "gpus": []}}')


def texts(events: list[Event]) -> list[str]:
    return [f"{e.kind} {e.model} {e.text}" for e in events]


# --- /metrics ------------------------------------------------------------------------


def test_a_real_scrape_is_read() -> None:
    snap = parse_metrics(SCRAPE_B)
    buckets = snap.latency_buckets["chaos"]
    assert len(buckets) == 18 and buckets[0] == (0.001, 19.0) and buckets[-1] == (math.inf, 361.0)
    assert snap.latency_count == {"chaos": 361.0}
    assert snap.queue_depth == {"chaos": 0.0}
    assert snap.worker_rss == {("chaos", "0"): 38203392.0, ("chaos", "1"): 37986304.0}
    assert snap.restarts == {("chaos", "crash"): 7.0, ("chaos", "deadline"): 2.0}
    assert snap.errors == {("chaos", "input_quarantined"): 2.0, ("chaos", "deadline_exceeded"): 2.0}
    assert snap.quarantined == {"chaos": 1.0}
    assert snap.device_used == {"cpu": 1358934016.0} and snap.device_total == {"cpu": 25276194816.0}
    assert snap.degradations == {} and snap.recycles == {}


def test_the_counters_the_events_need_are_read_too() -> None:
    """Degradations and recycles appear only once they happen; their lines as the server writes them."""
    extra = ("# TYPE watchkeeper_degradations_total counter\n"
             'watchkeeper_degradations_total{cause="memory",model="img2video"} 3.0\n'
             "# TYPE watchkeeper_worker_recycles_total counter\n"
             'watchkeeper_worker_recycles_total{cause="rss_growth",model="chaos"} 1.0\n')
    snap = parse_metrics(SCRAPE_B + extra)
    assert snap.degradations == {("img2video", "memory"): 3.0}
    assert snap.recycles == {("chaos", "rss_growth"): 1.0}


def test_text_that_is_not_the_format_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_metrics('watchkeeper_queue_depth{model="chaos" 1.0\n')


def test_counter_increases() -> None:
    old, new = parse_metrics(SCRAPE_A), parse_metrics(SCRAPE_B)
    assert increases(new.restarts, old.restarts) == {("chaos", "crash"): 2.0, ("chaos", "deadline"): 1.0}
    assert increases(new.errors, old.errors) == {("chaos", "input_quarantined"): 1.0,
                                                  ("chaos", "deadline_exceeded"): 1.0}
    assert increases(old.restarts, old.restarts) == {}
    # a series seen for the first time counts from 0; one that went down was reset (a new server)
    assert increases({("m", "oom"): 2.0}, {}) == {("m", "oom"): 2.0}
    assert increases({("m", "crash"): 1.0}, {("m", "crash"): 7.0}) == {("m", "crash"): 1.0}


def test_quantiles_of_a_histogram() -> None:
    buckets = [(0.1, 5.0), (0.2, 10.0), (math.inf, 10.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.95, buckets) == pytest.approx(0.19)
    assert quantile(0.99, [(0.1, 0.0), (0.5, 1.0), (math.inf, 2.0)]) == pytest.approx(0.5)  # in +Inf
    assert quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert quantile(0.5, []) is None


def test_latency_of_the_requests_between_two_scrapes() -> None:
    old, new = parse_metrics(SCRAPE_A), parse_metrics(SCRAPE_B)
    delta = bucket_delta(new.latency_buckets["chaos"], old.latency_buckets["chaos"])
    assert delta[-1] == (math.inf, 12.0)
    # 10 requests under 25 ms, the crash (0.25-0.5 s) and the hang (killed at 2 s)
    p50, p95 = latency_quantiles(new, old)["chaos"]
    assert p50 == pytest.approx(0.01 + 0.015 * 6 / 10)
    assert p95 == pytest.approx(1.0 + 1.5 * 0.4)
    assert latency_quantiles(new, None) == {}  # the first scrape spans the server's life
    assert latency_quantiles(new, new) == {}  # no request in between: no point
    assert bucket_delta(old.latency_buckets["chaos"], new.latency_buckets["chaos"]) == \
        old.latency_buckets["chaos"]  # went down: a reset, so all of it is new


# --- events --------------------------------------------------------------------------


def test_a_first_reading_reports_what_already_happened() -> None:
    events = Changes().update(HEALTH_A, parse_metrics(SCRAPE_A), now=HEALTH_A["checked_at"])
    assert texts(events) == [
        "crash chaos replica 0 has restarted 5 times since the server started; last exit: signal SIGKILL",
        "crash chaos replica 1 has restarted once since the server started; last exit: exit code 13",
    ]
    assert events[0].at == HEALTH_A["models"]["chaos"]["replicas"][0]["last_exit_at"]


def test_a_crash_and_a_hang_between_two_readings() -> None:
    changes = Changes()
    changes.update(HEALTH_A, parse_metrics(SCRAPE_A), now=1.0)
    found = texts(changes.update(HEALTH_B, parse_metrics(SCRAPE_B), now=2.0))
    assert found == [
        "kill chaos replica 0 exited: signal SIGKILL, killed: deadline, restarted 2 times (pid 7981 → 8622)",
        "crash chaos replica 1 exited: exit code 13, restarted (pid 3499 → 8609)",
        "restart chaos worker restarts counted: crash ×2, deadline ×1",
        "quarantine chaos an input was quarantined (1 refused now)",
        "errors chaos requests refused: deadline_exceeded ×1, input_quarantined ×1",
    ]
    assert changes.pending == {}
    assert changes.update(HEALTH_B, parse_metrics(SCRAPE_B), now=3.0) == []


def killed(health: dict[str, Any], index: int, new_pid: int, at: float, how: str) -> dict[str, Any]:
    """``health`` after replica ``index`` died (``how``) and was replaced by ``new_pid``."""
    later = copy.deepcopy(health)
    rep = later["models"]["chaos"]["replicas"][index]
    rep.update(pid=new_pid, restarts=rep["restarts"] + 1, last_exit=how, last_exit_at=at)
    return later


def with_restarts(text: str, reason: str, n: float) -> MetricsSnapshot:
    snap = parse_metrics(text)
    snap.restarts[("chaos", reason)] = snap.restarts.get(("chaos", reason), 0.0) + n
    return snap


def test_an_oom_kill_counted_before_health_shows_it_is_one_event() -> None:
    """/metrics is read after /health: an exit may show in the counter one refresh earlier."""
    changes = Changes()
    changes.update(HEALTH_B, parse_metrics(SCRAPE_B), now=10.0)
    assert changes.update(HEALTH_B, with_restarts(SCRAPE_B, "oom", 1), now=12.0) == []
    later = killed(HEALTH_B, 1, 9000, 12.5, "signal SIGKILL, killed: oom")
    found = changes.update(later, with_restarts(SCRAPE_B, "oom", 1), now=14.0)
    assert texts(found) == ["oom chaos replica 1 exited: signal SIGKILL, killed: oom, restarted "
                            "(pid 8609 → 9000); counted as oom ×1"]
    assert found[0].at == 12.5


def test_restarts_counted_without_an_exit_are_reported_after_a_while() -> None:
    changes = Changes()
    changes.update(HEALTH_B, parse_metrics(SCRAPE_B), now=10.0)
    assert changes.update(HEALTH_B, with_restarts(SCRAPE_B, "load_failed", 1), now=12.0) == []
    found = changes.update(HEALTH_B, with_restarts(SCRAPE_B, "load_failed", 1), now=12.0 + Changes.PENDING_S)
    assert texts(found) == ["restart chaos worker restarts counted: load_failed ×1"]


def test_states_probes_recycles_templates_and_degraded_answers() -> None:
    changes = Changes()
    snap = parse_metrics(SCRAPE_B)
    changes.update(HEALTH_B, snap, now=10.0)
    later = copy.deepcopy(HEALTH_B)
    later["status"] = "fail"
    model = later["models"]["chaos"]
    model.update(state="unready", reason="deep probe failed 2 times: wrong answer")
    model["probe"] = {"ok": False, "at": 1796456320.0, "latency_ms": 3.0, "error": "wrong answer",
                      "skipped": None}
    model["replicas"][0]["pid"] = 9100  # replaced without a restart: a recycle
    model["template"].update(deaths=1, pid=9200, error="the template closed its socket")
    after = copy.deepcopy(snap)
    after.recycles[("chaos", "rss_growth")] = 1.0
    after.degradations[("chaos", "memory")] = 2.0
    found = texts(changes.update(later, after, now=12.0))
    assert found == [
        "degraded None service status ok → fail",
        "recycle chaos replica 0 replaced (pid 8622 → 9100): recycled, rss_growth ×1",
        "degraded chaos state ready → unready (deep probe failed 2 times: wrong answer)",
        "probe chaos deep probe failed: wrong answer",
        "template chaos template died (pid 3061): the template closed its socket",
        "degradation chaos answers degraded to fit in memory: memory ×2",
    ]
    back = copy.deepcopy(later)
    back["status"] = "ok"
    back["models"]["chaos"].update(state="ready", reason=None)
    back["models"]["chaos"]["probe"] = dict(model["probe"], ok=True, at=1796456330.0, error=None)
    assert texts(changes.update(back, after, now=14.0)) == [
        "recovered None service status fail → ok", "recovered chaos state unready → ready",
        "recovered chaos deep probe passed again"]


# --- the window ----------------------------------------------------------------------


def test_the_window_keeps_the_last_minutes_as_plots() -> None:
    old, new = parse_metrics(SCRAPE_A), parse_metrics(SCRAPE_B)
    window = Window(span_s=600)
    window.add(sample_of(1000.0, HEALTH_A, old, None))
    window.add(sample_of(1002.0, HEALTH_B, new, old))
    latency = window.latency()
    assert list(latency.columns) == ["time", "value", "series"]
    assert str(latency["time"].dtype).startswith("datetime64")
    assert sorted(latency["series"]) == ["chaos p50", "chaos p95"]  # none for the first scrape
    assert latency["value"].tolist() == pytest.approx([19.0, 1600.0])
    assert window.queue()["value"].tolist() == [0.0, 0.0]
    memory = window.memory()
    assert set(memory["series"]) == {"cpu used", "chaos #0 RSS", "chaos #1 RSS"}
    assert memory[memory["series"] == "chaos #0 RSS"]["value"].tolist() == \
        pytest.approx([38211584 / 2**20, 37982208 / 2**20])
    window.add(sample_of(1603.0, HEALTH_B, new, new))
    assert [s.t for s in window.samples] == [1603.0]  # older than 600 s: dropped
    assert window.latency().empty


# --- the feed ------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_api_that_does_not_answer_is_said_so() -> None:
    api = f"http://127.0.0.1:{closed_port()}"
    with httpx.Client() as client:
        reading = read_service(client, api, "")
    assert reading.health is None and reading.metrics is None and reading.problem is not None
    assert reading.problem.kind == "unreachable" and reading.problem.word == "unreachable"
    assert api in reading.problem.message and "watchkeeper serve" in reading.problem.suggestion


def test_the_feed_reports_the_api_going_away_and_coming_back() -> None:
    feed = ServiceFeed()
    feed.update(Reading(HEALTH_A, parse_metrics(SCRAPE_A)), now=100.0)
    gone = Problem("unreachable", "the API at http://x cannot be reached (refused)")
    feed.update(Reading(problem=gone), now=102.0)
    feed.update(Reading(problem=gone), now=104.0)  # the same problem: no second event
    feed.update(Reading(HEALTH_B, parse_metrics(SCRAPE_B)), now=106.0)
    recent = feed.recent()
    assert [e.kind for e in recent if e.kind in ("api", "recovered")] == ["recovered", "api"]
    assert feed.problem is None and feed.health is HEALTH_B and feed.health_at == 106.0
    assert [s.t for s in feed.window.samples] == [100.0, 106.0]
    assert feed.window.latency()["value"].tolist() == pytest.approx([19.0, 1600.0])  # across the gap
    assert recent == sorted(recent, key=lambda e: e.at, reverse=True)


def test_a_full_window_is_thinned_for_the_browser() -> None:
    window = Window(span_s=600)
    for i in range(301):  # 10 minutes at one sample per 2 s
        window.add(Sample(t=1000.0 + 2 * i, queue={"chaos": float(i)}))
    drawn = window.drawn()
    assert len(window.samples) == 301 and len(drawn) <= MAX_POINTS
    assert drawn[-1].t == 1600.0  # the newest is always drawn
    assert window.queue()["value"].tolist() == [s.queue["chaos"] for s in drawn]
