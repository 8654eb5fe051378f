"""Start-up failures, the FAILED state, operator restart, probes, queue limits, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.integration.conftest import CHAOS, FAST, ServerFactory, assert_all_dead, wait_for
from tests.integration.test_faults import in_background

FAILING = "watchkeeper.apps.chaos:FailingSetup"
FAILING_PROBE = "watchkeeper.apps.chaos:FailingProbe"


def test_setup_failure_marks_the_model_failed_after_three_tries(serve: ServerFactory) -> None:
    srv = serve({"broken": {"app": FAILING, **FAST}, "chaos": {"app": CHAOS, **FAST}}, wait=False)
    health = srv.wait_state("broken", "failed")
    assert health["load_failures"] == 3
    assert "loading failed 3 times" in health["reason"]
    assert "setup fails on purpose" in health["reason"]
    assert srv.get("/readyz").status_code == 503
    assert srv.get("/health").status_code == 503
    assert srv.get("/health/simple").text == "FAIL"
    # No restart loop: nothing more is started while FAILED.
    time.sleep(1.5)
    assert srv.model_health("broken")["load_failures"] == 3
    assert srv.model_health("broken")["template"]["pid"] is None
    refused = srv.predict("broken", {})
    assert refused.status_code == 503
    assert "admin/models/broken/restart" in refused.json()["error"]["suggestion"]
    assert "Retry-After" in refused.headers
    # The other model is unaffected.
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200
    assert '"event":"model.failed"' in srv.logs()
    # An operator restart tries again (and fails again, three more times).
    assert srv.client.post("/admin/models/broken/restart").status_code == 202
    assert srv.model_health("broken")["state"] != "failed"
    srv.wait_state("broken", "failed")
    assert srv.model_health("broken")["load_failures"] == 3


def test_an_app_that_cannot_be_imported_fails_at_once(serve: ServerFactory) -> None:
    srv = serve({"ghost": {"app": "watchkeeper.apps.nope:Nothing", **FAST}}, wait=False)
    health = srv.wait_state("ghost", "failed")
    assert health["load_failures"] == 1
    assert "cannot be loaded" in health["reason"]


def test_operator_restart_replaces_workers(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST}})
    (pid,) = srv.worker_pids("chaos")
    assert srv.client.post("/admin/models/chaos/restart").status_code == 202
    wait_for(lambda: srv.worker_pids("chaos") not in ([], [pid]), 10)
    health = srv.wait_state("chaos", "ready")
    assert "killed: operator" in health["replicas"][0]["last_exit"]
    assert srv.client.post("/admin/models/nope/restart").status_code == 404


def test_failing_probe_makes_the_model_unready_then_it_recovers(serve: ServerFactory, tmp_path: Path) -> None:
    flag = tmp_path / "probe-fails"
    srv = serve({"canary": {"app": FAILING_PROBE, **FAST, "probe_interval_s": 0.3}},
                env={"WK_CHAOS_PROBE_FAIL_FILE": str(flag)})
    wait_for(lambda: (srv.model_health("canary")["probe"] or {}).get("ok"), 10)
    (pid,) = srv.worker_pids("canary")
    flag.touch()
    health = srv.wait_state("canary", "unready", timeout_s=10)
    assert "deep probe failed 2 times" in health["reason"]
    assert health["probe"]["ok"] is False
    assert srv.get("/readyz").status_code == 503
    wait_for(lambda: srv.worker_pids("canary") not in ([], [pid]), 10)  # recycled
    assert '"event":"probe.failed"' in srv.logs()
    flag.unlink()
    health = srv.wait_state("canary", "ready", timeout_s=10)
    assert health["probe"]["ok"] is True
    assert srv.get("/readyz").status_code == 200


def test_full_queue_is_429_with_retry_after(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "max_queue": 2, "timeout_s": 10}})
    running = in_background(srv.predict, "chaos", {"action": "sleep", "seconds": 1.5, "tag": "r"})
    wait_for(lambda: srv.model_health("chaos")["in_flight"] == 1, 5)
    queued = [in_background(srv.predict, "chaos", {"action": "ok", "tag": f"q{i}"}) for i in range(2)]
    wait_for(lambda: srv.model_health("chaos")["queue_depth"] == 2, 5)
    refused = srv.predict("chaos", {"action": "ok", "tag": "over"})
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "overloaded"
    assert int(refused.headers["Retry-After"]) >= 1
    for call in [running, *queued]:
        call["thread"].join(10)
        assert call["result"].status_code == 200


def test_a_request_whose_deadline_passes_in_the_queue_is_never_run(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 10}})
    running = in_background(srv.predict, "chaos", {"action": "sleep", "seconds": 1.5, "tag": "r2"})
    wait_for(lambda: srv.model_health("chaos")["in_flight"] == 1, 5)
    started = time.monotonic()
    # If this crash input ever ran, the worker would die and be restarted.
    expired = srv.predict("chaos", {"action": "crash", "tag": "never"}, headers={"X-Request-Timeout": "0.5"})
    assert expired.status_code == 504
    assert "queued" in expired.json()["error"]["message"]
    assert time.monotonic() - started < 1.4
    running["thread"].join(10)
    assert running["result"].status_code == 200
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200
    assert srv.model_health("chaos")["replicas"][0]["restarts"] == 0


def test_sigterm_lets_in_flight_requests_finish_and_leaves_no_orphans(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "replicas": 2, "timeout_s": 10}})
    workers = set(srv.worker_pids("chaos"))
    assert len(workers) == 2
    call = in_background(srv.predict, "chaos", {"action": "sleep", "seconds": 1.0, "tag": "drain"})
    wait_for(lambda: srv.model_health("chaos")["in_flight"] == 1, 5)
    srv.proc.send_signal(signal.SIGTERM)
    call["thread"].join(15)
    assert call["result"].status_code == 200
    # uvicorn re-raises the signal once the graceful shutdown is done.
    assert srv.proc.wait(15) in (0, -signal.SIGTERM)
    assert_all_dead(workers)
    assert '"event":"server.stop"' in srv.logs()


def test_workers_die_with_a_killed_front(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "replicas": 2}})
    workers = set(srv.worker_pids("chaos"))
    srv.proc.kill()
    srv.proc.wait(10)
    assert_all_dead(workers, timeout_s=5)


def test_check_command_exit_codes(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST}})

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "watchkeeper.cli", "check", *args],
                              capture_output=True, text=True, timeout=30, check=False)

    healthy = check(srv.url)
    assert healthy.returncode == 0, healthy.stdout
    assert "chaos: ready" in healthy.stdout
    deep = check(srv.url, "--deep")
    assert deep.returncode == 0
    assert "status: ok" in deep.stdout
    srv.client.post("/admin/models/chaos/restart")
    (pid,) = srv.worker_pids("chaos") or [0]
    if pid:
        os.kill(pid, signal.SIGSTOP)  # keep it from becoming ready quickly
    unreachable = check("http://127.0.0.1:9", "--timeout", "1")
    assert unreachable.returncode == 2
    assert "UNREACHABLE" in unreachable.stdout
    if pid and psutil.pid_exists(pid):
        os.kill(pid, signal.SIGCONT)


def test_failed_model_makes_check_exit_1(serve: ServerFactory) -> None:
    srv = serve({"broken": {"app": FAILING, **FAST}}, wait=False)
    srv.wait_state("broken", "failed")
    result = subprocess.run([sys.executable, "-m", "watchkeeper.cli", "check", srv.url, "--deep"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "broken: failed" in result.stdout


def test_sigterm_answers_503_to_what_outlives_the_grace_period(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 30}}, server={"grace_period_s": 1})
    slow = in_background(srv.predict, "chaos", {"action": "sleep", "seconds": 20, "tag": "slow"},
                         headers={"X-Request-ID": "slow-1"})
    wait_for(lambda: srv.model_health("chaos")["in_flight"] == 1, 5)
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    slow["thread"].join(15)
    response = slow["result"]
    assert response.status_code == 503, response.text
    assert response.headers["X-Request-ID"] == "slow-1"
    assert response.json()["error"]["type"] == "unavailable"
    assert "Retry-After" in response.headers
    assert srv.proc.wait(15) in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 10


def test_requests_queued_when_a_model_fails_get_503_at_once(serve: ServerFactory) -> None:
    srv = serve({"slow": {"app": FAILING, **FAST, "timeout_s": 30}}, wait=False)
    started = time.monotonic()
    response = srv.predict("slow", {})
    assert response.status_code == 503, response.text
    assert "FAILED" in response.json()["error"]["message"]
    assert time.monotonic() - started < 15
