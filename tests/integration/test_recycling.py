"""Recycling worn workers in a real server, under traffic that never stops, with no failure.

A chaos model whose every request leaks (``leak``: 1 MiB kept for the worker's lifetime),
one replica, a low ``recycle_rss_growth_mb``: the worker is replaced (its successor started
first), every request gets 200, ``/metrics`` counts the recycle by cause and the log holds
its evidence. The same for ``max_requests`` with a jitter. The policy and the succession as
plain logic: ``tests/unit/supervision/test_recycling.py``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from typing import Any

import psutil
import pytest

from tests.integration.conftest import CHAOS, FAST, Server, ServerFactory, in_background, wait_for

TRAFFIC_THREADS = 2


class Traffic:
    """Clients that send one request after another until stopped, keeping each answer's
    status and the pid of the worker that served it."""

    def __init__(self, srv: Server, inputs: dict[str, Any]) -> None:
        self.srv, self.inputs = srv, inputs
        self.stopped = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.pids: list[int] = []
        self.runs = [in_background(self._send) for _ in range(TRAFFIC_THREADS)]

    def _send(self) -> None:
        while not self.stopped.is_set():
            response = self.srv.predict("chaos", self.inputs)
            self.statuses[response.status_code] += 1
            if response.status_code == 200:
                self.pids.append(response.json()["outputs"]["pid"])
            time.sleep(0.01)

    def stop(self) -> None:
        self.stopped.set()
        for run in self.runs:
            run["thread"].join(timeout=30)
            assert "error" not in run, run.get("error")


def events(srv: Server, name: str) -> list[dict[str, Any]]:
    records = []
    for line in srv.logs().splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            record = json.loads(line)
            if record.get("event") == name:
                records.append(record)
    return records


def recycles(srv: Server, cause: str) -> float:
    for line in srv.get("/metrics").text.splitlines():
        labels = re.match(r"watchkeeper_worker_recycles_total\{(.*)\} (\S+)$", line)
        if labels and set(labels.group(1).split(",")) == {'model="chaos"', f'cause="{cause}"'}:
            return float(labels.group(2))
    return 0.0


def recycled_under_traffic(srv: Server, inputs: dict[str, Any], cause: str) -> dict[str, Any]:
    """Send traffic until a recycle of ``cause`` is counted and its successor has served;
    check that no request failed and the old worker is gone; the recycle's log record."""
    first = srv.worker_pids("chaos")[0]
    traffic = Traffic(srv, inputs)
    try:
        wait_for(lambda: recycles(srv, cause) >= 1, timeout_s=60)
        wait_for(lambda: any(pid != first for pid in traffic.pids[-5:]), timeout_s=30)
        time.sleep(0.5)  # and traffic goes on across the old worker's exit
    finally:
        traffic.stop()
    assert set(traffic.statuses) == {200}, traffic.statuses
    assert traffic.pids[0] == first and traffic.pids[-1] != first
    wait_for(lambda: not psutil.pid_exists(first) or psutil.Process(first).status() == "zombie",
             timeout_s=10)
    (exit_record,) = [r for r in events(srv, "worker.exit") if r["pid"] == first]
    assert exit_record["exit_code"] == 0 and exit_record["recycle"] is True  # stopped, not killed
    (record,) = events(srv, "worker.recycle")[:1]
    assert record["pid"] == first and record["cause"] == cause
    assert record["queue_depth"] < 1 or record["waited_s"] >= 300  # a quiet moment: 1 replica
    assert srv.model_health("chaos")["state"] == "ready"
    return record


def test_a_leaking_worker_is_recycled_with_no_failed_request(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, "replicas": 1, "recycle_rss_growth_mb": 40.0, **FAST}})
    record = recycled_under_traffic(srv, {"action": "leak", "mb": 1}, "rss_growth")
    assert record["unit"] == "MiB" and record["growth"] > 40.0
    assert record["now"] == pytest.approx(record["baseline"] + record["growth"], abs=0.2)
    assert record["requests_served"] >= 20


def test_max_requests_recycles_with_jitter_and_no_failed_request(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, "replicas": 1, "max_requests": 40,
                           "max_requests_jitter": 10, **FAST}})
    record = recycled_under_traffic(srv, {"action": "ok"}, "max_requests")
    assert 40 <= record["threshold"] <= 50
    assert record["requests_served"] >= record["threshold"]
