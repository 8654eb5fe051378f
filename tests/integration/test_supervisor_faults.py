"""The supervisor under faults, tried from outside against a real server.

- A worker's children die with it: at a deadline kill and at the server's exit.
- An operator restart while the template is backing off leaves one worker per replica.
- The front refuses to unpickle what it must not (a model's class), and a frame it cannot
  read is a worker fault: the request gets a clear error at once, the worker is replaced.
- A client's short X-Request-Timeout does not get an innocent input quarantined.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.conftest import CHAOS, FAST, Server, ServerFactory, wait_for


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def worker_processes(srv: Server, model: str, replica: int) -> list[int]:
    """Pids of the processes titled as that replica's worker, however they were started."""
    title = f"watchkeeper worker {model}#{replica}"
    found = []
    for child in srv.children():
        try:
            if title in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


# --- item 5: a worker's children die with it ----------------------------------------------


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
def test_a_workers_children_die_with_it(serve: ServerFactory, fork: bool) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 2, "fork_from_template": fork}})
    first = srv.predict("chaos", {"action": "child", "seconds": 0, "tag": "child-1"})
    assert first.status_code == 200, first.text
    child = first.json()["outputs"]["child_pid"]
    assert alive(child)
    hang = srv.predict("chaos", {"action": "hang", "tag": "hang-1"})  # SIGKILLed at the deadline
    assert hang.status_code == 504, hang.text
    wait_for(lambda: not alive(child), 10)
    srv.wait_ready()
    second = srv.predict("chaos", {"action": "child", "seconds": 0, "tag": "child-2"})
    assert second.status_code == 200, second.text
    orphan = second.json()["outputs"]["child_pid"]
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(30)
    wait_for(lambda: not alive(orphan), 10)


# --- item 6: a restart while the template backs off ---------------------------------------


def test_a_restart_during_the_template_back_off_leaves_one_worker(serve: ServerFactory,
                                                                  tmp_path: Path) -> None:
    fail = tmp_path / "setup-fails"
    fail.touch()
    srv = serve({"chaos": {"app": CHAOS, **FAST, "load_retries": 20, "restart_backoff_max_s": 30}},
                env={"WK_CHAOS_SETUP_FAIL_FILE": str(fail)}, wait=False)
    wait_for(lambda: srv.model_health("chaos")["load_failures"] >= 3, 60)
    fail.unlink()
    restart = srv.client.post("/admin/models/chaos/restart")
    assert restart.status_code == 202, restart.text
    srv.wait_ready(timeout_s=60)
    watch_until = time.monotonic() + 3
    while time.monotonic() < watch_until:
        workers = worker_processes(srv, "chaos", 0)
        assert len(workers) <= 1, f"replica 0 has {len(workers)} worker processes: {workers}"
        time.sleep(0.1)
    assert srv.worker_pids("chaos") == worker_processes(srv, "chaos", 0)
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200


# --- item 7: what the front will unpickle ---------------------------------------------------


def front_loaded_numpy(srv: Server) -> list[str]:
    """numpy's compiled modules mapped into the front (chaos, a model module, imports numpy)."""
    maps = psutil.Process(srv.proc.pid).memory_maps()
    return sorted({m.path for m in maps if "numpy" in m.path})


def test_an_output_of_a_model_class_is_refused_without_importing_model_code(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 10}})
    (pid,) = srv.worker_pids("chaos")
    response = srv.predict("chaos", {"action": "object", "tag": "opaque"})
    assert front_loaded_numpy(srv) == [], "the front imported model code to read an output"
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["type"] == "model_error"
    assert "watchkeeper.apps.chaos.Opaque" in error["message"]
    wait_for(lambda: (pids := srv.worker_pids("chaos")) and pids != [pid], 10)
    assert "bad_frame" in srv.model_health("chaos")["replicas"][0]["last_exit"]
    srv.wait_ready()
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200
    assert '"event":"worker.bad_frame"' in srv.logs()


def test_an_undecodable_answer_fails_its_request_at_once(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 10}})
    (pid,) = srv.worker_pids("chaos")
    response = srv.predict("chaos", {"action": "undecodable", "tag": "garbled"})
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["type"] == "model_error" and "could not be read" in error["message"], error
    wait_for(lambda: (pids := srv.worker_pids("chaos")) and pids != [pid], 10)
    srv.wait_ready()
    assert srv.predict("chaos", {"action": "ok"}).status_code == 200


# --- item 8: a client's deadline is not the input's fault -----------------------------------


def test_a_clients_short_deadline_does_not_quarantine_an_innocent_input(serve: ServerFactory) -> None:
    srv = serve({"chaos": {"app": CHAOS, **FAST, "timeout_s": 5}})
    slow = {"action": "sleep", "seconds": 1.5, "tag": "slow-but-fine"}
    for _ in range(2):
        srv.wait_state("chaos", "ready")
        response = srv.predict("chaos", slow, headers={"X-Request-Timeout": "0.3"})
        assert response.status_code == 504, response.text
    killed = srv.model_health("chaos")["replicas"][0]
    assert killed["restarts"] >= 1 and "deadline" in killed["last_exit"]  # the kill did happen
    srv.wait_state("chaos", "ready")
    response = srv.predict("chaos", slow)
    assert response.status_code == 200, response.text
    assert srv.model_health("chaos")["quarantined_inputs"] == 0
