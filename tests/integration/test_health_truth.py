"""Health that tells the truth, tried from outside against a real server.

- A long job on the only replica is not a failed probe: the model stays ready.
- A frozen template (SIGSTOP) is seen, shown in /health and replaced; requests that need a
  plan keep their deadline meanwhile.
- A long job does not make short predicts look slow to load shedding.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil

from tests.integration.conftest import CHAOS, FAST, Server, ServerFactory, in_background, wait_for

HUNGRY = "watchkeeper.apps.chaos:Hungry"  # plans: it has estimate_memory and degrade


def resume_if_stopped(pid: int) -> None:
    """Leave no stopped process behind when a test fails before the server killed it."""
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


# --- item 1: a busy replica is not a failed probe --------------------------------------


def test_a_long_job_on_the_only_replica_keeps_the_model_ready(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 1.0, "probe_interval_s": 0.5}})
    job = srv.submit_job("chaos", {"action": "sleep", "seconds": 6, "tag": "long-job"})
    srv.wait_job(job["id"], "running")
    watch_until = time.monotonic() + 5
    while time.monotonic() < watch_until:
        ready = srv.get("/readyz")
        model = srv.model_health("chaos")
        assert ready.status_code == 200, (
            f"/readyz {ready.status_code} while the only replica runs a job: "
            f"state {model['state']}, reason {model['reason']}, probe {model['probe']}")
        assert srv.health()["status"] != "fail"
        time.sleep(0.2)
    assert srv.wait_job(job["id"])["state"] == "succeeded"
    # Once the replica is free, the probe runs again, for real.
    wait_for(lambda: (p := srv.model_health("chaos")["probe"]) and p["ok"] and not p["skipped"], 15)


# --- items 2 and 4: a frozen template --------------------------------------------------


def template_replaced(srv: Server, model: str, old_pid: int) -> dict[str, Any] | None:
    template: dict[str, Any] = srv.model_health(model)["template"]
    fresh = template["pid"] not in (None, old_pid) and template["state"] == "ready"
    return template if fresh and "frozen" in (template.get("last_exit") or "") else None


def test_a_frozen_template_costs_no_request_its_deadline_and_is_replaced(serve: ServerFactory) -> None:
    srv = serve({"hungry": {"app": HUNGRY, **FAST}})
    template = srv.model_health("hungry")["template"]
    assert template["state"] == "ready" and template["plans"], template
    frozen = template["pid"]
    os.kill(frozen, signal.SIGSTOP)
    try:
        response = srv.predict("hungry", {"tag": "frozen"}, {"mb": 3},
                               headers={"X-Request-Timeout": "0.5"})
        assert response.status_code in (200, 504), response.text
        if response.status_code == 200:
            total_ms = response.json()["timings"]["total_ms"]
            assert total_ms <= 500 + 250, (
                f"answered 200 after {total_ms} ms, past its 0.5 s deadline: "
                "the plan was waited for outside the request's deadline")
        wait_for(lambda: template_replaced(srv, "hungry", frozen), 30)
    finally:
        resume_if_stopped(frozen)
    assert not psutil.pid_exists(frozen) or psutil.Process(frozen).status() == "zombie"
    srv.wait_ready()
    again = srv.predict("hungry", {"tag": "after"}, {"mb": 5})
    assert again.status_code == 200, again.text
    assert '"event":"template.frozen"' in srv.logs()


def test_a_frozen_template_is_shown_and_replaced_without_any_traffic(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST}})
    frozen = srv.model_health("chaos")["template"]["pid"]
    os.kill(frozen, signal.SIGSTOP)
    try:
        replaced = wait_for(lambda: template_replaced(srv, "chaos", frozen), 30)
    finally:
        resume_if_stopped(frozen)
    assert replaced["deaths"] >= 1
    srv.wait_ready()
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200


# --- item 3: run times of jobs and predicts kept apart -----------------------------------


def test_a_long_job_does_not_get_short_predicts_shed(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 3, "max_batch_size": 1}})
    job = srv.submit_job("chaos", {"action": "sleep", "seconds": 5, "tag": "slow-job"})
    assert srv.wait_job(job["id"], timeout_s=30)["state"] == "succeeded"
    calls = [in_background(srv.predict, "chaos", {"action": "sleep", "seconds": 0.2, "tag": f"p{i}"})
             for i in range(3)]
    for call in calls:
        call["thread"].join(30)
    answers = [call["result"] for call in calls]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
